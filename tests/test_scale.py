"""Scale: quiet stretches (a worker's steps that send and need nothing, run as one event),
O(1) arrivals at a collective, the Gantt binning of many workers, and the thread choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.algorithms import make_algorithm
from sim.metrics.tables import events_table
from sim.runner import Simulation
from sim.scenario import parse_scenario
from sim.training.threads import SMALL_STEP_FLOP, choose_threads


def _data(algo: dict, faults: dict | None = None, regions=(3, 2), run: dict | None = None) -> dict:
    data = {
        "seed": 3, "numerics": False, "timing": {"params": 2.0e6, "layers": 4, "step_time_s": 0.1},
        "topology": {"regions": [{"name": r, "nodes": n} for r, n in zip(["us", "eu", "ap"], regions)],
                     "links": [{"a": "us", "b": r, "bandwidth_gbps": 1.0, "latency_s": 0.03}
                               for r in ["eu", "ap"][:len(regions) - 1]]},
        "algorithm": algo, "run": run or {"max_rounds": 6},
    }
    if faults:
        data["faults"] = faults
    return data


STRAGGLERS = {"stragglers": [{"factor": {"kind": "lognormal", "sigma": 0.5}},
                             {"scope": "region", "regions": ["eu"], "factor": {"kind": "pareto", "alpha": 3.0}}]}
SLOW = {"stragglers": [{"slow_periods": {"factor": 3.0, "mean_on_s": 0.5, "mean_off_s": 1.5}}],
        "links": [{"a": "us", "b": "eu", "mtbf_s": 2.0, "mttr_s": 0.3}]}
WINDOWS = {"links": [{"a": "us", "b": "eu", "degrade": [{"start_s": 0.5, "end_s": 1.4, "factor": 0.2},
                                                        {"start_s": 2.0, "end_s": 2.6, "factor": 0.5}]}]}
CASES = [
    ({"name": "diloco", "inner_steps": 7}, None, None),
    ({"name": "diloco", "inner_steps": 7, "sync_grain": "step"}, STRAGGLERS, None),
    ({"name": "streaming_diloco", "inner_steps": 12, "fragment_layers": 1, "overlap_steps": 2}, STRAGGLERS, None),
    ({"name": "streaming_diloco", "inner_steps": 10, "fragment_layers": 2, "fragment_schedule": "interval"}, SLOW, None),
    ({"name": "eager_diloco", "inner_steps": 5, "warm_start_steps": 3}, SLOW, None),
    ({"name": "noloco", "inner_steps": 6}, STRAGGLERS, {"max_sim_time_s": 4.0}),
    ({"name": "diloco", "inner_steps": 9}, STRAGGLERS, {"max_sim_time_s": 3.0}),
    ({"name": "ddp"}, STRAGGLERS, {"max_rounds": 20}),
    # layer grain (one collective per layer) with stragglers and bandwidth windows (issue 26)
    ({"name": "diloco", "inner_steps": 7, "sync_grain": "layer"}, {**STRAGGLERS, **WINDOWS}, None),
    ({"name": "streaming_diloco", "inner_steps": 12, "fragment_layers": 1, "overlap_steps": 1, "sync_grain": "layer"},
     {**STRAGGLERS, **WINDOWS}, None),
    ({"name": "noloco", "inner_steps": 6, "sync_grain": "layer"}, {**STRAGGLERS, **WINDOWS}, {"max_sim_time_s": 4.0}),
    ({"name": "eager_diloco", "inner_steps": 5, "sync_grain": "layer"}, {**STRAGGLERS, **WINDOWS}, None),
]


@pytest.mark.parametrize("algo, faults, run", CASES)
def test_quiet_stretches_leave_the_timeline_identical(algo, faults, run):
    """A run with quiet stretches gives exactly (to the bit) the events, rounds, tokens and
    steps of the same run stepping one event per inner step: stragglers (per node and shared
    by a region), slow periods, link outages, a time budget that falls inside a stretch, and
    at layer grain (a collective per layer) with stragglers and bandwidth windows."""
    runs = {}
    for coalesce in (False, True):
        d = _data(algo, faults, run=run)
        d["run"] = {**d["run"], "coalesce": coalesce}
        sim = Simulation(parse_scenario(d))
        sim.run()
        runs[coalesce] = sim
    a, b = runs[False], runs[True]
    pd.testing.assert_frame_equal(events_table(a.recorder), events_table(b.recorder), check_exact=True)
    assert (a.rounds, a.tokens) == (b.rounds, b.tokens)
    assert [w.steps_done for w in a.workers] == [w.steps_done for w in b.workers]
    if algo["name"] != "ddp":  # and the stretches really ran: fewer SimPy events were scheduled
        assert all(w.quiet is not None for w in b.workers) and all(w.quiet is None for w in a.workers)
        assert next(b.env._eid) < next(a.env._eid)


def test_quiet_stretches_are_off_where_someone_looks_at_every_step():
    """Failures (a rejoining worker watches its peers' steps) and token budgets turn them off."""
    failing = Simulation(parse_scenario(_data({"name": "diloco", "inner_steps": 5},
                                              {"failures": {"mtbf_s": 5.0, "mttr_s": 0.5}})))
    tokens = Simulation(parse_scenario(_data({"name": "diloco", "inner_steps": 5}, run={"max_tokens": 100000})))
    plain = Simulation(parse_scenario(_data({"name": "diloco", "inner_steps": 5})))
    assert all(w.quiet is None for w in failing.workers + tokens.workers)
    assert all(w.quiet is not None for w in plain.workers)


@pytest.mark.parametrize("algo", [
    {"name": "ddp"}, {"name": "diloco", "inner_steps": 5, "warm_start_steps": 4},
    {"name": "diloco_delayed", "inner_steps": 4}, {"name": "eager_diloco", "inner_steps": 3, "sync_grain": "step"},
    {"name": "noloco", "inner_steps": 4},
    {"name": "streaming_diloco", "inner_steps": 9, "fragment_layers": 1, "overlap_steps": 2},
    {"name": "streaming_diloco", "inner_steps": 10, "fragment_layers": 2, "overlap_steps": 0,
     "fragment_schedule": "interval"},
])
def test_quiet_steps_count_exactly_the_empty_plans_ahead(algo):
    """Schedule as data, no engine: ``quiet_steps(w, s)`` is the number of consecutive steps
    from s whose plan sends and needs nothing, for every step of the first rounds."""
    sc = parse_scenario(_data(algo))
    alg = make_algorithm(sc.algorithm, 5, sc.seed)
    alg.configure([(f"blocks.{i}.w", 100) for i in range(4)], 4)
    empty = []
    for s in range(1, 80):
        p = alg.at_step(0, s)
        empty.append(not (p.during or p.sends or p.needs))
    for s in range(1, 60):
        run = 0
        while empty[s - 1 + run]:
            run += 1
        assert alg.quiet_steps(0, s) == run, s


def test_an_arrival_does_not_rescan_the_group():
    """A collective of many members starts when the last expected one arrives, and a member
    going down mid-way is not waited for (the waiting set stays exact)."""
    sim = Simulation(parse_scenario(_data({"name": "diloco", "inner_steps": 3}, regions=(40, 40),
                                          run={"max_rounds": 3})))
    sim.run()
    assert sim.rounds == 3 and all(s.participants == 80 for s in sim.recorder.syncs)


def test_gantt_bins_of_all_nodes_at_once_equal_each_node_alone():
    """The dashboard's binning of every node in one pass equals binning each node's spans
    alone (the per-node computation it replaced), to the bit."""
    from sim.report.style import STATES
    from sim.report.timeline import state_times_by_node as _state_times_by_node

    rng = np.random.default_rng(0)
    rows = []
    for n in range(7):
        t = 0.0
        for _ in range(30):
            d = float(rng.exponential(0.3))
            rows.append({"node": f"r/{n}", "state": STATES[int(rng.integers(len(STATES)))], "start_s": t,
                         "end_s": t + d})
            t += d
    st = pd.DataFrame(rows)
    edges = np.linspace(0, st["end_s"].max(), 37)
    together = _state_times_by_node(st, [f"r/{n}" for n in range(8)], edges)
    for n in range(7):
        alone = _state_times_by_node(st[st["node"] == f"r/{n}"], [f"r/{n}"], edges)[f"r/{n}"]
        assert np.array_equal(together[f"r/{n}"], alone)
        mine = st[st["node"] == f"r/{n}"]
        for k, state in enumerate(STATES):  # each state's total is the time in its spans
            spans = mine[mine["state"] == state]
            assert together[f"r/{n}"][k].sum() == pytest.approx((spans["end_s"] - spans["start_s"]).sum())
    assert not together["r/7"].any()  # a node without spans


def test_thread_choice_is_one_for_tiny_steps_and_the_share_of_cores_for_large():
    """auto: one thread below the small-step bound, the cores shared among the processes of
    a pool above it; a number is taken as given."""
    assert choose_threads("auto", SMALL_STEP_FLOP / 10, cores=16) == 1
    assert choose_threads("auto", SMALL_STEP_FLOP * 10, cores=16) == 16
    assert choose_threads("auto", SMALL_STEP_FLOP * 10, share=4, cores=16) == 4
    assert choose_threads("auto", SMALL_STEP_FLOP * 10, share=32, cores=16) == 1
    assert choose_threads(3, 1.0, cores=16) == 3
