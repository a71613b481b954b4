"""Sweeps: many runs of one scenario file, on a local process pool or a Ray cluster.

A sweep is the product of the file's variants (if any), a grid of ``key.path`` values
(``--grid`` flags or the file's ``sweep: {grid: {...}, seeds: [...]}`` section) and seeds.
Each run gets a directory named from its parameters -- a readable label plus a stable hash
of the resolved scenario -- so re-running the same sweep finds its runs again: completed
ones are skipped, interrupted or failed ones are run again (resume). Every run is an
ordinary run directory (``sim.runner.run_to_dir``); ``index.parquet`` lists them all with
their parameters, status and summary metrics, and is rewritten after every run.

Execution: a local ``ProcessPoolExecutor`` (spawn; one torch thread per process when
several run at once) by default; with ``ray_address`` one Ray task per run (a GPU per task
when the run uses CUDA). No scheduler of our own: a failed run is recorded with its
error and the sweep goes on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from sim.scenario import ScenarioError, load_variants, read_yaml

INDEX = "index.parquet"
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


def parse_values(text: str) -> list[Any]:
    """'50,100,500' -> [50, 100, 500] (each value read as YAML)."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(p == "" for p in parts):
        raise ScenarioError(f"--grid {text}: expected comma-separated values, e.g. 50,100,500")
    return [yaml.safe_load(p) for p in parts]


def parse_seeds(text: str) -> list[int]:
    """'0..4' -> [0, 1, 2, 3, 4]; '0,3,7' -> [0, 3, 7]."""
    m = re.fullmatch(r"\s*(\d+)\s*\.\.\s*(\d+)\s*", text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo:
            raise ScenarioError(f"--seeds {text}: the range end must be >= its start")
        return list(range(lo, hi + 1))
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ScenarioError(f"--seeds {text}: expected a range like 0..4 or a list like 0,3,7") from None
    if any(s < 0 for s in seeds):
        raise ScenarioError(f"--seeds {text}: seeds must be >= 0")
    return seeds


def _label_value(v: Any) -> str:
    if isinstance(v, dict):
        return str(v.get("name") or v.get("kind") or "x")
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(v))


def _short_key(key: str) -> str:
    return key.split(".")[-1]


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
    if seeds is None:
        seeds = section.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or not all(isinstance(s, int) and s >= 0 for s in seeds)):
            raise ScenarioError("sweep.seeds: a list of integers >= 0")
    base_overrides = list(overrides or [])
    keys = list(full_grid)
    runs: list[RunSpec] = []
    seen: set[str] = set()
    combos = list(itertools.product(*(full_grid[k] for k in keys))) if keys else [()]
    for values in combos:
        point = [f"{k}={json.dumps(v)}" for k, v in zip(keys, values)]
        for seed in seeds if seeds is not None else [None]:
            extra = point + ([f"seed={seed}"] if seed is not None else [])
            for variant, sc in load_variants(path, base_overrides + extra):
                scenario = sc.model_dump(mode="json")
                digest = hashlib.sha256(json.dumps(scenario, sort_keys=True).encode()).hexdigest()[:10]
                parts = ([variant] if variant else []) + [f"{_short_key(k)}={_label_value(v)}"
                                                           for k, v in zip(keys, values)]
                parts.append(f"seed={sc.seed}")
                label = "-".join(parts)
                run_id = f"{label}-{digest}"
                if run_id in seen:
                    continue
                seen.add(run_id)
                params = {"variant": variant, **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                                                 for k, v in zip(keys, values)}, "seed": sc.seed}
                runs.append(RunSpec(run_id, label, params, scenario, str(path), sc.run.device))
    axes = (["variant"] if any(r.params["variant"] for r in runs) else []) + keys + ["seed"]
    return SweepPlan(runs, axes)


def status_of(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "manifest.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def execute_run(scenario: dict, out_dir: str, source: str, threads: int | None) -> dict:
    """Run one scenario into ``out_dir`` (in a pool process or a Ray task); never raises for a failed run."""
    if threads:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    from sim.runner import Simulation, run_to_dir
    from sim.scenario import Scenario

    out = Path(out_dir)
    try:
        sim = Simulation(Scenario.model_validate(scenario))
        manifest = run_to_dir(sim, out, source=source)
    except KeyboardInterrupt:
        return {"status": "interrupted", "error": "KeyboardInterrupt"}
    except Exception as err:  # recorded in the index; the sweep goes on
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


def run_sweep(plan: SweepPlan, out: Path, workers: int = 1, ray_address: str | None = None,
              on_update: Callable[[int, int, int, int], None] | None = None) -> SweepResult:
    """Run every planned run not already completed under ``out``; write ``out/index.parquet``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"axes": plan.axes, "runs": [r.run_id for r in plan.runs]}, indent=2))
    todo, skipped = [], 0
    for r in plan.runs:
        d = out / r.run_id
        st = status_of(d)
        if st == "completed":
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
        if res["status"] == "completed":
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
                res = execute_run(r.scenario, str(out / r.run_id), r.source, None)
                if res["status"] == "interrupted":
                    raise KeyboardInterrupt
                record(r, res)
        else:
            _run_pool(todo, out, workers, record)
    except KeyboardInterrupt:
        interrupted = True
    write_index(plan, out, results, cache)
    return SweepResult(out / INDEX, done, failed, skipped, interrupted)


def _run_pool(todo: list[RunSpec], out: Path, workers: int, record) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(execute_run, r.scenario, str(out / r.run_id), r.source, 1): r for r in todo}
        try:
            for fut in as_completed(futures):
                r = futures[fut]
                try:
                    res = fut.result()
                except Exception as err:  # the worker process died
                    res = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
                record(r, res)
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            raise


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
        if row["status"] in ("completed", "failed"):
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
