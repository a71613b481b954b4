"""Flow-level network and ring all-reduce: timings against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import pytest
import simpy
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from sim.engine.collectives import ring_allreduce
from sim.engine.network import Network
from sim.engine.topology import gbps_to_bytes_per_s

GBPS_1E9 = 8.0  # 8 Gbit/s == 1e9 bytes/s
ROOT = Path(__file__).resolve().parents[1]


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


# ---------------------------------------------------------------------------- link dynamics
def _dyn_net(series=None, outages=None, bw=GBPS_1E9, lat=0.1):
    env = simpy.Environment()
    g = nx.Graph()
    g.add_edge("a", "b", bandwidth_gbps=bw, latency_s=lat)
    if series is not None:
        g.edges["a", "b"]["bandwidth_series"] = series
    if outages is not None:
        g.edges["a", "b"]["outages"] = outages
    return env, Network(env, g)


def test_bandwidth_halving_mid_flight_gives_analytic_time():
    """A 2 GB transfer on a 1 GB/s, 0.1 s link whose bandwidth halves at t=1 s: 1 GB in the first second, 1 GB at 0.5 GB/s, delivered at 3.1 s."""
    env, net = _dyn_net(series=[(0.0, GBPS_1E9), (1.0, GBPS_1E9 / 2)])
    out = {}
    _timed(env, net, "a", "b", 2e9, out=out, key=0)
    env.run()
    assert out[0] == pytest.approx(1.0 + 1e9 / 0.5e9 + 0.1, rel=1e-12)
    assert net.capacity[("a", "b")] == net.capacity[("b", "a")] == 0.5e9


def test_bandwidth_series_before_first_row_uses_link_bandwidth():
    """Before the series' first time the link has its own bandwidth_gbps: 1 GB/s until t=1, then 2 GB/s: a 3 GB transfer is delivered at 1 + 1 + 0.1 s."""
    env, net = _dyn_net(series=[(1.0, 2 * GBPS_1E9)])
    out = {}
    _timed(env, net, "a", "b", 3e9, out=out, key=0)
    env.run()
    assert out[0] == pytest.approx(2.0 + 0.1, rel=1e-12)


def test_transfer_across_an_outage_waits_it_out():
    """A 1 GB transfer on a 1 GB/s link that is down over [0.5, 2.0) sends half, stalls 1.5 s at rate 0, and is delivered at 2.5 + 0.1 s."""
    env, net = _dyn_net(outages=[(0.5, 2.0)])
    out = {}
    _timed(env, net, "a", "b", 1e9, out=out, key=0)
    env.run(until=1.0)
    assert [f.rate for f in net._flows] == [0.0]
    env.run()
    assert out[0] == pytest.approx(2.5 + 0.1, rel=1e-12)


def test_transfer_started_during_outage_starts_when_link_returns():
    """A transfer started at t=1 during an outage [0.5, 2) of a 1 GB/s link — even one of infinite bandwidth otherwise — begins sending at t=2."""
    for bw, size, expected in ((GBPS_1E9, 1e9, 2.0 + 1.0 + 0.1), (math.inf, 5e12, 2.0 + 0.1)):
        env, net = _dyn_net(outages=[(0.5, 2.0)], bw=bw)
        out = {}
        _timed(env, net, "a", "b", size, at=1.0, out=out, key=0)
        env.run()
        assert out[0] == pytest.approx(expected, rel=1e-12), bw


def test_overlapping_outages_count_as_their_union():
    """Outages [1, 3) and [2, 4) keep the link down over [1, 4): a 2 GB transfer at 1 GB/s is delivered at 2 + 3 + 0.1 s."""
    env, net = _dyn_net(outages=[(2.0, 4.0), (1.0, 3.0)])
    out = {}
    _timed(env, net, "a", "b", 2e9, out=out, key=0)
    env.run()
    assert out[0] == pytest.approx(5.0 + 0.1, rel=1e-12)


def test_network_refuses_bad_dynamics():
    """Network refuses decreasing series times, negative series bandwidth and an outage with end <= start, naming the link."""
    for attrs in ({"bandwidth_series": [(1.0, 1.0), (0.5, 1.0)]}, {"bandwidth_series": [(0.0, -1.0)]},
                  {"outages": [(2.0, 2.0)]}):
        g = nx.Graph()
        g.add_edge("a", "b", bandwidth_gbps=1.0, latency_s=0.0, **attrs)
        with pytest.raises(ValueError, match="link a-b"):
            Network(simpy.Environment(), g)


def test_scenario_bandwidth_csv_and_outages_reach_the_graph(tmp_path):
    """load_scenario resolves bandwidth_csv relative to the scenario file; build_graph puts the series and outages on the WAN edge."""
    import yaml

    from sim.engine.topology import build_graph
    from sim.scenario import load_scenario

    data = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    data["topology"]["links"][0]["bandwidth_csv"] = "traces/wan.csv"
    data["topology"]["links"][0]["outages"] = [{"start_s": 5.0, "end_s": 6.5}]
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "wan.csv").write_text("time_s,bandwidth_gbps\n0,1.0\n10.5,0.25\n")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    sc = load_scenario(path)
    assert sc.topology.links[0].bandwidth_csv == str((tmp_path / "traces" / "wan.csv").resolve())
    g, _ = build_graph(sc.topology)
    edge = g.edges["us", "eu"]
    assert edge["bandwidth_series"] == [(0.0, 1.0), (10.5, 0.25)]
    assert edge["outages"] == [(5.0, 6.5)]
    assert "bandwidth_series" not in g.edges["us/0", "us"]


@pytest.mark.parametrize("text,needle", [
    ("time,bw\n0,1\n", "header"),
    ("time_s,bandwidth_gbps\n", "at least one data row"),
    ("time_s,bandwidth_gbps\n0,fast\n", "line 2: expected two numbers"),
    ("time_s,bandwidth_gbps\n-1,1\n", "line 2: time_s must be finite and >= 0"),
    ("time_s,bandwidth_gbps\n0,1\n0,2\n", "line 3: time_s must increase"),
    ("time_s,bandwidth_gbps\n0,nan\n", "line 2: bandwidth_gbps must be finite"),
])
def test_bad_bandwidth_csv_is_one_located_line(tmp_path, text, needle):
    """A bad bandwidth CSV is refused by load_scenario with one line that names topology.links.0.bandwidth_csv and the problem."""
    import yaml

    from sim.scenario import ScenarioError, load_scenario

    data = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    data["topology"]["links"][0]["bandwidth_csv"] = "wan.csv"
    (tmp_path / "wan.csv").write_text(text)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert msg.startswith("topology.links.0.bandwidth_csv: ") and needle in msg and "\n" not in msg


# ---------------------------------------------------------------------------- incremental rates
def test_simultaneous_starts_are_one_recomputation():
    """Flows started at one instant by one process are rated in a single recomputation."""
    env, net = _net([("a", "b", GBPS_1E9, 0.0), ("b", "c", GBPS_1E9, 0.0)])
    for _ in range(50):
        net.transfer("a", "c", 1e6)
        net.transfer("b", "a", 1e6)
    env.run(until=1e-12)
    assert net.rate_recomputations == 1
    assert {f.rate for f in net._flows} == {1e9 / 50}


def test_recomputation_touches_only_the_affected_component():
    """A flow starting on a link no other flow uses recomputes only itself, not the unrelated busy link's flows."""
    env, net = _net([("a", "b", GBPS_1E9, 0.0), ("c", "d", GBPS_1E9, 0.0), ("b", "c", GBPS_1E9, 0.0)])
    for _ in range(20):
        net.transfer("a", "b", 1e9)
    env.run(until=0.1)
    before = net.rate_recomputed_flows
    net.transfer("c", "d", 1e6)
    env.run(until=0.2)
    # its start re-rates only itself; its end leaves no flow on its link to re-rate
    assert net.rate_recomputed_flows - before == 1
    assert net.active_flows == 20


def test_rate_change_propagates_along_a_chain_of_shared_links():
    """On a line A,B,C (C twice as fast) with flows X:A, Y:A+B, Z:B+C, W:C, a new flow on A lowers Y to 1/3, which raises Z to 2/3 and lowers W from 1.5 to 4/3 (GB/s): the recomputed component reaches three links away."""
    env, net = _net([("n0", "n1", GBPS_1E9, 0.0), ("n1", "n2", GBPS_1E9, 0.0), ("n2", "n3", 2 * GBPS_1E9, 0.0)])
    routes = {"X": ("n0", "n1"), "Y": ("n0", "n2"), "Z": ("n1", "n3"), "W": ("n2", "n3")}
    for s, d in routes.values():
        net.transfer(s, d, 1e12)
    env.run(until=1.0)

    def rates():  # the extra flow on A shares X's route and rate
        by_route = {(f.src, f.dst): f.rate for f in net._flows}
        return {k: by_route[r] for k, r in routes.items()}

    assert rates() == pytest.approx({"X": 0.5e9, "Y": 0.5e9, "Z": 0.5e9, "W": 1.5e9})
    net.transfer("n0", "n1", 1e12)
    env.run(until=2.0)
    assert rates() == pytest.approx({"X": 1e9 / 3, "Y": 1e9 / 3, "Z": 2e9 / 3, "W": 4e9 / 3})


def test_leaf_routes_are_shortest_paths():
    """Routes from and to degree-1 nodes (workers on a switch) have the latency of networkx's shortest path."""
    from sim.engine.topology import build_graph
    from sim.scenario import Link, Region, Topology

    topo = Topology(regions=[Region(name="us", nodes=3), Region(name="eu", nodes=2), Region(name="ap", nodes=2)],
                    links=[Link(a="us", b="eu", bandwidth_gbps=1.0, latency_s=0.04),
                           Link(a="eu", b="ap", bandwidth_gbps=1.0, latency_s=0.05),
                           Link(a="us", b="ap", bandwidth_gbps=1.0, latency_s=0.2)])
    g, workers = build_graph(topo)
    net = Network(simpy.Environment(), g)
    for s in list(g.nodes):
        for d in list(g.nodes):
            if s != d:
                path = net.route(s, d)
                assert path[0] == s and path[-1] == d
                assert net.route_latency_s(s, d) == pytest.approx(
                    nx.shortest_path_length(g, s, d, weight="latency_s"), abs=1e-15)
    assert net.route("us/0", "ap/1") == ["us/0", "us", "eu", "ap", "ap/1"]


def _global_max_min(flows, capacity):
    """Reference: progressive filling over every active flow at once (the textbook loop)."""
    rate = {f: None for f in flows}
    left, users = {}, {}
    for f in flows:
        for l in f.links:
            if not math.isinf(capacity[l]):
                users.setdefault(l, []).append(f)
                left[l] = capacity[l]
    unfrozen = {l: len(fs) for l, fs in users.items()}
    while unfrozen:
        share, bottleneck = min((left[l] / n, l) for l, n in unfrozen.items())
        for f in users[bottleneck]:
            if rate[f] is not None:
                continue
            rate[f] = max(share, 0.0)
            for l in f.links:
                if l in unfrozen:
                    left[l] -= share
                    unfrozen[l] -= 1
                    if unfrozen[l] == 0:
                        del unfrozen[l]
        unfrozen.pop(bottleneck, None)
    return {f: (math.inf if r is None else r) for f, r in rate.items()}


@st.composite
def _dynamic_scenarios(draw):
    nodes, edges, flows = draw(_scenarios())
    dyn = {}
    for k, (a, b, bw, lat) in enumerate(edges):
        if draw(st.booleans()):
            kind = draw(st.sampled_from(["series", "outage"]))
            if kind == "series":
                times = sorted(set(draw(st.lists(st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.2, 2.0]), min_size=1, max_size=3))))
                rows = [(t, draw(st.sampled_from([0.0, 1.0, 4.0, 8.0]))) for t in times]
                dyn[k] = {"bandwidth_series": rows + [(3.0, 2.0)]}  # ends up, so every flow finishes
            else:
                start = draw(st.sampled_from([0.0, 0.3, 0.5, 1.0]))
                dyn[k] = {"outages": [(start, start + draw(st.sampled_from([0.2, 0.5, 1.0])))]}
    return nodes, edges, flows, dyn


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_dynamic_scenarios())
def test_incremental_rates_equal_global_progressive_filling(case):
    """At probe times between events, with random flows, bandwidth changes and outages, every active flow's rate equals a from-scratch global max-min over all active flows; every flow is delivered and bytes are conserved."""
    nodes, edges, flows, dyn = case
    env = simpy.Environment()
    g = nx.Graph()
    for k, (a, b, bw, lat) in enumerate(edges):
        g.add_edge(a, b, bandwidth_gbps=bw, latency_s=lat, **dyn.get(k, {}))
    net = Network(env, g)
    out = {}
    for k, (s, d, size, at) in enumerate(flows):
        _timed(env, net, s, d, size, at=at, out=out, key=k)
    for probe in (0.05, 0.2, 0.4, 0.65, 0.9, 1.1, 1.5, 1.85, 2.5, 4.0):
        env.run(until=probe)
        active = list(net._flows)
        expected = _global_max_min(active, net.capacity)
        for f in active:
            assert f.rate == pytest.approx(expected[f], rel=1e-9, abs=1e-6), (probe, f.src, f.dst)
    env.run()
    assert len(out) == len(flows) and net.active_flows == 0
    total = sum(f[2] for f in flows)
    assert sum(net.sent_bytes.values()) == pytest.approx(total, rel=1e-12, abs=1e-6)


def _triangle(outages):
    """a-b direct (1 GB/s, 0.1 s) with ``outages``, and a detour a-c-b (1 GB/s, 0.2 s per hop)."""
    env = simpy.Environment()
    g = nx.Graph()
    g.add_edge("a", "b", bandwidth_gbps=GBPS_1E9, latency_s=0.1, outages=outages)
    g.add_edge("a", "c", bandwidth_gbps=GBPS_1E9, latency_s=0.2)
    g.add_edge("c", "b", bandwidth_gbps=GBPS_1E9, latency_s=0.2)
    return env, Network(env, g)


def test_a_flow_started_while_its_link_is_down_takes_the_detour():
    """With a-b down over [0.5, 5), a 1 GB transfer started at t=1 goes a-c-b: delivered at
    1 + 1 + 0.4 s (not 5 + 1 + 0.1), and recorded with that route; one started before the
    outage keeps its route and stalls (0.5 GB sent, then 0.5 GB after t=5)."""
    env, net = _triangle([(0.5, 5.0)])
    out = {}
    _timed(env, net, "a", "b", 1e9, out=out, key="before")
    _timed(env, net, "a", "b", 1e9, at=1.0, out=out, key="during")
    env.run(until=1.0)
    assert net.route("a", "b") == ["a", "c", "b"] and net.route_latency_s("a", "b") == pytest.approx(0.4)
    env.run()
    assert out["during"] == pytest.approx(1.0 + 1.0 + 0.4, rel=1e-12)
    assert out["before"] == pytest.approx(5.0 + 0.5 + 0.1, rel=1e-12)
    routes = {t.start_s: t.route for t in net.recorder.transfers}
    assert routes[1.0] == "a>c>b" and routes[0.0] == "a>b"
    assert net.route("a", "b") == ["a", "b"]  # the link is back: the short route again


def test_without_a_detour_a_flow_waits_for_the_link():
    """Both a-b and c-b down: no live route, so the transfer keeps a-b and waits for it."""
    env = simpy.Environment()
    g = nx.Graph()
    g.add_edge("a", "b", bandwidth_gbps=GBPS_1E9, latency_s=0.1, outages=[(0.0, 2.0)])
    g.add_edge("a", "c", bandwidth_gbps=GBPS_1E9, latency_s=0.2)
    g.add_edge("c", "b", bandwidth_gbps=GBPS_1E9, latency_s=0.2, outages=[(0.0, 3.0)])
    net = Network(env, g)
    out = {}
    _timed(env, net, "a", "b", 1e9, at=1.0, out=out, key=0)
    env.run()
    assert out[0] == pytest.approx(2.0 + 1.0 + 0.1, rel=1e-12)


# ---------------------------------------------------------------------------- vectorized rates
def _heap_reference(routes, cap):
    """Reference: progressive filling with a heap of (share, link id) entries, stale ones
    re-pushed lazily (the loop the network ran before it was vectorized)."""
    import heapq

    left, count = {}, {}
    for links in routes:
        for l in links:
            if not math.isinf(cap[l]):
                left[l] = cap[l]
                count[l] = count.get(l, 0) + 1
    heap = [(left[l] / n, l) for l, n in count.items()]
    heapq.heapify(heap)
    rate = [None] * len(routes)
    while heap:
        share, l = heapq.heappop(heap)
        if count[l] == 0:
            continue
        if left[l] / count[l] != share:
            heapq.heappush(heap, (left[l] / count[l], l))
            continue
        for j, links in enumerate(routes):
            if rate[j] is None and l in links:
                rate[j] = share if share > 0 else 0.0
                for m in links:
                    if m in count:
                        left[m] -= share
                        count[m] -= 1
    return [math.inf if r is None else r for r in rate]


@st.composite
def _fill_cases(draw):
    n_links = draw(st.integers(1, 12))
    # few distinct capacities and shared links: ties between shares and stale heap entries
    cap = [draw(st.sampled_from([0.0, 1.0, 3.0, 10.0, 1e9 / 3, math.inf])) for _ in range(n_links)]
    k = draw(st.integers(1, 120))
    routes = [draw(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=4, unique=True)) for _ in range(k)]
    return cap, routes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_fill_cases())
def test_vectorized_progressive_filling_gives_the_heaps_floats(case):
    """The numpy progressive filling (many flows, some passes, stale entries, ties, links at 0 and inf) returns exactly the floats of the heap loop, flow by flow."""
    import numpy as np

    from sim.engine.maxmin import progressive_filling as _progressive_filling

    cap, routes = case
    width = max(len(r) for r in routes)
    pad = len(cap)
    hops = np.full((width, len(routes)), pad, dtype=np.intp)
    for j, links in enumerate(routes):
        finite = [l for l in links if not math.isinf(cap[l])]
        hops[:len(finite), j] = finite
    got = _progressive_filling(hops, np.array(cap + [math.inf])).tolist()
    assert got == _heap_reference(routes, cap)


def test_large_components_give_the_small_paths_timeline(monkeypatch):
    """Churn on a 3-region topology (hundreds of flows in one component): the numpy path gives the same transfer records, rates and recomputation counts as the plain-Python path, bit for bit."""
    import numpy as np

    import sim.engine.network as network
    from sim.engine.topology import build_graph
    from sim.scenario import Link, Region, Topology

    topo = Topology(regions=[Region(name="us", nodes=40), Region(name="eu", nodes=40), Region(name="ap", nodes=40)],
                    links=[Link(a="us", b="eu", bandwidth_gbps=1.0, latency_s=0.04),
                           Link(a="eu", b="ap", bandwidth_gbps=1.0, latency_s=0.05),
                           Link(a="us", b="ap", bandwidth_gbps=2.0, latency_s=0.2)],
                    intra_region={"bandwidth_gbps": 10.0, "latency_s": 1e-4})

    def run(small):
        monkeypatch.setattr(network, "_SMALL", small)
        g, workers = build_graph(topo)
        env = simpy.Environment()
        net = Network(env, g)
        r = np.random.default_rng(3)
        n = 600
        src = r.integers(0, len(workers), n)
        dst = (src + r.integers(1, len(workers), n)) % len(workers)
        gaps = r.exponential(2e-3, n)
        sizes = 2e6 * r.lognormal(0.0, 1.0, n)
        probes = []

        def arrivals():
            for i in range(n):
                yield env.timeout(float(gaps[i]))
                net.transfer(workers[src[i]], workers[dst[i]], float(sizes[i]))
                if i % 50 == 0:
                    net.set_bandwidth_gbps("us", "eu", 0.5 if i % 100 else 1.0)
                probes.append(sorted((f.seq, f.rate) for f in net.flows_in_flight()))

        env.process(arrivals())
        env.run()
        rows = [(t.src, t.dst, t.start_s, t.end_s) for t in net.recorder.transfers]
        return rows, probes, net.rate_recomputations, net.rate_recomputed_flows

    small = run(10**9)
    large = run(0)
    assert large[2:] == small[2:] and large[3] / large[2] > 50  # components of many flows
    assert large[0] == small[0]
    assert large[1] == small[1]
