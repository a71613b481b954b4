"""The run's network figures: throughput over time per directed WAN link and per region pair,
bytes per link, peak vs mean bandwidth per WAN link against capacity, and a topology picture
(links as wide as their bytes).

Throughput comes from ``sim.engine.replay.replay_rates`` (the run's transfers replayed
through the network model), the same function that gives the summary's peak bandwidth.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from sim.engine.replay import network_rates
from sim.metrics.tables import bytes_in_bins
from sim.report.figure import figure
from sim.report.runs import RunData, run_graph
from sim.report.style import (EVAL_COLOR, FLOOR_COLOR, INTRA_COLOR, MEAN_BW_COLOR, REFERENCE_COLOR, REGION_FILL,
                              SERIES_PALETTE, WAN_COLOR, byte_unit, f32, fmt_bytes, fmt_gbps)
from sim.report.text import cap_gbps


MAX_LINK_BARS = 64  # bytes per link: above this many links, the WAN links and the busiest intra-region ones
THROUGHPUT_BINS = 200  # throughput with more steps than MAX_STEP_POINTS is shown as bin means
MAX_STEP_POINTS = 200  # more steps than this (e.g. ddp's bursts every step) merge into a solid block at
                       # link capacity on screen however low the mean is: show means over time bins


def network_series(run: RunData) -> dict:
    """Throughput (bytes/s step functions) per directed WAN link and per ordered region pair
    (``sim.engine.replay.replay_rates``), the run's end time and each WAN link's peak (Gbit/s)."""
    duration = float(run.summary.get("sim_duration_s") or 0.0)
    net = run.network if run.network is not None else network_rates(run_graph(run), run.events)
    by_link, by_pair = net["links"], net["pairs"]  # (empty when the replay failed: summary's peak_error says why)
    end = max([duration] + [float(t[-1]) for t, _ in list(by_link.values()) + list(by_pair.values())]) or 1.0
    return {"end_s": end, "links": by_link, "pairs": by_pair,
            "peaks_gbps": {l: float(r.max()) * 8 / 1e9 for l, (_, r) in by_link.items()}}


def throughput_xy(t: np.ndarray, r: np.ndarray, end_s: float, n_points: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Plot points (x s, y Gbit/s, drawn as steps) of a rate step function: exact when it
    has at most ``MAX_STEP_POINTS`` steps, else its mean over ``THROUGHPUT_BINS`` equal bins
    (a time average: its area is still the bytes carried)."""
    if n_points <= MAX_STEP_POINTS:
        x = np.r_[t, max(end_s, float(t[-1]))]
        return x, np.r_[r, 0.0] * 8 / 1e9, "exact"
    edges = np.linspace(0.0, end_s, THROUGHPUT_BINS + 1)
    gbps = bytes_in_bins(t, r, edges) * 8 / 1e9 / (edges[1] - edges[0])
    return f32(edges), f32(np.r_[gbps, gbps[-1]]), f"mean over {edges[1] - edges[0]:.3g} s bins"


def throughput_figure(title: str, series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], end_s: float,
                       caps: dict[tuple[str, str], float] | None = None) -> go.Figure:
    fig = figure(title)
    palette = SERIES_PALETTE
    n_points = sum(len(t) for t, _ in series.values())
    how = "exact"
    for i, ((a, b), (t, r)) in enumerate(sorted(series.items())):
        x, y, how = throughput_xy(t, r, end_s, n_points)
        color = palette[i % len(palette)]
        mean = float(np.sum(r[:-1] * np.diff(t))) * 8 / 1e9 / end_s if len(t) > 1 and end_s > 0 else 0.0
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line_shape="hv", name=f"{a}\u2192{b} (mean {mean:.3g})",
                                 legendgroup=f"{a}{b}", line={"width": 1.3, "color": color},
                                 hovertemplate="%{x:.4f} s: %{y:.3g} Gbit/s<extra>" + f"{a}\u2192{b}</extra>"))
        if how != "exact":  # the exact peak, which bin means hide, as its own line
            peak = float(r.max()) * 8 / 1e9
            fig.add_trace(go.Scatter(x=[0.0, end_s], y=[peak, peak], mode="lines", name=f"{a}\u2192{b} peak",
                                     legendgroup=f"{a}{b}", line={"width": 1, "color": color, "dash": "dash"},
                                     hovertemplate=f"peak {peak:.3g} Gbit/s<extra>{a}\u2192{b}</extra>"))
    caps_seen = sorted({c for l, c in (caps or {}).items() if l in series and math.isfinite(c)})
    for c in caps_seen[:3]:
        fig.add_hline(y=c, line={"dash": "dot", "color": REFERENCE_COLOR, "width": 1},
                      annotation_text=f"capacity {c:g} Gbit/s",
                      annotation_position="top left")
    fig.update_layout(xaxis_title="simulated time (s)", yaxis_title=f"Gbit/s ({how})")
    if how != "exact":
        fig.update_layout(title_text=f"{title}: time-averaged ({how}), exact peak dashed")
    return fig


def bytes_per_link(summary: dict) -> go.Figure:
    """Bars of bytes per directed link, WAN links first; above ``MAX_LINK_BARS`` links with
    bytes, every WAN link and the busiest intra-region links up to that many bars."""
    links = sorted(summary["bytes_per_link"], key=lambda l: (l["kind"] != "wan", -l["bytes"], l["link"]))
    links = [l for l in links if l["bytes"] > 0]
    title = "Bytes per directed link (WAN dark, intra-region light)"
    if len(links) > MAX_LINK_BARS:
        wan = [l for l in links if l["kind"] == "wan"]
        shown = wan + [l for l in links if l["kind"] != "wan"][:max(MAX_LINK_BARS - len(wan), 0)]
        title += (f": {len(links) - len(wan):,} intra-region links carried bytes, "
                  f"the {len(shown) - len(wan)} busiest shown")
        links = shown
    fig = figure(title)
    div, unit = byte_unit(max([l["bytes"] for l in links] or [0.0]))
    fig.add_trace(go.Bar(x=[l["link"] for l in links], y=[l["bytes"] / div for l in links], name="bytes",
                         marker_color=[WAN_COLOR if l["kind"] == "wan" else INTRA_COLOR for l in links],
                         text=[fmt_bytes(l["bytes"]) for l in links], textposition="outside", cliponaxis=False,
                         hovertext=[f"{l['kind']}, {cap_gbps(l):g} Gbit/s" for l in links]))
    fig.update_layout(yaxis_title=unit, showlegend=False)
    return fig


def peak_vs_mean(summary: dict, peaks_gbps: dict[tuple[str, str], float]) -> go.Figure:
    wan = [l for l in summary["bytes_per_link"] if l["kind"] == "wan"]
    names = [l["link"] for l in wan]
    peak = [peaks_gbps.get((l["src"], l["dst"]), 0.0) for l in wan]
    mean = [l["bytes"] * 8 / 1e9 / summary["sim_duration_s"] if summary["sim_duration_s"] > 0 else 0.0 for l in wan]
    cap = [cap_gbps(l) for l in wan]
    values = [v for v in peak + mean + cap if v > 0 and math.isfinite(v)]
    log = bool(values) and max(values) > 20 * min(values)  # a mean far below the peak stays visible
    fig = figure("WAN bandwidth used: peak and mean over the run, against capacity" + (" (log scale)" if log else ""))
    fig.add_trace(go.Bar(x=names, y=peak, name="peak", marker_color=EVAL_COLOR, text=[fmt_gbps(v) for v in peak],
                         textposition="outside", cliponaxis=False))
    fig.add_trace(go.Bar(x=names, y=mean, name="mean", marker_color=MEAN_BW_COLOR, text=[fmt_gbps(v) for v in mean],
                         textposition="outside", cliponaxis=False))
    fig.add_trace(go.Scatter(x=names, y=cap, name="capacity",
                             mode="markers", marker={"symbol": "line-ew-open", "size": 30, "color": FLOOR_COLOR,
                                                     "line": {"width": 2}}))
    ticks = [m * 10.0 ** k for k in range(-6, 7) for m in (1, 2, 5)
             if values and min(values) / 2 <= m * 10.0 ** k <= max(values) * 2]
    fig.update_layout(barmode="group", yaxis={"title": "Gbit/s", **({"type": "log", "tickvals": ticks,
                                                                      "ticktext": [f"{v:g}" for v in ticks]}
                                                                     if log else {})})
    return fig


def topology_picture(run: RunData) -> go.Figure:
    """Regions as circles (sized by workers) on a ring; WAN links as lines as wide as the
    bytes they carried (both directions)."""
    topo = run.scenario["topology"]
    regions = [r["name"] for r in topo["regions"]]
    nodes = {r["name"]: r["nodes"] for r in topo["regions"]}
    n = len(regions)
    pos = {r: (math.cos(math.pi / 2 - 2 * math.pi * i / n), math.sin(math.pi / 2 - 2 * math.pi * i / n))
           if n > 1 else (0.0, 0.0) for i, r in enumerate(regions)}
    by_pair: dict[frozenset, float] = {}
    for l in run.summary.get("bytes_per_link", []):
        if l["kind"] == "wan":
            key = frozenset((l["src"], l["dst"]))
            by_pair[key] = by_pair.get(key, 0.0) + l["bytes"]
    top = max(by_pair.values(), default=0.0) or 1.0
    fig = figure("Topology: regions and WAN links (width = bytes carried)", height=420)
    mids_x, mids_y, mids_t = [], [], []
    for link in topo.get("links", []):
        a, b = link["a"], link["b"]
        nbytes = by_pair.get(frozenset((a, b)), 0.0)
        (x0, y0), (x1, y1) = pos[a], pos[b]
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="skip",
                                 line={"width": 1.5 + 16 * nbytes / top, "color": WAN_COLOR,
                                       "dash": "solid" if nbytes > 0 else "dot"}))
        mids_x.append((x0 + x1) / 2)
        mids_y.append((y0 + y1) / 2)
        mids_t.append(f"{a}\u2013{b}: {fmt_bytes(nbytes)}<br>{link['bandwidth_gbps']:g} Gbit/s, "
                      f"{link['latency_s'] * 1e3:g} ms")
    if mids_x:  # labels on a white box beside the link's middle, so neither the line nor another label hides them
        fig.add_trace(go.Scatter(x=mids_x, y=mids_y, mode="markers", hovertext=mids_t, hoverinfo="text",
                                 name="WAN link", marker={"size": 6, "color": WAN_COLOR}, showlegend=False))
        for x, y, t in zip(mids_x, mids_y, mids_t):
            fig.add_annotation(x=x, y=y, text=t.split("<br>")[0].split(": ")[1], showarrow=False,
                               bgcolor="rgba(255,255,255,0.9)", bordercolor=WAN_COLOR, borderwidth=1, borderpad=2,
                               xshift=0 if abs(x) < 1e-9 else (40 if x > 0 else -40), yshift=14)
    big = max(nodes.values())
    fig.add_trace(go.Scatter(x=[pos[r][0] for r in regions], y=[pos[r][1] for r in regions], mode="markers+text",
                             text=[f"<b>{r}</b><br>{nodes[r]} workers" for r in regions], textposition="middle center",
                             marker={"size": [34 + 40 * math.sqrt(nodes[r] / big) for r in regions],
                                     "color": REGION_FILL, "line": {"color": EVAL_COLOR, "width": 2}},
                             hovertext=[f"{r}: {nodes[r]} workers" for r in regions], hoverinfo="text",
                             name="region", showlegend=False))
    axis = {"visible": False, "range": [-1.5, 1.5]}
    fig.update_layout(xaxis=axis, yaxis={**axis, "scaleanchor": "x"}, plot_bgcolor="white")
    return fig
