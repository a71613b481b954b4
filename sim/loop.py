"""The run loop: what a run does with the engine's events, and when it stops.

``RunLoop`` implements ``sim.engine.events.RunEvents``: every event of the assembled world
(``sim.build.assemble``) reaches it, and it turns them into the run's own accounting --
tokens, rounds (``sim.rounds.RoundCounter``), the numerics (``sim.adapter``, when on), the
first non-finite value -- and into the decision to stop. The stop conditions are in one
place (``_check_stop``, plus the ``run.max_sim_time_s`` timer in ``run``), and so is the
explanation of a run that ran out of events (``stall_reason``). No method-specific code:
everything it asks a method goes through the ``sim.algorithms.base.Algorithm`` hooks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from simpy.core import EmptySchedule

from sim.collector import fewer_collections
from sim.rounds import RoundCounter

if TYPE_CHECKING:
    import simpy

    from sim.adapter import NumericsAdapter
    from sim.algorithms.base import Algorithm
    from sim.build import World
    from sim.scenario import Scenario


_BATCH = 256  # events processed between two looks at the wall clock (progress)


class _Stopped(Exception):
    """Raised by the stop event's last callback: the run loop ends in the step that processed it."""


def _stopped(_event) -> None:
    raise _Stopped


@dataclass
class Progress:
    time_s: float
    rounds: int
    max_rounds: int | None
    max_time_s: float | None
    tokens: int
    max_tokens: int | None
    loss: float | None


class RunLoop:
    """One run's events, accounting and stop conditions (``RunEvents``).

    Built before the world it listens to (the world's entities are constructed with its
    methods as their callbacks), it is given that world once, by ``attach``, before anything
    runs; it asks the world only whether a group can still sync and, for ``stall_reason``,
    what its workers and links are doing.
    """

    def __init__(self, sc: Scenario, env: simpy.Environment, method: Algorithm, adapter: NumericsAdapter | None,
                 syncs_per_round: int, nobody_leaves: bool):
        self.sc, self.env, self.method, self.adapter = sc, env, method, adapter
        self.tokens_per_step = sc.compute.batch_size * sc.model.seq_len
        self.stop = env.event()
        self.tokens = 0
        self._token_budget = sc.run.max_tokens is not None
        self.step_done_times: list[float] = []  # end time of every step (numerics on: tokens at each loss)
        self.counter = RoundCounter(method, syncs_per_round, nobody_leaves, self._can_still_sync, lambda: env.now,
                                    self._round_done)
        self.world: World | None = None
        self.finished = False
        self.ended_early: str | None = None
        self.diverged: dict | None = None  # {step, time_s, what, value}: the first NaN / inf seen

    def attach(self, world: World) -> None:
        """The world this loop's events come from (once, before ``run``)."""
        if self.world is not None:
            raise RuntimeError("a run loop listens to one world")
        self.world = world

    # ------------------------------------------------------------------ stop conditions
    def _check_stop(self) -> None:
        """Stop at the end of this instant once a budget is spent: ``run.max_tokens`` tokens,
        ``run.max_rounds`` rounds, or a non-finite value with ``run.on_divergence: stop``
        (``run.max_sim_time_s`` is a timer, started by ``run``)."""
        if self.stop.triggered:
            return
        r = self.sc.run
        if ((r.max_tokens is not None and self.tokens >= r.max_tokens)
                or (r.max_rounds is not None and self.counter.rounds >= r.max_rounds)
                or (self.diverged is not None and r.on_divergence == "stop")):
            self.stop.succeed()

    def _time_up(self, _event) -> None:
        if not self.stop.triggered:
            self.stop.succeed()

    # ------------------------------------------------------------------ RunEvents
    def step_done(self, worker: int, step: int, time_s: float, plan) -> None:
        self.tokens += self.tokens_per_step
        if self.adapter is not None:
            self.step_done_times.append(time_s)
            self.adapter.on_step(worker, step, time_s, plan, self.evaluate)
        if self._token_budget:  # (a step changes nothing else a stop condition reads)
            self._check_stop()

    def quiet_steps(self, worker: int, first: int, ends: list[float]) -> None:
        """Steps ``first``.. of a quiet stretch ended at ``ends`` (timing-only: count them)."""
        self.tokens += self.tokens_per_step * len(ends)

    def sync_done(self, send, participants: tuple | None = None) -> None:
        if participants is not None and len(participants) == len(send.group):
            participants = None  # everyone took part: the plain (bitwise unchanged) path
        if self.adapter is not None:
            step = self.adapter.on_reduced(send, self.env.now, participants)
            if step is not None:
                self.evaluate(step)
        self.counter.on_sync(send)

    def member_down(self, worker: int) -> None:
        if self.adapter is not None:
            self.adapter.on_member_down(worker)
        self.counter.check()

    def member_up(self, worker: int) -> None:
        self.counter.check()

    def fetch(self, worker: int, peer: int | str | None, step: int) -> None:
        if isinstance(peer, str):  # a method with servers: the worker took its server's model
            self.method.rejoined(worker, peer, step)
        if self.adapter is not None:
            self.adapter.on_fetch(worker, peer, step)

    def served(self, server: str, message, served, time_s: float) -> None:
        if self.adapter is not None:
            self.adapter.on_served(server, message, served, time_s)
        if served.counts:
            self.counter.on_updates(served.counts, len(self.world.workers))

    def departed(self, server: str, messages, time_s: float) -> None:
        self.method.departed(server, messages, time_s)
        if self.adapter is not None:
            self.adapter.on_departed(server, messages, time_s)

    def delivered(self, message, time_s: float) -> None:
        if self.adapter is not None:
            self.adapter.on_delivered(message, time_s)

    def dropped(self, message, time_s: float) -> None:
        if self.adapter is not None:
            self.adapter.on_dropped(message, time_s)

    # ------------------------------------------------------------------ the run's own events
    def _round_done(self, rounds: int) -> None:
        self._check_stop()

    def _can_still_sync(self, group: tuple, stream: str, round_: int, step: int) -> bool:
        return self.world.can_still_sync(group, stream, round_, step)

    def diverge(self, step: int, time_s: float, what: str, value) -> None:
        """Note the first non-finite value (the numerics report it); with run.on_divergence
        stop, end the run there."""
        if self.diverged is None:
            self.diverged = {"step": int(step), "time_s": float(time_s), "what": what, "value": str(value),
                             "reason": f"{what} became {value} at step {int(step)}, simulated time {time_s:.6g} s"}
        self._check_stop()

    def evaluate(self, step: int | None = None) -> float | None:
        """Eval loss of the global model now (queued inner steps and ready ops run first),
        plus the method's diagnostics (``Algorithm.diagnostics``). None in timing-only runs."""
        if self.adapter is None:
            return None
        step = self.world.workers[0].steps_done if step is None else step
        return self.adapter.evaluate(step, self.env.now)

    def _eval_timer(self):
        every = self.sc.run.eval_every_s
        while True:
            yield self.env.timeout(every)
            self.evaluate()

    # ------------------------------------------------------------------ running
    def run(self, on_progress: Callable[[Progress], None] | None = None, progress_every_s: float = 0.25) -> None:
        run = self.sc.run
        self.evaluate(0)
        if run.eval_every_s and self.adapter is not None:
            self.env.process(self._eval_timer())
        if run.max_sim_time_s is not None:
            self.env.timeout(run.max_sim_time_s).callbacks.append(self._time_up)
        if not self.stop.processed:  # (a run that has already stopped stays stopped)
            self._step_until_stopped(on_progress, progress_every_s)
        self.finish()
        if on_progress is not None:
            on_progress(self.progress())

    def _step_until_stopped(self, on_progress: Callable[[Progress], None] | None, progress_every_s: float) -> None:
        """Process events until the stop event has been processed (its last callback raises
        ``_Stopped`` inside that step), or none are left; events go in batches, with a look at the
        wall clock for ``on_progress`` between batches."""
        last = time.monotonic()
        step = self.env.step
        self.stop.callbacks.append(_stopped)
        with fewer_collections():  # (a large run keeps ~10^5 records alive: see sim.collector)
            try:
                while True:
                    try:
                        for _ in range(_BATCH):
                            step()
                    except EmptySchedule:
                        if self.world.faults.anyone_down:  # the workers left are gone for good: nothing more can happen
                            self.ended_early = ("no events left: no worker is up, or those up wait only for workers "
                                                "gone for good (" + self.stall_reason() + ")")
                            return
                        raise RuntimeError("simulation ran out of events before a stop condition was met: "
                                           + self.stall_reason()) from None
                    if on_progress is not None and time.monotonic() - last > progress_every_s:
                        last = time.monotonic()
                        on_progress(self.progress())
            except _Stopped:
                return

    def stall_reason(self) -> str:
        """Why nothing more can happen (one line): the links whose zero bandwidth holds transfers
        for good, the workers down and what the others wait in."""
        world = self.world
        parts = []
        stalled: dict[tuple[str, str], int] = {}
        for f in world.net.flows_in_flight():
            for l in f.links:
                if world.net.capacity.get(l, 1.0) <= 0:
                    stalled[l] = stalled.get(l, 0) + 1
        for (u, v), count in sorted(stalled.items()):
            parts.append(f"link {u}->{v} has bandwidth 0 for good with {count} transfer(s) on it"
                         + (" (its bandwidth_csv ends at 0)" if world.graph.edges[u, v].get("bandwidth_series") else ""))
        down = [w.node for w in world.workers if not w.up]
        if down:
            parts.append(f"down for good: {', '.join(down[:8])}{', ...' if len(down) > 8 else ''}")
        states: dict[str, list[str]] = {}
        for w in world.workers:
            if w.up:
                states.setdefault(w.tracker.state, []).append(w.node)
        for state, nodes in sorted(states.items()):
            parts.append(f"{state}: {', '.join(nodes[:8])}{', ...' if len(nodes) > 8 else ''}")
        return "; ".join(parts) or "no worker process is left"

    def finish(self) -> None:
        """Close open state spans, run pending steps and take a final eval (idempotent)."""
        if self.finished:
            return
        self.close_records()
        self.evaluate()

    def close_records(self) -> None:
        """Close open state spans and fault spans at the current time, without more numerics
        (how an interrupted or failed run keeps what it recorded)."""
        self.finished = True
        for w in self.world.workers:
            w.finish()
        self.world.faults.finish(self.world.link_windows)

    def progress(self) -> Progress:
        r = self.sc.run
        return Progress(self.env.now, self.counter.rounds, r.max_rounds, r.max_sim_time_s, self.tokens, r.max_tokens,
                        self.adapter.last_loss if self.adapter else None)
