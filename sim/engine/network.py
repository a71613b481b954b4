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
* A component of more than ``_SMALL`` flows is found and rated with numpy, over arrays
  with a column per flow (``flow_table``; flows over one route share a column,
  ``ROUTE_BUNDLES``): the same heap pops, many per vectorized pass, and the same floats,
  bit for bit (``maxmin.progressive_filling``). Smaller ones stay in plain Python.
* Only the flows whose rate changed get a new finish time (in the arrays or in a heap with
  lazy invalidation); one SimPy timer waits for the earliest (``arrivals``).
* Flows a collective starts together with one route shape form a *flow class*
  (``transfer_group``, ``flow_classes``): one entity with multiplicities while it is
  symmetric, split into its member flows when it is not; the same rates, finish times and
  records as one flow each, at a cost per class (``FLOW_CLASSES`` turns it off).
* Each WAN link's and region pair's summed rate is logged as it changes (``rate_log``).

Where the rest lives: the graph and routes in ``topology``, link dynamics in ``links``,
the max-min filling as pure functions in ``maxmin``; ``Network``'s own parts over its one
state in ``flow_table``, ``flow_classes``, ``rate_log`` and ``arrivals``. This module keeps
what starts flows and decides when and over what rates are recomputed.

Modelled: bandwidth sharing, multi-hop routes, propagation latency, bandwidth that
changes at given times, outages.
Not modelled: packets, TCP dynamics, congestion control, per-flow windows, queueing delay,
moving a flow that is already sending to another route.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from itertools import chain

import networkx as nx
import numpy as np
import simpy

from sim.engine import compiled
from sim.engine.arrivals import Arrivals
from sim.engine.flow import Flow
from sim.engine.flow_classes import FlowClasses, mix64
from sim.engine.flow_table import FlowTable
from sim.engine.links import LinkTimeline, change_times, check_link
from sim.engine.maxmin import heap_filling, progressive_filling
from sim.engine.rate_log import RateLog
from sim.engine.topology import Routes, gbps_to_bytes_per_s
from sim.metrics.records import Recorder

_INF = math.inf
# A component of up to this many flows is found and rated in plain Python (a dict walk and
# a heap); a larger one with numpy over the network's flow arrays. Both give the same floats.
_SMALL = 32
# Whether ``transfer_group`` starts a group's identical flows as flow classes (one entity with
# a multiplicity, see Network.transfer_group); False: one flow each, as ``transfer`` does (the
# switch the equivalence tests turn off).
FLOW_CLASSES = True
# Flows of one shape fewer than this stay plain flows: a class of a few members costs more
# (its arrays, its symmetry checks) than the flows it stands for (NoLoCo's gossip pairs).
_MIN_CLASS = 16
# Whether ``_solve_large`` rates the flows of one route (the same link ids: NoLoCo's gossip
# pairs send a flow per layer over one route) once, as one column with a count; the same
# floats as a column each (False: a column each, the switch the equivalence tests turn off).
ROUTE_BUNDLES = True
# Whether ``_solve_large`` rates bundles by the links that can limit them: the links of a leaf
# node (a worker's or a server's own link) left out while their fair share is above the rates
# of their flows (checked after; else the whole filling), bundles over the same other links as
# one entity (``FlowTable._reduced_rates``); the same floats (False: the filling over every link).
REDUCED_FILLING = True


class Network(FlowTable, FlowClasses, RateLog, Arrivals):
    """Flows over a graph whose edges carry ``bandwidth_gbps`` and ``latency_s``.

    Optional edge attributes for link dynamics (see ``build_graph``):
    ``bandwidth_series``: ``[(time_s, bandwidth_gbps), ...]`` with increasing times, a step
    function that replaces ``bandwidth_gbps`` from each time on; ``outages``:
    ``[(start_s, end_s), ...]`` during which the link (both directions) has capacity 0.

    Its parts in other modules, over this one state: the flow arrays (``FlowTable``), flow
    classes (``FlowClasses``), the rate log (``RateLog``) and how flows end (``Arrivals``).
    """

    def __init__(self, env: simpy.Environment, graph: nx.Graph, recorder: Recorder | None = None):
        for u, v, d in graph.edges(data=True):
            check_link(u, v, d)
        self.env = env
        self.graph = graph
        self.recorder = recorder if recorder is not None else Recorder()
        self.capacity: dict[tuple[str, str], float] = {}
        self._timelines: dict[tuple[str, str], LinkTimeline] = {}
        for u, v, d in graph.edges(data=True):
            self._timelines[(u, v)] = self._timelines[(v, u)] = LinkTimeline(d)
            cap = gbps_to_bytes_per_s(self._timelines[(u, v)].bandwidth_at(env.now))
            self.capacity[(u, v)] = cap
            self.capacity[(v, u)] = cap
        self.link_bytes: dict[tuple[str, str], float] = {k: 0.0 for k in self.capacity}
        self.sent_bytes: dict[str, float] = {n: 0.0 for n in graph.nodes}
        self.received_bytes: dict[str, float] = {n: 0.0 for n in graph.nodes}
        # Directed links get ids in the order of their (u, v) tuples: progressive filling
        # breaks ties between equal shares by id (see maxmin.progressive_filling). One more id,
        # ``_pad`` (capacity inf), pads the hop table of flows with shorter routes.
        try:
            links = sorted(self.capacity)
        except TypeError:  # node names of mixed types: any fixed order will do
            links = sorted(self.capacity, key=repr)
        self._link_id = {l: i for i, l in enumerate(links)}
        self._router = Routes(graph, self._link_id)  # routes by latency (sim.engine.topology)
        self._pad = len(links)
        self._caps = [self.capacity[l] for l in links]  # bytes/s by link id
        self._cap = np.array(self._caps + [_INF])  # the same as an array, with _pad
        self._inf_links = math.inf in self._caps
        # Per link id, the active flows crossing it, in start order (dicts, not sets: a
        # reproducible order).
        self._link_flows: list[dict[Flow, None]] = [{} for _ in links]
        self._last_links: np.ndarray | None = None  # see _large_component
        # Active flows in start order (a dict, not a set: iteration order is reproducible),
        # and their state in arrays, one column (slot) per flow: the link ids of its route
        # (rows = hops, padded with _pad), its rate (nan until it is first rated), the bytes
        # it still had to send at time _updated, and its finish time (inf while stalled).
        self._flows: dict[Flow, None] = {}
        self._slot_flow: list[Flow | None] = []
        self._free: list[int] = []  # a heap: the lowest free slot is reused first
        self._hi = 0  # slots in use lie below it
        self._hops = np.full((0, 0), self._pad, dtype=np.intp)
        self._rate = np.zeros(0)
        self._remaining = np.zeros(0)
        self._updated = np.zeros(0)
        self._finish = np.zeros(0)
        self._inarr = np.zeros(0, dtype=bool)  # per slot: its flow is in_arrays
        self._rno = np.zeros(0, dtype=np.int64)  # per slot: its route's number (_route_no)
        self._route_no: dict[tuple[int, ...], int] = {}  # link ids -> a number per distinct route
        self._used = np.zeros(0, dtype=bool)  # per slot: in use
        # The route table: a column of link ids per route number (padded with _pad), and the
        # number of slots in use on each route (components are found over live routes).
        self._route_hops = np.full((0, 0), self._pad, dtype=np.intp)
        self._route_live = np.zeros(0, dtype=np.intp)
        # A flow rated by the numpy path keeps its progress and finish time in the arrays
        # (in_arrays); one rated in plain Python keeps them in its own fields, its finish
        # time in a heap with lazy invalidation: few flows never touch numpy. A flow gets
        # its column at the first large recomputation while it sends, and its column
        # catches up with its fields then (_sync_arrays).
        self._finish_heap: list[tuple[float, int, int, Flow]] = []
        self._in_arrays = 0  # active flows whose finish time is in _finish
        self._unslotted: dict[Flow, None] = {}
        self._unsynced: dict[Flow, None] = {}  # flows whose fields are newer than their column
        self._dirty_flows: dict[Flow, None] = {}
        self._dirty_links: dict[int, None] = {}
        self._flush_pending = False
        self._timer_at = _INF
        self._timer_event: simpy.Event | None = None
        # Flows (or classes) whose last byte has left but that have not arrived yet (their
        # latency, or a ``ready`` they wait for): ``cancel`` can still call them off.
        self._landing: dict[Flow, None] = {}
        self.flows_cancelled = 0  # flows (a class's members each) called off by ``cancel``
        self._started = 0
        self.flows_started = 0
        self.rate_recomputations = 0
        self.rate_recomputed_flows = 0  # summed component sizes: the work the recomputations did
        self.rate_recomputed_columns = 0  # the numpy path's columns rated (a route's flows are one: ROUTE_BUNDLES)
        self.capacity_changes = 0
        self.classes_started = 0  # flow classes started (transfer_group), and split into members
        self.classes_split = 0
        self._init_rate_log(graph, links)
        self._init_reduced(graph, links)
        self._classes = 0  # active flow classes
        self._down = sum(1 for c in self._caps if c <= 0)  # links at capacity 0
        self._caps_key: dict[tuple, tuple] = {}  # link ids -> their capacities (cleared when one changes)
        self._shapes: dict[tuple, list] = {}  # transfer_group's (pairs, latency) -> _group_shape (the same)
        self._ring_latency: dict[tuple, float] = {}  # ring_latency_s's pairs -> summed latency
        self._route_texts: dict[int, tuple[list, str]] = {}  # _route_text: id(route list) -> (it, "a>b>c")
        self._epoch = 0  # bumped at each flush and split: _symmetric's answers hold within one
        # Per link: a fingerprint of its class users (sum of hash x multiplicity, mod 2^64) and
        # its number of plain flows. A class whose hop links have one fingerprint, one
        # capacity and no plain flows is symmetric, checked in O(members) numpy work.
        self._fp = np.zeros(len(links) + 1, dtype=np.uint64)
        self._plain_users = [0] * len(links)
        self._members = 0  # active flows: plain ones plus every class's members
        self._links_by_id = links
        for u, v, d in graph.edges(data=True):
            times = change_times(d)
            if times:
                env.process(self._link_dynamics(u, v, d, times))

    def route(self, src: str, dst: str) -> list[str]:
        """The route a flow from ``src`` to ``dst`` starting now takes (around links that are down)."""
        return self._current_route(src, dst)[0]

    def route_latency_s(self, src: str, dst: str) -> float:
        return self._current_route(src, dst)[2]

    def _current_route(self, src: str, dst: str) -> tuple[list[str], list[tuple[str, str]], float, tuple[int, ...]]:
        """The shortest route by latency; while a link on it is down, the shortest route over
        the links that are up, if there is one (else the usual route, whose flows then wait)."""
        return self._router.current(src, dst, self.capacity if self._down else None)

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
        path, links, route_latency, ids = self._current_route(src, dst)
        latency = route_latency if latency_s is None else latency_s
        if not latency >= 0 or math.isinf(latency):
            raise ValueError(f"transfer latency_s must be finite and >= 0 (got {latency_s})")
        self._started += 1
        now = self.env.now
        flow = Flow(src, dst, float(nbytes), links, latency, tag, now, self.env.event(),
                    seq=self._started, route=path, ready=ready, remaining=float(nbytes), updated_s=now)
        self.flows_started += 1
        if nbytes == 0 or not links or (self._inf_links and all(math.isinf(self.capacity[l]) for l in links)):
            self._deliver(flow)
            return flow.done
        self._add_flow(flow, ids)
        self._request_flush()
        return flow.done

    def transfer_group(self, pairs: list[tuple[str, str]], nbytes: float, tag: str = "", *,
                       latency_s: float | None = None) -> list[simpy.Event]:
        """Start one flow of ``nbytes`` per (src, dst) of ``pairs`` now, as ``transfer`` would
        one after the other; returns events that have all fired once every flow has arrived.

        The flows of a group whose routes have the same number of hops, the same capacity
        hop by hop and the same latency form one *flow class*: a single entity of the
        max-min filling with a multiplicity (each link counts the members that cross it),
        one finish time and one arrival event. While the class is *symmetric* -- at each
        hop, every member's link has the same capacity and the same users with the same
        multiplicities -- the links and flows fall into cells of an equitable partition,
        progressive filling keeps every link of a cell at one share and freezes the flows of
        a cell together, so every member has the rate a flow of its own would have. A class
        that stops being symmetric (traffic on some of its links only, a capacity change on
        one of them) is split into its member flows, with its progress, before rates are
        recomputed. A 1,024-member ring is then two classes (its LAN hops, its WAN hops):
        a rate change costs O(links), and finishing costs one event, not 1,024.
        """
        if (not FLOW_CLASSES or len(pairs) < max(_MIN_CLASS, 2) or nbytes <= 0 or not math.isfinite(nbytes)
                or self._inf_links):
            return [self.transfer(a, b, nbytes, tag, latency_s=latency_s) for a, b in pairs]
        shape = self._group_shape(pairs, latency_s)
        base = self._started
        self._started += len(pairs)
        self.flows_started += len(pairs)
        events = []
        size = float(nbytes)
        lf = self._link_flows
        pu = self._plain_users
        now = self.env.now
        for latency, members, cs in shape:
            members = [(a, b, path, ids, base + k) for a, b, path, ids, k in members]
            a, b, path, ids, seq = members[0]
            if cs is None:  # fewer than _MIN_CLASS: flows of their own
                for a, b, path, ids, seq in members:
                    flow = Flow(a, b, size, list(zip(path, path[1:])), latency, tag, now, self.env.event(), seq=seq,
                                route=path, remaining=size, updated_s=now)
                    self._add_flow(flow, ids)
                    events.append(flow.done)
                continue
            cls = Flow(a, b, size, [], latency, tag, now, self.env.event(), seq=seq, route=path, remaining=size,
                       updated_s=now)
            (cls.degree, cls.pairs, cls.hops, cls.hop_arr, cls.hop_min, cls.link_ids, cls.fp_ids, fp_degree,
             cls.rkm) = cs
            cls.members = members
            if not self._log_on:
                cls.rkm = ()
            cls.fp_add = fp_degree * mix64(seq)
            self._fp[cls.fp_ids] += cls.fp_add  # distinct ids: no repeated index
            degree = cls.degree
            cls.touched = any(pu[l] for l in degree)
            for l, d in degree.items():
                lf[l][cls] = d
            self._flows[cls] = None
            self._classes += 1
            self._epoch += 1
            self.classes_started += 1
            self._members += len(members)
            self._dirty_flows[cls] = None
            events.append(cls.done)
        self._request_flush()
        return events

    def _group_shape(self, pairs: list[tuple[str, str]], latency_s: float | None) -> list[tuple]:
        """How ``transfer_group`` splits ``pairs`` now: per group of equal route shape (latency,
        capacities hop by hop), in order of first member, ``(latency, members, class
        structure)`` with members ``(src, dst, path, link ids, k)`` (k: 1-based position in
        ``pairs``, the member's start order) and the class structure None below
        ``_MIN_CLASS``. It depends only on the pairs, the routes and the capacities, so while
        no link is down it is kept per (pairs, latency) until a capacity changes (a
        layer-grain sync starts one ring per layer over the same members)."""
        key = None
        if not self._down:
            key = (tuple(pairs), latency_s)
            got = self._shapes.get(key)
            if got is not None:
                return got
        routes = []
        for a, b in pairs:
            path, links, route_latency, ids = self._current_route(a, b)
            latency = route_latency if latency_s is None else latency_s
            if not latency >= 0 or math.isinf(latency):
                raise ValueError(f"transfer latency_s must be finite and >= 0 (got {latency_s})")
            routes.append((a, b, path, ids, latency))
        groups: dict[tuple, list] = {}
        caps = self._caps
        caps_key = self._caps_key
        for k, (a, b, path, ids, latency) in enumerate(routes, 1):
            ck = caps_key.get(ids)
            if ck is None:
                ck = caps_key[ids] = tuple([caps[l] for l in ids])
            groups.setdefault((latency, ck), []).append((a, b, path, ids, k))
        wan = self._wan_links
        region = self._region_of
        shape = []
        for (latency, _), members in groups.items():
            if len(members) < _MIN_CLASS:
                shape.append((latency, members, None))
                continue
            routes_ids = [m[3] for m in members]
            degree = dict(Counter(chain.from_iterable(routes_ids)))
            pair_count = dict(Counter([p for p in ((region[m[0]], region[m[1]]) for m in members) if p[0] != p[1]]))
            hops = list(zip(*routes_ids))
            rkm = tuple([(l, d) for l, d in degree.items() if l in wan]
                        + [(self._pair_key[pr], n) for pr, n in pair_count.items()])
            shape.append((latency, members, (
                degree, pair_count, hops, [np.array(h, dtype=np.intp) for h in hops], [min(h) for h in hops],
                tuple(degree), np.fromiter(degree, dtype=np.intp, count=len(degree)),
                np.fromiter(degree.values(), dtype=np.uint64, count=len(degree)), rkm)))
        if key is not None:
            if len(self._shapes) >= 256:  # bounded: a run's distinct groups are few
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def ring_latency_s(self, pairs: list[tuple[str, str]]) -> float:
        """Summed route latency of ``pairs`` (a ring's hops), in their order; kept per pairs while
        no link is down (routes do not change then)."""
        if self._down:
            return sum(self.route_latency_s(a, b) for a, b in pairs)
        key = tuple(pairs)
        got = self._ring_latency.get(key)
        if got is None:
            if len(self._ring_latency) >= 256:
                self._ring_latency.clear()
            got = self._ring_latency[key] = sum(self.route_latency_s(a, b) for a, b in pairs)
        return got

    def _add_flow(self, flow: Flow, ids: tuple[int, ...]) -> None:
        """Make a plain flow active on its links (``transfer``'s bookkeeping)."""
        self._flows[flow] = None
        self._members += 1
        flow.link_ids = ids
        self._set_keys(flow)
        lf = self._link_flows
        pu = self._plain_users
        for l in ids:
            lf[l][flow] = None
            pu[l] += 1
        if self._classes:
            self._mark_touched(ids)
        self._unslotted[flow] = None
        self._dirty_flows[flow] = None

    def set_bandwidth_gbps(self, u: str, v: str, bandwidth_gbps: float) -> None:
        """Set both directions of edge u-v to ``bandwidth_gbps`` now (0 = down); rates follow at once."""
        if not bandwidth_gbps >= 0:
            raise ValueError(f"link {u}-{v}: bandwidth_gbps must be >= 0 (got {bandwidth_gbps})")
        cap = gbps_to_bytes_per_s(bandwidth_gbps)
        for l in ((u, v), (v, u)):
            if self.capacity[l] != cap:
                self.capacity[l] = cap
                i = self._link_id[l]
                self._caps[i] = self._cap[i] = cap
                self._inf_links = math.inf in self._caps
                self._down = sum(1 for c in self._caps if c <= 0)
                self._caps_key = {}
                self._shapes = {}
                self.capacity_changes += 1
                if self._link_flows[i]:
                    self._dirty_links[i] = None
        if self._dirty_links:
            self._request_flush()

    def bandwidth_at(self, u: str, v: str, t: float) -> float:
        """Edge u-v's scheduled bandwidth (Gbit/s) at time t (its series and outages, those
        appended so far included), in O(log n)."""
        return self._timelines[(u, v)].bandwidth_at(t)

    def _link_dynamics(self, u: str, v: str, data: dict, times: list[float]):
        timeline = self._timelines[(u, v)]
        for t in times:
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            self.set_bandwidth_gbps(u, v, timeline.bandwidth_at(t))

    def _request_flush(self) -> None:
        """Recompute affected rates once, after everything else scheduled for this instant."""
        if not self._flush_pending:
            self._flush_pending = True
            self.env.timeout(0).callbacks.append(self._flush)

    def _flush(self, _event: simpy.Event | None = None, *, timer_fired: bool = False) -> None:
        self._flush_pending = False
        self._epoch += 1
        if not self._dirty_flows and not self._dirty_links:
            return
        t = _INF  # the earliest finish time that changed
        comp = self._small_component()
        if comp is None:
            slots = self._large_component()
            self._dirty_flows = {}
            self._dirty_links = {}
            if slots.size:
                t = self._solve_large(slots)
        else:
            self._dirty_flows = {}
            self._dirty_links = {}
            if comp:
                t = self._solve_small(comp)
        self._arm(None if timer_fired else t)
        self._log_rates()

    def _small_component(self) -> list[Flow] | None:
        """Active flows connected, through shared directed links, to a dirty flow or link;
        None as soon as they may be more than _SMALL (then _large_component finds them)."""
        lf = self._link_flows
        seen_flows: dict[Flow, None] = {}
        seen_links: set[int] = set()
        stack: list[Flow] = []
        active = self._flows
        for f in self._dirty_flows:
            if f in active and f not in seen_flows:
                seen_flows[f] = None
                stack.append(f)
        links = list(self._dirty_links)
        while True:
            for l in links:
                if l in seen_links:
                    continue
                seen_links.add(l)
                users = lf[l]
                if len(seen_flows) + len(users) > _SMALL and not self._classes:
                    return None
                for g in users:
                    if g not in seen_flows:
                        seen_flows[g] = None
                        stack.append(g)
            if not stack:
                # With flow classes active the walk goes on past _SMALL: a component that
                # holds a class is rated here (the flow arrays know no classes).
                if len(seen_flows) > _SMALL and not any(f.members is not None for f in seen_flows):
                    return None
                return list(seen_flows)
            f = stack.pop()
            # A symmetric class's hop links all have the same users: one link per hop will do.
            links = f.link_ids if f.members is None or not self._symmetric(f) else [h[0] for h in f.hops]

    def _solve_small(self, comp: list[Flow]) -> float:
        """Max-min fair rates for one closed set of flows (every flow on its links is in it),
        then new finish times for the flows whose rate changed, in plain Python; returns the
        earliest of those (inf: none)."""
        self.rate_recomputations += 1
        self.rate_recomputed_flows += len(comp)
        self._forget_last(comp)
        now = self.env.now
        got = None
        if self._classes and any(f.members is not None for f in comp):
            comp, got = self._class_rates(comp)
        if got is None:
            cap = self._caps
            left: dict[int, float] = {}
            count: dict[int, int] = {}
            routes = {}
            for f in comp:
                routes[f] = links = f.link_ids
                for l in links:
                    c = cap[l]
                    if c != _INF:
                        if l in count:
                            count[l] += 1
                        else:
                            left[l] = c
                            count[l] = 1
            heap = [(left[l] / n, l) for l, n in count.items()]
            heapq.heapify(heap)
            got = heap_filling(self._link_flows, routes, left, count, heap)
        earliest = _INF
        for f in comp:
            rate = got.get(f, _INF)
            s = f.slot
            before = float(self._rate[s]) if f.in_arrays else f._r
            if rate == before and f.version:
                continue  # same rate: its progress and its finish time stay valid
            if f.in_arrays:  # its progress moves from its column to its fields
                f.in_arrays = False
                self._inarr[s] = False
                f.q = int(self._q[s])
                f.remaining = float(self._remaining[s])
                f.updated_s = float(self._updated[s])
                self._finish[s] = _INF
                self._in_arrays -= 1
            if 0 < before < _INF and now > f.updated_s:
                f.remaining -= before * (now - f.updated_s)
            f.updated_s = now
            f.rate = rate
            if f.rkeys or f.rkm:
                self._requant(f, rate)
            f.version += 1
            if s >= 0:
                self._unsynced[f] = None
            if rate == _INF:
                t = now
            elif rate > 0:
                t = now + max(f.remaining, 0.0) / rate
            else:  # stalled behind a link that is down: no finish time until it comes back
                continue
            heapq.heappush(self._finish_heap, (t, f.seq, f.version, f))
            f.finish_s = t
            if t < earliest:
                earliest = t
        return earliest

    def _solve_large(self, slots: np.ndarray) -> float:
        """``_solve_small`` over the flow arrays, for many flows; the same floats."""
        self.rate_recomputations += 1
        self.rate_recomputed_flows += slots.size
        if ROUTE_BUNDLES and REDUCED_FILLING and (got := compiled.solve_large(self, slots)) is not None:
            return got  # the same floats, by the compiled kernel (numba installed)
        slots = compiled.as_slots(slots)  # (the compiled search gives routes: their flows' slots)
        now = self.env.now
        if ROUTE_BUNDLES:
            # Flows over one route cross the same links: progressive filling freezes them in
            # one pop at one share, so one column with their count stands for them all.
            rno = self._rno.take(slots)
            count = np.bincount(rno, minlength=len(self._route_no))
            routes = count.nonzero()[0]  # in route order
            self.rate_recomputed_columns += routes.size
            column = np.empty(count.size, dtype=np.intp)
            column[routes] = np.arange(routes.size)
            at = column.take(rno)  # each flow's route column
            per_route = None
            if REDUCED_FILLING and not self._inf_links:
                per_route = self._reduced_rates(routes, count.take(routes), self._route_hops.take(routes, axis=1))
            if per_route is not None:
                rate = per_route.take(at)
            else:
                hops = self._slot_hops(slots)
                if routes.size < slots.size:
                    first = np.empty(routes.size, dtype=np.intp)  # a flow of each route (any: one hop column)
                    first[at] = np.arange(slots.size)
                    rate = progressive_filling(hops.take(first, axis=1), self._cap, count.take(routes)).take(at)
                else:
                    rate = progressive_filling(hops, self._cap)
        else:
            self.rate_recomputed_columns += slots.size
            rate = progressive_filling(self._slot_hops(slots), self._cap)
        old = self._rate.take(slots)
        changed = rate != old  # same rate: its progress and finish time stay valid (nan: new)
        idx = slots.compress(changed)
        if not idx.size:
            return _INF
        rate = rate.compress(changed)
        before = old.compress(changed)
        updated = self._updated.take(idx)
        with np.errstate(invalid="ignore", divide="ignore"):
            # Bytes sent since the last change at the old rate (none by a new flow, nan, or one
            # due now, inf; one rated at this instant or stalled sends before * 0 or 0 * dt).
            remaining = self._remaining.take(idx)
            remaining = np.where(np.isfinite(before), remaining - before * (now - updated), remaining)
            # rate inf: due now (max(remaining, 0) / inf = 0); rate 0: stalled, no finish time.
            finish = np.where(rate > 0, now + np.maximum(remaining, 0.0) / rate, _INF)
        self._remaining[idx] = remaining
        self._updated[idx] = now
        self._rate[idx] = rate
        self._rmixed[self._rno.take(idx)] = True  # (the kernel's per-route rates no longer hold for them)
        self._finish[idx] = finish
        if self._log_on:  # the rate log: each changed flow's count moves by (new - old) on each of its keys
            self._log_moves(idx, rate)
        # The flows that move into the arrays now (their heap entries, if any, are stale from
        # now on); the others' rates live in their columns (``Flow.rate`` is read from there).
        inarr = self._inarr
        new = idx.compress(~inarr.take(idx))
        if new.size:
            inarr[new] = True
            flows = self._slot_flow
            for s in new.tolist():
                f = flows[s]
                f.in_arrays = True
                f.version += 1
            self._in_arrays += new.size
        return float(finish.min())
