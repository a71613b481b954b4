"""The comparison's numbers (sim.report.compare_analysis) on small tables written by hand: bands
over replications, fair budgets, losses at a matched budget, group means and differences from
the baseline, hidden vs exposed communication, one round's window; each value worked out by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.report.compare_analysis import (CompareError, band, choose_target, common_and_different, diff_rows,
                                         exposed_shares, fair_budgets, grid_point_label, group_stats, loss_after_warm_up,
                                         loss_at, pick_baseline, round_window)
from sim.report.runs import Group, RunData


def evals(points, kind="eval"):
    """Metrics rows of ``kind`` from (time_s, tokens, bytes, loss) tuples."""
    return pd.DataFrame([{"kind": kind, "time_s": t, "tokens": k, "bytes": b, "loss": l, "worker": -1, "step": i}
                         for i, (t, k, b, l) in enumerate(points)])


def summary(**kw):
    s = {"sim_duration_s": 10.0, "tokens": 1000, "final_eval_loss": 2.0, "utilization": 0.5, "workers": 2,
         "rounds": 4, "bytes_total": 800.0, "wan_bytes": 400.0, "peak_wan_gbps": 1.0,
         "state_fractions": {"compute": 0.5, "comm_blocked": 0.5, "straggler_wait": 0.0, "down": 0.0}}
    s.update(kw)
    return s


def run(label, metrics=None, events=None, seed=0, path=None, scenario=None, **summary_kw):
    manifest = {"seed": seed, "status": "completed",
                "scenario": scenario or {"algorithm": {"name": label}, "topology": None}}
    return RunData(Path(path or f"/runs/{label}"), manifest, summary(**summary_kw),
                   events if events is not None else pd.DataFrame(columns=["kind", "node", "state", "start_s", "end_s"]),
                   metrics if metrics is not None else evals([]), label=label)


# ---------------------------------------------------------------------- bands
def test_a_band_of_two_replications_is_their_mean_min_and_max_on_a_common_grid():
    """Two seeds' eval curves on the same tokens give, at each token count, the mean, the lower and
    the higher of their two losses (4 and 6 -> 5, 4, 6)."""
    a = run("a", evals([(1, 0, 0, 4.0), (2, 10, 0, 3.0), (3, 20, 0, 2.0)]))
    b = run("b", evals([(1, 0, 0, 6.0), (2, 10, 0, 5.0), (3, 20, 0, 4.0)]))
    x, mean, lo, hi = band([a, b], "tokens", n=3)
    np.testing.assert_allclose(x, [0, 10, 20])
    np.testing.assert_allclose(mean, [5.0, 4.0, 3.0])
    np.testing.assert_allclose(lo, [4.0, 3.0, 2.0])
    np.testing.assert_allclose(hi, [6.0, 5.0, 4.0])


def test_a_band_covers_only_the_range_every_replication_reached():
    """A band's grid runs from the latest first x to the earliest last x of its curves (5 to 20 here),
    each curve linearly interpolated onto it: at x = 5, the first seed is half-way from 4 to 3."""
    a = run("a", evals([(1, 0, 0, 4.0), (2, 10, 0, 3.0), (3, 20, 0, 2.0)]))
    b = run("b", evals([(1, 5, 0, 6.0), (2, 30, 0, 1.0)]))
    x, mean, lo, hi = band([a, b], "tokens", n=4)
    np.testing.assert_allclose(x, [5, 10, 15, 20])
    np.testing.assert_allclose(lo[0], 3.5)  # seed a half-way between 4 (x=0) and 3 (x=10)
    np.testing.assert_allclose(hi[0], 6.0)
    np.testing.assert_allclose(mean[-1], (2.0 + (6.0 - 5.0 * 15 / 25)) / 2)  # b at 20: 6 - 5 * (15 / 25) = 3


def test_a_band_of_one_run_is_its_own_points_and_keeps_the_later_of_two_evals_at_one_x():
    """One run's band is its own curve, min = max = mean; of two evals at one x (a grid eval and the
    closing eval), the later one is what the run had there."""
    a = run("a", evals([(1, 0, 0, 4.0), (2, 10, 0, 3.0), (3, 10, 0, 2.5)]))
    x, mean, lo, hi = band([a], "tokens")
    np.testing.assert_allclose(x, [0, 10])
    np.testing.assert_allclose(mean, [4.0, 2.5])
    assert list(lo) == list(mean) == list(hi)


# ---------------------------------------------------------------------- fair budgets
def test_the_fair_budget_is_the_least_that_every_run_reached():
    """Of two runs whose evals reached 100 tokens at 12 s and 80 tokens at 10 s, the fair budgets are
    80 tokens and 10 s; runs ending at 12 s and 10 s (more than 1% apart) ended at different budgets."""
    a = run("a", evals([(0, 0, 0, 5.0), (12.0, 100, 0, 3.0)]), sim_duration_s=12.0, tokens=100, final_eval_loss=3.0)
    b = run("b", evals([(0, 0, 0, 5.0), (10.0, 80, 0, 2.0)]), sim_duration_s=10.0, tokens=80, final_eval_loss=2.0)
    fair = fair_budgets([Group("a", [a]), Group("b", [b])])
    assert fair["tokens"] == 80 and fair["time_s"] == 10.0
    assert fair["end_s"] == (10.0, 12.0) and fair["end_tokens"] == (80.0, 100.0)
    assert fair["final_loss"] == (2.0, 3.0)
    assert fair["time_differs"] and fair["tokens_differ"] and fair["loss_differs"]
    assert not fair["after_warm_up"]


def test_equal_budgets_are_not_flagged_as_different():
    """Runs that ended within 1% of each other in simulated time and tokens did not end at different
    budgets."""
    a = run("a", evals([(0, 0, 0, 5.0), (10.0, 100, 0, 3.0)]), sim_duration_s=10.0, tokens=100)
    b = run("b", evals([(0, 0, 0, 5.0), (10.05, 100, 0, 3.0)]), sim_duration_s=10.05, tokens=100)
    fair = fair_budgets([Group("a", [a]), Group("b", [b])])
    assert not fair["time_differs"] and not fair["tokens_differ"]


def test_fair_budgets_after_warm_up_count_from_each_runs_own_warm_up_end():
    """With warm-up, the method's fair budget is the least over runs of (last eval - warm-up end):
    a run warming up until 4 s and 40 tokens whose last eval is at 12 s and 100 tokens has 8 s and 60
    tokens of method; one without warm-up reaching 10 s and 80 tokens has 10 s and 80: the fair method
    budget is 8 s and 60 tokens."""
    warm = {"warm_up": {"end_s": 4.0, "tokens": 40}}
    a = run("a", evals([(0, 0, 0, 5.0), (12.0, 100, 0, 3.0)]), phases=warm)
    b = run("b", evals([(0, 0, 0, 5.0), (10.0, 80, 0, 2.0)]))
    fair = fair_budgets([Group("a", [a]), Group("b", [b])])
    assert fair["after_warm_up"]
    assert fair["method_time_s"] == 8.0 and fair["method_tokens"] == 60.0


def test_no_fair_budget_without_losses():
    """Timing-only runs (no eval rows) have no fair budget."""
    assert fair_budgets([Group("a", [run("a")])]) is None


def test_the_loss_at_a_budget_is_the_latest_eval_at_or_before_it():
    """The loss a run had shown by 15 tokens is its eval at 10 tokens (no interpolation); before
    its first eval, none."""
    a = run("a", evals([(1.0, 10, 0, 3.0), (2.0, 20, 0, 2.0)]))
    assert loss_at(a, "tokens", 15) == 3.0
    assert loss_at(a, "tokens", 20) == 2.0
    assert loss_at(a, "tokens", 5) is None
    assert loss_at(a, "time_s", 1.5) == 3.0


def test_the_loss_after_warm_up_is_measured_from_the_end_of_warm_up():
    """5 s after a warm-up that ended at 4 s is 9 s of the run: the eval at 8 s, not the one at 10 s."""
    a = run("a", evals([(4.0, 40, 0, 4.0), (8.0, 80, 0, 3.0), (10.0, 100, 0, 2.0)]),
            phases={"warm_up": {"end_s": 4.0, "tokens": 40}})
    assert loss_after_warm_up(a, "time_s", 5.0) == 3.0
    assert loss_after_warm_up(a, "tokens", 60.0) == 2.0  # 40 + 60 = 100 tokens


# ---------------------------------------------------------------------- group numbers and differences
def test_a_groups_numbers_are_the_mean_over_its_seeds_with_their_range():
    """Two seeds with CU 0.4 and 0.6 give the group CU 0.5 with range (0.4, 0.6); bytes per worker per
    round left out of a summary are bytes / (workers * rounds) = 800 / (2 * 4) = 100."""
    a = run("s0", evals([(0, 0, 0, 5.0)]), utilization=0.4)
    b = run("s1", evals([(0, 0, 0, 5.0)]), seed=1, utilization=0.6, bytes_total=1600.0)
    st = group_stats(Group("g", [a, b]), target=None)
    assert st["utilization"] == pytest.approx(0.5)
    assert st["utilization_range"] == (0.4, 0.6)
    assert st["bytes_per_worker_per_round"] == pytest.approx((100.0 + 200.0) / 2)
    assert st["time_to_target_s"] is None and st["loss_at_tokens"] is None


def test_time_to_target_is_missing_for_a_group_when_one_seed_never_reached_it():
    """The group mean of time to target exists only when every seed reached the target: a seed that
    reached 2.5 at 2 s and one that never did give none."""
    a = run("s0", evals([(1.0, 10, 0, 3.0), (2.0, 20, 0, 2.0)]))
    b = run("s1", evals([(1.0, 10, 0, 3.0), (2.0, 20, 0, 2.9)]), seed=1)
    assert group_stats(Group("g", [a]), target=2.5)["time_to_target_s"] == 2.0
    assert group_stats(Group("g", [a, b]), target=2.5)["time_to_target_s"] is None


def test_differences_from_the_baseline_at_a_matched_budget():
    """At the fair budget (80 tokens, 8 s) the baseline had loss 3.0 and the other run 2.5: the other
    run's difference is -0.5; its bytes (1,600 against 800) are 2x, its CU 0.7 against 0.5 is +0.2."""
    base = run("base", evals([(4.0, 40, 0, 4.0), (8.0, 80, 0, 3.0), (12.0, 120, 0, 2.0)]))
    other = run("other", evals([(4.0, 40, 0, 3.5), (8.0, 80, 0, 2.5)]), bytes_total=1600.0, utilization=0.7)
    gb, go_ = Group("base", [base]), Group("other", [other])
    rows = diff_rows([gb, go_], gb, target=None)
    assert [r["baseline"] for r in rows] == [True, False]
    assert rows[0]["loss_at_tokens"] == 3.0 and rows[1]["loss_at_tokens"] == 2.5
    assert rows[1]["d_loss_at_tokens"] == pytest.approx(-0.5)
    assert rows[1]["d_loss_at_time"] == pytest.approx(-0.5)
    assert rows[1]["x_bytes_total"] == pytest.approx(2.0)
    assert rows[1]["d_utilization"] == pytest.approx(0.2)
    assert rows[0]["d_loss_at_tokens"] == 0.0 and rows[0]["x_bytes_total"] == 1.0


# ---------------------------------------------------------------------- target and baseline
def test_the_target_is_the_one_given_else_the_runs_common_one_else_none():
    """--target wins; else every run's own run.target_eval_loss when they agree; runs that disagree get none."""
    a = run("a", evals([(0, 0, 0, 5.0)]), target_eval_loss=2.0)
    b = run("b", evals([(0, 0, 0, 5.0)]), target_eval_loss=2.0)
    c = run("c", evals([(0, 0, 0, 5.0)]), target_eval_loss=3.0)
    assert choose_target([Group("a", [a])], 1.5)[0] == 1.5
    assert choose_target([Group("a", [a]), Group("b", [b])], None)[0] == 2.0
    assert choose_target([Group("a", [a]), Group("c", [c])], None)[0] is None


def test_the_baseline_is_named_by_a_runs_label_else_the_first_group():
    """--baseline picks the group holding the run of that label; none given: the first group; a
    label of no compared run is refused naming the runs."""
    ga, gb = Group("a", [run("a")]), Group("b", [run("b")])
    assert pick_baseline([ga, gb], None) is ga
    assert pick_baseline([ga, gb], "b") is gb
    with pytest.raises(CompareError, match="not one of the compared runs"):
        pick_baseline([ga, gb], "zzz")


# ---------------------------------------------------------------------- communication and rounds
def states(rows):
    return pd.DataFrame([{"kind": "state", "node": n, "state": s, "start_s": a, "end_s": b, "round": None}
                         for n, s, a, b in rows])


def syncs(rows):
    return pd.DataFrame([{"kind": "sync", "node": "all", "state": None, "start_s": a, "end_s": b, "round": k}
                         for k, a, b in rows])


def test_hidden_and_exposed_communication_are_shares_of_worker_time_during_syncs():
    """During one sync from 0 to 2 s, a worker computing throughout and one blocked for 1 s then
    computing give 3 of 4 worker-seconds hidden (0.75) and 1 exposed (0.25)."""
    ev = pd.concat([states([("w0", "compute", 0.0, 2.0), ("w1", "comm_blocked", 0.0, 1.0),
                            ("w1", "compute", 1.0, 2.0)]), syncs([(0, 0.0, 2.0)])], ignore_index=True)
    hidden, exposed, n = exposed_shares(run("a", events=ev, workers=2))
    assert (hidden, exposed, n) == (pytest.approx(0.75), pytest.approx(0.25), 1)


def test_syncs_during_warm_up_are_left_out_of_the_exposed_share():
    """A sync that starts before warm-up ends does not count; with no other sync there is no share."""
    ev = pd.concat([states([("w0", "comm_blocked", 0.0, 2.0)]), syncs([(0, 0.0, 2.0)])], ignore_index=True)
    assert exposed_shares(run("a", events=ev, workers=1, phases={"warm_up": {"end_s": 1.0}})) is None


def test_the_round_window_is_the_second_round_after_warm_up():
    """Rounds whose last syncs end at 3, 6 and 9 s: the window shown is the second round, 3 to 6 s;
    with one round only, from warm-up's end (0) to its sync's end."""
    ev = syncs([(0, 2.0, 3.0), (1, 5.0, 6.0), (1, 4.0, 5.5), (2, 8.0, 9.0)])
    assert round_window(run("a", events=ev)) == (3.0, 6.0)
    assert round_window(run("a", events=syncs([(0, 2.0, 3.0)]))) == (0.0, 3.0)


# ---------------------------------------------------------------------- labels and knobs
def test_a_sweep_groups_label_is_its_grid_point_and_seeds():
    """Runs named as a sweep names them (point-seed=N-hash) are labelled by the grid point and seeds."""
    g = Group("x", [run("a", path="/s/algorithm.inner_steps=10-lr=0.1-seed=0-0123456789"),
                    run("b", seed=1, path="/s/algorithm.inner_steps=10-lr=0.1-seed=1-abcdef0123")])
    assert grid_point_label(g) == "algorithm.inner_steps=10, lr=0.1 (seeds 0, 1)"
    assert grid_point_label(Group("y", [run("plain")])) is None


def test_knobs_shared_by_every_group_are_common_and_the_rest_differ():
    """inner_steps equal in both groups is common; outer_lr 0.7 against 0.5 differs; a knob only one
    method has (None in the other) is not shown as a difference of the other."""
    a = run("a", scenario={"algorithm": {"name": "diloco", "inner_steps": 10, "outer_lr": 0.7, "x": 1}})
    b = run("b", scenario={"algorithm": {"name": "diloco", "inner_steps": 10, "outer_lr": 0.5, "x": None}})
    common, differ = common_and_different([Group("a", [a]), Group("b", [b])])
    assert common == {"algorithm.name": "diloco", "algorithm.inner_steps": "10"}
    assert differ == [{"algorithm.outer_lr": "0.7", "algorithm.x": "1"}, {"algorithm.outer_lr": "0.5"}]


def test_the_analysis_does_not_import_plotly():
    """compare_analysis computes without plotly: importing it in a fresh interpreter loads no plotly module."""
    import subprocess

    code = ("import sys, sim.report.compare_analysis; "
            "print(any(m == 'plotly' or m.startswith('plotly.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
