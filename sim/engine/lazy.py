"""A worker's steps with their boundaries left out where nobody looks at them (issue 26).

``train_lazy(worker)`` is ``Worker._train`` (``sim.engine.node``) for runs in which nothing
looks at a step as it ends -- the worker's ``quiet`` set: timing-only, no token budget, no
failures (``sim.build.assemble``). The worker wakes only where it acts on the world: to release
a send, or at a need whose result had not arrived when the worker got there in virtual time.
Everything between two wakes is computed as one SimPy timeout that lands exactly where the
plain loop's timeouts, added one at a time, would have landed; the steps that ended on the way
are reported in batches (``report``; ``Worker.steps_done`` reports those ended by now when read).

At layer grain with Streaming DiLoCo (a fragment sent or applied at 48 of every 100 steps, its
layer needed at the next step's forward) this turns ~6 events per sync into 2: the send and
the need. The tests that hold it to the plain loop: tests/test_scale.py (coalescing on and off,
every method, stragglers, slow periods, link outages and bandwidth windows, at both grains)
and tests/test_fast_paths.py (against ``Worker._train_reference``).
"""

from __future__ import annotations

import math
from typing import Generator

import numpy as np

from sim.schedule import NOTHING

_BLOCK = 8
"""Quiet stretches at least this long take their end times from the step-time block at once
(numpy) in ``train_lazy``; shorter ones go step by step (cheaper for a few)."""

_LEAD = 512
"""``train_lazy`` wakes at least once every this many steps, even where nothing happens
(a run stopped by ``env.run(until=...)`` finds it at most that far ahead)."""


def point_order(point: tuple) -> tuple:
    return point[0], point[1]


def delay_to(now: float, end: float) -> float | None:
    """A delay d with now + d == end exactly in floating point (what a timeout adds), or None."""
    d = end - now
    for _ in range(4):
        got = now + d
        if got == end:
            return d
        d = math.nextafter(d, math.inf if got < end else -math.inf)
    return None


def advance(w, deltas: list[float], vt: float) -> Generator:
    """Bring the clock to ``vt`` (``env.now`` plus ``deltas`` added one at a time, the plain
    loop's timeouts) in one timeout that lands on it exactly (else in those timeouts, one
    each), then report the steps ended by then (``catch_up``)."""
    if deltas:
        d = deltas[0] if len(deltas) == 1 else delay_to(w.env.now, vt)
        if d is None:
            for x in deltas:
                yield w.env.timeout(x)
        else:
            yield w.env.timeout(d)
        deltas.clear()
    if w._stretch:
        report(w)


def report(w) -> None:
    """Report every step of the lazy stretch (all have ended by now: ``catch_up`` without the search)."""
    ends = w._stretch
    if ends:
        done = len(ends)
        first = w._steps_done + 1
        w.computed += done
        w._steps_done += done
        w.tracker.step = w._steps_done
        w.on_quiet(w.index, first, ends[:])
        ends.clear()


def train_lazy(w) -> Generator:
    """``Worker._train`` where nobody looks at a step as it ends (``quiet`` set: timing-only runs,
    no token budget, no failures): the worker wakes only where it acts on the world -- to
    release a send, or at a need whose result had not arrived when it got there in virtual
    time -- and computes everything between two such points as one timeout. Between them
    it keeps a virtual clock ``vt``: each timeout the plain loop would yield is added to it,
    one at a time, as SimPy adds a timeout to ``now`` (so every time is the plain loop's to
    the bit); the steps that end on the way are reported in batches (``report``: at step-end
    sends and every ``_LEAD`` steps; the tracker's step count is set at every wake, and
    ``Worker.steps_done`` reports the steps ended by now when read). A need whose collective had completed (its events processed) before the
    wake is met later too, so it is passed without waking. Nothing lazy reaches the run's
    time budget (``horizon``): a timeout that would end at or past it is yielded as the plain
    loop yields it. Quiet stretches of ``_BLOCK`` or more steps take their end times from the
    step-time block, as ``_quiet_stretch`` does. The same wakes, times and records as
    ``Worker._train``, with fewer SimPy events (tests/test_scale.py, tests/test_fast_paths.py,
    tests/test_lazy_steps.py)."""
    env, index, tracker, in_flight = w.env, w.index, w.tracker, w.in_flight
    timeout, arrive, elapsed = env.timeout, w.barrier.arrive, w.elapsed
    quiet, plan_of, step_time = w.quiet, w.plan, w.step_time_s
    block = step_time.block if elapsed is None and hasattr(step_time, "block") else None
    same = step_time.base_s if getattr(step_time, "factors", None) == [] else None  # every step's work, when equal
    horizon = math.inf if w.horizon is None else w.horizon()
    ends = w._stretch  # end times of steps done in virtual time, not reported yet
    deltas: list[float] = []  # the plain loop's timeouts from env.now to vt, in order
    vt = env.now
    step = w._steps_done + len(ends) + 1
    computed = w.computed + len(ends)
    carried: list = []  # needs of the last step that this one waits for mid-step (layer grain)
    known_quiet = 0  # steps from ``step`` on known to have empty plans (a stretch of 2 or more)
    while True:
        if tracker.state != "compute":
            tracker.set("compute")
        if not carried and not known_quiet:
            known_quiet = quiet(index, step)
            if known_quiet >= _BLOCK and block is not None:
                new = np.cumsum(np.concatenate([[vt], block(computed, known_quiet)]))
                n = int(np.searchsorted(new[1:], horizon, side="left"))
                if n:  # (the steps that end before the horizon)
                    new = new[:n + 1].tolist()
                    ends.extend(new[1:])
                    deltas.extend(x for x in block(computed, n).tolist() if x > 0)  # (a fallback's timeouts)
                    vt = new[-1]
                    step += n
                    computed += n
                    known_quiet -= n
                    if len(ends) >= _LEAD:
                        yield from advance(w, deltas, vt)
                    continue
            if known_quiet < 2:  # (one step: asked of the plan itself, as the plain loop does)
                known_quiet = 0
        if known_quiet:
            known_quiet -= 1
            plan = NOTHING
        else:
            plan = plan_of(index, step)
        work = step_time(computed) if same is None else same
        if plan is NOTHING and not carried:  # a step that only takes its time
            d = work if elapsed is None else elapsed(vt, work)
            if d > 0:
                if vt + d >= horizon:
                    yield from advance(w, deltas, vt)
                    yield timeout(d)
                else:
                    deltas.append(d)
                vt += d
            ends.append(vt)
            computed += 1
            step += 1
            if len(ends) >= _LEAD:
                yield from advance(w, deltas, vt)
            continue
        points = [(f, 1, send) for f, send in plan.during] if plan.during else ()
        if carried:
            points = sorted([(need.at, 0, need) for need in carried] + list(points), key=point_order)
            carried = []
        t0 = vt
        w0 = 0.0  # work done before the current stretch began
        done_s = 0.0
        for fraction, is_send, item in points:
            offset = fraction * work - w0
            if elapsed is not None:
                offset = elapsed(t0, offset)
            if offset > done_s:
                d = offset - done_s
                if vt + d >= horizon:  # as the plain loop: never lazily at or past the budget
                    yield from advance(w, deltas, vt)
                    yield timeout(d)
                else:
                    deltas.append(d)
                vt += d
                done_s = offset
            key = (item.stream, item.round, item.part)
            if is_send:  # e.g. a layer's part released as its backward is done: at its time
                d = (deltas[0] if len(deltas) == 1 else delay_to(env.now, vt)) if deltas else 0.0
                if d:  # (the one timeout that lands on vt; else the plain loop's, in _advance)
                    yield timeout(d)
                    deltas.clear()
                elif deltas:
                    yield from advance(w, deltas, vt)
                tracker.step = w._steps_done + len(ends)  # (reported in batches: _report)
                in_flight[key] = arrive(item, index, step)
                w.sent_step = step
                continue
            got = in_flight.get(key)
            if got is None or got[0].callbacks is not None or got[1].callbacks is not None:
                # not here yet: look again at its time
                d = (deltas[0] if len(deltas) == 1 else delay_to(env.now, vt)) if deltas else 0.0
                if d:
                    yield timeout(d)
                    deltas.clear()
                elif deltas:
                    yield from advance(w, deltas, vt)
                tracker.step = w._steps_done + len(ends)  # (reported in batches: _report)
                got = in_flight.get(key)
            if got is not None and got[0].callbacks is None and got[1].callbacks is None:
                del in_flight[key]  # started and done (processed): nothing to wait for
                continue
            before = env.now
            if got is None:
                yield from w._wait_for(item)  # (never sent: a schedule bug)
            else:  # _wait_for, inline: the group's stragglers, then the wire
                del in_flight[key]
                if got[0].callbacks is not None:
                    tracker.set("straggler_wait")
                    yield got[0]
                if got[1].callbacks is not None:
                    tracker.set("comm_blocked")
                    yield got[1]
            tracker.set("compute")
            vt = env.now
            if vt > before:  # stalled: the rest of the step starts now
                t0, w0, done_s = vt, fraction * work, 0.0
        duration = work - w0
        if elapsed is not None:
            duration = elapsed(t0, duration)
        if duration > done_s:
            d = duration - done_s
            if vt + d >= horizon:
                yield from advance(w, deltas, vt)
                yield timeout(d)
            else:
                deltas.append(d)
            vt += d
        ends.append(vt)  # this step is done at vt (reported at the next wake)
        computed += 1
        if plan.sends or len(ends) >= _LEAD:  # (a worker that never acts still wakes now and then)
            yield from advance(w, deltas, vt)
            for send in plan.sends:
                in_flight[(send.stream, send.round, send.part)] = arrive(send, index, step)
        for need in plan.needs:
            if need.at > 0:  # needed only at a layer's forward in the next step
                carried.append(need)
                continue
            key = (need.stream, need.round, need.part)
            got = in_flight.get(key)
            if got is None or got[0].callbacks is not None or got[1].callbacks is not None:
                yield from advance(w, deltas, vt)
                got = in_flight.get(key)
            if got is not None and got[0].callbacks is None and got[1].callbacks is None:
                del in_flight[key]
                continue
            yield from w._wait_for(need)
            vt = env.now
        step += 1
