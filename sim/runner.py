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
from sim.engine.faults import FaultModel, apply_link_windows, fetch_bytes
from sim.engine.sync import SyncBarrier
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


def scale_layout(layout: list[tuple[str, float]], total: float) -> list[tuple[str, int]]:
    """Integer element counts proportional to ``layout`` that sum to exactly int(total)
    (largest remainders get the leftover elements)."""
    total = int(total)
    weight = sum(e for _, e in layout)
    exact = [e * total / weight for _, e in layout]
    out = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(out)), key=lambda i: (out[i] - exact[i], i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return [(name, n) for (name, _), n in zip(layout, out)]


def proxy_layout(params: float, layers: int) -> list[tuple[str, int]]:
    """Parameter layout of a timing proxy: ``layers`` equal transformer blocks."""
    return scale_layout([(f"blocks.{i}.params", 1.0) for i in range(layers)], params)


class Simulation:
    """One scenario's engine, numerics and algorithm, ready to run in virtual time."""

    def __init__(self, sc: Scenario):
        from sim.algorithms import make_algorithm
        from sim.training.timing import base_step_time_s

        self.sc = sc
        self.clock = Clock(sc.seed)
        self.env = self.clock.env
        self.recorder = Recorder()
        graph, self.nodes = build_graph(sc.topology)
        self.graph = graph
        self._link_windows = apply_link_windows(graph, sc.faults.links)  # before the network reads the edges
        self.net = Network(self.env, graph, self.recorder)
        n = len(self.nodes)
        self.n_workers = n
        self.numerics_on = sc.numerics
        self.tokens_per_step = sc.compute.batch_size * sc.model.seq_len
        self.dataset = self.replicas = self.numerics = None
        self.device = self.memory = self.engine = None
        measure = None
        self.algorithm = make_algorithm(sc.algorithm, n, sc.seed)
        self.algorithm.kernels = sc.run.kernels
        if self.numerics_on:
            measure = self._build_numerics()
            self.n_params = self.replicas.n_params
            layout = [(k, math.prod(shape)) for k, shape in self.replicas.shapes.items()]
        else:
            self.n_params = int(sc.timing.params)
            layout = proxy_layout(sc.timing.params, sc.timing.layers)
        if sc.timing is not None and self.numerics_on:  # payloads of the proxy, split like the trained model
            layout = scale_layout(layout, sc.timing.params)
        self.layout = layout
        self.wire_params = sum(e for _, e in layout)
        self.algorithm.configure(layout, sc.timing.layers if sc.timing is not None else None)
        self.state = self.algorithm.init(self.replicas) if self.numerics_on else None
        self.schedule = self.algorithm.info
        self.payload_bytes = payload_bytes(self.wire_params, self.schedule.wire_format)

        timed_params = int(sc.timing.params) if sc.timing is not None else self.n_params
        timed_tokens = (sc.timing.tokens_per_step or self.tokens_per_step) if sc.timing is not None else self.tokens_per_step
        region_of = {r.name: r for r in sc.topology.regions}
        cache: dict[str | None, float] = {}
        self.step_time_s: list[float] = []
        for node in self.nodes:
            region = region_of[graph.nodes[node]["region"]]
            if region.gpu not in cache:
                if sc.timing is not None and sc.timing.step_time_s is not None:
                    cache[region.gpu] = sc.timing.step_time_s
                else:
                    cache[region.gpu] = base_step_time_s(sc.compute.step_time, timed_params, timed_tokens,
                                                         region.gpu, measure)
            self.step_time_s.append(cache[region.gpu] * region.step_time_multiplier)
        region_name = {node: graph.nodes[node]["region"] for node in self.nodes}
        self.faults = FaultModel(self.env, sc.seed, sc.faults, self.nodes, region_name, self.recorder)
        self.step_time_s = [t * self.faults.multiplier(i) for i, t in enumerate(self.step_time_s)]

        self.barrier = SyncBarrier(self.env, self.net, self.nodes, self._on_sync, self.recorder,
                                   timeout_s=getattr(sc.algorithm, "sync_timeout_s", None))
        self.stop = self.env.event()
        self.rounds = 0
        self._round_syncs: dict[int, int] = {}
        self._round_done: dict[int, set] = {}
        self._counted: set[int] = set()
        self.round_end_s: list[float] = []
        self.tokens = 0
        self.step_done_times: list[float] = []
        self.last_loss: float | None = None
        self.workers = [Worker(self.env, i, node, self.faults.step_work(i, self.step_time_s[i]),
                               self.algorithm.at_step, self.barrier, self._on_step, self.recorder,
                               elapsed=self.faults.elapsed(i))
                        for i, node in enumerate(self.nodes)]
        if hasattr(self.algorithm, "set_liveness"):  # noloco re-pairing draws groups among the workers up
            self.algorithm.set_liveness(lambda: [w.up and self.barrier.up[w.index] for w in self.workers])
        self.faults.start(self.workers, self.barrier, self.net, fetch_bytes(self.wire_params),
                          on_fetch=self._on_fetch, on_rejoined=self._on_rejoined, on_down=self._on_down)
        self.finished = False
        self.ended_early: str | None = None

    def _build_numerics(self):
        """Data, replicas, lazy numerics and eval batches (torch); returns the step-time probe."""
        import torch

        from kernels.backend import resolve_backend
        from sim.engine.clock import rng as named_rng
        from sim.training.data import make_dataset
        from sim.training.memory import check_fits, estimate
        from sim.training.models import build_model
        from sim.training.replicas import Numerics, Replicas, StackedReplicas, replica_engine, resolve_device
        from sim.training.timing import measure_step_s

        sc, n = self.sc, self.n_workers
        self.dataset = make_dataset(sc.data, sc.model.seq_len, n, sc.seed)
        vocab = self.dataset.vocab_size
        if sc.model.vocab_size is not None and sc.model.vocab_size != vocab:
            raise ValueError(f"model.vocab_size: must equal the data's vocabulary ({vocab}) or be omitted "
                             f"(got {sc.model.vocab_size})")
        self.device = resolve_device(sc.run.device)
        with torch.device("meta"):
            model = build_model(sc.model, vocab)  # shapes only: nothing allocated yet
        self.memory = estimate(sum(p.numel() for p in model.parameters()), n, sc.model, vocab, sc.compute.batch_size,
                               sc.run.eval_batch_size, self.algorithm.outer_state_copies, sc.run.eval_replicas)
        check_fits(self.memory, self.device, sc.run.memory_limit_gb)  # refuse before anything is allocated
        try:
            resolve_backend(sc.run.kernels, torch.empty(0, device=self.device))
        except RuntimeError as err:
            raise ValueError(f"run.kernels: {err}") from None
        self.engine = replica_engine(sc.run.engine, sc.model.kind)

        def make_replicas(count: int) -> Replicas:
            if self.engine == "stacked":
                return StackedReplicas(model, count, sc.optimizer, self.device, sc.seed, sc.run.precision,
                                       compile=sc.run.compile)
            return Replicas(model, count, sc.optimizer, self.device, sc.seed, sc.run.precision)

        self.replicas = make_replicas(n)
        self.numerics = Numerics(self.replicas, self.dataset, sc.compute.batch_size, sc.seed)
        g = named_rng(sc.seed, "data/eval")
        self.eval_batches = [torch.from_numpy(self.dataset.eval_batch(g, sc.run.eval_batch_size))
                             for _ in range(sc.run.eval_batches)]

        def measure(repeats: int) -> float:
            probe = make_replicas(1)
            tokens = torch.from_numpy(self.dataset.train_batch(named_rng(sc.seed, "timing/measure"), 0,
                                                               sc.compute.batch_size))[None]

            def once() -> None:
                probe.step([0], tokens)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()

            return measure_step_s(once, repeats)

        return measure

    # ------------------------------------------------------------------ callbacks from the engine
    def _on_step(self, worker: int, step: int, time_s: float, plan) -> None:
        self.tokens += self.tokens_per_step
        self.step_done_times.append(time_s)
        if not self.numerics_on:
            self._check_tokens()
            return
        self.algorithm.on_step(self.numerics, self.state, worker, step, time_s, plan)
        every = self.sc.run.eval_every_steps
        if plan.local_step and worker == 0 and every and step % every == 0:
            self.evaluate(step)
        self._check_tokens()

    def _check_tokens(self) -> None:
        mt = self.sc.run.max_tokens
        if mt is not None and self.tokens >= mt and not self.stop.triggered:
            self.stop.succeed()

    def _on_down(self, worker: int) -> None:
        if self.numerics_on and hasattr(self.algorithm, "on_member_down"):
            self.algorithm.on_member_down(self.state, worker)
        self._check_rounds()

    def _on_fetch(self, worker: int, peer: int | None, step: int) -> None:
        if self.numerics_on and hasattr(self.algorithm, "recover"):
            if peer is not None:
                self.algorithm.recover(self.numerics, self.state, worker, peer)
            self.algorithm.on_member_up(self.state, worker, step)

    def _on_rejoined(self, worker: int) -> None:
        self._check_rounds()

    def _on_sync(self, send, participants: tuple | None = None) -> None:
        if participants is not None and len(participants) == len(send.group):
            participants = None  # everyone took part: the plain (bitwise unchanged) path
        if self.numerics_on:
            records = self.algorithm.on_reduced(self.numerics, self.state, send, self.env.now, participants)
            self._record_train(records)
            if records:  # a ddp step just ran (it only runs once its all-reduce is done): evaluate on schedule
                step = records[0][1]
                every = self.sc.run.eval_every_steps
                if every and step % every == 0:
                    self.evaluate(step)
        if not send.counts_as_round:
            return
        if hasattr(self.algorithm, "round_groups"):  # gossip: groups differ; see _check_rounds
            if send.round not in self._counted:
                self._round_done.setdefault(send.round, set()).add(send.group)
            self._check_rounds()
            return
        done = self._round_syncs.get(send.round, 0) + 1
        if done < self.schedule.syncs_per_round:
            self._round_syncs[send.round] = done
            return
        self._round_syncs.pop(send.round, None)
        self._count_round()

    def _count_round(self) -> None:
        self.rounds += 1
        self.round_end_s.append(self.env.now)
        mr = self.sc.run.max_rounds
        if mr is not None and self.rounds >= mr and not self.stop.triggered:
            self.stop.succeed()

    def _check_rounds(self) -> None:
        """Gossip rounds: round r is done when each of its groups has synced or can no longer
        sync (its collective is not under way and none of its members is up and still before
        that round's step). A group that syncs after its round was counted does not count again."""
        if not hasattr(self.algorithm, "round_groups"):
            return
        for r in sorted(self._round_done):
            stream, groups, step = self.algorithm.round_groups(r)
            done = self._round_done[r]

            def settled(g) -> bool:
                if g in done:
                    return True
                if self.barrier.pending((stream, r, g)):
                    return False
                return not any(self.workers[m].up and self.barrier.up[m] and self.workers[m].steps_done < step
                               for m in g)

            if all(settled(g) for g in groups):
                del self._round_done[r]
                self._counted.add(r)
                self._count_round()
        self._round_done = {r: v for r, v in self._round_done.items() if r not in self._counted}

    def _record_train(self, records: list) -> None:
        for w, step, t, loss in records:
            self.recorder.losses.append(LossPoint("train", w, step, t, loss))
        if records:
            self.last_loss = float(np.mean([r[3] for r in records]))

    def evaluate(self, step: int | None = None) -> float | None:
        """Eval loss of the global model now (queued inner steps and ready ops run first),
        plus the method's diagnostics (NoLoCo spread, eager drift). None in timing-only runs."""
        if not self.numerics_on:
            return None
        self._record_train(self.numerics.flush())
        params = self.algorithm.global_params(self.numerics, self.state)
        loss = self.replicas.eval_loss(params, self.eval_batches)
        step = self.workers[0].steps_done if step is None else step
        self.recorder.losses.append(LossPoint("eval", -1, step, self.env.now, loss))
        if self.sc.run.eval_replicas:  # every replica's own parameters, in one batched call per batch
            for w, value in enumerate(self.replicas.eval_losses(self.replicas.params, self.eval_batches).tolist()):
                self.recorder.losses.append(LossPoint("replica_eval", w, step, self.env.now, value))
        for kind, value in self.algorithm.diagnostics(self.numerics, self.state).items():
            self.recorder.losses.append(LossPoint(kind, -1, step, self.env.now, value))
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
        if run.eval_every_s and self.numerics_on:
            self.env.process(self._eval_timer())
        if run.max_sim_time_s is not None:
            timer = self.env.timeout(run.max_sim_time_s)
            timer.callbacks.append(lambda _e: None if self.stop.triggered else self.stop.succeed())
        last = time.monotonic()
        env = self.env
        while not self.stop.processed:
            if math.isinf(env.peek()):
                if self.faults.anyone_down:  # the workers left are gone for good: nothing more can happen
                    self.ended_early = "no events left: no worker is up, or those up wait only for workers gone for good"
                    break
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
        self.faults.finish(self._link_windows)
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
            sim.faults.finish(sim._link_windows)
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
    if device is None:
        return "none (timing-only run: numerics off)"
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
