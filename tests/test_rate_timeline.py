"""``RateLog.rate_timeline`` turns the network's rate log into step functions with array
operations; these tests hold it to the entry-by-entry reading of the log it replaced (the
reference below), on logs drawn at random with the hazards a run produces: several entries
at one instant (the last counts), a first instant at time 0, sums that move and come back
within one instant, keys that never move off 0."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from sim.engine.network import Network
from sim.engine.topology import build_graph
from sim.scenario import Link, Region, Topology


def _reference(log: list, links: list, pair_names: dict) -> dict:
    """The log read entry by entry (the implementation before issue 26's report work): one
    row per instant at which some sum differs from the last row, time 0 first."""
    col = {l: i for i, l in enumerate(links)}
    times, link_rows, pair_rows = [0.0], [[0.0] * len(links)], [{}]
    cur_links, cur_pairs = [0.0] * len(links), {}
    i = 0
    while i < len(log):
        now = log[i][0]
        while i < len(log) and log[i][0] == now:
            _, key, value = log[i]
            if key in pair_names:
                if value:
                    cur_pairs[pair_names[key]] = value
                else:
                    cur_pairs.pop(pair_names[key], None)
            else:
                cur_links[col[key]] = value
            i += 1
        if cur_links == link_rows[-1] and cur_pairs == pair_rows[-1]:
            continue
        if now == times[-1]:
            link_rows[-1], pair_rows[-1] = list(cur_links), dict(cur_pairs)
        else:
            times.append(now)
            link_rows.append(list(cur_links))
            pair_rows.append(dict(cur_pairs))
    t = np.array(times)
    arr = np.array(link_rows).reshape(len(times), len(links))
    by_link = {l: (t, arr[:, j]) for j, l in enumerate(links) if arr[:, j].any()}
    pairs = sorted({k for pr in pair_rows for k in pr})
    return {"links": by_link, "pairs": {k: (t, np.array([pr.get(k, 0.0) for pr in pair_rows])) for k in pairs}}


def _network() -> Network:
    topo = Topology(regions=[Region(name="us", nodes=2), Region(name="eu", nodes=2), Region(name="ap", nodes=2)],
                    links=[Link(a="us", b="eu", bandwidth_gbps=1.0, latency_s=0.01),
                           Link(a="eu", b="ap", bandwidth_gbps=1.0, latency_s=0.01)],
                    intra_region={"bandwidth_gbps": 10.0, "latency_s": 0.0})
    g, _ = build_graph(topo)
    return Network(simpy.Environment(), g)


def _random_log(net: Network, seed: int, n: int) -> list:
    """``n`` entries (time, key id, rate) as ``_log_rates`` writes them: times never go back,
    often repeat (several keys, or one key twice, at an instant), rates from a few values
    (0 among them) so that sums come back to where they were."""
    r = np.random.default_rng(seed)
    keys = sorted(net._wan_links) + sorted(net._pair_key.values())
    steps = np.where(r.random(n) < 0.6, 0.0, r.choice([0.25, 0.5, 1.0], n))
    times = np.cumsum(steps) - (0.0 if r.random() < 0.5 else 0.25 * (steps[0] > 0))
    times = np.maximum(times, 0.0)
    values = r.choice([0.0, 0.0, 1.5e8, 3e8, 1.25e9 / 3], n)
    used = r.choice(keys, size=min(len(keys), int(r.integers(1, len(keys) + 1))), replace=False)
    return [(float(t), int(k), float(v)) for t, k, v in zip(times, r.choice(used, n), values)]


@pytest.mark.parametrize("seed", range(40))
def test_rate_timeline_equals_the_entry_by_entry_reading(seed):
    """On a random log, ``rate_timeline`` gives the entry-by-entry reading's links, pairs (in
    the same order), times and rates, bit for bit."""
    net = _network()
    log = _random_log(net, seed, int(np.random.default_rng(seed).integers(1, 300)))
    for t, k, v in log:
        net._log_t.append(t)
        net._log_k.append(k)
        net._log_r.append(v)
    mine = net.rate_timeline()
    links = [net._wan_links[k] for k in sorted(net._wan_links)]
    pair_names = {k: net._key_name[k][1:] for k in net._pair_key.values()}
    ref = _reference([(t, net._key_name[k] if k in net._wan_links else k, v) for t, k, v in log], links, pair_names)
    for part in ("links", "pairs"):
        assert list(mine[part]) == list(ref[part])
        for key, (t, rates) in ref[part].items():
            assert np.array_equal(mine[part][key][0], t) and mine[part][key][0].dtype == t.dtype
            assert np.array_equal(mine[part][key][1], rates) and mine[part][key][1].dtype == rates.dtype


def test_an_empty_log_is_no_link_and_no_pair():
    """A network that carried nothing across regions: no link and no pair in its timeline."""
    assert _network().rate_timeline() == {"links": {}, "pairs": {}, "error": None}


def test_a_run_logs_the_reference_timeline():
    """A real run's log (transfers across regions, one at time 0, others staggered and
    overlapping) read by ``rate_timeline`` equals its entry-by-entry reading."""
    net = _network()
    env = net.env
    net.transfer("us/0", "ap/1", 2e8)

    def later():
        for i, (src, dst) in enumerate([("eu/0", "us/1"), ("ap/0", "us/0"), ("us/1", "eu/1")] * 3):
            yield env.timeout(0.05 * (i % 2))
            net.transfer(src, dst, 1e8 * (1 + i % 3))

    env.process(later())
    env.run()
    assert len(net._log_k) > 10
    log = list(zip(net._log_t, net._log_k, net._log_r))
    links = [net._wan_links[k] for k in sorted(net._wan_links)]
    pair_names = {k: net._key_name[k][1:] for k in net._pair_key.values()}
    ref = _reference([(t, net._key_name[k] if k in net._wan_links else k, v) for t, k, v in log], links, pair_names)
    mine = net.rate_timeline()
    assert list(mine["links"]) == list(ref["links"]) and list(mine["pairs"]) == list(ref["pairs"])
    for part in ("links", "pairs"):
        for key, (t, rates) in ref[part].items():
            assert np.array_equal(mine[part][key][0], t) and np.array_equal(mine[part][key][1], rates)


def test_reading_the_timeline_mid_run_leaves_the_log_growing():
    """``rate_timeline`` read while the log still grows (it reads the log's columns in place)
    holds no lock on them: entries logged after a read are appended and the next read has them."""
    net = _network()
    key = sorted(net._wan_links)[0]
    for i in range(3):
        net._log_t.append(float(i))
        net._log_k.append(key)
        net._log_r.append(float(i + 1))
        times, rates = net.rate_timeline()["links"][net._wan_links[key]]
        assert times.tolist() == [float(j) for j in range(i + 1)] and rates.tolist() == [float(j + 1) for j in range(i + 1)]
