"""The network's flow table: its flows' state as numpy arrays, one column (slot) per flow
(route as link ids, rate, progress, finish time) and a route table (a column per distinct
route), the components of many flows found over them, and the flows in flight as a list
(``flows_in_flight``). ``FlowTable`` is a part of ``sim.engine.network.Network`` (a base class of it,
over the same state): the network rates large components over these arrays
(``Network._solve_large``).
"""

from __future__ import annotations

import heapq
import math
from itertools import islice

import numpy as np

from sim.engine import compiled
from sim.engine.flow import Flow
from sim.engine.maxmin import entity_filling

_INF = math.inf
# ``_reduced_rates`` rates at most this many entities in plain Python (more: the numpy filling).
_MAX_ENTITIES = 96


class FlowTable:
    """Slots of the flow arrays and the components found over them (see ``Network``)."""

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

    def _sync_arrays(self) -> None:
        """Before a large recomputation: every active flow has a column, up to date."""
        for f in self._unslotted:
            self._take_slot(f)
        self._unslotted = {}
        rate, remaining, updated = self._rate, self._remaining, self._updated
        q = self._q
        mixed, rno = self._rmixed, self._rno
        for f in self._unsynced:
            s = f.slot
            mixed[rno[s]] = True
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
            for name, fill in (("_rate", _INF), ("_remaining", _INF), ("_updated", _INF), ("_finish", _INF),
                               ("_inarr", False), ("_rno", 0), ("_used", False), ("_q", 0), ("_snext", -1),
                               ("_sprev", -1)):
                old = getattr(self, name)
                new = np.full(n, fill, dtype=old.dtype)  # the new slots' fill, the old slots kept
                new[:old.size] = old
                setattr(self, name, new)
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
            self._new_route(no, ids)
        self._rno[s] = no
        self._route_live[no] += 1
        self._used[s] = True
        self._hi = max(self._hi, s + 1)
        # first in its route's list of slots (the compiled kernel walks a route's flows by it),
        # and its route marked: not all its flows have the rate last given to the route
        head = int(self._rhead[no])
        self._snext[s] = head
        self._sprev[s] = -1
        if head >= 0:
            self._sprev[head] = s
        self._rhead[no] = s
        self._rmixed[no] = True

    def _init_reduced(self, graph, links: list) -> None:
        """Which directed links belong to a leaf node (a worker's or server's own link: only its
        own flows cross it), and the entities of ``_reduced_rates``: per route number, the
        number of its links that are not a leaf's (-1: it has none), and those links by number."""
        self._leaf_link = np.array([graph.degree(u) == 1 or graph.degree(v) == 1 for u, v in links] + [True])
        self._route_red = np.zeros(0, dtype=np.intp)
        self._red_no: dict[tuple[int, ...], int] = {}
        self._red_links: list[tuple[int, ...]] = []
        self._route_ids: list[tuple[int, ...]] = []  # per route number, its link ids
        self.reduced_solves = 0  # large recomputations rated by _reduced_rates (the others: every link)
        self.compiled_solves = 0  # of those, rated by the compiled kernel (sim.engine.compiled)
        # sim.engine.compiled's state for this network: large recomputations seen (it loads numba
        # after AFTER of them), and its tables and scratch, built at its first call.
        self._large_seen = 0
        self._route_rows = self._red_arrays = self._kernel_scratch = None
        # Each route's slots as a list (its first slot, and per slot the next and the one
        # before, -1 ending), the rate the kernel last gave the route's flows, and whether some
        # of its flows may have another (a flow added, synced or rated by numpy since): the
        # kernel walks only the routes whose rate changed or that are marked.
        self._snext = np.zeros(0, dtype=np.int64)
        self._sprev = np.zeros(0, dtype=np.int64)
        self._rhead = np.zeros(0, dtype=np.int64)
        self._rrate = np.zeros(0)
        self._rmixed = np.zeros(0, dtype=bool)

    def _new_route(self, no: int, ids: tuple[int, ...]) -> None:
        """Route number ``no`` (link ids ``ids``) gets its column in the route table, and its
        entity of ``_reduced_rates``."""
        table = self._route_hops
        if no >= table.shape[1] or len(ids) > table.shape[0]:
            n = max(table.shape[1], 64)
            while n <= no:
                n *= 2
            grown = np.full((max(len(ids), table.shape[0]), n), self._pad, dtype=np.intp)
            grown[:table.shape[0], :table.shape[1]] = table
            self._route_hops = table = grown
            for name, fill in (("_route_live", 0), ("_route_red", 0), ("_rhead", -1), ("_rrate", math.nan),
                               ("_rmixed", True)):
                old = getattr(self, name)
                new = np.full(n, fill, dtype=old.dtype)
                new[:old.size] = old
                setattr(self, name, new)
        table[:len(ids), no] = ids
        self._route_ids.extend([()] * (no + 1 - len(self._route_ids)))
        self._route_ids[no] = ids
        key = tuple([l for l in ids if not self._leaf_link[l]])
        red = -1
        if key:
            red = self._red_no.get(key)
            if red is None:
                red = self._red_no[key] = len(self._red_links)
                self._red_links.append(key)
        self._route_red[no] = red

    def _reduced_rates(self, routes: np.ndarray, counts: np.ndarray, route_hops: np.ndarray) -> np.ndarray | None:
        """Max-min rates of the bundles ``routes`` (``counts`` flows each, link ids in the
        columns of ``route_hops``) found over the links that can limit them; None when that
        is not known to give the whole filling's floats (then the caller runs it).

        A leaf's link carries only that node's flows. Leave such links out and rate the rest
        with bundles over the same other links as one entity (``maxmin.entity_filling``).
        If then every left-out link's fair share at the start is above the rates of the flows
        that cross it (by 1e-9 relative; checked against every rate first, then link by link),
        the whole filling never pops one of them before its flows are frozen elsewhere (a
        link's share only grows as flows freeze, and pops come in share order), so it pops
        the same links in the same order with the same subtractions: the same floats, bit
        for bit. The links of a route that crosses only leaves' links (a pair in
        one region) are kept, for every route that crosses them. Many entities, or a left-out
        link that could limit: None.
        """
        red = self._route_red.take(routes)
        kept = None  # leaf links kept: those of routes that cross no other link
        if red.min() >= 0:
            total = np.bincount(red, weights=counts)
            ents = total.nonzero()[0]
            if ents.size > _MAX_ENTITIES:
                return None
            where = np.empty(total.size, dtype=np.intp)
            where[ents] = np.arange(ents.size)
            inv = where.take(red)
            links = [self._red_links[e] for e in ents.tolist()]
            per = total.take(ents).astype(np.int64).tolist()  # integers below 2**53: exact
        else:
            # Routes between leaves of one switch (a pair in a region) keep their links, and
            # every route crossing one of those keeps it too (its flows count there).
            if routes.size > 16 * _MAX_ENTITIES:
                return None
            ids, red_links = self._route_ids, self._red_links
            kept_set = {l for r in routes.compress(red < 0).tolist() for l in ids[r]}
            kept = np.fromiter(kept_set, dtype=np.intp, count=len(kept_set))
            touch = np.isin(route_hops, kept).any(axis=0).tolist()
            keys: dict[tuple, int] = {}
            at = []
            for r, e, t in zip(routes.tolist(), red.tolist(), touch):
                if e < 0:
                    key = ids[r]
                elif t:
                    key = red_links[e] + tuple([l for l in ids[r] if l in kept_set])
                else:
                    key = red_links[e]
                at.append(keys.setdefault(key, len(keys)))
            if len(keys) > _MAX_ENTITIES:
                return None
            inv = np.array(at, dtype=np.intp)
            links = list(keys)
            per = np.bincount(inv, weights=counts).astype(np.int64).tolist()
        rate = np.array(entity_filling(links, per, self._caps)).take(inv)  # per route
        width = route_hops.shape[0]
        n = np.bincount(route_hops.ravel(), weights=np.tile(counts, width), minlength=self._cap.size)
        n[self._pad] = 0
        out = (n > 0) & self._leaf_link
        if kept is not None:
            out[kept] = False
        if out.any():
            share = self._cap[out] / n[out]
            if not share.min() > rate.max() * (1 + 1e-9):
                # Link by link: a left-out link whose share is above the rates of its own
                # flows is never popped before they are frozen (pops come in share order).
                top = np.zeros(self._cap.size)
                np.maximum.at(top, route_hops.ravel(), np.tile(rate, width))
                if not (share > top[out] * (1 + 1e-9)).all():
                    return None
        self.reduced_solves += 1
        return rate

    def _slot_hops(self, slots: np.ndarray) -> np.ndarray:
        """The hop table of the flows in ``slots`` (infinite-capacity links as padding: they never limit)."""
        hops = self._hops.take(slots, axis=1)
        return np.where(self._cap.take(hops) < _INF, hops, self._pad) if self._inf_links else hops

    def _free_slot(self, s: int) -> None:
        """Give a finished flow's column back: no links, no finish time."""
        flow = self._slot_flow[s]
        hops, pad = self._hops, self._pad
        for i in range(len(flow.link_ids)):
            hops[i, s] = pad
        self._q[s] = 0
        self._rk[:, s] = self._rdummy
        no = self._rno[s]
        self._route_live[no] -= 1
        self._used[s] = False
        before, after = int(self._sprev[s]), int(self._snext[s])  # out of its route's list
        if before >= 0:
            self._snext[before] = after
        else:
            self._rhead[no] = after
        if after >= 0:
            self._sprev[after] = before
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

    def _large_component(self) -> np.ndarray:
        """Slots of the active flows connected, through shared directed links, to a dirty flow
        or link (ascending): breadth-first over the routes of the active flows (the route
        table: a column per distinct route, however many flows take it), one level per pass;
        a flow belongs to the component its route belongs to.

        Most passes are saved by remembering the last component found when it is known to
        be connected (``_last_links``: its links then). When a seed is one of those links,
        its flows still active all belong to the new component: all flows on its links were
        its own (a flush that touches those links replaces or forgets it), and a flow of it
        that finished since left every link it shared with another one dirty -- a seed now,
        as finishes are flushed at once -- so each remaining piece touches a seed.
        Once numba's kernels are loaded, ``compiled.component`` searches the same routes.
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
        connected = self._seeds_connected(flows, links)
        got = compiled.find_component(self, reached, connected)
        if got is not None:
            return got
        live = self._route_live.nonzero()[0]
        hops = self._route_hops.take(live, axis=1)
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
        if connected:
            last = self._last_links = np.zeros(self._cap.size, dtype=bool)
            last[hops.compress(members, axis=1)] = True
            last[self._pad] = False
        in_comp = np.zeros(self._route_live.size, dtype=bool)
        in_comp[live.compress(members)] = True
        hi = self._hi
        return (in_comp.take(self._rno[:hi]) & self._used[:hi]).nonzero()[0]

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
