"""The comparison page's figures: every run (or group of replications) in its colour on one
pair of axes: eval loss vs simulated time, bytes and tokens (mean with a min-max band), the
fair comparison at equal tokens and equal time, compute utilization and its states, time to
target, bytes, method diagnostics, the loss-vs-communication trade-off, communication hidden
vs exposed, and one outer round of each method's Gantt.

Drawing only: the numbers come from ``compare_analysis``.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sim.report.compare_analysis import (band, eval_rows, exposed_shares, fair_budgets, group_stats, has_losses,
                                         round_window)
from sim.report.figure import figure, floor_hline, loss_range, mark_warm_up
from sim.report.learning import diagnostic_kinds, diagnostic_labels, diagnostic_panels, finish_panels
from sim.report.phases import warm_up_end
from sim.report.runs import Group
from sim.report.style import (FAIR_COLOR, OUTLINE_COLOR, PANEL_FONT_SIZE, REFERENCE_COLOR, STATE_COLORS, STATE_LABELS,
                              TITLE_FONT_SIZE, WARM_UP_COLOR, byte_unit, fmt_bytes, rgba)


def _line_group(fig: go.Figure, g: Group, column: str, kind: str = "eval", name: str | None = None,
                dash: str = "solid", yaxis: str = "y", x_scale: float = 1.0) -> None:
    x, mean, lo, hi = band(g.runs, column, kind)
    if not len(x):
        return
    x = x / x_scale
    name = name or g.label
    if len(g.runs) > 1:
        fig.add_trace(go.Scatter(x=x, y=hi, mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip",
                                 legendgroup=name, yaxis=yaxis))
        fig.add_trace(go.Scatter(x=x, y=lo, mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor=rgba(g.color, 0.2), showlegend=False, hoverinfo="skip",
                                 legendgroup=name, name=f"{name} min-max", yaxis=yaxis))
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers" if len(x) <= 60 else "lines", name=name,
                             legendgroup=name, line={"color": g.color, "width": 2, "dash": dash},
                             marker={"size": 4}, yaxis=yaxis,
                             hovertemplate="%{x:.4g}: %{y:.4f}<extra>" + html.escape(name) + "</extra>"))


def _loss_range(groups: list[Group], floor: float | None) -> list[float] | None:
    return loss_range([v for g in groups for r in g.runs for v in eval_rows(r)["loss"]], floor)


def _bars(title: str, groups: list[Group], values: list, ranges: list | None, ytitle: str, text: list[str],
          **layout) -> go.Figure:
    fig = figure(title)
    labels = [g.label for g in groups]
    err = None
    if ranges and any(len(g.runs) > 1 for g in groups):
        err = {"type": "data", "symmetric": False,
               "array": [(r[1] - v) if v is not None and r[1] is not None else 0 for v, r in zip(values, ranges)],
               "arrayminus": [(v - r[0]) if v is not None and r[0] is not None else 0
                              for v, r in zip(values, ranges)], "color": WARM_UP_COLOR}
    fig.add_trace(go.Bar(x=labels, y=[v if v is not None else 0 for v in values],
                         marker_color=[g.color for g in groups], text=text, textposition="outside",
                         cliponaxis=False, error_y=err, showlegend=False,
                         hovertemplate="%{x}: %{text}<extra></extra>"))
    fig.update_layout(yaxis_title=ytitle, **layout)
    return fig


def fair_figure(groups: list[Group], stats: list[dict], fair: dict, floor: float | None) -> go.Figure:
    """Each run's eval loss at equal tokens and at equal simulated time (the latest eval at or
    before each point), side by side: the like-for-like view when runs end at different budgets.
    Bars are the gap to the loss floor (so that they start at a meaningful zero), labelled with
    the loss itself; without a floor, the loss."""
    base = floor if floor is not None else 0.0
    fig = figure("Fair comparison: eval loss at equal tokens and at equal simulated time"
               + (" (bars: gap to the loss floor)" if floor is not None else ""))
    labels = [g.label for g in groups]
    for key, name, pattern in (("loss_at_tokens", f"after {fair['tokens']:,.0f} tokens", ""),
                               ("loss_at_time", f"after {fair['time_s']:,.4g} s simulated", "/")):
        vals = [s[key] for s in stats]
        fig.add_trace(go.Bar(x=labels, y=[v - base if v is not None else 0 for v in vals], name=name,
                             text=[f"{v:.3f}" if v is not None else "-" for v in vals], textposition="outside",
                             textfont={"size": 10}, cliponaxis=False,
                             marker={"color": [g.color for g in groups], "pattern_shape": pattern,
                                                       "line": {"color": OUTLINE_COLOR, "width": 0.5}},
                             hovertemplate="%{x}: eval loss %{text}<extra>" + html.escape(name) + "</extra>"))
    fig.update_layout(barmode="group", yaxis={"title": "eval loss minus floor (nats)" if floor is not None
                                              else "eval loss (nats)", "rangemode": "tozero"})
    return fig


def compare_figures(groups: list[Group], target: float | None) -> dict[str, tuple[go.Figure, bool]]:
    """Every figure of the comparison page by div id (figure, wide?). Timing-only runs (no
    losses) get no loss figures: only what their timelines can show."""
    floor = groups[0].runs[0].summary.get("loss_floor")
    yrange = _loss_range(groups, floor)
    figs: dict[str, tuple[go.Figure, bool]] = {}
    fair = fair_budgets(groups)
    max_bytes = max([float(r.metrics["bytes"].max()) for g in groups for r in g.runs if has_losses(r)] or [0.0])
    b_div, b_unit = byte_unit(max_bytes)
    curves = (("cmp-loss-time", "time_s", "Eval loss vs simulated time", "simulated time (s)", 1.0),
              ("cmp-loss-bytes", "bytes", "Eval loss vs bytes on the wire",
               f"bytes sent so far, all transfers ({b_unit})", b_div),
              ("cmp-loss-tokens", "tokens", "Eval loss vs tokens", "tokens (all workers)", 1.0))
    for fig_id, column, title, xlabel, x_scale in curves if fair is not None else ():
        fig = figure(title, height=440 if fig_id == "cmp-loss-time" else 400)
        for g in groups:
            _line_group(fig, g, column, x_scale=x_scale)
        at = {"time_s": ("time_s", "equal time {:,.4g} s"), "tokens": ("tokens", "equal tokens {:,.0f}")}.get(column)
        if at is not None:
            fig.add_vline(x=fair[at[0]], line={"dash": "dot", "color": FAIR_COLOR, "width": 1},
                          annotation_text=at[1].format(fair[at[0]]), annotation_position="top left")
        if floor is not None and yrange is not None and floor >= yrange[0]:
            floor_hline(fig, floor)
        elif floor is not None:
            title = f"{title} (loss floor {floor:.3f}, below this range)"
        fig.update_layout(title_text=title)
        if column == "time_s":  # where each group's warm-up ends (one line when they all end together)
            ends = {}
            for g in groups:
                t = warm_up_end(g.runs[0].summary)
                if t is not None:
                    ends.setdefault(round(t, 9), []).append(g)
            for t, gs in ends.items():
                mark_warm_up(fig, t, color=gs[0].color if len(ends) > 1 else WARM_UP_COLOR,
                             label="warm-up ends" + (f" ({gs[0].label})" if len(ends) > 1 else ""))
        if target is not None:
            fig.add_hline(y=target, line={"dash": "dot", "color": REFERENCE_COLOR, "width": 1},
                          annotation_text=f"target {target:.3f}", annotation_position="bottom right")
        fig.update_layout(xaxis_title=xlabel, yaxis={"title": "eval loss (nats)", "range": yrange})
        figs[fig_id] = (fig, fig_id == "cmp-loss-time")
    stats = [group_stats(g, target, fair) for g in groups]
    if fair is not None:
        figs["cmp-fair"] = (fair_figure(groups, stats, fair, floor), False)
    cu = [s["utilization"] for s in stats]
    figs["cmp-cu"] = (_bars("Compute utilization (CU)", groups, cu, [s["utilization_range"] for s in stats],
                            "CU", [f"{v:.1%}" if v is not None else "-" for v in cu],
                            yaxis={"title": "CU", "range": [0, 1.08], "tickformat": ".0%"}), False)
    ttt = [s["time_to_target_s"] for s in stats]
    if target is not None and fair is not None:  # only with a target someone chose, and losses to reach it
        figs["cmp-time-to-target"] = (_bars(f"Simulated time to eval loss {target:.3f} (first eval at or below)",
                                            groups, ttt, [s["time_to_target_range"] for s in stats],
                                            "simulated time (s)",
                                            [f"{v:,.2f} s" if v is not None else "not reached" for v in ttt]), False)
    fig = figure("Where the time went (mean fraction of simulated time per state)")
    for st, color in STATE_COLORS.items():
        ys = [s["state_fractions"][st] or 0.0 for s in stats]
        fig.add_trace(go.Bar(x=[g.label for g in groups], y=ys, name=STATE_LABELS[st], marker_color=color,
                             text=[f"{y:.0%}" if y >= 0.05 else "" for y in ys], textposition="inside",
                             hovertemplate="%{x}: %{y:.1%}<extra>" + STATE_LABELS[st] + "</extra>"))
    fig.update_layout(barmode="stack", yaxis={"title": "fraction", "range": [0, 1.0001], "tickformat": ".0%"})
    figs["cmp-states"] = (fig, False)
    fig = figure("Bytes on the wire and WAN bytes (log scale)")
    labels = [g.label for g in groups]
    top = max([s[k] or 0.0 for s in stats for k in ("bytes_total", "wan_bytes")] or [0.0])
    div, unit = byte_unit(top)
    for key, name, alpha in (("bytes_total", "bytes on the wire (each transfer once)", 1.0),
                             ("wan_bytes", "WAN bytes (once per WAN link crossed)", 0.5)):
        vals = [s[key] or 0.0 for s in stats]
        fig.add_trace(go.Bar(x=labels, y=[v / div for v in vals], name=name, text=[fmt_bytes(v) for v in vals],
                             textposition="outside", cliponaxis=False,
                             marker={"color": [rgba(g.color, alpha) for g in groups],
                                     "line": {"color": [g.color for g in groups], "width": 1}}))
    vals = [s[k] / div for s in stats for k in ("bytes_total", "wan_bytes") if s[k]]
    if vals and max(vals) > 20 * min(vals):  # log only when a linear axis would hide the small bars
        ticks = [m * 10.0 ** k for k in range(-3, 7) for m in (1, 2, 5)
                 if min(vals) / 2 <= m * 10.0 ** k <= max(vals) * 2]
        fig.update_layout(barmode="group", yaxis={"title": unit, "type": "log", "tickvals": ticks,
                                                  "ticktext": [f"{v:g}" for v in ticks]})
    else:
        fig.update_layout(title_text="Bytes on the wire and WAN bytes", barmode="group", yaxis={"title": unit})
    figs["cmp-bytes"] = (fig, False)
    kinds = sorted({k for g in groups for r in g.runs for k in diagnostic_kinds(r.metrics)})
    if kinds:
        labels = {k: v for g in groups for r in g.runs for k, v in diagnostic_labels(r.manifest).items()}
        fig = diagnostic_panels(kinds, "Method diagnostics vs simulated time (one panel each)", labels)
        values: dict[str, list] = {}
        for i, k in enumerate(kinds, start=1):
            for g in groups:
                if any(k in diagnostic_kinds(r.metrics) for r in g.runs):
                    sub = figure("")
                    _line_group(sub, g, "time_s", kind=k, name=g.label)
                    for tr in sub.data:
                        tr.showlegend = False
                        fig.add_trace(tr, row=i, col=1)
                        values.setdefault(k, []).extend(v for v in (tr.y if tr.y is not None else ()) if v is not None)
        finish_panels(fig, kinds, values, labels)
        ends = {warm_up_end(g.runs[0].summary) for g in groups} - {None}
        if len(ends) == 1:
            mark_warm_up(fig, ends.pop(), row="all", col=1)
        figs["cmp-diagnostics"] = (fig, True)
    if fair is not None:
        figs["cmp-tradeoff"] = (tradeoff_figure(groups, stats, fair), True)
    exposed = exposed_figure(groups)
    if exposed is not None:
        figs["cmp-exposed"] = (exposed, False)
    rounds = rounds_figure(groups)
    if rounds is not None:
        figs["cmp-rounds"] = (rounds, True)
    return figs


def tradeoff_figure(groups: list[Group], stats: list[dict], fair: dict) -> go.Figure:
    """The trade-off, one point per run (group): eval loss at equal tokens (circles) and at equal
    simulated time (diamonds) against WAN bytes (left, log) and against compute utilization
    (right), both after warm-up when the runs had one (the whole run otherwise)."""
    warm = fair.get("after_warm_up")
    where = " after warm-up" if warm else ""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=[f"vs WAN bytes{where}", f"vs compute utilization{where}"])
    fig.update_layout(title={"text": "Trade-off: eval loss at equal tokens and at equal simulated time vs "
                                     "communication and utilization", "font": {"size": TITLE_FONT_SIZE}}, height=440,
                      margin={"l": 60, "r": 20, "t": 80, "b": 50})
    for a in fig.layout.annotations:
        a.font = {"size": PANEL_FONT_SIZE}
    top = max([s["method"]["wan_bytes"] or 0.0 for s in stats] + [0.0])
    div, unit = byte_unit(top)
    for key, name, symbol in (("loss_at_tokens", f"after {fair['tokens']:,.0f} tokens", "circle"),
                              ("loss_at_time", f"after {fair['time_s']:,.4g} s", "diamond")):
        for col, xkey in ((1, "wan_bytes"), (2, "utilization")):
            xs, ys, gs = [], [], []
            for g, st in zip(groups, stats):
                x, y = st["method"][xkey], st[key]
                if x is None or y is None:
                    continue
                xs.append(x / div if xkey == "wan_bytes" else x)
                ys.append(y)
                gs.append(g)
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="markers", name=f"loss {name}", legendgroup=key, showlegend=col == 1,
                marker={"symbol": symbol, "size": 12, "color": [g.color for g in gs], "line": {"color": OUTLINE_COLOR,
                                                                                                 "width": 1}},
                text=[g.label for g in gs],
                hovertemplate="%{text}: %{y:.4f} at %{x:.4g}<extra>" + html.escape(name) + "</extra>"), row=1, col=col)
    positive = [s["method"]["wan_bytes"] for s in stats if s["method"]["wan_bytes"]]
    log = bool(positive) and max(positive) > 20 * min(positive)
    if log:  # the unit of the smallest value, so the log axis's labels are 20, 50, 100, ... not 0.03
        div = byte_unit(min(positive))[0]
        unit = byte_unit(min(positive))[1]
        for tr in fig.data:
            if tr.xaxis in (None, "x"):
                tr.x = [x * byte_unit(top)[0] / div for x in tr.x]
    ticks = {}
    if log:
        lo, hi = min(positive) / div, max(positive) / div
        vals = [m * 10.0 ** k for k in range(-3, 9) for m in (1, 2, 5) if lo / 2 <= m * 10.0 ** k <= hi * 2]
        ticks = {"tickvals": vals, "ticktext": [f"{v:g}" for v in vals]}
    fig.update_xaxes(title_text=f"WAN bytes{where} ({unit})", row=1, col=1, type="log" if log else "linear", **ticks)
    fig.update_xaxes(title_text=f"CU{where}", tickformat=".0%", row=1, col=2)
    fig.update_yaxes(title_text="eval loss (nats)", row=1, col=1)
    return fig


def exposed_figure(groups: list[Group]) -> go.Figure | None:
    """Per method, the share of communication time hidden behind compute and exposed (workers
    blocked), averaged over its syncs after warm-up: what streaming and eager DiLoCo are for."""
    rows = []
    for g in groups:
        vals = [v for v in (exposed_shares(r) for r in g.runs) if v is not None]
        if vals:
            rows.append((g, float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals])),
                         sum(v[2] for v in vals)))
    if not rows:
        return None
    fig = figure("Communication hidden behind compute vs exposed (share of worker time while a sync is in "
               "flight, mean over syncs after warm-up)")
    labels = [g.label for g, *_ in rows]
    for idx, name, color in ((1, "hidden (computing)", STATE_COLORS["compute"]),
                             (2, "exposed (comm-blocked)", STATE_COLORS["comm_blocked"])):
        ys = [r[idx] for r in rows]
        fig.add_trace(go.Bar(x=labels, y=ys, name=name, marker_color=color, text=[f"{y:.0%}" for y in ys],
                             textposition="inside", customdata=[r[3] for r in rows],
                             hovertemplate="%{x}: %{y:.1%} over %{customdata} syncs<extra>" + name + "</extra>"))
    fig.update_layout(barmode="stack", yaxis={"title": "share of worker time during syncs", "range": [0, 1.0001],
                                              "tickformat": ".0%"})
    return fig


def rounds_figure(groups: list[Group]) -> go.Figure | None:
    """One outer round of each method's Gantt (first run of each group), side by side on one time
    scale (seconds from the round's start), one panel per method: where each spends its round."""
    picked = [(g, round_window(g.runs[0])) for g in groups]
    picked = [(g, w) for g, w in picked if w is not None]
    if not picked:
        return None
    fig = make_subplots(rows=len(picked), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[f"{g.label}: {w[1] - w[0]:.3g} s" for g, w in picked])
    seen = set()
    for i, (g, (a, b)) in enumerate(picked, start=1):
        ev = g.runs[0].events
        st = ev[(ev["kind"] == "state") & (ev["end_s"] > a) & (ev["start_s"] < b)]
        s0 = np.maximum(st["start_s"].to_numpy(float), a) - a
        s1 = np.minimum(st["end_s"].to_numpy(float), b) - a
        nodes = st["node"].astype(str).to_numpy()
        states = st["state"].astype(str).to_numpy()
        for state, color in STATE_COLORS.items():
            m = states == state
            if not m.any():
                continue
            fig.add_trace(go.Bar(y=nodes[m], x=s1[m] - s0[m], base=s0[m], orientation="h", name=STATE_LABELS[state],
                                 marker={"color": color, "line": {"width": 0}}, legendgroup=state,
                                 showlegend=state not in seen,
                                 hovertemplate="%{y}: " + STATE_LABELS[state] + " %{base:.3f} s + %{x:.3f} s"
                                               "<extra>" + html.escape(g.label) + "</extra>"), row=i, col=1)
            seen.add(state)
        fig.update_yaxes(type="category", autorange="reversed", tickfont={"size": 9}, row=i, col=1)
    fig.update_layout(title={"text": "One outer round of each method after warm-up, on one time scale",
                             "font": {"size": TITLE_FONT_SIZE}}, barmode="overlay", bargap=0.15,
                      height=120 + 40 * sum(len(g.runs[0].summary.get("per_node") or [0]) for g, _ in picked) // 2
                      + 60 * len(picked), margin={"l": 70, "r": 20, "t": 80, "b": 50})
    for ann in fig.layout.annotations:
        ann.font = {"size": PANEL_FONT_SIZE}
    fig.update_xaxes(title_text="seconds from the round's start", row=len(picked), col=1)
    return fig
