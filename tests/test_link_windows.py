"""Link windows (outages, random flaps, bandwidth series, degradation windows) looked up by
bisection: the same bandwidth as scanning every window, with windows appended while the
run goes on (issue 28's O(n²) flaps)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import simpy

from sim.engine.faults import apply_link_windows
from sim.engine.links import LinkTimeline
from sim.engine.network import Network


def _scan(d: dict, t: float) -> float:
    """Reference: the old lookup, every outage and every series row scanned."""
    for start, end in d.get("outages") or []:
        if start <= t < end:
            return 0.0
    bw = d["bandwidth_gbps"]
    for time_s, value in d.get("bandwidth_series") or []:
        if time_s > t:
            break
        bw = value
    return bw


def test_hand_computed_timeline_with_overlapping_touching_and_appended_outages():
    """10 Gbit/s, 5 from t=1, 8 from t=3; down over [2, 2.5) u [2.4, 2.8) and [4, 4.5), then
    [6, 7) and [5, 6) appended later (touching: down over [5, 7)): the bandwidth at each
    probe time is the hand-computed value."""
    d = {"bandwidth_gbps": 10.0, "bandwidth_series": [(1.0, 5.0), (3.0, 8.0)],
         "outages": [(2.0, 2.5), (2.4, 2.8), (4.0, 4.5)]}
    tl = LinkTimeline(d)
    assert [tl.bandwidth_at(t) for t in (0.0, 0.99, 1.0, 1.99, 2.0, 2.5, 2.79, 2.8, 3.0, 4.2, 4.5)] == \
        [10.0, 10.0, 5.0, 5.0, 0.0, 0.0, 0.0, 5.0, 8.0, 0.0, 8.0]
    d["outages"].append((6.0, 7.0))
    assert tl.bandwidth_at(5.5) == 8.0 and tl.bandwidth_at(6.5) == 0.0
    d["outages"].append((5.0, 6.0))
    assert [tl.bandwidth_at(t) for t in (4.99, 5.0, 5.5, 6.0, 6.99, 7.0)] == [8.0, 0.0, 0.0, 0.0, 0.0, 8.0]
    assert tl._starts == [2.0, 4.0, 5.0] and tl._ends == [2.8, 4.5, 7.0]  # the union, as disjoint windows


def test_twenty_thousand_flaps_appended_one_by_one_agree_with_the_scan():
    """20,000 outages appended one at a time in time order (random gaps and lengths, many
    overlapping), a static one far ahead, and a 500-row series: after each append, lookups at
    the newest window and at random earlier times give the scan's bandwidth; the merged
    windows stay sorted and disjoint."""
    g = np.random.default_rng(7)
    series = sorted({float(t) for t in g.uniform(0, 4e4, 500)})
    d = {"bandwidth_gbps": 10.0, "bandwidth_series": [(t, float(v)) for t, v in zip(series, g.uniform(1, 9, 500))],
         "outages": [(3.5e4, 3.6e4)]}
    tl = LinkTimeline(d)
    now = 0.0
    for k in range(20_000):
        now += float(g.exponential(1.0))
        d["outages"].append((now, now + float(g.exponential(0.7))))
        probes = [now, now + 0.1, float(g.uniform(0, now))] if k % 50 else [float(t) for t in g.uniform(0, now + 2, 40)]
        for t in probes:
            assert tl.bandwidth_at(t) == _scan(d, t)
    starts, ends = np.array(tl._starts), np.array(tl._ends)
    assert (starts < ends).all() and (ends[:-1] < starts[1:]).all()


def test_a_list_replaced_is_read_again():
    """Replacing an edge's outage list (not appending to it) is seen at the next lookup."""
    d = {"bandwidth_gbps": 4.0, "outages": [(0.0, 1.0)]}
    tl = LinkTimeline(d)
    assert tl.bandwidth_at(0.5) == 0.0
    d["outages"] = [(2.0, 3.0)]
    assert tl.bandwidth_at(0.5) == 4.0 and tl.bandwidth_at(2.5) == 0.0


def test_network_playback_of_many_outages_matches_the_scan():
    """A link with 2,000 scheduled outages: at each outage's start and end the network's
    capacity is the scanned bandwidth (0 inside, 1 GB/s between)."""
    g = nx.Graph()
    outages = [(float(i), i + 0.5) for i in range(2000)]
    g.add_edge("a", "b", bandwidth_gbps=8.0, latency_s=0.0, outages=outages, kind="wan")
    env = simpy.Environment()
    net = Network(env, g)
    d = g.edges["a", "b"]
    for t in (0.25, 0.75, 999.25, 999.75, 1999.25, 1999.75):
        env.run(until=t)
        assert net.capacity[("a", "b")] == pytest.approx(_scan(d, t) * 1e9 / 8, abs=0)
        assert net.bandwidth_at("a", "b", t) == _scan(d, t)


class _Window:
    def __init__(self, start_s, end_s, factor):
        self.start_s, self.end_s, self.factor = start_s, end_s, factor


class _LinkFault:
    def __init__(self, a, b, degrade):
        self.a, self.b, self.degrade = a, b, degrade


def test_degradation_windows_fold_like_the_first_window_that_holds_each_time():
    """Overlapping degradation windows over a bandwidth series: each resulting row is the
    series' value at that time times the factor of the first window (in sorted order) that
    holds it: the old quadratic rule, computed with one sweep."""
    rng = np.random.default_rng(1)
    old = sorted({float(t) for t in rng.uniform(0, 100, 60)})
    old_series = [(t, float(v)) for t, v in zip(old, rng.uniform(1, 20, len(old)))]
    windows = []
    for _ in range(300):
        s = float(rng.uniform(0, 100))
        windows.append(_Window(s, s + float(rng.exponential(5)), float(rng.choice([0.1, 0.25, 0.5]))))
    g = nx.Graph()
    g.add_edge("a", "b", bandwidth_gbps=10.0, latency_s=0.0, bandwidth_series=list(old_series))
    spans = apply_link_windows(g, [_LinkFault("a", "b", windows)])
    ordered = sorted((w.start_s, w.end_s, w.factor) for w in windows)
    times = sorted({t for t, _ in old_series} | {w[0] for w in ordered} | {w[1] for w in ordered})
    ref_d = {"bandwidth_gbps": 10.0, "bandwidth_series": old_series}
    expected = [(t, _scan(ref_d, t) * next((f for s, e, f in ordered if s <= t < e), 1.0)) for t in times]
    assert g.edges["a", "b"]["bandwidth_series"] == expected
    assert len(spans) == 300
