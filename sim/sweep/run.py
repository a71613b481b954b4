"""Running a sweep: every planned run not already finished, into ``OUT/<run id>/``.

Re-running the same sweep finds its runs again: completed (or diverged) ones are skipped,
interrupted or failed ones are run again (resume); a finished run whose plug-in or data files
changed since is run again too (``sim.fingerprint``). Every run is an ordinary run directory
(``sim.writer.run_to_dir``); the index is rewritten after every run (``sim.sweep.index``).

Execution: in this process (``workers=1``), a local pool of spawned worker processes (one
torch thread each; ``sim.sweep.pool``, which hands a run only to an idle worker and stops
cleanly) or, with ``ray_address``, one Ray task per run (a GPU per task when the run uses
CUDA). A run that fails once started is recorded with its error and the sweep goes on; a run
whose worker died or was stopped is settled in its directory (``sim.rundir.settle``).

One sweep at a time per directory: ``OUT/sweep.lock`` (``sim.rundir.SweepLock``).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sim.rundir import (FINISHED, INDEX, MANIFEST, STATUS_FAILED, STATUS_INTERRUPTED, SweepLock, read_manifest,
                        settle, status_of)
from sim.sweep.index import earlier_sweep, write_index, write_sweep_json
from sim.sweep.plan import RunSpec, SweepPlan, safe_label


def _is_done(run_dir: Path, r: RunSpec) -> bool:
    """Whether a planned run is done: its directory holds a finished run (completed or diverged)
    that read the same plug-in source and data files as the run would now
    (``sim.fingerprint.stale_reason``). A finished run whose files changed since is not done:
    it is run again, and the sweep says so on stderr (its stale results are never reused)."""
    if status_of(run_dir) not in FINISHED:
        return False
    from sim.fingerprint import stale_reason

    manifest = read_manifest(run_dir)
    if manifest is None:
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
    from sim.runner import Simulation
    from sim.scenario import Scenario
    from sim.writer import run_to_dir

    out = Path(out_dir)
    try:
        sim = Simulation(Scenario.model_validate(scenario))
        manifest = run_to_dir(sim, out, source=source)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (sim.signals.Terminated)
        return {"status": STATUS_INTERRUPTED, "error": str(err) or "KeyboardInterrupt"}
    except (Exception, SystemExit) as err:  # recorded in the index; the sweep goes on (also a plug-in's sys.exit)
        if isinstance(err, SystemExit):
            err = RuntimeError(f"plug-in code called sys.exit({err.code!r}) while the run was being built")
        if not (out / MANIFEST).exists():  # it never got to write one
            settle(out, STATUS_FAILED, f"{type(err).__name__}: {err}", create=True)
        return {"status": STATUS_FAILED, "error": f"{type(err).__name__}: {err}"}
    return {"status": manifest.status, "error": manifest.error}


def _pooled_run(scenario: dict, out_dir: str, source: str, share: int) -> dict:
    """``execute_run`` in a pool worker: a run that ended interrupted interrupts its worker's task,
    which stops the pool (``sim.sweep.pool``); its directory already says interrupted."""
    res = execute_run(scenario, out_dir, source, share)
    if res["status"] == STATUS_INTERRUPTED:
        raise KeyboardInterrupt(res["error"])
    return res


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


def _run_locked(plan: SweepPlan, out: Path, workers: int, ray_address: str | None,
                on_update: Callable[[int, int, int, int], None] | None) -> SweepResult:
    old_axes, old_runs, old_rows = earlier_sweep(out)
    planned = [r.run_id for r in plan.runs]
    # an earlier sweep here with other seeds or grid points: its runs stay listed (sweep.json, index)
    earlier = {rid: old_rows.get(rid, {"run_id": rid, "dir": rid}) for rid in old_runs
               if rid not in set(planned) and safe_label(rid) == rid and (out / rid).is_dir()}
    axes = old_axes + [a for a in plan.axes if a not in old_axes] if earlier else plan.axes
    write_sweep_json(out, axes, [rid for rid in old_runs if rid in earlier] + planned)
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
                if res["status"] == STATUS_INTERRUPTED:
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
    return SweepResult(out / INDEX, sum(s in FINISHED for s in ended), ended.count(STATUS_FAILED), skipped,
                       interrupted, ended.count(STATUS_INTERRUPTED))


def _run_pool(todo: list[RunSpec], out: Path, workers: int, record) -> None:
    """The runs on a local pool (``sim.sweep.pool``): a run whose worker died is settled failed
    and recorded; one whose worker was stopped is settled interrupted."""
    from sim.sweep.pool import FAILED, run_pool

    by_id = {r.run_id: r for r in todo}

    def lost(run_id: str, status: str, error: str) -> None:
        settle(out / run_id, status, error)
        if status == FAILED:
            record(by_id[run_id], {"status": STATUS_FAILED, "error": error})

    run_pool(_pooled_run, [(r.run_id, (r.scenario, str(out / r.run_id), r.source, workers)) for r in todo], workers,
             on_result=lambda run_id, res: record(by_id[run_id], res), on_lost=lost, name="locosim-sweep-worker")




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
