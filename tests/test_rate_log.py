"""The network logs each WAN link's and each region pair's rate while the run goes on, so the
summary and the dashboard read the run's own rates: the same step functions as replaying
its transfers (issue 26), at no second simulation."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from sim.engine.network import Network
from sim.engine.replay import replay_rates
from sim.engine.topology import build_graph
from sim.metrics.tables import events_table
from sim.scenario import Link, Region, Topology


def _topology(outages=()):
    return Topology(regions=[Region(name="us", nodes=6), Region(name="eu", nodes=5), Region(name="ap", nodes=4)],
                    links=[Link(a="us", b="eu", bandwidth_gbps=1.0, latency_s=0.04, outages=list(outages)),
                           Link(a="eu", b="ap", bandwidth_gbps=1.0, latency_s=0.05),
                           Link(a="us", b="ap", bandwidth_gbps=2.0, latency_s=0.2)],
                    intra_region={"bandwidth_gbps": 10.0, "latency_s": 1e-4})


def test_one_flow_through_an_outage_hand_computed():
    """1 GB from us/0 to eu/0 over a 1 GB/s WAN link down over [0.2, 0.4): the link's logged
    rate is 1e9 on [0, 0.2), 0 on [0.2, 0.4) (stalled), 1e9 on [0.4, 1.2), then 0; the
    us->eu pair the same; nothing else carried anything."""
    topo = Topology(regions=[Region(name="us", nodes=1), Region(name="eu", nodes=1)],
                    links=[Link(a="us", b="eu", bandwidth_gbps=8.0, latency_s=0.0,
                                outages=[{"start_s": 0.2, "end_s": 0.4}])],
                    intra_region={"bandwidth_gbps": 80.0, "latency_s": 0.0})
    g, workers = build_graph(topo)
    env = simpy.Environment()
    net = Network(env, g)
    net.transfer("us/0", "eu/0", 1e9)
    env.run()
    log = net.rate_timeline()
    assert list(log["links"]) == [("us", "eu")] and list(log["pairs"]) == [("us", "eu")]
    for t, r in (log["links"][("us", "eu")], log["pairs"][("us", "eu")]):
        assert t.tolist() == pytest.approx([0.0, 0.2, 0.4, 1.2], rel=1e-12)
        assert r.tolist() == [1e9, 0.0, 1e9, 0.0]


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_logged_rates_equal_the_replay_of_the_transfers(seed):
    """Churn of 300 transfers over three regions (bursts at one instant, an outage): at every
    breakpoint of either, the logged step functions equal the replay's to 1e-9 of the peak
    (the log sums each flow's rate rounded to 2^-16 bytes/s, exactly; the replay sums floats; where a total stays
    put one may show a breakpoint of the same value that the other has not)."""
    g, workers = build_graph(_topology([{"start_s": 0.05, "end_s": 0.08}]))
    env = simpy.Environment()
    net = Network(env, g)
    r = np.random.default_rng(seed)
    n = 300
    src = r.integers(0, len(workers), n)
    dst = (src + r.integers(1, len(workers), n)) % len(workers)
    gaps = r.exponential(2e-3, n)
    sizes = 2e6 * r.lognormal(0.0, 1.0, n)

    def arrivals():
        for i in range(n):
            yield env.timeout(float(gaps[i]) if i % 7 else 0.0)
            net.transfer(workers[src[i]], workers[dst[i]], float(sizes[i]))

    env.process(arrivals())
    env.run()
    live = net.rate_timeline()
    ev = events_table(net.recorder)
    by_link, by_pair = replay_rates(g, ev[ev["kind"] == "transfer"])
    assert live["links"].keys() == by_link.keys() and live["pairs"].keys() == by_pair.keys()
    for mine, theirs in [(live["links"], by_link), (live["pairs"], by_pair)]:
        for k, (t, rates) in theirs.items():
            t2, r2 = mine[k]
            at = np.union1d(t, t2)
            ours = r2[np.searchsorted(t2, at, side="right") - 1]
            replayed = rates[np.searchsorted(t, at, side="right") - 1]
            np.testing.assert_allclose(ours, replayed, rtol=0, atol=1e-9 * rates.max())


def test_a_run_directory_is_written_without_replaying_the_network(tmp_path, monkeypatch):
    """A run of the flaky transatlantic scenario writes its summary and dashboard with the
    replay made to fail: the WAN peaks come from the rates the run logged (no replay error)
    and equal the peaks of a replay of its transfers."""
    import json

    import sim.engine.replay as replay
    import sim.metrics.tables as tables
    from sim.runner import Simulation
    from sim.scenario import load_scenario
    from sim.writer import run_to_dir
    from tests.conftest import ROOT, TINY

    sim = Simulation(load_scenario(ROOT / "scenarios" / "flaky_transatlantic.yaml",
                                   TINY + ["run.device=cpu", "run.max_tokens=null", "run.eval_every_steps=null",
                                           "run.max_rounds=2"]))
    real = replay.replay_rates

    def refuse(*_a, **_k):
        raise AssertionError("replayed")

    monkeypatch.setattr(replay, "replay_rates", refuse)
    run_to_dir(sim, tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["peak_error"] is None and summary["peak_wan_gbps"] > 0
    assert (tmp_path / "r" / "dashboard.html").stat().st_size > 0
    res = sim.result()
    ev = tables.events_table(res.records)
    by_link, _ = real(res.graph, ev[ev["kind"] == "transfer"])
    for entry in summary["bytes_per_link"]:
        if entry["kind"] == "wan":
            key = (entry["src"], entry["dst"])
            want = float(by_link[key][1].max()) * 8 / 1e9 if key in by_link else 0.0
            assert entry["peak_gbps"] == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("algo", [{"name": "ddp"}, {"name": "diloco", "inner_steps": 4, "sync_grain": "layer"},
                                  {"name": "noloco", "inner_steps": 4}],
                         ids=["ddp", "diloco-layer", "noloco"])
def test_the_log_off_changes_nothing_but_the_log(algo):
    """A run with the rate log off (``Network.keep_rate_log(False)``, as the bandwidth search
    runs) records the same events to the bit as with it on (stragglers and a link outage, flow
    classes of 2 and more), and its ``rate_timeline`` is None (nothing was logged); the switch
    is refused once a flow has started."""
    from sim.engine import network
    from sim.runner import Simulation
    from sim.scenario import parse_scenario

    data = {"seed": 2, "numerics": False, "timing": {"params": 4.0e6, "layers": 4, "step_time_s": 0.05},
            "topology": {"regions": [{"name": "us", "nodes": 5}, {"name": "eu", "nodes": 4}],
                         "links": [{"a": "us", "b": "eu", "bandwidth_gbps": 1.0, "latency_s": 0.03,
                                    "outages": [{"start_s": 0.5, "end_s": 0.7}]}]},
            "algorithm": algo, "run": {"max_sim_time_s": 2.0},
            "faults": {"stragglers": [{"factor": {"kind": "lognormal", "sigma": 0.4}}]}}
    tables, timelines = {}, {}
    mp = pytest.MonkeyPatch()
    mp.setattr(network, "_MIN_CLASS", 2)
    try:
        for on in (True, False):
            sim = Simulation(parse_scenario(data))
            sim.net.keep_rate_log(on)
            sim.run()
            sim.close_records()
            tables[on] = events_table(sim.recorder)
            timelines[on] = sim.net.rate_timeline()
            with pytest.raises(RuntimeError, match="flows have started"):
                sim.net.keep_rate_log(True)
    finally:
        mp.undo()
    import pandas as pd

    pd.testing.assert_frame_equal(tables[True], tables[False], check_exact=True)
    assert timelines[False] is None and timelines[True]["links"]  # on: the WAN link's rates were logged
