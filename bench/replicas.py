"""Replica-engine benchmark: prints ONE JSON object (no assertions; see bench/README.md).

How fast can N replicas of one tiny GPT take inner AdamW steps on one device?

* ``loop``: a Python loop over N separate ``nn.Module`` replicas, each with its own
  ``torch.optim.AdamW`` (foreach) and ``clip_grad_norm_`` -- how other simulators run
  workers (one process or one loop per worker).
* ``batched``: the project's ``sim.training.replicas.Replicas.step`` -- all replicas'
  parameters stacked, one ``torch.func.vmap(grad_and_value(functional_call))`` call,
  per-replica clipping and AdamW on the stacked tensors.
* ``stacked``: ``StackedReplicas`` -- the same step, with gradients from the GPT written
  with an explicit replica dimension (weights [N, out, in], ``baddbmm``, one autograd
  pass) instead of vmap.

Same model, optimizer settings (lr 3e-3, betas 0.9 / 0.95, clip 1.0) and token shapes for
both; tokens are pre-generated on the device (data generation is not timed). Per N:
``loop_replica_steps_per_s``, ``batched_replica_steps_per_s``, ``stacked_replica_steps_per_s``
(replica-steps per wall second, median of timed steps after warm-up), the same as
tokens/s, and each engine's ratio to the loop.

Models (``--model``): ``0.5M`` (d 128, 2 layers, 4 heads, vocab 256: 478,976 params, the
issue's headline model), ``3M`` (d 256, 4 layers) and ``10M`` (d 320, 8 layers, 8 heads).
Defaults follow the issue on CUDA (batch 32 x 128 tokens); on CPU they are smaller
(batch 8 x 64) so a 2-core machine finishes in minutes.

Run: ``python bench/replicas.py [--device cpu|cuda] [--replicas 1 8 32 64] [--model 0.5M]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.machine import torch_machine  # noqa: E402
from sim.scenario import InnerOptimizer  # noqa: E402
from sim.training.models import TinyGPT  # noqa: E402
from sim.training.replicas import Replicas, StackedReplicas, init_params  # noqa: E402

MODELS = {"0.5M": dict(d_model=128, n_layers=2, n_heads=4), "3M": dict(d_model=256, n_layers=4, n_heads=4),
          "10M": dict(d_model=320, n_layers=8, n_heads=8)}
VOCAB = 256
OPT = InnerOptimizer(name="adamw", lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0, grad_clip=1.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, device: torch.device, warmup: int, steps: int) -> float:
    """Median wall seconds of one ``step()`` (each a step of all N replicas) after warm-up."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class LoopEngine:
    """N separate modules and optimizers, stepped one after another."""

    def __init__(self, model: torch.nn.Module, n: int, device: torch.device, precision: str = "fp32"):
        self.precision, self.device = precision, device
        self.models = [copy.deepcopy(model).to(device) for _ in range(n)]
        self.opts = [torch.optim.AdamW(m.parameters(), lr=OPT.lr, betas=(OPT.beta1, OPT.beta2), eps=OPT.eps,
                                       weight_decay=OPT.weight_decay, foreach=True) for m in self.models]

    def step(self, tokens: torch.Tensor) -> None:
        x, y = tokens[..., :-1], tokens[..., 1:]
        for i, (m, opt) in enumerate(zip(self.models, self.opts)):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                logits = m(x[i])
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), OPT.grad_clip, foreach=True)
            opt.step()


class BatchedEngine:
    """The project's stacked replicas (torch.func vmap)."""

    def __init__(self, model: torch.nn.Module, n: int, device: torch.device, precision: str = "fp32"):
        self.replicas = Replicas(model, n, OPT, device, seed=0, precision=precision)
        self.idx = list(range(n))

    def step(self, tokens: torch.Tensor) -> None:
        self.replicas.step(self.idx, tokens)


class StackedEngine(BatchedEngine):
    """The GPT written with an explicit replica dimension (bmm, one autograd pass)."""

    compile = False

    def __init__(self, model: torch.nn.Module, n: int, device: torch.device, precision: str = "fp32"):
        self.replicas = StackedReplicas(model, n, OPT, device, seed=0, precision=precision, compile=self.compile)
        self.idx = list(range(n))


class CompiledEngine(StackedEngine):
    """The stacked engine with its training forward under torch.compile (``run.compile``)."""

    compile = True


ENGINES = {"loop": LoopEngine, "batched": BatchedEngine, "stacked": StackedEngine, "compiled": CompiledEngine}
DEFAULT_ENGINES = ["loop", "batched", "stacked"]


def build(model_name: str, seq_len: int) -> torch.nn.Module:
    model = TinyGPT(VOCAB, seq_len=seq_len, **MODELS[model_name])
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(init_params(model, 0)[name])
    return model


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--model", choices=list(MODELS), default="0.5M")
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per replica per step (32 on CUDA, 8 on CPU)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (128 on CUDA, 64 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per engine and N (10 on CUDA, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (3 on CUDA, 1 on CPU)")
    ap.add_argument("--engines", nargs="+", choices=list(ENGINES), default=DEFAULT_ENGINES,
                    help="compiled: stacked under torch.compile (its warm-up steps pay the compile)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: forward and backward under torch.autocast, for every engine (the loop too)")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    cuda = dev.type == "cuda"
    b = args.batch_size or (32 if cuda else 8)
    t = args.seq_len or (128 if cuda else 64)
    steps = args.steps or (10 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    model = build(args.model, t)
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    per_n = {}
    for n in args.replicas:
        tokens = torch.randint(0, VOCAB, (n, b, t + 1), generator=g).to(dev)
        row: dict = {"replicas": n}
        for name in args.engines:
            engine = ENGINES[name](model, n, dev, args.precision)
            sec = time_steps(lambda e=engine: e.step(tokens), dev, warmup, steps)
            row[f"{name}_replica_steps_per_s"] = n / sec
            row[f"{name}_tokens_per_s"] = n * b * t / sec
            del engine
            if cuda:
                torch.cuda.empty_cache()
        if "loop" in args.engines:
            for name in args.engines:
                if name != "loop":
                    row[f"{name}_over_loop"] = row[f"{name}_replica_steps_per_s"] / row["loop_replica_steps_per_s"]
        per_n[str(n)] = row
    report = {"model": args.model, "params": n_params, "batch_size": b, "seq_len": t, "tokens_per_replica_step": b * t,
              "steps": steps, "warmup": warmup, "optimizer": "adamw, grad_clip 1.0, fp32 state",
              "precision": args.precision, "per_replicas": per_n,
              "machine": torch_machine(dev)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
