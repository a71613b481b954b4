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

from sim.algorithms.knobs import ALLREDUCE_DOC, AllReduceName, Int, OuterKnobs
from sim.algorithms.template import Periodic, Result, SyncRule
from sim.algorithms.transforms import OuterNesterov, Tree, assign, tree_sub, worker_view


class DiLoCoAlgorithm(OuterKnobs):
    """DiLoCo (Douillard et al. 2023): H inner steps, then a blocking all-reduce and outer Nesterov step."""
    name: Literal["diloco"] = "diloco"
    inner_steps: Int = Field(default=500, ge=1, description="H in DiLoCo: inner steps between outer syncs (paper 500).")
    outer_lr: float = Field(default=0.7, gt=0, description="eta, outer Nesterov learning rate (DiLoCo default 0.7).")
    outer_momentum: float = Field(default=0.9, ge=0, lt=1, description="mu, outer Nesterov momentum (DiLoCo default 0.9).")
    nesterov: bool = Field(default=True, description="Nesterov form v = mu v + delta; theta -= lr (delta + mu v). False: heavy ball theta -= lr v.")
    collective: AllReduceName = Field(default="ring_allreduce", description=ALLREDUCE_DOC)


class DiLoCo(Periodic):
    Spec = DiLoCoAlgorithm
    sync = SyncRule(every="inner_steps", stream="outer")
    eager = False  # eager DiLoCo: replace the worker's stale share of the average by its fresh one

    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.outer = OuterNesterov(spec.outer_lr, spec.outer_momentum, spec.nesterov)

    def contribution(self, state, worker: int, params: Tree) -> Tree:
        # Delta_m = theta_outer_m - theta_m, as the receivers will see it
        return tree_sub(worker_view(state.outer, worker, params), params)

    def apply(self, state, worker: int, params: Tree, fresh: Tree, result: Result) -> None:
        if result.mean is None and not result.took_part:  # left out, and the result is gone: nothing to apply
            return
        m = result.present
        if result.mean is None:  # nothing has arrived yet (first k rounds): an average of zeros
            delta = {k: v / m for k, v in fresh.items()} if self.eager else {k: v * 0 for k, v in fresh.items()}
        elif self.eager and result.took_part:  # Delta~_m = Delta(t-H) + (Delta_m(t) - Delta_m(t-H)) / M
            delta = {k: result.mean[k] + (fresh[k] - result.own[k]) / m for k in result.mean}
        else:
            delta = result.mean
        outer_w = worker_view(state.outer, worker)
        self.outer.step_(outer_w, worker_view(state.momentum, worker), delta, self.kernels)
        if result.took_part:  # dropped: keep its own params
            assign(params, outer_w)
