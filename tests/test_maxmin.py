"""The max-min filling as pure functions (sim/engine/maxmin.py), on hand-written links and
flows: analytic allocations, the cell filling of a symmetric class against its flows one by
one, and the module's independence from SimPy and the network."""

from __future__ import annotations

import heapq
import math
import subprocess
import sys

import numpy as np

from sim.engine.maxmin import cell_filling, heap_filling, progressive_filling
from tests.conftest import ROOT


def _heap(cap: list[float], routes: list[list[int]]) -> list[float]:
    """heap_filling over plain lists: link capacities and each flow's link ids."""
    left, count, users = {}, {}, {}
    for j, links in enumerate(routes):
        for l in links:
            left[l] = cap[l]
            count[l] = count.get(l, 0) + 1
            users.setdefault(l, []).append(j)
    heap = [(left[l] / n, l) for l, n in count.items()]
    heapq.heapify(heap)
    got = heap_filling(users, dict(enumerate(routes)), left, count, heap)
    return [got.get(j, math.inf) for j in range(len(routes))]


def _table(cap: list[float], routes: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in routes)
    hops = np.full((width, len(routes)), len(cap), dtype=np.intp)
    for j, links in enumerate(routes):
        hops[:len(links), j] = links
    return hops, np.array(cap + [math.inf])


def test_a_long_flow_and_two_short_ones_get_the_textbook_max_min_rates():
    """Links of 1 and 2 (bytes/s), flow A over both, B over the first, C over the second: A
    and B split the first link (1/2 each) and C takes what A leaves of the second (3/2), in
    both the heap and the vectorized filling."""
    cap, routes = [1.0, 2.0], [[0, 1], [0], [1]]
    assert _heap(cap, routes) == [0.5, 0.5, 1.5]
    assert progressive_filling(*_table(cap, routes)).tolist() == [0.5, 0.5, 1.5]


def test_a_link_at_zero_stalls_its_flows_and_frees_nothing_for_the_others():
    """A link of capacity 0 gives its flows rate 0; a flow elsewhere keeps its whole link."""
    cap, routes = [0.0, 4.0], [[0, 1], [1]]
    assert _heap(cap, routes) == [0.0, 4.0]
    assert progressive_filling(*_table(cap, routes)).tolist() == [0.0, 4.0]


def test_a_bundle_with_a_count_is_rated_as_that_many_flows():
    """One column standing for 3 flows over link 0 (capacity 6) next to a flow of its own
    there: each of the 4 gets 6/4, and a second link shared with the bundle only (capacity
    1.5 for 3 flows) caps the bundle at 0.5, leaving the lone flow 4.5."""
    hops, capv = _table([6.0], [[0], [0]])
    assert progressive_filling(hops, capv, np.array([3, 1])).tolist() == [1.5, 1.5]
    hops, capv = _table([6.0, 1.5], [[0, 1], [0]])
    assert progressive_filling(hops, capv, np.array([3, 1])).tolist() == [0.5, 4.5]


def test_the_cell_filling_of_a_symmetric_class_gives_each_members_heap_rate():
    """A class of 4 members, each on a LAN link of its own (capacity 10, one cell) and all on
    one WAN link (capacity 8) that a plain flow also crosses: the class and the plain flow
    get 8/5 each, what the heap gives the 5 flows one by one."""
    # cells: 0 = the four LAN links (one member each), 1 = the WAN link (4 members + 1 flow)
    users = {0: ["class"], 1: ["class", "plain"]}
    routes = {"class": {0: 1, 1: 4}, "plain": {1: 1}}
    got = cell_filling(users, routes, {0: 10.0, 1: 8.0}, {0: 1, 1: 5}, [0, 4])
    per_flow = _heap([10.0, 10.0, 10.0, 10.0, 8.0], [[0, 4], [1, 4], [2, 4], [3, 4], [4]])
    assert got == {"class": per_flow[0], "plain": per_flow[4]} and set(per_flow) == {8.0 / 5}


def test_the_max_min_module_imports_neither_simpy_nor_the_network():
    """Importing sim.engine.maxmin loads no simpy and no other sim module: plain data in, rates out."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import sim.engine.maxmin\n"
            "bad = sorted(m for m in sys.modules if m == 'simpy' or (m.startswith('sim.') and m not in "
            "('sim.engine', 'sim.engine.maxmin')))\nprint(bad)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
