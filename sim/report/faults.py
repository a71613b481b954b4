"""The run's faults figure: failure, churn, slow-period and link spans and parameter fetches
on each node's or link's row, and dropped contributions as markers (left out of the page
when the run had none).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sim.report.figure import figure
from sim.report.style import DROPPED_COLOR, DROPPED_SYMBOLS, FAULT_STYLE, UNKNOWN_COLOR, fmt_bytes


def faults_figure(events: pd.DataFrame) -> go.Figure | None:
    """Every fault span (failures, churn, slow periods, link outages and degradations) and
    recovery fetch as a bar on its node's or link's row, and every dropped contribution as a
    marker at the time it was dropped; None when the run had none."""
    ev = events[events["kind"].isin(["fault", "recovery", "dropped"])]
    if not len(ev):
        return None
    rows = sorted(ev["node"].astype(str).unique(), key=lambda r: ("<->" in r, r))  # nodes, then links
    fig = figure("Faults, parameter fetches and dropped contributions", height=int(min(900, 160 + 26 * len(rows))))
    spans = ev[ev["kind"] != "dropped"].copy()
    spans["tag"] = np.where(spans["kind"] == "recovery", "recovery", spans["tag"].astype(str))
    for tag, d in spans.groupby("tag", sort=False):
        label, colour = FAULT_STYLE.get(tag, (tag, UNKNOWN_COLOR))
        if tag == "recovery":
            note = [f"{fmt_bytes(b)} from {src}" for b, src in zip(d["payload_bytes"], d["src"])]
        else:  # slow periods and degraded links carry their multiplier
            note = [f"x{f:g}" if pd.notna(f) else "" for f in d["factor"]]
        fig.add_trace(go.Bar(y=d["node"].astype(str), x=d["duration_s"], base=d["start_s"], orientation="h", name=label,
                             marker={"color": colour, "line": {"width": 0}}, opacity=0.85, customdata=note,
                             hovertemplate=f"%{{y}}: %{{base:.3g}} s + %{{x:.3g}} s %{{customdata}}<extra>{label}</extra>"))
    dropped = ev[ev["kind"] == "dropped"]
    for reason, d in dropped.groupby(dropped["tag"].astype(str), sort=False):
        fig.add_trace(go.Scatter(x=d["start_s"], y=d["node"].astype(str), mode="markers",
                                 name=f"contribution dropped ({reason})", customdata=d["round"],
                                 marker={"symbol": DROPPED_SYMBOLS.get(reason, "x"), "size": 9, "color": DROPPED_COLOR},
                                 hovertemplate="%{y}: dropped at %{x:.3g} s, round %{customdata}<extra></extra>"))
    fig.update_layout(barmode="overlay", xaxis_title="simulated time (s)",
                      yaxis={"categoryorder": "array", "categoryarray": rows[::-1], "type": "category"})
    return fig
