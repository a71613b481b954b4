"""Large rate recomputations by the compiled kernel (issue 26, ``sim.engine.compiled``): the
reduced filling, each changed flow's progress and finish time, the rate log's counts and the
component search, in one loop each. It must give the numpy path's floats, bit for bit: checked
against the numpy path (the switch off) on the gossip timeline, NoLoCo's events and random
worlds, for the kernel as plain Python (every machine) and as numba's machine code (where the
extra ``fast`` is installed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings

import sim.engine.compiled as compiled
import sim.engine.network as network
from sim.engine.maxmin import subtract_times
from sim.metrics.tables import events_table
from sim.runner import Simulation
from sim.scenario import parse_scenario
from tests.test_flow_classes import METHODS, _grains, _method_data, _play, _worlds
from tests.test_reduced_filling import _gossip, _subtractions

MODES = ["interpreted", pytest.param("jitted", marks=pytest.mark.slow)]


def _use(monkeypatch, mode: str) -> None:
    """Large recomputations from the first one on: by the kernel (``mode``) or by numpy ("off")."""
    monkeypatch.setattr(compiled, "AFTER", 0)
    monkeypatch.setattr(compiled, "ENABLED", mode != "off")
    if mode == "interpreted":
        monkeypatch.setattr(compiled, "_compiled", compiled.kernel)
        monkeypatch.setattr(compiled, "_component", compiled.component)
    elif mode == "jitted":
        pytest.importorskip("numba")
        assert compiled._load() is not None


def _counting(monkeypatch) -> dict:
    """Count the recomputations the kernel rated (status 0) and the component searches it made."""
    calls = {"solved": 0, "searched": 0}
    solve, find = compiled.solve_large, compiled.find_component

    def solve_large(net, slots, run=None):
        got = solve(net, slots, run)
        calls["solved"] += got is not None
        return got

    def find_component(net, reached, keep_last):
        got = find(net, reached, keep_last)
        calls["searched"] += got is not None
        return got

    monkeypatch.setattr(compiled, "solve_large", solve_large)
    monkeypatch.setattr(compiled, "find_component", find_component)
    return calls


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(_subtractions())
@example((1.25e9, 1.25e9 / 3, 3))
@example((1.0, math.ulp(1.0) / 2, 100))
def test_the_compiled_subtractions_are_the_loop_bit_for_bit(case):
    """``maxmin.subtract_times`` as numba's machine code (the kernel's) gives what it gives in
    Python (held to the loop of single subtractions by tests/test_reduced_filling.py), bit
    for bit."""
    pytest.importorskip("numba")
    assert compiled._load() is not None
    x, s, k = case
    got, want = compiled._subtract_times(x, s, k), subtract_times(x, s, k)
    assert got == want and math.copysign(1, got) == math.copysign(1, want)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("access_gbps", [10.0, 0.05])
def test_the_kernel_keeps_the_gossip_timeline_bit_for_bit(mode, access_gbps, monkeypatch):
    """Layer after layer of pair exchanges over three regions, bandwidth changes, a WAN link down
    and back, every component on the large path: the kernel gives the numpy path's transfer
    records, probed rates, rate log, recomputations and reduced solves, to the bit. With 10
    Gbit/s access links it rates most of them, components with a pair within one region among
    them; with 0.05 Gbit/s ones (a worker's own link limits) it hands every one back to numpy,
    which then runs its whole filling."""
    _use(monkeypatch, "off")
    whole = _gossip(monkeypatch, True, access_gbps)
    _use(monkeypatch, mode)
    calls = _counting(monkeypatch)
    kept = []
    if mode == "interpreted":  # which of the kernel's solves had a pair within one region
        rate = compiled._rate

        def noting(routes, count, route_red, *rest):
            got = rate(routes, count, route_red, *rest)
            kept.append(got[0] == 0 and bool((route_red[routes] < 0).any()))
            return got

        monkeypatch.setattr(compiled, "_rate", noting)
    fast = _gossip(monkeypatch, True, access_gbps)
    assert fast[0] == whole[0] and fast[1] == whole[1]
    for kind in ("links", "pairs"):
        assert fast[2][kind].keys() == whole[2][kind].keys()
        for k, (t, v) in whole[2][kind].items():
            assert t.tolist() == fast[2][kind][k][0].tolist() and v.tolist() == fast[2][kind][k][1].tolist()
    net_w, net_f = whole[3], fast[3]
    for name in ("rate_recomputations", "reduced_solves", "rate_recomputed_columns", "rate_recomputed_flows"):
        assert getattr(net_f, name) == getattr(net_w, name), name
    assert calls["searched"] > 0
    if access_gbps > 1:
        assert calls["solved"] > net_f.rate_recomputations / 2
        assert mode != "interpreted" or any(kept)  # pairs within a region kept their links
    else:
        assert calls["solved"] == 0


def _events_on_and_off(monkeypatch, mode: str, algo: dict, log: bool = True) -> tuple[dict, dict]:
    """The method ``algo`` on the 12-worker scenario of tests/test_flow_classes.py, every
    component on the large path, the rate log ``log``: its events table with numpy ("off") and
    with the kernel (``mode``), and the kernel's counts."""
    monkeypatch.setattr(network, "_SMALL", 0)
    tables = {}
    calls = None
    for m in ("off", mode):
        _use(monkeypatch, m)
        if m != "off":
            calls = _counting(monkeypatch)
        sim = Simulation(parse_scenario(_method_data(algo)))
        sim.net.keep_rate_log(log)
        sim.run()
        sim.close_records()
        tables[m] = events_table(sim.recorder)
    return tables, calls


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("log", [True, False], ids=["log", "no-log"])
def test_noloco_events_are_identical_with_the_kernel_on_and_off(mode, log, monkeypatch):
    """NoLoCo at layer grain with stragglers and a bandwidth window, every component on the
    large path, with the rate log on and off (the bandwidth search's runs): the events table
    is the same to the bit with the kernel and with numpy, and the kernel rated some of the
    recomputations."""
    tables, calls = _events_on_and_off(monkeypatch, mode, {"name": "noloco", "inner_steps": 4, "sync_grain": "layer"},
                                       log)
    pd.testing.assert_frame_equal(tables["off"], tables[mode], check_exact=True)
    assert calls["solved"] > 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algo", [a for m in METHODS for a in _grains(m)],
                         ids=lambda a: f"{a['name']}-{a.get('sync_grain', 'none')}")
def test_every_method_has_the_same_events_with_the_kernel_on_and_off(algo, mode, monkeypatch):
    """Every method locosim ships, at each grain it has (the asynchronous ones' pushes and
    answers included), with lognormal stragglers and a bandwidth window, every component on
    the large path: the events table is the same to the bit with the kernel and with numpy,
    and the kernel rated some of the recomputations."""
    tables, calls = _events_on_and_off(monkeypatch, mode, algo)
    pd.testing.assert_frame_equal(tables["off"], tables[mode], check_exact=True)
    assert calls["solved"] > 0


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(world=_worlds())
def test_the_kernel_keeps_random_worlds_bit_for_bit(mode, world, monkeypatch):
    """On random rings, trees and meshes of regions, with collectives over random members at
    random times, competing transfers, outages and bandwidth set mid-flight, every component
    on the large path: the kernel, as plain Python and as numba's machine code (no fast-math:
    one IEEE operation per Python one), gives the numpy path's transfer records, collective
    ends, probed rates and recomputations, to the bit."""
    monkeypatch.setattr(network, "_SMALL", 0)
    runs = {}
    for m in ("off", mode):
        _use(monkeypatch, m)
        rows, ends, probes, net = _play(world, False, monkeypatch)
        runs[m] = (rows, ends, probes, net.rate_recomputations, net.reduced_solves)
    assert runs[mode] == runs["off"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("small", [2, 6, 20])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(world=_worlds())
def test_the_route_walk_follows_flows_rated_elsewhere(mode, small, world, monkeypatch):
    """The kernel walks only the routes whose rate changed or that are marked: a flow added,
    synced from a plain-Python rating (components of at most ``small`` flows are rated in
    plain Python, larger ones by the kernel, so a flow goes back and forth) or rated by numpy
    (the kernel refuses every third recomputation: numpy rates those) marks its route. On
    random worlds the records, collective ends, probed rates and recomputations are the numpy
    path's, to the bit."""
    monkeypatch.setattr(network, "_SMALL", small)
    runs = {}
    for m in ("off", mode):
        _use(monkeypatch, m)
        if m != "off":
            solve = compiled.solve_large
            calls = [0]

            def refusing(net, slots, run=None):
                calls[0] += 1
                return None if calls[0] % 3 == 0 else solve(net, slots, run)

            monkeypatch.setattr(compiled, "solve_large", refusing)
        rows, ends, probes, net = _play(world, False, monkeypatch)
        runs[m] = (rows, ends, probes, net.rate_recomputations)
    assert runs[mode] == runs["off"]


def _two_regions():
    """Two regions of two workers over a 1 Gbit/s WAN link: (a new network, its workers)."""
    import simpy

    from sim.engine.network import Network
    from sim.engine.topology import build_graph
    from sim.scenario import Topology

    g, workers = build_graph(Topology.model_validate({
        "regions": [{"name": "a", "nodes": 2}, {"name": "b", "nodes": 2}],
        "links": [{"a": "a", "b": "b", "bandwidth_gbps": 1.0, "latency_s": 0.01}]}))
    return Network(simpy.Environment(), g), workers


def _records_on_and_off(monkeypatch, mode: str, play) -> dict:
    """``play(net, workers)`` on a new two-region network, run to the end, with numpy ("off") and
    with the kernel (``mode``): the transfer records of each, sorted."""
    out = {}
    for m in ("off", mode):
        _use(monkeypatch, m)
        net, workers = _two_regions()
        play(net, workers)
        net.env.run()
        out[m] = sorted((r.src, r.dst, r.start_s, r.end_s) for r in net.recorder.transfers)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_a_route_rated_in_plain_python_between_two_kernel_ratings_is_walked_again(mode, monkeypatch):
    """Four flows on one route rated by the kernel (a quarter of the WAN each), two of them
    finish and plain Python rates the two left (a half each: a small component), then two
    flows on another route join them: the kernel gives the first route a quarter again, the
    rate it last gave it, and must still walk it (its flows were synced from plain Python):
    the records are the numpy path's."""
    monkeypatch.setattr(network, "_SMALL", 4)  # (the walk counts a link's users before it knows them all)

    def play(net, workers):
        def later():
            yield net.env.timeout(0.05)
            for _ in range(2):
                net.transfer(workers[1], workers[3], 4e7)

        for size in (1e6, 1e6, 5e7, 5e7):
            net.transfer(workers[0], workers[2], size)
        net.env.process(later())

    out = _records_on_and_off(monkeypatch, mode, play)
    assert len(out["off"]) == 6 and out[mode] == out["off"]


@pytest.mark.parametrize("mode", MODES)
def test_a_flow_joining_a_route_whose_share_stays_is_rated(mode, monkeypatch):
    """One flow on a route and two on another share the WAN (a third each); in one instant a
    flow of the second is called off and a flow joins the first: the share stays a third,
    the rate the kernel last gave the first route, and the new flow must still be rated (its
    route is marked): the records are the numpy path's."""
    monkeypatch.setattr(network, "_SMALL", 0)

    def play(net, workers):
        net.transfer(workers[0], workers[2], 5e7)
        second = [net.transfer(workers[1], workers[3], 5e7) for _ in range(2)]

        def swap():
            yield net.env.timeout(0.05)
            net.cancel(second[0])
            net.transfer(workers[0], workers[2], 2e7)

        net.env.process(swap())

    out = _records_on_and_off(monkeypatch, mode, play)
    assert len(out["off"]) == 4 and out[mode] == out["off"]  # (the one called off has its record too)


def test_a_routes_flows_are_listed_as_slots_come_and_go():
    """Each route's list of slots (what the kernel walks) holds exactly the slots in use on it,
    as flows take and give back slots in any order; a route given a flow is marked."""
    net, workers = _two_regions()
    r = np.random.default_rng(3)
    held = []
    for step in range(400):
        if held and r.random() < 0.45:
            f = held.pop(int(r.integers(len(held))))
            net._free_slot(f.slot)
        else:
            a, b = r.choice(len(workers), 2, replace=False)
            net._rmixed[:] = False
            net.transfer(workers[a], workers[b], 1e6)
            f = next(reversed(net._flows))
            net._sync_arrays()
            assert net._rmixed[net._rno[f.slot]]
            held.append(f)
        for no in range(len(net._route_no)):
            walked, s = [], int(net._rhead[no])
            while s >= 0:
                walked.append(s)
                s = int(net._snext[s])
            want = sorted(f.slot for f in held if net._rno[f.slot] == no)
            assert sorted(walked) == want and len(walked) == net._route_live[no]


def test_without_numba_the_numpy_path_runs(monkeypatch):
    """Where numba cannot be imported the kernel is never loaded: ``solve_large`` and
    ``find_component`` hand every recomputation to numpy, and the gossip timeline is the
    numpy path's."""
    monkeypatch.setattr(compiled, "_compiled", None)
    monkeypatch.setattr(compiled, "_component", None)
    monkeypatch.setattr(compiled, "_missing", True)
    monkeypatch.setattr(compiled, "AFTER", 0)
    calls = _counting(monkeypatch)
    rows, probes, timeline, net = _gossip(monkeypatch, True, 10.0)
    assert calls == {"solved": 0, "searched": 0}
    assert net.reduced_solves > 0 and compiled._compiled is None


def test_a_refused_recomputation_changes_nothing(monkeypatch):
    """When the kernel hands a recomputation back (a worker's own link may limit: 0.05 Gbit/s
    access links) the flow arrays and the rate log's totals are as they were: numpy starts from
    the same state."""
    monkeypatch.setattr(compiled, "ENABLED", False)
    seen = []
    solve = network.Network._solve_large

    def probe(net, slots):
        state = [a.copy() for a in (net._rate, net._remaining, net._updated, net._finish, net._q, net._inarr)]
        tot = list(net._rtot)
        got = compiled.solve_large(net, slots, compiled.kernel)
        seen.append(got)
        assert got is None
        for before, after in zip(state, (net._rate, net._remaining, net._updated, net._finish, net._q, net._inarr)):
            np.testing.assert_array_equal(before, after)
        assert net._rtot == tot
        return solve(net, slots)

    monkeypatch.setattr(network.Network, "_solve_large", probe)
    _gossip(monkeypatch, True, 0.05)
    assert len(seen) > 10


def test_a_kernel_that_cannot_load_leaves_numpy_in_charge(monkeypatch):
    """numba not importable, or compiled kernels that disagree with the plain ones on one flow:
    ``_load`` gives None, marks numba missing and leaves the kernel's helpers plain Python."""
    import sys

    helpers = (compiled._subtract_times, compiled._push)
    monkeypatch.setattr(compiled, "_compiled", None)
    monkeypatch.setattr(compiled, "_component", None)
    monkeypatch.setattr(compiled, "_missing", False)
    real = sys.modules.get("numba")
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    assert compiled._load() is None and compiled._missing
    if real is not None:
        monkeypatch.setitem(sys.modules, "numba", real)
    else:
        monkeypatch.delitem(sys.modules, "numba")
    pytest.importorskip("numba")
    monkeypatch.setattr(compiled, "_missing", False)
    answers = iter([("plain",), ("compiled",)])
    monkeypatch.setattr(compiled, "_tiny", lambda run, find: next(answers))
    assert compiled._load() is None and compiled._missing and compiled._compiled is None
    assert (compiled._subtract_times, compiled._push) == helpers


def test_a_short_run_never_loads_numba(monkeypatch):
    """A run with fewer large recomputations than ``AFTER`` never asks for the kernel (numba's
    import and cached code cost more than they would save): the gossip timeline's ~100 large
    recomputations with the default threshold run in numpy alone."""
    monkeypatch.setattr(compiled, "_compiled", None)
    monkeypatch.setattr(compiled, "_component", None)
    monkeypatch.setattr(compiled, "ENABLED", True)

    def refuse():
        raise AssertionError("the kernel was loaded")

    monkeypatch.setattr(compiled, "_load", refuse)
    rows, probes, timeline, net = _gossip(monkeypatch, True, 10.0)
    assert 0 < net._large_seen <= compiled.AFTER and net.compiled_solves == 0 and net.reduced_solves > 0
