"""Named random streams and the worker state machine of a small end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest

from sim.engine.clock import Clock
from sim.rng import rng

pytest.importorskip("torch")

BASE = ["run.max_rounds=2", "algorithm.inner_steps=3", "model.d_model=16", "model.n_layers=1"]
ZERO_COST_NET = ["topology.links.0.bandwidth_gbps=.inf", "topology.intra_region.bandwidth_gbps=.inf",
                 "topology.links.0.latency_s=0", "topology.intra_region.latency_s=0"]


# ---------------------------------------------------------------------------- random streams
def test_same_seed_and_name_give_same_draws():
    """The same (seed, name) always yields the same draws."""
    assert np.array_equal(rng(7, "data/worker0").random(20), rng(7, "data/worker0").random(20))


def test_different_names_or_seeds_give_different_draws():
    """Different stream names (or seeds) yield different draws."""
    a = rng(7, "data/worker0").random(20)
    assert not np.array_equal(a, rng(7, "data/worker1").random(20))
    assert not np.array_equal(a, rng(8, "data/worker0").random(20))


def test_adding_a_stream_does_not_change_another_streams_draws():
    """Creating and drawing from a new stream leaves an existing stream's draws unchanged."""
    c1 = Clock(3)
    alone = c1.stream("straggler/us/0").random(10)
    c2 = Clock(3)
    s = c2.stream("straggler/us/0")
    c2.stream("faults/eu").random(1000)
    c2.stream("jitter/us-eu").random(5)
    assert np.array_equal(alone, s.random(10))
    assert c2.stream("straggler/us/0") is s


# ---------------------------------------------------------------------------- state spans of a run
def _run(extra=()):
    from sim.runner import Simulation
    from sim.scenario import load_scenario

    sc = load_scenario("scenarios/quickstart.yaml", BASE + ["run.device=cpu"] + list(extra))
    sim = Simulation(sc)
    sim.run()
    return sim


@pytest.fixture(scope="module")
def finite_sim(root):
    import os
    old = os.getcwd()
    os.chdir(root)
    try:
        yield _run()
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def zero_cost_sim(root):
    import os
    old = os.getcwd()
    os.chdir(root)
    try:
        yield _run(ZERO_COST_NET)
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def root():
    from pathlib import Path
    return Path(__file__).resolve().parents[1]


def _spans(sim, w):
    return sorted((s for s in sim.recorder.states if s.worker == w), key=lambda s: s.start_s)


def _utilization(sim):
    now = sim.env.now
    compute = sum(s.end_s - s.start_s for s in sim.recorder.states if s.state == "compute")
    return compute / (now * sim.n_workers)


@pytest.mark.parametrize("which", ["finite_sim", "zero_cost_sim"])
def test_state_spans_tile_the_run_per_worker(which, request):
    """For every worker, state spans lie in [0, now], don't overlap, and their durations sum to the run's simulated time."""
    sim = request.getfixturevalue(which)
    now = sim.env.now
    assert now > 0 and sim.rounds == 2
    for w in range(sim.n_workers):
        spans = _spans(sim, w)
        assert spans, w
        for s in spans:
            assert 0.0 <= s.start_s < s.end_s <= now
        for a, b in zip(spans, spans[1:]):
            assert a.end_s <= b.start_s + 1e-12, (a, b)
        assert sum(s.end_s - s.start_s for s in spans) == pytest.approx(now, abs=1e-9)


@pytest.mark.parametrize("which", ["finite_sim", "zero_cost_sim"])
def test_utilization_in_unit_interval(which, request):
    """Compute utilization (compute time / (run time × workers)) is in [0, 1]."""
    u = _utilization(request.getfixturevalue(which))
    assert 0.0 <= u <= 1.0


def test_zero_cost_network_gives_utilization_one(zero_cost_sim):
    """With infinite bandwidth and zero latency on every link, workers only compute: utilization is 1 (the CU=1 limit)."""
    sim = zero_cost_sim
    assert {s.state for s in sim.recorder.states} == {"compute"}
    assert _utilization(sim) == pytest.approx(1.0, abs=1e-12)
    assert all(s.end_s == s.start_s for s in sim.recorder.syncs)


def test_finite_link_comm_blocked_equals_sync_durations(finite_sim):
    """With equal step times and a finite link, each worker's comm_blocked time equals the summed (end_s - start_s) of the sync records, and there is no straggler wait."""
    sim = finite_sim
    assert len(set(sim.step_time_s)) == 1
    syncs = sim.recorder.syncs
    assert len(syncs) == 2
    sync_total = sum(s.end_s - s.start_s for s in syncs)
    assert sync_total > 0
    for w in range(sim.n_workers):
        spans = _spans(sim, w)
        blocked = sum(s.end_s - s.start_s for s in spans if s.state == "comm_blocked")
        idle = sum(s.end_s - s.start_s for s in spans if s.state == "straggler_wait")
        assert blocked == pytest.approx(sync_total, rel=1e-9, abs=1e-12)
        assert idle == pytest.approx(0.0, abs=1e-12)
    assert _utilization(sim) < 1.0
