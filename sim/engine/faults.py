"""Stragglers, heterogeneity, failures, churn and flaky links, as processes (issue 4).

What a scenario's ``faults:`` section becomes in virtual time:

- **Heterogeneity**: a node's step time is its region's (gpu, ``step_time_multiplier``)
  times ``node_step_time_multiplier`` (per node).
- **Stragglers**: every step's work is multiplied by a factor drawn per step from a
  distribution (lognormal ``exp(N(mu, sigma^2))``, Pareto with minimum ``scale`` and tail
  ``alpha``, or empirical: a row of a CSV of measured step times, divided by the file's
  median). Per node (``scope: node``, stream ``faults/stragglers/<i>/<node>``) or shared by
  a region's nodes (``scope: region``: the k-th step of every node of the region draws the
  same factor, stream ``faults/stragglers/<i>/region/<region>``). Factors of several
  specs that select one node multiply.
- **Slow periods**: per node, on/off periods with exponential durations (stream
  ``faults/slow/<i>/<node>``); while on, the node computes ``factor`` times slower. The
  periods are a schedule drawn ahead, so a step that straddles a boundary runs at each
  speed for its part inside it: the worker accounts for the work it had left.
- **Failures and churn**: per node, a process merges the explicit down windows
  (``failures.schedule``, ``churn``) with random failures (up time ~ Exp(mtbf_s), down
  time ~ Exp(mttr_s), stream ``faults/failures/<node>``) and interrupts the worker
  (``Worker.fail``), then revives it. Down, a worker neither computes nor communicates;
  collectives stop waiting for it (``SyncBarrier.member_down``). Back, it fetches the
  parameters (the model's fp32 ``payload_bytes``, or the timing proxy's) from the live
  peer nearest by route latency -- a real network transfer, state ``comm_blocked`` --
  and goes on from that peer's step: the numerics overwrite its replica with the peer's
  parameters (the method's outer parameters where it has them) at the point of the
  peer's queue where the fetch began (``algorithm.recover``). A joiner does the same.
  Nobody up to fetch from: it goes on from its own parameters. A fetch is called off
  where it is (``Network.cancel``) when the rejoiner fails again, or when its peer fails
  (then it fetches again from the peer nearest now).
- **Links**: degradation windows (bandwidth x factor) become part of the edge's
  bandwidth series before the network is built; random outages (stream
  ``faults/links/<a>-<b>``) are added to the edge's outages as they happen. A flow that
  starts while a link of its route is down goes around it when another route is up; a
  flow already on the link stalls until it is back (``sim.engine.network``).

Every fault is recorded (``FaultSpan``; ``Recovery`` for each fetch; ``Dropped`` by the
barrier for contributions left out). No tensor math here.
"""

from __future__ import annotations

import bisect
import heapq
import math
from typing import Callable, Generator

import numpy as np
import simpy

from kernels.formats import payload_bytes
from sim.rng import rng as named_rng
from sim.metrics.records import FaultSpan, Recorder, Recovery


def _selected(where, nodes: list[str], region_of: dict[str, str]) -> list[int]:
    """Indices of the nodes a ``regions`` / ``nodes`` selector picks (both empty: all)."""
    if not where.regions and not where.nodes:
        return list(range(len(nodes)))
    regions, names = set(where.regions), set(where.nodes)
    return [i for i, n in enumerate(nodes) if n in names or region_of[n] in regions]


# ---------------------------------------------------------------------- per-step factors
def _sampler(spec, g: np.random.Generator) -> Callable[[int], np.ndarray]:
    """``draw(n)``: the stream's next n factors (numpy draws n values as n single draws would)."""
    if spec.kind == "lognormal":
        return lambda n: g.lognormal(spec.mu, spec.sigma, size=n)
    if spec.kind == "pareto":
        return lambda n: spec.scale * (1.0 + g.pareto(spec.alpha, size=n))
    if spec.kind == "empirical":
        samples = np.asarray(spec.samples(), dtype=float)
        scale = float(np.median(samples)) if spec.normalize == "median" else 1.0
        return lambda n: samples[g.integers(len(samples), size=n)] / scale
    raise ValueError(f"unknown straggler factor kind '{spec.kind}'; known: lognormal, pareto, empirical")


class _SharedDraws:
    """The k-th draw of one stream, for every node that shares it (region scope), drawn in
    blocks. ``forget``: one node reads it, in increasing k, so draws it has passed are dropped."""

    BLOCK = 256

    def __init__(self, draw: Callable[[int], np.ndarray], forget: bool = False):
        self.draw = draw
        self.forget = forget
        self.values = np.empty(0)
        self.first = 0  # index of values[0]

    def _cover(self, k0: int, end: int) -> None:
        if self.forget and k0 > self.first:
            self.values = self.values[k0 - self.first:]
            self.first = k0
        have = self.first + len(self.values)
        if end > have:
            more = max(end - have, self.BLOCK, len(self.values))
            self.values = np.concatenate([self.values, self.draw(more)])

    def __call__(self, k: int) -> float:
        self._cover(k, k + 1)
        return float(self.values[k - self.first])

    def block(self, k0: int, n: int) -> np.ndarray:
        """Draws k0 .. k0 + n - 1."""
        self._cover(k0, k0 + n)
        return self.values[k0 - self.first:k0 - self.first + n]


class StepWork:
    """Seconds of work of a node's k-th computed step: base x the product of its factors
    (``block``: of steps k0 .. k0 + n - 1, the same numbers as n calls)."""

    def __init__(self, base_s: float, factors: list[_SharedDraws]):
        self.base_s = base_s
        self.factors = factors

    def __call__(self, k: int) -> float:
        w = self.base_s
        for f in self.factors:
            w *= f(k)
        return w

    def block(self, k0: int, n: int) -> np.ndarray:
        w = np.full(n, self.base_s)
        for f in self.factors:
            w = w * f.block(k0, n)
        return w


# ---------------------------------------------------------------------- slow periods
class SlowPeriods:
    """On/off slow periods of one node from one spec: off ~ Exp(mean_off_s), then on ~
    Exp(mean_on_s) with step-time multiplier ``factor``; drawn lazily, ahead of need."""

    def __init__(self, spec, g: np.random.Generator):
        self.spec, self.g = spec, g
        self.starts: list[float] = []
        self.ends: list[float] = []
        self._horizon = 0.0

    def _cover(self, t: float) -> None:
        while self._horizon <= t:
            start = self._horizon + float(self.g.exponential(self.spec.mean_off_s))
            end = start + float(self.g.exponential(self.spec.mean_on_s))
            if end > start:
                self.starts.append(start)
                self.ends.append(end)
            self._horizon = end

    def at(self, t: float) -> tuple[float, float]:
        """(factor at time t, next time the factor changes, > t)."""
        self._cover(t)
        i = bisect.bisect_right(self.starts, t) - 1
        if i >= 0 and t < self.ends[i]:
            return self.spec.factor, self.ends[i]
        return 1.0, self.starts[i + 1]


class Speed:
    """A node's slow periods from every spec that selects it (their factors multiply)."""

    def __init__(self, sources: list[SlowPeriods]):
        self.sources = sources

    def elapsed(self, t0: float, work: float) -> float:
        """Wall seconds from t0 until ``work`` seconds of full-speed work are done."""
        t, left = t0, work
        while True:
            factor, nxt = 1.0, math.inf
            for s in self.sources:
                f, change = s.at(t)
                factor *= f
                nxt = min(nxt, change)
            if left * factor <= nxt - t:
                return t + left * factor - t0
            left -= (nxt - t) / factor
            t = nxt


# ---------------------------------------------------------------------- links
def apply_link_windows(graph, link_faults) -> list[FaultSpan]:
    """Fold degradation windows into the WAN edges' bandwidth series (before the Network
    is built); returns their records."""
    spans = []
    for lf in link_faults:
        if not lf.degrade:
            continue
        d = graph.edges[lf.a, lf.b]
        old = list(d.get("bandwidth_series") or [])
        windows = sorted((w.start_s, w.end_s, w.factor) for w in lf.degrade)
        times = sorted({t for t, _ in old} | {w[0] for w in windows} | {w[1] for w in windows})

        old_times = [t for t, _ in old]

        def base(t: float) -> float:  # the old series' step value at t, by bisection
            i = bisect.bisect_right(old_times, t) - 1
            return old[i][1] if i >= 0 else d["bandwidth_gbps"]

        # factor at t: that of the first window (in sorted order) with s <= t < e. The times
        # are sorted, so one sweep with a heap of the windows begun (by their sorted index)
        # finds it in O(log n) a time; windows that have ended leave the heap's top lazily.
        series, begun, k = [], [], 0
        for t in times:
            while k < len(windows) and windows[k][0] <= t:
                heapq.heappush(begun, k)
                k += 1
            while begun and windows[begun[0]][1] <= t:
                heapq.heappop(begun)
            series.append((t, base(t) * (windows[begun[0]][2] if begun else 1.0)))
        d["bandwidth_series"] = series
        spans += [FaultSpan("link_degraded", -1, f"{lf.a}<->{lf.b}", s, e, f) for s, e, f in windows]
    return spans


# ---------------------------------------------------------------------- the faults of one run
class FaultModel:
    """One scenario's faults: the step work, slow periods and rejoin its workers are built with, and
    the processes that fail them and the links (``start``).

    ``on_fetch(worker, peer, step)``: a worker starts fetching ``peer``'s parameters (None:
    nobody is up; it keeps its own) and will go on after ``step`` (numerics snapshot the
    peer now); ``on_rejoined(worker)``: it has them and computes again (the run's events,
    ``sim.engine.events.RunEvents``). ``home(worker)``: the server a returning worker fetches
    the current model from (methods with servers; None: a live peer).
    """

    def __init__(self, env: simpy.Environment, seed: int, faults, nodes: list[str], region_of: dict[str, str],
                 recorder: Recorder, on_fetch: Callable[[int, int | str | None, int], None] | None = None,
                 on_rejoined: Callable[[int], None] | None = None,
                 home: Callable[[int], str | None] | None = None):
        self.env, self.seed, self.spec = env, seed, faults
        self.nodes, self.region_of = list(nodes), region_of
        self.recorder = recorder
        self.on_fetch, self.on_rejoined, self.home = on_fetch, on_rejoined, home
        self.workers: list = []
        self._shared: dict = {}  # region-wide straggler draws, shared by the region's workers
        self._open: dict[int, tuple[str, float]] = {}  # worker -> (kind, since) while down
        self._speeds: list[Speed | None] = [None] * len(nodes)
        self._link_spans: list[FaultSpan] = []
        self._open_links: dict[str, float] = {}
        self._fetching: dict[int, tuple[int, simpy.Event, simpy.Event]] = {}  # worker -> (peer, fetch, lost)

    # ------------------------------------------------------------------ step times
    def multiplier(self, i: int) -> float:
        return self.spec.node_step_time_multiplier.get(self.nodes[i], 1.0)

    def step_work(self, i: int, base_s: float) -> StepWork:
        """Work of worker i's k-th step (a constant when no straggler spec selects it)."""
        factors = []
        for n, st in enumerate(self.spec.stragglers):
            if st.factor is None or i not in _selected(st, self.nodes, self.region_of):
                continue
            node = self.nodes[i]
            if st.scope == "region":
                key = (n, self.region_of[node])
                shared = self._shared
                if key not in shared:
                    shared[key] = _SharedDraws(_sampler(st.factor, named_rng(self.seed, f"faults/stragglers/{n}/region/{key[1]}")))
                factors.append(shared[key])
            else:
                factors.append(_SharedDraws(_sampler(st.factor, named_rng(self.seed, f"faults/stragglers/{n}/{node}")),
                                            forget=True))
        return StepWork(base_s, factors)

    def elapsed(self, i: int) -> Callable[[float, float], float] | None:
        sources = [SlowPeriods(st.slow_periods, named_rng(self.seed, f"faults/slow/{n}/{self.nodes[i]}"))
                   for n, st in enumerate(self.spec.stragglers)
                   if st.slow_periods is not None and i in _selected(st, self.nodes, self.region_of)]
        if not sources:
            return None
        self._speeds[i] = Speed(sources)
        return self._speeds[i].elapsed

    # ------------------------------------------------------------------ failures and churn
    def start(self, workers: list, barrier, net, fetch_bytes: float) -> None:
        """Start one availability process per node that can go down (of ``workers``, built with
        this model's ``rejoin``), and one outage process per flaky link; a returning worker
        fetches ``fetch_bytes`` over ``net``."""
        self.workers, self.barrier, self.net = workers, barrier, net
        self.fetch_bytes = fetch_bytes
        f = self.spec
        random_nodes = set(_selected(f.failures, self.nodes, self.region_of)) if f.failures and f.failures.mtbf_s else set()
        for i, node in enumerate(self.nodes):
            windows: list[tuple[float, float, str]] = []
            if f.failures is not None:
                windows += [(w.start_s, math.inf if w.end_s is None else w.end_s, "failure")
                            for w in f.failures.schedule if w.node == node]
            for m in f.churn:
                if m.node == node:
                    windows += [(s, math.inf if e is None else e, "churn") for s, e in m.absent()]
            if windows or i in random_nodes:
                self.env.process(self._availability(workers[i], sorted(windows), i in random_nodes))
        for lf in f.links:
            if lf.mtbf_s is not None:
                self.env.process(self._flaps(lf))

    def _availability(self, worker, windows: list[tuple[float, float, str]], random: bool) -> Generator:
        env, f = self.env, self.spec.failures
        g = named_rng(self.seed, f"faults/failures/{worker.node}") if random else None
        pending = list(windows)
        while True:
            t_random = env.now + float(g.exponential(f.mtbf_s)) if random else math.inf
            t_window = pending[0][0] if pending else math.inf
            if math.isinf(t_random) and math.isinf(t_window):
                return
            if t_window <= t_random:
                start, end, kind = pending.pop(0)
                start = max(start, env.now)
            else:
                start, end, kind = t_random, t_random + float(g.exponential(f.mttr_s)), "failure"
            if start > env.now:
                yield env.timeout(start - env.now)
            while pending and pending[0][0] <= end:  # windows that begin while it is down extend it
                end = max(end, pending.pop(0)[1])
            self._open[worker.index] = (kind, env.now)
            worker.fail()
            self._peer_failed(worker.index)
            if math.isinf(end):
                return
            yield env.timeout(end - env.now)
            del self._open[worker.index]
            self.recorder.faults.append(FaultSpan(kind, worker.index, worker.node, start, env.now))
            worker.revive()

    def _peer_failed(self, index: int) -> None:
        """Worker ``index`` failed: the fetches from it stop where they are."""
        for w, (peer, fetch, lost) in list(self._fetching.items()):
            if peer == index and not lost.triggered:
                self.net.cancel(fetch)
                lost.succeed()

    def _peer(self, w):
        """Whom ``w`` fetches from: the live worker nearest by route latency (ties: lowest
        index) among those at least as far as ``w`` had got; if none is, the furthest
        live worker (``w`` waits for it). None: nobody is up."""
        live = [p for p in self.workers if p is not w and p.up and self.barrier.up[p.index]]
        ahead = [p for p in live if p.steps_done >= w.progress]
        if ahead:
            return min(ahead, key=lambda p: (self.net.route_latency_s(p.node, w.node), p.index))
        return max(live, key=lambda p: (p.steps_done, -p.index)) if live else None

    def rejoin(self, w) -> Generator:
        """Come back: wait until some live peer has got as far as ``w`` had (so no step is
        done twice), fetch its parameters, go on from its step. A fetch stops where it is
        when ``w`` fails (the interrupt goes on to the worker) or when the peer fails (then
        ``w`` fetches again, from the peer chosen now): no byte to or from a down node. With a
        home server (methods with servers): fetch the server's current model at once and go on
        from its own step (servers do not fail)."""
        start = self.env.now
        server = self.home(w.index) if self.home is not None else None
        if server is not None:
            w.tracker.set("comm_blocked")
            step = w.progress
            if self.on_fetch is not None:
                self.on_fetch(w.index, server, step)
            nbytes, peer_node = self.fetch_bytes, server
            fetch = self.net.transfer(server, w.node, nbytes, f"recovery:{w.index}")
            try:
                yield fetch
            except simpy.Interrupt:  # w failed while fetching: the fetch stops where it is
                self.net.cancel(fetch)
                raise
        while server is None:
            while True:
                peer = self._peer(w)
                if peer is None or peer.steps_done >= w.progress:
                    break
                w.tracker.set("straggler_wait")
                yield peer.reached(w.progress)  # fires early if the peer fails: choose again
            w.tracker.set("comm_blocked")
            # the step it goes on from is decided now, with the parameters' snapshot
            step = w.progress if peer is None else peer.steps_done
            if self.on_fetch is not None:
                self.on_fetch(w.index, None if peer is None else peer.index, step)
            if peer is None:  # nobody up to fetch from: go on from its own parameters
                nbytes, peer_node = 0.0, ""
                break
            nbytes, peer_node = self.fetch_bytes, peer.node
            fetch = self.net.transfer(peer.node, w.node, nbytes, f"recovery:{w.index}")
            lost = self.env.event()  # fires if the peer fails before the fetch is in
            self._fetching[w.index] = (peer.index, fetch, lost)
            try:
                yield fetch | lost
            except simpy.Interrupt:  # w failed while fetching: the fetch stops where it is
                self.net.cancel(fetch)
                raise
            finally:
                del self._fetching[w.index]
            if fetch.triggered:
                break
            # the peer failed: its flow was called off; choose a peer again
        w.steps_done = step
        w.tracker.step = step
        self.barrier.member_up(w.index, step)
        if self.on_rejoined is not None:
            self.on_rejoined(w.index)
        self.recorder.recoveries.append(Recovery(w.index, w.node, peer_node, start, self.env.now, nbytes, step))

    # ------------------------------------------------------------------ links
    def _flaps(self, lf) -> Generator:
        env, net = self.env, self.net
        d = net.graph.edges[lf.a, lf.b]
        g = named_rng(self.seed, f"faults/links/{lf.a}-{lf.b}")
        name = f"{lf.a}<->{lf.b}"
        while True:
            yield env.timeout(float(g.exponential(lf.mtbf_s)))
            start, end = env.now, env.now + float(g.exponential(lf.mttr_s))
            if not end > start:
                continue
            # the edge's own outages list: the network's bandwidth series playback sees it too
            d.setdefault("outages", []).append((start, end))
            net.set_bandwidth_gbps(lf.a, lf.b, 0.0)
            self._open_links[name] = start
            yield env.timeout(end - start)
            del self._open_links[name]
            net.set_bandwidth_gbps(lf.a, lf.b, net.bandwidth_at(lf.a, lf.b, env.now))
            self.recorder.faults.append(FaultSpan("link_outage", -1, name, start, end))

    # ------------------------------------------------------------------ end of run
    def finish(self, link_windows: list[FaultSpan] = ()) -> None:
        """Record what is still going on at the end of the run, clipped to now (idempotent)."""
        if getattr(self, "_finished", False):
            return
        self._finished = True
        now = self.env.now
        for i, (kind, since) in sorted(self._open.items()):
            self.recorder.faults.append(FaultSpan(kind, i, self.nodes[i], since, now))
        for name, since in sorted(self._open_links.items()):
            self.recorder.faults.append(FaultSpan("link_outage", -1, name, since, now))
        for s in link_windows:
            if s.start_s < now:
                self.recorder.faults.append(FaultSpan(s.kind, s.worker, s.node, s.start_s, min(s.end_s, now), s.factor))
        for i, speed in enumerate(self._speeds):
            if speed is None:
                continue
            for src in speed.sources:
                for s, e in zip(src.starts, src.ends):
                    if s < now:
                        self.recorder.faults.append(FaultSpan("slow_period", i, self.nodes[i], s, min(e, now),
                                                              src.spec.factor))

    @property
    def anyone_down(self) -> bool:
        return any(not w.up for w in self.workers)


def fetch_bytes(params: int) -> float:
    """Bytes a rejoining worker fetches: the parameters in fp32."""
    return float(payload_bytes(params, "fp32"))
