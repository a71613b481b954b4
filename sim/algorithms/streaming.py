"""Streaming DiLoCo (Douillard et al. 2025, arXiv 2501.18512, Algorithm 2).

The parameters are split into P fragments of whole transformer blocks
(``fragment_layers`` blocks each; ``strided``: block i goes to fragment i mod P, the
paper's default, or ``sequential``). The non-block parameters (embeddings, final norm,
head) form one more fragment of their own, as in MaxText and consistent with the
paper's simulated schedule (``embeddings_fragment: false`` puts them in fragment 0).

Fragment p is synced every H inner steps at its own offset: ``fragment_schedule: even``
(default) t_p = round(H (p+1) / P), so offsets are spread evenly over H and in steady
state one fragment is on the wire at a time (peak bandwidth / P); ``interval``: the
paper's simulated schedule (appendix: 1B/10B/100B with 8/16/36 fragments sync a fragment
every 11/5/2 steps at H = 100, i.e. floor(H / (P + 1)) for P block fragments, one extra
slot for the embeddings fragment), t_p = (p + 1) floor(H / (P_blocks + 1)). At a sync at step t every worker sends
Delta_{m,p} = theta_p(outer) - theta_{m,p}(t) (``payload_dtype`` on the wire, averaged
in fp32) and keeps training; tau = ``overlap_steps`` steps later it must have the
average, takes the outer Nesterov step on the fragment's outer parameters and merges:
theta_{m,p} = alpha theta_{m,p}(t+tau) + (1 - alpha) theta_p(outer) (torchft's lerp).
P = 1, tau = 0, alpha = 0 is DiLoCo exactly. Outer lr defaults to the paper's tuned 0.4.

Timing: at ``sync_grain: layer`` (default) each layer of a fragment starts its all-reduce
as soon as its backward is done at the sync step t, and at step t + tau + 1 the worker
waits only at the forward of a layer whose average is still on the wire (the papers'
model); ``step``: the fragment is one send after step t, and step t + tau + 1 waits for
all of it before it starts.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from sim.algorithms.base import ScheduleInfo, StepPlan, block_of, layer_parts, layered_needs, layered_send, sync_bytes
from sim.algorithms.common import OuterMethod
from sim.algorithms.diloco import DiLoCoAlgorithm
from sim.algorithms.knobs import FieldError, Int
from sim.algorithms.transforms import OuterNesterov, assign, merge, tree_sub, worker_view


def fragments_of(names: list[str], fragment_layers: int, pattern: str, embeddings_fragment: bool) -> list[list[str]]:
    """Parameter names of each fragment; a model without blocks is one fragment."""
    blocks = {n: b for n in names if (b := block_of(n)) is not None}
    others = [n for n in names if n not in blocks]
    if not blocks:
        return [list(names)]
    layers = max(blocks.values()) + 1
    p_blocks = math.ceil(layers / fragment_layers)
    frags: list[list[str]] = [[] for _ in range(p_blocks)]
    for n, i in blocks.items():
        frags[i % p_blocks if pattern == "strided" else i // fragment_layers].append(n)
    frags = [f for f in frags if f]
    if embeddings_fragment and others:
        return [others] + frags
    frags[0] = others + frags[0]
    return frags


class StreamingDiLoCoAlgorithm(DiLoCoAlgorithm):
    """Streaming DiLoCo (Douillard et al. 2025): fragments synced at staggered offsets, overlapped by tau steps."""
    name: Literal["streaming_diloco"] = "streaming_diloco"
    inner_steps: Int = Field(default=100, ge=1, description="H in Streaming DiLoCo: inner steps between two syncs of one fragment (paper 100).")
    outer_lr: float = Field(default=0.4, gt=0, description="eta, outer learning rate (Streaming DiLoCo tuned value 0.4).")
    fragment_layers: Int = Field(default=3, ge=1, description="|p|: transformer blocks per fragment (paper: 3 at every scale).")
    pattern: Literal["strided", "sequential"] = Field(default="strided", description="Which blocks share a fragment: strided (layer i -> fragment i mod P, paper default) or sequential.")
    overlap_steps: Int = Field(default=1, ge=0, description="tau: inner steps a fragment may be in flight before it must be applied (paper 1; must be < H).")
    mixing: float = Field(default=0.5, ge=0, le=1, description="alpha: merged = alpha * local + (1 - alpha) * outer (0 discards the tau local steps).")
    embeddings_fragment: bool = Field(default=True, description="Non-block parameters (embeddings, final norm, head) form their own fragment (MaxText layout); false: they join fragment 0.")
    fragment_schedule: Literal["even", "interval"] = Field(default="even", description=(
        "When each fragment syncs within H: even = offset t_p = round(H (p+1) / P) over the P fragments; "
        "interval = every floor(H / (P_blocks + 1)) steps, t_p = (p+1) floor(H / (P_blocks + 1)) (the "
        "Streaming DiLoCo paper's simulated schedule: 1B/10B/100B sync a fragment every 11/5/2 steps at H = 100)."))

    @model_validator(mode="after")
    def _tau(self) -> "StreamingDiLoCoAlgorithm":
        if self.overlap_steps >= self.inner_steps:
            raise FieldError(("overlap_steps",), f"tau must be < inner_steps H={self.inner_steps} (got {self.overlap_steps})")
        return self


class StreamingDiLoCo(OuterMethod):
    Spec = StreamingDiLoCoAlgorithm

    @classmethod
    def check_fits(cls, spec, n_workers: int, layers: int | None, layers_field: str | None) -> None:
        """Fragments of more layers than the model has are refused when the user set them (the
        default 3 is clipped on a smaller model)."""
        if layers is not None and spec.fragment_layers > layers and "fragment_layers" in spec.model_fields_set:
            raise FieldError(("fragment_layers",), f"must be <= the model's {layers} layers ({layers_field}) "
                                                   f"(got {spec.fragment_layers})")

    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.H = spec.inner_steps
        self.tau = spec.overlap_steps
        self.alpha = spec.mixing
        self.outer = OuterNesterov(spec.outer_lr, spec.outer_momentum, spec.nesterov)
        self.fragments: list[list[str]] = []
        self.offsets: list[int] = []
        self.frag_elems: list[int] = []
        self.frag_parts: list[list[tuple[int | None, int]]] = []
        self.layers = 1
        self.grain = spec.sync_grain
        self.warm_collective = spec.collective
        self.info = ScheduleInfo(wire_format=spec.payload_dtype)

    def configure(self, layout: list[tuple[str, int]], proxy_layers: int | None = None) -> None:
        super().configure(layout, proxy_layers)
        s = self.spec
        elems = dict(layout)
        self.fragments = fragments_of([k for k, _ in layout], s.fragment_layers, s.pattern, s.embeddings_fragment)
        p = len(self.fragments)
        if s.fragment_schedule == "interval":
            p_blocks = sum(1 for f in self.fragments if any(block_of(n) is not None for n in f))
            self.offsets = [(i + 1) * max(1, self.H // (p_blocks + 1)) for i in range(p)]
        else:
            self.offsets = [max(1, round(self.H * (i + 1) / p)) for i in range(p)]
        self.frag_elems = [sum(elems[n] for n in f) for f in self.fragments]
        self.frag_parts = []
        for f in self.fragments:
            parts, self.layers = layer_parts(layout, f, proxy_layers)
            self.frag_parts.append(parts)
        self.info = ScheduleInfo(wire_format=s.payload_dtype,
                                 syncs_per_round=p,
                                 payload_bytes=sync_bytes(*(self.method_plan(0, t) for t in sorted(set(self.offsets)))),
                                 extra={"fragments": p, "fragment_params": self.frag_elems, "offsets": self.offsets,
                                        "sync_grain": self.grain})

    def _due(self, step: int) -> list[tuple[int, int]]:
        """(fragment, round) pairs whose sync falls at ``step``."""
        if step < 1:
            return []
        return [(p, (step - t) // self.H) for p, t in enumerate(self.offsets) if step >= t and (step - t) % self.H == 0]

    def method_quiet(self, worker: int, step: int) -> int:
        """Steps before the next one at which a fragment is sent (t_p + j H) or needed (+ tau)."""
        nxt = None
        for t in self.offsets:
            for first in (t, t + self.tau):
                s = first if step <= first else step + (-(step - first) % self.H)
                nxt = s if nxt is None else min(nxt, s)
        return 0 if nxt is None else nxt - step

    def use_step(self, key: tuple) -> int:
        return self.warm + self.offsets[int(key[0][4:])] + key[1] * self.H + self.tau

    def method_plan(self, worker: int, step: int) -> StepPlan:
        during: list = []
        sends: list = []
        for p, j in self._due(step):
            d, s = layered_send(f"frag{p}", j, self.everyone, self.frag_parts[p], self.layers,
                                self.spec.payload_dtype, self.spec.collective, grain=self.grain)
            during += d
            sends += s
        needs = tuple(n for p, j in self._due(step - self.tau)
                      for n in layered_needs(f"frag{p}", j, self.frag_parts[p], self.layers, self.grain))
        if not (during or sends or needs):
            return StepPlan()
        during.sort(key=lambda fs: fs[0])  # two fragments due at once: release in backward order
        return StepPlan(during=tuple(during), sends=tuple(sends), needs=needs)

    def method_ops(self, numerics, state, worker: int, step: int, plan: StepPlan) -> None:
        params = numerics.replicas.params
        for send in plan.outgoing():  # contributions first: with tau = 0 the same fragment is applied next
            keys = self.fragments[int(send.stream[4:])]
            red = self.reduction(state, send.key, worker)

            def contribute(red=red, keys=keys) -> None:
                fresh = tree_sub(worker_view(state.outer, worker, keys), worker_view(params, worker, keys))
                red.add(worker, self.wire(state, worker, fresh))

            numerics.enqueue_op(worker, contribute)
        for stream, round_ in plan.needed():
            keys = self.fragments[int(stream[4:])]
            key = (stream, round_, self.everyone)
            red = self.reduction(state, key, worker)

            def apply(red=red, keys=keys, key=key) -> None:
                if red.gone:  # left out, and the result is gone: nothing to apply
                    return
                outer_w = worker_view(state.outer, worker, keys)
                mom_w = worker_view(state.momentum, worker, keys)
                self.outer.step_(outer_w, mom_w, red.mean(), self.kernels)
                if worker in red.present:  # left out of the average (down or late): keep its own params
                    local = worker_view(params, worker, keys)
                    assign(local, merge(local, outer_w, self.alpha))
                self.release(state, key, worker)

            numerics.enqueue_op(worker, apply, red.ready)
