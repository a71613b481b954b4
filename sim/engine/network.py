"""Flow-level network: routes on a networkx graph, max-min fair sharing, latency, link dynamics.

Each transfer is a *flow* along its route (shortest path by latency). Links are full
duplex: each direction of an edge is an independent resource of ``bandwidth_gbps``.
Concurrent flows share every directed link max-min fairly (progressive filling). A flow
of S bytes holds bandwidth until its last byte is sent and is delivered one route latency
later, so an isolated flow takes ``latency + S / B`` (the alpha-beta model).

Links may change over time: an edge can carry a bandwidth time series (a step function:
from each ``time_s`` on, the link has that ``bandwidth_gbps``) and scheduled outages
(``[start_s, end_s)`` with capacity 0). A flow that *starts* while a link of its route is
down takes the shortest route (by latency) over the links that are up, when there is one,
and waits for the link otherwise; a flow already sending when its link goes down gets
rate 0 and stalls until the link comes back (it is not moved mid-flight).

How rates stay cheap to maintain (the result is the exact max-min allocation):

* Rates are only recomputed for the *affected component*: the flows that share a directed
  link, transitively, with a flow that started or ended or with a link whose capacity
  changed. Flows elsewhere keep their rates, which max-min fairness leaves unchanged.
* Every flow start, and every capacity change, at one simulated instant is coalesced into
  one recomputation (it runs in a zero-delay event after the callers of that instant);
  flows that finish at one instant are removed together.
* Progressive filling uses a heap of per-link fair shares. Shares only grow as flows are
  frozen, so stale heap entries are re-pushed lazily: O((F·h + L) log L) per component of
  F flows with h hops over L links, instead of O(L²).
* Each flow keeps its own ``remaining`` as of ``updated_s``; finish times sit in a heap
  with lazy invalidation, and one SimPy timer waits for the earliest.

Modelled: bandwidth sharing, multi-hop routes, propagation latency, bandwidth that
changes at given times, outages.
Not modelled: packets, TCP dynamics, congestion control, per-flow windows, queueing delay,
moving a flow that is already sending to another route.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import networkx as nx
import simpy

from sim.metrics.records import Recorder, Transfer

_INF = math.inf


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
    remaining: float = 0.0  # bytes still to send, as of updated_s
    rate: float = 0.0  # bytes/s since updated_s
    seq: int = 0
    route: list[str] = field(default_factory=list)
    updated_s: float = 0.0
    version: int = 0  # bumped whenever the finish time changes; older heap entries are stale
    ready: simpy.Event | None = None


class Network:
    """Flows over a graph whose edges carry ``bandwidth_gbps`` and ``latency_s``.

    Optional edge attributes for link dynamics (see ``build_graph``):
    ``bandwidth_series``: ``[(time_s, bandwidth_gbps), ...]`` with increasing times, a step
    function that replaces ``bandwidth_gbps`` from each time on; ``outages``:
    ``[(start_s, end_s), ...]`` during which the link (both directions) has capacity 0.
    """

    def __init__(self, env: simpy.Environment, graph: nx.Graph, recorder: Recorder | None = None):
        for u, v, d in graph.edges(data=True):
            if not d.get("bandwidth_gbps", 0) > 0:
                raise ValueError(f"link {u}-{v}: bandwidth_gbps must be > 0 (got {d.get('bandwidth_gbps')})")
            if not d.get("latency_s", -1) >= 0:
                raise ValueError(f"link {u}-{v}: latency_s must be >= 0 (got {d.get('latency_s')})")
            _check_dynamics(u, v, d)
        self.env = env
        self.graph = graph
        self.recorder = recorder if recorder is not None else Recorder()
        self.capacity: dict[tuple[str, str], float] = {}
        for u, v, d in graph.edges(data=True):
            cap = gbps_to_bytes_per_s(_bandwidth_at(d, env.now))
            self.capacity[(u, v)] = cap
            self.capacity[(v, u)] = cap
        self.link_bytes: dict[tuple[str, str], float] = {k: 0.0 for k in self.capacity}
        self.sent_bytes: dict[str, float] = {n: 0.0 for n in graph.nodes}
        self.received_bytes: dict[str, float] = {n: 0.0 for n in graph.nodes}
        self._routes: dict[tuple[str, str], tuple[list[str], list[tuple[str, str]], float]] = {}
        # Active flows and, per directed link, the active flows crossing it. Dicts, not sets:
        # their order is insertion order, so a run's floating-point sums are reproducible.
        self._flows: dict[Flow, None] = {}
        self._link_flows: dict[tuple[str, str], dict[Flow, None]] = {}
        self._dirty_flows: dict[Flow, None] = {}
        self._dirty_links: dict[tuple[str, str], None] = {}
        self._flush_pending = False
        self._finish_heap: list[tuple[float, int, int, Flow]] = []
        self._timer_at = _INF
        self._timer_event: simpy.Event | None = None
        self._seq = 0
        self.flows_started = 0
        self.rate_recomputations = 0
        self.rate_recomputed_flows = 0  # summed component sizes: the work the recomputations did
        self.capacity_changes = 0
        for u, v, d in graph.edges(data=True):
            times = _change_times(d)
            if times:
                env.process(self._link_dynamics(u, v, d, times))

    # ------------------------------------------------------------------ routes
    def route(self, src: str, dst: str) -> list[str]:
        """The route a flow from ``src`` to ``dst`` starting now takes (around links that are down)."""
        return self._current_route(src, dst)[0]

    def route_latency_s(self, src: str, dst: str) -> float:
        return self._current_route(src, dst)[2]

    def _current_route(self, src: str, dst: str) -> tuple[list[str], list[tuple[str, str]], float]:
        """The shortest route by latency; while a link on it is down, the shortest route over
        the links that are up, if there is one (else the usual route, whose flows then wait)."""
        info = self._route_info(src, dst)
        cap = self.capacity
        if all(cap[l] > 0 for l in info[1]):
            return info
        live = nx.subgraph_view(self.graph, filter_edge=lambda a, b: cap[(a, b)] > 0 and cap[(b, a)] > 0)
        try:
            path = nx.shortest_path(live, src, dst, weight="latency_s")
        except nx.NetworkXNoPath:
            return info
        links = list(zip(path, path[1:]))
        return path, links, sum(self.graph.edges[a, b]["latency_s"] for a, b in links)

    def _route_info(self, src: str, dst: str) -> tuple[list[str], list[tuple[str, str]], float]:
        key = (src, dst)
        info = self._routes.get(key)
        if info is not None:
            return info
        g = self.graph
        for n in (src, dst):
            if n not in g:
                raise ValueError(f"no route from {src} to {dst}: node {n} is not in the graph")
        # A node with one neighbour (a worker on its region switch) reaches everything through
        # that neighbour, so its routes reuse the neighbour's: routing P workers of a few
        # regions costs a few shortest-path searches between switches, not P.
        if src != dst and g.degree(src) == 1:
            nbr = next(iter(g.adj[src]))
            path = [src, dst] if nbr == dst else [src] + self._route_info(nbr, dst)[0]
        elif src != dst and g.degree(dst) == 1:
            nbr = next(iter(g.adj[dst]))
            path = [src, dst] if nbr == src else self._route_info(src, nbr)[0] + [dst]
        else:
            try:
                path = nx.shortest_path(g, src, dst, weight="latency_s")
            except nx.NetworkXNoPath as err:
                raise ValueError(f"no route from {src} to {dst}: {err}") from None
        links = list(zip(path, path[1:]))
        latency = sum(g.edges[a, b]["latency_s"] for a, b in links)
        info = self._routes[key] = (path, links, latency)
        return info

    # ------------------------------------------------------------------ transfers
    def transfer(self, src: str, dst: str, nbytes: float, tag: str = "", *, latency_s: float | None = None,
                 ready: simpy.Event | None = None) -> simpy.Event:
        """Start a flow now; the returned event fires when the last byte has arrived.

        ``latency_s`` replaces the route latency as the delay from the last byte sent to
        its arrival (pipelined collectives use it). With ``ready``, the last byte cannot
        leave before that event has fired (data still being produced upstream): arrival
        is ``max(last byte sent, ready) + latency``.
        """
        if nbytes < 0 or not math.isfinite(nbytes):
            raise ValueError(f"transfer size must be finite and >= 0 (got {nbytes})")
        path, links, route_latency = self._current_route(src, dst)
        latency = route_latency if latency_s is None else latency_s
        if not latency >= 0 or math.isinf(latency):
            raise ValueError(f"transfer latency_s must be finite and >= 0 (got {latency_s})")
        self._seq += 1
        now = self.env.now
        flow = Flow(src, dst, float(nbytes), links, latency, tag, now, self.env.event(),
                    remaining=float(nbytes), seq=self._seq, route=path, updated_s=now, ready=ready)
        self.flows_started += 1
        if nbytes == 0 or all(math.isinf(self.capacity[l]) for l in links):
            self._deliver(flow)
            return flow.done
        self._flows[flow] = None
        lf = self._link_flows
        for l in links:
            users = lf.get(l)
            if users is None:
                lf[l] = {flow: None}
            else:
                users[flow] = None
        self._dirty_flows[flow] = None
        self._request_flush()
        return flow.done

    @property
    def active_flows(self) -> int:
        return len(self._flows)

    def flows_in_flight(self) -> list[Flow]:
        """The flows sending now (each with its current ``rate`` in bytes/s and ``links``)."""
        return list(self._flows)

    # ------------------------------------------------------------------ capacity changes
    def set_bandwidth_gbps(self, u: str, v: str, bandwidth_gbps: float) -> None:
        """Set both directions of edge u-v to ``bandwidth_gbps`` now (0 = down); rates follow at once."""
        if not bandwidth_gbps >= 0:
            raise ValueError(f"link {u}-{v}: bandwidth_gbps must be >= 0 (got {bandwidth_gbps})")
        cap = gbps_to_bytes_per_s(bandwidth_gbps)
        for l in ((u, v), (v, u)):
            if self.capacity[l] != cap:
                self.capacity[l] = cap
                self.capacity_changes += 1
                if l in self._link_flows:
                    self._dirty_links[l] = None
        if self._dirty_links:
            self._request_flush()

    def _link_dynamics(self, u: str, v: str, data: dict, times: list[float]):
        for t in times:
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            self.set_bandwidth_gbps(u, v, _bandwidth_at(data, t))

    # ------------------------------------------------------------------ rates
    def _request_flush(self) -> None:
        """Recompute affected rates once, after everything else scheduled for this instant."""
        if not self._flush_pending:
            self._flush_pending = True
            self.env.timeout(0).callbacks.append(self._flush)

    def _flush(self, _event: simpy.Event | None = None) -> None:
        self._flush_pending = False
        if not self._dirty_flows and not self._dirty_links:
            return
        comp = self._affected_component()
        self._dirty_flows = {}
        self._dirty_links = {}
        if comp:
            self._solve(comp)
        self._arm()

    def _affected_component(self) -> list[Flow]:
        """Active flows connected, through shared directed links, to a dirty flow or link."""
        lf = self._link_flows
        seen_flows: dict[Flow, None] = {}
        seen_links: set[tuple[str, str]] = set()
        stack: list[Flow] = []
        for f in self._dirty_flows:
            if f in self._flows and f not in seen_flows:
                seen_flows[f] = None
                stack.append(f)
        for l in self._dirty_links:
            if l in seen_links:
                continue
            seen_links.add(l)
            for f in lf.get(l, ()):
                if f not in seen_flows:
                    seen_flows[f] = None
                    stack.append(f)
        while stack:
            f = stack.pop()
            for l in f.links:
                if l in seen_links:
                    continue
                seen_links.add(l)
                for g in lf[l]:
                    if g not in seen_flows:
                        seen_flows[g] = None
                        stack.append(g)
        return list(seen_flows)

    def _solve(self, comp: list[Flow]) -> None:
        """Max-min fair rates for one closed set of flows (every flow on its links is in it)."""
        self.rate_recomputations += 1
        self.rate_recomputed_flows += len(comp)
        now = self.env.now
        cap = self.capacity
        left: dict[tuple[str, str], float] = {}
        count: dict[tuple[str, str], int] = {}
        old_rate: dict[Flow, float] = {}
        for f in comp:
            old_rate[f] = f.rate
            f.rate = -1.0  # unfrozen
            for l in f.links:
                c = cap[l]
                if c != _INF:
                    if l in count:
                        count[l] += 1
                    else:
                        left[l] = c
                        count[l] = 1
        heap = [(left[l] / n, l) for l, n in count.items()]
        heapq.heapify(heap)
        lf = self._link_flows
        while heap:
            share, l = heapq.heappop(heap)
            n = count[l]
            if n == 0:
                continue
            current = left[l] / n
            if current != share:  # stale: l lost flows frozen elsewhere since it was pushed
                heapq.heappush(heap, (current, l))
                continue
            rate = share if share > 0 else 0.0
            for f in lf[l]:
                if f.rate >= 0:
                    continue
                f.rate = rate
                for m in f.links:
                    if m in count:
                        left[m] -= share
                        count[m] -= 1
        push = heapq.heappush
        for f in comp:
            if f.rate < 0:  # no finite-capacity link on its route
                f.rate = _INF
            before = old_rate[f]
            if f.rate == before and f.version:
                continue  # same rate: its progress and its heap entry stay valid
            if 0 < before < _INF and now > f.updated_s:
                f.remaining -= before * (now - f.updated_s)
            f.updated_s = now
            f.version += 1
            if f.rate == _INF:
                push(self._finish_heap, (now, f.seq, f.version, f))
            elif f.rate > 0:
                push(self._finish_heap, (now + max(f.remaining, 0.0) / f.rate, f.seq, f.version, f))
            # rate 0: stalled behind a link that is down; no finish time until it comes back

    # ------------------------------------------------------------------ finishing
    def _arm(self) -> None:
        """Make sure a timer waits for the earliest valid finish time."""
        heap = self._finish_heap
        while heap and heap[0][2] != heap[0][3].version:
            heapq.heappop(heap)
        if heap and heap[0][0] < self._timer_at:
            t = heap[0][0]
            self._timer_at = t
            timer = self.env.timeout(max(t - self.env.now, 0.0))
            timer.callbacks.append(self._on_timer)
            self._timer_event = timer

    def _on_timer(self, event: simpy.Event) -> None:
        now = self.env.now
        # Compare the event, not the time: now + (t - now) can round to just below t, and a
        # timer that fired without clearing _timer_at would stop _arm from ever re-arming.
        if event is self._timer_event:
            self._timer_at = _INF
            self._timer_event = None
        heap = self._finish_heap
        # Flows due within a relative 1e-12 of now finish together: equal flows whose
        # finish times differ only by rounding cost one recomputation, not several.
        horizon = now + 1e-12 * max(1.0, abs(now))
        finished: list[Flow] = []
        while heap and heap[0][0] <= horizon:
            _, _, version, f = heapq.heappop(heap)
            if version != f.version or f not in self._flows:
                continue
            finished.append(f)
        lf = self._link_flows
        for f in finished:
            del self._flows[f]
            f.version += 1
            for l in f.links:
                users = lf[l]
                del users[f]
                if users:
                    self._dirty_links[l] = None
                else:
                    del lf[l]
            self._deliver(f)
        if self._dirty_flows or self._dirty_links:
            self._flush()
        else:
            self._arm()

    def _deliver(self, flow: Flow) -> None:
        """The last byte has left: account its bytes now, deliver it one latency later."""
        flow.remaining = 0.0
        flow.rate = 0.0
        for l in flow.links:
            self.link_bytes[l] += flow.size
        self.sent_bytes[flow.src] += flow.size
        self.received_bytes[flow.dst] += flow.size

        def arrive(_event: simpy.Event) -> None:
            self.recorder.transfers.append(Transfer(
                flow.src, flow.dst, flow.size, flow.start_s, self.env.now, flow.tag, ">".join(flow.route)))
            flow.done.succeed(flow)

        def send_last_byte(_event: simpy.Event | None = None) -> None:
            self.env.timeout(flow.latency_s).callbacks.append(arrive)

        ready = flow.ready
        if ready is not None and ready.callbacks is not None:  # not processed yet: wait for it
            ready.callbacks.append(send_last_byte)
        else:
            send_last_byte()


# ---------------------------------------------------------------------- link dynamics on edges
def _check_dynamics(u: str, v: str, d: dict) -> None:
    series = d.get("bandwidth_series") or []
    prev = -_INF
    for t, bw in series:
        if not (math.isfinite(t) and t >= 0 and t > prev):
            raise ValueError(f"link {u}-{v}: bandwidth_series times must be finite, >= 0 and increasing (got {t})")
        if not (math.isfinite(bw) and bw >= 0):
            raise ValueError(f"link {u}-{v}: bandwidth_series values must be finite and >= 0 (got {bw})")
        prev = t
    for start, end in d.get("outages") or []:
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            raise ValueError(f"link {u}-{v}: an outage needs finite 0 <= start_s < end_s (got {start}, {end})")


def _change_times(d: dict) -> list[float]:
    times = {t for t, _ in d.get("bandwidth_series") or []}
    for start, end in d.get("outages") or []:
        times.update((start, end))
    return sorted(times)


def _bandwidth_at(d: dict, t: float) -> float:
    """Bandwidth (Gbit/s) of an edge at time t: 0 in an outage, else the series' step value."""
    for start, end in d.get("outages") or []:
        if start <= t < end:
            return 0.0
    bw = d["bandwidth_gbps"]
    for time_s, value in d.get("bandwidth_series") or []:
        if time_s > t:
            break
        bw = value
    return bw


def build_graph(topology, base_dir: str | Path | None = None) -> tuple[nx.Graph, list[str]]:
    """Graph of a scenario topology: one switch node per region (named by the region),
    one node per worker (``region/i``) joined to its switch by the intra-region link,
    and WAN links between switches. Returns the graph and worker node names in order.

    A WAN link's ``bandwidth_csv`` (read now by ``Link.bandwidth_series``; a relative path
    is taken relative to ``base_dir``, else the working directory -- ``load_scenario`` has
    already made it absolute) and ``outages`` become the edge attributes
    ``bandwidth_series`` and ``outages`` that ``Network`` plays back.
    """
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
        attrs = dict(bandwidth_gbps=link.bandwidth_gbps, latency_s=link.latency_s, kind="wan")
        series = link.bandwidth_series(base_dir) if getattr(link, "bandwidth_csv", None) else []
        if series:
            attrs["bandwidth_series"] = series
        outages: Iterable = getattr(link, "outages", None) or ()
        if outages:
            attrs["outages"] = [(o.start_s, o.end_s) for o in outages]
        g.add_edge(link.a, link.b, **attrs)
    return g, workers
