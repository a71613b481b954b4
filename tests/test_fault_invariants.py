"""No bytes to or from a down node, and participants were up (issue 28): a collective that
loses a participant on the wire re-forms without it and runs again from the start among the
others (the DiLoCo papers' dropped-member rule, see sim.engine.sync), a rejoin fetch stops
where it is when either end fails, and whatever the drawn failure / churn / link-flap rates,
for every method and every collective, a timing-only run ends cleanly with those invariants.

Timing-only scenarios (a 2M-parameter, 2-layer timing proxy, 0.1 s steps, 1 Gbit/s WAN), so a
run takes a fraction of a second; the numerics-on variant is tests/test_fault_rates.py."""

from __future__ import annotations

import networkx as nx
import pytest
import simpy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kernels.formats import payload_bytes
from sim.engine.collectives import COLLECTIVES
from sim.engine.network import Network
from sim.runner import Simulation
from tests.test_fault_rates import check_fault_invariants, watch
from tests.test_faults import _scenario, check_no_bytes_while_down

WAN_BYTES_PER_S = 1.25e8  # 1 Gbit/s


def _down(nodes, start, end):
    return {"failures": {"schedule": [{"node": n, "start_s": start, "end_s": end} for n in nodes]}}


def _alone(graph: nx.Graph, collective: str, members: list[str], nbytes: float) -> float:
    """How long ``collective`` takes on a fresh network of ``graph`` with nothing else on it."""
    env = simpy.Environment()
    env.process(COLLECTIVES[collective](env, Network(env, graph.copy()), members, nbytes, "alone"))
    env.run()
    return env.now


def test_a_member_failing_mid_allreduce_reforms_it_among_the_others():
    """DiLoCo's all-reduce (4 workers, one payload) loses us/0 at 0.34 s, mid-flight: its flows
    are called off there (records ending at 0.34 s, the WAN ones short of their size), us/0's contribution
    is dropped as 'down' at 0.34 s, and the all-reduce runs again among the other three,
    ending exactly when a ring of those three alone would (0.34 s + its alpha-beta time); the
    numerics see those three, and nothing goes to or from us/0 while it is down."""
    sc = _scenario("{name: diloco, inner_steps: 3, sync_grain: step}", [2, 2], _down(["us/0"], 0.34, 0.9),
                   sim_time_s=1.2)
    sim = Simulation(sc)
    done = watch(sim)
    sim.run()
    send, present, t = done[0]
    nbytes = payload_bytes(send.elems, send.wire_format)
    assert present == (1, 2, 3) and sim.barrier.reformed == 1
    assert t == pytest.approx(0.34 + _alone(sim.net.graph, send.collective, ["us/1", "eu/0", "eu/1"], nbytes),
                              rel=1e-12)
    drops = [(d.worker, d.reason, d.time_s) for d in sim.recorder.dropped if d.round == send.round]
    assert drops == [(0, "down", pytest.approx(0.34))]
    tag = f"{send.stream}:{send.round}"
    broken = [x for x in sim.recorder.transfers if x.tag == tag and x.end_s == pytest.approx(0.34)]
    # each ring flow carries 2(P-1)/P·S = 1.5 S; the WAN ones were cut short, the LAN ones had
    # sent everything and were still in their latency
    assert len(broken) == 4 and all(0 < x.payload_bytes <= 1.5 * nbytes for x in broken)
    assert sorted(x.payload_bytes < 1.5 * nbytes for x in broken) == [False, False, True, True]
    check_fault_invariants(sim, done)


@pytest.mark.parametrize("collective", ["ring_allreduce_stepwise", "tree_allreduce", "hierarchical_allreduce",
                                        "parameter_server"])
def test_every_allreduce_reforms_without_a_member_that_fails_on_the_wire(collective):
    """For each all-reduce, us/0 (the root of the tree, the parameter server) failing mid-flight
    leaves the others' result complete, counted over them only, with no byte to or from us/0
    while it is down and every other worker released."""
    sc = _scenario("{name: diloco, inner_steps: 3, sync_grain: step, collective: " + collective + "}", [2, 2],
                   _down(["us/0"], 0.33, 1.0), sim_time_s=1.2)
    sim = Simulation(sc)
    done = watch(sim)
    sim.run()
    assert done[0][1] == (1, 2, 3) and sim.barrier.reformed == 1
    assert [w.steps_done for w in sim.workers[1:]] == [sim.workers[1].steps_done] * 3
    assert sim.workers[1].steps_done > 3  # released: past the step that needs round 0's result
    check_fault_invariants(sim, done)


def test_every_participant_failing_on_the_wire_ends_the_collective_with_nobody():
    """All four workers fail for good mid all-reduce: the collective completes at once with
    nobody (a Sync of 0 participants at the failure), no flow goes on, the run ends cleanly."""
    sc = _scenario("{name: diloco, inner_steps: 3, sync_grain: step}", [2, 2],
                   _down(["us/0", "us/1", "eu/0", "eu/1"], 0.34, None), sim_time_s=1.2)
    sim = Simulation(sc)
    done = watch(sim)
    sim.run()
    assert [(p, t) for _s, p, t in done] == [((), pytest.approx(0.34))]
    assert sim.recorder.syncs[0].participants == 0
    assert max(x.end_s for x in sim.recorder.transfers) == pytest.approx(0.34)
    assert sim.env.now == pytest.approx(1.2) or sim.ended_early
    check_fault_invariants(sim, done)


def test_a_rejoin_fetch_stops_when_the_rejoiner_fails_again():
    """us/0 comes back at 0.2 s and fetches eu/0's parameters over the 1 Gbit/s WAN; it fails
    again at 0.23 s: the fetch stops there having moved 0.03 s x 1.25e8 bytes/s, and the only
    completed recovery is the one after its second revival."""
    sc = _scenario("{name: diloco, inner_steps: 3}", [1, 1],
                   {"failures": {"schedule": [{"node": "us/0", "start_s": 0.05, "end_s": 0.2},
                                              {"node": "us/0", "start_s": 0.23, "end_s": 0.5}]}}, sim_time_s=1.0)
    sim = Simulation(sc)
    sim.run()
    fetches = [x for x in sim.recorder.transfers if x.tag == "recovery:0"]
    assert fetches[0].start_s == pytest.approx(0.2) and fetches[0].end_s == pytest.approx(0.23)
    assert fetches[0].payload_bytes == pytest.approx(0.03 * WAN_BYTES_PER_S, rel=1e-9)
    assert [r.start_s for r in sim.recorder.recoveries] == [pytest.approx(0.5)]
    check_no_bytes_while_down(sim)


def test_a_rejoin_fetch_whose_peer_fails_fetches_again_from_another():
    """us/0 fetches from eu/0 (nearest, lowest index) from 0.2 s; eu/0 fails at 0.23 s: that
    fetch stops there, and us/0 fetches the whole payload from eu/1, arriving at 0.23 s +
    payload / 1.25e8 + route latency; its recovery names eu/1 and spans 0.2 s to then."""
    sc = _scenario("{name: diloco, inner_steps: 3}", [1, 2],
                   {"failures": {"schedule": [{"node": "us/0", "start_s": 0.05, "end_s": 0.2},
                                              {"node": "eu/0", "start_s": 0.23, "end_s": 1.0}]}}, sim_time_s=1.0)
    sim = Simulation(sc)
    sim.run()
    first, second = [x for x in sim.recorder.transfers if x.tag == "recovery:0"]
    assert (first.src, first.end_s) == ("eu/0", pytest.approx(0.23))
    assert first.payload_bytes == pytest.approx(0.03 * WAN_BYTES_PER_S, rel=1e-9)
    (rec,) = [r for r in sim.recorder.recoveries if r.worker == 0]
    assert (rec.peer, rec.start_s) == ("eu/1", pytest.approx(0.2))
    assert rec.end_s == pytest.approx(0.23 + rec.payload_bytes / WAN_BYTES_PER_S
                                      + sim.net.route_latency_s("eu/1", "us/0"), rel=1e-9)
    assert second.src == "eu/1" and second.payload_bytes == rec.payload_bytes
    check_no_bytes_while_down(sim)


# ---------------------------------------------------------------------------- any rates, every method
METHODS = ["{name: ddp}", "{name: ddp, sync_grain: layer}", "{name: diloco, inner_steps: 3}",
           "{name: streaming_diloco, inner_steps: 4}", "{name: noloco, inner_steps: 3}",
           "{name: noloco, inner_steps: 3, collective: ring_allgather}", "{name: diloco_delayed, inner_steps: 3}",
           "{name: eager_diloco, inner_steps: 3}", "{name: fedavg, inner_steps: 3}", "{name: sparta}",
           "{name: sparta_diloco, inner_steps: 3}", "{name: demo}", "{name: async_local_sgd, inner_steps: 3}",
           "{name: halos, inner_steps: 3, updates_per_push: 2}", "{name: fedbuff, inner_steps: 3, buffer_size: 2}"]
ALLREDUCES = ["ring_allreduce", "ring_allreduce_stepwise", "tree_allreduce", "hierarchical_allreduce",
              "parameter_server"]
rate = st.floats(1e-3, 3.0).map(lambda x: float(f"{x:.3g}"))  # far faster than a 0.1 s step, and slower


@st.composite
def cases(draw):
    regions = draw(st.lists(st.integers(1, 3), min_size=2, max_size=3))
    nodes = [f"{r}/{i}" for r, n in zip(["us", "eu", "ap"], regions) for i in range(n)]
    faults: dict = {}
    if draw(st.booleans()):
        faults["failures"] = {"mtbf_s": draw(rate), "mttr_s": draw(rate)}
    if draw(st.booleans()):  # every node down at once, possibly across rounds, possibly for good
        start = draw(st.floats(0.0, 1.5))
        end = draw(st.one_of(st.none(), st.floats(start + 0.01, start + 1.5)))
        faults.setdefault("failures", {})["schedule"] = [{"node": n, "start_s": start, "end_s": end} for n in nodes]
    if draw(st.booleans()):
        join = draw(st.floats(0.0, 1.0))
        leave = draw(st.one_of(st.none(), st.floats(0.0, 2.0)))
        faults["churn"] = [{"node": draw(st.sampled_from(nodes)), "join_s": join,
                            "leave_s": None if leave == join else leave}]
    if draw(st.booleans()):
        faults["links"] = [{"a": "us", "b": "eu", "mtbf_s": draw(rate), "mttr_s": draw(rate)}]
    algo = draw(st.sampled_from(METHODS))
    if algo.startswith(("{name: ddp", "{name: diloco,")) and draw(st.booleans()):
        algo = algo[:-1] + ", collective: " + draw(st.sampled_from(ALLREDUCES)) + "}"
    timeout = draw(st.one_of(st.none(), st.floats(0.02, 0.5)))
    return algo, regions, faults, timeout, draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
@example(("{name: ddp, sync_grain: layer}", [2, 2], {**_down(["us/0", "us/1", "eu/0", "eu/1"], 0.5, 0.625),
                                                     "churn": [{"node": "us/0", "join_s": 0.5, "leave_s": 1.0}]},
          None, 0))
@example(("{name: diloco, inner_steps: 3, collective: parameter_server}", [2, 2],
          {"failures": {"mtbf_s": 0.05, "mttr_s": 0.05}}, None, 3))
def test_any_fault_rates_keep_the_invariants_for_every_method_and_collective(case):
    """Any drawn failure / churn / link-flap rates, for every method and all-reduce: the run
    reaches its end or ends early with a stated reason, never an exception; no compute and no
    byte to or from a node while it is down; every member a collective counted was up."""
    algo, regions, faults, timeout, seed = case
    sim = Simulation(_scenario(algo, regions, faults, timeout=timeout, seed=seed, sim_time_s=2.0))
    done = watch(sim)
    sim.run()
    assert sim.env.now == pytest.approx(2.0) or (isinstance(sim.ended_early, str) and sim.ended_early)
    check_fault_invariants(sim, done)
