"""Named random streams: no global random state anywhere in locosim.

Every random stream (data order per worker, straggler draws per node, jitter per link,
gossip groups) gets its own ``numpy.random.Generator`` derived from the scenario seed and
the stream's *name*, so adding a worker or a fault process never reshuffles the others.
Imports neither simpy nor torch, so the training and algorithm code that draws from these
streams does not depend on the engine.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stream_seed(seed: int, name: str) -> np.random.SeedSequence:
    """A SeedSequence that depends only on (seed, name); stable across runs and platforms."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.SeedSequence(entropy=seed, spawn_key=tuple(words))


def rng(seed: int, name: str) -> np.random.Generator:
    """The generator of stream ``name`` for scenario seed ``seed``."""
    return np.random.Generator(np.random.PCG64(stream_seed(seed, name)))


def torch_seed(seed: int, name: str) -> int:
    """A 63-bit integer seed for a torch.Generator, derived like the numpy streams."""
    return int(stream_seed(seed, name).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> np.uint64(1))
