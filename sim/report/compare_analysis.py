"""What the comparison page computes, apart from how it draws it: which run is the baseline,
which target loss 'time to target' is measured at, the fair budgets (the most tokens and the
most simulated time every run reached), each run's loss at them, bands over replications
(mean, min, max on a common grid), each group's mean numbers and their differences from the
baseline's, the share of communication hidden behind compute, one outer round's window, and
the scenario knobs the runs share or not.

Pure pandas/numpy over the run directories' tables (``runs.RunData``), no plotly, so that
each number can be tested on a small table written by hand (tests/test_compare_analysis.py);
``compare_figures`` draws them, ``compare`` assembles the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from sim.metrics.tables import time_to_loss
from sim.report.phases import method_phase, warm_up_end, warm_up_tokens
from sim.report.runs import Group, RunData, algorithm_label
from sim.report.style import STATES
from sim.report.text import topology_text


GRID_POINTS = 200  # points of the common grid a band of several replications is interpolated onto


class CompareError(ValueError):
    """Runs that cannot be compared as asked; ``str(err)`` is one line."""


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


def eval_rows(run: RunData) -> pd.DataFrame:
    """A run's eval rows of metrics.parquet (the global model's loss)."""
    return run.metrics[run.metrics["kind"] == "eval"]


def loss_at(run: RunData, column: str, x: float) -> float | None:
    """The latest eval loss measured at or before ``x`` (tokens or simulated seconds): what the
    run had shown by then, no interpolation; None when it had no eval by then."""
    ev = eval_rows(run)
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

    warm = [(warm_up_end(r.summary) or 0.0, warm_up_tokens(r.summary)) for r in runs]
    return {"tokens": min(float(eval_rows(r)["tokens"].max()) for r in runs),
            "time_s": min(float(eval_rows(r)["time_s"].max()) for r in runs),
            # the same two points counted from the end of each run's warm-up (0 without one)
            "after_warm_up": any(w[0] > 0 for w in warm),
            "method_tokens": min(float(eval_rows(r)["tokens"].max()) - w[1] for r, w in zip(runs, warm)),
            "method_time_s": min(float(eval_rows(r)["time_s"].max()) - w[0] for r, w in zip(runs, warm)),
            "end_s": (min(ends_s), max(ends_s)), "end_tokens": (min(ends_tok), max(ends_tok)),
            "final_loss": (min(finite), max(finite)) if finite else (None, None),
            "time_differs": differ(ends_s), "tokens_differ": differ(ends_tok),
            "loss_differs": differ(finite) or len(finite) != len(finals)}


def loss_after_warm_up(run: RunData, column: str, x: float) -> float | None:
    """``loss_at`` ``x`` tokens or seconds after the end of the run's warm-up."""
    start = (warm_up_end(run.summary) or 0.0) if column == "time_s" else warm_up_tokens(run.summary)
    return loss_at(run, column, start + x)


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
        "state_fractions": {st: mean([s["state_fractions"].get(st, 0.0) for s in ss]) for st in STATES},
        "time_to_target_s": mean(ttt),
        "time_to_target_range": spread(ttt),
        "bytes_total": mean([s["bytes_total"] for s in ss]),
        "wan_bytes": mean([s.get("wan_bytes", 0.0) for s in ss]),
        "bytes_per_worker_per_round": mean(bpwr),
        "peak_wan_gbps": mean([s.get("peak_wan_gbps") for s in ss]),
        "sim_duration_s": mean([s["sim_duration_s"] for s in ss]),
        "tokens": mean([s.get("tokens", 0) for s in ss]),
        "warm_up_end_s": mean([warm_up_end(s) for s in ss]) if any(warm_up_end(s) for s in ss) else None,
        "method": {k: mean([method_phase(s).get(k) for s in ss]) for k in PHASE_KEYS},
        "method_blocked": mean([(method_phase(s).get("state_fractions") or {}).get("comm_blocked") for s in ss]),
        "loss_at_method_tokens": mean([loss_after_warm_up(r, "tokens", fair["method_tokens"]) for r in g.runs])
        if fair and fair["after_warm_up"] else None,
        "loss_at_method_time": mean([loss_after_warm_up(r, "time_s", fair["method_time_s"]) for r in g.runs])
        if fair and fair["after_warm_up"] else None,
        "loss_at_tokens": mean([loss_at(r, "tokens", fair["tokens"]) for r in g.runs]) if fair else None,
        "loss_at_time": mean([loss_at(r, "time_s", fair["time_s"]) for r in g.runs]) if fair else None,
    }


PHASE_KEYS = ("utilization", "bytes_total", "wan_bytes", "bytes_per_worker_per_round", "sim_duration_s", "tokens")


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
