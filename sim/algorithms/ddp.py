"""Data-parallel training: all-reduce the gradients every step.

Every worker computes its gradient on its own batch, the gradients cross the wire in
``payload_dtype`` and are averaged, and every replica applies the same inner-optimizer
step, so replicas stay identical.

Timing (``overlap: true``, the default): a step is a forward pass (1/3 of the step) then
a backward pass (2/3) over the L layers, last layer first, in equal parts; each layer's
gradient bucket starts its all-reduce as soon as that layer's backward is done, so
communication overlaps the rest of the backward pass as PyTorch DDP's buckets do.
Parameters outside the blocks (embeddings, head) form one more bucket released at the
end of backward. The next step starts once every bucket has arrived (its optimizer step
needs them all). With a timing proxy the buckets are the proxy's L equal layers.
``overlap: false``: one all-reduce of the whole gradient after the step.
``sync_grain`` is about what waits: ``step`` (default; PyTorch's optimizer steps once every
bucket is in) makes the next step wait for all buckets before it starts; ``layer`` (a
per-layer optimizer, as the papers' compute-utilization DAG draws it) makes each layer's
forward in the next step wait only for its own bucket (the non-block bucket: before the
step). The math is the same.
Faults (issue 4): a bucket's all-reduce may run without a worker that is down or late
(``sync_timeout_s``); the step then averages the gradients of the workers present in
every bucket of that step, and every replica applies it (replicas stay identical, so a
worker that comes back already has the current parameters; the fetch copies them).
Not modelled: bucket-size tuning (one bucket per layer), gradient compression hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from sim.algorithms.base import Algorithm
from sim.algorithms.common import allreduce_grads, copy_row, only
from sim.algorithms.knobs import ALLREDUCE_DOC, SYNC_TIMEOUT_DOC, AllReduceName, PositiveFloat, Section, WireDtype
from sim.algorithms.transforms import Tree
from sim.schedule import Need, ScheduleInfo, Send, StepPlan, block_of, forward_start, sync_bytes


def layer_buckets(layout: list[tuple[str, int]]) -> list[tuple[float, int, float]]:
    """(release fraction, elements, fraction of the next step at which it is needed at layer
    grain) per gradient bucket, in release order."""
    blocks: dict[int, int] = {}
    other = 0
    for name, elems in layout:
        b = block_of(name)
        if b is not None:
            blocks[b] = blocks.get(b, 0) + elems
        else:
            other += elems
    n = len(blocks)
    out = [(1 / 3 + 2 / 3 * (n - i) / n, blocks[i], forward_start(i, n)) for i in sorted(blocks, reverse=True)]
    if other:
        out.append((1.0, other, 0.0))
    return out


@dataclass
class DDPState:
    """ddp's numerics state: per step (round), how many buckets are in and who took part in all."""
    arrived: dict = field(default_factory=dict)


class DDPAlgorithm(Section):
    """Data-parallel: all-reduce the gradients every inner step (the baseline)."""
    name: Literal["ddp"] = "ddp"
    payload_dtype: WireDtype = Field(default="fp32", description="Wire format of gradients: fp32, bf16, fp16, int8[:B], fp8[:B], e3m0[:B] or topk[:f] (see kernels/formats.py).")
    overlap: bool = Field(default=True, description="One bucket per layer, all-reduced as soon as its backward is done (overlapping the rest of backward, as DDP buckets do); false: one all-reduce after the step.")
    collective: AllReduceName = Field(default="ring_allreduce", description=ALLREDUCE_DOC)
    sync_grain: Literal["step", "layer"] = Field(default="step", description=(
        "What the next step waits for: step = every bucket before it starts (PyTorch's optimizer steps once all "
        "buckets are in); layer = each layer's forward waits only for its own bucket (per-layer optimizer, as "
        "the DiLoCo papers' compute-utilization DAG draws it). Timing only; the math is the same."))
    sync_timeout_s: PositiveFloat | None = Field(default=None, description=SYNC_TIMEOUT_DOC)


class DDP(Algorithm):
    Spec = DDPAlgorithm

    @classmethod
    def events_per_step(cls, spec, layers: int) -> float:
        """One event per gradient bucket a step sends: a bucket per layer with ``overlap``."""
        return float(layers) if spec.overlap else 1.0

    def __init__(self, spec, n_workers: int, seed: int):
        self.spec = spec
        self.everyone = tuple(range(n_workers))
        self.n_params = 0
        self.buckets: list[tuple[float, int]] = []
        self.need_at: list[float] = []  # per bucket: where the next step needs it (layer grain)
        self._plan: tuple[int, StepPlan] | None = None
        self.info = ScheduleInfo(wire_format=spec.payload_dtype)

    def configure(self, layout: list[tuple[str, int]], proxy_layers: int | None = None) -> None:
        self.n_params = sum(e for _, e in layout)
        if not self.spec.overlap:
            self.buckets, self.need_at = [(1.0, self.n_params)], [0.0]
        elif proxy_layers is not None:
            per = self.n_params / proxy_layers
            self.buckets = [(1 / 3 + 2 / 3 * (proxy_layers - i) / proxy_layers, round(per)) for i in
                            range(proxy_layers - 1, -1, -1)]
            self.need_at = [forward_start(i, proxy_layers) for i in range(proxy_layers - 1, -1, -1)]
        else:
            buckets = layer_buckets(layout)
            self.buckets = [(f, e) for f, e, _ in buckets]
            self.need_at = [a for _, _, a in buckets]
        if self.spec.sync_grain == "step":
            self.need_at = [0.0] * len(self.buckets)
        self._plan = None
        self.info = ScheduleInfo(wire_format=self.spec.payload_dtype, syncs_per_round=len(self.buckets),
                                 payload_bytes=sync_bytes(self.at_step(0, 1)), extra={"buckets": len(self.buckets)})

    def at_step(self, worker: int, step: int) -> StepPlan:
        r = step - 1
        if self._plan is None or self._plan[0] != r:  # every worker asks for the same plan each step
            sends = tuple((f, Send(f"grads{b}", r, self.everyone, elems, self.spec.payload_dtype,
                                         self.spec.collective))
                          for b, (f, elems) in enumerate(self.buckets))
            needs = tuple(Need(s.stream, r, 0, at) for (_, s), at in zip(sends, self.need_at))
            self._plan = (r, StepPlan(during=sends, needs=needs, local_step=False))
        return self._plan[1]

    def init(self, replicas) -> DDPState:
        return DDPState()

    def on_step(self, numerics, state: DDPState, worker: int, step: int, time_s: float, plan: StepPlan) -> None:
        """Nothing to queue: the step runs when its gradients have been all-reduced."""

    def on_reduced(self, numerics, state: DDPState, send, time_s: float, participants: tuple | None = None) -> list:
        """Once every bucket of a step is all-reduced, that step runs over the gradients of the
        workers present in all its buckets; returns their train-loss records."""
        got, present = state.arrived.get(send.round, (0, None))
        if participants is not None:
            present = participants if present is None else tuple(w for w in present if w in participants)
        got += 1
        if got < len(self.buckets):
            state.arrived[send.round] = (got, present)
            return []
        state.arrived.pop(send.round, None)
        if present is not None and not present:  # no worker's gradient reached every bucket: no step to take
            return []
        records = numerics.synchronous_step(send.round + 1, time_s,
                                            allreduce_grads(self.spec.payload_dtype, present, self.kernels))
        return only(records, present)

    def recover(self, numerics, state: DDPState, worker: int, peer: int) -> None:
        """A worker that comes back takes the peer's parameters (equal to its own: every replica steps)."""
        params = numerics.replicas.params
        copy_row(params, worker, {k: v[peer] for k, v in params.items()})

    def global_params(self, numerics, state: DDPState) -> Tree:
        return numerics.replicas.replica(0)
