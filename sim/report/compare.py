"""Many runs side by side: ``locosim compare RUN_DIR... -o compare.html``.

Every run (or group of replications: the same scenario except its seed) gets one colour,
the same in every figure, and every figure puts all runs on one pair of axes: eval loss
vs simulated time, vs bytes on the wire and vs tokens (one shared loss range), compute
utilization and its breakdown by state, time to a common target eval loss, bytes on the
wire, and a table of differences against a baseline run. Replications are drawn as their
mean with a min-max band (curves interpolated onto a common grid over the range that
every seed covers).

Runs that did not train the same model on the same data are refused (``CompareError``)
unless forced: their losses are not on the same scale.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sim.metrics.tables import time_to_loss
from sim.report.dashboard import (_fig, diagnostic_kinds, diagnostic_labels, diagnostic_panels, finish_panels,
                                  loss_range, mark_warm_up, model_used, status_text, topology_text, warm_up_end)
from sim.report.page import (BYTES_DEFINITION, STATE_COLORS, STATE_LABELS, Page, byte_unit, export_pngs, fmt_bytes,
                             grid_table, kv_table)
from sim.report.runs import (Group, NotDrawable, RunData, RunDirError, algorithm_label, find_run_dirs,
                             group_replications, incomparable, load_run, split_note, unique_labels)
# Colours of methods (runs): none of them is a state colour (page.STATE_COLORS: green compute, red
# comm-blocked, orange straggler-wait, grey down), so a colour means one thing on the whole page;
# one palette for runs, sweeps and bandwidth charts.
from sim.report.sweep import PALETTE

GRID_POINTS = 200


class CompareError(ValueError):
    """Runs that cannot be compared as asked; ``str(err)`` is one line."""


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


# ---------------------------------------------------------------------- loading
def load_groups(paths: list[str | Path], force: bool = False, not_drawn: list | None = None) -> list[Group]:
    """Run directories (or directories holding them) -> coloured replication groups.
    CompareError (one line) when a path holds no readable run, a run's file is malformed
    or, without ``force``, the runs train different models or data. A run that ended before
    writing its tables (failed while building, interrupted) goes into ``not_drawn`` as
    (path, status, error) when that list is given, instead of stopping the comparison."""
    runs = []
    why_not: list[str] = []  # each run not drawn, in the words of its own refusal (what is missing, its status)
    try:
        for p in find_run_dirs(paths):
            try:
                runs.append(load_run(p))
            except NotDrawable as err:
                if not_drawn is None:
                    raise
                not_drawn.append((p, str(err.manifest.get("status")), err.manifest.get("error")))
                why_not.append(str(err))
    except RunDirError as err:
        raise CompareError(str(err)) from None
    if not runs:
        raise CompareError("no run to draw" + (f": {why_not[0]}" if why_not else " (no run directories given)"))
    why = incomparable(runs)
    if why and not force:
        raise CompareError(f"runs are not comparable: {why}; pass --force to compare them anyway")
    unique_labels(runs)
    groups = group_replications(runs)
    for i, g in enumerate(groups):
        g.color = PALETTE[i % len(PALETTE)]
        g.label = grid_point_label(g) or g.label
    return groups


SWEEP_RUN = re.compile(r"^(?P<point>.*)-seed=\d+-[0-9a-f]{10}$")  # a sweep's run directory (sim.sweep)


def grid_point_label(g: Group) -> str | None:
    """A sweep group's label: its grid point and its seeds (``inner_steps=10 (seeds 0, 1)``),
    from its runs' directory names; None for runs that are not a sweep's."""
    m = [SWEEP_RUN.match(r.path.name) for r in g.runs]
    if not all(m) or len({x["point"] for x in m}) != 1:
        return None
    point = ", ".join(re.split(r"-(?=[A-Za-z_][\w.]*=)", m[0]["point"]))
    seeds = ", ".join(str(x) for x in g.seeds)
    return f"{point} (seed{'s' if len(g.runs) > 1 else ''} {seeds})"


def pick_baseline(groups: list[Group], baseline: str | Path | None) -> Group:
    """The group holding the run named by ``baseline`` (a run directory or a label); the
    first group when None."""
    if baseline is None:
        return groups[0]
    want = str(baseline)
    p = Path(want)
    for g in groups:
        for r in g.runs:
            if r.label == want or r.path.name == want or (p.exists() and r.path.resolve() == p.resolve()):
                return g
        if g.label == want:
            return g
    labels = ", ".join(r.label for g in groups for r in g.runs)
    raise CompareError(f"--baseline {want}: not one of the compared runs ({labels})")


def choose_target(groups: list[Group], target: float | None) -> tuple[float | None, str]:
    """The eval loss that 'time to target' is measured at, and where it came from: the one
    given, else the runs' common ``run.target_eval_loss``, else none. There is no made-up
    default: the worst final loss among the runs is by construction reached by the worst run
    only at its last eval, so 'time to target' would measure when that eval happened, not
    how fast the method learns. Without a target the page compares losses at equal tokens
    and at equal simulated time (``fair_budgets``)."""
    if target is not None:
        return target, "given with --target"
    runs = [r for g in groups for r in g.runs]
    if not any(has_losses(r) for r in runs):
        return None, "none: timing-only runs have no losses"
    set_targets = {r.summary.get("target_eval_loss") for r in runs}
    if len(set_targets) == 1 and None not in set_targets:
        return set_targets.pop(), "run.target_eval_loss of every run"
    return None, "none set (pass --target LOSS); losses are compared at equal tokens and equal simulated time"


def has_losses(run: RunData) -> bool:
    """Whether a run has eval losses (a timing-only run, numerics: false, has none)."""
    return bool(len(run.metrics)) and bool((run.metrics["kind"] == "eval").any())


def loss_at(run: RunData, column: str, x: float) -> float | None:
    """The latest eval loss measured at or before ``x`` (tokens or simulated seconds): what the
    run had shown by then, no interpolation; None when it had no eval by then."""
    ev = _eval(run)
    ev = ev[ev[column] <= x * (1 + 1e-9) + 1e-12].sort_values([column, "time_s"], kind="stable")
    return float(ev["loss"].iloc[-1]) if len(ev) else None


def fair_budgets(groups: list[Group]) -> dict | None:
    """The two fair points of a comparison: the most tokens and the most simulated time that
    every run's evals reached (min over runs of each run's last eval), and whether the runs
    ended at different budgets (simulated time or tokens, by more than 1%) or final losses.
    None when no run has losses."""
    runs = [r for g in groups for r in g.runs if has_losses(r)]
    if not runs:
        return None
    ends_s = [float(r.summary["sim_duration_s"]) for r in runs]
    ends_tok = [float(r.summary.get("tokens") or 0) for r in runs]
    finals = [r.summary.get("final_eval_loss") for r in runs]
    finite = [f for f in finals if f is not None]

    def differ(vals):
        return bool(vals) and max(vals) > min(vals) * 1.01 + 1e-12

    warm = [(warm_up_end(r.summary) or 0.0, _warm_tokens(r.summary)) for r in runs]
    return {"tokens": min(float(_eval(r)["tokens"].max()) for r in runs),
            "time_s": min(float(_eval(r)["time_s"].max()) for r in runs),
            # the same two points counted from the end of each run's warm-up (0 without one)
            "after_warm_up": any(w[0] > 0 for w in warm),
            "method_tokens": min(float(_eval(r)["tokens"].max()) - w[1] for r, w in zip(runs, warm)),
            "method_time_s": min(float(_eval(r)["time_s"].max()) - w[0] for r, w in zip(runs, warm)),
            "end_s": (min(ends_s), max(ends_s)), "end_tokens": (min(ends_tok), max(ends_tok)),
            "final_loss": (min(finite), max(finite)) if finite else (None, None),
            "time_differs": differ(ends_s), "tokens_differ": differ(ends_tok),
            "loss_differs": differ(finite) or len(finite) != len(finals)}


def _warm_tokens(summary: dict) -> float:
    return float(((summary.get("phases") or {}).get("warm_up") or {}).get("tokens") or 0.0)


def loss_after_warm_up(run: RunData, column: str, x: float) -> float | None:
    """``loss_at`` ``x`` tokens or seconds after the end of the run's warm-up."""
    start = (warm_up_end(run.summary) or 0.0) if column == "time_s" else _warm_tokens(run.summary)
    return loss_at(run, column, start + x)


def budget_notice(groups: list[Group]) -> str | None:
    """For runs without losses (timing only): one paragraph when they ran different simulated
    times or token budgets, saying which of their numbers still compare; None when they did not."""
    runs = [r for g in groups for r in g.runs]
    ends_s = [float(r.summary["sim_duration_s"]) for r in runs]
    tokens = [float(r.summary.get("tokens") or 0) for r in runs]
    parts = []
    if max(ends_s) > min(ends_s) * 1.01 + 1e-12:
        parts.append(f"simulated times from {min(ends_s):,.4g} s to {max(ends_s):,.4g} s")
    if max(tokens) > min(tokens) * 1.01 + 1e-12:
        parts.append(f"tokens from {min(tokens):,.0f} to {max(tokens):,.0f}")
    if not parts:
        return None
    return ("These runs ended at different budgets (" + "; ".join(parts) + "). Compute utilization, the state "
            "fractions and bytes per worker per round are rates and compare across budgets; total bytes and "
            "simulated time do not.")


def fair_notice(fair: dict | None) -> str | None:
    """One paragraph saying when runs ended at different budgets or losses, so that nobody
    reads their final numbers as a like-for-like comparison; None when they did not."""
    # equal budgets: the final losses *are* the fair comparison, whatever they are
    if fair is None or not (fair["time_differs"] or fair["tokens_differ"]):
        return None
    parts = []
    if fair["time_differs"]:
        parts.append(f"simulated times from {fair['end_s'][0]:,.4g} s to {fair['end_s'][1]:,.4g} s")
    if fair["tokens_differ"]:
        parts.append(f"token budgets from {fair['end_tokens'][0]:,.0f} to {fair['end_tokens'][1]:,.0f}")
    return ("These runs ended at different budgets (" + "; ".join(parts) + "), so their final "
            "numbers are not a like-for-like comparison. Compare them at equal tokens (every run's loss after "
            f"{fair['tokens']:,.0f} tokens) and at equal simulated time (after {fair['time_s']:,.4g} s): the "
            "'loss at equal tokens' and 'loss at equal time' columns below, the 'Fair comparison' chart and the "
            "dotted lines on the loss curves.")


# ---------------------------------------------------------------------- numbers per group
def _eval(run: RunData):
    return run.metrics[run.metrics["kind"] == "eval"]


def band(runs: list[RunData], column: str, kind: str = "eval", n: int = GRID_POINTS
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, min, max) of the runs' ``kind`` loss against ``column``: one run's own points,
    or several runs interpolated onto a common grid over the x range they all cover."""
    curves = []
    for r in runs:
        d = r.metrics[r.metrics["kind"] == kind].sort_values([column, "time_s"], kind="stable")
        # two evals at one x (the closing eval right after a grid eval) would draw a vertical drop:
        # the later one is what the run had at that x
        d = d.drop_duplicates(column, keep="last")
        curves.append((d[column].to_numpy(float), d["loss"].to_numpy(float)))
    curves = [c for c in curves if len(c[0])]
    if not curves:
        e = np.array([])
        return e, e, e, e
    if len(curves) == 1:
        x, y = curves[0]
        return x, y, y, y
    lo_x = max(c[0][0] for c in curves)
    hi_x = min(c[0][-1] for c in curves)
    grid = np.linspace(lo_x, hi_x, n) if hi_x > lo_x else np.array([lo_x])
    ys = np.array([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def group_stats(g: Group, target: float | None, fair: dict | None = None) -> dict:
    """Mean over a group's runs of what the comparison shows (None where a run lacks it);
    with ``fair`` (``fair_budgets``) also the loss at equal tokens and at equal time."""
    def mean(values):
        vals = [v for v in values if v is not None]
        return float(np.mean(vals)) if vals and len(vals) == len(values) else None

    def spread(values):
        vals = [v for v in values if v is not None]
        return (float(min(vals)), float(max(vals))) if vals and len(vals) == len(values) else (None, None)

    ss = [r.summary for r in g.runs]
    ttt = [time_to_loss(r.metrics, target) for r in g.runs]
    rounds = [s.get("rounds") or 0 for s in ss]
    bpwr = [s.get("bytes_per_worker_per_round", s["bytes_total"] / (s["workers"] * n) if n else None)
            for s, n in zip(ss, rounds)]
    return {
        "final_eval_loss": mean([s.get("final_eval_loss") for s in ss]),
        "utilization": mean([s["utilization"] for s in ss]),
        "utilization_range": spread([s["utilization"] for s in ss]),
        "state_fractions": {st: mean([s["state_fractions"].get(st, 0.0) for s in ss]) for st in STATE_COLORS},
        "time_to_target_s": mean(ttt),
        "time_to_target_range": spread(ttt),
        "bytes_total": mean([s["bytes_total"] for s in ss]),
        "wan_bytes": mean([s.get("wan_bytes", 0.0) for s in ss]),
        "bytes_per_worker_per_round": mean(bpwr),
        "peak_wan_gbps": mean([s.get("peak_wan_gbps") for s in ss]),
        "sim_duration_s": mean([s["sim_duration_s"] for s in ss]),
        "tokens": mean([s.get("tokens", 0) for s in ss]),
        "warm_up_end_s": mean([warm_up_end(s) for s in ss]) if any(warm_up_end(s) for s in ss) else None,
        "method": {k: mean([_method(s).get(k) for s in ss]) for k in PHASE_KEYS},
        "method_blocked": mean([(_method(s).get("state_fractions") or {}).get("comm_blocked") for s in ss]),
        "loss_at_method_tokens": mean([loss_after_warm_up(r, "tokens", fair["method_tokens"]) for r in g.runs])
        if fair and fair["after_warm_up"] else None,
        "loss_at_method_time": mean([loss_after_warm_up(r, "time_s", fair["method_time_s"]) for r in g.runs])
        if fair and fair["after_warm_up"] else None,
        "loss_at_tokens": mean([loss_at(r, "tokens", fair["tokens"]) for r in g.runs]) if fair else None,
        "loss_at_time": mean([loss_at(r, "time_s", fair["time_s"]) for r in g.runs]) if fair else None,
    }


PHASE_KEYS = ("utilization", "bytes_total", "wan_bytes", "bytes_per_worker_per_round", "sim_duration_s", "tokens")


def _method(summary: dict) -> dict:
    """The method phase of a run's summary (summary.json ``phases.method``); a summary written
    before phases existed: the whole run."""
    return (summary.get("phases") or {}).get("method") or summary


def diff_rows(groups: list[Group], baseline: Group, target: float | None) -> list[dict]:
    """One row per group: its numbers and their difference from the baseline's
    (loss and CU as differences, time and bytes as ratios), and its loss at the fair points
    (equal tokens, equal simulated time) next to the baseline's."""
    fair = fair_budgets(groups)
    stats = {id(g): group_stats(g, target, fair) for g in groups}
    b = stats[id(baseline)]

    def diff(x, y):
        return None if x is None or y is None else x - y

    def ratio(x, y):
        return None if x is None or y is None or y == 0 else x / y

    rows = []
    for g in groups:
        s = stats[id(g)]
        rows.append({
            "label": g.label, "color": g.color, "baseline": g is baseline, "seeds": g.seeds,
            "algorithm": algorithm_label(g.runs[0].algorithm), **s,
            "diverged": sum(1 for r in g.runs if r.summary.get("diverged") or r.manifest.get("status") == "diverged"),
            "d_final_eval_loss": diff(s["final_eval_loss"], b["final_eval_loss"]),
            "d_loss_at_tokens": diff(s["loss_at_tokens"], b["loss_at_tokens"]),
            "d_loss_at_time": diff(s["loss_at_time"], b["loss_at_time"]),
            "d_loss_at_method_tokens": diff(s["loss_at_method_tokens"], b["loss_at_method_tokens"]),
            "d_loss_at_method_time": diff(s["loss_at_method_time"], b["loss_at_method_time"]),
            "d_method_utilization": diff(s["method"]["utilization"], b["method"]["utilization"]),
            "x_method_wan_bytes": ratio(s["method"]["wan_bytes"], b["method"]["wan_bytes"]),
            "d_utilization": diff(s["utilization"], b["utilization"]),
            "x_time_to_target": ratio(s["time_to_target_s"], b["time_to_target_s"]),
            "x_bytes_total": ratio(s["bytes_total"], b["bytes_total"]),
            "x_wan_bytes": ratio(s["wan_bytes"], b["wan_bytes"]),
            "x_sim_duration": ratio(s["sim_duration_s"], b["sim_duration_s"]),
        })
    return rows


# ---------------------------------------------------------------------- figures
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
                                 fillcolor=_rgba(g.color, 0.2), showlegend=False, hoverinfo="skip",
                                 legendgroup=name, name=f"{name} min-max", yaxis=yaxis))
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers" if len(x) <= 60 else "lines", name=name,
                             legendgroup=name, line={"color": g.color, "width": 2, "dash": dash},
                             marker={"size": 4}, yaxis=yaxis,
                             hovertemplate="%{x:.4g}: %{y:.4f}<extra>" + html.escape(name) + "</extra>"))


def _loss_range(groups: list[Group], floor: float | None) -> list[float] | None:
    return loss_range([v for g in groups for r in g.runs for v in _eval(r)["loss"]], floor)


def _bars(title: str, groups: list[Group], values: list, ranges: list | None, ytitle: str, text: list[str],
          **layout) -> go.Figure:
    fig = _fig(title)
    labels = [g.label for g in groups]
    err = None
    if ranges and any(len(g.runs) > 1 for g in groups):
        err = {"type": "data", "symmetric": False,
               "array": [(r[1] - v) if v is not None and r[1] is not None else 0 for v, r in zip(values, ranges)],
               "arrayminus": [(v - r[0]) if v is not None and r[0] is not None else 0
                              for v, r in zip(values, ranges)], "color": "#444"}
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
    fig = _fig("Fair comparison: eval loss at equal tokens and at equal simulated time"
               + (" (bars: gap to the loss floor)" if floor is not None else ""))
    labels = [g.label for g in groups]
    for key, name, pattern in (("loss_at_tokens", f"after {fair['tokens']:,.0f} tokens", ""),
                               ("loss_at_time", f"after {fair['time_s']:,.4g} s simulated", "/")):
        vals = [s[key] for s in stats]
        fig.add_trace(go.Bar(x=labels, y=[v - base if v is not None else 0 for v in vals], name=name,
                             text=[f"{v:.3f}" if v is not None else "-" for v in vals], textposition="outside",
                             textfont={"size": 10}, cliponaxis=False,
                             marker={"color": [g.color for g in groups], "pattern_shape": pattern,
                                                       "line": {"color": "#333", "width": 0.5}},
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
        fig = _fig(title, height=440 if fig_id == "cmp-loss-time" else 400)
        for g in groups:
            _line_group(fig, g, column, x_scale=x_scale)
        at = {"time_s": ("time_s", "equal time {:,.4g} s"), "tokens": ("tokens", "equal tokens {:,.0f}")}.get(column)
        if at is not None:
            fig.add_vline(x=fair[at[0]], line={"dash": "dot", "color": "#555", "width": 1},
                          annotation_text=at[1].format(fair[at[0]]), annotation_position="top left")
        if floor is not None and yrange is not None and floor >= yrange[0]:
            fig.add_hline(y=floor, line={"dash": "dash", "color": "black", "width": 1},
                          annotation_text=f"loss floor {floor:.3f}", annotation_position="top right")
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
                mark_warm_up(fig, t, color=gs[0].color if len(ends) > 1 else "#444",
                             label="warm-up ends" + (f" ({gs[0].label})" if len(ends) > 1 else ""))
        if target is not None:
            fig.add_hline(y=target, line={"dash": "dot", "color": "#888", "width": 1},
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
    fig = _fig("Where the time went (mean fraction of simulated time per state)")
    for st, color in STATE_COLORS.items():
        ys = [s["state_fractions"][st] or 0.0 for s in stats]
        fig.add_trace(go.Bar(x=[g.label for g in groups], y=ys, name=STATE_LABELS[st], marker_color=color,
                             text=[f"{y:.0%}" if y >= 0.05 else "" for y in ys], textposition="inside",
                             hovertemplate="%{x}: %{y:.1%}<extra>" + STATE_LABELS[st] + "</extra>"))
    fig.update_layout(barmode="stack", yaxis={"title": "fraction", "range": [0, 1.0001], "tickformat": ".0%"})
    figs["cmp-states"] = (fig, False)
    fig = _fig("Bytes on the wire and WAN bytes (log scale)")
    labels = [g.label for g in groups]
    top = max([s[k] or 0.0 for s in stats for k in ("bytes_total", "wan_bytes")] or [0.0])
    div, unit = byte_unit(top)
    for key, name, alpha in (("bytes_total", "bytes on the wire (each transfer once)", 1.0),
                             ("wan_bytes", "WAN bytes (once per WAN link crossed)", 0.5)):
        vals = [s[key] or 0.0 for s in stats]
        fig.add_trace(go.Bar(x=labels, y=[v / div for v in vals], name=name, text=[fmt_bytes(v) for v in vals],
                             textposition="outside", cliponaxis=False,
                             marker={"color": [_rgba(g.color, alpha) for g in groups],
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
                    sub = _fig("")
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
                                     "communication and utilization", "font": {"size": 15}}, height=440,
                      margin={"l": 60, "r": 20, "t": 80, "b": 50})
    for a in fig.layout.annotations:
        a.font = {"size": 12}
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
                marker={"symbol": symbol, "size": 12, "color": [g.color for g in gs], "line": {"color": "#333",
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


def exposed_shares(run: RunData) -> tuple[float, float, int] | None:
    """Mean over the method's syncs (warm-up's left out) of the share of worker time, while a
    sync was in flight (its collective's start to its end), spent computing (communication
    hidden behind compute) and spent blocked (communication exposed); and the number of syncs.
    None when the run had no sync after warm-up."""
    ev = run.events
    t_w = warm_up_end(run.summary) or 0.0
    syncs = ev[(ev["kind"] == "sync") & (ev["start_s"] >= t_w) & (ev["end_s"] > ev["start_s"])]
    if not len(syncs):
        return None
    st = ev[ev["kind"] == "state"]
    states = st["state"].astype(str).to_numpy()
    s0, s1 = st["start_s"].to_numpy(float), st["end_s"].to_numpy(float)
    n = max(int(run.summary.get("workers") or st["node"].nunique()), 1)
    hidden, exposed = [], []
    for a, b in zip(syncs["start_s"].to_numpy(float), syncs["end_s"].to_numpy(float)):
        over = np.clip(np.minimum(s1, b) - np.maximum(s0, a), 0.0, None)
        total = (b - a) * n
        hidden.append(over[states == "compute"].sum() / total)
        exposed.append(over[states == "comm_blocked"].sum() / total)
    return float(np.mean(hidden)), float(np.mean(exposed)), len(syncs)


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
    fig = _fig("Communication hidden behind compute vs exposed (share of worker time while a sync is in "
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


def round_window(run: RunData) -> tuple[float, float] | None:
    """One outer round of a run after warm-up: from the end of the previous round's last sync
    (or of warm-up) to the end of this round's last sync; the second round after warm-up when
    there is one (the first may still carry warm-up's wake), else the first."""
    ev = run.events
    t_w = warm_up_end(run.summary) or 0.0
    syncs = ev[(ev["kind"] == "sync") & (ev["start_s"] >= t_w)]
    if not len(syncs):
        return None
    ends = syncs.groupby(syncs["round"].astype("float64"))["end_s"].max().sort_index()
    k = 1 if len(ends) > 1 else 0
    start = float(ends.iloc[k - 1]) if k > 0 else t_w
    end = float(ends.iloc[k])
    return (start, end) if end > start else None


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
                             "font": {"size": 15}}, barmode="overlay", bargap=0.15,
                      height=120 + 40 * sum(len(g.runs[0].summary.get("per_node") or [0]) for g, _ in picked) // 2
                      + 60 * len(picked), margin={"l": 70, "r": 20, "t": 80, "b": 50})
    for ann in fig.layout.annotations:
        ann.font = {"size": 12}
    fig.update_xaxes(title_text="seconds from the round's start", row=len(picked), col=1)
    return fig


# ---------------------------------------------------------------------- page
def _f(v, fmt: str, none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def _timing_text(timing: dict | None) -> str | None:
    """A timing proxy in words (``timing: {params, layers, step_time_s}``), None without one."""
    if not timing:
        return None
    parts = [f"{timing['params']:.3g} parameters" if timing.get("params") else None,
             f"{timing['layers']} layers" if timing.get("layers") else None,
             f"{timing['step_time_s']:g} s per step" if timing.get("step_time_s") else None]
    return ", ".join(p for p in parts if p) or ", ".join(f"{k}={v}" for k, v in timing.items())


def _pp(v) -> str:
    return "-" if v is None else f"{v * 100:+.1f} pp"


def _x(v, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt) + "\u00d7"


def diff_table_html(rows: list[dict], target_set: bool = True) -> str:
    """The differences against the baseline with the runs as columns and the measures as rows
    (so it fits the page however many measures there are, and prints whole): each cell the
    run's value and, below it, its difference from the baseline's. Rows about losses are left
    out for timing-only runs, the time-to-target row when no target was chosen, the
    after-warm-up rows when no run had a warm-up."""
    losses = any(r["final_eval_loss"] is not None for r in rows)
    warm = any(r.get("warm_up_end_s") for r in rows)
    has_target = any(r["time_to_target_s"] is not None for r in rows) or target_set

    def bytes_cell(v):
        return fmt_bytes(v) if v is not None else "-"

    # (label, value of a row, difference of a row from the baseline, shown?)
    measures = [
        ("final eval loss", lambda r: _f(r["final_eval_loss"], ".4f", "diverged" if r.get("diverged") else "-"),
         lambda r: _f(r["d_final_eval_loss"], "+.4f"), losses),
        ("loss at equal tokens", lambda r: _f(r["loss_at_tokens"], ".4f"), lambda r: _f(r["d_loss_at_tokens"], "+.4f"),
         losses),
        ("loss at equal time", lambda r: _f(r["loss_at_time"], ".4f"), lambda r: _f(r["d_loss_at_time"], "+.4f"),
         losses),
        ("loss at equal tokens after warm-up", lambda r: _f(r["loss_at_method_tokens"], ".4f"),
         lambda r: _f(r["d_loss_at_method_tokens"], "+.4f"), losses and warm),
        ("loss at equal time after warm-up", lambda r: _f(r["loss_at_method_time"], ".4f"),
         lambda r: _f(r["d_loss_at_method_time"], "+.4f"), losses and warm),
        ("CU (whole run)", lambda r: _f(r["utilization"], ".1%"), lambda r: _pp(r["d_utilization"]), True),
        ("CU after warm-up", lambda r: _f(r["method"]["utilization"], ".1%"),
         lambda r: _pp(r["d_method_utilization"]), warm),
        ("comm-blocked after warm-up", lambda r: _f(r["method_blocked"], ".1%"), lambda r: "", warm),
        ("time to target", lambda r: (_f(r["time_to_target_s"], ",.2f", "not reached")
                                      + (" s" if r["time_to_target_s"] is not None else "")),
         lambda r: _x(r["x_time_to_target"], ".2f"), has_target),
        ("bytes on the wire", lambda r: bytes_cell(r["bytes_total"]), lambda r: _x(r["x_bytes_total"]), True),
        ("WAN bytes", lambda r: bytes_cell(r["wan_bytes"]), lambda r: _x(r["x_wan_bytes"]), True),
        ("bytes on the wire after warm-up", lambda r: bytes_cell(r["method"]["bytes_total"]), lambda r: "", warm),
        ("WAN bytes after warm-up", lambda r: bytes_cell(r["method"]["wan_bytes"]),
         lambda r: _x(r["x_method_wan_bytes"]), warm),
        ("bytes / worker / round (the method's round)", lambda r: bytes_cell(r["bytes_per_worker_per_round"]),
         lambda r: "", True),
        ("peak WAN", lambda r: _f(r["peak_wan_gbps"], ".3g") + " Gbit/s" if r["peak_wan_gbps"] is not None else "-",
         lambda r: "", True),
        ("warm-up ends at", lambda r: _f(r.get("warm_up_end_s"), ",.2f", "no warm-up")
         + (" s" if r.get("warm_up_end_s") is not None else ""), lambda r: "", warm),
        ("simulated time", lambda r: _f(r["sim_duration_s"], ",.2f") + " s", lambda r: _x(r["x_sim_duration"]), True),
        ("tokens", lambda r: _f(r["tokens"], ",.0f"), lambda r: "", True),
    ]
    head = "".join(f"<th><span class='swatch' style='background:{r['color']}'></span>{html.escape(r['label'])}"
                   + (" <b>(baseline)</b>" if r["baseline"] else "")
                   + f"<br><span class='algo'>{html.escape(r['algorithm'].split(' ')[0])}</span></th>" for r in rows)
    body = []
    for label, value, delta, shown in measures:
        if not shown:
            continue
        cells = []
        for r in rows:
            d = "baseline" if r["baseline"] else delta(r)
            cells.append(f"<td class='num'>{html.escape(value(r))}"
                         + (f"<br><span class='delta'>{html.escape(d)}</span>" if d else "") + "</td>")
        body.append(f"<tr><th class='measure'>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return (f"<table class='grid fit' id='diff-table'><thead><tr><th>measure</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def common_and_different(groups: list[Group]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The scenario knobs (flattened dotted keys of algorithm, topology, optimizer, compute, run,
    faults, timing) every group shares, and per group the ones that differ (seed left out)."""
    def flat(d, prefix=""):
        out = {}
        for k, v in (d or {}).items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(flat(v, key + "."))
            else:
                out[key] = v if not isinstance(v, list) else str(v)
        return out

    sections = ("algorithm", "topology", "optimizer", "compute", "run", "faults", "timing")
    per = []
    for g in groups:
        sc = g.runs[0].scenario
        knobs = {}
        for sec in sections:
            if sec == "topology":
                knobs["topology"] = topology_text(sc["topology"]) if sc.get("topology") else None
            elif isinstance(sc.get(sec), dict):
                knobs.update(flat(sc[sec], sec + "."))
        per.append(knobs)
    keys = list(dict.fromkeys(k for p in per for k in p))
    common = {k: per[0].get(k) for k in keys if all(p.get(k, "\0") == per[0].get(k) for p in per)}
    # a knob another method does not have (None there) is not a difference worth a cell
    differ = [{k: p.get(k) for k in keys if k not in common and p.get(k) is not None} for p in per]
    common = {k: v for k, v in common.items() if v is not None}
    return {k: str(v) for k, v in common.items()}, [{k: str(v) for k, v in d.items()} for d in differ]


def runs_table_html(groups: list[Group]) -> str:
    """The runs compared: the knobs they all share once, above; per run only what differs."""
    common, differ = common_and_different(groups) if len(groups) > 1 else ({}, [{} for _ in groups])
    header = ["run", "what differs" if len(groups) > 1 else "algorithm and knobs", "seeds", "status", "directories"]
    body = []
    for g, d in zip(groups, differ):
        r0 = g.runs[0]
        what = ", ".join(f"{k}={v}" for k, v in d.items()) if len(groups) > 1 else \
            f"{algorithm_label(r0.algorithm)}; {topology_text(r0.scenario['topology'])}"
        body.append([f"<span class='swatch' style='background:{g.color}'></span>{html.escape(g.label)}",
                     what or "(nothing: seeds only)", ", ".join(str(s) for s in g.seeds),
                     "; ".join(sorted({status_text(r.manifest, r.summary) for r in g.runs})),
                     ", ".join(str(r.path) for r in g.runs)])
    shared = ""
    if common:
        shared = ("<p class='note' id='common-knobs'><b>Common to every run:</b> "
                  + html.escape("; ".join(f"{k}={v}" for k, v in common.items())) + "</p>")
    return shared + grid_table(header, body, "runs-table", raw_first=True)


def build_compare(groups: list[Group], baseline: Group, target: float | None, target_why: str,
                  forced_note: str | None = None, sweep=None, not_drawn: list | None = None
                  ) -> tuple[Page, dict[str, go.Figure]]:
    figs = compare_figures(groups, target)
    n_runs = sum(len(g.runs) for g in groups)
    page = Page(f"{COMPARE_TITLE}{n_runs} runs", kind="compare")
    sc = groups[0].runs[0].scenario
    page.html(f"<h1>Comparison of {n_runs} runs" + (f" in {len(groups)} groups" if len(groups) != n_runs else "")
              + "</h1>")
    timing_only = not any(has_losses(r) for g in groups for r in g.runs)
    proxies = sorted({_timing_text(r.scenario.get("timing")) for g in groups for r in g.runs} - {None})
    if timing_only:  # nothing was trained: the model and data sections describe nothing on this page
        rows = [("timing proxy", "; ".join(proxies) or "-"),
                ("numerics", "none (timing-only runs, numerics: false): no losses, so no loss or time-to-target "
                             "figures; utilization, time and bytes only")]
    else:
        rows = [("model", ", ".join(f"{k}={v}" for k, v in model_used(sc).items())),
                ("data", ", ".join(f"{k}={v}" for k, v in sc["data"].items()))]
        if proxies:
            rows.append(("timing proxy (step times and payloads)", "; ".join(proxies)))
        rows += [("loss floor", _f(groups[0].runs[0].summary.get("loss_floor"), ".4f")),
                 ("target eval loss", f"{_f(target, '.4f')} ({target_why})")]
    rows.append(("baseline", baseline.label))
    page.html(kv_table(rows))
    notice = budget_notice(groups) if timing_only else fair_notice(fair_budgets(groups))
    if notice:
        page.html(f"<p class='notice' id='fair-notice'>{html.escape(notice)}</p>")
    if forced_note:
        page.html(f"<p class='note'><b>Forced:</b> {html.escape(forced_note)}; losses may not be comparable.</p>")
    page.html("<p class='note'>Replications (same scenario, different seeds) are one line: the mean, with a "
              "band from the lowest to the highest seed.</p>")
    split = split_note(groups)  # runs of one scenario whose plug-in or data files differ (sim.fingerprint)
    if split:
        page.html(f"<p class='note' id='split-note'>{html.escape(split)}</p>")
    page.html(runs_table_html(groups))
    if not_drawn:
        page.html("<h2>Runs not drawn (they ended before writing their tables)</h2>"
                  + grid_table(["run", "status", "error"], [[str(p), st, e or "-"] for p, st, e in not_drawn],
                               "not-drawn-table"))
    rows_ = diff_rows(groups, baseline, target)
    page.html("<h2>Differences against the baseline</h2>" + diff_table_html(rows_, target is not None))
    page.data("locosim-compare", rows_)
    if sweep is not None:  # a sweep directory: each metric against each swept parameter first
        from sim.report.sweep import sweep_figures

        sfigs = sweep_figures(*sweep)
        if sfigs:
            page.html("<h2>Sweep: metrics vs swept parameters</h2><div class='cols'>")
            for fig_id, fig in sfigs.items():
                page.figure(fig_id, fig)
                figs[fig_id] = (fig, False)
            page.html("</div>")
    order = [("Learning", ["cmp-fair", "cmp-tradeoff", "cmp-loss-time", "cmp-loss-bytes", "cmp-loss-tokens",
                           "cmp-diagnostics"]),
             ("Utilization and cost", ["cmp-cu", "cmp-time-to-target", "cmp-states", "cmp-bytes", "cmp-exposed",
                                       "cmp-rounds"])]
    for title, ids in order:
        if not any(i in figs for i in ids):
            continue
        page.html(f"<h2>{title}</h2>")
        if title == "Utilization and cost":
            page.html(f"<p class='note'>{BYTES_DEFINITION}</p>")
        page.html("<div class='cols'>")
        for i in ids:
            if i in figs:
                fig, wide = figs[i]
                page.figure(i, fig, wide=wide)
        page.html("</div>")
    return page, {k: f for k, (f, _w) in figs.items()}


COMPARE_TITLE = "locosim compare: "  # how a page this module wrote begins its <title>


def is_compare_page(path: Path) -> bool:
    """Whether ``path`` is a page ``write_compare`` wrote (its <title> is in the first bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048).decode("utf-8", "replace")
    except OSError:
        return False
    return f"<title>{html.escape(COMPARE_TITLE)}" in head


def check_output(out: Path) -> None:
    """Refuse (CompareError) to write the page over a file of a run directory (one holding
    manifest.json) or a sweep directory, other than a compare page written before: above all
    the directory's own files (manifest, summary, tables, dashboard, sweep index and lock)."""
    from sim.rundir import RUN_FILES, SWEEP_FILES, is_run_dir, is_sweep_dir

    target = out.resolve()  # a symlink is judged by the file it would overwrite
    where = target.parent
    kind = "run" if is_run_dir(where) else "sweep" if is_sweep_dir(where) else None
    if kind is None:
        return
    if target.name in RUN_FILES + SWEEP_FILES:
        raise CompareError(f"{out}: is the {target.name} of {kind} directory {where}; write the page elsewhere "
                           "(nothing was overwritten)")
    if target.exists() and not is_compare_page(target):
        raise CompareError(f"{out}: exists in {kind} directory {where} and is not a compare page; write the page "
                           "elsewhere (nothing was overwritten)")


def check_page_output(out: Path) -> Path:
    """check_output, then the rule of every output flag (sim.outputs): a new file, or a compare
    page written before; never another file or a device."""
    from sim.outputs import OutputError, check_page

    check_output(out)
    try:
        return check_page(out, "compare")
    except OutputError as err:
        raise CompareError(f"-o {out}: {err}") from None


def write_compare(paths: list[str | Path], out: str | Path, baseline: str | Path | None = None,
                  force: bool = False, target: float | None = None, png_dir: str | Path | None = None
                  ) -> tuple[Path, list[Group], str | None]:
    """Write the comparison page; returns (its path, the groups, a one-line PNG note or None).
    CompareError (one line) for runs that cannot be compared as asked, or for an ``out`` that
    would overwrite a run's or a sweep's own files (checked first, before anything is read)."""
    check_page_output(Path(out))
    not_drawn: list = []
    groups = load_groups(paths, force=force, not_drawn=not_drawn)
    runs = [r for g in groups for r in g.runs]
    forced = incomparable(runs) if force else None
    base = pick_baseline(groups, baseline)
    tgt, why = choose_target(groups, target)
    from sim.report.sweep import load_sweep

    try:
        sweep = load_sweep(paths[0]) if len(paths) == 1 else None
    except (OSError, ValueError) as err:  # a damaged sweep.json / index.parquet: one line naming it
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CompareError(msg if msg.startswith(str(paths[0])) else f"{paths[0]}: unreadable sweep files ({msg})") \
            from None
    page, figs = build_compare(groups, base, tgt, why, forced, sweep, not_drawn)
    out = Path(out)
    page.write(check_page_output(out))  # again: the file may have appeared while the runs were read
    note = None
    if png_dir is not None:
        written, note = export_pngs(figs, Path(png_dir))
        if note is None:
            note = f"{len(written)} PNGs in {png_dir}"
    split = split_note(groups)  # runs of one scenario whose plug-in or data files differ: said, not merged
    if split:
        note = split if note is None else f"{note}; {split}"
    if not_drawn:
        skipped = (f"{len(not_drawn)} run(s) not drawn (no tables): "
                   + ", ".join(f"{p} ({st})" for p, st, _e in not_drawn))
        note = skipped if note is None else f"{note}; {skipped}"
    return out, groups, note
