"""Flow classes (issue 26): a collective's flows that start together with the same route
shape run as one entity with a multiplicity while they are symmetric, and are split into
their members when they stop being so. They must give what one flow each gives: the same
records, finish times and rates on random topologies (rings, trees, meshes, hierarchical
collectives, competing traffic, outages and bandwidth changes mid-flight), and the same
``events.parquet`` for every method at both grains."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.engine.network as network
from sim.engine.collectives import COLLECTIVES
from sim.engine.maxmin import progressive_filling
from sim.engine.network import Network
from sim.engine.topology import build_graph
from sim.metrics.tables import events_table
from sim.runner import Simulation
from sim.scenario import Link, Region, Topology, parse_scenario
from tests.test_network import _heap_reference

REL = 1e-12  # the stated tolerance: finish times and rates agree to 1e-12 relative (most are bit for bit)
GROUPED = ["ring_allreduce", "ring_allgather", "hierarchical_allreduce", "exchange"]


@st.composite
def _worlds(draw):
    """A topology (a ring, a tree or a mesh of regions), WAN dynamics, collectives over random
    member subsets at random times, competing single transfers and mid-flight bandwidth sets."""
    n_regions = draw(st.integers(1, 4))
    sizes = [draw(st.integers(2 if n_regions == 1 else 1, 6)) for _ in range(n_regions)]
    names = [f"r{i}" for i in range(n_regions)]
    shape = draw(st.sampled_from(["ring", "tree", "mesh"]))
    pairs = []
    if n_regions > 1:
        if shape == "tree":
            pairs = [(names[draw(st.integers(0, i - 1))], names[i]) for i in range(1, n_regions)]
        else:
            pairs = [(names[i], names[(i + 1) % n_regions]) for i in range(n_regions)]
            pairs = list(dict.fromkeys(tuple(sorted(p)) for p in pairs if p[0] != p[1]))
            if shape == "mesh":
                pairs += [(names[i], names[j]) for i in range(n_regions) for j in range(i + 2, n_regions)
                          if draw(st.booleans()) and (names[i], names[j]) not in pairs]
    links = []
    for a, b in pairs:
        spec = {"a": a, "b": b, "bandwidth_gbps": draw(st.sampled_from([1.0, 2.0, 10.0])),
                "latency_s": draw(st.sampled_from([0.0, 0.01, 0.05]))}
        if draw(st.booleans()):
            start = draw(st.sampled_from([0.0, 0.2, 0.5]))
            spec["outages"] = [{"start_s": start, "end_s": start + draw(st.sampled_from([0.1, 0.4]))}]
        links.append(spec)
    topo = {"regions": [{"name": n, "nodes": k} for n, k in zip(names, sizes)], "links": links,
            "intra_region": {"bandwidth_gbps": draw(st.sampled_from([10.0, 100.0])), "latency_s": 1e-4}}
    n_workers = sum(sizes)
    collectives = [(draw(st.sampled_from(GROUPED)), draw(st.sampled_from([0.0, 0.0, 0.1, 0.3])),
                    draw(st.lists(st.integers(0, n_workers - 1), min_size=2, max_size=n_workers, unique=True)),
                    draw(st.sampled_from([1e7, 5e7, 2e8])))
                   for _ in range(draw(st.integers(1, 5)))]
    singles = [(draw(st.integers(0, n_workers - 1)), draw(st.integers(0, n_workers - 1)),
                draw(st.sampled_from([0.0, 0.05, 0.25])), draw(st.sampled_from([1e6, 3e7])))
               for _ in range(draw(st.integers(0, 4)))]
    sets = [(draw(st.integers(0, len(pairs) - 1)), draw(st.sampled_from([0.15, 0.35])),
             draw(st.sampled_from([0.0, 0.5, 4.0]))) for _ in range(draw(st.integers(0, 2)))] if pairs else []
    return topo, collectives, singles, sets, pairs


def _play(world, classes: bool, monkeypatch):
    """Run a world with flow classes on or off: (transfer records, collective end times,
    rates probed by start order at fixed times, the network)."""
    monkeypatch.setattr(network, "FLOW_CLASSES", classes)
    monkeypatch.setattr(network, "_MIN_CLASS", 2)  # classes of every size, down to a pair
    topo, collectives, singles, sets, pairs = world
    g, workers = build_graph(Topology.model_validate(topo))
    env = simpy.Environment()
    net = Network(env, g)
    ends = {}

    def collective(k, name, at, members, nbytes):
        if at:
            yield env.timeout(at)
        yield env.process(COLLECTIVES[name](env, net, [workers[i] for i in members], nbytes, f"c{k}"))
        ends[k] = env.now

    def single(src, dst, at, nbytes):
        if at:
            yield env.timeout(at)
        if src != dst:
            yield net.transfer(workers[src], workers[dst], nbytes, "single")

    def set_bw(edge, at, gbps):
        yield env.timeout(at)
        net.set_bandwidth_gbps(*pairs[edge], gbps)

    for k, (name, at, members, nbytes) in enumerate(collectives):
        env.process(collective(k, name, at, members, nbytes))
    for s in singles:
        env.process(single(*s))
    for s in sets:
        env.process(set_bw(*s))
    probes = []
    for t in (0.01, 0.12, 0.27, 0.45, 0.8, 1.5, 3.0):
        env.run(until=t)
        probes.append(sorted((f.seq, f.rate) for f in net.flows_in_flight()))
    env.run()
    rows = [(r.src, r.dst, r.payload_bytes, r.start_s, r.end_s, r.tag, r.route) for r in net.recorder.transfers]
    return rows, ends, probes, net


def _close(a: float, b: float) -> bool:
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= REL * max(abs(a), abs(b)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(world=_worlds())
def test_flow_classes_give_the_per_flow_records_rates_and_finish_times(world, monkeypatch):
    """On random rings, trees and meshes of regions, with ring, all-gather, hierarchical and
    exchange collectives over random members at random times, competing single transfers,
    outages and bandwidth set mid-flight: with flow classes every transfer record (order,
    route, bytes, start) is the per-flow one and its arrival within 1e-12 relative, every
    collective ends within 1e-12 relative, every probed rate (by start order) within 1e-12
    relative, and every link carries the same bytes."""
    plain = _play(world, False, monkeypatch)
    grouped = _play(world, True, monkeypatch)
    (rows_a, ends_a, probes_a, net_a), (rows_b, ends_b, probes_b, net_b) = plain, grouped
    assert len(rows_a) == len(rows_b)
    for x, y in zip(rows_a, rows_b):
        assert x[:4] == y[:4] and x[5:] == y[5:] and _close(x[4], y[4]), (x, y)
    assert ends_a.keys() == ends_b.keys() and all(_close(ends_a[k], ends_b[k]) for k in ends_a)
    for pa, pb in zip(probes_a, probes_b):
        assert [s for s, _ in pa] == [s for s, _ in pb]
        assert all(_close(ra, rb) for (_, ra), (_, rb) in zip(pa, pb)), (pa, pb)
    assert net_a.link_bytes.keys() == net_b.link_bytes.keys()
    assert all(_close(net_a.link_bytes[l], net_b.link_bytes[l]) for l in net_a.link_bytes)
    assert net_a.classes_started == 0 and net_a.active_flows == net_b.active_flows



def test_flows_that_finish_within_an_ulp_leave_in_start_order_with_or_without_classes(monkeypatch):
    """A 7-member ring over three regions in a line (r0: 3 workers, r1: 1, r2: 3): each WAN link
    carries 3 flows, so every flow's max-min rate is 1/3 of 1 Gbit/s, but flow by flow the link
    popped second gets (cap - 2 s) / 1, the same share but for its last ulp, so one flow finishes
    an ulp before the others. Flows due within 1e-12 relative finish together, in start order:
    the per-flow records come in the ring's order, as the flow class's do (before, the per-flow
    run wrote the hop r1/0 -> r2/0 first; found by a local hypothesis run of the test above)."""
    world = ({"regions": [{"name": "r0", "nodes": 3}, {"name": "r1", "nodes": 1}, {"name": "r2", "nodes": 3}],
              "links": [{"a": "r0", "b": "r1", "bandwidth_gbps": 1.0, "latency_s": 0.0},
                        {"a": "r1", "b": "r2", "bandwidth_gbps": 1.0, "latency_s": 0.0}],
              "intra_region": {"bandwidth_gbps": 10.0, "latency_s": 1e-4}},
             [("ring_allreduce", 0.0, [0, 3, 4, 1, 5, 2, 6], 1e7)], [], [], [("r0", "r1"), ("r1", "r2")])
    share = 1e9 / 8 / 3
    assert 1e9 / 8 - share - share != share  # the near-tie this test is about
    plain, grouped = _play(world, False, monkeypatch), _play(world, True, monkeypatch)
    ring = ["r0/0", "r1/0", "r2/0", "r0/1", "r2/1", "r0/2", "r2/2"]
    first = [(src, dst) for src, dst, *_ in plain[0][:7]]
    assert first == list(zip(ring, ring[1:] + ring[:1]))
    assert [r[:4] for r in plain[0]] == [r[:4] for r in grouped[0]]
    assert grouped[3].classes_started > 0 and plain[3].classes_started == 0

def _ring_world(per_region: int, regions: int = 8):
    topo = Topology(regions=[Region(name=f"r{i}", nodes=per_region) for i in range(regions)],
                    links=[Link(a=f"r{i}", b=f"r{(i + 1) % regions}", bandwidth_gbps=10.0, latency_s=0.02)
                           for i in range(regions)],
                    intra_region={"bandwidth_gbps": 100.0, "latency_s": 1e-5})
    return build_graph(topo)


def test_a_ring_of_512_is_two_classes_whose_end_is_the_alpha_beta_time(monkeypatch):
    """24 concurrent 512-member rings over 8 regions (the layer-grain sync): each ring's 504
    LAN-hop flows are one class (its 8 WAN-hop flows, fewer than _MIN_CLASS, stay flows), so
    the rates are recomputed for a tenth of the entities or less, and every ring ends at the
    alpha-beta time of a ring whose slowest link is shared 24 ways, as the per-flow model ends
    them, bit for bit."""
    from sim.engine.collectives import ring_allreduce

    ends = {}
    for classes in (False, True):
        monkeypatch.setattr(network, "FLOW_CLASSES", classes)
        g, workers = _ring_world(64)
        env = simpy.Environment()
        net = Network(env, g)
        procs = [env.process(ring_allreduce(env, net, workers, 1e8, f"l{j}")) for j in range(24)]
        env.run(env.all_of(procs))
        ends[classes] = (env.now, net.rate_recomputed_flows, net.classes_started, net.classes_split)
    p = 512
    ring_latency = (p - 8) * 2e-5 + 8 * (0.02 + 2e-5)  # LAN hops: up and down; WAN hops: up, WAN, down
    expected = 2 * (p - 1) / p * ring_latency + 2 * (p - 1) / p * 1e8 / (10e9 / 8 / 24)
    assert ends[True][0] == ends[False][0] == pytest.approx(expected, rel=1e-12)
    assert ends[True][2:] == (24, 0) and ends[False][2] == 0
    assert ends[True][1] * 10 < ends[False][1]


def test_traffic_on_one_member_link_splits_the_class_and_keeps_the_timeline(monkeypatch):
    """A single transfer that starts mid-way on one LAN link of a ring's class breaks its
    symmetry: the class is split into its members (with their progress) and every arrival is
    the per-flow one, bit for bit."""
    from sim.engine.collectives import ring_allreduce

    out = {}
    for classes in (False, True):
        monkeypatch.setattr(network, "FLOW_CLASSES", classes)
        monkeypatch.setattr(network, "_MIN_CLASS", 2)
        g, workers = _ring_world(4, regions=3)
        env = simpy.Environment()
        net = Network(env, g)

        def other():
            yield env.timeout(0.01)
            yield net.transfer(workers[1], "r0", 5e7, "other")

        env.process(ring_allreduce(env, net, workers, 1e8, "ring"))
        env.process(other())
        env.run()
        out[classes] = ([(t.src, t.dst, t.start_s, t.end_s) for t in net.recorder.transfers], net.classes_split)
    assert out[True][0] == out[False][0] and out[True][1] >= 1


# ---------------------------------------------------------------------- every method, both grains
STRAGGLERS_AND_WINDOWS = {
    "stragglers": [{"factor": {"kind": "lognormal", "sigma": 0.5}}],
    "links": [{"a": "us", "b": "eu", "degrade": [{"start_s": 0.4, "end_s": 1.1, "factor": 0.25}]}],
}
METHODS = [
    {"name": "ddp"},
    {"name": "diloco", "inner_steps": 5},
    {"name": "streaming_diloco", "inner_steps": 8, "fragment_layers": 1, "overlap_steps": 1},
    {"name": "noloco", "inner_steps": 4},
    {"name": "eager_diloco", "inner_steps": 4},
    {"name": "diloco_delayed", "inner_steps": 4},
    {"name": "fedavg", "inner_steps": 4},
    {"name": "sparta"},
    {"name": "sparta_diloco", "inner_steps": 4},
    {"name": "demo"},
    # the asynchronous methods: point-to-point pushes and answers through parameter servers
    {"name": "async_local_sgd"},
    {"name": "halos", "inner_steps": 4, "global_server": "ps"},
    {"name": "fedbuff", "inner_steps": 4, "buffer_size": 3},
]
SERVED = {"async_local_sgd": ["eu"], "halos": ["eu", "us"], "fedbuff": ["eu"]}  # their servers' regions


def test_the_method_list_holds_every_shipped_method():
    """The every-method tests (here and in tests/test_compiled.py) run every method locosim ships."""
    from sim.algorithms import METHODS as SHIPPED

    assert sorted(a["name"] for a in METHODS) == sorted(SHIPPED)


def _method_data(algo: dict) -> dict:
    servers = [{"name": "ps" if i == 0 else f"ps{i + 1}", "region": r}
               for i, r in enumerate(SERVED.get(algo["name"], []))]
    return {"seed": 5, "numerics": False, "timing": {"params": 4.0e6, "layers": 4, "step_time_s": 0.05},
            "topology": {"regions": [{"name": "us", "nodes": 5}, {"name": "eu", "nodes": 4}, {"name": "ap", "nodes": 3}],
                         "links": [{"a": "us", "b": "eu", "bandwidth_gbps": 1.0, "latency_s": 0.03},
                                   {"a": "eu", "b": "ap", "bandwidth_gbps": 2.0, "latency_s": 0.05}],
                         **({"servers": servers} if servers else {})},
            "algorithm": algo, "run": {"max_sim_time_s": 3.0}, "faults": STRAGGLERS_AND_WINDOWS}


def _grains(algo: dict) -> list[dict]:
    """The method at step and at layer grain, where it has the knob."""
    out = []
    for grain in ("step", "layer"):
        a = {**algo, "sync_grain": grain}
        try:
            parse_scenario(_method_data(a))
        except Exception:
            continue
        out.append(a)
    return out or [algo]


@pytest.mark.parametrize("algo", [a for m in METHODS for a in _grains(m)],
                         ids=lambda a: f"{a['name']}-{a.get('sync_grain', 'none')}")
def test_events_are_identical_with_flow_classes_on_and_off(algo, monkeypatch):
    """Every method at each grain it has, with lognormal stragglers and a bandwidth window on
    a WAN link, 12 workers in 3 regions: the events table (every state span, transfer, sync
    and fault) is the same to the bit with flow classes on and off. (The asynchronous methods
    send point to point, never a group: no class starts, and the switch changes nothing.)"""
    tables = {}
    started = {}
    for classes in (False, True):
        monkeypatch.setattr(network, "FLOW_CLASSES", classes)
        monkeypatch.setattr(network, "_MIN_CLASS", 2)  # 12 workers: classes of every size
        sim = Simulation(parse_scenario(_method_data(algo)))
        sim.run()
        sim.close_records()
        tables[classes] = events_table(sim.recorder)
        started[classes] = sim.net.classes_started
    pd.testing.assert_frame_equal(tables[False], tables[True], check_exact=True)
    assert started[False] == 0
    assert (started[True] > 0) == (algo["name"] not in SERVED)  # the classes really ran where groups send


# ---------------------------------------------------------------------- route bundles (numpy path)
@st.composite
def _bundle_cases(draw):
    """Link capacities (ties, 0 and inf among them), distinct routes and how many flows take
    each (a bundle of 1 to 30)."""
    n_links = draw(st.integers(1, 10))
    cap = [draw(st.sampled_from([0.0, 1.0, 3.0, 10.0, 1e9 / 3, math.inf])) for _ in range(n_links)]
    routes = draw(st.lists(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=4, unique=True).map(tuple),
                           min_size=1, max_size=40, unique=True))
    mult = [draw(st.integers(1, 30)) for _ in routes]
    return cap, [list(r) for r in routes], mult


def _hop_table(cap, routes):
    import numpy as np

    width = max(len(r) for r in routes)
    hops = np.full((width, len(routes)), len(cap), dtype=np.intp)
    for j, links in enumerate(routes):
        finite = [l for l in links if not math.isinf(cap[l])]
        hops[:len(finite), j] = finite
    return hops


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bundle_cases())
def test_a_bundle_of_flows_over_one_route_gets_each_flows_rate_bit_for_bit(case):
    """Progressive filling over one column per distinct route with its flow count (bundles of
    1 to 30, up to 40 routes: both the vectorized passes and the heap's finish run) gives every
    route the rate that each of its flows gets as a column of its own, and that the
    flow-by-flow heap reference gives it, to the bit."""
    import numpy as np

    cap, routes, mult = case
    capv = np.array(cap + [math.inf])
    got = progressive_filling(_hop_table(cap, routes), capv, np.array(mult)).tolist()
    expanded = [r for r, m in zip(routes, mult) for _ in range(m)]
    per_flow = progressive_filling(_hop_table(cap, expanded), capv).tolist()
    reference = _heap_reference(expanded, cap)
    at = 0
    for j, m in enumerate(mult):
        assert per_flow[at:at + m] == [got[j]] * m and reference[at:at + m] == [got[j]] * m, (j, got[j])
        at += m


def _gossip_churn(monkeypatch, bundles: bool, small: int = 0):
    """Pairs of workers on 3 regions each sending a flow per 'layer' a few ms apart (what
    NoLoCo's layer-grain gossip does), with a bandwidth change now and then, all on the numpy
    path (``small`` 0; a huge one: the plain-Python path): (records, probed rates by start
    order, recomputations, flows and columns rated, the rate log's timeline)."""
    import numpy as np

    monkeypatch.setattr(network, "ROUTE_BUNDLES", bundles)
    monkeypatch.setattr(network, "_SMALL", small)
    topo = Topology(regions=[Region(name="us", nodes=12), Region(name="eu", nodes=12), Region(name="ap", nodes=12)],
                    links=[Link(a="us", b="eu", bandwidth_gbps=1.0, latency_s=0.04),
                           Link(a="eu", b="ap", bandwidth_gbps=1.0, latency_s=0.05),
                           Link(a="us", b="ap", bandwidth_gbps=2.0, latency_s=0.2)],
                    intra_region={"bandwidth_gbps": 10.0, "latency_s": 1e-4})
    g, workers = build_graph(topo)
    env = simpy.Environment()
    net = Network(env, g)
    r = np.random.default_rng(7)
    order = r.permutation(len(workers))
    pairs = [(workers[a], workers[b]) for a, b in zip(order[0::2], order[1::2])]
    probes = []

    def layers():
        for layer in range(12):
            yield env.timeout(float(r.exponential(5e-3)))
            for a, b in pairs:
                net.transfer(a, b, 3e6 * (1 + layer % 3), f"l{layer}")
                net.transfer(b, a, 3e6 * (1 + layer % 3), f"l{layer}")
            if layer % 4 == 3:
                net.set_bandwidth_gbps("us", "eu", 0.5 if layer % 8 else 1.0)
            probes.append(sorted((f.seq, f.rate) for f in net.flows_in_flight()))

    env.process(layers())
    env.run()
    rows = [(t.src, t.dst, t.payload_bytes, t.start_s, t.end_s, t.tag, t.route) for t in net.recorder.transfers]
    return (rows, probes, net.rate_recomputations, net.rate_recomputed_flows, net.rate_recomputed_columns,
            net.rate_timeline())


def test_route_bundles_keep_the_per_column_timeline_bit_for_bit(monkeypatch):
    """Layer after layer of pair exchanges over 36 workers in 3 regions (12 flows per route in
    flight at most), bandwidth changes between layers: rating each route once with its count
    gives the same transfer records, probed rates and recomputations as a column per flow, to
    the bit, while rating at most half the columns."""
    per_column = _gossip_churn(monkeypatch, False)
    bundled = _gossip_churn(monkeypatch, True)
    assert bundled[0] == per_column[0]
    assert bundled[1] == per_column[1]
    assert bundled[2:4] == per_column[2:4] and per_column[4] == per_column[3]
    assert bundled[4] * 2 <= per_column[4]


def test_the_rate_log_summed_per_route_equals_the_flow_by_flow_log(monkeypatch):
    """The same layers of pair exchanges: the rate log of the numpy path (each recomputation's
    moves summed per route, then per link and region pair) is the plain-Python path's (each
    flow's move added on its own), every step of every link and pair, to the bit."""
    numpy_path = _gossip_churn(monkeypatch, True)[5]
    python_path = _gossip_churn(monkeypatch, True, small=10**9)[5]
    assert numpy_path["links"].keys() == python_path["links"].keys() and numpy_path["links"]
    assert numpy_path["pairs"].keys() == python_path["pairs"].keys() and numpy_path["pairs"]
    for kind in ("links", "pairs"):
        for k, (t, r) in python_path[kind].items():
            assert t.tolist() == numpy_path[kind][k][0].tolist() and r.tolist() == numpy_path[kind][k][1].tolist(), k


@pytest.mark.parametrize("grain", ["step", "layer"])
def test_noloco_events_are_identical_with_route_bundles_on_and_off(grain, monkeypatch):
    """NoLoCo (gossip pairs) at step and layer grain, with stragglers and a bandwidth window,
    every component on the numpy path: the events table is the same to the bit with route
    bundles on and off, and with flow classes on and off."""
    tables = {}
    monkeypatch.setattr(network, "_SMALL", 0)
    for bundles, classes in ((False, False), (True, False), (True, True)):
        monkeypatch.setattr(network, "ROUTE_BUNDLES", bundles)
        monkeypatch.setattr(network, "FLOW_CLASSES", classes)
        sim = Simulation(parse_scenario(_method_data({"name": "noloco", "inner_steps": 4, "sync_grain": grain})))
        sim.run()
        sim.close_records()
        tables[(bundles, classes)] = events_table(sim.recorder)
    pd.testing.assert_frame_equal(tables[(False, False)], tables[(True, False)], check_exact=True)
    pd.testing.assert_frame_equal(tables[(False, False)], tables[(True, True)], check_exact=True)
