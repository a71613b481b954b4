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
  with a column per flow (route as link ids, rate, progress, finish time): the same heap
  pops, many per vectorized pass, and the same floats, bit for bit (see
  ``_progressive_filling``). Smaller ones stay in plain Python, which is faster for them.
* Only the flows whose rate changed get a new finish time (in the arrays or in a heap with
  lazy invalidation); one SimPy timer waits for the earliest.

* Flows a collective starts together with one route shape form a *flow class*
  (``transfer_group``): one entity with multiplicities while it is symmetric, split into
  its member flows when it is not; the same rates, finish times and records as one flow
  each, at a cost per class (see ``transfer_group``; ``FLOW_CLASSES`` turns it off).
* Each WAN link's and region pair's summed rate is logged as it changes (exact integer
  totals in 2^-16 bytes/s), so reports read the run's own rates (``rate_timeline``), and
  link windows are looked up by bisection (``LinkTimeline``).

Modelled: bandwidth sharing, multi-hop routes, propagation latency, bandwidth that
changes at given times, outages.
Not modelled: packets, TCP dynamics, congestion control, per-flow windows, queueing delay,
moving a flow that is already sending to another route.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, field
from collections import Counter
from itertools import accumulate, chain, islice
from pathlib import Path
from typing import Iterable

import networkx as nx
import numpy as np
import simpy

from sim.metrics.records import Recorder, Transfer

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
_Q = 65536.0  # the rate log counts rates in 2^-16 bytes/s (exact integer sums up to ~1.4e14 bytes/s)


def _mix64(x: int) -> np.uint64:
    """splitmix64 of x: a well-spread 64-bit hash of a class's start number (no random state)."""
    z = (x * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(z ^ (z >> 31))


def _region_name(node) -> str:
    """A node's region as the rate log names it: a worker ``region/i`` -> ``region`` (the
    name before the last '/'), any other node its own name."""
    return str(node).rsplit("/", 1)[0]


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
    rate: float = 0.0  # bytes/s now (in_arrays: as of leaving the arrays; the column holds it)
    seq: int = 0
    route: list[str] = field(default_factory=list)
    ready: simpy.Event | None = None
    link_ids: tuple[int, ...] = ()  # ``links`` as the network's link ids
    remaining: float = 0.0  # bytes still to send as of updated_s (unless in_arrays)
    updated_s: float = 0.0
    version: int = 0  # bumped whenever its finish time moves; older heap entries are stale
    slot: int = -1  # its column in the network's flow arrays, once it has one, else -1
    in_arrays: bool = False  # its progress and finish time are in the arrays, not here
    rkeys: tuple[int, ...] = ()  # the rate log's keys it counts toward (its WAN links, its region pair)
    rkm: tuple = ()  # a class: (key, members counted there) pairs
    q: int = 0  # its rate as the log counts it (2^-16 bytes/s; 0 when stalled or due now)
    # A flow class (Network.transfer_group): ``members`` [(src, dst, path, link ids, seq)],
    # ``degree`` {link id: members crossing it}, ``hops[k]`` the members' k-th link ids, and
    # ``pairs`` {(src region, dst region): members}; ``link_ids`` its distinct links. Every
    # member has this object's rate, progress and finish time. None: one flow.
    members: list | None = None
    degree: dict | None = None
    hops: list | None = None
    pairs: dict | None = None
    owner: "Flow | None" = None  # a member split off a class: the class whose done event it counts toward
    finish_s: float = _INF  # its finish time as last pushed (a class's members inherit it when split)
    arrived: int = 0  # a class: members delivered so far
    touched: bool = False  # a class: a plain flow has used one of its links (then checked link by link)
    fp_ids: np.ndarray | None = None  # a class: its distinct link ids and what it adds to their fingerprints
    fp_add: np.ndarray | None = None
    hop_arr: list | None = None  # a class: ``hops`` as arrays, and each hop's lowest link id
    hop_min: list | None = None
    sym_epoch: int = -1  # the network epoch of its last symmetry answer, and the answer
    sym: bool = False
    cancelled: bool = False  # called off (Network.cancel): never delivered
    net: "Network | None" = None  # the network whose arrays hold its column (set with its slot)


def _flow_rate(f: Flow) -> float:
    return float(f.net._rate[f.slot]) if f.in_arrays else f._r


def _set_flow_rate(f: Flow, rate: float) -> None:
    f._r = rate


# ``rate`` of a flow in the arrays is its column's (``_solve_large`` writes the column, not
# thousands of objects); other flows keep it in ``_r``.
Flow.rate = property(_flow_rate, _set_flow_rate)


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
        self._timelines: dict[tuple[str, str], LinkTimeline] = {}
        for u, v, d in graph.edges(data=True):
            self._timelines[(u, v)] = self._timelines[(v, u)] = LinkTimeline(d)
            cap = gbps_to_bytes_per_s(self._timelines[(u, v)].bandwidth_at(env.now))
            self.capacity[(u, v)] = cap
            self.capacity[(v, u)] = cap
        self.link_bytes: dict[tuple[str, str], float] = {k: 0.0 for k in self.capacity}
        self.sent_bytes: dict[str, float] = {n: 0.0 for n in graph.nodes}
        self.received_bytes: dict[str, float] = {n: 0.0 for n in graph.nodes}
        # (src, dst) -> path, links, latency_s and the links' ids (see below).
        self._routes: dict[tuple[str, str], tuple[list[str], list[tuple[str, str]], float, tuple[int, ...]]] = {}
        self._latency = {}  # latency_s by directed link, and the one neighbour of each leaf node
        for u, v, d in graph.edges(data=True):
            self._latency[(u, v)] = self._latency[(v, u)] = d["latency_s"]
        self._leaf_neighbour = {n: next(iter(graph.adj[n])) for n, deg in graph.degree() if deg == 1}
        # Directed links get ids in the order of their (u, v) tuples: progressive filling
        # breaks ties between equal shares by id (see _progressive_filling). One more id,
        # ``_pad`` (capacity inf), pads the hop table of flows with shorter routes.
        try:
            links = sorted(self.capacity)
        except TypeError:  # node names of mixed types: any fixed order will do
            links = sorted(self.capacity, key=repr)
        self._link_id = {l: i for i, l in enumerate(links)}
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
        # The rate log (see rate_timeline): every directed WAN link's and every ordered pair
        # of regions' summed rate, one entry whenever it changes. Each flow counts its rate
        # as an integer number of 2^-16 bytes/s (``q``), added to the integer totals of its
        # keys (its WAN links, its region pair) whenever it changes: exact and independent of
        # the order of the changes, O(1) per change (vectorized on the numpy path), and
        # logged once per instant (_log_rates). Keys: a WAN link's id, or one per pair.
        self._wan_links = {self._link_id[l]: l for l in links if graph.edges[l].get("kind") == "wan"}
        self._region_of = {n: d.get("region") or _region_name(n) for n, d in graph.nodes(data=True)}
        regions = sorted(set(self._region_of.values()), key=str)
        self._key_name: dict[int, object] = dict(self._wan_links)
        self._pair_key: dict[tuple, int] = {}
        for a in regions:
            for b in regions:
                if a != b:
                    k = self._pair_key[(a, b)] = len(links) + 1 + len(self._pair_key)
                    self._key_name[k] = ("pair", a, b)
        n_keys = len(links) + 2 + len(self._pair_key)
        self._rtot = [0] * n_keys  # Python ints: exact, and cheap one at a time
        self._rscratch = np.zeros(n_keys, dtype=np.int64)  # the numpy path's sums, folded into _rtot
        self._rdummy = n_keys - 1  # pads the per-slot key table
        self._rtouched: dict[int, None] = {}
        self._q = np.zeros(0, dtype=np.int64)  # per slot: the quantized rate it counts (in_arrays flows)
        self._rk = np.full((0, 0), self._rdummy, dtype=np.intp)  # per slot: its keys, padded
        self._logged: dict = {}  # key (a link, or ("pair", a, b)) -> rate last logged
        self._log_on = True  # off (keep_rate_log(False)): no keys, no counts, rate_timeline() None
        self._log: list[tuple[float, object, float]] = []
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
            times = _change_times(d)
            if times:
                env.process(self._link_dynamics(u, v, d, times))

    # ------------------------------------------------------------------ routes
    def route(self, src: str, dst: str) -> list[str]:
        """The route a flow from ``src`` to ``dst`` starting now takes (around links that are down)."""
        return self._current_route(src, dst)[0]

    def route_latency_s(self, src: str, dst: str) -> float:
        return self._current_route(src, dst)[2]

    def _current_route(self, src: str, dst: str) -> tuple[list[str], list[tuple[str, str]], float, tuple[int, ...]]:
        """The shortest route by latency; while a link on it is down, the shortest route over
        the links that are up, if there is one (else the usual route, whose flows then wait)."""
        info = self._route_info(src, dst)
        if not self._down:  # no link is down: the usual route
            return info
        cap = self.capacity
        if all(cap[l] > 0 for l in info[1]):
            return info
        live = nx.subgraph_view(self.graph, filter_edge=lambda a, b: cap[(a, b)] > 0 and cap[(b, a)] > 0)
        try:
            path = nx.shortest_path(live, src, dst, weight="latency_s")
        except nx.NetworkXNoPath:
            return info
        links = list(zip(path, path[1:]))
        return path, links, sum(self._latency[l] for l in links), tuple([self._link_id[l] for l in links])

    def _route_info(self, src: str, dst: str) -> tuple[list[str], list[tuple[str, str]], float, tuple[int, ...]]:
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
        leaf = self._leaf_neighbour
        if src != dst and src in leaf:
            nbr = leaf[src]
            path = [src, dst] if nbr == dst else [src] + self._route_info(nbr, dst)[0]
        elif src != dst and dst in leaf:
            nbr = leaf[dst]
            path = [src, dst] if nbr == src else self._route_info(src, nbr)[0] + [dst]
        else:
            try:
                path = nx.shortest_path(g, src, dst, weight="latency_s")
            except nx.NetworkXNoPath as err:
                raise ValueError(f"no route from {src} to {dst}: {err}") from None
        links = list(zip(path, path[1:]))
        latency = sum(self._latency[l] for l in links)
        info = self._routes[key] = (path, links, latency, tuple([self._link_id[l] for l in links]))
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
        path, links, route_latency, ids = self._current_route(src, dst)
        latency = route_latency if latency_s is None else latency_s
        if not latency >= 0 or math.isinf(latency):
            raise ValueError(f"transfer latency_s must be finite and >= 0 (got {latency_s})")
        self._started += 1
        now = self.env.now
        flow = Flow(src, dst, float(nbytes), links, latency, tag, now, self.env.event(),
                    seq=self._started, route=path, ready=ready, remaining=float(nbytes), updated_s=now)
        self.flows_started += 1
        if nbytes == 0 or all(math.isinf(self.capacity[l]) for l in links):
            self._deliver(flow)
            return flow.done
        self._add_flow(flow, ids)
        self._request_flush()
        return flow.done

    def _mark_touched(self, ids) -> None:
        """A plain flow joined links ``ids``: the classes on them are checked link by link."""
        lf, pu = self._link_flows, self._plain_users
        for l in ids:
            users = lf[l]
            if len(users) > pu[l]:
                for u in users:
                    if u.members is not None:
                        u.touched = True

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
            cls.fp_add = fp_degree * _mix64(seq)
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

    def _split(self, cls: Flow) -> list[Flow]:
        """Replace a flow class by its members, each a plain flow with the class's rate,
        progress and finish time (so a member whose rate does not change keeps them)."""
        lf = self._link_flows
        for l in cls.degree:
            del lf[l][cls]
        self._fp[cls.fp_ids] -= cls.fp_add
        self._epoch += 1
        self._count_rate(cls, -cls.q)
        del self._flows[cls]
        self._classes -= 1
        self.classes_split += 1
        self._members -= len(cls.members)
        cls.version += 1  # its finish heap entry is stale
        out = []
        for a, b, path, ids, seq in cls.members:
            f = Flow(a, b, cls.size, list(zip(path, path[1:])), cls.latency_s, cls.tag, cls.start_s, cls.done,
                     rate=cls.rate, seq=seq, route=path, remaining=cls.remaining, updated_s=cls.updated_s,
                     version=cls.version if cls.version > 1 else 0, owner=cls)
            self._add_flow(f, ids)
            del self._dirty_flows[f]
            if cls.q:
                f.q = cls.q
                self._count_rate(f, cls.q)
            if f.version and 0 < f.rate < _INF:
                f.finish_s = cls.finish_s
                heapq.heappush(self._finish_heap, (cls.finish_s, f.seq, f.version, f))
            out.append(f)
        return out

    def keep_rate_log(self, on: bool) -> None:
        """Whether the network logs its link and region-pair rates (``rate_timeline``); on by
        default. A caller that writes no report (the bandwidth search: only the workers'
        states are read) turns it off and saves its bookkeeping on every flow and rate change.
        Only before the first flow starts."""
        if self._started:
            raise RuntimeError("keep_rate_log: flows have started; set it before the run")
        self._log_on = bool(on)

    def _set_keys(self, flow: Flow) -> None:
        """The rate log's keys of a plain flow: its WAN links and its region pair."""
        if not self._log_on:
            return
        wan = self._wan_links
        keys = [l for l in flow.link_ids if l in wan] if wan else []
        a, b = self._region_of[flow.src], self._region_of[flow.dst]
        if a != b:
            keys.append(self._pair_key[(a, b)])
        flow.rkeys = tuple(keys)

    def _count_rate(self, f: Flow, d: int) -> None:
        """Add ``d`` (2^-16 bytes/s) to the totals of the keys of ``f`` (times its members there)."""
        tot, touched = self._rtot, self._rtouched
        if f.members is None:
            for k in f.rkeys:
                tot[k] += d
                touched[k] = None
        else:
            for k, m in f.rkm:
                tot[k] += d * m
                touched[k] = None

    def _requant(self, f: Flow, rate: float) -> None:
        """``f`` now sends at ``rate``: move its count in the rate log's totals."""
        q = round(rate * _Q) if 0 < rate < _INF else 0
        d = q - f.q
        if d:
            f.q = q
            self._count_rate(f, d)

    def _sync_arrays(self) -> None:
        """Before a large recomputation: every active flow has a column, up to date."""
        for f in self._unslotted:
            self._take_slot(f)
        self._unslotted = {}
        rate, remaining, updated = self._rate, self._remaining, self._updated
        q = self._q
        for f in self._unsynced:
            s = f.slot
            q[s] = f.q
            rate[s] = f.rate
            remaining[s] = f.remaining
            updated[s] = f.updated_s
        self._unsynced = {}

    def _take_slot(self, flow: Flow) -> None:
        """Give ``flow`` a column in the flow arrays, with its fields; no finish time."""
        ids = flow.link_ids
        if self._free:
            s = heapq.heappop(self._free)
        else:
            s = len(self._slot_flow)
            self._slot_flow.append(None)
        if s >= self._rate.size or len(ids) > self._hops.shape[0]:
            n = max(self._rate.size, 64)
            while n <= s:
                n *= 2
            hops = np.full((max(len(ids), self._hops.shape[0]), n), self._pad, dtype=np.intp)
            hops[:self._hops.shape[0], :self._hops.shape[1]] = self._hops
            self._hops = hops
            for name in ("_rate", "_remaining", "_updated", "_finish"):
                old = getattr(self, name)
                new = np.full(n, _INF)
                new[:old.size] = old
                setattr(self, name, new)
            inarr = np.zeros(n, dtype=bool)
            inarr[:self._inarr.size] = self._inarr
            self._inarr = inarr
            rno = np.zeros(n, dtype=np.int64)
            rno[:self._rno.size] = self._rno
            self._rno = rno
            q = np.zeros(n, dtype=np.int64)
            q[:self._q.size] = self._q
            self._q = q
        if s >= self._rk.shape[1] or len(flow.rkeys) > self._rk.shape[0]:
            rk = np.full((max(len(flow.rkeys), self._rk.shape[0], 1), self._rate.size), self._rdummy, dtype=np.intp)
            rk[:self._rk.shape[0], :self._rk.shape[1]] = self._rk
            self._rk = rk
        hops = self._hops
        for i, l in enumerate(ids):
            hops[i, s] = l
        # never rated: nan, unequal to any rate, so that the first rating counts
        self._rate[s] = flow.rate if flow.version else math.nan
        self._remaining[s] = flow.remaining
        self._updated[s] = flow.updated_s
        self._finish[s] = _INF
        self._q[s] = flow.q
        for i, k in enumerate(flow.rkeys):
            self._rk[i, s] = k
        self._slot_flow[s] = flow
        flow.slot = s
        flow.net = self
        no = self._route_no.get(ids)
        if no is None:
            no = self._route_no[ids] = len(self._route_no)
        self._rno[s] = no
        self._hi = max(self._hi, s + 1)

    def _free_slot(self, s: int) -> None:
        """Give a finished flow's column back: no links, no finish time."""
        flow = self._slot_flow[s]
        hops, pad = self._hops, self._pad
        for i in range(len(flow.link_ids)):
            hops[i, s] = pad
        self._q[s] = 0
        self._rk[:, s] = self._rdummy
        if flow.in_arrays:
            flow._r = float(self._rate[s])  # its rate, as the column held it
            flow.in_arrays = False
            self._inarr[s] = False
            self._finish[s] = _INF
            self._in_arrays -= 1
        flow.slot = -1
        self._slot_flow[s] = None
        heapq.heappush(self._free, s)
        while self._hi and self._slot_flow[self._hi - 1] is None:  # scans stop at the last in use
            self._hi -= 1

    @property
    def active_flows(self) -> int:
        return self._members

    def flows_in_flight(self) -> list[Flow]:
        """The flows sending now (each with its current ``rate`` in bytes/s and ``links``); a
        flow class's members each as a flow of their own (with the class's rate)."""
        out = []
        for f in self._flows:
            if f.members is None:
                out.append(f)
                continue
            for src, dst, path, ids, seq in f.members:
                out.append(Flow(src, dst, f.size, list(zip(path, path[1:])), f.latency_s, f.tag, f.start_s, f.done,
                                rate=f.rate, seq=seq, route=path, link_ids=ids, remaining=f.remaining,
                                updated_s=f.updated_s))
        return out

    # ------------------------------------------------------------------ capacity changes
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

    # ------------------------------------------------------------------ rates
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

    def _large_component(self) -> np.ndarray:
        """Slots of the active flows connected, through shared directed links, to a dirty flow
        or link (ascending): breadth-first over the hop table, one level per pass.

        Most passes are saved by remembering the last component found when it is known to
        be connected (``_last_links``: its links then). When a seed is one of those links,
        its flows still active all belong to the new component: all flows on its links were
        its own (a flush that touches those links replaces or forgets it), and a flow of it
        that finished since left every link it shared with another one dirty -- a seed now,
        as finishes are flushed at once -- so each remaining piece touches a seed.
        """
        lf = self._link_flows
        self._sync_arrays()
        flows = [f for f in self._dirty_flows if f in self._flows]
        links = [l for l in self._dirty_links if lf[l]]  # a link left without flows reaches none
        reached = np.zeros(self._cap.size, dtype=bool)
        reached[[l for f in flows for l in f.link_ids] + links] = True
        last = self._last_links
        if last is not None and (reached & last).any():
            reached |= last
        hops = self._hops[:, :self._hi]
        members = reached.take(hops).any(axis=0)
        n = np.count_nonzero(members)
        while n:
            reached[hops.compress(members, axis=1)] = True
            reached[self._pad] = False  # padding is no link: it must not join every short route
            members = reached.take(hops).any(axis=0)
            m = np.count_nonzero(members)
            if m == n:
                break
            n = m
        self._last_links = None
        if self._seeds_connected(flows, links):
            last = self._last_links = np.zeros(self._cap.size, dtype=bool)
            last[hops.compress(members, axis=1)] = True
            last[self._pad] = False
        return members.nonzero()[0]

    def _seeds_connected(self, flows: list[Flow], links: list[int]) -> bool:
        """Whether the dirty flows and links (with flows) are surely in one component: each
        crosses, or has a flow that crosses, one hub link. Every piece of the component
        found from them holds one of them, so then it is connected. (False: not known.)"""
        if not flows and not links:
            return False
        lf = self._link_flows
        hub = flows[0].link_ids[0] if flows else max(links, key=lambda l: len(lf[l]))
        if any(hub not in f.link_ids for f in flows):
            return False
        for l in links:
            if l != hub and not any(hub in f.link_ids for f in islice(lf[l], 8)):
                return False
        return True

    def _forget_last(self, comp: list[Flow]) -> None:
        """A small component on a link of the last large one: that one is stale now."""
        last = self._last_links
        if last is not None and last[[l for f in comp for l in f.link_ids]].any():
            self._last_links = None

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
            got = _heap_filling(self._link_flows, routes, left, count, heap)
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

    def _symmetric(self, f: Flow) -> bool:
        """A class no plain flow has touched whose links, hop by hop, have one fingerprint of
        class users and one capacity (then every link of a hop has the same users)."""
        if f.touched:
            return False
        if f.sym_epoch == self._epoch:
            return f.sym
        fp, cap = self._fp, self._cap
        ok = True
        for a in f.hop_arr:
            if a.size > 1:
                v = fp[a]
                c = cap[a]
                if not ((v == v[0]).all() and (c == c[0]).all()):
                    ok = False
                    break
        f.sym_epoch, f.sym = self._epoch, ok
        return ok

    def _class_rates(self, comp: list[Flow]) -> tuple[list[Flow], dict | None]:
        """Max-min fair rates of a component that holds flow classes: (the component, with
        the classes that are no longer symmetric split into their members; {entity: rate}).

        Links fall into cells by signature (capacity, users with multiplicities); a class is
        symmetric when each of its hops lies in one cell. Then progressive filling runs over
        the cells: a cell's share is its per-link capacity left over its per-link count of
        unfrozen members; freezing an entity takes its share from each cell it crosses once
        per member crossing one of that cell's links (the per-flow loop's subtractions, one
        rounding each)."""
        lf = self._link_flows
        cap = self._caps
        sigs: dict[int, tuple] = {}

        def sig(l: int) -> tuple:
            got = sigs.get(l)
            if got is None:
                got = sigs[l] = (cap[l], frozenset(lf[l].items()))
            return got

        while True:
            broken = []
            for f in comp:
                if f.members is None or self._symmetric(f):
                    continue
                # touched by a plain flow (or fingerprints differ): compare its links' users
                if f.touched and all(len({sig(l) for l in hop}) == 1 for hop in f.hops):
                    continue
                broken.append(f)
            if not broken:
                break
            gone = set(broken)
            comp = [f for f in comp if f not in gone]
            for f in broken:
                comp += self._split(f)
            sigs.clear()
            if not any(f.members is not None for f in comp):
                return comp, None  # plain flows only: the per-link filling rates them
        cells: dict[tuple, int] = {}
        rep_link: list = []  # a link of each cell (the lowest id: the heap's tie-break)
        crossing: dict = {}  # entity -> [(a link of it, the lowest id of the links it stands for)]
        for f in comp:
            if f.members is None:
                crossing[f] = [(l, l) for l in f.link_ids]
            else:
                crossing[f] = [(h[0], m) for h, m in zip(f.hops, f.hop_min)]
        cell_of: dict[int, int] = {}
        for f, pairs in crossing.items():
            for l, low in pairs:
                c = cell_of.get(l)
                if c is None:
                    key = sig(l)
                    c = cells.get(key)
                    if c is None:
                        c = cells[key] = len(cells)
                        rep_link.append(low)
                    cell_of[l] = c
                if low < rep_link[c]:
                    rep_link[c] = low
        n_cells = len(cells)
        first_link = [None] * n_cells  # a link of the cell whose users are the cell's users
        for l, c in cell_of.items():
            if first_link[c] is None:
                first_link[c] = l
        left: dict[int, float] = {}
        count: dict[int, int] = {}
        users: dict[int, list] = {}
        routes: dict = {}
        for f, pairs in crossing.items():
            deg = f.degree
            crossed: dict[int, int] = {}
            for l, _ in pairs:
                c = cell_of[l]
                if cap[l] == _INF or c in crossed:
                    continue
                crossed[c] = deg[l] if deg is not None else 1
            routes[f] = crossed
        for c in range(n_cells):
            l = first_link[c]
            if cap[l] == _INF:
                continue
            n = 0
            for g, d in lf[l].items():
                n += 1 if d is None else d
            left[c] = cap[l]
            count[c] = n
            users[c] = list(lf[l])
        heap = [(left[c] / n, rep_link[c], c) for c, n in count.items()]
        heapq.heapify(heap)
        rate: dict = {}
        while heap:
            share, l, c = heapq.heappop(heap)
            n = count[c]
            if n == 0:
                continue
            current = left[c] / n
            if current != share:
                heapq.heappush(heap, (current, l, c))
                continue
            r = share if share > 0 else 0.0
            for f in users[c]:
                if f in rate:
                    continue
                rate[f] = r
                for m, d in routes[f].items():
                    if m in count:
                        x = left[m]
                        for _ in range(d):
                            x -= share
                        left[m] = x
                        count[m] -= d
        return comp, rate

    def _solve_large(self, slots: np.ndarray) -> float:
        """``_solve_small`` over the flow arrays, for many flows; the same floats."""
        self.rate_recomputations += 1
        self.rate_recomputed_flows += slots.size
        now = self.env.now
        hops = self._hops.take(slots, axis=1)
        if self._inf_links:  # an infinite-capacity link never limits a flow: leave it out
            hops = np.where(self._cap.take(hops) < _INF, hops, self._pad)
        if ROUTE_BUNDLES:
            # Flows over one route cross the same links: progressive filling freezes them in
            # one pop at one share, so one column with their count stands for them all.
            rno = self._rno.take(slots)
            count = np.bincount(rno, minlength=len(self._route_no))
            routes = count.nonzero()[0]  # in route order
            self.rate_recomputed_columns += routes.size
            if routes.size < slots.size:
                column = np.empty(count.size, dtype=np.intp)
                column[routes] = np.arange(routes.size)
                first = np.empty(routes.size, dtype=np.intp)  # a flow of each route (any: one hop column)
                first[column.take(rno)] = np.arange(slots.size)
                rate = _progressive_filling(hops.take(first, axis=1), self._cap,
                                            count.take(routes)).take(column.take(rno))
            else:
                rate = _progressive_filling(hops, self._cap)
        else:
            self.rate_recomputed_columns += slots.size
            rate = _progressive_filling(hops, self._cap)
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

    def _log_moves(self, idx: np.ndarray, rate: np.ndarray) -> None:
        """The rate log's side of ``_solve_large``: flows in slots ``idx`` now send at ``rate``."""
        nq = np.where((rate > 0) & (rate < _INF), np.rint(rate * _Q), 0.0).astype(np.int64)
        d = nq - self._q.take(idx)
        moved = d != 0
        if moved.any():
            self._q[idx] = nq
            keys = self._rk.take(idx.compress(moved), axis=1)
            d = d.compress(moved)
            touched, tot = self._rtouched, self._rtot
            n_keys = len(tot)
            if keys.size < 2**20 and int(np.abs(d).max()) < 2**52:
                # Exact integer sums by bincount: each move split into 26-bit halves, whose
                # sums (below 2**20 terms of under 2**27 each) are exact in floats.
                flat = keys.ravel()
                dd = np.broadcast_to(d, keys.shape).ravel()
                lo = np.bincount(flat, weights=dd & 0x3FFFFFF, minlength=n_keys)
                hi = np.bincount(flat, weights=dd >> 26, minlength=n_keys)
                for k in np.bincount(flat, minlength=n_keys).nonzero()[0].tolist():
                    tot[k] += (int(hi[k]) << 26) + int(lo[k])
                    touched[k] = None
                return
            scratch = self._rscratch
            np.add.at(scratch, keys, np.broadcast_to(d, keys.shape))
            for k in np.unique(keys).tolist():
                tot[k] += int(scratch[k])
                scratch[k] = 0
                touched[k] = None

    # ------------------------------------------------------------------ finishing
    def _arm(self, t: float | None = None) -> None:
        """Make sure a timer waits for the earliest finish time.

        The armed timer is never later than any finish time (it is set to the earliest,
        and flows only leave or get new finish times), so after a recomputation the
        earliest of the finish times that changed (``t``) decides; after the timer fired,
        all are looked at (``t`` None).
        """
        if t is None:
            heap = self._finish_heap
            while heap and heap[0][2] != heap[0][3].version:
                heapq.heappop(heap)
            t = heap[0][0] if heap else _INF
            if self._in_arrays:
                t = min(t, float(self._finish.min()))  # a free slot's is inf
        if t < self._timer_at:
            self._timer_at = t
            timer = self.env.timeout(max(t - self.env.now, 0.0))
            timer.callbacks.append(self._on_timer)
            self._timer_event = timer

    def _on_timer(self, event: simpy.Event) -> None:
        now = self.env.now
        # Compare the event, not the time: now + (t - now) can round to just below t, and a
        # timer that fired without clearing _timer_at would stop _arm from ever re-arming.
        fired = event is self._timer_event
        if fired:
            self._timer_at = _INF
            self._timer_event = None
        # Flows due within a relative 1e-12 of now finish together: equal flows whose
        # finish times differ only by rounding cost one recomputation, not several.
        horizon = now + 1e-12 * max(1.0, abs(now))
        due: list[tuple[float, int, Flow]] = []
        heap = self._finish_heap
        while heap and heap[0][0] <= horizon:
            t, seq, version, f = heapq.heappop(heap)
            if version == f.version:
                due.append((t, seq, f))
        if self._in_arrays:
            finish = self._finish[:self._hi]
            slots = (finish <= horizon).nonzero()[0]
            if slots.size:
                flows = self._slot_flow
                due.extend((t, flows[s].seq, flows[s]) for s, t in zip(slots.tolist(), finish.take(slots).tolist()))
                due.sort()  # in order of finish time, then of start
        classes = self._classes and any(f.members is not None for _, _, f in due)
        self._epoch += 1
        for _, _, f in due:
            # A symmetric class leaves the same users on every link of a hop: one link per hop
            # reaches them all (asked while its fingerprint is still on the links).
            reps = {h[0] for h in f.hops} if f.members is not None and self._symmetric(f) else None
            self._leave(f, reps)
            if not classes:
                self._deliver(f)
        if classes:
            self._deliver_all(due)
        if self._dirty_flows or self._dirty_links:
            self._flush(timer_fired=fired)
        else:
            if fired:
                self._arm()
            self._log_rates()

    # ------------------------------------------------------------------ the rate log
    def _log_rates(self) -> None:
        """Log the totals of the keys whose flows changed rate, where they moved."""
        if not self._rtouched:
            return
        now = self.env.now
        logged, log, tot, names = self._logged, self._log, self._rtot, self._key_name
        for k in self._rtouched:
            name = names.get(k)
            if name is None:  # the padding key
                continue
            total = tot[k] / _Q
            if logged.get(name, 0.0) != total:
                logged[name] = total
                log.append((now, name, total))
        self._rtouched = {}

    def rate_timeline(self) -> dict:
        """The logged rates as step functions, in ``sim.metrics.tables.replay_rates``' form:
        ``{"links": {link: (times, rates)}, "pairs": {(src_region, dst_region): (times,
        rates)}, "error": None}`` (bytes/s; ``rates[i]`` on [times[i], times[i+1]); one
        time axis, 0 and then every instant at which some sum changed; links that never
        carried anything left out); None when the log was off (``keep_rate_log``)."""
        if not self._log_on:
            return None
        links = sorted(self._wan_links.values(), key=lambda l: self._link_id[l])
        col = {l: i for i, l in enumerate(links)}
        times: list[float] = [0.0]
        link_rows: list[list[float]] = [[0.0] * len(links)]
        pair_rows: list[dict] = [{}]
        cur_links = [0.0] * len(links)
        cur_pairs: dict = {}
        log = self._log
        i = 0
        while i < len(log):
            now = log[i][0]
            while i < len(log) and log[i][0] == now:
                _, key, value = log[i]
                if key[0] == "pair" and len(key) == 3 and key not in col:
                    if value:
                        cur_pairs[key[1:]] = value
                    else:
                        cur_pairs.pop(key[1:], None)
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
        by_pair = {k: (t, np.array([pr.get(k, 0.0) for pr in pair_rows])) for k in pairs}
        return {"links": by_link, "pairs": by_pair, "error": None}

    def _deliver_all(self, due: list) -> None:
        """Deliver due flows and flow classes' members in the order their own flows would be
        (finish time, then start): plain flows one by one, and each run of class members with
        one latency through one timer (back-to-back timers at one instant run back to back,
        so the records, the bytes and the done events come in the same order)."""
        link_bytes, sent, received = self.link_bytes, self.sent_bytes, self.received_bytes
        by_id = self._links_by_id
        if len(due) == 1 and due[0][2].members is not None:  # one class (a ring's LAN hops): members in start order
            f = due[0][2]
            size = f.size
            for src, dst, path, ids, seq in f.members:
                for l in ids:
                    link_bytes[by_id[l]] += size
                sent[src] += size
                received[dst] += size
            self._landing[f] = None  # (landing until its last member is in: cancel finds it here)
            self._arrive_later([(f, m) for m in f.members], f.latency_s)
            return
        items = []
        for t, _, f in due:
            if f.members is None:
                items.append((t, f.seq, f, None))
            else:
                self._landing[f] = None
                items.extend((t, m[4], f, m) for m in f.members)
        items.sort(key=_time_then_start)
        run: list = []
        run_latency = None
        for _, _, f, m in items:
            if m is None:
                if run:
                    self._arrive_later(run, run_latency)
                    run = []
                self._deliver(f)
                continue
            src, dst, path, ids, seq = m
            size = f.size
            for l in ids:
                link_bytes[by_id[l]] += size
            sent[src] += size
            received[dst] += size
            if run and f.latency_s != run_latency:
                self._arrive_later(run, run_latency)
                run = []
            run_latency = f.latency_s
            run.append((f, m))
        if run:
            self._arrive_later(run, run_latency)

    def _route_text(self, path: list[str]) -> str:
        """A route as its transfer records write it (``a>b>c``), joined once per route list (the
        route cache's lists are shared by every flow over that route)."""
        hit = self._route_texts.get(id(path))
        if hit is not None and hit[0] is path:
            return hit[1]
        if len(self._route_texts) > 65536:  # keeps the lists alive: bounded
            self._route_texts.clear()
        text = ">".join(path)
        self._route_texts[id(path)] = (path, text)
        return text

    def _arrive_later(self, run: list, latency_s: float) -> None:
        """Class members whose last byte left now arrive ``latency_s`` later: their records,
        and each class's done event once its last member is in."""
        def arrive(_event: simpy.Event) -> None:
            now = self.env.now
            transfers = self.recorder.transfers
            text = self._route_text
            for f, (src, dst, path, ids, seq) in run:
                if f.cancelled:
                    continue
                transfers.append(Transfer(src, dst, f.size, f.start_s, now, f.tag, text(path)))
                f.arrived += 1
                if f.arrived == len(f.members):
                    del self._landing[f]
                    f.done.succeed(f)

        self.env.timeout(latency_s).callbacks.append(arrive)

    def _deliver(self, flow: Flow) -> None:
        """The last byte has left: account its bytes now, deliver it one latency later."""
        flow.remaining = 0.0
        flow.rate = 0.0
        for l in flow.links:
            self.link_bytes[l] += flow.size
        self.sent_bytes[flow.src] += flow.size
        self.received_bytes[flow.dst] += flow.size
        self._landing[flow] = None

        def arrive(_event: simpy.Event) -> None:
            if flow.cancelled:
                return
            del self._landing[flow]
            self.recorder.transfers.append(Transfer(
                flow.src, flow.dst, flow.size, flow.start_s, self.env.now, flow.tag, ">".join(flow.route)))
            owner = flow.owner
            if owner is None:
                flow.done.succeed(flow)
            else:  # a member split off a class: the class is done with its last member
                owner.arrived += 1
                if owner.arrived == len(owner.members):
                    owner.done.succeed(owner)

        def send_last_byte(_event: simpy.Event | None = None) -> None:
            self.env.timeout(flow.latency_s).callbacks.append(arrive)

        ready = flow.ready
        if ready is not None and ready.callbacks is not None:  # not processed yet: wait for it
            ready.callbacks.append(send_last_byte)
        else:
            send_last_byte()

    def _leave(self, f: Flow, reps: set | None = None) -> None:
        """``f`` leaves the network's books (it finished, or was called off): the class and member
        counts, its rate-log counts and link fingerprints, its links' users (the links it shared
        are marked for re-rating; with ``reps``, a symmetric class's one link per hop) and its slot."""
        del self._flows[f]
        if f.members is not None:
            self._classes -= 1
            self._members -= len(f.members)
            if f.q:
                self._count_rate(f, -f.q)
            self._fp[f.fp_ids] -= f.fp_add
        else:
            self._members -= 1
            pu = self._plain_users
            for l in f.link_ids:
                pu[l] -= 1
            q = int(self._q[f.slot]) if f.in_arrays else f.q
            if q:
                self._count_rate(f, -q)
        f.version += 1
        self._unslotted.pop(f, None)
        self._unsynced.pop(f, None)
        lf = self._link_flows
        for l in f.link_ids:
            users = lf[l]
            del users[f]
            if users and (reps is None or l in reps):
                self._dirty_links[l] = None
        if f.slot >= 0:
            self._free_slot(f.slot)

    # ------------------------------------------------------------------ calling flows off
    def cancel(self, *handles: simpy.Event) -> float:
        """Call off, now, the flows behind ``handles`` (events that ``transfer`` or
        ``transfer_group`` returned; a class's event stands for all its members); returns the
        bytes they had moved (summed over members).

        A flow still sending leaves its links at once (the flows that shared them are re-rated
        in this instant's recomputation, as when a flow finishes); one whose last byte has left
        but has not arrived (route latency, or a ``ready`` it waits for) stops there. Either
        way it is never delivered: its event never fires. The bytes it moved stay counted on
        its links and at both ends (``link_bytes``, ``sent_bytes``, ``received_bytes``: the
        fluid model has no bytes in the pipe to lose) and it is recorded as a ``Transfer`` of
        those bytes that ends now (none when it had moved nothing). Handles whose flows have
        arrived or were called off already are ignored. Cost: one pass over the active and
        landing flows, whatever the number of handles.
        """
        want = set(handles)
        if not want:
            return 0.0
        now = self.env.now
        transfers = self.recorder.transfers
        total = 0.0
        hit = [f for f in self._flows if f.done in want]
        if hit:
            self._epoch += 1  # links lose users: earlier symmetry answers no longer hold
        for f in hit:
            # bytes each member still had to send, as of now
            if f.in_arrays:
                s_ = f.slot
                rate, left, since = float(self._rate[s_]), float(self._remaining[s_]), float(self._updated[s_])
            else:
                rate, left, since = f.rate, f.remaining, f.updated_s
            if 0 < rate < _INF and now > since:
                left -= rate * (now - since)
            elif rate == _INF:
                left = 0.0
            moved = f.size - min(max(left, 0.0), f.size)
            if f.members is not None:
                ends = [(m[0], m[1], m[2], m[3]) for m in f.members]
            else:
                ends = [(f.src, f.dst, f.route, f.link_ids)]
            self._leave(f)  # the bookkeeping of a finish (_on_timer), without the delivery
            f.cancelled = True
            self._dirty_flows.pop(f, None)
            self.flows_cancelled += len(ends)
            if moved > 0:
                by_id = self._links_by_id
                for src, dst, path, ids in ends:
                    for l in ids:
                        self.link_bytes[by_id[l]] += moved
                    self.sent_bytes[src] += moved
                    self.received_bytes[dst] += moved
                    transfers.append(Transfer(src, dst, moved, f.start_s, now, f.tag, ">".join(path)))
                total += moved * len(ends)
        for f in [f for f in self._landing if f.done in want]:
            del self._landing[f]
            f.cancelled = True
            # its bytes were counted when its last byte left; the members yet to arrive end now
            left = [(f.src, f.dst, f.route)] if f.members is None else [m[:3] for m in f.members[f.arrived:]]
            self.flows_cancelled += len(left)
            for src, dst, path in left:
                transfers.append(Transfer(src, dst, f.size, f.start_s, now, f.tag, ">".join(path)))
            total += f.size * len(left)
        if hit:
            self._request_flush()
            self._log_rates()
        return total


# ---------------------------------------------------------------------- progressive filling
def _time_then_start(item: tuple) -> tuple:
    return item[0], item[1]


def _heap_filling(users, routes, left: dict[int, float], count: dict[int, int],
                  heap: list[tuple[float, int]]) -> dict:
    """Progressive filling with a heap of per-link fair shares: {flow: rate}.

    ``left`` and ``count`` hold, for every link that still has unfrozen flows, the capacity
    not yet given away and the number of those flows; ``heap`` a ``(share, id)`` entry per
    such link; ``users[id]`` the flows on a link (every flow on it is being rated) and
    ``routes[flow]`` the link ids of a flow (ids not in ``count`` are ignored). Pop the
    smallest entry: if its share is stale (the link lost flows since it was pushed) push
    the current one, else freeze its unfrozen flows at that share (0 if not positive) and
    take the share once per frozen flow from every link they cross. Shares only grow as
    flows are frozen, so pushing stale entries lazily keeps the work at O((F·h + L) log L).
    A flow left out of the result has no link in ``count``: its rate is inf.
    """
    rate: dict = {}
    while heap:
        share, l = heapq.heappop(heap)
        n = count[l]
        if n == 0:
            continue
        current = left[l] / n
        if current != share:  # stale: l lost flows frozen elsewhere since it was pushed
            heapq.heappush(heap, (current, l))
            continue
        r = share if share > 0 else 0.0
        for f in users[l]:
            if f in rate:
                continue
            rate[f] = r
            for m in routes[f]:
                if m in count:
                    left[m] -= share
                    count[m] -= 1
    return rate


def _progressive_filling(hops: np.ndarray, cap: np.ndarray, mult: np.ndarray | None = None) -> np.ndarray:
    """``_heap_filling`` for many flows, vectorized; the same floats.

    ``mult`` (optional): column j stands for ``mult[j]`` flows over the same links (a
    bundle); the result is each column's rate, the one each of its flows gets when they are
    columns of their own (they are frozen in one pop, at one share, and each takes that
    share from every link it crosses: the bundle takes it ``mult[j]`` times, one rounding
    each, in the same pop order).

    ``hops`` is ``[max hops, k]``: the finite-capacity links of each of k flows by id,
    padded with the last id (``cap[-1]``, a placeholder never counted); ``cap`` is bytes/s
    by link id. Link ids are in the order of the link tuples, so ties between equal shares
    fall as they did when the heap's entries held the tuples. ``order`` holds the links
    with unfrozen flows as the heap would pop them, by (entry, id). Its leading run of
    links that no unfrozen flow crosses twice is popped in one pass -- freezing one of them
    cannot change another's share -- with the shares taken from each link in pop order
    (``np.subtract.at`` applies repeated ids in order, one rounding each). A stale link at
    the front gets its current share (with the next ones, as long as the heap would pop
    them before any re-pushed one) and the order is sorted again. Once few flows are left
    unfrozen, the heap itself finishes, started from the same entries.
    """
    width, k = hops.shape
    pad = cap.size - 1
    if mult is None:
        count = np.bincount(hops.ravel(), minlength=cap.size)
    else:  # counts are integers below 2**53: exact as floats
        count = np.bincount(hops.ravel(), weights=np.tile(mult, width), minlength=cap.size).astype(np.intp)
    count[pad] = 0
    left = cap.copy()
    live = (count > 0).nonzero()[0]
    share = np.empty(cap.size)  # each live link's entry in the heap
    share[live] = entries = cap.take(live) / count.take(live)
    order = live.take(np.argsort(entries, kind="stable"))
    rate = np.full(k, _INF)
    open_ = None  # the flows not frozen yet (None: all)
    n_open = k if mult is None else int(mult.sum())  # flows not frozen yet (a bundle's each)
    pos = np.empty(cap.size, dtype=np.intp)
    while order.size:
        if n_open <= _SMALL:
            flows = np.arange(k) if open_ is None else open_.nonzero()[0]
            routes = hops.take(flows, axis=1).T.tolist()
            if mult is not None:  # the heap rates flows: a bundle's flows each (its first one's rate is its own)
                per = mult.take(flows).tolist()
                at = list(accumulate(per, initial=0))[:-1]
                routes = [r for r, c in zip(routes, per) for _ in range(c)]
            ids = order.tolist()
            users: dict[int, list[int]] = {l: [] for l in ids}
            for j, links in enumerate(routes):
                for l in links:
                    if l in users:
                        users[l].append(j)
            heap = list(zip(share.take(order).tolist(), ids))  # sorted, so already a heap
            got = _heap_filling(users, routes, dict(zip(ids, left.take(order).tolist())),
                                dict(zip(ids, count.take(order).tolist())), heap)
            if mult is not None:
                rate[flows] = [got.get(j, _INF) for j in at]
            else:
                rate[flows] = [got.get(j, _INF) for j in range(len(routes))]
            break
        pushed = share.take(order)
        n = order.size
        stop = n
        if open_ is None:  # the first pass: every entry is current
            flows = None
        else:
            current = left.take(order) / count.take(order)
            stale = pushed != current
            if stale[0]:
                # Re-push the leading stale links, as many as the heap pops before it pops a
                # re-pushed one again (each next entry below every re-pushed current share).
                run = n if stale.all() else int(stale.argmin())
                m = 1
                if run > 1:
                    below = pushed[1:run] < np.minimum.accumulate(current[:run - 1])
                    m = run if below.all() else 1 + int(below.argmin())
                share[order[:m]] = current[:m]
                order = order.take(np.lexsort((order, share.take(order))))
                continue
            if stale.any():
                stop = int(stale.argmax())
            flows = open_.nonzero()[0]
        pos.fill(n)
        pos[order] = np.arange(n)
        p = pos.take(hops if flows is None else hops.take(flows, axis=1))  # pop positions (n: none)
        first = p.min(axis=0)
        if width > 1:  # the first link a freezing in this pass changes: a second link of a flow
            stop = min(stop, int(np.where(p == first, n, p).min()))
        frozen = (first < stop).nonzero()[0]
        first = first.take(frozen)
        if flows is not None:
            frozen = flows.take(frozen)
        s = pushed.take(first)
        rate[frozen] = np.where(s > 0, s, 0.0)
        if open_ is None:
            open_ = np.ones(k, dtype=bool)
        open_[frozen] = False
        n_open -= frozen.size if mult is None else int(mult.take(frozen).sum())
        crossed = hops.take(frozen, axis=1)
        if mult is None:
            count -= np.bincount(crossed.ravel(), minlength=cap.size)
        else:
            count -= np.bincount(crossed.ravel(), weights=np.tile(mult.take(frozen), width),
                                 minlength=cap.size).astype(np.intp)
        count[pad] = 0
        # Take each frozen flow's share from its links that keep open flows (the others are
        # done with), in pop order; flows popped together have the same share.
        hop, j = np.nonzero(count.take(crossed) > 0)
        if j.size:
            by_pop = np.argsort(first.take(j), kind="stable")
            hop, j = hop.take(by_pop), j.take(by_pop)
            if mult is None:
                np.subtract.at(left, crossed[hop, j], s.take(j))
            else:  # a bundle takes its share once per flow
                times = mult.take(frozen).take(j)
                np.subtract.at(left, np.repeat(crossed[hop, j], times), np.repeat(s.take(j), times))
        order = order.compress(count.take(order) > 0)
    return rate


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
    """Bandwidth (Gbit/s) of an edge at time t: 0 in an outage, else the series' step value.
    (One lookup by scanning; a ``LinkTimeline`` answers many in O(log n) each.)"""
    return LinkTimeline(d).bandwidth_at(t)


class LinkTimeline:
    """An edge's bandwidth over time, looked up in O(log n): its outages as a sorted list of
    disjoint windows (their union) and its bandwidth series' times, both searched by bisection.

    The edge's ``outages`` list may grow while the run goes on (random flaps append to it):
    the windows appended since the last lookup are merged in then, each with one bisection
    (and a list splice), so n flaps cost O(n log n) lookups in all, not the O(n²) of scanning
    every window at every flap. A list replaced by another one is read again in full.
    """

    def __init__(self, d: dict):
        self.d = d
        self._starts: list[float] = []  # disjoint, sorted windows [starts[i], ends[i])
        self._ends: list[float] = []
        self._outages = None  # the list merged so far, and how much of it
        self._merged = 0
        self._series = None
        self._times: list[float] = []
        self._values: list[float] = []

    def _sync(self) -> None:
        outages = self.d.get("outages") or []
        if outages is not self._outages:
            self._outages, self._merged = outages, 0
            self._starts, self._ends = [], []
        for start, end in outages[self._merged:]:
            self._add(start, end)
        self._merged = len(outages)
        series = self.d.get("bandwidth_series") or []
        if series is not self._series or len(series) != len(self._times):
            self._series = series
            self._times = [t for t, _ in series]
            self._values = [bw for _, bw in series]

    def _add(self, start: float, end: float) -> None:
        """Merge [start, end) into the disjoint windows (touching or overlapping ones join)."""
        starts, ends = self._starts, self._ends
        i = bisect.bisect_left(ends, start)  # the first window that ends at or after start
        j = bisect.bisect_right(starts, end)  # windows from i to j - 1 meet [start, end)
        if i < j:
            start, end = min(start, starts[i]), max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]

    def down_at(self, t: float) -> bool:
        """Whether t lies in an outage (``start_s <= t < end_s`` of one of them)."""
        self._sync()
        i = bisect.bisect_right(self._starts, t) - 1
        return i >= 0 and t < self._ends[i]

    def bandwidth_at(self, t: float) -> float:
        """Bandwidth (Gbit/s) at time t: 0 in an outage, else the series' step value."""
        if self.down_at(t):
            return 0.0
        i = bisect.bisect_right(self._times, t) - 1
        return self._values[i] if i >= 0 else self.d["bandwidth_gbps"]


def build_graph(topology, base_dir: str | Path | None = None) -> tuple[nx.Graph, list[str]]:
    """Graph of a scenario topology: one switch node per region (named by the region),
    one node per worker (``region/i``) joined to its switch by the intra-region link,
    and WAN links between switches. Returns the graph and worker node names in order.

    A WAN link's ``bandwidth_csv`` (read now by ``Link.bandwidth_series``; a relative path
    is taken relative to ``base_dir``, else the working directory -- ``load_scenario`` has
    already made it absolute) and ``outages`` become the edge attributes
    ``bandwidth_series`` and ``outages`` that ``Network`` plays back.

    The topology's parameter servers (``topology.servers``) are nodes of kind ``server``
    (``add_servers``).
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
    add_servers(g, getattr(topology, "servers", ()), intra)
    return g, workers


def add_servers(graph: nx.Graph, servers, intra) -> None:
    """Parameter servers (objects with name, region, bandwidth_gbps) that are not in ``graph``
    yet (the topology's, and a method's created ones: ``Algorithm.server_plan``): nodes of kind
    ``server`` joined to their region's switch by their NIC (``bandwidth_gbps``; None: ``intra``,
    the intra-region link's), with the intra-region latency."""
    for s in servers:
        if s.name in graph:
            continue
        graph.add_node(s.name, kind="server", region=s.region)
        bw = intra.bandwidth_gbps if s.bandwidth_gbps is None else s.bandwidth_gbps
        graph.add_edge(s.name, s.region, bandwidth_gbps=bw, latency_s=intra.latency_s, kind="lan")
