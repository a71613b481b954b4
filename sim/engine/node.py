"""A GPU node running one worker (one model replica), as a SimPy process.

The worker reads like SimPy's machine-shop example: yield a timeout for an inner step's
compute, tell the numerics a step is done (they run lazily, later, batched), send what
the schedule says to send, and wait for what it says the next step needs.

At every instant a worker is in exactly one state, so per worker the state durations sum
to the run's simulated duration:
- ``compute``: running an inner step;
- ``straggler_wait``: needs a result whose collective waits for a slower group member to send;
- ``comm_blocked``: the collective is on the wire and this worker waits for it;
- ``down``: failed or absent (``engine.faults``); fetching parameters after coming back is
  ``comm_blocked``.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable, Generator

import numpy as np
import simpy

from sim.engine.lazy import delay_to as _delay_to, point_order as _point_order, train_lazy
from sim.engine.sync import SyncBarrier
from sim.metrics.records import STATES, Recorder, StateSpan
from sim.schedule import NOTHING, StepPlan


FAST_STEPS = True
"""False: workers run ``Worker._train_reference``, the step loop as first written (tests
compare the two: the same events to the bit)."""

class StateTracker:
    """Keeps one worker's current state and appends a span whenever it changes."""

    def __init__(self, env: simpy.Environment, worker: int, node: str, recorder: Recorder, state: str = "straggler_wait"):
        self.env, self.worker, self.node, self.recorder = env, worker, node, recorder
        self.state = state
        self.since = env.now
        self.step = 0

    def set(self, state: str) -> None:
        if state == self.state:  # (always a known one)
            return
        if state not in STATES:
            raise ValueError(f"unknown state '{state}'; states: {', '.join(STATES)}")
        now = self.env.now
        if now > self.since:  # (_close, inline: a state changes twice at every wait)
            self.recorder.states.append(StateSpan(self.worker, self.node, self.state, self.since, now, self.step))
        self.state, self.since = state, now

    def _close(self) -> None:
        if self.env.now > self.since:
            self.recorder.states.append(StateSpan(self.worker, self.node, self.state, self.since, self.env.now, self.step))

    def finish(self) -> None:
        """Close the open span at the current time (end of run)."""
        self._close()
        self.since = self.env.now


class Worker:
    """One replica on one node. ``step_time_s(k)`` gives the work (seconds at full speed) of
    the k-th step this worker computes; ``elapsed(t0, work)`` the wall time that work takes
    from t0 (default: the work itself; slow periods stretch it, see ``engine.faults``).

    After every step the worker asks ``plan(worker, step)`` what to do (a schedule's
    ``StepPlan``: sends and needs), tells ``on_step`` (the numerics queue the step and
    the algorithm's ops), arrives at every collective it sends to -- without waiting --
    and then waits for each result it needs before its next step: first for the group's
    stragglers (``straggler_wait``), then for the wire (``comm_blocked``).

    Failures are interrupts (``fail``): the worker drops the step it was computing and
    whatever it was waiting for, and is ``down`` until ``revive``; then ``rejoin`` (a
    process body given by the faults module) fetches parameters from a live peer and
    sets the step it goes on from, before it computes again.

    Quiet stretches: with ``quiet`` set (``quiet(worker, step)``: how many steps from
    ``step`` on have empty plans), the worker computes such steps as one timeout that
    ends exactly when the last of them would have (their end times summed one step at a
    time, as the plain loop would, and never at or past ``horizon()``), then reports each
    step to ``on_step`` with its own end time. Anything that reads its progress while a
    stretch runs calls ``catch_up`` first (``finish`` does). The run's assembly
    (``sim.build.assemble``) gives ``quiet`` only where no one else looks at a step as it
    ends (timing-only runs, no token budget, no failures that need a peer's progress), so
    the timeline is the same.

    Everything a worker is told comes through its constructor (the assembly builds it fully
    wired): its schedule (``plan``), its barrier, the run's events (``on_step``, ``on_down``,
    ``on_quiet``), the fault model's ``rejoin`` and ``elapsed``.
    """

    def __init__(self, env: simpy.Environment, index: int, node: str, step_time_s: Callable[[int], float],
                 plan: Callable[[int, int], StepPlan], barrier: SyncBarrier,
                 on_step: Callable[[int, int, float, StepPlan], None], recorder: Recorder,
                 elapsed: Callable[[float, float], float] | None = None,
                 rejoin: Callable[["Worker"], Generator] | None = None, on_down: Callable[[int], None] | None = None,
                 quiet: Callable[[int, int], int] | None = None, on_quiet: Callable[[int, int, list[float]], None] | None = None,
                 horizon: Callable[[], float] | None = None):
        self.env, self.index, self.node = env, index, node
        self.step_time_s = step_time_s
        self.elapsed = elapsed
        self.plan = plan
        self.barrier = barrier
        self.on_step = on_step
        self.tracker = StateTracker(env, index, node, recorder)
        self._steps_done = 0
        self.computed = 0  # steps actually computed here (a rejoin may jump steps_done ahead)
        self.sent_step = 0  # the latest step it sent anything for (ddp buckets leave mid-step)
        self.up = True
        self.rejoins = 0
        self.rejoin = rejoin
        self.on_down = on_down
        self._revived: simpy.Event | None = None
        self._watchers: list[tuple[int, simpy.Event]] = []
        self.in_flight: dict[tuple[str, int, int], tuple[simpy.Event, simpy.Event]] = {}
        self.quiet, self.on_quiet, self.horizon = quiet, on_quiet, horizon
        self._stretch: list[float] = []  # end times of the steps of the running quiet stretch
        self.process = env.process(self.run())

    # ------------------------------------------------------------------ faults
    def fail(self) -> None:
        """Stop computing and communicating now (the faults module calls this; never while down)."""
        if not self.up:
            raise RuntimeError(f"worker {self.index} failed while already down")
        self.up = False
        # The event its revival fires, made now rather than when the worker handles the interrupt:
        # a revive and a new failure in the same instant (a failure rate far above the step rate)
        # may both come before the worker runs again, and each must find its own event.
        self._revived = self.env.event()
        self.process.interrupt("down")
        self._notify()

    @property
    def steps_done(self) -> int:
        """Steps done by now (the steps of a lazy or quiet stretch that have ended are reported
        first: ``catch_up``)."""
        if self._stretch:
            self.catch_up()
        return self._steps_done

    @steps_done.setter
    def steps_done(self, value: int) -> None:
        self._steps_done = value

    @property
    def progress(self) -> int:
        """Steps done, counting a step whose sends have begun as done (a worker that comes
        back must not send for it again)."""
        return max(self.steps_done, self.sent_step)

    def reached(self, step: int) -> simpy.Event:
        """An event that fires once this worker has done ``step`` steps, or when it fails."""
        ev = self.env.event()
        if self.steps_done >= step or not self.up:
            ev.succeed()
        else:
            self._watchers.append((step, ev))
        return ev

    def _notify(self) -> None:
        keep = []
        for step, ev in self._watchers:
            if self.steps_done >= step or not self.up:
                ev.succeed()
            else:
                keep.append((step, ev))
        self._watchers = keep

    def revive(self) -> None:
        """Come back up: the worker fetches parameters (``rejoin``) and goes on."""
        if self.up or self._revived is None or self._revived.triggered:
            raise RuntimeError(f"worker {self.index} revived while up")
        self.up = True
        self._revived.succeed()

    def run(self) -> Generator:
        # "up": training; "down": waiting to be revived; "rejoining": fetching parameters.
        # Every wait is inside the try, so a failure can land in any of them -- also one that
        # comes in the same instant as the revival, before this process ran again.
        phase = "up"
        while True:
            try:
                if phase == "down":
                    yield self._revived
                    phase = "rejoining"
                if phase == "rejoining":
                    if self.rejoin is not None:
                        yield from self.rejoin(self)
                    else:
                        self.barrier.member_up(self.index, self.steps_done)
                    phase = "up"
                    self.rejoins += 1
                if FAST_STEPS and self.quiet is not None and self.on_quiet is not None and not self._watchers:
                    yield from train_lazy(self)  # (nobody looks at a step as it ends: sim.engine.lazy)
                else:
                    yield from self._train()
            except simpy.Interrupt:
                if phase == "down":  # failed again before it ran after its revival: still down, told once
                    continue
                # Down: what it was computing is lost; the collectives it already sent to go on
                # with its contribution (they do not wait for it any more), it waits for nothing.
                phase = "down"
                self.tracker.set("down")
                self.in_flight.clear()
                self.barrier.member_down(self.index)
                if self.on_down is not None:
                    self.on_down(self.index)

    # ------------------------------------------------------------------ quiet stretches
    def _quiet_stretch(self) -> Generator:
        """Compute the coming steps with empty plans as one timeout (see the class doc)."""
        k = self.quiet(self.index, self.steps_done + 1)
        if k < 2:
            return
        horizon = math.inf if self.horizon is None else self.horizon()
        t = self.env.now
        if self.elapsed is None and hasattr(self.step_time_s, "block"):
            # the plain loop's sums, t + w1 + w2 + ..., left to right (numpy's cumsum adds in order)
            ends = np.cumsum(np.concatenate([[t], self.step_time_s.block(self.computed, k)]))[1:]
            ends = ends[:int(np.searchsorted(ends, horizon, side="left"))].tolist()
        else:
            ends = []
            for j in range(k):
                work = self.step_time_s(self.computed + j)
                nxt = t + (work if self.elapsed is None else self.elapsed(t, work))
                if nxt >= horizon:
                    break
                ends.append(nxt)
                t = nxt
        delay = _delay_to(self.env.now, ends[-1]) if len(ends) > 1 else None
        if delay is None:
            return  # (one step, or no delay lands exactly on the end: the plain loop does it)
        self.tracker.set("compute")
        self._stretch = ends
        try:
            yield self.env.timeout(delay)
        finally:
            self.catch_up()  # all of them, or (interrupted) those done by now
            self._stretch = []

    def catch_up(self) -> None:
        """Report the steps of a running quiet stretch that have ended by now (all at once to
        ``on_quiet(worker, first step, end times)`` when set, else one ``on_step`` each)."""
        ends = self._stretch
        done = bisect.bisect_right(ends, self.env.now)
        if not done:
            return
        first = self._steps_done + 1
        self.computed += done
        self._steps_done += done
        self.tracker.step = self._steps_done
        if self.on_quiet is not None:
            self.on_quiet(self.index, first, ends[:done])
        else:
            for j in range(done):
                self.on_step(self.index, first + j, ends[j], NOTHING)
        del ends[:done]

    def finish(self) -> None:
        """End of run: report the steps done and close the open state span."""
        self.catch_up()
        self.tracker.finish()

    def _wait_for(self, need) -> Generator:
        """Wait for the result of ``need``: first for the group's stragglers, then the wire."""
        key = (need.stream, need.round, need.part)
        if key not in self.in_flight:
            if self.rejoins:  # sent before it came back with a peer's parameters: nothing to wait for
                return
            raise RuntimeError(f"worker {self.index} needs {need.stream}:{need.round} (part {need.part}) at step "
                               f"{self.steps_done} but never sent it (schedule bug)")
        started, done = self.in_flight.pop(key)
        if not started.processed:
            self.tracker.set("straggler_wait")
            yield started
        if not done.processed:
            self.tracker.set("comm_blocked")
            yield done

    def _train(self) -> Generator:
        if not FAST_STEPS:
            yield from self._train_reference()
            return
        # The same waits as ``_train_reference``, yielded at the same moments (so every event
        # is created, and every tie in time broken, as there), with the per-point work cut:
        # a need whose result is already here costs a dict lookup, not a ``_wait_for``
        # generator and a state change that changes nothing.
        env, index, tracker, in_flight = self.env, self.index, self.tracker, self.in_flight
        timeout, arrive, elapsed = env.timeout, self.barrier.arrive, self.elapsed
        carried: list = []  # needs of the last step that this one waits for mid-step (layer grain)
        while True:
            if self.quiet is not None and not carried and not self._watchers:
                yield from self._quiet_stretch()
            if tracker.state != "compute":
                tracker.set("compute")
            step = self.steps_done + 1  # (only a failure, which leaves this loop, changes it mid-step)
            plan = self.plan(index, step)
            work = self.step_time_s(self.computed)
            # What happens at a fraction of the step's compute, in order: sends released (ddp's
            # buckets, layer-grain outer parts as their backward finishes) and results needed
            # (at a layer's forward). A wait mid-step pauses the compute, which then goes on for
            # the work left; offsets are measured from the start of the current stretch.
            points = [(f, 1, send) for f, send in plan.during]
            if carried:
                points = sorted([(need.at, 0, need) for need in carried] + points, key=_point_order)
                carried = []
            t0 = env.now
            w0 = 0.0  # work done before the current stretch began
            done_s = 0.0
            for fraction, is_send, item in points:
                offset = fraction * work - w0
                if elapsed is not None:
                    offset = elapsed(t0, offset)
                if offset > done_s:
                    yield timeout(offset - done_s)
                    done_s = offset
                key = (item.stream, item.round, item.part)
                if is_send:  # e.g. a gradient bucket released as its layer's backward is done
                    in_flight[key] = arrive(item, index, step)
                    self.sent_step = step
                    continue
                got = in_flight.get(key)
                if got is not None and got[0].callbacks is None and got[1].callbacks is None:
                    del in_flight[key]  # started and done (processed): nothing to wait for
                    continue
                before = env.now
                yield from self._wait_for(item)
                tracker.set("compute")
                if env.now > before:  # stalled: the rest of the step starts now
                    t0, w0, done_s = env.now, fraction * work, 0.0
            duration = work - w0
            if elapsed is not None:
                duration = elapsed(t0, duration)
            if duration > done_s:
                yield timeout(duration - done_s)
            self.computed += 1
            self.steps_done = step
            tracker.step = step
            if self._watchers:
                self._notify()
            self.on_step(index, step, env.now, plan)
            for send in plan.sends:
                in_flight[(send.stream, send.round, send.part)] = arrive(send, index, step)
            for need in plan.needs:
                if need.at > 0:  # needed only at a layer's forward in the next step
                    carried.append(need)
                    continue
                key = (need.stream, need.round, need.part)
                got = in_flight.get(key)
                if got is not None and got[0].callbacks is None and got[1].callbacks is None:
                    del in_flight[key]
                    continue
                yield from self._wait_for(need)

    def _train_reference(self) -> Generator:
        """``_train`` as first written (``FAST_STEPS = False``): the same yields, with a
        ``_wait_for`` generator and a state call at every need and a closure call at every
        point. The path the fast loop is tested against."""
        carried: list = []  # needs of the last step that this one waits for mid-step (layer grain)
        while True:
            if self.quiet is not None and not carried and not self._watchers:
                yield from self._quiet_stretch()
            self.tracker.set("compute")
            plan = self.plan(self.index, self.steps_done + 1)
            work = self.step_time_s(self.computed)
            # What happens at a fraction of the step's compute, in order: sends released (ddp's
            # buckets, layer-grain outer parts as their backward finishes) and results needed
            # (at a layer's forward). A wait mid-step pauses the compute, which then goes on for
            # the work left; offsets are measured from the start of the current stretch.
            points = [(f, 1, send) for f, send in plan.during]
            if carried:
                points = sorted([(need.at, 0, need) for need in carried] + points, key=lambda p: (p[0], p[1]))
                carried = []
            t0 = self.env.now
            w0 = 0.0  # work done before the current stretch began
            at = (lambda w: w) if self.elapsed is None else (lambda w: self.elapsed(t0, w))
            done_s = 0.0
            for fraction, is_send, item in points:
                offset = at(fraction * work - w0)
                if offset > done_s:
                    yield self.env.timeout(offset - done_s)
                    done_s = offset
                if is_send:  # e.g. a gradient bucket released as its layer's backward is done
                    self.in_flight[(item.stream, item.round, item.part)] = self.barrier.arrive(
                        item, self.index, self.steps_done + 1)
                    self.sent_step = self.steps_done + 1
                    continue
                before = self.env.now
                yield from self._wait_for(item)
                self.tracker.set("compute")
                if self.env.now > before:  # stalled: the rest of the step starts now
                    t0, w0, done_s = self.env.now, fraction * work, 0.0
                    at = (lambda w: w) if self.elapsed is None else (lambda w, t=t0: self.elapsed(t, w))
            duration = at(work - w0)
            if duration > done_s:
                yield self.env.timeout(duration - done_s)
            self.computed += 1
            self.steps_done += 1
            self.tracker.step = self.steps_done
            if self._watchers:
                self._notify()
            self.on_step(self.index, self.steps_done, self.env.now, plan)
            for send in plan.sends:
                self.in_flight[(send.stream, send.round, send.part)] = self.barrier.arrive(send, self.index,
                                                                                          self.steps_done)
            for need in plan.needs:
                if need.at > 0:  # needed only at a layer's forward in the next step
                    carried.append(need)
                    continue
                yield from self._wait_for(need)
