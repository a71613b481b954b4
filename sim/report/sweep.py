"""The sweep view of ``locosim compare SWEEP_DIR``: each metric against each swept parameter.

Reads the sweep's ``index.parquet`` and ``sweep.json`` (written by ``sim.sweep``). For
every swept axis other than the seed, one figure per metric: x is the axis value, one line
per algorithm (and per value of the other swept axes), the mean over seeds with a band
from the lowest to the highest seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from sim.report.style import FIGURE_HEIGHT, PALETTE, PLAIN_MARGIN

METRICS = {"final_eval_loss": "final eval loss", "utilization": "compute utilization (CU)",
           "time_to_target_s": "simulated time to target (s)", "wan_bytes": "bytes over WAN links"}


def load_sweep(path: str | Path) -> tuple[pd.DataFrame, list[str]] | None:
    """(index, swept axes) when ``path`` is a sweep directory, else None."""
    p = Path(path)
    if not (p / "index.parquet").is_file() or not (p / "sweep.json").is_file():
        return None
    meta = json.loads((p / "sweep.json").read_text())
    axes = meta.get("axes", []) if isinstance(meta, dict) else None
    if not isinstance(axes, list) or not all(isinstance(a, str) for a in axes):
        raise ValueError(f"{p / 'sweep.json'}: not a sweep's sweep.json (no list of axes)")
    index = pd.read_parquet(p / "index.parquet")
    if "status" not in index.columns:
        raise ValueError(f"{p / 'index.parquet'}: not a sweep index (no status column)")
    return index, axes


def _x_order(values: pd.Series) -> tuple[list, bool]:
    uniq = list(dict.fromkeys(values.tolist()))
    try:
        nums = [float(v) for v in uniq]
    except (TypeError, ValueError):
        return uniq, False
    order = [u for _, u in sorted(zip(nums, uniq))]
    positive = all(n > 0 for n in nums)
    return order, positive and max(nums) / min(nums) >= 10


def sweep_figures(index: pd.DataFrame, axes: list[str]) -> dict[str, go.Figure]:
    """Figures by div id: 'sweep-<metric>-vs-<axis>'."""
    done = index[index["status"] == "completed"]
    swept = [a for a in axes if a != "seed" and a in done.columns and done[a].nunique() > 1]
    figs: dict[str, go.Figure] = {}
    for axis in swept:
        others = [a for a in swept if a != axis]
        keys = ["algorithm"] + others
        order, logx = _x_order(done[axis])
        for metric, label in METRICS.items():
            if metric not in done.columns or done[metric].isna().all():
                continue
            fig = go.Figure()
            for i, (key, rows) in enumerate(done.groupby(keys, sort=True, dropna=False)):
                key = key if isinstance(key, tuple) else (key,)
                name = " | ".join([str(key[0])] + [f"{a.split('.')[-1]}={v}" for a, v in zip(others, key[1:])])
                stats = rows.groupby(axis)[metric].agg(["mean", "min", "max"]).reindex(order).dropna()
                xs = [x if not logx else float(x) for x in stats.index]
                color = PALETTE[i % len(PALETTE)]
                if (stats["max"] > stats["min"]).any():
                    fig.add_trace(go.Scatter(x=xs + xs[::-1], y=list(stats["max"]) + list(stats["min"])[::-1],
                                             fill="toself", fillcolor=color, opacity=0.15, line={"width": 0},
                                             hoverinfo="skip", showlegend=False, legendgroup=name))
                fig.add_trace(go.Scatter(x=xs, y=list(stats["mean"]), mode="lines+markers", name=name,
                                         line={"color": color}, legendgroup=name))
            fig.update_layout(title=f"{label} vs {axis} (mean over seeds, band: min-max)",
                              xaxis={"title": axis, "type": "log" if logx else None}, yaxis_title=label,
                              height=FIGURE_HEIGHT, margin=dict(PLAIN_MARGIN))
            figs[f"sweep-{metric}-vs-{axis.replace('.', '_')}"] = fig
    return figs
