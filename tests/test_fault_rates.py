"""Fault handling is correct by construction for every method (issue 28, "Fault crashes"):
whatever the failure, churn and link-flap rates -- failures far faster than a step, every node
down at once, a node down across rounds -- a run completes or ends early with a stated reason,
never with an exception, and keeps the fault invariants: no compute while down (states and
fault windows agree), no bytes to or from a down node (no transfer overlaps a down window of
its source or destination: a collective that loses a participant on the wire re-forms without
it, a rejoin fetch whose ends fail is called off), participants were up (every member a
collective's result counts was up from its start to its end), a contribution is dropped as
'down' only for a worker that was down or fetching, bytes sent = bytes received.

Numerics are on (a GPT of width 16, one or two layers): the crashes this guards against were in the
numerics' view of a collective (``Reduction.finish`` with nobody present). Runs are 1.5 s of
simulated time at 0.1 s per step, so each takes well under a second."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sim.runner import Simulation
from sim.scenario import parse_scenario
from tests.test_faults import _down_windows, check_invariants

METHODS = [{"name": "ddp"}, {"name": "diloco", "inner_steps": 3}, {"name": "streaming_diloco", "inner_steps": 4},
           {"name": "noloco", "inner_steps": 3}, {"name": "noloco", "inner_steps": 3, "dead_partner": "repair"},
           {"name": "diloco_delayed", "inner_steps": 3}, {"name": "eager_diloco", "inner_steps": 3},
           {"name": "fedavg", "inner_steps": 3}, {"name": "sparta"}, {"name": "sparta_diloco", "inner_steps": 3},
           {"name": "demo"}, {"name": "async_local_sgd", "inner_steps": 3},
           {"name": "halos", "inner_steps": 3, "updates_per_push": 2}, {"name": "fedbuff", "inner_steps": 3, "buffer_size": 2}]
STEP_S = 0.1
SIM_S = 1.5
NODES = ["us/0", "us/1", "eu/0", "eu/1"]


def scenario(method: dict, faults: dict, seed: int, layer_grain: bool = False):
    return parse_scenario({
        "seed": seed, "numerics": True,
        "topology": {"regions": [{"name": "us", "nodes": 2}, {"name": "eu", "nodes": 2}],
                     "links": [{"a": "us", "b": "eu", "bandwidth_gbps": 1.0, "latency_s": 0.03}],
                     "servers": [{"name": "ps", "region": "us"}]},  # (used by the methods without a barrier)
        "model": {"d_model": 16, "n_layers": 2 if layer_grain else 1, "n_heads": 2, "seq_len": 16},
        "data": {"kind": "synthetic", "vocab_size": 32, "order": 2, "branching": 3},
        "compute": {"batch_size": 4, "step_time": {"mode": "fixed", "step_time_s": STEP_S}},
        "algorithm": dict(method), "faults": faults,
        "run": {"max_sim_time_s": SIM_S, "eval_batches": 1, "eval_batch_size": 4, "device": "cpu",
                "max_events": None},
    })


rate = st.floats(1e-3, 3.0).map(lambda x: float(f"{x:.3g}"))  # failures far faster than a step, and slower


@st.composite
def cases(draw):
    faults: dict = {}
    if draw(st.booleans()):
        faults["failures"] = {"mtbf_s": draw(rate), "mttr_s": draw(rate)}
        if draw(st.booleans()):
            faults["failures"]["nodes"] = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=4, unique=True))
    if draw(st.booleans()):  # every node down at once, possibly across several rounds, possibly for good
        start = draw(st.floats(0.0, 1.0))
        end = draw(st.one_of(st.none(), st.floats(start + 0.01, start + 1.0)))
        faults.setdefault("failures", {})["schedule"] = [{"node": n, "start_s": start, "end_s": end} for n in NODES]
    if draw(st.booleans()):
        join = draw(st.floats(0.0, 1.0))
        leave = draw(st.one_of(st.none(), st.floats(0.0, 1.4)))
        faults["churn"] = [{"node": draw(st.sampled_from(NODES)), "join_s": join,
                            "leave_s": None if leave == join else leave}]
    if draw(st.booleans()):
        faults["links"] = [{"a": "us", "b": "eu", "mtbf_s": draw(rate), "mttr_s": draw(rate)}]
    method = dict(draw(st.sampled_from(METHODS)))
    if draw(st.booleans()):
        method["sync_timeout_s"] = draw(st.floats(0.02, 0.5))
    return method, faults, draw(st.integers(0, 2**16)), draw(st.booleans())


def watch(sim) -> list:
    """Call before ``sim.run()``: returns the list that every completed collective appends
    (send, participants as the numerics see them, time) to."""
    done: list = []
    on_done = sim.barrier.on_done

    def spy(send, participants):
        done.append((send, tuple(participants), sim.env.now))
        on_done(send, participants)

    sim.barrier.on_done = spy
    return done


def check_participants_were_up(sim, done: list) -> None:
    """Every member a completed collective counted was up from the collective's first part's
    start to its end (``Sync`` records come in ``on_done``'s order)."""
    windows = _down_windows(sim)
    assert len(done) == len(sim.recorder.syncs)
    for (send, present, t), sync in zip(done, sim.recorder.syncs):
        assert sync.end_s == t and sync.participants == len(present) and set(present) <= set(send.group)
        for m in present:
            for a, b in windows.get(m, ()):
                assert not (sync.start_s < b and t > a), (send.stream, send.round, m, (a, b), sync)


def check_fault_invariants(sim, done: list | None = None) -> None:
    check_invariants(sim)  # (no bytes to or from a down node among them)
    if done is not None:
        check_participants_were_up(sim, done)
    windows = _down_windows(sim)

    def down_at(worker: int, t: float) -> bool:
        return any(a <= t <= b for a, b in windows.get(worker, ()))

    # a contribution dropped as 'down' belongs to a worker that was down (or still fetching
    # parameters after one of its down windows) when the collective started without it
    # fetching: from the end of a down window to the end of the recovery that follows it (or to
    # the end of the run, when the fetch was still going on: a recovery is recorded when it ends)
    fetching: dict[int, list] = {}
    for w, wins in windows.items():
        ends = sorted(r.end_s for r in sim.recorder.recoveries if r.worker == w)
        for _a, b in wins:
            done = next((e for e in ends if e >= b), sim.env.now)
            fetching.setdefault(w, []).append((b, done))
    for d in sim.recorder.dropped:
        if d.reason == "down":
            was_fetching = any(a <= d.time_s <= b for a, b in fetching.get(d.worker, ()))
            assert down_at(d.worker, d.time_s) or was_fetching, d
    for x in sim.recorder.syncs:  # 0: a payload in parts whose parts ran with different members (its result is gone)
        assert 0 <= x.participants <= sim.n_workers, x
    assert math.isfinite(sim.env.now)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
@example(({"name": "diloco", "inner_steps": 3}, {"failures": {"mtbf_s": 1e-3, "mttr_s": 1e-3}}, 0, False))
@example(({"name": "ddp"}, {"failures": {"mtbf_s": 0.05, "mttr_s": 0.3}}, 1, True))
@example(({"name": "streaming_diloco", "inner_steps": 4},
          {"failures": {"schedule": [{"node": n, "start_s": 0.25, "end_s": 1.2} for n in NODES]}}, 2, True))
@example(({"name": "streaming_diloco", "inner_steps": 4}, {"failures": {"mtbf_s": 0.812, "mttr_s": 1.0}}, 1199, True))
@example(({"name": "ddp"}, {"failures": {"schedule": [{"node": n, "start_s": 0.5, "end_s": 0.625} for n in NODES]},
                            "churn": [{"node": "us/0", "join_s": 0.5, "leave_s": 1.0}]}, 0, True))
def test_any_fault_rates_end_cleanly_for_every_method(case):
    """Any drawn failure / churn / link-flap rates, for any method: the run reaches its stop
    condition or ends early with a stated reason, never an exception, and keeps the fault
    invariants."""
    method, faults, seed, layer_grain = case
    sim = Simulation(scenario(method, faults, seed, layer_grain))
    done = watch(sim)
    sim.run()
    assert sim.env.now == pytest.approx(SIM_S) or (isinstance(sim.ended_early, str) and sim.ended_early)
    check_fault_invariants(sim, done)


def test_revive_and_fail_in_the_same_instant_stays_down():
    """A worker revived and failed again in the same instant (failures far faster than a step)
    stays down without a crash, is down exactly from its first failure to its last revival, and
    rejoins once."""
    from tests.test_faults import _scenario

    sim = Simulation(_scenario("{name: diloco, inner_steps: 3}", [2, 2], {}, sim_time_s=3.0))
    w = sim.workers[0]

    def poke(env):
        yield env.timeout(0.25)
        w.fail()
        yield env.timeout(0.3)
        w.revive()
        w.fail()  # before the worker ran again after its revival
        yield env.timeout(0.3)
        w.revive()

    sim.env.process(poke(sim.env))
    sim.run()
    down = [(s.start_s, s.end_s) for s in sim.recorder.states if s.worker == 0 and s.state == "down"]
    assert down == [(pytest.approx(0.25), pytest.approx(0.85))]
    assert w.rejoins == 1 and w.up and sim.env.now == pytest.approx(3.0)


def test_a_collective_nobody_completed_whole_is_gone_not_an_error():
    """A logical collective whose parts ran with different members (nobody in all of them)
    finishes as a result with nothing to apply (every member keeps its own), not a ValueError."""
    from sim.algorithms.transforms import Reduction

    red = Reduction((0, 1, 2))
    red.finish(())
    assert red.ready() and red.gone and red.present == ()
