"""A GPU node running one worker (one model replica), as a SimPy process.

The worker reads like SimPy's machine-shop example: yield a timeout for an inner step's
compute, tell the numerics a step is done (they run lazily, later, batched), and every
``sync_every`` steps arrive at the barrier and wait for the collective.

At every instant a worker is in exactly one state, so per worker the state durations sum
to the run's simulated duration:
- ``compute``: running an inner step;
- ``idle``: at the barrier, waiting for the slowest worker to arrive (straggler-wait);
- ``comm_blocked``: the collective is on the wire and this worker waits for it;
- ``down``: failed (used by the faults module).
"""

from __future__ import annotations

from typing import Callable, Generator

import simpy

from sim.engine.collectives import SyncBarrier
from sim.metrics.records import Recorder, StateSpan

STATES = ("compute", "comm_blocked", "idle", "down")


class StateTracker:
    """Keeps one worker's current state and appends a span whenever it changes."""

    def __init__(self, env: simpy.Environment, worker: int, node: str, recorder: Recorder, state: str = "idle"):
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
    """One replica on one node. ``step_time_s(step)`` gives each inner step's duration."""

    def __init__(self, env: simpy.Environment, index: int, node: str, step_time_s: Callable[[int], float],
                 sync_every: int, barrier: SyncBarrier, on_step: Callable[[int, int, float], None],
                 recorder: Recorder):
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1 (got {sync_every})")
        self.env, self.index, self.node = env, index, node
        self.step_time_s = step_time_s
        self.sync_every = sync_every
        self.barrier = barrier
        self.on_step = on_step
        self.tracker = StateTracker(env, index, node, recorder)
        self.steps_done = 0
        self.rounds_done = 0
        self.process = env.process(self.run())

    def run(self) -> Generator:
        while True:
            self.tracker.set("compute")
            yield self.env.timeout(self.step_time_s(self.steps_done))
            self.steps_done += 1
            self.tracker.step = self.steps_done
            self.on_step(self.index, self.steps_done, self.env.now)
            if self.steps_done % self.sync_every == 0:
                self.tracker.set("idle")
                started, done = self.barrier.arrive(self.node, self.rounds_done)
                yield started
                self.tracker.set("comm_blocked")
                yield done
                self.rounds_done += 1
