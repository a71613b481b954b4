"""Sweeps: many runs of one scenario file, on a local process pool or a Ray cluster.

A sweep is the product of the file's variants (if any), a grid of ``key.path`` values
(``--grid`` flags or the file's ``sweep: {grid: {...}, seeds: [...]}`` section) and seeds.
Each run gets a directory named from its parameters -- a readable label plus a stable hash
of the resolved scenario -- so re-running the same sweep finds its runs again: completed
ones are skipped, interrupted or failed ones are run again (resume). Every run is an
ordinary run directory (``sim.runner.run_to_dir``); ``index.parquet`` lists them all with
their parameters, status and summary metrics, and is rewritten after every run.

Execution: in this process (``workers=1``), a local pool of spawned worker processes (one
torch thread each) or, with ``ray_address``, one Ray task per run (a GPU per task when the
run uses CUDA). Before anything is written, ``check_runs`` makes the checks ``locosim run``
makes before work for every distinct run, so a sweep with a run that cannot start is refused
whole; a run that fails once started is recorded with its error and the sweep goes on.

The local pool is ours rather than ``ProcessPoolExecutor`` because the executor queues runs
into its workers ahead of time and cannot take them back: after Ctrl-C its workers started
queued runs, and when the parent was killed they went on running them. Here a worker gets a
run only when it is idle; on Ctrl-C or SIGTERM no run is handed out any more, the workers'
runs end as interrupted (tables written) and the workers exit; and a worker dies with its
parent (``PR_SET_PDEATHSIG`` on Linux, plus a thread watching ``os.getppid()``).

One sweep at a time per directory: ``OUT/sweep.lock`` (``sim.rundir.SweepLock``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from sim.rundir import SweepLock
from sim.scenario import ScenarioError, check_plain, load_variants, load_yaml_text, read_yaml

INDEX = "index.parquet"
MAX_RUNS = 10_000  # runs in one sweep (variants x grid points x seeds)
FINISHED = ("completed", "diverged")  # a diverged run is a result: skipped on resume, not counted as failed
SUMMARY_KEYS = ("utilization", "final_eval_loss", "loss_floor", "sim_duration_s", "wan_bytes", "rounds", "tokens",
                "time_to_target_s")


@dataclass
class RunSpec:
    """One run of a sweep: where it goes and the scenario (as plain JSON) it runs."""
    run_id: str
    label: str
    params: dict[str, Any]
    scenario: dict
    source: str
    device: str = "cpu"


@dataclass
class SweepPlan:
    runs: list[RunSpec]
    axes: list[str] = field(default_factory=list)
    earlier: dict[str, dict] = field(default_factory=dict)  # index rows of an earlier sweep's other runs here


def parse_values(text: str) -> list[Any]:
    """'50,100,500' -> [50, 100, 500] (each value read as YAML)."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(p == "" for p in parts):
        raise ScenarioError(f"--grid {text}: expected comma-separated values, e.g. 50,100,500")
    out = []
    for p in parts:
        try:
            value = load_yaml_text(p)
        except (yaml.YAMLError, ValueError, RecursionError):
            raise ScenarioError(f"--grid {text}: {p!r} is not a valid YAML value (quote it, or close its brackets; "
                                "a value holding commas cannot be a grid value)") from None
        check_plain(value, source=f"--grid {text}")
        out.append(value)
    return out


def parse_seeds(text: str) -> list[int]:
    """'0..4' -> [0, 1, 2, 3, 4]; '0,3,7' -> [0, 3, 7]."""
    m = re.fullmatch(r"\s*(\d+)\s*\.\.\s*(\d+)\s*", text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo:
            raise ScenarioError(f"--seeds {text}: the range end must be >= its start")
        if hi - lo + 1 > MAX_RUNS:
            raise ScenarioError(f"--seeds {text}: {hi - lo + 1:,} seeds; a sweep may have at most {MAX_RUNS:,} runs")
        return list(range(lo, hi + 1))
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ScenarioError(f"--seeds {text}: expected a range like 0..4 or a list like 0,3,7") from None
    if any(s < 0 for s in seeds):
        raise ScenarioError(f"--seeds {text}: seeds must be >= 0")
    if len(seeds) > MAX_RUNS:
        raise ScenarioError(f"--seeds {text}: {len(seeds):,} seeds; a sweep may have at most {MAX_RUNS:,} runs")
    return seeds


def _label_value(v: Any) -> str:
    if isinstance(v, dict):
        return str(v.get("name") or v.get("kind") or "x")
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(v))


def _short_key(key: str) -> str:
    return key.split(".")[-1]


MAX_LABEL = 150  # characters of a run's label; the hash after it keeps ids unique, and a name stays < 255


def safe_label(text: str) -> str:
    """A label as one safe path component: anything but letters, digits and ``_ . + = -`` becomes
    ``_`` (a grid key like ``us/0`` must not make nested directories), no leading ``.`` or ``-``
    (never ``.``, ``..``, hidden or flag-like), at most MAX_LABEL characters."""
    return (re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).lstrip(".-") or "run")[:MAX_LABEL]


def plan_sweep(path: str | Path, grid: dict[str, list[Any]] | None = None, seeds: list[int] | None = None,
               overrides: list[str] | None = None) -> SweepPlan:
    """Expand a scenario file into its runs (validated now: bad input fails before any run)."""
    data = read_yaml(path)
    section = data.get("sweep") or {}
    if not isinstance(section, dict) or set(section) - {"grid", "seeds"}:
        raise ScenarioError("sweep: a mapping with grid (key.path -> list of values) and seeds (list of ints)")
    file_grid = section.get("grid") or {}
    if not isinstance(file_grid, dict) or not all(isinstance(v, list) and v for v in file_grid.values()):
        raise ScenarioError("sweep.grid: each key.path needs a non-empty list of values")
    full_grid = {**file_grid, **(grid or {})}
    if "seed" in full_grid and (seeds is not None or section.get("seeds") is not None):
        raise ScenarioError("--grid seed / sweep.grid.seed and --seeds / sweep.seeds both give the seeds; "
                            "give them once (--seeds A..B)")
    if seeds is None:
        seeds = section.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or not all(isinstance(s, int) and s >= 0 for s in seeds)):
            raise ScenarioError("sweep.seeds: a list of integers >= 0")
    base_overrides = list(overrides or [])
    keys = list(full_grid)
    planned = math.prod(len(v) for v in full_grid.values()) * len(seeds if seeds is not None else [None])
    if planned > MAX_RUNS:  # refused before planning: each planned run is validated, which takes a while
        raise ScenarioError(f"sweep: {planned:,} grid points x seeds; a sweep may have at most {MAX_RUNS:,} runs")
    runs: list[RunSpec] = []
    seen: set[str] = set()
    combos = list(itertools.product(*(full_grid[k] for k in keys))) if keys else [()]
    for values in combos:
        point = [f"{k}={json.dumps(v)}" for k, v in zip(keys, values)]
        for seed in seeds if seeds is not None else [None]:
            extra = point + ([f"seed={seed}"] if seed is not None else [])
            for variant, sc in load_variants(path, base_overrides, grid=extra):
                scenario = sc.model_dump(mode="json")
                digest = hashlib.sha256(json.dumps(scenario, sort_keys=True).encode()).hexdigest()[:10]
                parts = ([variant] if variant else []) + [f"{_short_key(k)}={_label_value(v)}"
                                                           for k, v in zip(keys, values)]
                parts.append(f"seed={sc.seed}")
                label = safe_label("-".join(parts))
                run_id = f"{label}-{digest}"
                if run_id in seen:
                    continue
                seen.add(run_id)
                params = {"variant": variant, **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                                                 for k, v in zip(keys, values)}, "seed": sc.seed}
                runs.append(RunSpec(run_id, label, params, scenario, str(path), sc.run.device))
    axes = (["variant"] if any(r.params["variant"] for r in runs) else []) + keys + ["seed"]
    return SweepPlan(runs, axes)


def check_runs(plan: SweepPlan, here: bool = True) -> None:
    """Every check ``locosim run`` makes before work (``sim.checks.check_before_work``: plug-ins,
    data, memory, device, kernels, work estimate), once per distinct scenario (seeds aside), so a
    sweep that cannot run is refused before anything is written instead of failing run by run.
    ``here=False`` (the runs go to a Ray cluster) leaves out what depends on the machine.
    Raises ScenarioError naming the first run that fails and the field."""
    from sim.checks import check_before_work
    from sim.scenario import Scenario

    seen: set[str] = set()
    for r in plan.runs:
        key = json.dumps({k: v for k, v in r.scenario.items() if k != "seed"}, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_before_work(Scenario.model_validate(r.scenario), here=here)
        except (ValueError, RuntimeError) as err:
            raise ScenarioError(f"sweep run {r.label}: {str(err).splitlines()[0]}") from None


def status_of(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "manifest.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def _is_done(run_dir: Path, r: RunSpec) -> bool:
    """Whether a planned run is done: its directory holds a finished run (completed or diverged)
    that read the same plug-in source and data files as the run would now
    (``sim.fingerprint.stale_reason``). A finished run whose files changed since is not done:
    it is run again, and the sweep says so on stderr (its stale results are never reused)."""
    if status_of(run_dir) not in FINISHED:
        return False
    from sim.fingerprint import stale_reason

    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    why = stale_reason(manifest, r.scenario)
    if why is None:
        return True
    print(f"sweep: running {r.run_id} again: {why}", file=sys.stderr)
    return False


def execute_run(scenario: dict, out_dir: str, source: str, share: int = 1) -> dict:
    """Run one scenario into ``out_dir`` (in a pool process or a Ray task); never raises for a
    failed run. ``share``: how many runs share this machine's cores at once (``run.threads:
    auto`` gives a large model its share of them; a tiny one takes one thread anyway)."""
    os.environ["LOCOSIM_PROCESSES"] = str(max(1, share))
    from sim.runner import Simulation, run_to_dir
    from sim.scenario import Scenario

    out = Path(out_dir)
    try:
        sim = Simulation(Scenario.model_validate(scenario))
        manifest = run_to_dir(sim, out, source=source)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (sim.rundir.Terminated)
        return {"status": "interrupted", "error": str(err) or "KeyboardInterrupt"}
    except (Exception, SystemExit) as err:  # recorded in the index; the sweep goes on (also a plug-in's sys.exit)
        if isinstance(err, SystemExit):
            err = RuntimeError(f"plug-in code called sys.exit({err.code!r}) while the run was being built")
        if not (out / "manifest.json").exists():
            out.mkdir(parents=True, exist_ok=True)
            (out / "manifest.json").write_text(json.dumps({"status": "failed", "error": f"{type(err).__name__}: {err}"}))
        return {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    return {"status": manifest["status"], "error": manifest.get("error")}


@dataclass
class SweepResult:
    index_path: Path
    done: int
    failed: int
    skipped: int
    interrupted: bool
    n_interrupted: int = 0  # runs that ended interrupted (the index lists them as such)


def run_sweep(plan: SweepPlan, out: Path, workers: int = 1, ray_address: str | None = None,
              on_update: Callable[[int, int, int, int], None] | None = None,
              on_note: Callable[[str], None] | None = None) -> SweepResult:
    """Run every planned run not already completed under ``out``; write ``out/index.parquet``.

    Holds ``out/sweep.lock`` throughout: ``sim.rundir.SweepLocked`` (one line) while another
    live sweep holds it, before anything in ``out`` is touched (resuming removes unfinished run
    directories, which would be the other sweep's runs in progress). ``on_note`` (default:
    stderr) hears when a stale lock was taken over."""
    out.mkdir(parents=True, exist_ok=True)
    with SweepLock(out) as lock:
        if lock.note:
            (on_note or (lambda text: print(text, file=sys.stderr)))(lock.note)
        return _run_locked(plan, out, workers, ray_address, on_update)


def _earlier(out: Path) -> tuple[list[str], list[str], dict[str, dict]]:
    """What an earlier sweep into ``out`` left: its axes, its run ids (sweep.json) and its index
    rows by run id -- so that sweeping into it again with other seeds or grid points adds to it."""
    axes: list[str] = []
    runs: list[str] = []
    rows: dict[str, dict] = {}
    try:
        meta = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
        if isinstance(meta, dict):
            axes = [a for a in meta.get("axes") or [] if isinstance(a, str)]
            runs = [r for r in meta.get("runs") or [] if isinstance(r, str)]
    except (OSError, ValueError):
        pass
    if (out / INDEX).is_file():
        try:
            import pandas as pd

            df = pd.read_parquet(out / INDEX)
            for row in df.astype(object).where(df.notna(), None).to_dict("records"):
                if isinstance(row.get("run_id"), str):
                    rows[row["run_id"]] = row
        except (OSError, ValueError, ImportError):
            pass
    for run_id in rows:
        if run_id not in runs:
            runs.append(run_id)
    return axes, runs, rows


def _write_sweep_json(out: Path, axes: list[str], runs: list[str]) -> None:
    tmp = out / "sweep.json.tmp"
    tmp.write_text(json.dumps({"axes": axes, "runs": runs}, indent=2))
    os.replace(tmp, out / "sweep.json")


def _run_locked(plan: SweepPlan, out: Path, workers: int, ray_address: str | None,
                on_update: Callable[[int, int, int, int], None] | None) -> SweepResult:
    old_axes, old_runs, old_rows = _earlier(out)
    planned = [r.run_id for r in plan.runs]
    # an earlier sweep here with other seeds or grid points: its runs stay listed (sweep.json, index)
    earlier = {rid: old_rows.get(rid, {"run_id": rid, "dir": rid}) for rid in old_runs
               if rid not in set(planned) and safe_label(rid) == rid and (out / rid).is_dir()}
    axes = old_axes + [a for a in plan.axes if a not in old_axes] if earlier else plan.axes
    _write_sweep_json(out, axes, [rid for rid in old_runs if rid in earlier] + planned)
    plan = SweepPlan(plan.runs, axes, earlier)
    todo, skipped = [], 0
    for r in plan.runs:
        d = out / r.run_id
        if _is_done(d, r):
            skipped += 1
            continue
        if d.exists():  # interrupted, failed or unreadable: start it again from scratch
            shutil.rmtree(d)
        todo.append(r)
    results: dict[str, dict] = {}
    cache: dict[str, dict] = {}
    done = failed = 0
    total = len(plan.runs)

    def record(r: RunSpec, res: dict) -> None:
        nonlocal done, failed
        results[r.run_id] = res
        if res["status"] in FINISHED:
            done += 1
        else:
            failed += 1
        write_index(plan, out, results, cache)
        if on_update:
            on_update(done, failed, skipped, total)

    if on_update:
        on_update(done, failed, skipped, total)
    interrupted = False
    try:
        if ray_address is not None:
            _run_ray(todo, out, ray_address, record)
        elif workers <= 1:
            for r in todo:
                res = execute_run(r.scenario, str(out / r.run_id), r.source)
                if res["status"] == "interrupted":
                    raise KeyboardInterrupt
                record(r, res)
        else:
            _run_pool(todo, out, workers, record)
    except KeyboardInterrupt:
        interrupted = True
    write_index(plan, out, results, cache)
    # the counts come from the runs' manifests, as the index's status column does, so the two agree
    # even when an interrupt landed between a run's end and its record()
    ended = [status_of(out / r.run_id) for r in todo]
    return SweepResult(out / INDEX, sum(s in FINISHED for s in ended), ended.count("failed"), skipped, interrupted,
                       ended.count("interrupted"))


STOP_GRACE_S = 600.0  # after Ctrl-C / SIGTERM: how long a worker may take to write its interrupted run
# (a second Ctrl-C stops at once)
WATCHDOG_EVERY_S = 1.0  # how often a worker checks that its parent is still there


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker end when the sweep process dies, however it dies (SIGKILL included):
    the kernel sends SIGTERM when the parent exits (Linux ``PR_SET_PDEATHSIG``); a thread
    checking ``os.getppid()`` does the same elsewhere, and exits hard if the run does not end."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCHDOG_EVERY_S)
        os.kill(os.getpid(), signal.SIGTERM)  # end the run as on SIGTERM: tables written, interrupted
        time.sleep(STOP_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="locosim-parent-watchdog", daemon=True).start()


def _pool_worker(conn, parent_pid: int) -> None:
    """A pool worker: runs what the parent sends, one run at a time, until it sends None.
    Ctrl-C is ignored here (the terminal sends it to every process; the parent decides and
    sends SIGTERM once); SIGTERM ends the run in progress as Ctrl-C would, then the worker."""
    from sim.rundir import handle_sigterm, was_terminated

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handle_sigterm()
    _die_with_parent(parent_pid)
    try:
        while not was_terminated():
            msg = conn.recv()
            if msg is None:
                break
            run_id, args = msg
            res = execute_run(*args)
            # a SIGTERM now would cut the message in half: hold it until the result is sent
            posix = hasattr(signal, "pthread_sigmask")
            if posix:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            try:
                conn.send((run_id, res))
            finally:
                if posix:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    except (EOFError, OSError, KeyboardInterrupt):  # parent gone, or SIGTERM while idle
        pass


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_pool_worker, args=(child, os.getpid()), daemon=True,
                                name="locosim-sweep-worker")
        self.proc.start()
        child.close()

    def result(self) -> dict | None:
        """The result the worker sent, or None if it died without sending one."""
        try:
            if self.conn.poll():
                return self.conn.recv()[1]
        except Exception:  # EOF, a broken pipe, a message cut short: as good as no result
            pass
        return None

    def stop(self, timeout_s: float) -> None:
        """Ask an idle worker to exit; kill one that does not."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5.0)
        self.conn.close()


def _settle(run_dir: Path, status: str, error: str) -> None:
    """Mark a run whose worker died mid-run (its manifest still says running, or there is none)."""
    st = status_of(run_dir)
    if st not in (None, "running"):
        return
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text()) if st else {}
    except (OSError, ValueError):
        manifest = {}
    if not run_dir.exists():
        return
    manifest.update(status=status, error=error)
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")


def _run_pool(todo: list[RunSpec], out: Path, workers: int, record) -> None:
    """Hand each run to an idle worker (none is queued ahead); see the module docstring."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    queue = list(reversed(todo))  # pop() takes the next run in plan order
    everyone: list[_Worker] = []
    busy: dict[_Worker, RunSpec] = {}

    def start() -> _Worker:
        w = _Worker(ctx)
        everyone.append(w)
        return w

    try:
        idle = [start() for _ in range(min(workers, len(queue)))]
        while queue or busy:
            while queue and idle:
                w, r = idle.pop(), queue.pop()
                busy[w] = r  # before the send: an interrupt in between still finds the worker busy
                try:
                    w.conn.send((r.run_id, (r.scenario, str(out / r.run_id), r.source, workers)))
                except OSError:  # it died while idle: a new worker takes the run
                    del busy[w]
                    queue.append(r)
                    idle.append(start())
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
            for w in [w for w in busy if w.conn in ready or w.proc.sentinel in ready]:
                r = busy.pop(w)
                res = w.result()
                if res is None:  # died without a word (killed, out of memory)
                    w.proc.join(1.0)
                    res = {"status": "failed", "error": f"the worker process died (exit code {w.proc.exitcode})"}
                    _settle(out / r.run_id, "failed", res["error"])
                    if queue:
                        idle.append(start())
                elif res["status"] == "interrupted":  # someone signalled the worker: stop the sweep
                    raise KeyboardInterrupt
                else:
                    idle.append(w)
                record(r, res)
    except KeyboardInterrupt:
        # Nothing more is handed out. Each busy worker gets one SIGTERM and ends its run as
        # interrupted (tables written); runs that ended meanwhile are still recorded.
        for w in busy:
            try:
                os.kill(w.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        while busy and time.monotonic() < deadline:
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                             timeout=max(0.0, deadline - time.monotonic())))
            for w in [w for w in busy if w.conn in ready or w.proc.sentinel in ready]:
                r = busy.pop(w)
                res = w.result()
                if res is None:
                    _settle(out / r.run_id, "interrupted", "the worker process was stopped")
                elif res["status"] != "interrupted":
                    record(r, res)
        raise
    finally:
        deadline = time.monotonic() + 10.0  # idle workers exit at once; one still busy here is killed
        for w in everyone:
            w.stop(timeout_s=max(0.0, deadline - time.monotonic()))
        for w, r in busy.items():  # did not end within the grace period (or a second Ctrl-C)
            _settle(out / r.run_id, "interrupted", "the worker process was stopped")


def _run_ray(todo: list[RunSpec], out: Path, address: str, record) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                 log_to_driver=False, include_dashboard=False)
    remote = ray.remote(execute_run)
    pending = {}
    for r in todo:
        opts = {"num_cpus": 1}
        if r.device == "cuda":
            opts["num_gpus"] = 1
        pending[remote.options(**opts).remote(r.scenario, str((out / r.run_id).resolve()), r.source, 1)] = r
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            r = pending.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as err:  # the task itself died
                res = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            record(r, res)


def write_index(plan: SweepPlan, out: Path, results: dict[str, dict], cache: dict[str, dict] | None = None) -> None:
    """One row per planned run: parameters, status, error and summary metrics (atomic write).
    ``cache`` keeps the rows of finished runs so a long sweep does not re-read every summary."""
    import pandas as pd

    rows = []
    cache = {} if cache is None else cache
    for run_id, row in plan.earlier.items():  # an earlier sweep's runs in the same directory stay listed
        rows.append({**row, "status": status_of(out / run_id) or "pending"})
    for r in plan.runs:
        if r.run_id in cache:
            rows.append(cache[r.run_id])
            continue
        d = out / r.run_id
        row = {"run_id": r.run_id, "label": r.label, "dir": r.run_id, **r.params,
               "algorithm": r.scenario["algorithm"]["name"], "status": status_of(d) or "pending",
               "error": results.get(r.run_id, {}).get("error")}
        try:
            summary = json.loads((d / "summary.json").read_text())
        except (OSError, ValueError):
            summary = {}
        for k in SUMMARY_KEYS:
            v = summary.get(k)
            row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        if row["status"] in FINISHED + ("failed",):
            cache[r.run_id] = row
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].map(lambda v: None if v is None else (v if isinstance(v, str) else json.dumps(v)))
    tmp = out / (INDEX + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out / INDEX)


def apply_grid_flags(flags: list[str]) -> dict[str, list[Any]]:
    """['algorithm.inner_steps=50,100'] -> {'algorithm.inner_steps': [50, 100]} (checked on a dummy mapping)."""
    grid: dict[str, list[Any]] = {}
    for f in flags:
        if "=" not in f:
            raise ScenarioError(f"--grid {f}: expected key.path=v1,v2,...")
        key, values = f.split("=", 1)
        key = key.strip()
        if not key or not all(key.split(".")):
            raise ScenarioError(f"--grid {f}: empty key in path")
        grid[key] = parse_values(values)
    return grid
