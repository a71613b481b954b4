"""The numerics adapter: the engine's step and sync events -> the method's math on real replicas.

The second of the runner's three pieces (``sim.build``, this, ``sim.writer``). It owns the
data, the replicas, the lazy batched numerics and the eval batches, and it calls the method's
math hooks (``on_step``, ``on_reduced``, ``evaluate_after``, ``global_params``,
``diagnostics``, the fault hooks) in each worker's simulated order. It records loss points;
it does not know about virtual time beyond the times it is handed, and imports no engine
module.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from sim.algorithms.base import Algorithm
from sim.metrics.records import LossPoint, Recorder
from sim.scenario import Scenario

Diverge = Callable[[int, float, str, object], None]
"""``diverge(step, time_s, what, value)``: called with the first non-finite value seen."""


class NumericsAdapter:
    """Real tiny-model training under the simulated schedule (numerics on)."""

    def __init__(self, sc: Scenario, n_workers: int, prework, recorder: Recorder):
        import torch

        from sim.rng import rng as named_rng
        from sim.training.data import make_dataset
        from sim.training.models import build_model
        from sim.training.replicas import Numerics, Replicas, StackedReplicas, replica_engine

        self.sc, self.n_workers, self.recorder = sc, n_workers, recorder
        self.algorithm: Algorithm | None = None
        self.state = None
        self.last_loss: float | None = None
        self.diverge: Diverge = lambda *_a: None
        # data, device, memory and kernels were checked by check_before_work (``prework``) before
        # anything was allocated
        self.device, self.memory = prework.device, prework.memory
        self.dataset = (prework.dataset if prework.dataset is not None
                        else make_dataset(sc.data, sc.model.seq_len, n_workers, sc.seed))
        with torch.device("meta"):
            model = build_model(sc.model, self.dataset.vocab_size)  # shapes only: nothing allocated yet
        self.engine = replica_engine(sc.run.engine, sc.model.kind)
        tokens_per_step = sc.compute.batch_size * sc.model.seq_len
        if self.device.type == "cpu":
            from sim.training.threads import choose_threads

            step_flop = 6.0 * sum(p.numel() for p in model.parameters()) * tokens_per_step * n_workers
            if sc.run.threads != "auto" or "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(choose_threads(sc.run.threads, step_flop,
                                                     share=int(os.environ.get("LOCOSIM_PROCESSES", "1") or 1)))

        def make_replicas(count: int) -> Replicas:
            if self.engine == "stacked":
                return StackedReplicas(model, count, sc.optimizer, self.device, sc.seed, sc.run.precision,
                                       compile=sc.run.compile)
            return Replicas(model, count, sc.optimizer, self.device, sc.seed, sc.run.precision,
                            sc.model.output if sc.model.kind == "plugin" else "logits")

        self.replicas = make_replicas(n_workers)
        self.numerics = Numerics(self.replicas, self.dataset, sc.compute.batch_size, sc.seed)
        g = named_rng(sc.seed, "data/eval")
        self.eval_batches = [torch.from_numpy(self.dataset.eval_batch(g, sc.run.eval_batch_size))
                             for _ in range(sc.run.eval_batches)]

        def measure(repeats: int) -> float:
            from sim.steptime import measure_step_s

            probe = make_replicas(1)
            tokens = torch.from_numpy(self.dataset.train_batch(named_rng(sc.seed, "timing/measure"), 0,
                                                               sc.compute.batch_size))[None]

            def once() -> None:
                probe.step([0], tokens)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()

            return measure_step_s(once, repeats)

        self.measure = measure
        """Seconds per inner step of one replica on this device (``timing: measured``)."""

    @property
    def layout(self) -> list[tuple[str, int]]:
        """The trained model's tensors (name, elements), in parameter order."""
        return [(k, math.prod(shape)) for k, shape in self.replicas.shapes.items()]

    def start(self, algorithm: Algorithm, diverge: Diverge) -> None:
        """Take the configured method and build its state over the replicas."""
        self.algorithm, self.diverge = algorithm, diverge
        self.state = algorithm.init(self.replicas)

    # ------------------------------------------------------------------ engine events
    def on_step(self, worker: int, step: int, time_s: float, plan, evaluate: Callable[[int], object]) -> None:
        """A worker's inner step ended: queue its math; ``evaluate`` on worker 0's eval steps."""
        self.algorithm.on_step(self.numerics, self.state, worker, step, time_s, plan)
        every = self.sc.run.eval_every_steps
        if plan.local_step and worker == 0 and every and step % every == 0:
            evaluate(step)

    def on_reduced(self, send, time_s: float, participants: tuple | None) -> int | None:
        """A collective completed: apply the method's math; the step to evaluate at, if any."""
        records = self.algorithm.on_reduced(self.numerics, self.state, send, time_s, participants)
        self.record_train(records)
        return self.algorithm.evaluate_after(records, self.sc.run.eval_every_steps)

    def on_served(self, server: str, message, served, time_s: float) -> None:
        """A server handled an arrival (methods with servers): queue its math."""
        self.algorithm.on_served(self.numerics, self.state, server, message, served, time_s)

    def on_departed(self, server: str, messages, time_s: float) -> None:
        self.algorithm.on_departed(self.numerics, self.state, server, messages, time_s)

    def on_delivered(self, message, time_s: float) -> None:
        """A server's payload reached its worker: queue the worker's use of it."""
        self.algorithm.on_delivered(self.numerics, self.state, message, time_s)

    def on_dropped(self, message, time_s: float) -> None:
        """A server's or worker's payload that left is not used (called off, or its worker no longer waits)."""
        self.algorithm.on_dropped(self.numerics, self.state, message, time_s)

    def on_member_down(self, worker: int) -> None:
        self.algorithm.on_member_down(self.state, worker)

    def on_fetch(self, worker: int, peer: int | None, step: int) -> None:
        """A worker rejoined at ``step``, with the parameters of ``peer`` (None: none fetched)."""
        if peer is not None:
            self.algorithm.recover(self.numerics, self.state, worker, peer)
        self.algorithm.on_member_up(self.state, worker, step)

    def record_train(self, records: list) -> None:
        for w, step, t, loss in records:
            self.recorder.losses.append(LossPoint("train", w, step, t, loss))
            if not math.isfinite(loss):
                self.diverge(step, t, f"train loss of worker {w}", loss)
        if records:
            self.last_loss = float(np.mean([r[3] for r in records]))

    # ------------------------------------------------------------------ measurements
    def evaluate(self, step: int, time_s: float) -> float:
        """Eval loss of the global model now (queued inner steps and ready ops run first), plus
        every replica's own (``run.eval_replicas``) and the method's diagnostics. A non-finite
        parameter or loss is reported to ``diverge`` (which keeps the first it is told of)."""
        self.record_train(self.numerics.flush())
        params = self.algorithm.global_params(self.numerics, self.state)
        loss = self.replicas.eval_loss(params, self.eval_batches)
        self.recorder.losses.append(LossPoint("eval", -1, step, time_s, loss))
        bad = next((k for k, p in params.items() if not bool(p.isfinite().all())), None)
        if bad is not None:
            self.diverge(step, time_s, f"global parameter {bad}", "nan/inf")
        elif not math.isfinite(loss):
            self.diverge(step, time_s, "eval loss", loss)
        elif self.sc.run.divergence_loss_margin is not None:
            # finite but worse than guessing uniformly by the margin: the run has diverged all the same
            uniform = math.log(self.dataset.vocab_size)
            if loss > uniform + self.sc.run.divergence_loss_margin:
                self.diverge(step, time_s, f"eval loss (uniform loss log V = {uniform:.4g} nats, margin "
                                           f"{self.sc.run.divergence_loss_margin:g})", f"{loss:.6g}")
        if self.sc.run.eval_replicas:  # every replica's own parameters, in one batched call per batch
            for w, value in enumerate(self.replicas.eval_losses(self.replicas.params, self.eval_batches).tolist()):
                self.recorder.losses.append(LossPoint("replica_eval", w, step, time_s, value))
        for kind, value in self.algorithm.diagnostics(self.numerics, self.state).items():
            self.recorder.losses.append(LossPoint(kind, -1, step, time_s, value))
        return loss

    def save_model(self, path: Path) -> None:
        """Write the final global parameters (what evaluations measure) with ``torch.save``: a
        dict of CPU tensors by parameter name, loadable into the scenario's model with
        ``build_model(sc.model, vocab).load_state_dict(torch.load(path))``."""
        import torch

        self.record_train(self.numerics.flush())
        params = self.algorithm.global_params(self.numerics, self.state)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({k: v.detach().to("cpu").clone() for k, v in params.items()}, tmp)
        os.replace(tmp, path)

    def describe(self) -> dict:
        """What summary.json reports about the numerics."""
        sc = self.sc
        return {"batched_calls": self.numerics.batched_calls, "replica_steps": self.numerics.replica_steps,
                "device": str(self.device), "engine": self.engine, "precision": sc.run.precision,
                "compiled": bool(getattr(self.replicas, "compiled", False)),
                "kernels": sc.run.kernels, "memory_estimate": self.memory.as_dict()}
