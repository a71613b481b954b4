"""DeMo: Decoupled Momentum Optimization (Peng, Quesnelle, Kingma 2024, arXiv 2411.19870).

Shipped as a plug-in (``sim.algorithms.METHODS``): built only from the public protocol, as a third
party would. Every step syncs, like ddp, but what crosses the wire is a sparse slice of each
worker's own momentum, not its gradient. Worker w, step t, learning rate eta_t (the inner
optimizer's ``lr`` and schedule, as in the reference, where DeMo *is* the optimizer):

    m_w <- beta m_w + eta_t g_w                      (local momentum; beta = ``beta``, 0.999)
    q_w  = TopK_k(DCT_s(m_w))                        (per chunk of s values: k coefficients)
    m_w <- m_w - IDCT_s(q_w)                         (what is sent leaves the momentum)
    Q    = AllGather_w(q_w)                          (values + indices, ``ring_allgather``)
    u    = IDCT_s(mean over w of the q_w received)   (``kernels.dct.gather_mean``)
    theta <- theta (1 - eta_t lambda) - eta_t sign(u)  (sign-SGD, decoupled weight decay lambda)

``g_w`` is the gradient of the worker's batch, clipped to ``optimizer.grad_clip`` per
replica when that is set. DCT_s is the orthonormal DCT-II over chunks of s values of the
flattened tensor (``kernels.dct``; the tail chunk is zero-padded). The DeMo reference
(bloc97/DeMo) tiles matrices into 2-D s x s blocks and keeps k of s^2 coefficients; here
chunks are 1-D, so with the defaults (s = 64, k = 32) half the coefficients travel:
8 k / s = 4 bytes per parameter per step, an fp32 all-reduce's share. Set e.g. ``topk: 1``
or ``chunk: 4096`` for the paper's compression ratios (32 / 4096 per matrix block).

Wire (exact): per tensor of n values C = ceil(n / s) chunks, k fp32 values and k int32
indices each: 8 k C bytes, sent as ``k C`` values in format ``topk:1`` (every value of the
payload kept, each with its index). With a timing proxy, whose tensor shapes are unknown,
each proxy layer's payload counts as one flat tensor. The run summary's
``payload_bytes_per_sync`` is what one all-gather carries per worker, tail chunks included,
as are the recorded syncs and transfers. Every replica applies the same update, so replicas stay
identical; momenta differ per worker. The update waits for the all-gather (it runs in
``on_reduced``, as ddp's step does); ``sync_grain: layer`` releases each layer's slice as its
backward finishes and waits for it at that layer's forward, the math unchanged.

Faults: an all-gather that completes over a subset (a worker down, or late past
``sync_timeout_s``) averages the slices of those present. A worker that is down neither
accumulates nor extracts (its momentum is frozen until it is back); a late worker extracted
and sent, and its slice is lost. A worker that comes back takes a peer's parameters (equal to
its own: every replica applies every update) and keeps its momentum.
Not modelled: the reference's 2-D tiles, index compression, the inner optimizer's betas
(DeMo replaces it: only its lr, schedule, weight decay and clipping are used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, model_validator

from sim.algorithms.base import Algorithm
from sim.algorithms.common import copy_row, only
from sim.algorithms.knobs import FieldError, MethodSpec
from sim.algorithms.transforms import Tree
from sim.schedule import ScheduleInfo, StepPlan, layer_parts, layered_needs, layered_send, sync_bytes

WIRE_FORMAT = "topk:1"
"""Each sent value with its int32 index: 8 bytes (``kernels.formats``)."""
COLLECTIVE = "ring_allgather"


MAX_CHUNK = 8192
"""Largest DCT chunk s: the basis ``kernels.dct.dct_matrix`` builds is s x s in float64 (512 MiB
at 8192, twice the paper's largest 4096)."""


class DeMoSpec(MethodSpec):
    """DeMo's knobs (defaults of the paper and its reference code)."""
    chunk: int = Field(default=64, ge=1, description="s: values per DCT chunk of a flattened tensor (DeMo 64).")
    topk: int = Field(default=32, ge=1, description="k: DCT coefficients sent per chunk, largest magnitude first (DeMo 32).")
    beta: float = Field(default=0.999, ge=0, lt=1, description="beta: decay of the local momentum (DeMo compression_decay 0.999).")
    sync_grain: Literal["step", "layer"] = Field(default="step", description=(
        "step = one all-gather after the step, the next step waits for it (the reference: the optimizer step "
        "gathers after backward); layer = each layer's slice leaves when its backward is done and is waited for "
        "at its forward. Timing only; the math is the same."))

    @model_validator(mode="after")
    def _k_in_chunk(self) -> "DeMoSpec":
        if self.chunk > MAX_CHUNK:  # refused before the s x s DCT basis is built
            raise FieldError(("chunk",), f"s must be <= {MAX_CHUNK} (the DCT basis is s x s float64: "
                                         f"{8 * self.chunk ** 2 / 2**30:.3g} GiB at s={self.chunk}; "
                                         f"{8 * MAX_CHUNK ** 2 / 2**20:.0f} MiB at {MAX_CHUNK})")
        if self.topk > self.chunk:
            raise ValueError(f"topk: k must be <= chunk s={self.chunk} (got {self.topk})")
        return self


@dataclass
class DeMoState:
    """DeMo's numerics state: each worker's momentum (stacked like the replicas), who is down,
    and per round how many parts of the all-gather are in."""
    momentum: Tree
    absent: set = field(default_factory=set)
    """Workers down now: they neither accumulate nor extract."""


class DeMo(Algorithm):
    Spec = DeMoSpec

    @classmethod
    def events_per_step(cls, spec, layers: int) -> float:
        """An all-gather every step: one part per layer at layer grain, else one."""
        return 1.0 + (layers + 1 if spec.sync_grain == "layer" else 1)
    outer_state_copies = 1
    """Per-worker copies of the parameters besides the replica: the momentum."""

    def __init__(self, spec: DeMoSpec, n_workers: int, seed: int):
        self.spec = spec
        self.n_workers = n_workers
        self.everyone = tuple(range(n_workers))
        self._plan: tuple[int, StepPlan] | None = None
        self.info = ScheduleInfo(wire_format=f"topk:{spec.topk / spec.chunk!r}")

    # ------------------------------------------------------------------ schedule (data)
    def kept(self, elems: int) -> int:
        """Values a tensor of ``elems`` values sends: k per chunk of s."""
        return self.spec.topk * -(-int(elems) // self.spec.chunk)

    def configure(self, layout, proxy_layers=None) -> None:
        """Values sent per step: k per chunk of each tensor; with a timing proxy (whose tensor
        shapes are not known) k per chunk of each proxy layer's payload, so the count is the same
        whether the tiny model trains or not."""
        if proxy_layers is None:
            self.parts, self.layers = layer_parts([(name, self.kept(e)) for name, e in layout])
        else:
            parts, self.layers = layer_parts(layout, None, proxy_layers)
            self.parts = [(layer, self.kept(e)) for layer, e in parts]
        self.elems_per_step = sum(e for _, e in self.parts)
        self._plan = None
        self.info = ScheduleInfo(wire_format=f"topk:{self.spec.topk / self.spec.chunk!r}",
                                 payload_bytes=sync_bytes(self.at_step(0, 1)),
                                 extra={"sent_values_per_step": self.elems_per_step})

    def at_step(self, worker: int, step: int) -> StepPlan:
        r = step - 1
        if self._plan is None or self._plan[0] != r:  # every worker asks for the same plan each step
            g = self.spec.sync_grain
            during, sends = layered_send("demo", r, self.everyone, self.parts, self.layers, WIRE_FORMAT, COLLECTIVE,
                                         grain=g)
            self._plan = (r, StepPlan(during=during, sends=sends, needs=layered_needs("demo", r, self.parts,
                                                                                       self.layers, g),
                                      local_step=False))
        return self._plan[1]

    # ------------------------------------------------------------------ math
    def init(self, replicas) -> DeMoState:
        import torch

        return DeMoState(momentum={k: torch.zeros_like(v, dtype=torch.float32) for k, v in replicas.params.items()})

    def on_step(self, numerics, state: DeMoState, worker: int, step: int, time_s: float, plan: StepPlan) -> None:
        """Nothing to queue: the step runs when its all-gather is done (``on_reduced``)."""

    def on_reduced(self, numerics, state: DeMoState, send, time_s: float, participants: tuple | None = None) -> list:
        """Round ``send.round``'s all-gather is done over ``participants``: every replica computes
        its gradient, the workers up fold it into their momentum and extract their slice, and
        every replica applies the sign of the decoded mean of the slices received."""
        import torch

        from kernels.dct import chunk_dct, chunk_idct, gather_mean, scatter_chunks, topk_chunks

        replicas = numerics.replicas
        s, k, beta = self.spec.chunk, self.spec.topk, self.spec.beta
        W = self.n_workers
        up = [w for w in range(W) if w not in state.absent]
        present = [w for w in (participants if participants is not None else self.everyone) if w in up]
        if not up:  # everyone failed after sending: nobody is there to take the step
            return []
        opt = replicas.opt
        before = {name: v.clone() for name, v in replicas.params.items()}
        box: dict = {}

        def demo_update(grads: Tree) -> Tree:
            with torch.no_grad():
                t = replicas.opt_steps + 1  # the optimizer step this is (every replica steps together)
                lr = float(replicas.lr_at(t)[0])
                box["lr"] = lr
                g = {name: v.float() for name, v in grads.items()}
                if opt.grad_clip is not None:
                    sq = sum(v.reshape(W, -1).pow(2).sum(dim=1) for v in g.values())
                    scale = (opt.grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
                    g = {name: v * scale.reshape(-1, *([1] * (v.dim() - 1))) for name, v in g.items()}
                rows = torch.tensor(up, dtype=torch.long, device=next(iter(g.values())).device)
                keep = torch.tensor([up.index(w) for w in present], dtype=torch.long, device=rows.device)
                update = {}
                for name, m in state.momentum.items():
                    shape = m.shape[1:]
                    n = m[0].numel()
                    mu = m.index_select(0, rows) * beta + lr * g[name].index_select(0, rows)
                    vals, idx = topk_chunks(chunk_dct(mu.reshape(len(up), n), s), k)
                    mu = mu - chunk_idct(scatter_chunks(vals, idx, s), n).reshape(mu.shape)
                    m.index_copy_(0, rows, mu)
                    if len(present):
                        u = chunk_idct(gather_mean(vals.index_select(0, keep), idx.index_select(0, keep), s), n)
                        update[name] = torch.sign(u).reshape(shape)
                    else:
                        update[name] = torch.zeros(shape, device=m.device)
                box["update"] = update
            return grads  # the inner optimizer's step on these is overwritten below

        records = numerics.synchronous_step(send.round + 1, time_s, demo_update)
        lr, update = box["lr"], box["update"]
        with torch.no_grad():
            for name, p in replicas.params.items():
                new = before[name] * (1 - lr * opt.weight_decay) - lr * update[name].to(p.dtype)
                p.copy_(new)
        return only(records, tuple(present) if participants is not None else None)

    def global_params(self, numerics, state: DeMoState) -> Tree:
        return numerics.replicas.replica(0)

    # ------------------------------------------------------------------ faults
    def on_member_down(self, state: DeMoState | None, worker: int) -> None:
        if state is not None:  # (None: a timing-only run)
            state.absent.add(worker)

    def on_member_up(self, state: DeMoState | None, worker: int, step: int) -> None:
        if state is not None:
            state.absent.discard(worker)

    def recover(self, numerics, state: DeMoState, worker: int, peer: int) -> None:
        """A worker that comes back takes the peer's parameters (equal to its own) and keeps its momentum."""
        params = numerics.replicas.params
        copy_row(params, worker, {k: v[peer] for k, v in params.items()})


METHOD = DeMo
