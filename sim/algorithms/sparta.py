"""SPARTA, "Sparse Parameter Averaging" (EXO Labs, 2025; the reference implementation is EXO Gym's
``exogym/strategy/sparta.py``), and SPARTA-DiLoCo, shipped as plug-ins (``sim.algorithms.METHODS``).

SPARTA update rule. Every ``interval`` inner steps, for every parameter tensor W of n entries,
the workers pick the same random set S of k = max(1, round(p n)) entries (p = ``fraction``,
default 0.005) and average them; every other entry stays each worker's own:

    W_m[S] <- (1/M) sum_j W_j[S]        for every worker m;   W_m[not S] unchanged

S is drawn afresh every round from the named stream ``sparta/indices/<round>`` (tensors in
model order), which every worker derives from the scenario seed: no index is sent, so the
payload is exactly sum_W k(W) values in the wire format (``Send.elems``), no index bytes.
Averaging preserves the workers' mean, so it only pulls the replicas together; with p = 1 and
interval 1 it is plain parameter averaging every step (FedAvg with H = 1; tested). The model
evaluated is the mean of the workers' parameters. There is no outer state.

SPARTA-DiLoCo: SPARTA's sparse averaging every ``interval`` steps plus a DiLoCo outer step
(Douillard et al. 2023: pseudo-gradient mean(theta_outer - theta_m), outer Nesterov lr 0.7,
momentum 0.9) every H steps, evaluated on the outer parameters as DiLoCo is. At a step that is
also an outer step the sparse exchange is skipped (not sent): the outer step sets every worker
to the same outer parameters and reads only the workers' mean, which averaging cannot change.

Knobs and defaults follow the nearest peer (EXO Gym ``SPARTAStrategy`` / ``SPARTADiLoCoStrategy``:
p_sparta 0.005, sparta_interval 1, H 100). Its index selector draws a Bernoulli(p) mask per
tensor (a random count) and broadcasts it from rank 0; ours draws exactly k entries from a
shared stream, so the bytes are exact and no mask crosses the wire.

Not supported: ``error_feedback`` (the entries sent change every round, so a residual has no
fixed place to go back to). Faults: a worker left out of a round (down, or late with
``sync_timeout_s``) keeps its own entries; the others average over those present. A worker that
comes back takes a live peer's parameters (SPARTA-DiLoCo: its outer state too).

Timing: at ``sync_grain: layer`` (default) each layer's sparse entries leave as soon as its
backward is done and the next step waits only at the forward of a layer still on the wire;
``step``: one all-reduce after the step. The math is the same.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from sim.algorithms.common import OuterMethod
from sim.algorithms.diloco import DiLoCo
from sim.algorithms.knobs import OuterMethodSpec, WireDtype
from sim.algorithms.transforms import wire_roundtrip
from sim.rng import rng as named_rng
from sim.schedule import NOTHING, ScheduleInfo, StepPlan, layer_parts, layered_needs, layered_send, sync_bytes


def sparse_count(n: int, p: float) -> int:
    """Entries of a tensor of ``n`` entries averaged per round at fraction ``p``: round(p n),
    at least one and at most n (every tensor takes part every round)."""
    return min(int(n), max(1, round(p * n)))


class SPARTASpec(OuterMethodSpec):
    """SPARTA's knobs (paper symbols)."""
    fraction: float = Field(default=0.005, gt=0, le=1, description=(
        "p: fraction of each parameter tensor's entries averaged per round (SPARTA 0.005; k = max(1, round(p n)))."))
    interval: int = Field(default=1, ge=1, description="Inner steps between two sparse averagings (EXO Gym sparta_interval, 1).")
    payload_dtype: WireDtype = Field(default="fp32", description=(
        "Wire format of the sparse parameter values (and of SPARTA-DiLoCo's pseudo-gradients), averaged in fp32; "
        "values only, no indices (see kernels/formats.py)."))

    @model_validator(mode="after")
    def _no_error_feedback(self) -> "SPARTASpec":
        if self.error_feedback:
            raise ValueError("error_feedback: not supported by sparse averaging (the entries sent change every round)")
        return self


class SPARTADiLoCoSpec(SPARTASpec):
    """SPARTA-DiLoCo's knobs: SPARTA's plus DiLoCo's outer step."""
    inner_steps: int = Field(default=100, ge=1, description="H: inner steps between two DiLoCo outer steps (EXO Gym H, 100).")
    outer_lr: float = Field(default=0.7, gt=0, description="eta, outer Nesterov learning rate (DiLoCo default 0.7).")
    outer_momentum: float = Field(default=0.9, ge=0, lt=1, description="mu, outer Nesterov momentum (DiLoCo default 0.9).")
    nesterov: bool = Field(default=True, description="Nesterov form v = mu v + delta; theta -= lr (delta + mu v). False: heavy ball theta -= lr v.")


class SparseAveraging:
    """SPARTA's schedule and ops, shared by ``SPARTA`` and ``SPARTADiLoCo`` (a mixin over an
    ``OuterMethod``: uses its ``spec``, ``seed``, ``warm``, ``everyone``, ``reduction``, ``release``)."""
    sparse_stream = "sparse"

    def sparse_configure(self, layout, proxy_layers) -> None:
        self.p = self.spec.fraction
        self.interval = self.spec.interval
        self.sparse_layout = [(name, sparse_count(e, self.p)) for name, e in layout]
        self.sparse_elems = sum(k for _, k in self.sparse_layout)
        self.sparse_parts, self.sparse_layers = layer_parts(self.sparse_layout, None, proxy_layers)
        self._indices: dict[int, dict] = {}

    def sparse_plan(self, round_: int, counts_as_round: bool) -> StepPlan:
        s = self.spec
        during, sends = layered_send(self.sparse_stream, round_, self.everyone, self.sparse_parts, self.sparse_layers,
                                     s.payload_dtype, s.collective, counts_as_round, grain=s.sync_grain)
        return StepPlan(during=during, sends=sends, needs=layered_needs(self.sparse_stream, round_, self.sparse_parts,
                                                                        self.sparse_layers, s.sync_grain))

    def indices(self, round_: int, params) -> dict:
        """Tensor name -> the flat indices averaged in round ``round_`` (sorted; the same on every
        worker: drawn from the stream ``sparta/indices/<round>``, tensors in model order)."""
        idx = self._indices.get(round_)
        if idx is None:
            import torch

            g = named_rng(self.seed, f"sparta/indices/{round_}")
            idx = {}
            for name, v in params.items():
                n = v[0].numel()
                pick = g.choice(n, sparse_count(n, self.p), replace=False)
                pick.sort()
                idx[name] = torch.from_numpy(pick).to(v.device)
            self._indices[round_] = idx
            self._indices.pop(round_ - 8, None)  # (a re-draw gives the same indices)
        return idx

    def sparse_ops(self, numerics, state, worker: int, send) -> None:
        red = self.reduction(state, send.key, worker)
        params = numerics.replicas.params
        box: dict = {}

        def contribute() -> None:
            idx = box["idx"] = self.indices(send.round, params)
            vals = {k: params[k][worker].reshape(-1).index_select(0, idx[k]) for k in params}
            red.add(worker, wire_roundtrip(vals, self.spec.payload_dtype, backend=self.kernels))

        def average() -> None:
            if not red.gone and worker in red.present:  # (left out of it: keep its own entries)
                mean = red.mean()
                idx = box["idx"]
                for k, v in params.items():
                    v[worker].view(-1).index_copy_(0, idx[k], mean[k].to(v.dtype))
            self.release(state, send.key, worker)

        numerics.enqueue_op(worker, contribute)
        numerics.enqueue_op(worker, average, red.ready)


class SPARTA(SparseAveraging, OuterMethod):
    Spec = SPARTASpec

    @classmethod
    def steps_per_round(cls, spec) -> int:
        return spec.interval  # a round is one sparse averaging
    outer_state_copies = 0  # no outer parameters, no momentum
    outer_rows_differ = True  # the model is the workers' mean

    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.warm_collective = spec.collective
        self.info = ScheduleInfo(wire_format=spec.payload_dtype)

    def configure(self, layout, proxy_layers=None) -> None:
        super().configure(layout, proxy_layers)
        self.sparse_configure(layout, proxy_layers)
        self.info = ScheduleInfo(wire_format=self.spec.payload_dtype,
                                 payload_bytes=sync_bytes(self.sparse_plan(0, True)))

    def method_plan(self, worker: int, step: int) -> StepPlan:
        if step % self.interval:
            return NOTHING
        return self.sparse_plan(step // self.interval - 1, True)

    def method_quiet(self, worker: int, step: int) -> int:
        return -step % self.interval

    def use_step(self, key: tuple) -> int:
        return self.warm + (key[1] + 1) * self.interval

    def start(self, replicas, state) -> None:
        """No outer state: the replicas are the whole state (``recover`` then copies a peer's
        parameters)."""

    def global_params(self, numerics, state):
        """The mean of the live workers' parameters."""
        rows = self._live_rows(state)
        params = numerics.replicas.params
        if len(rows) == self.n_workers:
            return {k: v.float().mean(dim=0) for k, v in params.items()}
        return {k: v[rows].float().mean(dim=0) for k, v in params.items()}

    def method_ops(self, numerics, state, worker: int, step: int, plan: StepPlan) -> None:
        for send in plan.outgoing():
            self.sparse_ops(numerics, state, worker, send)


class SPARTADiLoCo(SparseAveraging, DiLoCo):
    Spec = SPARTADiLoCoSpec

    @classmethod
    def events_per_step(cls, spec, layers: int) -> float:
        """DiLoCo's, plus a sparse averaging (one part per layer at layer grain) every ``interval`` steps."""
        parts = layers + 1 if spec.sync_grain == "layer" else 1
        return super().events_per_step(spec, layers) + parts / spec.interval

    def configure(self, layout, proxy_layers=None) -> None:
        super().configure(layout, proxy_layers)
        self.sparse_configure(layout, proxy_layers)

    def method_plan(self, worker: int, step: int) -> StepPlan:
        if step % self.H == 0:
            return super().method_plan(worker, step)  # the outer step (no sparse exchange: see the docstring)
        if step % self.interval:
            return NOTHING
        return self.sparse_plan(step // self.interval - 1, False)

    def method_quiet(self, worker: int, step: int) -> int:
        return min(-step % self.H, -step % self.interval)

    def use_step(self, key: tuple) -> int:
        if key[0] == self.sparse_stream:
            return self.warm + (key[1] + 1) * self.interval
        return super().use_step(key)

    def method_ops(self, numerics, state, worker: int, step: int, plan: StepPlan) -> None:
        outgoing = plan.outgoing()
        if outgoing and outgoing[0].stream == self.sparse_stream:
            self.sparse_ops(numerics, state, worker, outgoing[0])
        else:
            super().method_ops(numerics, state, worker, step, plan)
