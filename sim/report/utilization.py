"""The run's utilization figures: the share of simulated time each worker, and each region's
workers on average, spent in each state (stacked), with the overall compute utilization (CU).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from sim.report.figure import figure
from sim.report.style import MAX_GANTT_ROWS, STATE_COLORS, STATE_LABELS, STATES
from sim.report.timeline import region_of


def utilization_by_node(summary: dict) -> go.Figure:
    """Stacked state fractions per node; above ``MAX_GANTT_ROWS`` workers, of each region's
    workers with the lowest, the median and the highest CU (the spread a user looks for;
    the per-region means are the next figure)."""
    per_node = summary["per_node"]
    nodes = list(per_node)
    title = f"Time per node by state (CU {summary['utilization']:.1%})"
    if len(nodes) > MAX_GANTT_ROWS:
        regions: dict[str, list[str]] = {}
        for n in nodes:
            regions.setdefault(region_of(n), []).append(n)
        nodes = []
        for members in regions.values():
            ranked = sorted(members, key=lambda n: (per_node[n]["compute_frac"], members.index(n)))
            nodes += list(dict.fromkeys([ranked[0], ranked[(len(ranked) - 1) // 2], ranked[-1]]))
        title += f": {len(per_node)} workers, each region's lowest, median and highest CU"
    fig = figure(title)
    for state in STATES:
        fig.add_trace(go.Bar(x=nodes, y=[summary["per_node"][n][f"{state}_frac"] for n in nodes],
                             name=STATE_LABELS[state], marker_color=STATE_COLORS[state],
                             hovertemplate="%{x}: %{y:.1%}<extra>" + STATE_LABELS[state] + "</extra>"))
    fig.update_layout(barmode="stack", yaxis={"title": "fraction of simulated time", "range": [0, 1.0001],
                                              "tickformat": ".0%"})
    return fig


def utilization_by_region(summary: dict) -> go.Figure:
    """Stacked state fractions per region (mean over its nodes) and overall."""
    regions: dict[str, list[str]] = {}
    for n in summary["per_node"]:
        regions.setdefault(region_of(n), []).append(n)
    labels = [f"{r} ({len(ns)})" for r, ns in regions.items()] + ["all workers"]
    fig = figure(f"Time per region by state; overall compute utilization (CU) {summary['utilization']:.1%}")
    for state in STATES:
        ys = [float(np.mean([summary["per_node"][n][f"{state}_frac"] for n in ns])) for ns in regions.values()]
        ys.append(float(summary["state_fractions"][state]))
        fig.add_trace(go.Bar(x=labels, y=ys, name=STATE_LABELS[state], marker_color=STATE_COLORS[state],
                             text=[f"{y:.0%}" if y >= 0.04 else "" for y in ys], textposition="inside",
                             hovertemplate="%{x}: %{y:.1%}<extra>" + STATE_LABELS[state] + "</extra>"))
    fig.update_layout(barmode="stack", yaxis={"title": "fraction of simulated time", "range": [0, 1.0001],
                                              "tickformat": ".0%"})
    return fig
