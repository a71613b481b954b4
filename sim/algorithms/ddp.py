"""Data-parallel training: all-reduce the gradients every step (blocking).

Every worker computes its gradient on its own batch, the gradients cross the wire in
``payload_dtype`` and are averaged, and every replica applies the same inner-optimizer
step, so replicas stay identical. Modelled: one blocking ring all-reduce per step of
the full gradient. Not modelled yet: bucketing and overlap with backward (timing issue).
"""

from __future__ import annotations

from sim.algorithms.base import Schedule
from sim.algorithms.transforms import Tree, replica_mean, wire_roundtrip


class DDP:
    def __init__(self, spec):
        self.spec = spec
        self.schedule = Schedule(sync_every=1, collective="ring_allreduce", payload="gradients",
                                 wire_format=spec.payload_dtype, local_steps=False)

    def init(self, replicas) -> dict:
        return {}

    def _allreduce(self, grads: Tree) -> Tree:
        mean = replica_mean(wire_roundtrip(grads, self.spec.payload_dtype))
        return {k: mean[k].unsqueeze(0).expand_as(g) for k, g in grads.items()}

    def on_sync(self, numerics, state: dict, round_: int, time_s: float) -> list:
        """The step whose gradients were just all-reduced; returns its train-loss records."""
        return numerics.synchronous_step(round_ + 1, time_s, self._allreduce)

    def global_params(self, numerics, state: dict) -> Tree:
        return numerics.replicas.replica(0)
