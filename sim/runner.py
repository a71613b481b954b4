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
import traceback
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
from sim.metrics.records import LossPoint, Recorder, finite_json
from sim.scenario import Scenario

STATUS_RUNNING, STATUS_COMPLETED, STATUS_INTERRUPTED, STATUS_FAILED = "running", "completed", "interrupted", "failed"
STATUS_DIVERGED = "diverged"  # a loss or the parameters became NaN / inf (run.on_divergence)


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
        from sim.checks import check_before_work
        from sim.training.timing import base_step_time_s

        self.sc = sc
        self.prework = check_before_work(sc)  # everything `locosim validate` checks, before anything is built
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
        self.step_done_times: list[float] = []  # end time of every step (numerics on: tokens at each loss)
        self.last_loss: float | None = None
        self.workers = [Worker(self.env, i, node, self.faults.step_work(i, self.step_time_s[i]),
                               self.algorithm.at_step, self.barrier, self._on_step, self.recorder,
                               elapsed=self.faults.elapsed(i))
                        for i, node in enumerate(self.nodes)]
        f = sc.faults
        self._nobody_leaves = not f.churn and (f.failures is None or (not f.failures.mtbf_s and not f.failures.schedule))
        if sc.run.coalesce and not self.numerics_on and sc.run.max_tokens is None and self._nobody_leaves:
            # nobody looks at a quiet step as it ends: run quiet stretches as one event each
            for w in self.workers:
                w.quiet = self.algorithm.quiet_steps
                w.on_quiet = self._on_quiet_steps
                w.horizon = lambda: math.inf if sc.run.max_sim_time_s is None else sc.run.max_sim_time_s
        self.algorithm.set_liveness(lambda: [w.up and self.barrier.up[w.index] for w in self.workers])
        self.faults.start(self.workers, self.barrier, self.net, fetch_bytes(self.wire_params),
                          on_fetch=self._on_fetch, on_rejoined=self._on_rejoined, on_down=self._on_down)
        self.finished = False
        self.ended_early: str | None = None
        self.diverged: dict | None = None  # {step, time_s, what, value}: the first NaN / inf seen

    def _build_numerics(self):
        """Data, replicas, lazy numerics and eval batches (torch); returns the step-time probe."""
        import torch

        from sim.rng import rng as named_rng
        from sim.training.data import make_dataset
        from sim.training.models import build_model
        from sim.training.replicas import Numerics, Replicas, StackedReplicas, replica_engine
        from sim.training.timing import measure_step_s

        sc, n = self.sc, self.n_workers
        # data, device, memory and kernels were checked by check_before_work (self.prework) before
        # anything was allocated
        self.device, self.memory = self.prework.device, self.prework.memory
        self.dataset = make_dataset(sc.data, sc.model.seq_len, n, sc.seed)
        vocab = self.dataset.vocab_size
        with torch.device("meta"):
            model = build_model(sc.model, vocab)  # shapes only: nothing allocated yet
        self.engine = replica_engine(sc.run.engine, sc.model.kind)
        if self.device.type == "cpu":
            from sim.training.threads import choose_threads

            step_flop = 6.0 * sum(p.numel() for p in model.parameters()) * self.tokens_per_step * n
            if sc.run.threads != "auto" or "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(choose_threads(sc.run.threads, step_flop,
                                                     share=int(os.environ.get("LOCOSIM_PROCESSES", "1") or 1)))

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
        if not self.numerics_on:  # (no losses to put tokens against: step times are not kept)
            self._check_tokens()
            return
        self.step_done_times.append(time_s)
        self.algorithm.on_step(self.numerics, self.state, worker, step, time_s, plan)
        every = self.sc.run.eval_every_steps
        if plan.local_step and worker == 0 and every and step % every == 0:
            self.evaluate(step)
        self._check_tokens()

    def _on_quiet_steps(self, worker: int, first: int, ends: list[float]) -> None:
        """Steps ``first``.. of a quiet stretch ended at ``ends`` (timing-only: count them)."""
        self.tokens += self.tokens_per_step * len(ends)

    def _check_tokens(self) -> None:
        mt = self.sc.run.max_tokens
        if mt is not None and self.tokens >= mt and not self.stop.triggered:
            self.stop.succeed()

    def _on_down(self, worker: int) -> None:
        if self.numerics_on:
            self.algorithm.on_member_down(self.state, worker)
        self._check_rounds()

    def _on_fetch(self, worker: int, peer: int | None, step: int) -> None:
        if self.numerics_on:
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
            step = self.algorithm.evaluate_after(records, self.sc.run.eval_every_steps)
            if step is not None:
                self.evaluate(step)
        if not send.counts_as_round:
            return
        if self.algorithm.rounds_by_groups:  # gossip: groups differ; see _check_rounds
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
        if not self.algorithm.rounds_by_groups:
            return
        for r in sorted(self._round_done):
            stream, groups, step = self.algorithm.round_groups(r)
            done = self._round_done[r]
            if self._nobody_leaves and len(done) < len(groups):
                continue  # every member stays up: a group is settled only once it has synced

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
            if not math.isfinite(loss):
                self._diverge(step, t, f"train loss of worker {w}", loss)
        if records:
            self.last_loss = float(np.mean([r[3] for r in records]))

    def _diverge(self, step: int, time_s: float, what: str, value: float) -> None:
        """Note the first non-finite value; with run.on_divergence stop, end the run there."""
        if self.diverged is None:
            self.diverged = {"step": int(step), "time_s": float(time_s), "what": what, "value": str(value),
                             "reason": f"{what} became {value} at step {int(step)}, simulated time {time_s:.6g} s"}
        if self.sc.run.on_divergence == "stop" and not self.stop.triggered:
            self.stop.succeed()

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
        if self.diverged is None:
            bad = next((k for k, p in params.items() if not bool(p.isfinite().all())), None)
            if bad is not None:
                self._diverge(step, self.env.now, f"global parameter {bad}", "nan/inf")
            elif not math.isfinite(loss):
                self._diverge(step, self.env.now, "eval loss", loss)
        if self.sc.run.eval_replicas:  # every replica's own parameters, in one batched call per batch
            for w, value in enumerate(self.replicas.eval_losses(self.replicas.params, self.eval_batches).tolist()):
                self.recorder.losses.append(LossPoint("replica_eval", w, step, self.env.now, value))
        for kind, value in self.algorithm.diagnostics(self.numerics, self.state).items():
            self.recorder.losses.append(LossPoint(kind, -1, step, self.env.now, value))
        return loss

    def save_model(self, path: Path) -> None:
        """Write the final global parameters (what evaluations measure) with ``torch.save``: a
        dict of CPU tensors by parameter name, loadable into the scenario's model with
        ``build_model(sc.model, vocab).load_state_dict(torch.load(path))``."""
        import torch

        self._record_train(self.numerics.flush())
        params = self.algorithm.global_params(self.numerics, self.state)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({k: v.detach().to("cpu").clone() for k, v in params.items()}, tmp)
        os.replace(tmp, path)

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
                    self.ended_early = ("no events left: no worker is up, or those up wait only for workers gone for "
                                        "good (" + self.stall_reason() + ")")
                    break
                raise RuntimeError("simulation ran out of events before a stop condition was met: "
                                   + self.stall_reason())
            env.step()
            if on_progress is not None and time.monotonic() - last > progress_every_s:
                last = time.monotonic()
                on_progress(self.progress())
        self.finish()
        if on_progress is not None:
            on_progress(self.progress())

    def stall_reason(self) -> str:
        """Why nothing more can happen (one line): the links whose zero bandwidth holds transfers
        for good, the workers down and what the others wait in."""
        parts = []
        stalled: dict[tuple[str, str], int] = {}
        for f in self.net.flows_in_flight():
            for l in f.links:
                if self.net.capacity.get(l, 1.0) <= 0:
                    stalled[l] = stalled.get(l, 0) + 1
        for (u, v), count in sorted(stalled.items()):
            parts.append(f"link {u}->{v} has bandwidth 0 for good with {count} transfer(s) on it"
                         + (" (its bandwidth_csv ends at 0)" if self.graph.edges[u, v].get("bandwidth_series") else ""))
        down = [w.node for w in self.workers if not w.up]
        if down:
            parts.append(f"down for good: {', '.join(down[:8])}{', ...' if len(down) > 8 else ''}")
        states: dict[str, list[str]] = {}
        for w in self.workers:
            if w.up:
                states.setdefault(w.tracker.state, []).append(w.node)
        for state, nodes in sorted(states.items()):
            parts.append(f"{state}: {', '.join(nodes[:8])}{', ...' if len(nodes) > 8 else ''}")
        return "; ".join(parts) or "no worker process is left"

    def finish(self) -> None:
        """Close open state spans, run pending steps and take a final eval (idempotent)."""
        if self.finished:
            return
        self.finished = True
        for w in self.workers:
            w.finish()
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
    # NaN / inf become null: bare NaN is not JSON (summarize records which values were replaced and why)
    text = json.dumps(finite_json(obj), indent=2, default=_json_default, allow_nan=False)
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # a full disk (or Ctrl-C) mid-write: no half-written .tmp is left behind
        tmp.unlink(missing_ok=True)
        raise


def _write_json_in_place(path: Path, obj) -> None:
    """Last resort for the final manifest when ``write_json`` failed (a full disk has no room for
    a new .tmp file): overwrite the existing file compactly, which fits in the blocks its indented
    first version already holds. Not atomic; used only where the alternative is a manifest that
    says ``running`` for ever."""
    text = json.dumps(finite_json(obj), separators=(",", ":"), default=_json_default, allow_nan=False)
    with open(path, "r+b") as f:
        f.write(text.encode("utf-8"))
        f.truncate()


def _json_default(o):
    if isinstance(o, np.floating):
        return o.item() if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_to_dir(sim: Simulation, out_dir: Path, on_progress: Callable[[Progress], None] | None = None,
               source: str | None = None) -> dict:
    """Run a built simulation and write its directory; returns the final manifest.

    KeyboardInterrupt is caught: the directory is completed with what was recorded and
    marked interrupted, then the interrupt is re-raised. Other errors mark it failed and
    are re-raised after the files are written. An error while writing the files (a full
    disk) marks the run failed with the reason, leaves no ``.tmp`` file and is re-raised.
    """
    from sim.metrics.tables import events_table, metrics_table, summarize
    from sim.report.dashboard import write_dashboard

    sc = sim.sc
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": sc.name, "status": STATUS_RUNNING, "scenario": sc.model_dump(mode="json"), "source": source,
        "seed": sc.seed, "versions": _versions(), "git_revision": _git_revision(),
        "device": _describe_device(sim.device),
        "host": platform.node(), "pid": os.getpid(), "started_at": _now(), "ended_at": None, "wall_s": None, "error": None,
        "files": [],
    }
    write_json(out_dir / "manifest.json", manifest)
    t0 = time.monotonic()
    pending: BaseException | None = None
    try:
        sim.run(on_progress)
        manifest["status"] = STATUS_DIVERGED if getattr(sim, "diverged", None) else STATUS_COMPLETED
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (sim.rundir.Terminated: "terminated by SIGTERM")
        manifest["status"] = STATUS_INTERRUPTED
        manifest["error"] = str(err) or None
        pending = err
    except Exception as err:  # recorded in the manifest, then re-raised for the CLI
        manifest["status"] = STATUS_FAILED
        manifest["error"] = f"{type(err).__name__}: {err}"
        manifest["traceback"] = traceback.format_exc()  # e.g. a plug-in method's own code
        pending = err
    manifest["wall_s"] = time.monotonic() - t0
    try:
        if manifest["status"] != STATUS_COMPLETED:
            for w in sim.workers:  # keep what was recorded; no more numerics after an interrupt
                w.finish()
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
        if sc.run.save_model and sim.numerics_on and manifest["status"] in (STATUS_COMPLETED, STATUS_DIVERGED):
            sim.save_model(out_dir / "model.pt")
            manifest["files"].append("model.pt")
    except KeyboardInterrupt as err:  # a second Ctrl-C while writing: keep what is written
        manifest["status"] = STATUS_INTERRUPTED
        pending = pending or err
    except Exception as err:  # e.g. OSError: the disk is full; the run's own ending stays in the error
        reason = f"writing the run directory failed: {type(err).__name__}: {err}"
        manifest["error"] = f"{manifest['error']}; then {reason}" if manifest["error"] else reason
        manifest["status"] = STATUS_FAILED
        pending = pending or err
    finally:
        manifest["ended_at"] = _now()
        manifest["diverged"] = getattr(sim, "diverged", None)
        manifest["ended_early"] = getattr(sim, "ended_early", None)
        try:
            write_json(out_dir / "manifest.json", manifest)
        except OSError:
            try:
                _write_json_in_place(out_dir / "manifest.json", manifest)
            except OSError:
                pass  # nothing left to write it with; the error below still reaches the caller
        for tmp in out_dir.glob("*.tmp"):  # left by a writer that failed (e.g. the dashboard's page)
            tmp.unlink(missing_ok=True)
    if pending is not None:
        raise pending
    return manifest


def _write_parquet(df, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:  # a full disk (or Ctrl-C) mid-write: no half-written .tmp is left behind
        tmp.unlink(missing_ok=True)
        raise


def _describe_device(device) -> str:
    if device is None:
        return "none (timing-only run: numerics off)"
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
