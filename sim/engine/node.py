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

from typing import Callable, Generator

import simpy

from sim.engine.sync import SyncBarrier
from sim.metrics.records import Recorder, StateSpan

STATES = ("compute", "comm_blocked", "straggler_wait", "down")


class StateTracker:
    """Keeps one worker's current state and appends a span whenever it changes."""

    def __init__(self, env: simpy.Environment, worker: int, node: str, recorder: Recorder, state: str = "straggler_wait"):
        self.env, self.worker, self.node, self.recorder = env, worker, node, recorder
        self.state = state
        self.since = env.now
        self.step = 0

    def set(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown state '{state}'; states: {', '.join(STATES)}")
        if state == self.state:
            return
        self._close()
        self.state, self.since = state, self.env.now

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
    """

    def __init__(self, env: simpy.Environment, index: int, node: str, step_time_s: Callable[[int], float],
                 plan: Callable[[int, int], object], barrier: SyncBarrier,
                 on_step: Callable[[int, int, float, object], None], recorder: Recorder,
                 elapsed: Callable[[float, float], float] | None = None):
        self.env, self.index, self.node = env, index, node
        self.step_time_s = step_time_s
        self.elapsed = elapsed
        self.plan = plan
        self.barrier = barrier
        self.on_step = on_step
        self.tracker = StateTracker(env, index, node, recorder)
        self.steps_done = 0
        self.computed = 0  # steps actually computed here (a rejoin may jump steps_done ahead)
        self.sent_step = 0  # the latest step it sent anything for (ddp buckets leave mid-step)
        self.up = True
        self.rejoins = 0
        self.rejoin: Callable[["Worker"], Generator] | None = None
        self.on_down: Callable[[int], None] | None = None
        self._revived: simpy.Event | None = None
        self._watchers: list[tuple[int, simpy.Event]] = []
        self.in_flight: dict[tuple[str, int], tuple[simpy.Event, simpy.Event]] = {}
        self.process = env.process(self.run())

    # ------------------------------------------------------------------ faults
    def fail(self) -> None:
        """Stop computing and communicating now (the faults module calls this; never while down)."""
        if not self.up:
            raise RuntimeError(f"worker {self.index} failed while already down")
        self.up = False
        self.process.interrupt("down")
        self._notify()

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
        if self.up or self._revived is None:
            raise RuntimeError(f"worker {self.index} revived while up")
        self.up = True
        self._revived.succeed()

    def run(self) -> Generator:
        rejoining = False
        while True:
            try:
                if rejoining:
                    if self.rejoin is not None:
                        yield from self.rejoin(self)
                    else:
                        self.barrier.member_up(self.index, self.steps_done)
                    rejoining = False
                    self.rejoins += 1
                yield from self._train()
            except simpy.Interrupt:
                # Down: what it was computing is lost; the collectives it already sent to go on
                # with its contribution (they do not wait for it any more), it waits for nothing.
                self.tracker.set("down")
                self.in_flight.clear()
                self.barrier.member_down(self.index)
                if self.on_down is not None:
                    self.on_down(self.index)
                self._revived = self.env.event()
                yield self._revived
                self._revived = None
                rejoining = True

    def _train(self) -> Generator:
        while True:
            self.tracker.set("compute")
            plan = self.plan(self.index, self.steps_done + 1)
            work = self.step_time_s(self.computed)
            t0 = self.env.now
            at = (lambda w: w) if self.elapsed is None else (lambda w: self.elapsed(t0, w))
            done_s = 0.0
            for fraction, send in plan.during:  # e.g. gradient buckets released during backward
                offset = at(fraction * work)
                if offset > done_s:
                    yield self.env.timeout(offset - done_s)
                    done_s = offset
                self.in_flight[(send.stream, send.round)] = self.barrier.arrive(send, self.index, self.steps_done + 1)
                self.sent_step = self.steps_done + 1
            duration = at(work)
            if duration > done_s:
                yield self.env.timeout(duration - done_s)
            self.computed += 1
            self.steps_done += 1
            self.tracker.step = self.steps_done
            if self._watchers:
                self._notify()
            self.on_step(self.index, self.steps_done, self.env.now, plan)
            for send in plan.sends:
                self.in_flight[(send.stream, send.round)] = self.barrier.arrive(send, self.index, self.steps_done)
            for need in plan.needs:
                key = (need.stream, need.round)
                if key not in self.in_flight:
                    if self.rejoins:  # sent before it came back with a peer's parameters: nothing to wait for
                        continue
                    raise RuntimeError(f"worker {self.index} needs {need.stream}:{need.round} at step "
                                       f"{self.steps_done} but never sent it (schedule bug)")
                started, done = self.in_flight.pop(key)
                if not started.processed:
                    self.tracker.set("straggler_wait")
                    yield started
                if not done.processed:
                    self.tracker.set("comm_blocked")
                    yield done
