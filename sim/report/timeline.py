"""The run's timeline figures: the Gantt of every worker's states (compute, comm-blocked,
straggler-wait, down) and the inner steps each worker completed over simulated time.

Above ``MAX_GANTT_ROWS`` workers the Gantt shows one row per region (each time slice drawn as
its states' shares) with a selector that adds one worker's row; a row with more spans than
the chart can show (``MAX_SPANS_PER_ROW``) is cut into time slices too. Apart from the page
assembly (``dashboard``) because the slicing is most of the code here.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sim.report.figure import figure
from sim.report.runs import RunData
from sim.report.style import MAX_GANTT_ROWS, STATE_COLORS, STATE_LABELS, STATES, f32


MAX_GANTT_BARS = 20_000  # above this many spans, each row is cut into time slices
MAX_SPANS_PER_ROW = 400  # above this many spans in a row (a long run) the row is cut into slices too:
                         # a ~1,300 px chart cannot show more, and hundreds of rounds blur into one colour
MAX_STEP_CURVE_POINTS = 400  # steps per worker above MAX_GANTT_ROWS workers: longer curves sampled on a grid
GANTT_SLICES = 200  # slices per row when cut; each drawn as its states' shares of the slice


def region_of(node: str) -> str:
    """Region of a worker node (``region/i``) or switch (``region``), as build_graph names them."""
    return node.rsplit("/", 1)[0] if "/" in node else node


def _occupied_in_bins(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Seconds that disjoint spans (sorted by start) cover in each bin between ``edges``."""
    dur = ends - starts
    before = np.concatenate([[0.0], np.cumsum(dur)])  # time in spans [0, i)
    i = np.searchsorted(starts, edges, side="right") - 1
    j = np.maximum(i, 0)
    occupied = np.where(i >= 0, before[j] + np.clip(edges - starts[j], 0, dur[j]), 0.0)
    return np.diff(occupied)


def _positions(values: pd.Series, index: dict) -> np.ndarray:
    """Each value's position in ``index`` (-1 where it is missing or not a key), looked up once
    per distinct value (``Series.map`` on pyarrow strings goes value by value)."""
    codes, uniques = pd.factorize(values)
    lookup = np.array([index.get(u, -1) for u in uniques.tolist()] + [-1], dtype=np.int64)
    return lookup.take(codes)  # a missing value's code, -1, takes the last entry


def state_times_by_node(st: pd.DataFrame, nodes: list[str], edges: np.ndarray) -> dict[str, np.ndarray]:
    """Seconds each state occupies in each bin, per node ({node: array [n_states, n_bins]}),
    for every node at once: one sort of all spans by (node, state,
    start) in numpy, then the bins of each (node, state) group from its slice (no per-node
    pandas filtering: linear in spans, not in nodes x spans)."""
    out = {n: np.zeros((len(STATES), len(edges) - 1)) for n in nodes}
    if st.empty:
        return out
    ni = _positions(st["node"], {n: i for i, n in enumerate(nodes)})
    si = _positions(st["state"], {s: k for k, s in enumerate(STATES)})
    known = (ni >= 0) & (si >= 0)
    ni, si = ni[known], si[known]
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


def segments_from_bins(times: np.ndarray, edges: np.ndarray) -> list[tuple[float, float, int, np.ndarray]]:
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


def majority_runs(times: np.ndarray, edges: np.ndarray, rounded_edges: list[float] | None = None) -> list[list]:
    """``[[start, end, state], ...]`` (times rounded to 6 decimals) of ``segments_from_bins``,
    found with numpy: runs of consecutive bins with time in them and one majority state (the
    selector's row of one worker; 1,024 of them in a large run). ``rounded_edges``: the edges
    rounded to 6 decimals already (the caller rounds the grid its workers share once)."""
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
    if rounded_edges is not None:
        return [[rounded_edges[i], rounded_edges[j], s] for i, j, s in zip(first.tolist(), (last + 1).tolist(),
                                                                             major[first].tolist())]
    return [[round(a, 6), round(e, 6), s] for a, e, s in zip(edges[first].tolist(), edges[last + 1].tolist(),
                                                               major[first].tolist())]


def timeline(run: RunData) -> tuple[go.Figure, dict | None]:
    """The Gantt of worker states, and (above MAX_GANTT_ROWS workers) the per-worker
    segments the page's selector can add as a row."""
    st = run.events.loc[run.events["kind"] == "state", ["node", "state", "start_s", "end_s"]].copy()
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
        per_node = state_times_by_node(st, nodes, edges)
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
            # the selector's grid is most often the slices' own: their times are not binned again
            by_node = per_node if np.array_equal(coarse, edges) else state_times_by_node(st, nodes, coarse)
            rounded = [round(x, 6) for x in coarse.tolist()]
            for n, t in by_node.items():
                selector["workers"][n] = majority_runs(t, coarse, rounded)
        else:
            rows = nodes
            for n in nodes:
                for a, b, s, why in _share_bars(per_node[n], edges):
                    bars.append((n, a, b, s, why))
    title = ("Timeline: worker states" if not aggregate else
             f"Timeline: {len(nodes)} workers, one row per region (pick a worker below to add its row)") + note
    fig = figure(title, height=int(min(900, 140 + 26 * (len(rows) + (1 if aggregate else 0)))))
    df = pd.DataFrame(bars, columns=["row", "start", "end", "state", "note"])
    sliced = bool(note)  # bars of time slices: drawn to a pixel, so float32 (half the page bytes) will do
    for k, state in enumerate(STATES):
        d = df[df["state"] == k]
        x, base, end = d["end"] - d["start"], d["start"], d["end"]
        if sliced:
            x, base, end = f32(x), f32(base), np.round(end.to_numpy(float), 6)
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


def selector_html(fig_id: str, selector: dict) -> str:
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


def steps_figure(run: RunData) -> go.Figure | None:
    """Inner steps completed per worker over simulated time (one line per worker; above
    ``MAX_GANTT_ROWS`` workers, each region's slowest and fastest worker): where heterogeneous
    or asynchronous workers drift apart."""
    st = run.events.loc[run.events["kind"] == "state", ["node", "start_s", "end_s", "step"]]  # (the columns read)
    if not len(st):
        return None
    nodes = list(run.summary.get("per_node") or dict.fromkeys(st["node"].astype(str).unique()))
    steps = run.summary.get("steps_per_worker") or []
    end = float(run.summary.get("sim_duration_s") or st["end_s"].max())
    fig = figure("Inner steps completed per worker vs simulated time")
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
            x, y = f32(x), f32(y)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line={"shape": "hv", "width": 1.5}, name=n,
                                 hovertemplate=n + ": %{y:.0f} steps at %{x:.3f} s<extra></extra>"))
    fig.update_layout(xaxis={"title": "simulated time (s)", "range": [0, end]},
                      yaxis={"title": "inner steps completed", "rangemode": "tozero"})
    return fig
