"""Calling flows off (``Network.cancel``): a cancelled flow leaves its links at once, the flows
that shared them speed up exactly as max-min fairness says, its event never fires, and the
bytes it moved stay counted (links, both ends, a Transfer record ending at the cancel time).
Timings against hand-computed values on one link of B bytes/s."""

from __future__ import annotations

import networkx as nx
import pandas as pd
import pytest
import simpy

from sim.engine.network import Network

B = 1e9  # bytes/s
GBPS = 8.0  # 8 Gbit/s = 1e9 bytes/s


def _net(lat: float = 0.01, kind: str | None = None):
    env = simpy.Environment()
    g = nx.Graph()
    g.add_edge("a", "b", bandwidth_gbps=GBPS, latency_s=lat, **({"kind": kind} if kind else {}))
    return env, Network(env, g)


def _cancel_at(env, net, t, handles, out):
    def proc():
        yield env.timeout(t)
        out.append(net.cancel(*handles))
    env.process(proc())


def _arrivals(env, events):
    got = {}
    for i, ev in enumerate(events):
        ev.callbacks.append(lambda _e, i=i: got.__setitem__(i, env.now))
    return got


def test_cancelling_one_of_two_flows_gives_the_other_the_whole_link():
    """Two flows of S on one link; the first called off at t1: it moved t1·B/2, never arrives,
    and the second sends its rest at B, arriving at t1 + (S - t1·B/2)/B + latency."""
    lat, size, t1 = 0.01, 1e9, 0.5
    env, net = _net(lat)
    evs = [net.transfer("a", "b", size, "x"), net.transfer("a", "b", size, "y")]
    got = _arrivals(env, evs)
    moved: list = []
    _cancel_at(env, net, t1, [evs[0]], moved)
    env.run()
    assert moved == [pytest.approx(t1 * B / 2, rel=1e-12)]
    assert 0 not in got and not evs[0].triggered
    assert got[1] == pytest.approx(t1 + (size - t1 * B / 2) / B + lat, rel=1e-12)
    rec = {t.tag: t for t in net.recorder.transfers}
    assert rec["x"].payload_bytes == pytest.approx(t1 * B / 2) and rec["x"].end_s == pytest.approx(t1)
    assert rec["y"].payload_bytes == size
    assert net.link_bytes[("a", "b")] == pytest.approx(size + t1 * B / 2, rel=1e-12)
    assert net.sent_bytes["a"] == pytest.approx(net.received_bytes["b"], rel=1e-12)
    assert net.active_flows == 0 and net.flows_cancelled == 1


def test_cancelling_many_flows_on_the_numpy_path_speeds_up_the_rest():
    """40 flows of S share a link (rated by the numpy path); 20 called off at t1 each moved
    t1·B/40 and the other 20 arrive at t1 + 20·(S - t1·B/40)/B + latency."""
    lat, size, t1, n = 0.001, 1e8, 1.0, 40
    env, net = _net(lat)
    evs = [net.transfer("a", "b", size, f"f{i}") for i in range(n)]
    got = _arrivals(env, evs)
    moved: list = []
    _cancel_at(env, net, t1, evs[::2], moved)
    env.run()
    assert moved == [pytest.approx(20 * t1 * B / n, rel=1e-9)]
    assert sorted(got) == list(range(1, n, 2))
    want = t1 + 20 * (size - t1 * B / n) / B + lat
    assert all(v == pytest.approx(want, rel=1e-9) for v in got.values())
    assert net.link_bytes[("a", "b")] == pytest.approx(20 * size + 20 * t1 * B / n, rel=1e-9)


def test_cancelling_a_flow_class_calls_off_every_member():
    """A group of 16 flows started as one class, called off at t1: the returned bytes are 16 x
    what one member moved (t1·B/16 on the shared link), its event never fires, a flow sharing
    the link afterwards gets all of it, and each member is recorded once."""
    lat, size, t1 = 0.001, 1e9, 0.2
    env = simpy.Environment()
    g = nx.Graph()
    for i in range(16):
        g.add_edge(f"s{i}", "a", bandwidth_gbps=1e6, latency_s=0.0)
    g.add_edge("a", "b", bandwidth_gbps=GBPS, latency_s=lat)
    net = Network(env, g)
    evs = net.transfer_group([(f"s{i}", "b") for i in range(16)], size, "cls")
    assert net.classes_started == 1
    moved: list = []
    _cancel_at(env, net, t1, evs, moved)
    later = {}

    def after():
        yield env.timeout(t1)
        yield net.transfer("a", "b", size, "after")
        later["t"] = env.now
    env.process(after())
    env.run()
    assert moved == [pytest.approx(16 * t1 * B / 16, rel=1e-9)]
    assert not any(ev.triggered for ev in evs)
    assert later["t"] == pytest.approx(t1 + size / B + lat, rel=1e-9)
    cls = [t for t in net.recorder.transfers if t.tag == "cls"]
    assert len(cls) == 16 and all(t.payload_bytes == pytest.approx(t1 * B / 16) for t in cls)


def test_a_flow_whose_last_byte_left_is_called_off_before_it_arrives():
    """A flow called off during its route latency (all bytes sent) never arrives; its record
    carries its whole size and ends at the cancel time."""
    lat, size = 0.5, 1e8
    env, net = _net(lat)
    ev = net.transfer("a", "b", size, "x")
    moved: list = []
    _cancel_at(env, net, size / B + lat / 2, [ev], moved)
    env.run()
    assert moved == [size] and not ev.triggered
    (t,) = net.recorder.transfers
    assert t.payload_bytes == size and t.end_s == pytest.approx(size / B + lat / 2)


def test_cancelling_an_arrived_flow_changes_nothing():
    """A handle whose flow has arrived is ignored: 0 bytes, no record added."""
    env, net = _net()
    ev = net.transfer("a", "b", 1e6, "x")
    env.run()
    assert net.cancel(ev) == 0.0 and net.cancel() == 0.0
    assert len(net.recorder.transfers) == 1 and net.flows_cancelled == 0


def test_the_rate_log_drops_to_zero_when_the_only_flow_is_called_off():
    """A WAN link's logged rate is B while its only flow sends and 0 from the cancel on."""
    env, net = _net(kind="wan")
    ev = net.transfer("a", "b", 1e9, "x")
    _cancel_at(env, net, 0.25, [ev], [])
    env.run()
    times, rates = net.rate_timeline()["links"][("a", "b")]
    assert list(times) == [0.0, 0.25] and list(rates) == [B, 0.0]


@pytest.mark.parametrize("algo", [{"name": "diloco", "inner_steps": 3, "sync_grain": "step"},
                                  {"name": "ddp", "sync_grain": "layer"},
                                  {"name": "streaming_diloco", "inner_steps": 4}],
                         ids=lambda a: a["name"])
def test_cancelled_collectives_give_the_same_events_with_flow_classes_on_and_off(algo, monkeypatch):
    """12 workers in 3 regions whose collectives lose members on the wire (random failures):
    the events table -- the called-off transfers with the bytes they moved included -- is the
    same to the bit whether a collective's flows ran as flow classes or one flow each."""
    from sim.engine import network
    from sim.metrics.tables import events_table
    from sim.runner import Simulation
    from sim.scenario import parse_scenario

    data = {"seed": 3, "numerics": False, "timing": {"params": 4.0e6, "layers": 4, "step_time_s": 0.05},
            "topology": {"regions": [{"name": "us", "nodes": 5}, {"name": "eu", "nodes": 4},
                                     {"name": "ap", "nodes": 3}],
                         "links": [{"a": "us", "b": "eu", "bandwidth_gbps": 1.0, "latency_s": 0.03},
                                   {"a": "eu", "b": "ap", "bandwidth_gbps": 2.0, "latency_s": 0.05}]},
            "algorithm": algo, "run": {"max_sim_time_s": 3.0},
            "faults": {"failures": {"mtbf_s": 2.0, "mttr_s": 0.3}}}
    tables, reformed, started = {}, {}, {}
    for classes in (False, True):
        monkeypatch.setattr(network, "FLOW_CLASSES", classes)
        monkeypatch.setattr(network, "_MIN_CLASS", 2)  # 12 workers: classes of every size
        sim = Simulation(parse_scenario(data))
        sim.run()
        sim.close_records()
        tables[classes] = events_table(sim.recorder)
        reformed[classes], started[classes] = sim.barrier.reformed, sim.net.classes_started
    pd.testing.assert_frame_equal(tables[False], tables[True], check_exact=True)
    assert reformed[True] == reformed[False] > 0 and started[True] > 0  # collectives re-formed, as classes
