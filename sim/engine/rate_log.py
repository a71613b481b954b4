"""The network's rate log: every directed WAN link's and every ordered region pair's summed
rate, logged whenever it changes, exactly (integer counts of 2^-16 bytes/s), so that the
reports read the run's own rates (``rate_timeline``) instead of replaying the transfers.
``RateLog`` is a part of ``sim.engine.network.Network`` (a base class of it, over the same
state).
"""

from __future__ import annotations

import math
from array import array

import numpy as np

from sim.engine.flow import Flow
from sim.engine.topology import region_name

_INF = math.inf
_Q = 65536.0  # the rate log counts rates in 2^-16 bytes/s (exact integer sums up to ~1.4e14 bytes/s)


class RateLog:
    """The rate-log side of ``Network`` (see the module docstring)."""

    def _init_rate_log(self, graph, links: list) -> None:
        # The rate log (see rate_timeline): every directed WAN link's and every ordered pair
        # of regions' summed rate, one entry whenever it changes. Each flow counts its rate
        # as an integer number of 2^-16 bytes/s (``q``), added to the integer totals of its
        # keys (its WAN links, its region pair) whenever it changes: exact and independent of
        # the order of the changes, O(1) per change (vectorized on the numpy path), and
        # logged once per instant (_log_rates). Keys: a WAN link's id, or one per pair.
        self._wan_links = {self._link_id[l]: l for l in links if graph.edges[l].get("kind") == "wan"}
        self._region_of = {n: d.get("region") or region_name(n) for n, d in graph.nodes(data=True)}
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
        self._logged: dict[int, float] = {}  # key -> rate last logged
        self._log_on = True  # off (keep_rate_log(False)): no keys, no counts, rate_timeline() None
        # The log: one entry per logged change, in three flat columns (time, key, rate): ~24
        # bytes an entry (millions at 1,024 workers) and read by rate_timeline without a copy per entry.
        self._log_t = array("d")
        self._log_k = array("q")
        self._log_r = array("d")

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

    def _log_moves(self, idx: np.ndarray, rate: np.ndarray) -> None:
        """The rate log's side of ``_solve_large``: flows in slots ``idx`` now send at ``rate``."""
        nq = np.where((rate > 0) & (rate < _INF), np.rint(rate * _Q), 0.0).astype(np.int64)
        d = nq - self._q.take(idx)
        moved = d != 0
        if moved.any():
            self._q[idx] = nq
            slots = idx.compress(moved)
            d = d.compress(moved)
            touched, tot = self._rtouched, self._rtot
            n_keys = len(tot)
            if slots.size * self._rk.shape[0] < 2**20 and int(np.abs(d).max()) < 2**52:
                # Exact integer sums by bincount: each move split into 26-bit halves, whose
                # sums (below 2**20 terms of under 2**27 each) are exact in floats. The flows
                # of one route count toward the same keys: their moves are summed per route
                # first, then per key over the routes (one column of keys each).
                rno = self._rno.take(slots)
                n_routes = self._route_live.size
                lo_r = np.bincount(rno, weights=d & 0x3FFFFFF, minlength=n_routes)
                hi_r = np.bincount(rno, weights=d >> 26, minlength=n_routes)
                routes = np.bincount(rno, minlength=n_routes).nonzero()[0]
                rep = np.empty(n_routes, dtype=np.intp)  # a moved flow's column per route
                rep[rno] = np.arange(rno.size)
                keys = self._rk.take(slots.take(rep.take(routes)), axis=1)
                flat = keys.ravel()
                lo = np.bincount(flat, weights=np.broadcast_to(lo_r.take(routes), keys.shape).ravel(), minlength=n_keys)
                hi = np.bincount(flat, weights=np.broadcast_to(hi_r.take(routes), keys.shape).ravel(), minlength=n_keys)
                for k in np.bincount(flat, minlength=n_keys).nonzero()[0].tolist():
                    tot[k] += (int(hi[k]) << 26) + int(lo[k])
                    touched[k] = None
                return
            keys = self._rk.take(slots, axis=1)
            scratch = self._rscratch
            np.add.at(scratch, keys, np.broadcast_to(d, keys.shape))
            for k in np.unique(keys).tolist():
                tot[k] += int(scratch[k])
                scratch[k] = 0
                touched[k] = None

    def _log_rates(self) -> None:
        """Log the totals of the keys whose flows changed rate, where they moved."""
        if not self._rtouched:
            return
        now = self.env.now
        logged, tot, names = self._logged, self._rtot, self._key_name
        add_t, add_k, add_r = self._log_t.append, self._log_k.append, self._log_r.append
        for k in self._rtouched:
            if k not in names:  # the padding key
                continue
            total = tot[k] / _Q
            if logged.get(k, 0.0) != total:
                logged[k] = total
                add_t(now)
                add_k(k)
                add_r(total)
        self._rtouched = {}

    def rate_timeline(self) -> dict:
        """The logged rates as step functions, in ``sim.engine.replay.replay_rates``' form:
        ``{"links": {link: (times, rates)}, "pairs": {(src_region, dst_region): (times,
        rates)}, "error": None}`` (bytes/s; ``rates[i]`` on [times[i], times[i+1]); one
        time axis, 0 and then every instant at which some sum changed; links that never
        carried anything left out); None when the log was off (``keep_rate_log``). Read with
        array operations (a 1,024-worker NoLoCo run logs ~5M entries): the same step functions,
        bit for bit, as reading the log entry by entry (tests/test_rate_timeline.py)."""
        if not self._log_on:
            return None
        link_keys = sorted(self._wan_links)  # link ids, in the order of the links' ids
        pair_keys = sorted(self._pair_key.values(), key=lambda k: self._key_name[k][1:])
        keys = link_keys + pair_keys  # the timeline's columns, in order
        col_of = np.zeros(len(self._rtot), dtype=np.int16 if len(keys) < 2**15 else np.int32)
        col_of[keys] = np.arange(len(keys))  # (every logged key is a WAN link's or a pair's)
        t = np.frombuffer(self._log_t, dtype=np.float64)  # (views: nothing appends while this runs)
        v = np.frombuffer(self._log_r, dtype=np.float64)
        c = col_of.take(np.frombuffer(self._log_k, dtype=np.int64))
        # The log's instants: one group per distinct time (the clock never goes back), 1..G.
        first = np.ones(t.size, dtype=bool)
        np.not_equal(t[1:], t[:-1], out=first[1:])
        gid = np.cumsum(first)
        group_t = t[first]
        # Per column in the log's order (a stable sort of small integers: a radix sort), and
        # of the entries a column has at one instant the last, which is what it holds after it.
        order = np.argsort(c, kind="stable")
        c, gid, v = c.take(order), gid.take(order), v.take(order)
        last = np.ones(c.size, dtype=bool)
        np.logical_or(c[1:] != c[:-1], gid[1:] != gid[:-1], out=last[:-1])
        c, gid, v = c[last], gid[last], v[last]
        counts = np.bincount(c, minlength=len(keys))
        ends = np.cumsum(counts)
        # An instant where no sum leaves the value it had before (0 before its first entry)
        # adds no breakpoint: the sums after it are those of the row before.
        before = np.empty_like(v)
        before[0:1] = 0.0
        before[1:] = v[:-1]
        before[(ends - counts)[counts > 0]] = 0.0
        n = group_t.size + 1  # row 0: every sum 0 at time 0, before the first instant
        moved = np.zeros(n, dtype=bool)
        moved[gid[v != before]] = True
        rows = moved.nonzero()[0]
        if rows.size and group_t[rows[0] - 1] == 0.0:  # the first instant is time 0: it is row 0
            times = group_t.take(rows - 1)
        else:
            rows = np.concatenate(([0], rows))
            times = np.concatenate(([0.0], group_t.take(rows[1:] - 1)))
        at = np.empty(n, dtype=np.intp)

        def column(j: int) -> np.ndarray:
            """Column ``j``'s sum at each row: its last entry at or before the row's instant."""
            g = gid[ends[j] - counts[j]:ends[j]]
            at.fill(0)
            at[g] = np.arange(1, g.size + 1)
            np.maximum.accumulate(at, out=at)
            values = np.concatenate(([0.0], v[ends[j] - counts[j]:ends[j]]))
            return values.take(at.take(rows))

        cols = {key: column(j) for j, key in enumerate(keys) if counts[j]}
        by_link, by_pair = {}, {}
        for key in link_keys:
            if key in cols and cols[key].any():
                by_link[self._key_name[key]] = (times, cols[key])
        for key in pair_keys:
            if key in cols and cols[key].any():
                by_pair[self._key_name[key][1:]] = (times, cols[key])
        return {"links": by_link, "pairs": by_pair, "error": None}
