"""Virtual time and named random streams.

Every random stream (data order per worker, straggler draws per node, jitter per link,
pairings) gets its own ``numpy.random.Generator`` derived from the scenario seed and the
stream's *name*, so adding a worker or a fault process never reshuffles the others.
There is no global random state anywhere in locosim.
"""

from __future__ import annotations

import hashlib

import numpy as np
import simpy


def stream_seed(seed: int, name: str) -> np.random.SeedSequence:
    """A SeedSequence that depends only on (seed, name); stable across runs and platforms."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.SeedSequence(entropy=seed, spawn_key=tuple(words))


def rng(seed: int, name: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(stream_seed(seed, name)))


def torch_seed(seed: int, name: str) -> int:
    """A 63-bit integer seed for a torch.Generator, derived like the numpy streams."""
    return int(stream_seed(seed, name).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> np.uint64(1))


class Clock:
    """The SimPy environment plus the run's named random streams."""

    def __init__(self, seed: int):
        self.env = simpy.Environment()
        self.seed = seed
        self._streams: dict[str, np.random.Generator] = {}

    @property
    def now(self) -> float:
        return self.env.now

    def stream(self, name: str) -> np.random.Generator:
        if name not in self._streams:
            self._streams[name] = rng(self.seed, name)
        return self._streams[name]
