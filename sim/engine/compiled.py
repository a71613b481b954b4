"""Large rate recomputations compiled with numba (issue 26; the optional extra ``fast``).

``Network._solve_large``'s common case -- the reduced filling (``FlowTable._reduced_rates``:
leaves' links left out, bundles over the same other links as one entity, the left-out links
checked after), each changed flow's progress, rate and finish time, and the rate log's integer
counts -- as one loop over the component's routes (``solve_large``), in the order and with the
float operations of the numpy path, so the floats are the same, bit for bit: the same
entities (their order changes nothing: the entities one pop freezes all get its share, and
each link's subtractions come after), the same heap pops (one entry per link, popped by (share, link
id)), the same subtractions (``maxmin.subtract_times`` itself, compiled), then per flow
``remaining - before * (now - updated)`` and ``now + max(remaining, 0) / rate``. numba
compiles without fast-math, so every operation is one IEEE double operation, as numpy's.

The component search gives the component's routes (``Found``), not its flows: the kernel
walks a route's flows (each route keeps a list of its slots, ``FlowTable._take_slot``) only
where the route's rate changed or some of its flows may have another rate (added, synced, or
rated by numpy since the kernel last rated the route), so a recomputation costs its routes
and its changed flows, not every flow in the component; the numpy path gets the slots
(``Found.slots``) when it runs.

Routes between leaves of one switch (a pair in one region) keep their links, as in numpy's
second branch. Where the numpy path would run its whole filling -- more than
``_MAX_ENTITIES`` entities, a left-out link that could limit its flows -- the kernel changes
nothing and returns None: the numpy path runs. The rate log's moves are summed per
key in int64, as the numpy path's scratch does for many flows: each key's partial sums stay
below its links' capacities times 2^16 (twice: the old rates and the new), far inside int64.

numba is imported at the first large recomputation after ``AFTER`` of them (its import, the
cached machine code and a check on one flow cost ~0.5 s; compiling, the first time on a
machine, ~5-8 s, cached in ``__pycache__`` from then on), so short runs never pay for it. Without numba (the
extra not installed) or with ``ENABLED = False`` the numpy path runs every time. ``kernel``
without numba is the same function in plain Python: the tests hold it to the numpy path on
machines without numba too.
"""

from __future__ import annotations

import math

import numpy as np

from sim.engine.maxmin import subtract_times as _subtract_times

# Whether large recomputations use the compiled kernel when numba is installed (False: the
# numpy path always; the switch the equivalence tests turn off).
ENABLED = True
# A network's large recomputations made in numpy before numba is loaded (a run with fewer never
# imports it: DiLoCo and Streaming DiLoCo at 1,024 workers make a few hundred, NoLoCo ~276,000).
AFTER = 1000
_INF = math.inf
_MAX_ENTITIES = 96  # as FlowTable's: more entities, the numpy path (its full filling)

_compiled = None  # the jitted kernel, once loaded
_component = None  # the jitted component search, loaded with it
_missing = False  # numba could not be imported


def _less(hs, hl, a, b):
    return hs[a] < hs[b] or (hs[a] == hs[b] and hl[a] < hl[b])


def _swap(hs, hl, a, b):
    hs[a], hs[b] = hs[b], hs[a]
    hl[a], hl[b] = hl[b], hl[a]


def _push(hs, hl, size, share, link):
    """Add (share, link) to the heap of ``size`` entries in hs/hl; returns the new size."""
    i = size
    hs[i] = share
    hl[i] = link
    while i > 0:
        parent = (i - 1) // 2
        if not _less(hs, hl, i, parent):
            break
        _swap(hs, hl, i, parent)
        i = parent
    return size + 1


def _pop(hs, hl, size):
    """Remove the least (share, link) of the heap into slot ``size - 1``; returns the new size."""
    last = size - 1
    _swap(hs, hl, 0, last)
    i = 0
    while True:
        c = 2 * i + 1
        if c >= last:
            break
        if c + 1 < last and _less(hs, hl, c + 1, c):
            c += 1
        if not _less(hs, hl, c, i):
            break
        _swap(hs, hl, i, c)
        i = c
    return last


def kernel(routes, route_live, head, nxt, rrate, rmixed, route_red, red_links, red_len, cap, leaf_link, rows,
           pad, rate, remaining, updated, finish, q, inarr, rk, now, quantum, log_on, key_delta, key_touched,
           touched, deltas, new_out):
    """The reduced filling and the updates of ``_solve_large`` for the flows of the component's
    ``routes`` (route numbers, each once; every slot in use on them is in the component).
    Returns (status, earliest finish that changed or inf, flows new to the arrays (their slots
    in ``new_out``), routes rated, keys touched); status 1: nothing changed, the numpy path
    must run. A route's flows are found through its list of slots (``head``, ``nxt``) and
    looked at only when its rate changed (``rrate``: the rate last given to them all) or when
    it is marked (``rmixed``: a flow added, synced or rated by numpy since); both are brought
    up to date. The rate log's moves: the keys they touched, ascending, in ``touched`` and
    their summed moves in ``deltas``. Scratch, the same on return as on entry: ``key_delta``
    and ``key_touched`` (zeros)."""
    count = np.empty(routes.size, np.int64)
    for j in range(routes.size):
        count[j] = route_live[routes[j]]
    status, earliest, n_new, n_touched = _rate(routes, count, route_red, red_links, red_len, cap, leaf_link, rows,
                                               pad, head, nxt, rrate, rmixed, rate, remaining, updated, finish, q,
                                               inarr, rk, now, quantum, log_on, key_delta, key_touched, touched,
                                               deltas, new_out)
    return status, earliest, n_new, routes.size, n_touched


def _rate(routes, count, route_red, red_links, red_len, cap, leaf_link, rows, pad, head, nxt, rrate, rmixed,
          rate, remaining, updated, finish, q, inarr, rk, now, quantum, log_on, key_delta, key_touched,
          touched, deltas, new_out):
    """``kernel``'s work over the component's ``routes`` (``count`` flows each)."""
    n_links = cap.size
    width = rows.shape[1]
    # Routes between leaves of one switch (no other link) keep their links, for every route
    # that crosses them (FlowTable._reduced_rates' second branch).
    kept = np.zeros(n_links, np.bool_)
    any_kept = False
    for j in range(routes.size):
        r = routes[j]
        if route_red[r] < 0:
            any_kept = True
            for h in range(width):
                if rows[r, h] != pad:
                    kept[rows[r, h]] = True
    # The entities: their links, flows, and each route's entity.
    elinks = np.empty((_MAX_ENTITIES, red_links.shape[1] + 2), np.int64)
    elen = np.zeros(_MAX_ENTITIES, np.int64)
    ecount = np.zeros(_MAX_ENTITIES, np.int64)
    route_ent = np.empty(routes.size, np.int64)
    ents = 0
    if not any_kept:  # bundles over the same other links: one entity per such set, in its order
        n_ent = red_len.size
        total = np.zeros(n_ent, np.int64)
        for j in range(routes.size):
            total[route_red[routes[j]]] += count[j]
        where = np.full(n_ent, -1, np.int64)
        for e in range(n_ent):
            if total[e]:
                if ents == _MAX_ENTITIES:
                    return 1, _INF, 0, 0
                where[e] = ents
                for h in range(red_len[e]):
                    elinks[ents, h] = red_links[e, h]
                elen[ents] = red_len[e]
                ecount[ents] = total[e]
                ents += 1
        for j in range(routes.size):
            route_ent[j] = where[route_red[routes[j]]]
    else:
        if routes.size > 16 * _MAX_ENTITIES:
            return 1, _INF, 0, 0
        # A route's kept links are its first and last (a leaf's link opens or closes a route):
        # an entity is the other links' set and those, in route order (numpy's key).
        keys = np.empty((_MAX_ENTITIES, 3), np.int64)
        for j in range(routes.size):
            r = routes[j]
            e = route_red[r]
            a = -1
            b = -1
            nk = 0
            for h in range(width):
                m = rows[r, h]
                if m != pad and kept[m]:
                    if nk == 0:
                        a = m
                    else:
                        b = m
                    nk += 1
            if nk > 2:
                return 1, _INF, 0, 0
            found = -1
            for x in range(ents):
                if keys[x, 0] == e and keys[x, 1] == a and keys[x, 2] == b:
                    found = x
                    break
            if found < 0:
                if ents == _MAX_ENTITIES:
                    return 1, _INF, 0, 0
                found = ents
                keys[found, 0] = e
                keys[found, 1] = a
                keys[found, 2] = b
                k = 0
                if e >= 0:
                    for h in range(red_len[e]):
                        elinks[found, k] = red_links[e, h]
                        k += 1
                if a >= 0:
                    elinks[found, k] = a
                    k += 1
                if b >= 0:
                    elinks[found, k] = b
                    k += 1
                elen[found] = k
                ents += 1
            route_ent[j] = found
            ecount[found] += count[j]
    # maxmin.entity_filling over the entities.
    n = np.zeros(n_links, np.int64)
    deg = np.zeros(n_links, np.int64)
    for j in range(ents):
        for h in range(elen[j]):
            l = elinks[j, h]
            n[l] += ecount[j]
            deg[l] += 1
    start = np.zeros(n_links + 1, np.int64)
    for l in range(n_links):
        start[l + 1] = start[l] + deg[l]
    fill = start[:-1].copy()
    users = np.empty(start[n_links], np.int64)
    for j in range(ents):  # each link's entities in entity order
        for h in range(elen[j]):
            l = elinks[j, h]
            users[fill[l]] = j
            fill[l] += 1
    left = np.zeros(n_links)
    hs = np.empty(n_links)
    hl = np.empty(n_links, np.int64)
    size = 0
    for l in range(n_links):
        if deg[l]:
            left[l] = cap[l]
            size = _push(hs, hl, size, left[l] / n[l], l)
    erate = np.full(ents, _INF)
    frozen = np.zeros(ents, np.bool_)
    took = np.zeros(n_links, np.int64)
    took_list = np.empty(n_links, np.int64)
    while size:
        size = _pop(hs, hl, size)
        share = hs[size]
        l = hl[size]
        c = n[l]
        if c == 0:
            continue
        current = left[l] / c
        if current != share:  # stale: l lost flows frozen elsewhere since it was pushed
            size = _push(hs, hl, size, current, l)
            continue
        r = share if share > 0 else 0.0
        n_took = 0
        for u in range(start[l], start[l + 1]):
            j = users[u]
            if frozen[j]:
                continue
            frozen[j] = True
            erate[j] = r
            k = ecount[j]
            for h in range(elen[j]):
                m = elinks[j, h]
                n[m] -= k
                if took[m] == 0:
                    took_list[n_took] = m
                    n_took += 1
                took[m] += k
        for t in range(n_took):
            m = took_list[t]
            if n[m]:
                left[m] = _subtract_times(left[m], share, took[m])
            took[m] = 0
    # The left-out links: each one's share above the rates of the flows crossing it.
    route_rate = np.empty(routes.size)
    top_rate = 0.0
    nl = np.zeros(n_links)
    for j in range(routes.size):
        r = routes[j]
        x = erate[route_ent[j]]
        route_rate[j] = x
        if x > top_rate:
            top_rate = x
        for h in range(width):
            nl[rows[r, h]] += count[j]
    nl[pad] = 0.0
    margin = 1 + 1e-9
    low = _INF
    for l in range(n_links):
        if nl[l] > 0 and leaf_link[l] and not kept[l]:
            low = min(low, cap[l] / nl[l])
    if low < _INF and not low > top_rate * margin:
        top = np.zeros(n_links)
        for j in range(routes.size):
            r = routes[j]
            for h in range(width):
                m = rows[r, h]
                if route_rate[j] > top[m]:
                    top[m] = route_rate[j]
        for l in range(n_links):
            if nl[l] > 0 and leaf_link[l] and not kept[l] and not cap[l] / nl[l] > top[l] * margin:
                return 1, _INF, 0, 0
    earliest = _INF
    nan = False
    n_new = 0
    # The rate log's moves summed per route (its flows count toward the same keys: its WAN
    # links and its region pair), and a flow of each route that moved, whose keys those are.
    route_move = np.zeros(routes.size, np.int64)
    route_flow = np.full(routes.size, -1, np.int64)
    for j in range(routes.size):
        r = routes[j]
        x = route_rate[j]
        if x == rrate[r] and not rmixed[r]:
            continue  # every flow of the route has this rate already
        rrate[r] = x
        rmixed[r] = False
        s = head[r]
        while s >= 0:
            before = rate[s]
            if x == before:  # same rate: its progress and finish time stay valid (nan: new)
                s = nxt[s]
                continue
            rem = remaining[s]
            if math.isfinite(before):
                rem = rem - before * (now - updated[s])
            if x > 0:
                m = rem if rem != rem or rem > 0.0 else 0.0  # numpy's maximum(rem, 0): nan stays nan
                f = now + m / x
            else:
                f = _INF
            remaining[s] = rem
            updated[s] = now
            rate[s] = x
            finish[s] = f
            if f != f:  # numpy's min of the finish times: nan if one is nan
                nan = True
            elif f < earliest:
                earliest = f
            if log_on:
                nq = np.int64(np.rint(x * quantum)) if 0 < x < _INF else np.int64(0)
                d = nq - q[s]
                if d != 0:
                    q[s] = nq
                    route_move[j] += d
                    route_flow[j] = s
            if not inarr[s]:
                inarr[s] = True
                new_out[n_new] = s
                n_new += 1
            s = nxt[s]
    n_touched = 0
    for h in range(rk.shape[0]):  # each moved route's sum to its keys
        for j in range(routes.size):
            if route_flow[j] < 0:
                continue
            key = rk[h, route_flow[j]]
            key_delta[key] += route_move[j]
            if not key_touched[key]:
                key_touched[key] = True
                touched[n_touched] = key
                n_touched += 1
    # The touched keys in order, with their sums; the scratch back to zeros.
    touched[:n_touched].sort()
    for i in range(n_touched):
        key = touched[i]
        deltas[i] = key_delta[key]
        key_delta[key] = 0
        key_touched[key] = False
    return 0, math.nan if nan else earliest, n_new, n_touched


def component(reached, route_live, rows, pad, last):
    """``FlowTable._large_component``'s search: the routes with live flows connected to the
    links marked in ``reached`` (grown in place to their links), ascending, and their flows'
    count. ``rows``: each route's link ids (a row per route number, padded). ``last`` (one
    entry per link, or empty) gets the links of those routes marked: the component's links,
    for the next search."""
    width = rows.shape[1]
    live = np.nonzero(route_live)[0]
    member = np.zeros(route_live.size, np.bool_)
    grew = True
    while grew:  # to the fixed point: every live route touching a reached link, and its links
        grew = False
        for r in live:
            if member[r]:
                continue
            touch = False
            for h in range(width):
                m = rows[r, h]
                if reached[m] and m != pad:
                    touch = True
                    break
            if touch:
                member[r] = True
                grew = True
                for h in range(width):
                    reached[rows[r, h]] = True
                reached[pad] = False
    out = np.empty(live.size, np.int64)
    k = 0
    flows = 0
    for r in live:
        if member[r]:
            out[k] = r
            k += 1
            flows += route_live[r]
            if last.size:
                for h in range(width):
                    last[rows[r, h]] = True
    if last.size:
        last[pad] = False
    return out[:k], flows


class Found:
    """A component found by the compiled search: its routes (ascending route numbers), the
    number of its flows (``size``, as for an array of their slots); ``slots()`` lists those
    (ascending, as the numpy search gives them) for the numpy path."""

    __slots__ = ("net", "routes", "size")

    def __init__(self, net, routes: np.ndarray, size: int):
        self.net, self.routes, self.size = net, routes, size

    def slots(self) -> np.ndarray:
        net, hi = self.net, self.net._hi
        member = np.zeros(net._route_live.size, dtype=bool)
        member[self.routes] = True
        return (member.take(net._rno[:hi]) & net._used[:hi]).nonzero()[0]


def as_slots(found) -> np.ndarray:
    """The slots of a component as the numpy path wants them (``found``: slots already, or a
    ``Found``)."""
    return found.slots() if isinstance(found, Found) else found


def _rows(net) -> np.ndarray:
    """The route table with a row per route number (``FlowTable._route_hops`` has a column
    each): the kernels read a route's links side by side. Routes are only ever added and
    their links never change, so new ones are appended (the table rebuilt if routes grew
    longer)."""
    table = net._route_hops
    n = len(net._route_no)
    got = net._route_rows
    if got is None or got[1].shape[1] != table.shape[0] or got[1].shape[0] < n:
        rows = np.full((max(table.shape[1], 64), table.shape[0]), net._pad, dtype=np.int64)
        rows[:n] = table[:, :n].T
        got = net._route_rows = [n, rows]
    elif got[0] < n:
        got[1][got[0]:n] = table[:, got[0]:n].T
        got[0] = n
    return got[1]


def find_component(net, reached: np.ndarray, keep_last: bool) -> Found | None:
    """``component`` for ``net`` by the compiled kernel, once loaded (None: the numpy search
    runs); sets ``net._last_links`` when ``keep_last``."""
    if _compiled is None or not ENABLED:
        return None
    last = np.zeros(net._cap.size if keep_last else 0, dtype=bool)
    routes, flows = _component(reached, net._route_live, _rows(net), net._pad, last)
    net._last_links = last if keep_last else None
    return Found(net, routes, int(flows))


def _tiny(run, find):
    """One flow on one link, rated by ``run`` and found by ``find``: (status, earliest, new
    flows, routes, keys touched, rate, remaining, finish, count, its move and key, the
    route's rate and mark, routes and flows found) -- the same by the plain Python kernels
    and the compiled ones, or the compiled ones are not used."""
    rate, remaining, updated, finish = np.array([math.nan]), np.array([1e6]), np.zeros(1), np.array([_INF])
    q, inarr = np.zeros(1, np.int64), np.zeros(1, np.bool_)
    delta, touched = np.zeros(2, np.int64), np.zeros(2, np.int64)
    rrate, rmixed = np.array([math.nan]), np.ones(1, np.bool_)
    rows = np.zeros((1, 1), np.int64)
    live = np.ones(1, np.intp)
    got = run(np.zeros(1, np.int64), live, np.zeros(1, np.int64), np.full(1, -1, np.int64), rrate, rmixed,
              np.zeros(1, np.intp), np.zeros((1, 1), np.int64), np.ones(1, np.int64), np.array([1e9, _INF]),
              np.array([False, True]), rows, 1, rate, remaining, updated, finish, q, inarr,
              np.zeros((1, 1), np.intp), 0.5, 65536.0, True, np.zeros(2, np.int64), np.zeros(2, np.bool_), touched,
              delta, np.empty(1, np.int64))
    routes, flows = find(np.array([True, False]), live, rows, 1, np.zeros(2, np.bool_))
    return tuple(got) + (rate[0], remaining[0], finish[0], q[0], delta[0], touched[0], rrate[0], rmixed[0],
                         routes.tolist(), int(flows))


def _load():
    """The jitted kernel (numba's own cache keeps its machine code between runs), or None:
    numba missing, or it fails to compile or to give the plain kernels' answer on one flow
    (then the numpy path runs, as without numba)."""
    global _compiled, _component, _missing, _subtract_times, _less, _swap, _push, _pop, _rate
    if _compiled is not None or _missing:
        return _compiled
    _missing = True  # until the compiled kernels have given the right answer
    try:
        import numba
    except Exception:  # not installed, or broken against this numpy
        return None
    want = _tiny(kernel, component)
    helpers = (_subtract_times, _less, _swap, _push, _pop, _rate)
    try:
        try:
            jit = numba.njit(cache=True)
            # The kernel calls its helpers by their global names: those are jitted first.
            _subtract_times, _less, _swap, _push, _pop, _rate = (jit(f) for f in helpers)
            fns = jit(kernel), jit(component)
        except RuntimeError:  # no place to cache the machine code: compiled each run
            jit = numba.njit
            _subtract_times, _less, _swap, _push, _pop, _rate = (jit(f) for f in helpers)
            fns = jit(kernel), jit(component)
        if _tiny(*fns) != want:
            raise ArithmeticError("compiled kernels disagree with the plain ones")
    except Exception:
        _subtract_times, _less, _swap, _push, _pop, _rate = helpers
        return None
    _compiled, _component = fns
    _missing = False
    return _compiled


def _red_table(net) -> tuple[np.ndarray, np.ndarray]:
    """The reduced filling's entities as arrays: their link ids (rows, padded) and counts."""
    links = net._red_links
    got = net._red_arrays
    if got is None or got[0] != len(links):
        width = max((len(x) for x in links), default=1)
        table = np.full((len(links), max(width, 1)), -1, dtype=np.int64)
        for e, x in enumerate(links):
            table[e, :len(x)] = x
        got = net._red_arrays = (len(links), table, np.array([len(x) for x in links], dtype=np.int64))
    return got[1], got[2]


def solve_large(net, slots, run=None) -> float | None:
    """``Network._solve_large`` for ``slots`` (the component's slots, or the ``Found`` of the
    compiled search) by the kernel (``run``: the function to call, the jitted one by
    default): the earliest finish time that changed (inf: none), or None when the numpy path
    must run (nothing changed then)."""
    if run is None:
        if not ENABLED or net._inf_links:
            return None
        net._large_seen = seen = net._large_seen + 1
        if seen <= AFTER:
            return None
        run = _load()
        if run is None:
            return None
    scratch = net._kernel_scratch
    if scratch is None or scratch[4].size < max(net._rate.size, slots.size):
        n_keys = len(net._rtot)  # sums and marks per key (zeros between calls), keys touched, flows new
        scratch = net._kernel_scratch = (np.zeros(n_keys, np.int64), np.zeros(n_keys, np.bool_),
                                         np.empty(n_keys, np.int64), np.empty(n_keys, np.int64),
                                         np.empty(max(net._rate.size, slots.size), np.int64))
    key_delta, key_touched, touched, deltas, new_out = scratch
    routes = slots.routes if isinstance(slots, Found) else np.unique(net._rno.take(slots))
    red_links, red_len = _red_table(net)
    status, earliest, n_new, n_rated, n_touched = run(
        routes, net._route_live, net._rhead, net._snext, net._rrate, net._rmixed, net._route_red, red_links,
        red_len, net._cap, net._leaf_link, _rows(net), net._pad, net._rate, net._remaining, net._updated,
        net._finish, net._q, net._inarr, net._rk, float(net.env.now), 65536.0, net._log_on,
        key_delta, key_touched, touched, deltas, new_out)
    if status:
        return None
    net.reduced_solves += 1
    net.compiled_solves += 1
    net.rate_recomputed_columns += n_rated
    if n_touched:
        tot, rtouched = net._rtot, net._rtouched
        for k, d in zip(touched[:n_touched].tolist(), deltas[:n_touched].tolist()):
            tot[k] += d
            rtouched[k] = None
    if n_new:
        flows = net._slot_flow
        for s in new_out[:n_new].tolist():
            f = flows[s]
            f.in_arrays = True
            f.version += 1
        net._in_arrays += n_new
    return earliest
