"""Rating a large component by the links that can limit it (issue 26, ``REDUCED_FILLING``): a
worker's own links left out while their fair share is above every rate, bundles over the same
other links as one entity, repeated subtractions taken a binade at a time. It must give the
whole filling's floats: checked against the loops it replaces, the flow-by-flow heap, and the
network's timeline with the switch off."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import simpy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sim.engine.network as network
from sim.engine.maxmin import entity_filling, subtract_times
from sim.engine.network import Network
from sim.engine.topology import build_graph
from sim.metrics.tables import events_table
from sim.runner import Simulation
from sim.scenario import Link, Region, Topology, parse_scenario
from tests.test_flow_classes import _method_data, _play, _worlds
from tests.test_network import _heap_reference


def _loop(x: float, s: float, k: int) -> float:
    for _ in range(k):
        x -= s
    return x


_FLOATS = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)


@st.composite
def _subtractions(draw):
    """x anywhere from subnormal to 1e12 (powers of two among them: a binade's foot); s a
    fraction of x, a multiple of half x's ulp (ties), tiny, or above x."""
    x = draw(st.one_of(_FLOATS, st.integers(-1070, 40).map(lambda e: math.ldexp(1.0, e)),
                       st.sampled_from([1.25e9, 1.25e10, 1e9 / 3])))
    kind = draw(st.sampled_from(["fraction", "ulps", "tiny", "any"]))
    if kind == "fraction":
        s = x / draw(st.integers(1, 10_000))
    elif kind == "ulps":
        s = math.ulp(x) * draw(st.integers(0, 12)) / 2
    elif kind == "tiny":
        s = math.ulp(x) * draw(st.floats(0.0, 1.0))
    else:
        s = draw(_FLOATS)
    return x, s, draw(st.integers(0, 3000))


@settings(max_examples=400, deadline=None)
@given(_subtractions())
@example((1.25e9, 1.25e9 / 3, 3))
@example((1.0, math.ulp(1.0) / 2, 100))  # a tie at every step from a binade's foot
@example((3.0, math.ulp(3.0) * 1.5, 1000))
def test_subtract_times_is_the_loop_bit_for_bit(case):
    """``subtract_times(x, s, k)`` equals k subtractions of s, each rounded, to the bit: inside a
    binade, across binade boundaries, at ties (half an ulp multiples), for tiny s (no change),
    near the subnormals and past zero."""
    x, s, k = case
    got, want = subtract_times(x, s, k), _loop(x, s, k)
    assert got == want or (math.isnan(got) and math.isnan(want)), (x.hex(), s.hex(), k, got, want)


@st.composite
def _entity_cases(draw):
    n_links = draw(st.integers(1, 10))
    # few distinct capacities: ties between shares and stale heap entries; a link at 0 too
    cap = [draw(st.sampled_from([0.0, 1.0, 3.0, 10.0, 1e9 / 3, 1.25e9])) for _ in range(n_links)]
    k = draw(st.integers(1, 12))
    links = [tuple(draw(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=4, unique=True))) for _ in range(k)]
    counts = [draw(st.integers(1, 40)) for _ in range(k)]
    return cap, links, counts


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_entity_cases())
def test_entity_filling_gives_each_flow_the_heaps_rate(case):
    """Entities (a set of links, up to 40 flows over them) rated at once give every one of their
    flows the rate the flow-by-flow heap gives it, to the bit (ties, stale entries, links at
    capacity 0 included)."""
    cap, links, counts = case
    got = entity_filling(links, counts, cap)
    flows = [list(ls) for ls, c in zip(links, counts) for _ in range(c)]
    reference = _heap_reference(flows, cap)
    at = 0
    for e, c in enumerate(counts):
        assert reference[at:at + c] == [got[e]] * c, (e, got[e], reference[at:at + c])
        at += c


def _gossip(monkeypatch, reduced: bool, access_gbps: float):
    """Pairs of workers over 3 regions each sending a flow per 'layer' a few ms apart (NoLoCo's
    layer-grain gossip), WAN bandwidth changed now and then and a WAN link down for a while,
    every component on the numpy path: (records, probed rates by start order, the rate log,
    the network)."""
    monkeypatch.setattr(network, "REDUCED_FILLING", reduced)
    monkeypatch.setattr(network, "_SMALL", 0)
    topo = Topology(regions=[Region(name="us", nodes=10), Region(name="eu", nodes=10), Region(name="ap", nodes=10)],
                    links=[Link(a="us", b="eu", bandwidth_gbps=1.0, latency_s=0.04),
                           Link(a="eu", b="ap", bandwidth_gbps=1.0, latency_s=0.05),
                           Link(a="us", b="ap", bandwidth_gbps=2.0, latency_s=0.2)],
                    intra_region={"bandwidth_gbps": access_gbps, "latency_s": 1e-4})
    g, workers = build_graph(topo)
    env = simpy.Environment()
    net = Network(env, g)
    r = np.random.default_rng(11)
    order = r.permutation(len(workers))
    pairs = [(workers[a], workers[b]) for a, b in zip(order[0::2], order[1::2])]
    probes = []

    def layers():
        for layer in range(16):
            yield env.timeout(float(r.exponential(5e-3)))
            for a, b in pairs:
                net.transfer(a, b, 3e6 * (1 + layer % 3), f"l{layer}")
                net.transfer(b, a, 3e6 * (1 + layer % 3), f"l{layer}")
            if layer % 4 == 3:
                net.set_bandwidth_gbps("us", "eu", 0.5 if layer % 8 else 1.0)
            if layer == 6:
                net.set_bandwidth_gbps("eu", "ap", 0.0)
            if layer == 9:
                net.set_bandwidth_gbps("eu", "ap", 1.0)
            probes.append(sorted((f.seq, f.rate) for f in net.flows_in_flight()))

    env.process(layers())
    env.run()
    rows = [(t.src, t.dst, t.payload_bytes, t.start_s, t.end_s, t.tag, t.route) for t in net.recorder.transfers]
    return rows, probes, net.rate_timeline(), net


@pytest.mark.parametrize("access_gbps", [10.0, 0.05])
def test_reduced_rates_keep_the_gossip_timeline_bit_for_bit(access_gbps, monkeypatch):
    """Layer after layer of pair exchanges, bandwidth changes, a WAN link down and back: rating
    by the links that can limit gives the same transfer records, probed rates, rate log and
    recomputations as the whole filling, to the bit. With 10 Gbit/s access links most large
    recomputations take the short way; with 0.05 Gbit/s ones (the access links limit every
    flow) the check sends each one back to the whole filling."""
    whole = _gossip(monkeypatch, False, access_gbps)
    reduced = _gossip(monkeypatch, True, access_gbps)
    assert reduced[0] == whole[0] and reduced[1] == whole[1]
    for kind in ("links", "pairs"):
        assert reduced[2][kind].keys() == whole[2][kind].keys()
        for k, (t, v) in whole[2][kind].items():
            assert t.tolist() == reduced[2][kind][k][0].tolist() and v.tolist() == reduced[2][kind][k][1].tolist()
    net_w, net_r = whole[3], reduced[3]
    assert net_r.rate_recomputations == net_w.rate_recomputations and net_w.reduced_solves == 0
    if access_gbps > 1:
        assert net_r.reduced_solves > net_r.rate_recomputations / 2
    else:
        assert net_r.reduced_solves == 0


@pytest.mark.parametrize("grain", ["step", "layer"])
def test_noloco_events_are_identical_with_reduced_filling_on_and_off(grain, monkeypatch):
    """NoLoCo (gossip pairs) at step and layer grain, with stragglers and a bandwidth window,
    every component on the numpy path: the events table is the same to the bit with the
    reduced filling on and off, and the reduced filling rated some of the components."""
    tables, solves = {}, {}
    monkeypatch.setattr(network, "_SMALL", 0)
    for reduced in (False, True):
        monkeypatch.setattr(network, "REDUCED_FILLING", reduced)
        sim = Simulation(parse_scenario(_method_data({"name": "noloco", "inner_steps": 4, "sync_grain": grain})))
        sim.run()
        sim.close_records()
        tables[reduced] = events_table(sim.recorder)
        solves[reduced] = sim.net.reduced_solves
    pd.testing.assert_frame_equal(tables[False], tables[True], check_exact=True)
    assert solves[False] == 0 < solves[True]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(world=_worlds())
def test_reduced_filling_keeps_random_worlds_bit_for_bit(world, monkeypatch):
    """On random rings, trees and meshes of regions, with collectives over random members at
    random times, competing single transfers, outages and bandwidth set mid-flight, every
    component on the numpy path: the reduced filling gives the same transfer records, collective
    ends and probed rates as the whole filling, to the bit."""
    monkeypatch.setattr(network, "_SMALL", 0)
    runs = {}
    for reduced in (False, True):
        monkeypatch.setattr(network, "REDUCED_FILLING", reduced)
        rows, ends, probes, net = _play(world, False, monkeypatch)
        runs[reduced] = (rows, ends, probes, net.rate_recomputations)
    assert runs[True] == runs[False]
