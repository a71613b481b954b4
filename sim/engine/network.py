"""Flow-level network: routes on a networkx graph, max-min fair sharing, latency.

Each transfer is a *flow* along its route (shortest path by latency). Links are full
duplex: each direction of an edge is an independent resource of ``bandwidth_gbps``.
Concurrent flows share every directed link max-min fairly (progressive filling); rates
are recomputed whenever a flow starts or ends. A flow of S bytes holds bandwidth until
its last byte is sent and is delivered one route latency later, so an isolated flow
takes ``latency + S / B`` (the alpha-beta model).

Modelled: bandwidth sharing, multi-hop routes, propagation latency.
Not modelled: packets, TCP dynamics, congestion control, per-flow windows, queueing delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import networkx as nx
import simpy

from sim.metrics.records import Recorder, Transfer

_DONE_REL = 1e-9  # a flow is finished when less than this fraction of it is left


def gbps_to_bytes_per_s(gbps: float) -> float:
    return gbps * 1e9 / 8.0


@dataclass(eq=False)
class Flow:
    src: str
    dst: str
    size: float
    links: list[tuple[str, str]]
    latency_s: float
    tag: str
    start_s: float
    done: simpy.Event
    remaining: float = 0.0
    rate: float = 0.0
    seq: int = 0
    route: list[str] = field(default_factory=list)


class Network:
    """Flows over a graph whose edges carry ``bandwidth_gbps`` and ``latency_s``."""

    def __init__(self, env: simpy.Environment, graph: nx.Graph, recorder: Recorder | None = None):
        for u, v, d in graph.edges(data=True):
            if not d.get("bandwidth_gbps", 0) > 0:
                raise ValueError(f"link {u}-{v}: bandwidth_gbps must be > 0 (got {d.get('bandwidth_gbps')})")
            if not d.get("latency_s", -1) >= 0:
                raise ValueError(f"link {u}-{v}: latency_s must be >= 0 (got {d.get('latency_s')})")
        self.env = env
        self.graph = graph
        self.recorder = recorder if recorder is not None else Recorder()
        self.capacity: dict[tuple[str, str], float] = {}
        for u, v, d in graph.edges(data=True):
            cap = gbps_to_bytes_per_s(d["bandwidth_gbps"])
            self.capacity[(u, v)] = cap
            self.capacity[(v, u)] = cap
        self.link_bytes: dict[tuple[str, str], float] = {k: 0.0 for k in self.capacity}
        self.sent_bytes: dict[str, float] = {n: 0.0 for n in graph.nodes}
        self.received_bytes: dict[str, float] = {n: 0.0 for n in graph.nodes}
        self._routes: dict[tuple[str, str], list[str]] = {}
        self._flows: list[Flow] = []
        self._last_update = env.now
        self._generation = 0
        self._seq = 0
        self.flows_started = 0
        self.rate_recomputations = 0

    # ------------------------------------------------------------------ routes
    def route(self, src: str, dst: str) -> list[str]:
        key = (src, dst)
        if key not in self._routes:
            try:
                self._routes[key] = nx.shortest_path(self.graph, src, dst, weight="latency_s")
            except (nx.NetworkXNoPath, nx.NodeNotFound) as err:
                raise ValueError(f"no route from {src} to {dst}: {err}") from None
        return self._routes[key]

    def route_latency_s(self, src: str, dst: str) -> float:
        path = self.route(src, dst)
        return sum(self.graph.edges[a, b]["latency_s"] for a, b in zip(path, path[1:]))

    # ------------------------------------------------------------------ transfers
    def transfer(self, src: str, dst: str, nbytes: float, tag: str = "") -> simpy.Event:
        """Start a flow now; the returned event fires when the last byte has arrived."""
        if nbytes < 0 or not math.isfinite(nbytes):
            raise ValueError(f"transfer size must be finite and >= 0 (got {nbytes})")
        path = self.route(src, dst)
        links = list(zip(path, path[1:]))
        latency = sum(self.graph.edges[a, b]["latency_s"] for a, b in links)
        self._seq += 1
        flow = Flow(src, dst, float(nbytes), links, latency, tag, self.env.now, self.env.event(),
                    remaining=float(nbytes), seq=self._seq, route=path)
        self.flows_started += 1
        if nbytes == 0 or not links or all(math.isinf(self.capacity[l]) for l in links):
            self._deliver(flow)
            return flow.done
        self._advance()
        self._flows.append(flow)
        self._reschedule()
        return flow.done

    @property
    def active_flows(self) -> int:
        return len(self._flows)

    def _advance(self) -> None:
        """Move every active flow forward to now at its current rate."""
        dt = self.env.now - self._last_update
        if dt > 0:
            for f in self._flows:
                f.remaining -= f.rate * dt
        self._last_update = self.env.now

    def _compute_rates(self) -> None:
        """Max-min fair rates by progressive filling over directed links."""
        self.rate_recomputations += 1
        left = {}
        users: dict[tuple[str, str], list[Flow]] = {}
        for f in self._flows:
            f.rate = -1.0
            for l in f.links:
                if not math.isinf(self.capacity[l]):
                    users.setdefault(l, []).append(f)
                    left[l] = self.capacity[l]
        unfrozen = {l: len(fs) for l, fs in users.items()}
        while unfrozen:
            share, bottleneck = min((left[l] / n, l) for l, n in unfrozen.items())
            for f in users[bottleneck]:
                if f.rate >= 0:
                    continue
                f.rate = share
                for l in f.links:
                    if l in unfrozen:
                        left[l] -= share
                        unfrozen[l] -= 1
                        if unfrozen[l] == 0:
                            del unfrozen[l]
            unfrozen.pop(bottleneck, None)

    def _reschedule(self) -> None:
        self._compute_rates()
        self._generation += 1
        if not self._flows:
            return
        dt = min(f.remaining / f.rate for f in self._flows)
        timer = self.env.timeout(max(dt, 0.0))
        timer.callbacks.append(partial(self._on_timer, self._generation))

    def _on_timer(self, generation: int, _event: simpy.Event) -> None:
        if generation != self._generation:
            return  # the flow set changed since this timer was set
        self._advance()
        finished = [f for f in self._flows if f.remaining <= _DONE_REL * f.size or f.remaining / f.rate <= 1e-12]
        if not finished:  # floating point left a sliver; finish the nearest flow
            finished = [min(self._flows, key=lambda f: f.remaining / f.rate)]
        for f in finished:
            self._flows.remove(f)
            self._deliver(f)
        self._reschedule()

    def _deliver(self, flow: Flow) -> None:
        flow.remaining = 0.0
        for l in flow.links:
            self.link_bytes[l] += flow.size
        self.sent_bytes[flow.src] += flow.size
        self.received_bytes[flow.dst] += flow.size

        def arrive(_event: simpy.Event) -> None:
            self.recorder.transfers.append(Transfer(
                flow.src, flow.dst, flow.size, flow.start_s, self.env.now, flow.tag, ">".join(flow.route)))
            flow.done.succeed(flow)

        timer = self.env.timeout(flow.latency_s)
        timer.callbacks.append(arrive)


def build_graph(topology) -> tuple[nx.Graph, list[str]]:
    """Graph of a scenario topology: one switch node per region (named by the region),
    one node per worker (``region/i``) joined to its switch by the intra-region link,
    and WAN links between switches. Returns the graph and worker node names in order."""
    g = nx.Graph()
    workers: list[str] = []
    intra = topology.intra_region
    for region in topology.regions:
        g.add_node(region.name, kind="switch", region=region.name)
        for i in range(region.nodes):
            name = f"{region.name}/{i}"
            g.add_node(name, kind="worker", region=region.name)
            g.add_edge(name, region.name, bandwidth_gbps=intra.bandwidth_gbps, latency_s=intra.latency_s, kind="lan")
            workers.append(name)
    for link in topology.links:
        g.add_edge(link.a, link.b, bandwidth_gbps=link.bandwidth_gbps, latency_s=link.latency_s, kind="wan")
    return g, workers
