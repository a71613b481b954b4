"""DiLoCo (Douillard et al. 2023, arXiv 2311.08105, Algorithm 1).

Each worker runs H inner AdamW steps from the shared outer parameters theta; then the
pseudo-gradients Delta_m = theta - theta_m are all-reduced (sent in ``payload_dtype``,
averaged in fp32) and every worker applies the same outer Nesterov step
(v <- mu v + Delta; theta <- theta - lr (Delta + mu v); defaults lr 0.7, mu 0.9) and
restarts from the new theta (a worker left out of the average -- down or late, see
``sync_timeout_s`` -- applies the same outer step but keeps its own parameters, and the
average is over those present). Inner optimizer states stay per replica and are never
synchronised (paper section 6.1). H = 1 with inner SGD and outer SGD lr 1 without
momentum is data-parallel SGD.

Timing: at ``sync_grain: layer`` (default) the pseudo-gradient of each layer starts its
all-reduce as soon as that layer's backward is done at the sync step, and the next step
waits, layer by layer, only at the forward of a layer whose average is still on the wire
(the papers' compute-utilization model); ``step``: one all-reduce after the step and the
whole next step waits for it. The math is the same at either grain.

The one-outer-step-overlapped variants (``eager.py``) are this class with a delay: the
average applied at round r is that of round r - k; DiLoCo is k = 0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sim.algorithms.base import NOTHING, ScheduleInfo, StepPlan, layer_parts, layered_needs, layered_send
from sim.algorithms.common import OuterMethod
from sim.algorithms.knobs import ALLREDUCE_DOC, AllReduceName, Int, OuterKnobs
from sim.algorithms.transforms import OuterNesterov, assign, tree_sub, worker_view


class DiLoCoAlgorithm(OuterKnobs):
    """DiLoCo (Douillard et al. 2023): H inner steps, then a blocking all-reduce and outer Nesterov step."""
    name: Literal["diloco"] = "diloco"
    inner_steps: Int = Field(default=500, ge=1, description="H in DiLoCo: inner steps between outer syncs (paper 500).")
    outer_lr: float = Field(default=0.7, gt=0, description="eta, outer Nesterov learning rate (DiLoCo default 0.7).")
    outer_momentum: float = Field(default=0.9, ge=0, lt=1, description="mu, outer Nesterov momentum (DiLoCo default 0.9).")
    nesterov: bool = Field(default=True, description="Nesterov form v = mu v + delta; theta -= lr (delta + mu v). False: heavy ball theta -= lr v.")
    collective: AllReduceName = Field(default="ring_allreduce", description=ALLREDUCE_DOC)


class DiLoCo(OuterMethod):
    Spec = DiLoCoAlgorithm
    delay = 0      # k: outer steps between sending a round and applying its average
    eager = False  # eager DiLoCo: replace the worker's stale share of the average by its fresh one

    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.H = spec.inner_steps
        self.outer = OuterNesterov(spec.outer_lr, spec.outer_momentum, spec.nesterov)
        self.info = ScheduleInfo(wire_format=spec.payload_dtype)
        self._plans: dict[int, StepPlan] = {}
        self.grain = spec.sync_grain
        self.warm_collective = spec.collective
        self.parts: list[tuple[int | None, int]] = []
        self.layers = 1

    def configure(self, layout: list[tuple[str, int]], proxy_layers: int | None = None) -> None:
        super().configure(layout, proxy_layers)
        self.parts, self.layers = layer_parts(layout, None, proxy_layers)

    def method_plan(self, worker: int, step: int) -> StepPlan:
        if step % self.H:
            return NOTHING
        r = step // self.H - 1
        plan = self._plans.get(r)
        if plan is None:
            during, sends = layered_send("outer", r, self.everyone, self.parts, self.layers, self.spec.payload_dtype,
                                         self.spec.collective, grain=self.grain)
            needs = layered_needs("outer", r - self.delay, self.parts, self.layers, self.grain) if r >= self.delay else ()
            plan = self._plans[r] = StepPlan(during=during, sends=sends, needs=needs)
            self._plans.pop(r - 2, None)
        return plan

    def method_quiet(self, worker: int, step: int) -> int:
        return -step % self.H  # steps before the next multiple of H (the one that sends and needs)

    def use_step(self, key: tuple) -> int:
        return self.warm + (key[1] + self.delay + 1) * self.H

    def method_ops(self, numerics, state, worker: int, step: int, plan: StepPlan) -> None:
        outgoing = plan.outgoing()
        if not outgoing:
            return
        send = outgoing[0]
        r = send.round
        red_now = self.reduction(state, send.key, worker)
        old_key = ("outer", r - self.delay, self.everyone)
        red_old = self.reduction(state, old_key, worker) if r >= self.delay else None
        params = numerics.replicas.params
        box: dict = {}

        def contribute() -> None:
            # Delta_m = theta_outer_m - theta_m, as the receivers will see it
            fresh = tree_sub(worker_view(state.outer, worker), worker_view(params, worker))
            box["fresh"] = fresh
            red_now.add(worker, self.wire(state, worker, fresh))

        def outer_step() -> None:
            if red_old is not None and red_old.gone:  # left out, and the result is gone: nothing to apply
                return
            fresh = box["fresh"]
            m = len(self.everyone)
            if red_old is None:  # nothing has arrived yet (first k rounds): an average of zeros
                delta = {k: v / m for k, v in fresh.items()} if self.eager else {k: v * 0 for k, v in fresh.items()}
            else:
                avg = red_old.mean()
                if self.eager and worker in red_old.present:  # Delta~_m = Delta(t-H) + (Delta_m(t) - Delta_m(t-H)) / M
                    stale = red_old.contribs[worker]
                    m = len(red_old.present)
                    delta = {k: avg[k] + (fresh[k] - stale[k]) / m for k in avg}
                else:
                    delta = avg
            outer_w = worker_view(state.outer, worker)
            mom_w = worker_view(state.momentum, worker)
            self.outer.step_(outer_w, mom_w, delta, self.kernels)
            if red_old is None or worker in red_old.present:  # dropped: keep its own params
                assign(worker_view(params, worker), outer_w)
            if red_old is not None:
                self.release(state, old_key, worker)

        numerics.enqueue_op(worker, contribute)
        numerics.enqueue_op(worker, outer_step, red_old.ready if red_old is not None else None)
