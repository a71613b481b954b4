"""Flow-level network and ring all-reduce: timings against hand-computed values."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import simpy
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from sim.engine.collectives import ring_allreduce
from sim.engine.network import Network, gbps_to_bytes_per_s

GBPS_1E9 = 8.0  # 8 Gbit/s == 1e9 bytes/s


def _net(edges, env=None):
    env = env or simpy.Environment()
    g = nx.Graph()
    for a, b, bw, lat in edges:
        g.add_edge(a, b, bandwidth_gbps=bw, latency_s=lat)
    return env, Network(env, g)


def _timed(env, net, src, dst, size, at=0.0, out=None, key=None):
    """Start a transfer at time ``at``; record its delivery time in out[key]."""
    def proc():
        if at:
            yield env.timeout(at)
        yield net.transfer(src, dst, size)
        out[key] = env.now
    return env.process(proc())


# ---------------------------------------------------------------------------- ring all-reduce
def test_ring_allreduce_two_nodes_16gbit_10gbps_10ms_takes_1_62_s():
    """A ring all-reduce of 16 Gbit between 2 nodes over a 10 Gbit/s, 10 ms link takes 1.62 s (within 1%)."""
    env, net = _net([("a", "b", 10.0, 0.010)])
    env.process(ring_allreduce(env, net, ["a", "b"], 2e9))
    env.run()
    assert env.now == pytest.approx(1.62, rel=0.01)


@pytest.mark.parametrize("p", [2, 3, 4, 8])
def test_ring_allreduce_matches_alpha_beta_formula(p):
    """On a complete graph of equal links, ring all-reduce of S bytes over P nodes takes 2(P-1)·lat + 2(P-1)/P·S/B (within 1%)."""
    bw, lat, size = 10.0, 0.010, 2e9
    g = nx.complete_graph([f"n{i}" for i in range(p)])
    nx.set_edge_attributes(g, bw, "bandwidth_gbps")
    nx.set_edge_attributes(g, lat, "latency_s")
    env = simpy.Environment()
    net = Network(env, g)
    env.process(ring_allreduce(env, net, list(g.nodes), size))
    env.run()
    expected = 2 * (p - 1) * lat + 2 * (p - 1) / p * size / gbps_to_bytes_per_s(bw)
    assert env.now == pytest.approx(expected, rel=0.01)


# ---------------------------------------------------------------------------- sharing
def test_two_concurrent_flows_on_one_link_each_get_half():
    """Two concurrent same-direction flows of S bytes on one link both finish at lat + 2S/B."""
    lat, size = 0.01, 1e9
    env, net = _net([("a", "b", GBPS_1E9, lat)])
    out = {}
    _timed(env, net, "a", "b", size, out=out, key=1)
    _timed(env, net, "a", "b", size, out=out, key=2)
    env.run()
    assert out[1] == pytest.approx(lat + 2 * size / 1e9, rel=1e-9)
    assert out[2] == pytest.approx(lat + 2 * size / 1e9, rel=1e-9)


def test_opposite_directions_do_not_share_full_duplex():
    """Flows in opposite directions on one link don't share: each finishes at lat + S/B (full duplex)."""
    lat, size = 0.01, 1e9
    env, net = _net([("a", "b", GBPS_1E9, lat)])
    out = {}
    _timed(env, net, "a", "b", size, out=out, key="ab")
    _timed(env, net, "b", "a", size, out=out, key="ba")
    env.run()
    assert out["ab"] == pytest.approx(lat + size / 1e9, rel=1e-9)
    assert out["ba"] == pytest.approx(lat + size / 1e9, rel=1e-9)


def test_two_hop_route_gets_bottleneck_rate_and_summed_latency():
    """A flow over a two-hop route takes the sum of the hop latencies plus S / (bottleneck bandwidth)."""
    size = 1e9
    env, net = _net([("a", "b", 80.0, 0.01), ("b", "c", 8.0, 0.02)])  # 10e9 B/s then 1e9 B/s
    out = {}
    _timed(env, net, "a", "c", size, out=out, key=0)
    env.run()
    assert net.route("a", "c") == ["a", "b", "c"]
    assert out[0] == pytest.approx(0.03 + size / 1e9, rel=1e-9)


def test_max_min_fairness_line_long_flow_and_short_flows_split_each_link_in_half():
    """On a line n0-n1-n2, a long flow over links A,B plus one short flow on A and one on B: every flow gets half of each link."""
    size = 1e9
    env, net = _net([("n0", "n1", GBPS_1E9, 0.0), ("n1", "n2", GBPS_1E9, 0.0), ("n2", "n3", GBPS_1E9, 0.0)])
    out = {}
    _timed(env, net, "n0", "n2", size, out=out, key="long")
    _timed(env, net, "n0", "n1", size, out=out, key="a")
    _timed(env, net, "n1", "n2", size, out=out, key="b")
    env.run(until=1e-12)
    assert sorted(f.rate for f in net._flows) == pytest.approx([0.5e9] * 3)
    env.run()
    for k in ("long", "a", "b"):
        assert out[k] == pytest.approx(2.0, rel=1e-9)


def test_max_min_fairness_three_link_line_unequal_shares():
    """On a 3-link line A,B,C: a long flow over A,B,C, two short flows on A and one on B get 1/3, 1/3, 1/3 and 2/3 of B (hand-computed finish times 3.0 and 1.5 s)."""
    size = 1e9
    env, net = _net([("n0", "n1", GBPS_1E9, 0.0), ("n1", "n2", GBPS_1E9, 0.0), ("n2", "n3", GBPS_1E9, 0.0)])
    out = {}
    _timed(env, net, "n0", "n3", size, out=out, key="long")
    _timed(env, net, "n0", "n1", size, out=out, key="a1")
    _timed(env, net, "n0", "n1", size, out=out, key="a2")
    _timed(env, net, "n1", "n2", size, out=out, key="b")
    env.run()
    # phase 1: A is the bottleneck (3 flows, 1/3 each); B leaves 2/3 to its short flow -> done at 1.5 s.
    # after that A still limits the other three to 1/3: 0.5e9 left each -> done at 3.0 s.
    assert out["b"] == pytest.approx(1.5, rel=1e-9)
    for k in ("long", "a1", "a2"):
        assert out[k] == pytest.approx(3.0, rel=1e-9)


def test_flow_started_mid_flight_recomputes_rates():
    """A 0.5 GB flow joining a 2 GB flow at t=1 s on a 1 GB/s, 0.1 s link: the newcomer is delivered at 2.1 s, the first at 2.6 s."""
    lat = 0.1
    env, net = _net([("a", "b", GBPS_1E9, lat)])
    out = {}
    _timed(env, net, "a", "b", 2e9, out=out, key="first")
    _timed(env, net, "a", "b", 0.5e9, at=1.0, out=out, key="second")
    env.run()
    # t in [0,1): first alone at 1e9 B/s -> 1e9 left; [1,2): both at 0.5e9 -> second done, first 0.5e9 left;
    # [2,2.5): first alone again -> done at 2.5; each delivered lat later.
    assert out["second"] == pytest.approx(2.0 + lat, rel=1e-9)
    assert out["first"] == pytest.approx(2.5 + lat, rel=1e-9)
    assert net.rate_recomputations >= 3


# ---------------------------------------------------------------------------- edge cases
def test_zero_byte_transfer_takes_exactly_route_latency():
    """A zero-byte transfer is delivered exactly one route latency after it starts."""
    env, net = _net([("a", "b", 1.0, 0.25), ("b", "c", 1.0, 0.5)])
    out = {}
    _timed(env, net, "a", "c", 0, out=out, key=0)
    env.run()
    assert out[0] == 0.75
    assert net.received_bytes["c"] == 0.0


def test_infinite_bandwidth_transfer_takes_exactly_latency():
    """A transfer over links of infinite bandwidth takes exactly the route latency, whatever its size."""
    env, net = _net([("a", "b", math.inf, 0.25), ("b", "c", math.inf, 0.5)])
    out = {}
    _timed(env, net, "a", "c", 5e12, out=out, key=0)
    env.run()
    assert out[0] == 0.75
    assert net.link_bytes[("a", "b")] == 5e12 and net.link_bytes[("b", "c")] == 5e12


def test_infinite_bandwidth_hop_does_not_limit_a_mixed_route():
    """On a route with one infinite-bandwidth hop and one finite hop, only the finite hop limits the rate."""
    env, net = _net([("a", "b", math.inf, 0.25), ("b", "c", GBPS_1E9, 0.5)])
    out = {}
    _timed(env, net, "a", "c", 1e9, out=out, key=0)
    env.run()
    assert out[0] == pytest.approx(0.75 + 1.0, rel=1e-9)


# ---------------------------------------------------------------------------- conservation (property)
@st.composite
def _scenarios(draw):
    n = draw(st.integers(2, 5))
    nodes = [f"v{i}" for i in range(n)]
    edges = {}
    for i in range(1, n):  # a random spanning tree keeps the graph connected
        j = draw(st.integers(0, i - 1))
        edges[(nodes[j], nodes[i])] = None
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=4))
    for i, j in extra:
        if i != j and (nodes[j], nodes[i]) not in edges:
            edges[(nodes[i], nodes[j])] = None
    bws = st.sampled_from([1.0, 8.0, 10.0, 100.0, math.inf])
    lats = st.sampled_from([0.0, 0.001, 0.01, 0.05])
    edge_list = [(a, b, draw(bws), draw(lats)) for a, b in edges]
    node_idx = st.integers(0, n - 1)
    flows = draw(st.lists(st.tuples(node_idx, node_idx, st.floats(0, 1e9, allow_nan=False),
                                    st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 1.7])), min_size=1, max_size=10))
    return nodes, edge_list, [(nodes[s], nodes[d], size, at) for s, d, size, at in flows]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenarios())
def test_bytes_conserved_and_no_flow_beats_alpha_beta(case):
    """After random transfers, bytes sent == bytes received == total size, each directed link carries exactly the bytes of the flows routed over it, and no flow finishes before latency + size / min route bandwidth."""
    nodes, edges, flows = case
    env, net = _net(edges)
    for n in nodes:  # isolated nodes cannot occur (spanning tree), but keep dicts complete
        assert n in net.sent_bytes
    out = {}
    for k, (s, d, size, at) in enumerate(flows):
        _timed(env, net, s, d, size, at=at, out=out, key=k)
    env.run()
    total = sum(f[2] for f in flows)
    assert len(out) == len(flows)
    assert sum(net.sent_bytes.values()) == pytest.approx(total, rel=1e-12, abs=1e-6)
    assert sum(net.received_bytes.values()) == pytest.approx(total, rel=1e-12, abs=1e-6)
    expected_link = {l: 0.0 for l in net.link_bytes}
    for s, d, size, _ in flows:
        path = net.route(s, d)
        for l in zip(path, path[1:]):
            expected_link[l] += size
    for l, b in net.link_bytes.items():
        assert b == pytest.approx(expected_link[l], rel=1e-12, abs=1e-6), l
    for k, (s, d, size, at) in enumerate(flows):
        path = net.route(s, d)
        links = list(zip(path, path[1:]))
        lat = sum(net.graph.edges[a, b]["latency_s"] for a, b in links)
        min_cap = min((net.capacity[l] for l in links), default=math.inf)
        lower = lat + (size / min_cap if size else 0.0)
        assert out[k] - at >= lower * (1 - 1e-9) - 1e-12, (k, out[k], at, lower)
    assert net.active_flows == 0
