"""Virtual time: the SimPy environment, with the run's named random streams at hand.

The streams themselves live in ``sim.rng`` (no simpy there), so training and algorithm
code can draw from them without importing the engine.
"""

from __future__ import annotations

import numpy as np
import simpy

from sim.rng import rng


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
