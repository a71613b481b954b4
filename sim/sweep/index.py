"""A sweep directory's own files: ``index.parquet`` (one row per run: parameters, status, error and
summary metrics) and ``sweep.json`` (the axes and the run ids, in plan order).

Both are rewritten after every run (atomically), so an interrupted sweep leaves a readable
index. A sweep into a directory an earlier sweep used (other seeds or grid points) keeps the
earlier runs listed. Apart from the plan and the pool because it only reads run directories
(``sim.rundir``) and writes these two files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sim.rundir import FINISHED, INDEX, STATUS_FAILED, SWEEP_JSON, read_summary, status_of
from sim.sweep.plan import SweepPlan

SUMMARY_KEYS = ("utilization", "final_eval_loss", "loss_floor", "sim_duration_s", "wan_bytes", "rounds", "tokens",
                "time_to_target_s")
"""The summary metrics the index lists for every run (a column each; null when not a number)."""


def earlier_sweep(out: Path) -> tuple[list[str], list[str], dict[str, dict]]:
    """What an earlier sweep into ``out`` left: its axes, its run ids (sweep.json) and its index
    rows by run id -- so that sweeping into it again with other seeds or grid points adds to it."""
    axes: list[str] = []
    runs: list[str] = []
    rows: dict[str, dict] = {}
    try:
        meta = json.loads((out / SWEEP_JSON).read_text(encoding="utf-8"))
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


def write_sweep_json(out: Path, axes: list[str], runs: list[str]) -> None:
    tmp = out / (SWEEP_JSON + ".tmp")
    tmp.write_text(json.dumps({"axes": axes, "runs": runs}, indent=2))
    os.replace(tmp, out / SWEEP_JSON)


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
        summary = read_summary(d) or {}
        for k in SUMMARY_KEYS:
            v = summary.get(k)
            row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        if row["status"] in FINISHED + (STATUS_FAILED,):
            cache[r.run_id] = row
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].map(lambda v: None if v is None else (v if isinstance(v, str) else json.dumps(v)))
    tmp = out / (INDEX + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out / INDEX)
