"""Collectives against their alpha-beta formulas (REFERENCE.md section 8) on hand-made graphs."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import simpy

from sim.engine.collectives import COLLECTIVES
from sim.engine.network import Network
from sim.engine.topology import gbps_to_bytes_per_s

BW, LAT, SIZE = 8.0, 0.01, 1e9  # 8 Gbit/s = 1e9 bytes/s per direction
B = gbps_to_bytes_per_s(BW)


def _complete(p, bw=BW, lat=LAT):
    g = nx.complete_graph([f"n{i}" for i in range(p)])
    nx.set_edge_attributes(g, bw, "bandwidth_gbps")
    nx.set_edge_attributes(g, lat, "latency_s")
    return g


def _star(p, bw=BW, hop_lat=LAT / 2, center="sw"):
    """p members on one switch; a member-to-member route is two hops (latency 2·hop_lat)."""
    g = nx.Graph()
    for i in range(p):
        g.add_edge(f"n{i}", center, bandwidth_gbps=bw, latency_s=hop_lat)
    return g


def _rails(regions, per_region, bw_in, lat_in, bw_net, lat_net):
    """R regions of G members: complete graph inside a region, and member j of every region
    joined to member j of every other region (one WAN link per shard ring hop)."""
    g = nx.Graph()
    for r in range(regions):
        for j in range(per_region):
            g.add_node(f"r{r}/{j}", region=f"r{r}")
        for a in range(per_region):
            for b in range(a + 1, per_region):
                g.add_edge(f"r{r}/{a}", f"r{r}/{b}", bandwidth_gbps=bw_in, latency_s=lat_in)
    for j in range(per_region):
        for r in range(regions):
            for s in range(r + 1, regions):
                g.add_edge(f"r{r}/{j}", f"r{s}/{j}", bandwidth_gbps=bw_net, latency_s=lat_net)
    return g


def _run(name, g, members, size=SIZE):
    env = simpy.Environment()
    net = Network(env, g)
    env.process(COLLECTIVES[name](env, net, list(members), size, "t"))
    env.run()
    return env.now, net


def _assert_conserved(net, total):
    assert sum(net.sent_bytes.values()) == pytest.approx(total, rel=1e-12)
    assert sum(net.received_bytes.values()) == pytest.approx(total, rel=1e-12)
    assert sum(t.payload_bytes for t in net.recorder.transfers) == pytest.approx(total, rel=1e-12)
    assert net.active_flows == 0


# ---------------------------------------------------------------------------- registry
def test_registry_names():
    """COLLECTIVES holds exactly the seven documented names."""
    assert set(COLLECTIVES) == {"ring_allreduce", "ring_allreduce_stepwise", "tree_allreduce",
                                "hierarchical_allreduce", "parameter_server", "ring_allgather", "exchange"}


@pytest.mark.parametrize("name", sorted(COLLECTIVES))
def test_single_member_or_empty_payload_takes_no_time(name):
    """Every collective over one member, or of zero bytes, finishes at once and sends nothing."""
    for members, size in ((["n0"], SIZE), (["n0", "n1", "n2"], 0.0)):
        t, net = _run(name, _complete(3), members, size)
        assert t == 0.0
        assert sum(net.sent_bytes.values()) == 0.0


# ---------------------------------------------------------------------------- ring
@pytest.mark.parametrize("name", ["ring_allreduce", "ring_allreduce_stepwise"])
@pytest.mark.parametrize("p", [2, 3, 5, 8])
def test_ring_matches_alpha_beta_and_conserves_bytes(name, p):
    """Ring all-reduce (pipelined and stepwise) takes 2(P-1)a + 2(P-1)/P·S/B on equal links and puts 2(P-1)·S bytes on the wire."""
    t, net = _run(name, _complete(p), [f"n{i}" for i in range(p)])
    assert t == pytest.approx(2 * (p - 1) * LAT + 2 * (p - 1) / p * SIZE / B, rel=1e-9)
    _assert_conserved(net, 2 * (p - 1) * SIZE)


@pytest.mark.parametrize("p", [2, 3, 5, 8])
def test_ring_allgather_matches_alpha_beta_and_conserves_bytes(p):
    """Ring all-gather of S per member takes (P-1)a + (P-1)·S/B on equal links (each link
    carries the other P-1 contributions) and puts P(P-1)·S bytes on the wire."""
    t, net = _run("ring_allgather", _complete(p), [f"n{i}" for i in range(p)])
    assert t == pytest.approx((p - 1) * LAT + (p - 1) * SIZE / B, rel=1e-9)
    _assert_conserved(net, p * (p - 1) * SIZE)


@pytest.mark.parametrize("p", [3, 4, 6])
@pytest.mark.parametrize("lat", [0.0, 0.002])
def test_pipelined_ring_equals_stepwise_with_one_slow_link(p, lat):
    """On a ring graph where one link has a quarter of the bandwidth, the pipelined and stepwise rings finish at the same time (slowest link bound)."""
    g = nx.cycle_graph([f"n{i}" for i in range(p)])
    nx.set_edge_attributes(g, BW, "bandwidth_gbps")
    nx.set_edge_attributes(g, lat, "latency_s")
    g.edges["n0", "n1"]["bandwidth_gbps"] = BW / 4
    members = [f"n{i}" for i in range(p)]
    fast, _ = _run("ring_allreduce", g, members)
    step, _ = _run("ring_allreduce_stepwise", g, members)
    assert fast == pytest.approx(step, rel=1e-9)
    assert fast == pytest.approx(2 * (p - 1) * lat + 2 * (p - 1) / p * SIZE / (B / 4), rel=1e-9)


def test_pipelined_ring_on_a_star_uses_p_flows():
    """The pipelined ring over P members starts P flows (the stepwise one 2(P-1)·P) and matches its time on a star."""
    p = 6
    members = [f"n{i}" for i in range(p)]
    fast, net_fast = _run("ring_allreduce", _star(p), members)
    step, net_step = _run("ring_allreduce_stepwise", _star(p), members)
    assert net_fast.flows_started == p and net_step.flows_started == 2 * (p - 1) * p
    assert fast == pytest.approx(step, rel=1e-9)


# ---------------------------------------------------------------------------- tree
@pytest.mark.parametrize("graph", ["complete", "star"])
@pytest.mark.parametrize("p", [2, 4, 8, 16])
def test_tree_matches_alpha_beta_for_power_of_two(graph, p):
    """Binomial tree all-reduce takes 2·log2(P)·(a + S/B) for P a power of two on equal links, and moves 2(P-1)·S bytes."""
    g = _complete(p) if graph == "complete" else _star(p)
    t, net = _run("tree_allreduce", g, [f"n{i}" for i in range(p)])
    assert t == pytest.approx(2 * math.log2(p) * (LAT + SIZE / B), rel=1e-9)
    _assert_conserved(net, 2 * (p - 1) * SIZE)


@pytest.mark.parametrize("p,rounds", [(3, 3), (5, 5), (6, 5), (7, 5)])
def test_tree_non_power_of_two_hand_computed(p, rounds):
    """For P not a power of two, on a complete graph the binomial tree takes the hand-computed number of (a + S/B) rounds, at most 2·ceil(log2 P).

    P=7: reduce 5,6->4 and 1->0, 3->2 at once (1 round), then 2->0, 4->0 (round 2); broadcast
    0->4, 0->2, 0->1 one after another while 4->6, 4->5 and 2->3 follow (3 rounds): 5 in all.
    P=3: 1->0 and 2->0 at once, then 0->2, 0->1: 3. P=5 and P=6: 2 + 3 = 5.
    """
    t, net = _run("tree_allreduce", _complete(p), [f"n{i}" for i in range(p)])
    assert rounds <= 2 * math.ceil(math.log2(p))
    assert t == pytest.approx(rounds * (LAT + SIZE / B), rel=1e-9)
    _assert_conserved(net, 2 * (p - 1) * SIZE)


# ---------------------------------------------------------------------------- hierarchical
@pytest.mark.parametrize("regions,per_region", [(2, 2), (2, 4), (3, 2), (3, 3), (4, 1), (1, 4)])
def test_hierarchical_matches_two_level_formula(regions, per_region):
    """Hierarchical all-reduce with R regions of G members takes 2[(G-1)a_in + (G-1)/G·S/B_in] + 2(R-1)a_net + 2(R-1)/R·(S/G)/B_net."""
    bw_in, lat_in, bw_net, lat_net = 80.0, 1e-4, 8.0, 0.04
    g = _rails(regions, per_region, bw_in, lat_in, bw_net, lat_net)
    members = [f"r{r}/{j}" for r in range(regions) for j in range(per_region)]
    t, net = _run("hierarchical_allreduce", g, members)
    G, R = per_region, regions
    b_in, b_net = gbps_to_bytes_per_s(bw_in), gbps_to_bytes_per_s(bw_net)
    expected = (2 * ((G - 1) * lat_in + (G - 1) / G * SIZE / b_in)
                + 2 * (R - 1) * lat_net + 2 * (R - 1) / R * (SIZE / G) / b_net)
    assert t == pytest.approx(expected, rel=1e-9)
    _assert_conserved(net, 2 * R * (G - 1) * SIZE + 2 * (R - 1) * SIZE)


def test_hierarchical_uneven_regions_fold_extras_and_cross_wan_with_less_than_ring():
    """With regions of 3, 2 and 4 members on a star per region, extras fold onto the first K=2, bytes are conserved, and each WAN direction carries less than the flat ring puts on it."""
    g = nx.Graph()
    sizes = {"us": 3, "eu": 2, "asia": 4}
    members = []
    for region, n in sizes.items():
        g.add_node(region, region=region)
        for i in range(n):
            g.add_node(f"{region}/{i}", region=region)
            g.add_edge(f"{region}/{i}", region, bandwidth_gbps=100.0, latency_s=1e-4)
            members.append(f"{region}/{i}")
    g.add_edge("us", "eu", bandwidth_gbps=BW, latency_s=0.04)
    g.add_edge("eu", "asia", bandwidth_gbps=BW, latency_s=0.08)
    g.add_edge("us", "asia", bandwidth_gbps=BW, latency_s=0.10)
    t, net = _run("hierarchical_allreduce", g, members)
    k, r, extras = 2, 3, (3 - 2) + (4 - 2)
    _assert_conserved(net, 2 * extras * SIZE + 2 * r * (k - 1) * SIZE + 2 * (r - 1) * SIZE)
    ring_t, ring = _run("ring_allreduce", g, members)
    wan = [("us", "eu"), ("eu", "asia"), ("asia", "us")]
    assert max(net.link_bytes[l] for l in wan) < max(ring.link_bytes[l] for l in wan)
    assert t < ring_t


# ---------------------------------------------------------------------------- parameter server
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_parameter_server_matches_2a_plus_kS_over_B(k):
    """A parameter server with k workers behind one switch takes 2a + k·S/B (pushes and streamed replies share the server link full duplex) and moves 2k·S bytes."""
    g = _star(k + 1)
    t, net = _run("parameter_server", g, [f"n{i}" for i in range(k + 1)])
    assert t == pytest.approx(2 * LAT + k * SIZE / B, rel=1e-9)
    _assert_conserved(net, 2 * k * SIZE)
    assert net.received_bytes["n0"] == pytest.approx(k * SIZE) and net.sent_bytes["n0"] == pytest.approx(k * SIZE)


def test_parameter_server_reply_waits_for_slowest_contribution():
    """When one worker's uplink is 4x slower, replies cannot finish before its contribution has arrived: a + S/(B/4) + a."""
    g = _star(3)
    g.edges["n2", "sw"]["bandwidth_gbps"] = BW / 4
    t, _ = _run("parameter_server", g, ["n0", "n1", "n2"])
    # n2's push: its uplink (B/4) is the bottleneck -> arrives a + 4S/B; the last reply byte leaves then, +a.
    assert t == pytest.approx(2 * LAT + 4 * SIZE / B, rel=1e-9)


# ---------------------------------------------------------------------------- exchange
def test_pair_exchange_is_a_plus_S_over_B_each_way():
    """A pair exchange takes a + S/B: the two directions of a full-duplex link do not share."""
    t, net = _run("exchange", _complete(2), ["n0", "n1"])
    assert t == pytest.approx(LAT + SIZE / B, rel=1e-12)
    _assert_conserved(net, 2 * SIZE)
    assert [x.end_s for x in net.recorder.transfers] == pytest.approx([LAT + SIZE / B] * 2, rel=1e-12)


@pytest.mark.parametrize("n", [3, 4])
def test_group_exchange_complete_graph_and_star(n):
    """A group of n exchanging all-to-all takes a + S/B on a complete graph and a + (n-1)·S/B through one switch (each uplink carries n-1 flows); n(n-1)·S bytes move."""
    members = [f"n{i}" for i in range(n)]
    t, net = _run("exchange", _complete(n), members)
    assert t == pytest.approx(LAT + SIZE / B, rel=1e-9)
    _assert_conserved(net, n * (n - 1) * SIZE)
    t, net = _run("exchange", _star(n), members)
    assert t == pytest.approx(LAT + (n - 1) * SIZE / B, rel=1e-9)
    _assert_conserved(net, n * (n - 1) * SIZE)


# ---------------------------------------------------------------------------- scale without timing
def test_ring_of_1024_across_three_regions_touches_each_flow_a_bounded_number_of_times():
    """A 1,024-member pipelined ring over 3 regions starts 1,024 flows, recomputes rates over at most 2 flows per flow (no quadratic work), and matches the bottleneck formula."""
    from sim.engine.topology import build_graph
    from sim.scenario import Link, Region, Topology

    topo = Topology(regions=[Region(name="us", nodes=342), Region(name="eu", nodes=341), Region(name="asia", nodes=341)],
                    links=[Link(a="us", b="eu", bandwidth_gbps=10.0, latency_s=0.04),
                           Link(a="eu", b="asia", bandwidth_gbps=10.0, latency_s=0.08),
                           Link(a="asia", b="us", bandwidth_gbps=10.0, latency_s=0.10)])
    g, workers = build_graph(topo)
    env = simpy.Environment()
    net = Network(env, g)
    env.process(COLLECTIVES["ring_allreduce"](env, net, workers, 4e9, "big"))
    env.run()
    p = len(workers)
    assert p == 1024 and net.flows_started == p
    assert net.rate_recomputed_flows <= 2 * p
    ring_lat = sum(net.route_latency_s(workers[i], workers[(i + 1) % p]) for i in range(p))
    expected = 2 * (p - 1) / p * (ring_lat + 4e9 / gbps_to_bytes_per_s(10.0))
    assert env.now == pytest.approx(expected, rel=1e-9)
