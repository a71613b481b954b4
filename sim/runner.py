"""Wire engine, numerics, algorithm and metrics together for one run (wiring only).

Three pieces do the work: ``sim.build`` turns the scenario into the network, faults and
workers; ``sim.adapter`` turns the engine's step and sync events into the method's math on
real replicas (numerics on); ``sim.writer`` writes the run directory (``run_to_dir``).
``Simulation`` connects them: it counts tokens and rounds (``sim.rounds``), decides when the
run stops, and freezes what happened into a ``RunResult`` (``result()``) that the tables,
the summary and the dashboard read. It has no method-specific code: everything it asks a
method goes through the ``sim.algorithms.base.Algorithm`` hooks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kernels.formats import payload_bytes
from sim.adapter import NumericsAdapter
from sim.build import (build_faults, build_workers, build_world, nobody_leaves, payload_layout, proxy_layout,
                       scale_layout, step_times)
from sim.collector import fewer_collections
from sim.engine.clock import Clock
from sim.engine.faults import fetch_bytes
from sim.engine.sync import SyncBarrier
from sim.result import RunResult, frozen_mapping, frozen_records
from sim.rounds import RoundCounter
from sim.scenario import Scenario

__all__ = ["Progress", "Simulation", "scale_layout", "proxy_layout"]


@dataclass
class Progress:
    time_s: float
    rounds: int
    max_rounds: int | None
    max_time_s: float | None
    tokens: int
    max_tokens: int | None
    loss: float | None


class Simulation:
    """One scenario's engine, numerics and algorithm, ready to run in virtual time."""

    def __init__(self, sc: Scenario):
        from sim.algorithms import algorithm_class, make_algorithm
        from sim.checks import check_before_work

        self.sc = sc
        self.prework = check_before_work(sc)  # everything `locosim validate` checks, before anything is built
        self.clock = Clock(sc.seed)
        self.env = self.clock.env
        servers = algorithm_class(sc.algorithm).server_plan(sc.algorithm, sc.topology)  # methods without a barrier
        world = build_world(sc, self.env, servers)
        self.recorder, self.graph, self.nodes, self.net = world.recorder, world.graph, world.nodes, world.net
        self._link_windows = world.link_windows
        n = self.n_workers = len(self.nodes)
        self.numerics_on = sc.numerics
        self.tokens_per_step = sc.compute.batch_size * sc.model.seq_len
        self.algorithm = make_algorithm(sc.algorithm, n, sc.seed)
        self.algorithm.kernels = sc.run.kernels

        # numerics (on): data, replicas, eval batches; their model's layout sizes the payloads
        self.adapter = NumericsAdapter(sc, n, self.prework, self.recorder) if self.numerics_on else None
        a = self.adapter
        self.dataset, self.replicas, self.numerics = (a.dataset, a.replicas, a.numerics) if a else (None,) * 3
        self.device, self.memory, self.engine = (a.device, a.memory, a.engine) if a else (None,) * 3
        self.eval_batches = a.eval_batches if a else None
        self.n_params = a.replicas.n_params if a else int(sc.timing.params)
        self.layout = payload_layout(sc, a.layout if a else None)
        self.wire_params = sum(e for _, e in self.layout)
        self.algorithm.configure(self.layout, sc.timing.layers if sc.timing is not None else None)
        self.schedule = self.algorithm.info
        self.payload_bytes = (self.schedule.payload_bytes if self.schedule.payload_bytes is not None
                              else payload_bytes(self.wire_params, self.schedule.wire_format))

        # compute: each worker's step time (the timing proxy's when there is one), then faults
        timed_params = int(sc.timing.params) if sc.timing is not None else self.n_params
        timed_tokens = (sc.timing.tokens_per_step or self.tokens_per_step) if sc.timing is not None else self.tokens_per_step
        self.step_time_s = step_times(sc, world, timed_params, timed_tokens, a.measure if a else None)
        self.faults = build_faults(sc, world)
        self.step_time_s = [t * self.faults.multiplier(i) for i, t in enumerate(self.step_time_s)]
        self.servers = servers
        self.algorithm.set_servers(servers, [self.graph.nodes[n]["region"] for n in self.nodes], self.step_time_s)
        if a:
            a.start(self.algorithm, self._diverge)

        if servers:  # point-to-point sends to servers, and the barrier for any collective
            from sim.engine.servers import Router

            self.barrier = Router(self.env, self.net, self.nodes, self._on_sync, self.recorder, servers,
                                  self.algorithm.serve, self._on_served, self._on_departed, self._on_delivered,
                                  timeout_s=sc.algorithm.sync_timeout_s, on_dropped=self._on_dropped)
        else:
            self.barrier = SyncBarrier(self.env, self.net, self.nodes, self._on_sync, self.recorder,
                                       timeout_s=sc.algorithm.sync_timeout_s)
        self.stop = self.env.event()
        self.tokens = 0
        self.step_done_times: list[float] = []  # end time of every step (numerics on: tokens at each loss)
        self.workers = build_workers(world, self.faults, self.step_time_s, self.algorithm.at_step, self.barrier,
                                     self._on_step)
        self._nobody_leaves = nobody_leaves(sc)
        self.counter = RoundCounter(self.algorithm, self.schedule.syncs_per_round, self._nobody_leaves,
                                    self._can_still_sync, lambda: self.env.now, self._on_round)
        if sc.run.coalesce and not self.numerics_on and sc.run.max_tokens is None and self._nobody_leaves:
            # nobody looks at a quiet step as it ends: run quiet stretches as one event each
            for w in self.workers:
                w.quiet = self.algorithm.quiet_steps
                w.on_quiet = self._on_quiet_steps
                w.horizon = lambda: math.inf if sc.run.max_sim_time_s is None else sc.run.max_sim_time_s
        self.algorithm.set_liveness(lambda: [w.up and self.barrier.up[w.index] for w in self.workers])
        self.faults.start(self.workers, self.barrier, self.net, fetch_bytes(self.wire_params),
                          on_fetch=self._on_fetch, on_rejoined=lambda _w: self.counter.check(),
                          on_down=self._on_down, home=self.algorithm.home_server if servers else None)
        self.finished = False
        self.ended_early: str | None = None
        self.diverged: dict | None = None  # {step, time_s, what, value}: the first NaN / inf seen

    # ------------------------------------------------------------------ what the run has done so far
    @property
    def rounds(self) -> int:
        return self.counter.rounds

    @property
    def round_end_s(self) -> list[float]:
        return self.counter.round_end_s

    @property
    def state(self):
        """The method's state (numerics on), as ``Algorithm.init`` built it."""
        return self.adapter.state if self.adapter else None

    @property
    def last_loss(self) -> float | None:
        return self.adapter.last_loss if self.adapter else None

    # ------------------------------------------------------------------ callbacks from the engine
    def _on_step(self, worker: int, step: int, time_s: float, plan) -> None:
        self.tokens += self.tokens_per_step
        if self.adapter is not None:
            self.step_done_times.append(time_s)
            self.adapter.on_step(worker, step, time_s, plan, self.evaluate)
        self._check_tokens()

    def _on_quiet_steps(self, worker: int, first: int, ends: list[float]) -> None:
        """Steps ``first``.. of a quiet stretch ended at ``ends`` (timing-only: count them)."""
        self.tokens += self.tokens_per_step * len(ends)

    def _check_tokens(self) -> None:
        mt = self.sc.run.max_tokens
        if mt is not None and self.tokens >= mt and not self.stop.triggered:
            self.stop.succeed()

    def _on_down(self, worker: int) -> None:
        if self.adapter is not None:
            self.adapter.on_member_down(worker)
        self.counter.check()

    def _on_fetch(self, worker: int, peer: int | str | None, step: int) -> None:
        if isinstance(peer, str):  # a method with servers: the worker took its server's model
            self.algorithm.rejoined(worker, peer, step)
        if self.adapter is not None:
            self.adapter.on_fetch(worker, peer, step)

    def _on_served(self, server: str, message, served, time_s: float) -> None:
        if self.adapter is not None:
            self.adapter.on_served(server, message, served, time_s)
        if served.counts:
            self.counter.on_updates(served.counts, self.n_workers)

    def _on_departed(self, server: str, messages, time_s: float) -> None:
        self.algorithm.departed(server, messages, time_s)
        if self.adapter is not None:
            self.adapter.on_departed(server, messages, time_s)

    def _on_delivered(self, message, time_s: float) -> None:
        if self.adapter is not None:
            self.adapter.on_delivered(message, time_s)

    def _on_dropped(self, message, time_s: float) -> None:
        if self.adapter is not None:
            self.adapter.on_dropped(message, time_s)

    def _on_sync(self, send, participants: tuple | None = None) -> None:
        if participants is not None and len(participants) == len(send.group):
            participants = None  # everyone took part: the plain (bitwise unchanged) path
        if self.adapter is not None:
            step = self.adapter.on_reduced(send, self.env.now, participants)
            if step is not None:
                self.evaluate(step)
        self.counter.on_sync(send)

    def _on_round(self, rounds: int) -> None:
        mr = self.sc.run.max_rounds
        if mr is not None and rounds >= mr and not self.stop.triggered:
            self.stop.succeed()

    def _can_still_sync(self, group: tuple, stream: str, round_: int, step: int) -> bool:
        """A gossip group that has not synced round ``round_`` still may: its collective is
        under way, or a member is up and has not yet reached that round's ``step``."""
        if self.barrier.pending((stream, round_, group)):
            return True
        return any(self.workers[m].up and self.barrier.up[m] and self.workers[m].steps_done < step for m in group)

    def _diverge(self, step: int, time_s: float, what: str, value) -> None:
        """Note the first non-finite value; with run.on_divergence stop, end the run there."""
        if self.diverged is None:
            self.diverged = {"step": int(step), "time_s": float(time_s), "what": what, "value": str(value),
                             "reason": f"{what} became {value} at step {int(step)}, simulated time {time_s:.6g} s"}
        if self.sc.run.on_divergence == "stop" and not self.stop.triggered:
            self.stop.succeed()

    def evaluate(self, step: int | None = None) -> float | None:
        """Eval loss of the global model now (queued inner steps and ready ops run first),
        plus the method's diagnostics (``Algorithm.diagnostics``). None in timing-only runs."""
        if self.adapter is None:
            return None
        step = self.workers[0].steps_done if step is None else step
        return self.adapter.evaluate(step, self.env.now)

    def save_model(self, path: Path) -> None:
        """Write the final global parameters (``NumericsAdapter.save_model``)."""
        self.adapter.save_model(path)

    def _eval_timer(self):
        every = self.sc.run.eval_every_s
        while True:
            yield self.env.timeout(every)
            self.evaluate()

    # ------------------------------------------------------------------ running
    def run(self, on_progress: Callable[[Progress], None] | None = None, progress_every_s: float = 0.25) -> None:
        run = self.sc.run
        self.evaluate(0)
        if run.eval_every_s and self.numerics_on:
            self.env.process(self._eval_timer())
        if run.max_sim_time_s is not None:
            timer = self.env.timeout(run.max_sim_time_s)
            timer.callbacks.append(lambda _e: None if self.stop.triggered else self.stop.succeed())
        last = time.monotonic()
        env = self.env
        with fewer_collections():  # (a large run keeps ~10^5 records alive: see sim.writer)
            while not self.stop.processed:
                if math.isinf(env.peek()):
                    if self.faults.anyone_down:  # the workers left are gone for good: nothing more can happen
                        self.ended_early = ("no events left: no worker is up, or those up wait only for workers gone for "
                                            "good (" + self.stall_reason() + ")")
                        break
                    raise RuntimeError("simulation ran out of events before a stop condition was met: "
                                       + self.stall_reason())
                env.step()
                if on_progress is not None and time.monotonic() - last > progress_every_s:
                    last = time.monotonic()
                    on_progress(self.progress())
        self.finish()
        if on_progress is not None:
            on_progress(self.progress())

    def stall_reason(self) -> str:
        """Why nothing more can happen (one line): the links whose zero bandwidth holds transfers
        for good, the workers down and what the others wait in."""
        parts = []
        stalled: dict[tuple[str, str], int] = {}
        for f in self.net.flows_in_flight():
            for l in f.links:
                if self.net.capacity.get(l, 1.0) <= 0:
                    stalled[l] = stalled.get(l, 0) + 1
        for (u, v), count in sorted(stalled.items()):
            parts.append(f"link {u}->{v} has bandwidth 0 for good with {count} transfer(s) on it"
                         + (" (its bandwidth_csv ends at 0)" if self.graph.edges[u, v].get("bandwidth_series") else ""))
        down = [w.node for w in self.workers if not w.up]
        if down:
            parts.append(f"down for good: {', '.join(down[:8])}{', ...' if len(down) > 8 else ''}")
        states: dict[str, list[str]] = {}
        for w in self.workers:
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
        for w in self.workers:
            w.finish()
        self.faults.finish(self._link_windows)

    def result(self) -> RunResult:
        """What the run did, frozen (call once it has ended: ``run`` or ``close_records``)."""
        return RunResult(
            scenario=self.sc, duration_s=float(self.env.now), nodes=tuple(self.nodes), graph=self.graph,
            records=frozen_records(self.recorder), link_bytes=frozen_mapping(self.net.link_bytes),
            sent_bytes=frozen_mapping(self.net.sent_bytes), received_bytes=frozen_mapping(self.net.received_bytes),
            n_params=self.n_params, payload_bytes=self.payload_bytes, wire_format=self.schedule.wire_format,
            rounds=self.rounds, steps_per_worker=tuple(w.steps_done for w in self.workers), tokens=int(self.tokens),
            tokens_per_step=self.tokens_per_step, step_done_times=tuple(self.step_done_times),
            step_time_s=tuple(self.step_time_s), loss_floor=getattr(self.dataset, "loss_floor", None),
            diverged=frozen_mapping(self.diverged) if self.diverged else None, ended_early=self.ended_early,
            numerics=frozen_mapping(self.adapter.describe()) if self.adapter else None,
            diagnostic_labels=frozen_mapping(self.algorithm.diagnostic_labels),
            link_rates=self.net.rate_timeline())

    def progress(self) -> Progress:
        r = self.sc.run
        return Progress(self.env.now, self.rounds, r.max_rounds, r.max_sim_time_s, self.tokens, r.max_tokens,
                        self.last_loss)


