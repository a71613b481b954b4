"""Bandwidth over time recovered from a run's transfers by replaying them through the network model.

A transfer record keeps only its start and arrival, not the rates it got while it shared links.
Max-min fair rates depend only on which flows are active, their sizes and the link capacities,
so starting every recorded transfer again at its ``start_s`` in a fresh ``Network`` over the
same graph gives the rates the run had. A run logs those rates while it runs
(``Network.rate_timeline``); this replay serves a run known only from its files (a redrawn
dashboard) or one whose log was off. It lives next to the engine because it runs the engine's
network; the metrics read its result, never the engine.
"""

from __future__ import annotations

import math

import numpy as np
import simpy

from sim.engine.network import Network
from sim.metrics.records import Recorder


def wan_links(graph) -> list[tuple[str, str]]:
    """Both directions of every WAN edge of a topology graph (``engine.topology.build_graph``)."""
    out = []
    for u, v, d in graph.edges(data=True):
        if d.get("kind") == "wan":
            out += [(u, v), (v, u)]
    return sorted(out)


def _region(node: str) -> str:
    return node.rsplit("/", 1)[0]


def _active_flows(net) -> list:
    """Flows sending now in a replayed network (its public accessor)."""
    return net.flows_in_flight()


def replay_rates(graph, transfers: pd.DataFrame) -> tuple[dict, dict]:
    """Bytes/s over time on every directed WAN link and between every ordered pair of
    regions, recovered by replaying the run's transfers through the network model.

    Transfer records keep only start and arrival; the rate a flow got while it shared
    links is not recorded. Max-min fair rates depend only on which flows are active, their
    sizes and link capacities, so starting every recorded transfer again at its
    ``start_s`` in a fresh ``Network`` over the same graph gives the same rates the run
    had (and the same bandwidth series and outages). Rates are read after every instant
    at which something happened. Returns ``({link: (times, rates)}, {(src_region,
    dst_region): (times, rates)})``: step functions, ``rates[i]`` on [times[i], times[i+1]),
    the last rate 0.
    """
    env = simpy.Environment()
    net = Network(env, graph, Recorder())
    links = wan_links(graph)
    tr = transfers.sort_values("start_s", kind="stable")
    rows = list(zip(tr["start_s"].astype(float), tr["src"].astype(str), tr["dst"].astype(str),
                    tr["payload_bytes"].astype(float)))

    def starter():
        for t, src, dst, nbytes in rows:
            if t > env.now:
                yield env.timeout(t - env.now)
            net.transfer(src, dst, nbytes, "replay")

    env.process(starter())
    times: list[float] = [0.0]
    link_rows: list[list[float]] = [[0.0] * len(links)]
    pair_rows: list[dict] = [{}]
    while not math.isinf(env.peek()):
        now = env.peek()
        while env.peek() == now:
            env.step()
        per_link = dict.fromkeys(links, 0.0)
        pr: dict[tuple[str, str], float] = {}
        for f in _active_flows(net):
            if not 0 < f.rate < math.inf:
                continue
            for l in f.links:
                if l in per_link:
                    per_link[l] += f.rate
            key = (_region(f.src), _region(f.dst))
            if key[0] != key[1]:
                pr[key] = pr.get(key, 0.0) + f.rate
        lr = list(per_link.values())
        if lr == link_rows[-1] and pr == pair_rows[-1]:
            continue
        if now == times[-1]:
            link_rows[-1], pair_rows[-1] = lr, pr
        else:
            times.append(now)
            link_rows.append(lr)
            pair_rows.append(pr)
    t = np.array(times)
    lr_arr = np.array(link_rows).reshape(len(times), len(links))
    by_link = {l: (t, lr_arr[:, i]) for i, l in enumerate(links) if lr_arr[:, i].any()}
    pairs = sorted({k for pr in pair_rows for k in pr})
    by_pair = {k: (t, np.array([pr.get(k, 0.0) for pr in pair_rows])) for k in pairs}
    return by_link, by_pair


def network_rates(graph, events: pd.DataFrame) -> dict:
    """``replay_rates`` of a run's transfers (the events table's transfer rows) over its graph:
    ``{"links": {link: (times, rates)}, "pairs": {(src_region, dst_region): (times, rates)},
    "error": None}``. The rates are a diagnostic: a replay that breaks must not lose the run,
    so its error is returned (one line, ``"error"``) with empty series instead of raised."""
    try:
        by_link, by_pair = replay_rates(graph, events[events["kind"] == "transfer"])
    except Exception as err:
        return {"links": {}, "pairs": {}, "error": f"{type(err).__name__}: {err}"}
    return {"links": by_link, "pairs": by_pair, "error": None}
