"""The run dashboard: one self-contained HTML page per run (plotly.js embedded, works offline).

Drawn from the run's files only, so ``render_run_dir`` can redraw any run directory:

* header: scenario, algorithm and its knobs (whatever the method: read from the manifest),
  topology, seed, simulated and wall time, device, numerics (engine, precision, kernels,
  memory estimate); a summary table (CU, time to the target eval loss, bytes, bytes per
  worker per round, peak WAN bandwidth, faults);
* timeline: a Gantt of every worker's states (compute, comm-blocked, straggler-wait,
  down); above ``MAX_GANTT_ROWS`` workers, one row per region (each slice coloured by the
  state most of its workers were in) and a selector that adds one worker's row;
* utilization per node and per region (stacked by state) and overall;
* network: throughput over time per directed WAN link and per region pair, bytes per
  link, peak vs mean bandwidth per WAN link, a topology picture (links as wide as their bytes);
* learning: train and eval loss vs simulated time, eval loss vs tokens and vs bytes, the
  synthetic language's loss floor, and method diagnostics (NoLoCo spread, eager DiLoCo
  drift: metrics rows of any kind other than train and eval) when a run has them, and each
  replica's own eval loss with ``run.eval_replicas``;
* faults (when the run had any): failure, churn, slow-period and link spans and parameter
  fetches on each node's or link's row, dropped contributions as markers.

Throughput comes from ``sim.metrics.tables.replay_rates`` (the run's transfers replayed
through the network model), the same function that gives the summary's peak bandwidth.
This package is the only place that imports plotly.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sim.engine.replay import network_rates
from sim.metrics.tables import bytes_in_bins, time_to_loss
from sim.report.page import (BYTES_DEFINITION, STATE_COLORS, STATE_LABELS, Page, byte_unit, export_pngs, fmt_bytes,
                             fmt_gbps, fmt_s, grid_table, kv_table)
from sim.report.asynchrony import async_figures
from sim.report.runs import RunData, algorithm_label, load_run, run_graph

STATES = list(STATE_COLORS)
MAX_GANTT_ROWS = 64  # above this many workers the timeline shows one row per region
MAX_GANTT_BARS = 20_000  # above this many spans, each row is cut into time slices
MAX_SPANS_PER_ROW = 400  # above this many spans in a row (a long run) the row is cut into slices too:
                         # a ~1,300 px chart cannot show more, and hundreds of rounds blur into one colour
MAX_STEP_CURVE_POINTS = 400  # steps per worker above MAX_GANTT_ROWS workers: longer curves sampled on a grid
MAX_LINK_BARS = 64  # bytes per link: above this many links, the WAN links and the busiest intra-region ones
GANTT_SLICES = 200  # slices per row when cut; each drawn as its states' shares of the slice
THROUGHPUT_BINS = 200  # throughput with more steps than MAX_STEP_POINTS is shown as bin means
MAX_STEP_POINTS = 200  # more steps than this (e.g. ddp's bursts every step) merge into a solid block at
                       # link capacity on screen however low the mean is: show means over time bins
def diagnostic_labels(manifest: dict) -> dict[str, tuple[str, str]]:
    """Name -> (label, axis title with unit) of each method diagnostic, as the method said
    (``Algorithm.diagnostic_labels``, recorded in the manifest), else as a shipped method labels
    it (a run written before labels were recorded); a name nobody labelled is shown as is."""
    from sim.algorithms import METHODS, method_class

    labels = {k: v for ref in METHODS.values() for k, v in method_class(ref).diagnostic_labels.items()}
    labels.update(manifest.get("diagnostic_labels") or {})
    return {k: (str(v[0]), str(v[1])) for k, v in labels.items()}


# ---------------------------------------------------------------------- small helpers
def region_of(node: str) -> str:
    """Region of a worker node (``region/i``) or switch (``region``), as build_graph names them."""
    return node.rsplit("/", 1)[0] if "/" in node else node


def _fig(title: str, height: int = 380, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title={"text": title, "font": {"size": 15}}, height=height,
                      margin={"t": 60, "b": 50, "l": 60, "r": 20}, legend={"orientation": "h", "y": -0.18}, **layout)
    return fig


def loss_range(losses, floor: float | None) -> list[float] | None:
    """A loss axis range over ``losses`` that also shows the floor, unless the floor lies so far
    below that the curves would be squashed into the top third (then the floor is left out)."""
    vals = [float(v) for v in losses if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    if floor is not None and floor >= lo - 0.5 * (hi - lo):
        lo = min(lo, floor)
    pad = 0.05 * (hi - lo or 1.0)
    return [lo - pad, hi + pad]


def _floor_line(fig: go.Figure, floor: float | None, losses=()) -> None:
    """The loss floor as a dashed line (named in the title when it lies below the axis range)."""
    if floor is None:
        return
    rng = loss_range(losses, floor)
    if rng is not None:
        fig.update_layout(yaxis_range=rng)
    if rng is None or floor >= rng[0]:
        fig.add_hline(y=floor, line={"dash": "dash", "color": "black", "width": 1},
                      annotation_text=f"loss floor {floor:.3f}", annotation_position="top right")
    else:
        fig.update_layout(title_text=f"{fig.layout.title.text} (loss floor {floor:.3f}, below this range)")


# ---------------------------------------------------------------------- timeline (Gantt)
def _f32(values) -> np.ndarray:
    """Plot coordinates as float32: plotly writes arrays as binary (4 bytes a value, not 8), and
    7 significant digits are far below a pixel of any axis here."""
    return np.asarray(values, dtype=np.float32)


def _occupied_in_bins(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Seconds that disjoint spans (sorted by start) cover in each bin between ``edges``."""
    dur = ends - starts
    before = np.concatenate([[0.0], np.cumsum(dur)])  # time in spans [0, i)
    i = np.searchsorted(starts, edges, side="right") - 1
    j = np.maximum(i, 0)
    occupied = np.where(i >= 0, before[j] + np.clip(edges - starts[j], 0, dur[j]), 0.0)
    return np.diff(occupied)


def _state_times_by_node(st: pd.DataFrame, nodes: list[str], edges: np.ndarray) -> dict[str, np.ndarray]:
    """Seconds each state occupies in each bin, per node ({node: array [n_states, n_bins]}),
    for every node at once: one sort of all spans by (node, state,
    start) in numpy, then the bins of each (node, state) group from its slice (no per-node
    pandas filtering: linear in spans, not in nodes x spans)."""
    out = {n: np.zeros((len(STATES), len(edges) - 1)) for n in nodes}
    if st.empty:
        return out
    node_idx = {n: i for i, n in enumerate(nodes)}
    state_idx = {s: k for k, s in enumerate(STATES)}
    ni = st["node"].map(node_idx).to_numpy()
    known = ~pd.isna(ni)
    si = st["state"].map(state_idx).to_numpy()
    known &= ~pd.isna(si)
    ni, si = ni[known].astype(np.int64), si[known].astype(np.int64)
    starts, ends = st["start_s"].to_numpy(float)[known], st["end_s"].to_numpy(float)[known]
    order = np.lexsort((starts, si, ni))
    ni, si, starts, ends = ni[order], si[order], starts[order], ends[order]
    key = ni * len(STATES) + si
    cut = np.flatnonzero(np.diff(key)) + 1
    for a, b in zip(np.concatenate([[0], cut]), np.concatenate([cut, [len(key)]])):
        out[nodes[ni[a]]][si[a]] = _occupied_in_bins(starts[a:b], ends[a:b], edges)
    return out


def _share_bars(times: np.ndarray, edges: np.ndarray) -> list[tuple[float, float, int, str]]:
    """Bars that draw each time slice as its states' shares of the slice (compute first), so a
    slice where workers computed 21% of the time shows 21% green, not the majority colour;
    consecutive slices wholly in one state are merged. [(start, end, state, hover note)]"""
    bars: list[tuple[float, float, int, str]] = []
    total = times.sum(axis=0)
    for b in range(times.shape[1]):
        if total[b] <= 0:
            continue
        frac = times[:, b] / total[b]
        a, width = edges[b], edges[b + 1] - edges[b]
        pure = np.flatnonzero(frac > 0.995)
        if len(pure) and bars and bars[-1][2] == pure[0] and bars[-1][1] == a and bars[-1][3] == "":
            bars[-1] = (bars[-1][0], edges[b + 1], int(pure[0]), "")
            continue
        if len(pure):
            bars.append((a, edges[b + 1], int(pure[0]), ""))
            continue
        note = ", ".join(f"{STATE_LABELS[x]} {f:.0%}" for x, f in zip(STATES, frac) if f > 0.005)
        note = f"slice {a:.4g}-{edges[b + 1]:.4g} s: {note}"
        for k in np.flatnonzero(frac > 0):
            bars.append((a, a + frac[k] * width, int(k), note))
            a += frac[k] * width
    return bars


def _segments_from_bins(times: np.ndarray, edges: np.ndarray) -> list[tuple[float, float, int, np.ndarray]]:
    """Merge consecutive bins whose majority state is the same: [(start, end, state, fractions)]."""
    total = times.sum(axis=0)
    major = np.argmax(times, axis=0)
    segs: list[tuple[float, float, int, np.ndarray]] = []
    for b in range(times.shape[1]):
        if total[b] <= 0:
            continue
        if segs and segs[-1][2] == major[b] and segs[-1][1] == edges[b]:
            s0, _, st, acc = segs[-1]
            segs[-1] = (s0, edges[b + 1], st, acc + times[:, b])
        else:
            segs.append((edges[b], edges[b + 1], int(major[b]), times[:, b].copy()))
    return [(a, b, st, acc / acc.sum()) for a, b, st, acc in segs]


def _majority_runs(times: np.ndarray, edges: np.ndarray) -> list[list]:
    """``[[start, end, state], ...]`` (times rounded to 6 decimals) of ``_segments_from_bins``,
    found with numpy: runs of consecutive bins with time in them and one majority state (the
    selector's row of one worker; 1,024 of them in a large run)."""
    total = times.sum(axis=0)
    major = np.argmax(times, axis=0)
    b = np.flatnonzero(total > 0)
    if not b.size:
        return []
    # a run starts at a bin whose previous bin had no time or another majority state
    start = np.ones(b.size, dtype=bool)
    start[1:] = (np.diff(b) != 1) | (major[b[1:]] != major[b[:-1]])
    first = b[start]
    last = b[np.r_[np.flatnonzero(start)[1:] - 1, b.size - 1]]
    return [[round(a, 6), round(e, 6), s] for a, e, s in zip(edges[first].tolist(), edges[last + 1].tolist(),
                                                               major[first].tolist())]


def timeline(run: RunData) -> tuple[go.Figure, dict | None]:
    """The Gantt of worker states, and (above MAX_GANTT_ROWS workers) the per-worker
    segments the page's selector can add as a row."""
    st = run.events[run.events["kind"] == "state"][["node", "state", "start_s", "end_s"]].copy()
    st["node"] = st["node"].astype(str)
    st["state"] = st["state"].astype(str)
    nodes = list(run.summary.get("per_node") or dict.fromkeys(st["node"].unique()))
    duration = float(run.summary.get("sim_duration_s") or (st["end_s"].max() if len(st) else 0.0))
    aggregate = len(nodes) > MAX_GANTT_ROWS
    rows: list[str]
    bars: list[tuple[str, float, float, int, str]] = []  # row, start, end, state index, hover note
    note = ""
    selector = None
    per_row = st.groupby("node").size().max() if len(st) else 0
    if not aggregate and len(st) <= MAX_GANTT_BARS and per_row <= MAX_SPANS_PER_ROW:
        rows = nodes
        sidx = {s: i for i, s in enumerate(STATES)}
        for r in st.itertuples(index=False):
            bars.append((r.node, r.start_s, r.end_s, sidx[r.state], ""))
    else:
        n_rows = len({region_of(n) for n in nodes}) if aggregate else len(nodes)
        n_bins = int(min(GANTT_SLICES, max(20, MAX_GANTT_BARS // max(4 * n_rows, 1))))
        edges = np.linspace(0.0, duration, n_bins + 1) if duration > 0 else np.array([0.0, 1.0])
        note = (f" ({len(st):,} spans: each row cut into {n_bins} slices of {edges[1] - edges[0]:.3g} s, each "
                "drawn as its states' shares; hover for them)")
        per_node = _state_times_by_node(st, nodes, edges)
        if aggregate:
            regions: dict[str, list[str]] = {}
            for n in nodes:
                regions.setdefault(region_of(n), []).append(n)
            rows = []
            for reg, members in regions.items():
                label = f"{reg} ({len(members)} workers)"
                rows.append(label)
                for a, b, s, why in _share_bars(sum(per_node[n] for n in members), edges):
                    bars.append((label, a, b, s, why))
            coarse = np.linspace(0.0, edges[-1], min(n_bins, 200) + 1)
            selector = {"rows": rows, "states": STATES, "workers": {}}
            for n, t in _state_times_by_node(st, nodes, coarse).items():
                selector["workers"][n] = _majority_runs(t, coarse)
        else:
            rows = nodes
            for n in nodes:
                for a, b, s, why in _share_bars(per_node[n], edges):
                    bars.append((n, a, b, s, why))
    title = ("Timeline: worker states" if not aggregate else
             f"Timeline: {len(nodes)} workers, one row per region (pick a worker below to add its row)") + note
    fig = _fig(title, height=int(min(900, 140 + 26 * (len(rows) + (1 if aggregate else 0)))))
    df = pd.DataFrame(bars, columns=["row", "start", "end", "state", "note"])
    sliced = bool(note)  # bars of time slices: drawn to a pixel, so float32 (half the page bytes) will do
    for k, state in enumerate(STATES):
        d = df[df["state"] == k]
        x, base, end = d["end"] - d["start"], d["start"], d["end"]
        if sliced:
            x, base, end = _f32(x), _f32(base), np.round(end.to_numpy(float), 6)
        fig.add_trace(go.Bar(
            y=d["row"], x=x, base=base, orientation="h", name=STATE_LABELS[state],
            marker={"color": STATE_COLORS[state], "line": {"width": 0}}, customdata=np.c_[end, d["note"]],
            hovertemplate="%{y}: " + STATE_LABELS[state] + "<br>%{base:.3f} s to %{customdata[0]:.3f} s"
                          "<br>%{customdata[1]}<extra></extra>",
            legendgroup=state, showlegend=True))
    if aggregate:  # empty traces the selector fills with one worker's row
        for state in STATES:
            fig.add_trace(go.Bar(y=[], x=[], base=[], orientation="h", marker={"color": STATE_COLORS[state]},
                                 legendgroup=state, showlegend=False, name=STATE_LABELS[state],
                                 hovertemplate="%{y}: " + STATE_LABELS[state] + "<br>%{base:.3f} s, %{x:.3f} s"
                                               "<extra></extra>"))
    fig.update_layout(barmode="overlay", bargap=0.15, xaxis={"title": "simulated time (s)", "range": [0, duration]},
                      yaxis={"categoryorder": "array", "categoryarray": rows, "autorange": "reversed",
                             "type": "category"})
    return fig, selector


def _selector_html(fig_id: str, selector: dict) -> str:
    """A <select> that adds one worker's row to the aggregated timeline (Plotly.restyle)."""
    # Workers in lock-step share their rows: each distinct row once, each worker its row's index.
    rows: dict[str, int] = {}
    index = {w: rows.setdefault(json.dumps(segs, separators=(",", ":")), len(rows))
             for w, segs in selector["workers"].items()}
    data = ('{"rows":%s,"states":%s,"segments":[%s],"workers":%s}' % (
        json.dumps(selector["rows"]), json.dumps(selector["states"]), ",".join(rows),
        json.dumps(index, separators=(",", ":")))).replace("</", "<\\/")
    return f"""<p class='note'>Show one worker: <select id='{fig_id}-worker'><option value=''>(none)</option>
</select></p><script type='application/json' id='{fig_id}-workers'>{data}</script>
<script>(function(){{
  var sel = document.getElementById('{fig_id}-worker');
  var d = JSON.parse(document.getElementById('{fig_id}-workers').textContent);
  Object.keys(d.workers).forEach(function(w){{ sel.add(new Option(w, w)); }});
  sel.addEventListener('change', function(){{
    var gd = document.getElementById('{fig_id}'), w = sel.value, segs = w ? d.segments[d.workers[w]] : [];
    var xs = [], bs = [], ys = [], idx = [];
    for (var k = 0; k < d.states.length; k++) {{
      var x = [], b = [], y = [];
      segs.forEach(function(s){{ if (s[2] === k) {{ x.push(s[1] - s[0]); b.push(s[0]); y.push(w); }} }});
      xs.push(x); bs.push(b); ys.push(y); idx.push(d.states.length + k);
    }}
    Plotly.restyle(gd, {{x: xs, base: bs, y: ys}}, idx);
    Plotly.relayout(gd, {{'yaxis.categoryarray': w ? d.rows.concat([w]) : d.rows}});
  }});
}})();</script>"""


# ---------------------------------------------------------------------- utilization
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
    fig = _fig(title)
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
    fig = _fig(f"Time per region by state; overall compute utilization (CU) {summary['utilization']:.1%}")
    for state in STATES:
        ys = [float(np.mean([summary["per_node"][n][f"{state}_frac"] for n in ns])) for ns in regions.values()]
        ys.append(float(summary["state_fractions"][state]))
        fig.add_trace(go.Bar(x=labels, y=ys, name=STATE_LABELS[state], marker_color=STATE_COLORS[state],
                             text=[f"{y:.0%}" if y >= 0.04 else "" for y in ys], textposition="inside",
                             hovertemplate="%{x}: %{y:.1%}<extra>" + STATE_LABELS[state] + "</extra>"))
    fig.update_layout(barmode="stack", yaxis={"title": "fraction of simulated time", "range": [0, 1.0001],
                                              "tickformat": ".0%"})
    return fig


# ---------------------------------------------------------------------- network
def network_series(run: RunData) -> dict:
    """Throughput (bytes/s step functions) per directed WAN link and per ordered region pair
    (``tables.replay_rates``), the run's end time and each WAN link's peak (Gbit/s)."""
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
    return _f32(edges), _f32(np.r_[gbps, gbps[-1]]), f"mean over {edges[1] - edges[0]:.3g} s bins"


# Colours of links and region pairs: none is a state colour (page.STATE_COLORS), none a compare-page method colour.
SERIES_PALETTE = ["#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#7b4173"]


def _throughput_figure(title: str, series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], end_s: float,
                       caps: dict[tuple[str, str], float] | None = None) -> go.Figure:
    fig = _fig(title)
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
        fig.add_hline(y=c, line={"dash": "dot", "color": "#888", "width": 1}, annotation_text=f"capacity {c:g} Gbit/s",
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
    fig = _fig(title)
    div, unit = byte_unit(max([l["bytes"] for l in links] or [0.0]))
    fig.add_trace(go.Bar(x=[l["link"] for l in links], y=[l["bytes"] / div for l in links], name="bytes",
                         marker_color=["#6a51a3" if l["kind"] == "wan" else "#bcbddc" for l in links],
                         text=[fmt_bytes(l["bytes"]) for l in links], textposition="outside", cliponaxis=False,
                         hovertext=[f"{l['kind']}, {_cap_gbps(l):g} Gbit/s" for l in links]))
    fig.update_layout(yaxis_title=unit, showlegend=False)
    return fig


def _cap_gbps(link: dict) -> float:
    """A link's capacity from summary.json; an infinitely fast link is written there as null
    (strict JSON has no inf), read back as inf."""
    cap = link.get("cap_gbps", link.get("bandwidth_gbps"))
    return math.inf if cap is None else float(cap)


def peak_vs_mean(summary: dict, peaks_gbps: dict[tuple[str, str], float]) -> go.Figure:
    wan = [l for l in summary["bytes_per_link"] if l["kind"] == "wan"]
    names = [l["link"] for l in wan]
    peak = [peaks_gbps.get((l["src"], l["dst"]), 0.0) for l in wan]
    mean = [l["bytes"] * 8 / 1e9 / summary["sim_duration_s"] if summary["sim_duration_s"] > 0 else 0.0 for l in wan]
    cap = [_cap_gbps(l) for l in wan]
    values = [v for v in peak + mean + cap if v > 0 and math.isfinite(v)]
    log = bool(values) and max(values) > 20 * min(values)  # a mean far below the peak stays visible
    fig = _fig("WAN bandwidth used: peak and mean over the run, against capacity" + (" (log scale)" if log else ""))
    fig.add_trace(go.Bar(x=names, y=peak, name="peak", marker_color="#08519c", text=[fmt_gbps(v) for v in peak],
                         textposition="outside", cliponaxis=False))
    fig.add_trace(go.Bar(x=names, y=mean, name="mean", marker_color="#6baed6", text=[fmt_gbps(v) for v in mean],
                         textposition="outside", cliponaxis=False))
    fig.add_trace(go.Scatter(x=names, y=cap, name="capacity",
                             mode="markers", marker={"symbol": "line-ew-open", "size": 30, "color": "black",
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
    fig = _fig("Topology: regions and WAN links (width = bytes carried)", height=420)
    mids_x, mids_y, mids_t = [], [], []
    for link in topo.get("links", []):
        a, b = link["a"], link["b"]
        nbytes = by_pair.get(frozenset((a, b)), 0.0)
        (x0, y0), (x1, y1) = pos[a], pos[b]
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="skip",
                                 line={"width": 1.5 + 16 * nbytes / top, "color": "#6a51a3",
                                       "dash": "solid" if nbytes > 0 else "dot"}))
        mids_x.append((x0 + x1) / 2)
        mids_y.append((y0 + y1) / 2)
        mids_t.append(f"{a}\u2013{b}: {fmt_bytes(nbytes)}<br>{link['bandwidth_gbps']:g} Gbit/s, "
                      f"{link['latency_s'] * 1e3:g} ms")
    if mids_x:  # labels on a white box beside the link's middle, so neither the line nor another label hides them
        fig.add_trace(go.Scatter(x=mids_x, y=mids_y, mode="markers", hovertext=mids_t, hoverinfo="text",
                                 name="WAN link", marker={"size": 6, "color": "#6a51a3"}, showlegend=False))
        for x, y, t in zip(mids_x, mids_y, mids_t):
            fig.add_annotation(x=x, y=y, text=t.split("<br>")[0].split(": ")[1], showarrow=False,
                               bgcolor="rgba(255,255,255,0.9)", bordercolor="#6a51a3", borderwidth=1, borderpad=2,
                               xshift=0 if abs(x) < 1e-9 else (40 if x > 0 else -40), yshift=14)
    big = max(nodes.values())
    fig.add_trace(go.Scatter(x=[pos[r][0] for r in regions], y=[pos[r][1] for r in regions], mode="markers+text",
                             text=[f"<b>{r}</b><br>{nodes[r]} workers" for r in regions], textposition="middle center",
                             marker={"size": [34 + 40 * math.sqrt(nodes[r] / big) for r in regions],
                                     "color": "#deebf7", "line": {"color": "#08519c", "width": 2}},
                             hovertext=[f"{r}: {nodes[r]} workers" for r in regions], hoverinfo="text",
                             name="region", showlegend=False))
    axis = {"visible": False, "range": [-1.5, 1.5]}
    fig.update_layout(xaxis=axis, yaxis={**axis, "scaleanchor": "x"}, plot_bgcolor="white")
    return fig


# ---------------------------------------------------------------------- learning
def loss_vs_time(metrics: pd.DataFrame, floor: float | None) -> go.Figure:
    fig = _fig("Loss vs simulated time", height=420)
    train = metrics[metrics["kind"] == "train"]
    if len(train):
        per_step = train.groupby("step").agg(time_s=("time_s", "max"), loss=("loss", "mean")).reset_index()
        fig.add_trace(go.Scatter(x=per_step["time_s"], y=per_step["loss"], mode="lines",
                                 name="train loss (mean of workers)", line={"color": "#9ecae1", "width": 1}))
    reps = metrics[metrics["kind"] == "replica_eval"]
    for i, (w, d) in enumerate(reps.groupby("worker")):  # run.eval_replicas: each replica's own parameters
        fig.add_trace(go.Scatter(x=d["time_s"], y=d["loss"], mode="lines", name="eval loss (each replica)",
                                 legendgroup="replica_eval", showlegend=i == 0, hovertext=f"replica {w}",
                                 line={"color": "#fdae6b", "width": 1}))
    ev = _one_eval_per_x(metrics[metrics["kind"] == "eval"], "time_s")
    fig.add_trace(go.Scatter(x=ev["time_s"], y=ev["loss"], mode="lines+markers", name="eval loss (global model)",
                             line={"color": "#08519c", "width": 2}, marker={"size": 5}))
    _floor_line(fig, floor, list(ev["loss"]) + (list(per_step["loss"]) if len(train) else []))
    fig.update_layout(xaxis_title="simulated time (s)", yaxis_title="loss (nats)")
    return fig


def _one_eval_per_x(ev: pd.DataFrame, column: str) -> pd.DataFrame:
    """Evals sorted by ``column``, one per value: of two at one x (a grid eval and the run's closing
    eval at the same time or tokens) the later, so that a curve never ends in a vertical drop."""
    return ev.sort_values([column, "time_s"], kind="stable").drop_duplicates(column, keep="last")


def loss_vs(metrics: pd.DataFrame, column: str, title: str, xlabel: str, floor: float | None) -> go.Figure:
    ev = _one_eval_per_x(metrics[metrics["kind"] == "eval"], column)
    fig = _fig(title)
    x = ev[column]
    if column == "bytes":  # MB / GB, not plotly's SI suffixes ("1B" = a billion)
        div, unit = byte_unit(float(x.max()) if len(x) else 0.0)
        x, xlabel = x / div, f"{xlabel} ({unit})"
    fig.add_trace(go.Scatter(x=x, y=ev["loss"], mode="lines+markers", name="eval loss",
                             line={"color": "#08519c"}, marker={"size": 5}))
    _floor_line(fig, floor, ev["loss"])
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
    fig.update_layout(title={"text": title, "font": {"size": 15}}, height=140 + 230 * len(kinds),
                      margin={"l": 60, "r": 20, "t": 70, "b": 50})
    for a in fig.layout.annotations:  # the panel titles: smaller than the figure's
        a.font = {"size": 12}
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


# ---------------------------------------------------------------------- phases
WARM_UP_SHAPE = "warm-up end"  # the name of the vertical line that marks it on every time axis


def warm_up_end(summary: dict) -> float | None:
    """When warm-up ended (summary.json's ``phases.warm_up.end_s``); None for a run without one."""
    return ((summary.get("phases") or {}).get("warm_up") or {}).get("end_s")


def mark_warm_up(fig: go.Figure, t: float | None, color: str = "#444", label: str = "warm-up ends",
                 **where) -> None:
    """A dashed vertical line (named ``WARM_UP_SHAPE``) where warm-up ends on a time axis."""
    if t is None:
        return
    fig.add_vline(x=t, name=WARM_UP_SHAPE, line={"dash": "dash", "color": color, "width": 1.2},
                  annotation_text=label, annotation_position="top left", annotation_font={"size": 10, "color": color},
                  **where)


PHASE_LABELS = {"warm_up": "warm-up (ddp)", "method": "method"}


def phase_rows(summary: dict) -> list[list[str]]:
    """One row per phase (the whole run first): span, CU, blocked share, bytes, WAN bytes, bytes
    per worker per round, rounds, tokens."""
    s = summary
    phases = s.get("phases") or {}
    whole = {"start_s": 0.0, "end_s": s.get("sim_duration_s"), "sim_duration_s": s.get("sim_duration_s"),
             "utilization": s.get("utilization"), "state_fractions": s.get("state_fractions") or {},
             "bytes_total": s.get("bytes_total"), "wan_bytes": s.get("wan_bytes"),
             "bytes_per_worker_per_round": None, "rounds": None, "tokens": s.get("tokens")}
    out = []
    for name, p in [("whole run", whole)] + [(PHASE_LABELS.get(k, k), v) for k, v in phases.items()]:
        blocked = (p.get("state_fractions") or {}).get("comm_blocked")
        out.append([name, f"{fmt_s(p.get('start_s'))} – {fmt_s(p.get('end_s'))}",
                    f"{p['utilization']:.1%}" if p.get("utilization") is not None else "-",
                    f"{blocked:.1%}" if blocked is not None else "-",
                    fmt_bytes(p.get("bytes_total")), fmt_bytes(p.get("wan_bytes")),
                    fmt_bytes(p.get("bytes_per_worker_per_round")) if p.get("bytes_per_worker_per_round") is not None
                    else "-", str(p["rounds"]) if p.get("rounds") is not None else "-",
                    f"{p.get('tokens') or 0:,}"])
    return out


PHASE_HEADER = ["phase", "simulated time", "CU", "comm-blocked", "bytes on the wire", "WAN bytes",
                "bytes / worker / round", "rounds", "tokens"]


def steps_figure(run: RunData) -> go.Figure | None:
    """Inner steps completed per worker over simulated time (one line per worker; above
    ``MAX_GANTT_ROWS`` workers, each region's slowest and fastest worker): where heterogeneous
    or asynchronous workers drift apart."""
    st = run.events[run.events["kind"] == "state"]
    if not len(st):
        return None
    nodes = list(run.summary.get("per_node") or dict.fromkeys(st["node"].astype(str).unique()))
    steps = run.summary.get("steps_per_worker") or []
    end = float(run.summary.get("sim_duration_s") or st["end_s"].max())
    fig = _fig("Inner steps completed per worker vs simulated time")
    # Each node's spans by start (one stable sort of all of them, not a sort per node); a
    # node's curve is its spans' starts and step counts, then the run's end and its final count.
    names = st["node"].astype(str).to_numpy(dtype=object)
    codes, order_names = pd.factorize(names)  # in order of first appearance, as groupby(sort=False)
    starts = st["start_s"].to_numpy(float)
    step_col = st["step"].to_numpy(dtype=float, na_value=np.nan)
    order = np.lexsort((starts, codes))  # stable: ties in start keep the table's order
    cut = np.searchsorted(codes[order], np.arange(len(order_names) + 1))
    position = {n: i for i, n in enumerate(nodes)}
    rows_of = {n: order[cut[k]:cut[k + 1]] for k, n in enumerate(order_names)}
    finals = {}
    for n, rows in rows_of.items():
        i = position.get(n)
        finals[n] = float(steps[i]) if i is not None and i < len(steps) else float(np.nanmax(step_col[rows]))
    shown = list(rows_of)
    if len(shown) > MAX_GANTT_ROWS:
        keep = []
        by_region: dict[str, list[str]] = {}
        for n in shown:
            by_region.setdefault(region_of(n), []).append(n)
        for members in by_region.values():
            members = sorted(members, key=lambda n: finals[n])
            keep += [members[0], members[-1]] if len(members) > 1 else members
        shown = keep
        fig.update_layout(title_text=fig.layout.title.text + " (each region's slowest and fastest worker)")
    curves = {n: (np.r_[starts[rows_of[n]], end], np.r_[step_col[rows_of[n]], finals[n]]) for n in shown}
    for n in shown:
        x, y = curves[n]
        if len(rows_of) > MAX_GANTT_ROWS:  # 16 lines of a large run: sampled on a grid when long, float32
            if len(x) > MAX_STEP_CURVE_POINTS:
                grid = np.linspace(float(x[0]), float(x[-1]), MAX_STEP_CURVE_POINTS)
                y = y[np.searchsorted(x, grid, side="right") - 1]  # steps completed at each grid time
                x = grid
            x, y = _f32(x), _f32(y)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line={"shape": "hv", "width": 1.5}, name=n,
                                 hovertemplate=n + ": %{y:.0f} steps at %{x:.3f} s<extra></extra>"))
    fig.update_layout(xaxis={"title": "simulated time (s)", "range": [0, end]},
                      yaxis={"title": "inner steps completed", "rangemode": "tozero"})
    return fig


# ---------------------------------------------------------------------- faults
FAULT_STYLE = {  # tag -> (legend label, colour)
    "failure": ("node down (failure)", "#d62728"), "churn": ("node absent (churn)", "#9467bd"),
    "slow_period": ("slow period", "#ff7f0e"), "link_outage": ("link outage", "#8c564b"),
    "link_degraded": ("link degraded", "#e377c2"), "recovery": ("parameter fetch from a peer", "#17becf"),
}
DROPPED_SYMBOLS = {"late": "x", "down": "circle-x", "rejoined": "diamond-x"}


def faults_figure(events: pd.DataFrame) -> go.Figure | None:
    """Every fault span (failures, churn, slow periods, link outages and degradations) and
    recovery fetch as a bar on its node's or link's row, and every dropped contribution as a
    marker at the time it was dropped; None when the run had none."""
    ev = events[events["kind"].isin(["fault", "recovery", "dropped"])]
    if not len(ev):
        return None
    rows = sorted(ev["node"].astype(str).unique(), key=lambda r: ("<->" in r, r))  # nodes, then links
    fig = _fig("Faults, parameter fetches and dropped contributions", height=int(min(900, 160 + 26 * len(rows))))
    spans = ev[ev["kind"] != "dropped"].copy()
    spans["tag"] = np.where(spans["kind"] == "recovery", "recovery", spans["tag"].astype(str))
    for tag, d in spans.groupby("tag", sort=False):
        label, colour = FAULT_STYLE.get(tag, (tag, "#7f7f7f"))
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
                                 marker={"symbol": DROPPED_SYMBOLS.get(reason, "x"), "size": 9, "color": "#111111"},
                                 hovertemplate="%{y}: dropped at %{x:.3g} s, round %{customdata}<extra></extra>"))
    fig.update_layout(barmode="overlay", xaxis_title="simulated time (s)",
                      yaxis={"categoryorder": "array", "categoryarray": rows[::-1], "type": "category"})
    return fig


def faults_text(faults: dict | None) -> str:
    if not faults or not (faults.get("faults") or faults.get("dropped_contributions") or faults.get("recoveries")):
        return "none"
    kinds = ", ".join(f"{n} {FAULT_STYLE.get(k, (k,))[0]}" for k, n in sorted(faults["faults"].items()))
    dropped = sum(faults.get("dropped_contributions", {}).values())
    return (f"{kinds or 'no fault spans'}; {dropped} contributions dropped; {faults.get('recoveries', 0)} parameter "
            f"fetches ({fmt_bytes(faults.get('recovery_bytes'))}, {fmt_s(faults.get('recovery_s'))} in all)")


# ---------------------------------------------------------------------- header and summary
def topology_text(topo: dict) -> str:
    regs = ", ".join(f"{r['name']} {r['nodes']}" + (f" x{r['step_time_multiplier']:g} step time"
                                                     if r.get("step_time_multiplier", 1) != 1 else "")
                     + (f" {r['gpu']}" if r.get("gpu") else "") for r in topo["regions"])
    n = sum(r["nodes"] for r in topo["regions"])
    wan = "; ".join(f"{l['a']}\u2013{l['b']} {l['bandwidth_gbps']:g} Gbit/s {l['latency_s'] * 1e3:g} ms"
                    + (" (time series)" if l.get("bandwidth_csv") else "")
                    + (f" ({len(l['outages'])} outages)" if l.get("outages") else "") for l in topo.get("links", []))
    intra = topo.get("intra_region") or {}
    return (f"{n} workers in {len(topo['regions'])} regions ({regs}); WAN: {wan or 'none'}; intra-region "
            f"{intra.get('bandwidth_gbps', '?'):g} Gbit/s {intra.get('latency_s', 0) * 1e3:g} ms")


def section_text(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def model_used(sc: dict) -> dict:
    """The model section with the vocabulary it actually used: ``vocab_size`` left unset is the
    data's (``data.vocab_size``), and said so."""
    model = dict(sc.get("model") or {})
    if "vocab_size" in model and model["vocab_size"] is None:
        vocab = (sc.get("data") or {}).get("vocab_size")
        model["vocab_size"] = f"{vocab} (the data's)" if vocab is not None else "the data's"
    return model


def target_for(summary: dict) -> float | None:
    return summary.get("target_eval_loss")


def summary_rows(run: RunData) -> list[tuple[str, object]]:
    s = run.summary
    target = target_for(s)
    if target is None:
        ttt = "no target set (run.target_eval_loss)"
    else:
        t = time_to_loss(run.metrics, target)
        ttt = f"{fmt_s(t)} (target {target:g})" if t is not None else f"not reached (target {target:g})"
    wan = [l for l in s.get("bytes_per_link", []) if l["kind"] == "wan"]
    peak = max(wan, key=lambda l: l.get("peak_gbps", 0.0), default=None)
    rounds = s.get("rounds") or 0
    bpwr = s.get("bytes_per_worker_per_round",
                  s["bytes_total"] / (s["workers"] * rounds) if rounds else None)
    floor = s.get("loss_floor")
    final = s.get("final_eval_loss")
    return [
        ("compute utilization (CU)", f"{s['utilization']:.1%}"),
        ("time to target eval loss", ttt),
        ("final eval loss / floor / gap", f"{final:.4f} / {floor:.4f} / {final - floor:.4f}"
         if final is not None and floor is not None else (f"{final:.4f}" if final is not None else "-")),
        ("bytes on the wire (all transfers) / over WAN links", f"{fmt_bytes(s['bytes_total'])} / "
                                                               f"{fmt_bytes(s.get('wan_bytes'))}"),
        ("bytes per worker per round (one round of the method, warm-up left out)", fmt_bytes(bpwr)),
        ("payload per sync", f"{fmt_bytes(s.get('payload_bytes_per_sync'))} ({s.get('wire_format', '?')})"),
        ("peak WAN bandwidth used", f"{fmt_gbps(peak.get('peak_gbps'))} on {peak['link']} "
                                    f"(capacity {_cap_gbps(peak):g}, "
                                    f"mean {fmt_gbps(peak.get('mean_gbps'))})" if peak else "no WAN links"),
        ("rounds / tokens", f"{rounds} / {s.get('tokens', 0):,}"),
        ("faults", faults_text(s.get("faults"))),
    ]


def numerics_text(num: dict | None) -> str:
    """Replica engine, precision, kernels and the memory estimate of a run (timing-only: none)."""
    if not num:
        return "none (timing only)"
    compiled = " (compiled)" if num.get("compiled") else ""
    text = (f"{num.get('engine', '?')} engine{compiled}, {num.get('precision', 'fp32')}, "
            f"{num.get('kernels', 'auto')} kernels, {num.get('replica_steps', 0):,} replica-steps in "
            f"{num.get('batched_calls', 0):,} batched calls")
    mem = num.get("memory_estimate")
    if mem:
        text += (f"; memory estimate {mem['bytes_per_replica'] / 1e6:.3g} MB per replica, "
                 f"{mem['total_bytes'] / 1e6:.3g} MB in all")
    return text


def status_text(manifest: dict, summary: dict | None = None) -> str:
    """A run's status with what ended it when it did not simply complete: where it diverged
    (step, simulated time, which value), why it ended early, or its error."""
    summary = summary or {}
    status = str(manifest.get("status"))
    div = manifest.get("diverged") or summary.get("diverged")
    early = manifest.get("ended_early") or summary.get("ended_early")
    if div:
        return f"{status}: {div.get('reason')}"
    if early:
        return f"{status}, ended early at {fmt_s(summary.get('sim_duration_s'))} simulated: {early}"
    if manifest.get("error"):
        return f"{status}: {manifest['error']}"
    return status


def header_rows(run: RunData) -> list[tuple[str, object]]:
    m, s, sc = run.manifest, run.summary, run.scenario
    wall = m.get("wall_s") or s.get("wall_s")
    return [
        ("status", status_text(m, s)),
        ("algorithm", algorithm_label(sc["algorithm"])),
        ("topology", topology_text(sc["topology"])),
        *([("timing proxy (step times, payloads)", section_text(sc["timing"]))] if sc.get("timing") else []),
        *([("model", f"{section_text(model_used(sc))} ({s.get('n_params', 0):,} parameters)"),
           ("data", section_text(sc["data"]))] if sc.get("numerics", True) else []),
        ("inner optimizer", section_text(sc.get("optimizer", {}))),
        ("seed", m.get("seed")),
        ("simulated duration", fmt_s(s.get("sim_duration_s"))),
        ("wall time", fmt_s(wall)),
        ("device", m.get("device")),
        ("numerics", numerics_text(s.get("numerics"))),
        ("run", f"{m.get('started_at', '?')}, git {str(m.get('git_revision') or '?')[:10]}, "
                f"locosim {(m.get('versions') or {}).get('locosim', '?')}"),
    ]


# ---------------------------------------------------------------------- the page
def run_figures(run: RunData) -> tuple[dict[str, tuple[go.Figure, bool]], dict | None]:
    """Every figure of a run's dashboard by div id (figure, wide?), in page order, plus the
    timeline selector's data (None when every worker has its own row)."""
    s = run.summary
    floor = s.get("loss_floor")
    net = network_series(run)
    caps = {(l["src"], l["dst"]): _cap_gbps(l) for l in s["bytes_per_link"]}
    wan = {(l["src"], l["dst"]) for l in s["bytes_per_link"] if l["kind"] == "wan"}
    figs: dict[str, tuple[go.Figure, bool]] = {}
    gantt, selector = timeline(run)
    figs["fig-timeline"] = (gantt, True)
    figs["fig-util-node"] = (utilization_by_node(s), False)
    figs["fig-util-region"] = (utilization_by_region(s), False)
    wan_series = {l: v for l, v in net["links"].items() if l in wan}
    if wan_series:
        figs["fig-throughput-link"] = (_throughput_figure("Throughput per directed WAN link", wan_series,
                                                          net["end_s"], caps), False)
    if net["pairs"]:
        figs["fig-throughput-pair"] = (_throughput_figure("Throughput per region pair (source \u2192 destination)",
                                                          net["pairs"], net["end_s"]), False)
    figs["fig-bytes-link"] = (bytes_per_link(s), False)
    if wan:
        figs["fig-bandwidth-peak"] = (peak_vs_mean(s, net["peaks_gbps"]), False)
    figs["fig-topology"] = (topology_picture(run), False)
    if len(run.metrics) and (run.metrics["kind"] == "eval").any():  # a timing-only run has no losses
        figs["fig-loss-time"] = (loss_vs_time(run.metrics, floor), True)
        figs["fig-loss-tokens"] = (loss_vs(run.metrics, "tokens", "Eval loss vs tokens", "tokens (all workers)",
                                           floor), False)
        figs["fig-loss-bytes"] = (loss_vs(run.metrics, "bytes", "Eval loss vs bytes on the wire",
                                          "bytes sent so far, all transfers", floor), False)
    diag = diagnostics(run.metrics, diagnostic_labels(run.manifest)) if len(run.metrics) else None
    if diag is not None:
        figs["fig-diagnostics"] = (diag, True)
    faults = faults_figure(run.events)
    if faults is not None:
        figs["fig-faults"] = (faults, True)
    steps = steps_figure(run)
    if steps is not None:
        figs["fig-steps"] = (steps, False)
    figs.update(async_figures(run.metrics, s))  # methods with servers: staleness, rounds, busy servers
    t_w = warm_up_end(s)
    for fig_id in TIME_AXIS_FIGURES:
        if fig_id in figs:
            fig = figs[fig_id][0]
            mark_warm_up(fig, t_w, **({"row": "all", "col": 1} if fig_id == "fig-diagnostics" else {}))
    return figs, selector


# Figures whose x axis is simulated time: each marks where warm-up ends.
TIME_AXIS_FIGURES = ("fig-timeline", "fig-throughput-link", "fig-throughput-pair", "fig-loss-time",
                     "fig-diagnostics", "fig-faults", "fig-steps", "fig-rounds")


SECTIONS = [
    ("Timeline", ["fig-timeline", "fig-steps"]),
    ("Utilization", ["fig-util-node", "fig-util-region"]),
    ("Network", ["fig-throughput-link", "fig-throughput-pair", "fig-bytes-link", "fig-bandwidth-peak",
                 "fig-topology"]),
    ("Learning", ["fig-loss-time", "fig-loss-tokens", "fig-loss-bytes", "fig-diagnostics"]),
    ("Faults", ["fig-faults"]),
    ("Asynchrony", ["fig-staleness", "fig-rounds", "fig-servers"]),
]
OPTIONAL_SECTIONS = {"Faults", "Asynchrony"}  # left out of the page when the run has none of their figures


def build_dashboard(run: RunData) -> Page:
    figs, selector = run_figures(run)
    s = run.summary
    page = Page(f"locosim: {s['name']}", kind="dashboard")
    desc = run.scenario.get("description") or ""
    page.html(f"<h1>{html.escape(s['name'])}</h1>" + (f"<p class='desc'>{html.escape(desc)}</p>" if desc else ""))
    page.html("<div class='cols'><div>" + kv_table(header_rows(run)).replace("class='kv'", "class='kv' id='header'")
              + "</div><div>" + kv_table(summary_rows(run)).replace("class='kv'", "class='kv' id='summary-table'")
              + "</div></div>")
    page.html("<h2>Phases</h2><p class='note'>Warm-up: the ddp steps an outer method starts with "
              "(algorithm.warm_start_steps); it ends when its last all-reduce completes, marked on every time axis. "
              "Bytes per worker per round: what one round moves per worker (a warm-up round is one ddp step).</p>"
              + grid_table(PHASE_HEADER, phase_rows(s), "phases-table"))
    for title, ids in SECTIONS:
        present = [i for i in ids if i in figs]
        if not present and title in OPTIONAL_SECTIONS:
            continue
        page.html(f"<h2>{title}</h2>")
        if title == "Learning" and "fig-loss-time" not in figs:
            page.html("<p class='note'>No losses: a timing-only run (no numerics).</p>")
        if title == "Network":
            page.html(f"<p class='note'>{BYTES_DEFINITION}</p>")
        if title == "Network" and "fig-throughput-link" not in figs:
            page.html("<p class='note'>No WAN traffic in this run (one region, or nothing crossed a WAN link).</p>")
        page.html("<div class='cols'>")
        for i in present:
            fig, wide = figs[i]
            page.figure(i, fig, wide=wide)
            if i == "fig-timeline" and selector is not None:
                page.html(f"<div class='wide'>{_selector_html(i, selector)}</div>")
        page.html("</div>")
    page.html("<p class='note'>Throughput: the run's transfers replayed through the same flow-level network "
              "model (sim.metrics.tables.replay_rates); long runs are shown as means over equal time bins.</p>")
    page.data("locosim-summary", page_summary(s))
    return page


PAGE_SUMMARY_OMITS = ("per_node", "step_time_s", "steps_per_worker", "bytes_sent_per_node", "bytes_received_per_node")


def page_summary(summary: dict) -> dict:
    """The summary a dashboard embeds: summary.json itself up to ``MAX_GANTT_ROWS`` workers;
    above, without its per-worker maps (``PAGE_SUMMARY_OMITS``) and with only the WAN links of
    ``bytes_per_link``, which at 1,024 workers are most of a megabyte (summary.json beside the
    page keeps them); ``omitted`` lists what was left out."""
    if len(summary.get("per_node") or ()) <= MAX_GANTT_ROWS:
        return summary
    out = {k: v for k, v in summary.items() if k not in PAGE_SUMMARY_OMITS}
    out["bytes_per_link"] = [l for l in summary.get("bytes_per_link", []) if l.get("kind") == "wan"]
    out["omitted"] = [k for k in PAGE_SUMMARY_OMITS if k in summary] + ["bytes_per_link (intra-region links)"]
    return out


def write_dashboard(path: Path, events: pd.DataFrame, metrics: pd.DataFrame, summary: dict, manifest: dict,
                    network: dict | None = None) -> None:
    """Write ``dashboard.html`` for a run that just finished, from the same tables the run
    directory holds (and its ``tables.network_rates`` when the caller has replayed them already)."""
    run = RunData(Path(path).parent, manifest, summary, events, metrics, label=Path(path).parent.name,
                  network=network)
    build_dashboard(run).write(Path(path))


def render_run_dir(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Redraw a run directory's dashboard from its files (to ``out``, default its dashboard.html)."""
    run = load_run(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "dashboard.html"
    build_dashboard(run).write(path)
    return path


def export_run_pngs(run_dir: str | Path, png_dir: str | Path) -> tuple[list[Path], str | None]:
    """PNG of every dashboard figure of a run directory (see ``page.export_pngs``)."""
    figs, _ = run_figures(load_run(run_dir))
    for fig, _wide in figs.values():
        fig.update_layout(template="plotly_white")
    return export_pngs({k: f for k, (f, _w) in figs.items()}, Path(png_dir))
