"""Lazy step boundaries (``sim.engine.lazy``, issue 26): where nobody looks at a step as it
ends, a worker wakes only to release a send or at a need not yet met. These tests hold it to
the plain step loop (``run.coalesce: false``) where tests/test_scale.py does not reach: a run
stopped at any moment, the fallback for a wake no single timeout lands on, and the plan a
periodic method looks up once a step."""

from __future__ import annotations

import pandas as pd
import pytest

from sim.algorithms import make_algorithm
from sim.engine import lazy, node
from sim.metrics.tables import events_table
from sim.runner import Simulation
from sim.scenario import parse_scenario

STRAGGLERS = {"stragglers": [{"factor": {"kind": "lognormal", "sigma": 0.5}}]}
WINDOWS = {"links": [{"a": "us", "b": "eu", "degrade": [{"start_s": 0.5, "end_s": 1.4, "factor": 0.2}]}]}
STREAMING = {"name": "streaming_diloco", "inner_steps": 12, "fragment_layers": 1, "overlap_steps": 1,
             "sync_grain": "layer"}


def _data(algo: dict, faults: dict | None, coalesce: bool, run: dict | None = None) -> dict:
    d = {"seed": 7, "numerics": False, "timing": {"params": 2.0e6, "layers": 4, "step_time_s": 0.1},
         "topology": {"regions": [{"name": "us", "nodes": 3}, {"name": "eu", "nodes": 2}],
                      "links": [{"a": "us", "b": "eu", "bandwidth_gbps": 1.0, "latency_s": 0.03}]},
         "algorithm": algo, "run": {**(run or {"max_rounds": 6}), "coalesce": coalesce}}
    if faults:
        d["faults"] = faults
    return d


@pytest.mark.parametrize("faults", [None, {**STRAGGLERS, **WINDOWS}], ids=["ties", "stragglers_windows"])
@pytest.mark.parametrize("algo", [STREAMING, {"name": "diloco", "inner_steps": 7, "sync_grain": "layer"}],
                         ids=["streaming", "diloco"])
def test_a_run_stopped_at_any_moment_has_done_the_plain_loops_steps(algo, faults):
    """Stopped by ``env.run(until=t)`` at moments inside and between wakes (none of them a step's
    end: there ``until`` goes first, before the plain loop's step ends, while a lazy step that
    ends exactly then counts as done), every lazy worker has done (``steps_done``) exactly the
    steps the plain loop has done by then and is in the same state, and the run goes on to the
    same events."""
    plain = Simulation(parse_scenario(_data(algo, faults, False)))
    lazy_run = Simulation(parse_scenario(_data(algo, faults, True)))
    assert all(w.quiet is not None for w in lazy_run.workers) and all(w.quiet is None for w in plain.workers)
    for t in (0.05, 0.33, 0.55, 1.01, 1.37, 2.03, 2.71):
        plain.env.run(until=t)
        lazy_run.env.run(until=t)
        assert [w.steps_done for w in lazy_run.workers] == [w.steps_done for w in plain.workers], t
        assert [w.tracker.state for w in lazy_run.workers] == [w.tracker.state for w in plain.workers], t
    plain.run()
    lazy_run.run()
    pd.testing.assert_frame_equal(events_table(lazy_run.recorder), events_table(plain.recorder), check_exact=True)


def test_wakes_no_single_timeout_lands_on_take_the_plain_loops_timeouts(monkeypatch):
    """With no exact single delay ever found (``delay_to`` forced to None), a lazy worker reaches
    each wake through the plain loop's own timeouts, one by one: the events are the same."""
    runs = {}
    for coalesce in (False, True):
        sim = Simulation(parse_scenario(_data(STREAMING, {**STRAGGLERS, **WINDOWS}, coalesce)))
        if coalesce:
            monkeypatch.setattr(lazy, "delay_to", lambda now, end: None)
        sim.run()
        runs[coalesce] = sim
    a, b = runs[False], runs[True]
    pd.testing.assert_frame_equal(events_table(a.recorder), events_table(b.recorder), check_exact=True)
    assert (a.rounds, a.tokens) == (b.rounds, b.tokens)
    assert [w.steps_done for w in a.workers] == [w.steps_done for w in b.workers]


def test_lazy_workers_leave_out_more_events_than_quiet_stretches_do(monkeypatch):
    """Streaming DiLoCo at layer grain, tau 1: quiet stretches alone (the reference loop,
    ``FAST_STEPS`` off) still yield at every step end around a sync and at every send or need
    point; the lazy loop only at sends and needs not yet met, so it schedules fewer SimPy events
    for the same events recorded."""
    runs = {}
    for fast in (False, True):
        monkeypatch.setattr(node, "FAST_STEPS", fast)
        sim = Simulation(parse_scenario(_data(STREAMING, None, True)))
        sim.run()
        runs[fast] = sim
    a, b = runs[False], runs[True]
    assert all(w.quiet is not None for w in a.workers + b.workers)
    pd.testing.assert_frame_equal(events_table(a.recorder), events_table(b.recorder), check_exact=True)
    assert [w.steps_done for w in a.workers] == [w.steps_done for w in b.workers]
    assert next(b.env._eid) < next(a.env._eid)


@pytest.mark.parametrize("algo", [
    {"name": "streaming_diloco", "inner_steps": 12, "fragment_layers": 1, "overlap_steps": 1, "sync_grain": "layer"},
    {"name": "diloco", "inner_steps": 5, "warm_start_steps": 3},
    {"name": "noloco", "inner_steps": 4},
    {"name": "eager_diloco", "inner_steps": 4, "sync_grain": "layer"},
])
def test_a_plan_looked_up_once_a_step_is_each_workers_own(algo):
    """Schedule as data: a periodic method's plan, looked up once a step where everyone syncs
    with everyone, equals the plan worked out for each worker afresh, at every step of the
    first rounds (methods that draw groups, like noloco, work each one out)."""
    sc = parse_scenario(_data(algo, None, True))
    alg = make_algorithm(sc.algorithm, 5, sc.seed)
    alg.configure([(f"blocks.{i}.w", 100) for i in range(4)], 4)
    fresh = make_algorithm(sc.algorithm, 5, sc.seed)
    fresh.configure([(f"blocks.{i}.w", 100) for i in range(4)], 4)
    for s in range(1, 60):
        for w in range(5):
            got = alg.at_step(w, s)
            if hasattr(fresh, "_plans"):
                fresh._plans.clear()
            if getattr(fresh, "_by_step", None):
                fresh._by_step.clear()
            assert got == fresh.at_step(w, s), (s, w)
