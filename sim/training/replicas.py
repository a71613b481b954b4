"""Stacked replica state and batched inner steps.

All M replicas' parameters live in stacked tensors ``[M, ...]`` (one dict entry per
model parameter), as do their AdamW states. One call of ``Replicas.step`` computes every
selected replica's loss and gradient together with ``torch.func.vmap`` over
``grad_and_value`` of a ``functional_call`` -- never a Python loop over models -- then
clips each replica's gradient by its own global norm and applies each replica's own
optimizer state. ``StackedReplicas`` gets the same gradients from the GPT written with an
explicit replica dimension (one batched matmul per layer, one autograd pass; optionally
under ``torch.compile``); ``run.engine`` picks one (``replica_engine``). Both can run the
forward and backward under bf16 autocast (``run.precision``) and evaluate all replicas
in one batched call (``eval_losses``). ``Numerics`` keeps, per worker, the inner steps
the engine has finished but the numerics have not run yet, and flushes them in batches
(masked when workers have different numbers pending) in exactly the simulated order.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from sim.rng import rng as named_rng
from sim.rng import torch_seed

GradTransform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def init_params(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """GPT-2 style init from a private generator: N(0, 0.02) weights, zero biases, unit norms."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            t = torch.zeros(p.shape)
        elif ".ln" in name or name.startswith("ln") or "ln_f" in name:
            t = torch.ones(p.shape)
        else:
            t = torch.randn(p.shape, generator=g) * 0.02
        out[name] = t
    return out


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device: cuda was asked for but torch sees no CUDA device; use auto or cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def replica_engine(engine: str, model_kind: str) -> str:
    """The replica engine a run uses: ``run.engine``, with auto = stacked for gpt, vmap otherwise
    (stacked with another model is refused by the schema, and by ``StackedReplicas`` itself)."""
    if engine == "auto":
        return "stacked" if model_kind == "gpt" else "vmap"
    return engine


def replica_loss(model: nn.Module, output: str = "logits") -> Callable:
    """One replica's loss as a function of its parameters and a batch, ``loss(params, x, y)``:
    the next-token cross-entropy of ``model``'s logits (``output: logits``) or the model's own
    loss (``output: loss``). The vmap engine trains ``vmap(grad_and_value(loss))`` of it, and
    the pre-work check (``sim.checks.check_model_engine``) runs exactly that once."""

    def loss_fn(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if output == "loss":
            return functional_call(model, params, (x, y)).reshape(())
        logits = functional_call(model, params, (x,))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    return loss_fn


class Replicas:
    """M replicas of one model as stacked tensors, with per-replica inner optimizer state."""

    def __init__(self, model: nn.Module, n: int, opt, device: torch.device, seed: int, precision: str = "fp32",
                 output: str = "logits"):
        """``output``: what ``model``'s forward gives (``model.output``): ``logits`` (the loss is
        the next-token cross-entropy) or ``loss`` (``model(x, y)`` is the loss itself)."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: fp32 or bf16 (got {precision})")
        self.model = model
        self.n = n
        self.opt = opt
        self.device = device
        self.precision = precision
        base = init_params(model, torch_seed(seed, "model/init"))
        self.shapes = {k: tuple(v.shape) for k, v in base.items()}
        self.params = {k: v.to(device).unsqueeze(0).repeat(n, *([1] * v.dim())).contiguous() for k, v in base.items()}
        self.exp_avg = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.opt_steps = torch.zeros(n, dtype=torch.int64, device=device)

        loss_fn = replica_loss(model, output)
        self._loss_fn = loss_fn
        self._grad_and_loss = vmap(grad_and_value(loss_fn))
        self._replica_losses = vmap(loss_fn, in_dims=(0, None, None))  # every replica on the same batch

    def _autocast(self):
        """bf16 autocast around forward and backward (``precision: bf16``); fp32 otherwise."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def n_params(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes.values()))

    def replica(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.params.items()}

    def step(self, idx: list[int], tokens: torch.Tensor, grad_transform: GradTransform | None = None) -> torch.Tensor:
        """One inner step of replicas ``idx`` on ``tokens`` [len(idx), B, T+1]; returns their losses."""
        full = len(idx) == self.n and list(idx) == list(range(self.n))
        sel = None if full else torch.tensor(idx, device=self.device)
        tokens = tokens.to(self.device)
        x, y = tokens[..., :-1], tokens[..., 1:]
        params = self.params if full else {k: v.index_select(0, sel) for k, v in self.params.items()}
        with self._autocast():
            grads, losses = self._grad_and_loss(params, x, y)
        losses = losses.float()
        if grad_transform is not None:
            grads = grad_transform(grads)
        with torch.no_grad():
            grads = self._clip(grads)
            new = self._apply(params, grads, sel)
            if full:
                for k in self.params:
                    self.params[k].copy_(new[k])
            else:
                for k in self.params:
                    self.params[k].index_copy_(0, sel, new[k])
        return losses.detach()

    def _clip(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.opt.grad_clip is None:
            return grads
        sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(dim=1) for g in grads.values())
        scale = (self.opt.grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        return {k: g * scale.reshape(-1, *([1] * (g.dim() - 1))) for k, g in grads.items()}

    def lr_at(self, t: torch.Tensor) -> torch.Tensor:
        """Inner learning rate at optimizer step ``t`` (1-based, per replica): linear warmup
        over ``warmup_steps``, then constant or cosine decay to ``min_lr_ratio * lr`` over
        ``decay_steps`` (held there afterwards)."""
        o = self.opt
        t = t.to(torch.float64)
        factor = torch.ones_like(t)
        if o.warmup_steps > 0:
            factor = torch.clamp(t / o.warmup_steps, max=1.0)
        if o.schedule == "cosine":
            progress = torch.clamp((t - o.warmup_steps) / o.decay_steps, min=0.0, max=1.0)
            cos = 0.5 * (1 + torch.cos(torch.pi * progress))
            factor = factor * (o.min_lr_ratio + (1 - o.min_lr_ratio) * cos)
        return o.lr * factor

    def _apply(self, params: dict, grads: dict, sel: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o = self.opt
        if sel is None:
            self.opt_steps += 1
            t = self.opt_steps
        else:
            self.opt_steps.index_add_(0, sel, torch.ones_like(sel))
            t = self.opt_steps.index_select(0, sel)
        lr = self.lr_at(t)
        if o.name == "sgd":
            out = {}
            for k, p in params.items():
                lr_k = lr.to(p.dtype).reshape((-1,) + (1,) * (p.dim() - 1))
                out[k] = p - lr_k * (grads[k] + o.weight_decay * p)
            return out
        bc1 = 1 - o.beta1 ** t.to(torch.float64)
        bc2 = 1 - o.beta2 ** t.to(torch.float64)
        out = {}
        for k, p in params.items():
            g = grads[k]
            m = self.exp_avg[k] if sel is None else self.exp_avg[k].index_select(0, sel)
            v = self.exp_avg_sq[k] if sel is None else self.exp_avg_sq[k].index_select(0, sel)
            m = m * o.beta1 + g * (1 - o.beta1)
            v = v * o.beta2 + g * g * (1 - o.beta2)
            shape = (-1,) + (1,) * (p.dim() - 1)
            c1 = bc1.to(p.dtype).reshape(shape)
            c2 = bc2.to(p.dtype).reshape(shape)
            lr_k = lr.to(p.dtype).reshape(shape)
            denom = (v / c2).sqrt() + o.eps
            q = p * (1 - lr_k * o.weight_decay) - lr_k * (m / c1) / denom
            if sel is None:
                self.exp_avg[k].copy_(m)
                self.exp_avg_sq[k].copy_(v)
            else:
                self.exp_avg[k].index_copy_(0, sel, m)
                self.exp_avg_sq[k].index_copy_(0, sel, v)
            out[k] = q
        return out

    @torch.no_grad()
    def eval_loss(self, params: dict[str, torch.Tensor], batches: list[torch.Tensor]) -> float:
        """Mean cross-entropy of one set of (unstacked) parameters over held-out batches."""
        total = 0.0
        for b in batches:
            b = b.to(self.device)
            with self._autocast():
                total += float(self._loss_fn(params, b[..., :-1], b[..., 1:]))
        return total / len(batches)

    @torch.no_grad()
    def eval_losses(self, stacked: dict[str, torch.Tensor], batches: list[torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy of each of N stacked parameter sets ``[N, ...]`` (e.g. every
        replica) over the same held-out batches, N at a time in one batched call per batch; [N]."""
        total = None
        for b in batches:
            b = b.to(self.device)
            with self._autocast():
                losses = self._replica_losses(stacked, b[..., :-1], b[..., 1:]).float()
            total = losses if total is None else total + losses
        return total / len(batches)


class Numerics:
    """Lazy, batched inner steps in simulated order, plus the data streams that feed them.

    Each worker has a queue, in its own simulated order, of inner steps and *ops* (an
    algorithm's contribution to a collective, an outer step, a merge). ``flush`` runs
    the queues: ops at the heads of queues run first (an op whose inputs are not ready
    -- a group mean whose members have not all contributed -- waits), then every worker
    whose head is an inner step takes it in one batched call, masked to those workers.
    Ordering hazard: an op that reads several workers' values (a mean) must only run
    after each of them ran its contribution op at the right place in its own queue; the
    op's ``ready`` says so, so numerics never depend on when ``flush`` is called.
    """

    def __init__(self, replicas: Replicas, dataset, batch_size: int, seed: int):
        self.replicas = replicas
        self.dataset = dataset
        self.batch_size = batch_size
        n = replicas.n
        self.data_rngs = [named_rng(seed, f"data/worker/{i}") for i in range(n)]
        self.pending: list[deque] = [deque() for _ in range(n)]
        self.batched_calls = 0
        self.replica_steps = 0
        self.ops_run = 0

    def add_queue(self) -> int:
        """A queue of ops that is no worker's (a parameter server's): its index in ``pending``.
        It never holds inner steps; its ops run in the order queued, each once ready."""
        self.pending.append(deque())
        return len(self.pending) - 1

    def enqueue(self, worker: int, step: int, time_s: float) -> None:
        """An inner step the engine finished at ``time_s``; it runs at the next flush."""
        self.pending[worker].append(("step", step, time_s))

    def enqueue_op(self, worker: int, fn: Callable[[], None], ready: Callable[[], bool] | None = None) -> None:
        """Run ``fn`` after the worker's queued steps, once ``ready()`` (default: at once)."""
        self.pending[worker].append(("op", fn, ready))

    def _tokens(self, workers: list[int]) -> torch.Tensor:
        batches = [self.dataset.train_batch(self.data_rngs[w], w, self.batch_size) for w in workers]
        return torch.from_numpy(np.stack(batches))

    def flush(self) -> list[tuple[int, int, float, float]]:
        """Run every queued step and every op whose inputs are ready; returns the train
        records (worker, step, time_s, loss) of the steps run."""
        out = []
        queues = self.pending
        while True:
            progressed = False
            for q in queues:
                while q and q[0][0] == "op" and (q[0][2] is None or q[0][2]()):
                    _, fn, _ = q.popleft()
                    fn()
                    self.ops_run += 1
                    progressed = True
            workers = [w for w, q in enumerate(queues) if q and q[0][0] == "step"]
            if workers:
                meta = [queues[w].popleft() for w in workers]
                losses = self.replicas.step(workers, self._tokens(workers)).tolist()
                self.batched_calls += 1
                self.replica_steps += len(workers)
                out += [(w, s, t, l) for w, (_, s, t), l in zip(workers, meta, losses)]
                progressed = True
            if not progressed:
                return out

    def waiting_ops(self) -> int:
        """Ops still queued after a flush (they wait for inputs the simulation has not made yet)."""
        return sum(len(q) for q in self.pending)

    def synchronous_step(self, step: int, time_s: float, grad_transform: GradTransform) -> list[tuple[int, int, float, float]]:
        """All replicas take one step together with ``grad_transform`` (e.g. the all-reduce)."""
        workers = list(range(self.replicas.n))
        losses = self.replicas.step(workers, self._tokens(workers), grad_transform).tolist()
        self.batched_calls += 1
        self.replica_steps += len(workers)
        return [(w, step, time_s, l) for w, l in zip(workers, losses)]


class StackedReplicas(Replicas):
    """Replicas whose gradients come from the GPT written with an explicit replica dimension
    (``models.stacked_gpt_logits``: weights ``[N, out, in]``, one ``baddbmm`` per linear layer
    for all replicas) and ONE autograd pass over the sum of the replicas' losses -- each
    replica's loss depends only on its own slice, so the gradient of the sum is every
    replica's own gradient. Clipping, AdamW and the optimizer state are ``Replicas``'
    (already over the stacked tensors). The default engine for GPT models (``run.engine:
    auto``); equal to the vmap engine to fp32 rounding, and a replica's step is bit-identical
    whichever replicas it is batched with (tests/test_replica_engines.py); GPT models only."""

    def __init__(self, model: nn.Module, n: int, opt, device: torch.device, seed: int, precision: str = "fp32",
                 compile: bool = False):
        from sim.training.models import TinyGPT, stacked_gpt_logits

        if not isinstance(model, TinyGPT):
            raise ValueError(f"StackedReplicas needs a TinyGPT (model kind gpt), got {type(model).__name__}; "
                             "use Replicas (vmap) for other models")
        super().__init__(model, n, opt, device, seed, precision)
        layers, heads = len(model.blocks), model.blocks[0].heads

        def losses_of(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            """Each replica's mean cross-entropy on its own tokens: [N]."""
            logits = stacked_gpt_logits(params, x, layers, heads)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                   reduction="none").reshape(x.shape[0], -1).mean(dim=1)

        self.compiled = compile
        self._eager_losses = losses_of
        self._train_losses = torch.compile(losses_of) if compile else losses_of

        def grad_and_loss(params: dict, x: torch.Tensor, y: torch.Tensor):
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            losses = self._forward(leaves, x, y)
            grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
            return dict(zip(leaves, grads)), losses

        def replica_losses(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            n = next(iter(params.values())).shape[0]
            return losses_of(params, x.expand(n, *x.shape), y.expand(n, *y.shape))

        self._grad_and_loss = grad_and_loss
        self._replica_losses = replica_losses

    def _forward(self, leaves: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training forward, compiled with ``torch.compile`` when asked for; a compile that
        fails (no C++ compiler, an unsupported backend) falls back to eager, once, with a warning."""
        if not self.compiled:
            return self._eager_losses(leaves, x, y)
        try:
            return self._train_losses(leaves, x, y)
        except Exception as err:  # noqa: BLE001 -- any compiler failure; eager raises real errors itself
            import warnings

            warnings.warn(f"run.compile: torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0]}); "
                          "running eager", RuntimeWarning, stacklevel=2)
            self.compiled = False
            return self._eager_losses(leaves, x, y)
