"""The page of ``locosim bandwidth -o FILE.html``: compute utilization against WAN bandwidth,
one line per method, from the points the search evaluated (``sim.bandwidth.SearchResult``),
with each CU target as a dotted line and each answer (the smallest grid bandwidth reaching
it) as a marker. The search itself is in ``sim.bandwidth``; this module only draws it.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from sim.report.figure import figure
from sim.report.page import Page, grid_table
from sim.report.style import BANDWIDTH_TARGET_COLOR, PALETTE


def bandwidth_figure(results: dict, window: str) -> go.Figure:
    """CU vs WAN bandwidth (log x) per method; ``results``: {method label: SearchResult}."""
    fig = figure(f"Compute utilization vs WAN bandwidth (CU window: {window})", height=480)
    for i, (name, res) in enumerate(results.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = sorted(res.evaluations.items())
        fig.add_trace(go.Scatter(x=[b for b, _ in pts], y=[c for _, c in pts], mode="lines+markers", name=name,
                                 line={"color": color, "width": 2}, marker={"size": 5}, legendgroup=name,
                                 hovertemplate="%{x:.3g} Gbit/s: CU %{y:.1%}<extra>" + html.escape(name) + "</extra>"))
        found = [(t, bw) for t, bw in res.targets.items() if bw is not None]
        if found:
            fig.add_trace(go.Scatter(x=[bw for _, bw in found], y=[t for t, _ in found], mode="markers",
                                     name=f"{name}: answers", legendgroup=name, showlegend=False,
                                     marker={"symbol": "diamond-open", "size": 11, "color": color,
                                             "line": {"width": 2}},
                                     hovertemplate="CU %{y:g} from %{x:.3g} Gbit/s<extra>" + html.escape(name)
                                                   + "</extra>"))
    targets = sorted({t for res in results.values() for t in res.targets})
    for t in targets:
        fig.add_hline(y=t, line={"dash": "dot", "color": BANDWIDTH_TARGET_COLOR, "width": 1},
                      annotation_text=f"CU {t:g}",
                      annotation_position="bottom right")
    fig.update_layout(xaxis={"title": "WAN bandwidth (Gbit/s, every WAN link alike)", "type": "log"},
                      yaxis={"title": "compute utilization (CU)", "range": [0, 1.05], "tickformat": ".0%"})
    return fig


def bandwidth_page(results: dict, window: str, source: str) -> Page:
    """The whole page: the answers as a table (as the command prints it) and the chart."""
    page = Page(f"locosim bandwidth: {source}", kind="bandwidth")
    page.html(f"<h1>Bandwidth each method needs: {html.escape(str(source))}</h1>")
    targets = sorted({t for res in results.values() for t in res.targets})
    rows = [[name, res.rounds] + [(f"{res.targets[t]:.3g}" if res.targets.get(t) is not None else "not reached")
                                  + ("*" if t in res.capped else "") for t in targets]
            for name, res in results.items()]
    page.html(grid_table(["method", "rounds"] + [f"CU {t:g} (Gbit/s)" for t in targets], rows, "bandwidth-table"))
    page.html("<p class='note'>Each cell: the smallest bandwidth of the log grid at which the method's compute "
              "utilization reaches the target; 'not reached': not even at the top of the grid. '*': links the search "
              "does not vary (intra-region) cap the answer.</p>")
    page.figure("bw-cu", bandwidth_figure(results, window), wide=True)
    return page
