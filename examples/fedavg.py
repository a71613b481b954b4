"""FedAvg as a plug-in: a complete locosim method in one file, written as a user would.

Every H inner steps the workers average their parameters (McMahan et al. 2017, "federated
averaging" with all clients each round) and go on from the average: no outer optimizer.
It is DiLoCo with outer SGD at learning rate 1 and no momentum (tests/test_plugins.py
checks that limit), and it uses only locosim's public pieces:

- the method protocol (``sim.algorithms.base.Algorithm``, here through ``OuterMethod``, which
  brings warm start, faults and the outer copy that evaluations read);
- its schedule as data: per-layer sends at the averaging step (``layered_send``) and the next
  step's per-layer needs (``layered_needs``), so ``sync_grain`` and ``collective`` work;
- its math as ops on each worker's numerics queue (contribute, then average once the
  collective is done).

Use it from a scenario (the path is relative to the scenario file)::

    algorithm: {name: fedavg, plugin: fedavg.py:FedAvg, inner_steps: 20}
"""

from __future__ import annotations

from pydantic import Field

from sim.algorithms.base import NOTHING, ScheduleInfo, StepPlan, layer_parts, layered_needs, layered_send
from sim.algorithms.common import OuterMethod
from sim.algorithms.knobs import OuterMethodSpec
from sim.algorithms.transforms import assign, worker_view


class FedAvgSpec(OuterMethodSpec):
    """The knobs a scenario may set (with their defaults and paper symbols)."""
    inner_steps: int = Field(default=20, ge=1, description="H: inner steps between two averagings.")


class FedAvg(OuterMethod):
    Spec = FedAvgSpec

    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.H = spec.inner_steps
        self.warm_collective = spec.collective
        self.info = ScheduleInfo(wire_format=spec.payload_dtype)

    # ------------------------------------------------------------------ schedule (data)
    def configure(self, layout, proxy_layers=None) -> None:
        super().configure(layout, proxy_layers)
        self.parts, self.layers = layer_parts(layout, None, proxy_layers)

    def method_plan(self, worker: int, step: int) -> StepPlan:
        if step % self.H:
            return NOTHING
        r = step // self.H - 1
        s = self.spec
        during, sends = layered_send("avg", r, self.everyone, self.parts, self.layers, s.payload_dtype, s.collective,
                                     grain=s.sync_grain)
        return StepPlan(during=during, sends=sends, needs=layered_needs("avg", r, self.parts, self.layers, s.sync_grain))

    def method_quiet(self, worker: int, step: int) -> int:
        return -step % self.H  # only every H-th step sends

    def use_step(self, key: tuple) -> int:
        return self.warm + (key[1] + 1) * self.H

    # ------------------------------------------------------------------ math (ops)
    def method_ops(self, numerics, state, worker: int, step: int, plan: StepPlan) -> None:
        outgoing = plan.outgoing()
        if not outgoing:
            return
        send = outgoing[0]
        red = self.reduction(state, send.key, worker)
        params = numerics.replicas.params

        def contribute() -> None:
            red.add(worker, self.wire(state, worker, worker_view(params, worker)))

        def average() -> None:
            if not red.gone and worker in red.present:  # (left out of it: keep its own parameters)
                mean = red.mean()
                assign(worker_view(params, worker), mean)
                assign(worker_view(state.outer, worker), mean)
            self.release(state, send.key, worker)

        numerics.enqueue_op(worker, contribute)
        numerics.enqueue_op(worker, average, red.ready)


METHOD = FedAvg
