"""Flow classes: a collective's flows that start together with one route shape, held as one
entity with multiplicities while they are symmetric (``Network.transfer_group`` starts
them). ``FlowClasses`` is a part of ``sim.engine.network.Network`` (a base class of it, over
the same state): the symmetry checks, the split of a class into its member flows, and the
rates of a component that holds classes (``maxmin.cell_filling`` over cells of links).
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from sim.engine.flow import Flow
from sim.engine.maxmin import cell_filling

_INF = math.inf


def mix64(x: int) -> np.uint64:
    """splitmix64 of x: a well-spread 64-bit hash of a class's start number (no random state)."""
    z = (x * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(z ^ (z >> 31))


class FlowClasses:
    """The flow-class side of ``Network`` (see the module docstring)."""

    def _mark_touched(self, ids) -> None:
        """A plain flow joined links ``ids``: the classes on them are checked link by link."""
        lf, pu = self._link_flows, self._plain_users
        for l in ids:
            users = lf[l]
            if len(users) > pu[l]:
                for u in users:
                    if u.members is not None:
                        u.touched = True

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
        return comp, cell_filling(users, routes, left, count, rep_link)
