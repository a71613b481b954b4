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

On the sync template (``sim.algorithms.template``): the fragments are the template's streams
(``fragment_names``), staggered by ``fragment_schedule`` and applied ``delay_steps`` = tau
steps after they are sent; the pseudo-gradient is DiLoCo's ``contribution``, and ``apply`` is
DiLoCo's outer step followed by the alpha merge.

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

from sim.algorithms.diloco import DiLoCo, DiLoCoAlgorithm
from sim.algorithms.knobs import FieldError, Int
from sim.algorithms.template import Result, SyncRule
from sim.algorithms.transforms import Tree, assign, merge, worker_view
from sim.schedule import block_of


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


class StreamingDiLoCo(DiLoCo):
    """DiLoCo on the sync template with P fragment streams staggered by ``fragment_schedule``,
    each applied tau = ``overlap_steps`` steps after it is sent, and merged with mixing alpha."""
    Spec = StreamingDiLoCoAlgorithm
    sync = SyncRule(every="inner_steps", stream="frag", delay_steps="overlap_steps", stagger="fragment_schedule")

    @classmethod
    def check_fits(cls, spec, n_workers: int, layers: int | None, layers_field: str | None) -> None:
        """Fragments of more layers than the model has are refused when the user set them (the
        default 3 is clipped on a smaller model)."""
        if layers is not None and spec.fragment_layers > layers and "fragment_layers" in spec.model_fields_set:
            raise FieldError(("fragment_layers",), f"must be <= the model's {layers} layers ({layers_field}) "
                                                   f"(got {spec.fragment_layers})")

    def fragment_names(self, names: list[str]) -> list[list[str]]:
        s = self.spec
        return fragments_of(names, s.fragment_layers, s.pattern, s.embeddings_fragment)

    @property
    def fragments(self) -> list[list[str]]:
        return [list(s.keys) for s in self.streams]

    @property
    def offsets(self) -> list[int]:
        return [s.offset for s in self.streams]

    @property
    def frag_elems(self) -> list[int]:
        return self.info.extra["fragment_params"]

    def apply(self, state, worker: int, params: Tree, fresh: Tree | None, result: Result) -> None:
        if result.mean is None:  # left out, and the result is gone: nothing to apply
            return
        outer_w = worker_view(state.outer, worker, params)
        self.outer.step_(outer_w, worker_view(state.momentum, worker, params), result.mean, self.kernels)
        if result.took_part:  # merge; left out of the average (down or late): keep its own params
            assign(params, merge(params, outer_w, self.spec.mixing))
