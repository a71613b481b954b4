"""Wire engine, numerics, algorithm and metrics together for one run (thin).

``Simulation`` builds the pieces from a scenario and runs virtual time; ``run_to_dir``
wraps it with the run directory: ``manifest.json`` first (status running), then on any
ending -- completed, interrupted (Ctrl-C) or failed -- whatever was recorded is written
as ``events.parquet``, ``metrics.parquet``, ``summary.json`` and ``dashboard.html``, and
the manifest's status says which ending it was.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kernels.formats import payload_bytes
from sim.engine.clock import Clock
from sim.engine.collectives import SyncBarrier
from sim.engine.network import Network, build_graph
from sim.engine.node import Worker
from sim.metrics.records import LossPoint, Recorder
from sim.scenario import Scenario

STATUS_RUNNING, STATUS_COMPLETED, STATUS_INTERRUPTED, STATUS_FAILED = "running", "completed", "interrupted", "failed"


@dataclass
class Progress:
    time_s: float
    rounds: int
    max_rounds: int | None
    max_time_s: float | None
    tokens: int
    max_tokens: int | None
    loss: float | None


class Simulation:
    """One scenario's engine, numerics and algorithm, ready to run in virtual time."""

    def __init__(self, sc: Scenario):
        import torch

        from sim.algorithms import make_algorithm
        from sim.training.data import make_dataset
        from sim.training.models import build_model
        from sim.training.replicas import Numerics, Replicas, resolve_device
        from sim.training.timing import base_step_time_s, measure_step_s

        self.sc = sc
        self.clock = Clock(sc.seed)
        self.env = self.clock.env
        self.recorder = Recorder()
        graph, self.nodes = build_graph(sc.topology)
        self.graph = graph
        self.net = Network(self.env, graph, self.recorder)
        n = len(self.nodes)
        self.n_workers = n

        seq_len = sc.model.seq_len
        self.dataset = make_dataset(sc.data, seq_len, n, sc.seed)
        vocab = self.dataset.vocab_size
        if sc.model.vocab_size is not None and sc.model.vocab_size != vocab:
            raise ValueError(f"model.vocab_size: must equal the data's vocabulary ({vocab}) or be omitted "
                             f"(got {sc.model.vocab_size})")
        self.device = resolve_device(sc.run.device)
        with torch.device("meta"):
            model = build_model(sc.model, vocab)
        self.replicas = Replicas(model, n, sc.optimizer, self.device, sc.seed)
        self.numerics = Numerics(self.replicas, self.dataset, sc.compute.batch_size, sc.seed)
        self.algorithm = make_algorithm(sc.algorithm)
        self.state = self.algorithm.init(self.replicas)
        self.schedule = self.algorithm.schedule
        self.n_params = self.replicas.n_params
        self.payload_bytes = payload_bytes(self.n_params, self.schedule.wire_format)
        self.tokens_per_step = sc.compute.batch_size * seq_len

        from sim.engine.clock import rng as named_rng

        g = named_rng(sc.seed, "data/eval")
        self.eval_batches = [torch.from_numpy(self.dataset.eval_batch(g, sc.run.eval_batch_size))
                             for _ in range(sc.run.eval_batches)]

        def measure(repeats: int) -> float:
            probe = Replicas(model, 1, sc.optimizer, self.device, sc.seed)
            tokens = torch.from_numpy(self.dataset.train_batch(named_rng(sc.seed, "timing/measure"), 0,
                                                               sc.compute.batch_size))[None]

            def once() -> None:
                probe.step([0], tokens)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()

            return measure_step_s(once, repeats)

        region_of = {r.name: r for r in sc.topology.regions}
        cache: dict[str | None, float] = {}
        self.step_time_s: list[float] = []
        for node in self.nodes:
            region = region_of[graph.nodes[node]["region"]]
            if region.gpu not in cache:
                cache[region.gpu] = base_step_time_s(sc.compute.step_time, self.n_params, self.tokens_per_step,
                                                     region.gpu, measure)
            self.step_time_s.append(cache[region.gpu] * region.step_time_multiplier)

        self.barrier = SyncBarrier(self.env, self.net, self.nodes, self.schedule.collective, self.payload_bytes,
                                   self._on_sync, self.recorder)
        self.stop = self.env.event()
        self.rounds = 0
        self.tokens = 0
        self.step_done_times: list[float] = []
        self.last_loss: float | None = None
        self.workers = [Worker(self.env, i, node, (lambda _step, t=self.step_time_s[i]: t),
                               self.schedule.sync_every, self.barrier, self._on_step, self.recorder)
                        for i, node in enumerate(self.nodes)]
        self._next_eval_s = sc.run.eval_every_s
        self.finished = False

    # ------------------------------------------------------------------ callbacks from the engine
    def _on_step(self, worker: int, step: int, time_s: float) -> None:
        self.tokens += self.tokens_per_step
        self.step_done_times.append(time_s)
        if self.schedule.local_steps:
            self.numerics.enqueue(worker, step, time_s)
            if worker == 0 and self.sc.run.eval_every_steps and step % self.sc.run.eval_every_steps == 0:
                self.evaluate(step)
        mt = self.sc.run.max_tokens
        if mt is not None and self.tokens >= mt and not self.stop.triggered:
            self.stop.succeed()

    def _on_sync(self, round_: int) -> None:
        self._record_train(self.algorithm.on_sync(self.numerics, self.state, round_, self.env.now))
        self.rounds = round_ + 1
        if not self.schedule.local_steps:
            step = self.workers[0].steps_done
            if self.sc.run.eval_every_steps and step % self.sc.run.eval_every_steps == 0:
                self.evaluate(step)
        mr = self.sc.run.max_rounds
        if mr is not None and self.rounds >= mr and not self.stop.triggered:
            self.stop.succeed()

    def _record_train(self, records: list) -> None:
        for w, step, t, loss in records:
            self.recorder.losses.append(LossPoint("train", w, step, t, loss))
        if records:
            self.last_loss = float(np.mean([r[3] for r in records]))

    def evaluate(self, step: int | None = None) -> float:
        """Eval loss of the global model now (pending inner steps are flushed first)."""
        self._record_train(self.numerics.flush())
        params = self.algorithm.global_params(self.numerics, self.state)
        loss = self.replicas.eval_loss(params, self.eval_batches)
        step = self.workers[0].steps_done if step is None else step
        self.recorder.losses.append(LossPoint("eval", -1, step, self.env.now, loss))
        return loss

    def _eval_timer(self):
        every = self.sc.run.eval_every_s
        while True:
            yield self.env.timeout(every)
            self.evaluate()

    # ------------------------------------------------------------------ running
    def run(self, on_progress: Callable[[Progress], None] | None = None, progress_every_s: float = 0.25) -> None:
        run = self.sc.run
        self.evaluate(0)
        if run.eval_every_s:
            self.env.process(self._eval_timer())
        if run.max_sim_time_s is not None:
            timer = self.env.timeout(run.max_sim_time_s)
            timer.callbacks.append(lambda _e: None if self.stop.triggered else self.stop.succeed())
        last = time.monotonic()
        env = self.env
        while not self.stop.processed:
            if math.isinf(env.peek()):
                raise RuntimeError("simulation ran out of events before a stop condition was met")
            env.step()
            if on_progress is not None and time.monotonic() - last > progress_every_s:
                last = time.monotonic()
                on_progress(self.progress())
        self.finish()
        if on_progress is not None:
            on_progress(self.progress())

    def finish(self) -> None:
        """Close open state spans, run pending steps and take a final eval (idempotent)."""
        if self.finished:
            return
        self.finished = True
        for w in self.workers:
            w.tracker.finish()
        self.evaluate()

    def progress(self) -> Progress:
        r = self.sc.run
        return Progress(self.env.now, self.rounds, r.max_rounds, r.max_sim_time_s, self.tokens, r.max_tokens,
                        self.last_loss)


# ---------------------------------------------------------------------- run directory
def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("locosim", "torch", "numpy", "simpy", "networkx", "pydantic", "plotly", "pyarrow", "pandas"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_to_dir(sim: Simulation, out_dir: Path, on_progress: Callable[[Progress], None] | None = None,
               source: str | None = None) -> dict:
    """Run a built simulation and write its directory; returns the final manifest.

    KeyboardInterrupt is caught: the directory is completed with what was recorded and
    marked interrupted, then the interrupt is re-raised. Other errors mark it failed and
    are re-raised after the files are written.
    """
    from sim.metrics.tables import events_table, metrics_table, summarize
    from sim.report.dashboard import write_dashboard

    sc = sim.sc
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": sc.name, "status": STATUS_RUNNING, "scenario": sc.model_dump(mode="json"), "source": source,
        "seed": sc.seed, "versions": _versions(), "git_revision": _git_revision(),
        "device": _describe_device(sim.device),
        "host": platform.node(), "started_at": _now(), "ended_at": None, "wall_s": None, "error": None,
        "files": [],
    }
    write_json(out_dir / "manifest.json", manifest)
    t0 = time.monotonic()
    pending: BaseException | None = None
    try:
        sim.run(on_progress)
        manifest["status"] = STATUS_COMPLETED
    except KeyboardInterrupt as err:
        manifest["status"] = STATUS_INTERRUPTED
        pending = err
    except Exception as err:  # recorded in the manifest, then re-raised for the CLI
        manifest["status"] = STATUS_FAILED
        manifest["error"] = f"{type(err).__name__}: {err}"
        pending = err
    manifest["wall_s"] = time.monotonic() - t0
    try:
        if manifest["status"] != STATUS_COMPLETED:
            for w in sim.workers:  # keep what was recorded; no more numerics after an interrupt
                w.tracker.finish()
            sim.finished = True
        events = events_table(sim.recorder)
        metrics = metrics_table(sim)
        summary = summarize(sim, events, metrics, manifest)
        _write_parquet(events, out_dir / "events.parquet")
        _write_parquet(metrics, out_dir / "metrics.parquet")
        write_json(out_dir / "summary.json", summary)
        manifest["files"] = ["events.parquet", "metrics.parquet", "summary.json"]
        write_dashboard(out_dir / "dashboard.html", sim, events, metrics, summary, manifest)
        manifest["files"].append("dashboard.html")
    except KeyboardInterrupt as err:  # a second Ctrl-C while writing: keep what is written
        manifest["status"] = STATUS_INTERRUPTED
        pending = pending or err
    finally:
        manifest["ended_at"] = _now()
        write_json(out_dir / "manifest.json", manifest)
    if pending is not None:
        raise pending
    return manifest


def _write_parquet(df, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
