"""The run's learning figures: train and eval loss vs simulated time (with each replica's own
eval loss under ``run.eval_replicas``), eval loss vs tokens and vs bytes, the synthetic
language's loss floor, and the method diagnostics (NoLoCo spread, eager DiLoCo drift: metrics
rows of any kind other than train and eval) as one panel each. The comparison page draws its
diagnostics with the same panels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sim.report.figure import figure, floor_line
from sim.report.style import EVAL_COLOR, PANEL_FONT_SIZE, REPLICA_COLOR, TITLE_FONT_SIZE, TRAIN_COLOR, byte_unit


def diagnostic_labels(manifest: dict) -> dict[str, tuple[str, str]]:
    """Name -> (label, axis title with unit) of each method diagnostic, as the method said
    (``Algorithm.diagnostic_labels``, recorded in the manifest), else as a shipped method labels
    it (a run written before labels were recorded); a name nobody labelled is shown as is."""
    from sim.algorithms import METHODS, method_class

    labels = {k: v for ref in METHODS.values() for k, v in method_class(ref).diagnostic_labels.items()}
    labels.update(manifest.get("diagnostic_labels") or {})
    return {k: (str(v[0]), str(v[1])) for k, v in labels.items()}


def loss_vs_time(metrics: pd.DataFrame, floor: float | None) -> go.Figure:
    fig = figure("Loss vs simulated time", height=420)
    train = metrics[metrics["kind"] == "train"]
    if len(train):
        per_step = train.groupby("step").agg(time_s=("time_s", "max"), loss=("loss", "mean")).reset_index()
        fig.add_trace(go.Scatter(x=per_step["time_s"], y=per_step["loss"], mode="lines",
                                 name="train loss (mean of workers)", line={"color": TRAIN_COLOR, "width": 1}))
    reps = metrics[metrics["kind"] == "replica_eval"]
    for i, (w, d) in enumerate(reps.groupby("worker")):  # run.eval_replicas: each replica's own parameters
        fig.add_trace(go.Scatter(x=d["time_s"], y=d["loss"], mode="lines", name="eval loss (each replica)",
                                 legendgroup="replica_eval", showlegend=i == 0, hovertext=f"replica {w}",
                                 line={"color": REPLICA_COLOR, "width": 1}))
    ev = _one_eval_per_x(metrics[metrics["kind"] == "eval"], "time_s")
    fig.add_trace(go.Scatter(x=ev["time_s"], y=ev["loss"], mode="lines+markers", name="eval loss (global model)",
                             line={"color": EVAL_COLOR, "width": 2}, marker={"size": 5}))
    floor_line(fig, floor, list(ev["loss"]) + (list(per_step["loss"]) if len(train) else []))
    fig.update_layout(xaxis_title="simulated time (s)", yaxis_title="loss (nats)")
    return fig


def _one_eval_per_x(ev: pd.DataFrame, column: str) -> pd.DataFrame:
    """Evals sorted by ``column``, one per value: of two at one x (a grid eval and the run's closing
    eval at the same time or tokens) the later, so that a curve never ends in a vertical drop."""
    return ev.sort_values([column, "time_s"], kind="stable").drop_duplicates(column, keep="last")


def loss_vs(metrics: pd.DataFrame, column: str, title: str, xlabel: str, floor: float | None) -> go.Figure:
    ev = _one_eval_per_x(metrics[metrics["kind"] == "eval"], column)
    fig = figure(title)
    x = ev[column]
    if column == "bytes":  # MB / GB, not plotly's SI suffixes ("1B" = a billion)
        div, unit = byte_unit(float(x.max()) if len(x) else 0.0)
        x, xlabel = x / div, f"{xlabel} ({unit})"
    fig.add_trace(go.Scatter(x=x, y=ev["loss"], mode="lines+markers", name="eval loss",
                             line={"color": EVAL_COLOR}, marker={"size": 5}))
    floor_line(fig, floor, ev["loss"])
    fig.update_layout(xaxis_title=xlabel, yaxis_title="eval loss (nats)", showlegend=False)
    return fig


def diagnostic_kinds(metrics: pd.DataFrame) -> list[str]:
    """Metric kinds other than train and eval (NoLoCo 'spread', eager 'drift', any later one)."""
    return sorted(k for k in metrics["kind"].astype(str).unique() if k not in ("train", "eval", "replica_eval"))


NONNEGATIVE_PREFIXES = ("spread", "drift")  # an RMS and a distance: never below zero


def nonnegative(kind: str, values) -> bool:
    """Whether a diagnostic cannot be negative (a known spread/drift, or every value seen >= 0),
    so its panel's axis starts at zero."""
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals)]
    return kind.startswith(NONNEGATIVE_PREFIXES) or (len(vals) > 0 and bool((vals >= 0).all()))


def diagnostic_panels(kinds: list[str], title: str, labels: dict[str, tuple[str, str]] | None = None) -> go.Figure:
    """An empty figure with one panel (own y axis, shared time axis) per diagnostic kind:
    small multiples, never two unrelated quantities on twin axes. ``labels``: kind -> (title,
    axis title with its unit), as the method states them (``diagnostic_labels``)."""
    labels = labels or {}
    fig = make_subplots(rows=len(kinds), cols=1, shared_xaxes=True, vertical_spacing=0.12 if len(kinds) > 1 else 0.0,
                        subplot_titles=[labels.get(k, (k, k))[0] for k in kinds])
    fig.update_layout(title={"text": title, "font": {"size": TITLE_FONT_SIZE}}, height=140 + 230 * len(kinds),
                      margin={"l": 60, "r": 20, "t": 70, "b": 50})
    for a in fig.layout.annotations:  # the panel titles: smaller than the figure's
        a.font = {"size": PANEL_FONT_SIZE}
    fig.update_xaxes(title_text="simulated time (s)", row=len(kinds), col=1)
    return fig


def finish_panels(fig: go.Figure, kinds: list[str], values: dict[str, list],
                  labels: dict[str, tuple[str, str]] | None = None) -> None:
    """Each panel's y title (its unit) and, for a quantity that cannot be negative, a zero-based axis."""
    for i, k in enumerate(kinds, start=1):
        fig.update_yaxes(title_text=(labels or {}).get(k, (k, k))[1], row=i, col=1,
                         rangemode="tozero" if nonnegative(k, values.get(k, [])) else "normal")


def diagnostics(metrics: pd.DataFrame, labels: dict[str, tuple[str, str]] | None = None) -> go.Figure | None:
    labels = labels or {}
    kinds = diagnostic_kinds(metrics)
    if not kinds:
        return None
    fig = diagnostic_panels(kinds, "Method diagnostics vs simulated time (one panel each)", labels)
    values = {}
    for i, k in enumerate(kinds, start=1):
        d = metrics[metrics["kind"] == k]
        values[k] = d["loss"].tolist()
        fig.add_trace(go.Scatter(x=d["time_s"], y=d["loss"], mode="lines+markers", name=labels.get(k, (k, k))[0],
                                 marker={"size": 4}, showlegend=False), row=i, col=1)
    finish_panels(fig, kinds, values, labels)
    return fig
