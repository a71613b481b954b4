"""One run of one scenario, as a facade: ``Simulation`` builds it and answers what it did.

Three pieces do the work: ``sim.build.assemble`` builds the simulated world (network, faults,
barrier and servers, workers) fully wired; ``sim.loop.RunLoop`` receives the world's events
and owns tokens, rounds, the stop conditions and the stall reason; ``sim.adapter`` turns
the events into the method's math on real replicas (numerics on). ``Simulation`` makes the
method, its numerics and payload layout, the loop and the world for a scenario, runs the
loop, and freezes what happened into a ``RunResult`` (``result()``) that the tables, the
summary and the dashboard read. It has no method-specific code. The run directory is
written by ``sim.writer.run_to_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from kernels.formats import payload_bytes
from sim.adapter import NumericsAdapter
from sim.build import World, assemble, nobody_leaves, payload_layout, workers_in
from sim.engine.clock import Clock
from sim.engine.faults import fetch_bytes
from sim.loop import Progress, RunLoop
from sim.metrics.records import Recorder
from sim.result import RunResult, frozen_mapping, frozen_records
from sim.scenario import Scenario

__all__ = ["Simulation"]


def _read(part: str, name: str) -> property:
    """A read-only attribute of the facade that is ``self.<part>.<name>``."""
    return property(lambda self: getattr(getattr(self, part), name), doc=f"``{part}.{name}``")


class Simulation:
    """One scenario's engine, numerics and algorithm, ready to run in virtual time (a facade
    over ``RunLoop`` and ``World`` for the CLI, notebooks and tests)."""

    def __init__(self, sc: Scenario):
        from sim.algorithms import algorithm_class, make_algorithm
        from sim.checks import check_before_work

        self.sc = sc
        self.prework = check_before_work(sc)  # everything `locosim validate` checks, before anything is built
        self.clock = Clock(sc.seed)
        self.env = self.clock.env
        self.servers = algorithm_class(sc.algorithm).server_plan(sc.algorithm, sc.topology)  # methods without a barrier
        self.recorder = Recorder()
        n = self.n_workers = workers_in(sc.topology)
        self.numerics_on = sc.numerics
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

        # the run loop, then the world wired to it; compute times are the timing proxy's when there is one
        self.loop = RunLoop(sc, self.env, self.algorithm, a, self.schedule.syncs_per_round, nobody_leaves(sc))
        timed_params = int(sc.timing.params) if sc.timing is not None else self.n_params
        timed_tokens = (sc.timing.tokens_per_step or self.tokens_per_step) if sc.timing is not None else self.tokens_per_step
        self.world: World = assemble(sc, self.env, self.recorder, self.algorithm, self.servers, timed_params,
                                     timed_tokens, a.measure if a else None, fetch_bytes(self.wire_params),
                                     events=self.loop)
        self.loop.attach(self.world)
        if a:
            a.start(self.algorithm, self.loop.diverge)

    # ------------------------------------------------------------------ the world, and what the run has done so far
    graph = _read("world", "graph")
    nodes = _read("world", "nodes")
    net = _read("world", "net")
    faults = _read("world", "faults")
    barrier = _read("world", "barrier")
    workers = _read("world", "workers")
    step_time_s = _read("world", "step_time_s")
    stop = _read("loop", "stop")
    tokens = _read("loop", "tokens")
    tokens_per_step = _read("loop", "tokens_per_step")
    ended_early = _read("loop", "ended_early")
    diverged = _read("loop", "diverged")

    @property
    def rounds(self) -> int:
        return self.loop.counter.rounds

    @property
    def round_end_s(self) -> list[float]:
        return self.loop.counter.round_end_s

    @property
    def state(self):
        """The method's state (numerics on), as ``Algorithm.init`` built it."""
        return self.adapter.state if self.adapter else None

    @property
    def last_loss(self) -> float | None:
        return self.adapter.last_loss if self.adapter else None

    # ------------------------------------------------------------------ running
    def run(self, on_progress: Callable[[Progress], None] | None = None, progress_every_s: float = 0.25) -> None:
        """Run until a stop condition (``RunLoop.run``)."""
        self.loop.run(on_progress, progress_every_s)

    def evaluate(self, step: int | None = None) -> float | None:
        """Eval loss of the global model now (``RunLoop.evaluate``); None in timing-only runs."""
        return self.loop.evaluate(step)

    def stall_reason(self) -> str:
        return self.loop.stall_reason()

    def finish(self) -> None:
        self.loop.finish()

    def close_records(self) -> None:
        self.loop.close_records()

    def progress(self) -> Progress:
        return self.loop.progress()

    def save_model(self, path: Path) -> None:
        """Write the final global parameters (``NumericsAdapter.save_model``)."""
        self.adapter.save_model(path)

    def result(self) -> RunResult:
        """What the run did, frozen (call once it has ended: ``run`` or ``close_records``)."""
        loop, net = self.loop, self.world.net
        return RunResult(
            scenario=self.sc, duration_s=float(self.env.now), nodes=tuple(self.nodes), graph=self.graph,
            records=frozen_records(self.recorder), link_bytes=frozen_mapping(net.link_bytes),
            sent_bytes=frozen_mapping(net.sent_bytes), received_bytes=frozen_mapping(net.received_bytes),
            n_params=self.n_params, payload_bytes=self.payload_bytes, wire_format=self.schedule.wire_format,
            rounds=self.rounds, steps_per_worker=tuple(w.steps_done for w in self.workers), tokens=int(loop.tokens),
            tokens_per_step=self.tokens_per_step, step_done_times=tuple(loop.step_done_times),
            step_time_s=tuple(self.step_time_s), loss_floor=getattr(self.dataset, "loss_floor", None),
            diverged=frozen_mapping(loop.diverged) if loop.diverged else None, ended_early=loop.ended_early,
            numerics=frozen_mapping(self.adapter.describe()) if self.adapter else None,
            diagnostic_labels=frozen_mapping(self.algorithm.diagnostic_labels),
            link_rates=net.rate_timeline())
