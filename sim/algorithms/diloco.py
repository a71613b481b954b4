"""DiLoCo (Douillard et al. 2023, arXiv 2311.08105, Algorithm 1).

Each worker runs H inner AdamW steps from the shared outer parameters theta; then the
pseudo-gradients Delta_m = theta - theta_m are all-reduced (sent in ``payload_dtype``,
averaged in fp32) and every worker applies the same outer Nesterov step
(v <- mu v + Delta; theta <- theta - lr (Delta + mu v); defaults lr 0.7, mu 0.9) and
restarts from the new theta. Inner optimizer states stay per replica and are never
synchronised (paper section 6.1). H = 1 with inner SGD and outer SGD lr 1 without
momentum is data-parallel SGD.
"""

from __future__ import annotations

from sim.algorithms.base import Schedule
from sim.algorithms.transforms import OuterNesterov, Tree, broadcast, pseudo_gradients, replica_mean, wire_roundtrip


class DiLoCo:
    def __init__(self, spec):
        self.spec = spec
        self.schedule = Schedule(sync_every=spec.inner_steps, collective="ring_allreduce",
                                 payload="pseudo_gradients", wire_format=spec.payload_dtype, local_steps=True)
        self.outer = OuterNesterov(spec.outer_lr, spec.outer_momentum, spec.nesterov)

    def init(self, replicas) -> dict:
        theta = {k: v.clone() for k, v in replicas.replica(0).items()}
        return {"theta": theta, "momentum": self.outer.init(theta)}

    def on_sync(self, numerics, state: dict, round_: int, time_s: float) -> list:
        records = numerics.flush()  # the H inner steps this sync is about
        stacked = numerics.replicas.params
        delta = replica_mean(wire_roundtrip(pseudo_gradients(state["theta"], stacked), self.spec.payload_dtype))
        state["theta"], state["momentum"] = self.outer.update(delta, state["momentum"], state["theta"])
        broadcast(state["theta"], stacked)
        return records

    def global_params(self, numerics, state: dict) -> Tree:
        return state["theta"]
