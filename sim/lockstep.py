"""A lock-step harness: a method and its numerics driven step by step, without simpy.

Every worker computes inner step t, then every collective sent at step t completes at once
(instant collectives, nobody late or down), then step t + 1; a method with servers has the
step's pushes served at once, in worker order, and their answers used before step t + 1. No clock, no network, no engine:
only the method's protocol (``at_step``, ``on_step``, ``on_reduced``) and the numerics the
runner uses (``sim.adapter.NumericsAdapter``). The math of a method does not depend on when
its collectives complete (its ops wait on their inputs in simulated order), so for a run
without faults or timeouts its train losses are the full simulation's, bit for bit
(tests/test_lockstep.py): the identity tests of a method's math run here in a second, and a
plug-in author can check theirs the same way::

    from sim.lockstep import run_lockstep
    losses = run_lockstep(load_scenario("my.yaml"))     # {(worker, step): train loss}
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Lockstep:
    """What a lock-step run leaves: the method, its state and numerics, and the train losses."""
    method: object
    state: object
    numerics: object
    losses: dict
    """(worker, step) -> train loss."""

    def global_params(self):
        """The parameters the method evaluates as 'the model' (after every queued op ran)."""
        self.numerics.flush()
        return self.method.global_params(self.numerics, self.state)


def run_lockstep(sc, steps: int | None = None) -> Lockstep:
    """Run ``sc``'s method and numerics for ``steps`` inner steps per worker (default: the
    scenario's ``run.max_rounds`` rounds after warm start) in lock step. A scenario with a
    timing proxy or faults is refused: neither changes the math here, so the result would
    not be that scenario's."""
    from sim.adapter import NumericsAdapter
    from sim.algorithms import make_algorithm
    from sim.checks import check_before_work
    from sim.metrics.records import Recorder

    if sc.timing is not None:
        raise ValueError("timing: the lock-step harness runs the trained model's own payloads (no timing proxy)")
    if sc.faults.model_dump() != type(sc.faults)().model_dump():
        raise ValueError("faults: the lock-step harness has no faults (every member takes part in every round)")
    n = sc.topology.n_workers
    adapter = NumericsAdapter(sc, n, check_before_work(sc), Recorder())
    method = make_algorithm(sc.algorithm, n, sc.seed)
    method.kernels = sc.run.kernels
    method.configure(adapter.layout, None)
    servers = type(method).server_plan(sc.algorithm, sc.topology)
    regions = [r for r in sc.topology.regions for _ in range(r.nodes)]
    method.set_servers(servers, [r.name for r in regions], [r.step_time_multiplier for r in regions])
    adapter.start(method, lambda *_a: None)
    numerics, state = adapter.numerics, adapter.state
    if steps is None:
        if sc.run.max_rounds is None:
            raise ValueError("run.max_rounds: needed to know how many steps to run (or pass steps=)")
        a = sc.algorithm
        steps = type(method).warm_steps(a) + sc.run.max_rounds * type(method).steps_per_round(a)
    losses: dict[tuple[int, int], float] = {}

    def keep(records) -> None:
        for w, step, _t, loss in records:
            losses[(w, step)] = loss

    for t in range(1, steps + 1):
        plans = [method.at_step(w, t) for w in range(n)]
        for w, plan in enumerate(plans):
            method.on_step(numerics, state, w, t, float(t), plan)
        sent: dict = {}
        for plan in plans:
            for send in plan.outgoing():
                sent.setdefault(send.key, send)
        keep(numerics.flush())
        for send in sent.values():
            if send.to is None:
                keep(method.on_reduced(numerics, state, send, float(t), None))
        _serve(method, numerics, state, [(w, s) for w, plan in enumerate(plans) for s in plan.sends if s.to], t)
    keep(numerics.flush())
    return Lockstep(method, state, numerics, losses)


def _serve(method, numerics, state, pushes: list, t: int) -> None:
    """Methods with servers: the step's pushes (worker, send) arrive at once, in worker order;
    each server handles its arrivals in that order, what it sends leaves at the end of the
    instant and arrives at once (at a worker: used before its next step; at a server: handled
    in the next instant), until nothing is left on the way."""
    from sim.schedule import Message

    now = float(t)
    arriving = [Message(s.stream, s.round, w, s.to, s.elems, s.wire_format) for w, s in pushes]
    while arriving:
        leaving: dict[str, list] = {}
        for msg in arriving:
            served = method.serve(msg.to, msg, now)
            method.on_served(numerics, state, msg.to, msg, served, now)
            leaving.setdefault(msg.to, []).extend(served.sends)
        arriving = []
        for server, msgs in leaving.items():
            if not msgs:
                continue
            method.departed(server, msgs, now)
            method.on_departed(numerics, state, server, msgs, now)
            for msg in msgs:
                if isinstance(msg.to, int):
                    method.on_delivered(numerics, state, msg, now)
                else:
                    arriving.append(msg)
