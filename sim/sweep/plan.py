"""A sweep's plan: a scenario file expanded into its runs, each with a stable directory name.

A sweep is the product of the file's variants (if any), a grid of ``key.path`` values
(``--grid`` flags or the file's ``sweep: {grid: {...}, seeds: [...]}`` section) and seeds.
Each run gets a directory named from its parameters -- a readable label plus a stable hash
of the resolved scenario -- so re-running the same sweep finds its runs again. Every run is
validated here, and ``check_runs`` makes the checks ``locosim run`` makes before work, so a
sweep with a run that cannot start is refused whole before anything is written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sim.scenario import ScenarioError, check_plain, load_variants, load_yaml_text, read_yaml

MAX_RUNS = 10_000  # runs in one sweep (variants x grid points x seeds)


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
