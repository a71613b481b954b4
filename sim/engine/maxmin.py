"""Max-min fair rates by progressive filling, as pure functions over plain data (no SimPy,
no network object): what ``sim.engine.network`` calls whenever rates change.

* ``heap_filling``: flows over links, with a heap of per-link fair shares (few flows).
* ``progressive_filling``: the same, vectorized with numpy over a hop table, for many
  flows (optionally one column per route with a count); the same floats.
* ``cell_filling``: the same over cells of links with multiplicities, for flow classes.
* ``entity_filling``: the same over entities (a set of links and a count of flows over
  them), for a component whose flows over links that never limit them were left out; its
  repeated subtractions by ``subtract_times``, one rounding each in O(binades crossed).

Separate so that the filling can be read and unit-tested against references on hand-made
inputs, apart from the flows' bookkeeping and events.
"""

from __future__ import annotations

import heapq
import math
from itertools import accumulate

import numpy as np

_INF = math.inf
# Once this few flows are left unfrozen, ``progressive_filling`` finishes with the heap
# (the same floats: cheaper than numpy passes for a handful of flows).
HEAP_FINISH = 32


def heap_filling(users, routes, left: dict[int, float], count: dict[int, int],
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


def progressive_filling(hops: np.ndarray, cap: np.ndarray, mult: np.ndarray | None = None) -> np.ndarray:
    """``heap_filling`` for many flows, vectorized; the same floats.

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
        if n_open <= HEAP_FINISH:
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
            got = heap_filling(users, routes, dict(zip(ids, left.take(order).tolist())),
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


def cell_filling(users: dict, routes: dict, left: dict, count: dict, rep_link: list) -> dict:
    """Progressive filling over cells of links (flow classes): {entity: rate}.

    A cell is a set of links with one signature (capacity, users with multiplicities).
    ``left[c]`` and ``count[c]``: a link of cell c's capacity not yet given away and its
    count of unfrozen members; ``users[c]`` the entities on such a link; ``routes[e]``
    {cell: members of entity e crossing one link of that cell}; ``rep_link[c]`` the lowest
    link id of cell c (the heap's tie-break, as the per-link filling breaks ties). Freezing
    an entity takes its share from each cell it crosses once per member crossing it, one
    rounding each (the per-flow loop's subtractions), so a symmetric class gets the floats
    its member flows get one by one.
    """
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
    return rate


def subtract_times(x: float, s: float, k: int) -> float:
    """``x`` after ``k`` subtractions of ``s``, each rounded to nearest (what the loop
    ``for _ in range(k): x -= s`` gives, bit for bit), in O(binades crossed) instead of O(k).

    While ``x`` stays in one binade [lo, 2 lo) its neighbours are u apart, so ``x - s`` rounds
    to ``x - Q u`` with Q = s / u rounded (s / u is exact: u is a power of two), as long as
    ``x - s`` itself stays at or above lo + u/2 and s / u is not a tie (a tie rounds to even:
    it depends on x). Those steps are taken at once, exactly (integers times u); the one that
    leaves the binade, a tie, and anything outside positive normal numbers are taken one by one.
    """
    while k > 0:
        if k <= 4 or not (x > 0.0 and s > 0.0) or x == _INF or s == _INF:
            for _ in range(k):
                x -= s
            return x
        _, e = math.frexp(x)  # x = m 2^e with 0.5 <= m < 1: x in [lo, 2 lo)
        if e < -1000:  # near the subnormals: one by one
            for _ in range(k):
                x -= s
            return x
        lo = math.ldexp(0.5, e)
        u = math.ldexp(1.0, e - 53)  # the spacing of doubles in [lo, 2 lo)
        t = s / u
        if t >= 2.0 ** 53:  # s is as large as x: each step leaves the binade
            x -= s
            k -= 1
            continue
        q = math.floor(t)
        frac = t - q
        big_x = int((x - lo) / u)  # x - lo is exact (both on the grid of u)
        if frac == 0.5 or big_x == 0:  # a tie, or x at the binade's foot: one step
            x -= s
            k -= 1
            continue
        big_q = int(q) + (frac > 0.5)
        if big_q == 0:  # s < u/2 and x - s > lo: every step rounds back to x
            return x
        n = min(k, (big_x - 1) // big_q)  # steps j with x - j Q u >= lo + u
        if n:
            x = lo + (big_x - n * big_q) * u
            k -= n
        if k:
            x -= s
            k -= 1
    return x


def entity_filling(links: list, counts: list, cap) -> list:
    """``heap_filling``'s rates for entities: entity e stands for ``counts[e]`` flows over the
    link ids ``links[e]`` (every flow on those links is one of them; links of the flows that
    are left out must never limit them). Flows of one entity are frozen in one pop at one
    share; freezing takes the share from each link once per flow crossing it, one rounding
    each (``subtract_times``), in pop order: the floats the flows get one by one. Returns each
    entity's rate (inf for one without links)."""
    n: dict[int, int] = {}
    users: dict[int, list[int]] = {}
    for e, (ls, c) in enumerate(zip(links, counts)):
        for l in ls:
            if l in n:
                n[l] += c
                users[l].append(e)
            else:
                n[l] = c
                users[l] = [e]
    left = {l: float(cap[l]) for l in n}
    heap = [(left[l] / c, l) for l, c in n.items()]
    heapq.heapify(heap)
    rate: list = [_INF] * len(links)
    frozen = [False] * len(links)
    while heap:
        share, l = heapq.heappop(heap)
        c = n[l]
        if c == 0:
            continue
        current = left[l] / c
        if current != share:  # stale: l lost flows frozen elsewhere since it was pushed
            heapq.heappush(heap, (current, l))
            continue
        r = share if share > 0 else 0.0
        took: dict[int, int] = {}
        for e in users[l]:
            if frozen[e]:
                continue
            frozen[e] = True
            rate[e] = r
            k = counts[e]
            for m in links[e]:
                n[m] -= k
                took[m] = took.get(m, 0) + k
        for m, k in took.items():
            if n[m]:  # a link left without unfrozen flows is never read again
                left[m] = subtract_times(left[m], share, k)
    return rate
