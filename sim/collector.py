"""The garbage collector's pace during a run (``fewer_collections``).

Used by the run loop (``Simulation.run``) and by the run directory writer; a module of its own
so that neither imports the other for it (they once did, in a loop).
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def fewer_collections(gen0: int = 100_000):
    """Raise the cyclic garbage collector's first threshold to ``gen0`` allocations (Python's
    default: 700) for the block, then restore it. A large run keeps hundreds of thousands of
    records alive and makes short-lived reference cycles (events and their callbacks), and at
    the default the collector traverses the records again and again: a quarter to a third of a
    1,024-worker layer-grain run (``bench/scale.py``). The collector still runs, less often;
    nothing the run computes depends on when."""
    old = gc.get_threshold()
    gc.set_threshold(max(gen0, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
