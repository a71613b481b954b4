"""Dashboard figures of a run whose method has parameter servers (asynchronous methods):
the staleness of the updates the servers applied (a histogram), the rounds each worker
completed over simulated time, and each server's busy time. Read from the run's files:
metrics.parquet (kind ``staleness``: one row per update applied, worker, time, value) and
summary.json (``servers``, ``staleness``, ``rounds_per_worker``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sim.report.figure import plain_figure
from sim.report.style import SERVER_COLOR, STALENESS_COLOR

MAX_WORKER_LINES = 64  # above this many workers, each region's slowest and fastest worker


def staleness_histogram(metrics: pd.DataFrame, summary: dict) -> go.Figure | None:
    """How stale the applied updates were: count of updates per staleness value (server
    versions between the worker's start model leaving its server and its update being applied)."""
    st = metrics[metrics["kind"] == "staleness"]
    if not len(st):
        return None
    values, counts = np.unique(st["loss"].to_numpy(float).astype(int), return_counts=True)
    s = summary.get("staleness") or {}
    title = "Staleness of applied updates"
    if s.get("count"):
        title += f" (mean {s['mean']:.2f}, median {s['p50']:.0f}, p90 {s['p90']:.0f}, max {s['max']:.0f})"
    fig = plain_figure(title)
    fig.add_trace(go.Bar(x=values, y=counts, marker_color=STALENESS_COLOR, name="updates",
                         hovertemplate="staleness %{x}: %{y} updates<extra></extra>"))
    fig.update_layout(xaxis={"title": "staleness (server versions)"}, yaxis={"title": "updates applied"},
                      bargap=0.05)
    return fig


def rounds_figure(metrics: pd.DataFrame, nodes: list[str], end_s: float) -> go.Figure | None:
    """Rounds (updates that reached a server) completed per worker over simulated time; above
    ``MAX_WORKER_LINES`` workers, each region's slowest and fastest worker."""
    st = metrics[(metrics["kind"] == "staleness") & (metrics["worker"] >= 0)]
    if not len(st):
        return None
    curves = {}
    for w, d in st.groupby("worker", sort=True):
        t = np.sort(d["time_s"].to_numpy(float))
        curves[int(w)] = (np.r_[0.0, t, end_s], np.r_[0, np.arange(1, t.size + 1), t.size])
    shown = sorted(curves)
    fig = plain_figure("Rounds completed per worker vs simulated time")
    if len(shown) > MAX_WORKER_LINES:
        by_region: dict[str, list[int]] = {}
        for w in shown:
            by_region.setdefault(nodes[w].rsplit("/", 1)[0], []).append(w)
        shown = []
        for members in by_region.values():
            members = sorted(members, key=lambda w: curves[w][1][-1])
            shown += [members[0], members[-1]] if len(members) > 1 else members
        fig.update_layout(title_text=fig.layout.title.text + " (each region's slowest and fastest worker)")
    for w in shown:
        x, y = curves[w]
        name = nodes[w] if w < len(nodes) else str(w)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line={"shape": "hv", "width": 1.5}, name=name,
                                 hovertemplate=name + ": %{y:.0f} rounds at %{x:.3f} s<extra></extra>"))
    fig.update_layout(xaxis={"title": "simulated time (s)", "range": [0, end_s]},
                      yaxis={"title": "rounds completed", "rangemode": "tozero"})
    return fig


def servers_figure(summary: dict) -> go.Figure | None:
    """Each server's busy time (its apply time summed) as a share of the run, with the payloads
    it handled."""
    servers = summary.get("servers") or {}
    if not servers:
        return None
    names = list(servers)
    fig = plain_figure("Server busy time (share of the run)")
    fig.add_trace(go.Bar(x=names, y=[100 * servers[n]["busy_fraction"] for n in names], marker_color=SERVER_COLOR,
                         customdata=[[servers[n]["busy_s"], servers[n]["handled"], servers[n]["version"]] for n in names],
                         hovertemplate="%{x}: busy %{y:.1f}% (%{customdata[0]:.3g} s), %{customdata[1]} payloads "
                                       "handled, version %{customdata[2]}<extra></extra>", name="busy"))
    fig.update_layout(yaxis={"title": "busy (% of simulated time)", "rangemode": "tozero"})
    return fig


def async_figures(metrics: pd.DataFrame, summary: dict) -> dict[str, tuple[go.Figure, bool]]:
    """The section's figures by div id (figure, wide?); empty for a run without servers."""
    if not summary.get("servers"):
        return {}
    nodes = list(summary.get("per_node") or {})
    end = float(summary.get("sim_duration_s") or 0.0)
    out = {}
    for fig_id, fig in (("fig-staleness", staleness_histogram(metrics, summary)),
                        ("fig-rounds", rounds_figure(metrics, nodes, end)),
                        ("fig-servers", servers_figure(summary))):
        if fig is not None:
            out[fig_id] = (fig, False)
    return out
