"""Link dynamics on a topology graph's edges: bandwidth that changes at given times
(``bandwidth_series``) and outages, checked (``check_link``) and looked up in O(log n)
(``LinkTimeline``).

Separate from the network's flows: ``sim.engine.network`` plays these back as capacity
changes (``Network.set_bandwidth_gbps``) and the fault injector appends flaps to the lists.
"""

from __future__ import annotations

import bisect
import math

_INF = math.inf


def check_link(u: str, v: str, d: dict) -> None:
    """Refuse an edge whose bandwidth, latency, bandwidth series or outages are not valid
    (one line naming the link and the rule)."""
    if not d.get("bandwidth_gbps", 0) > 0:
        raise ValueError(f"link {u}-{v}: bandwidth_gbps must be > 0 (got {d.get('bandwidth_gbps')})")
    if not d.get("latency_s", -1) >= 0:
        raise ValueError(f"link {u}-{v}: latency_s must be >= 0 (got {d.get('latency_s')})")
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


def change_times(d: dict) -> list[float]:
    """The times at which an edge's capacity may change (series steps, outage starts and ends)."""
    times = {t for t, _ in d.get("bandwidth_series") or []}
    for start, end in d.get("outages") or []:
        times.update((start, end))
    return sorted(times)


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
