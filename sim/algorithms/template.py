"""The sync template: a periodic method states its rule once and writes its math as two functions.

**Rule** (``SyncRule``, data): round r of stream ``stream`` leaves at the (r+1)·H-th inner step
after warm start (H = ``every``), from each worker to its group (``group_of``: everyone unless
the method draws groups), as one part per layer at ``layer`` grain or one send at ``step``
grain (``knobs.OuterKnobs.sync_grain``), in the method's ``payload_dtype`` by its
``collective``; the step that sends round r needs round r - k (``delay`` k: 0 = blocking
DiLoCo, 1 = one outer step overlapped). ``every`` and ``delay`` may name a knob of the
method's ``Spec``. From the rule the template derives ``at_step`` (``method_plan``),
``quiet_steps``, ``use_step`` (which results a worker that comes back still uses) and the
payload (``ScheduleInfo``).

**Math** (numerics, queued on each worker's queue in simulated order):

- ``contribution(state, worker, params)``: what ``worker`` sends this round (``params`` its
  replica's view), before the wire format;
- ``apply(state, worker, params, fresh, result)``: its update once round r - k is reduced,
  given ``fresh`` (its own contribution this round) and ``result`` (``Result``: the mean over
  those present, whether the worker took part, its own share of it).

The template registers each worker for the reductions it will use, waits for them, releases
them, and tells ``apply`` when the worker was down or late (``took_part`` False: keep its own
parameters) or when nothing has arrived yet (the first k rounds). The method never touches
membership: that state is the framework's (``common.Membership``: reductions, absent, down),
typed apart from the method's math state (``common.OuterMath``: outer parameters, momentum,
error-feedback residuals).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from sim.algorithms.base import NOTHING, ScheduleInfo, StepPlan, layer_parts, layered_needs, layered_send
from sim.algorithms.common import OuterMethod
from sim.algorithms.transforms import Tree, worker_view


@dataclass(frozen=True)
class SyncRule:
    """When a periodic method syncs: every ``every`` inner steps on ``stream``, applied ``delay``
    rounds later. ``every`` and ``delay`` are numbers or the name of a knob of the method's Spec."""
    every: int | str = "inner_steps"
    stream: str = "outer"
    delay: int | str = 0
    copies: int = 1
    """Values sent per parameter (NoLoCo's gossip: 2, its pseudo-gradient and slow weights)."""


@dataclass(frozen=True)
class Result:
    """A reduced round as ``apply`` sees it."""
    mean: Tree | None
    """The fp32 mean of the contributions of those present; None when there is nothing to
    apply: no round has been reduced yet (the first ``delay`` rounds; ``took_part`` True) or the
    round ran without this worker and is gone (``took_part`` False)."""
    took_part: bool
    """False: the worker was down or late for this round: it keeps its own parameters."""
    own: Tree | None
    """The worker's own contribution to the round, as received (None when it had none)."""
    present: int
    """How many workers the mean is over (the group when nothing has arrived yet)."""
    group: int
    """How many workers the round's group has."""


class Periodic(OuterMethod):
    """Base of a periodic method: give ``sync`` (a ``SyncRule``), ``contribution`` and ``apply``."""

    sync: SyncRule = SyncRule()

    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.H = self._knob(self.sync.every)
        self.delay = self._knob(self.sync.delay)
        self.stream = self.sync.stream
        self.warm_collective = spec.collective
        self.info = ScheduleInfo(wire_format=spec.payload_dtype)
        self.parts: list[tuple[int | None, int]] = []
        self.layers = 1
        self._plans: dict[int, dict[tuple[int, ...], StepPlan]] = {}  # round -> group -> its plan

    def _knob(self, value: int | str) -> int:
        return int(getattr(self.spec, value)) if isinstance(value, str) else int(value)

    @classmethod
    def steps_per_round(cls, spec) -> int:
        every = cls.sync.every
        return int(getattr(spec, every)) if isinstance(every, str) else int(every)

    # ---------------------------------------------------------------- schedule (derived from the rule)
    def configure(self, layout, proxy_layers=None) -> None:
        super().configure(layout, proxy_layers)
        parts, self.layers = layer_parts(layout, None, proxy_layers)
        self.parts = [(layer, self.sync.copies * e) for layer, e in parts]

    def group_of(self, round_: int, worker: int) -> tuple[int, ...]:
        """The workers ``worker`` syncs with in round ``round_`` (sorted): everyone by default."""
        return self.everyone

    def method_plan(self, worker: int, step: int) -> StepPlan:
        if step % self.H:
            return NOTHING
        r = step // self.H - 1
        group = self.group_of(r, worker)
        plans = self._plans.get(r)
        if plans is None:
            plans = self._plans[r] = {}
            self._plans.pop(r - 2, None)
        plan = plans.get(group)
        if plan is None:
            s, g = self.spec, self.spec.sync_grain
            during, sends = layered_send(self.stream, r, group, self.parts, self.layers, s.payload_dtype, s.collective,
                                         grain=g)
            d = self.delay
            needs = layered_needs(self.stream, r - d, self.parts, self.layers, g) if r >= d else ()
            plan = plans[group] = StepPlan(during=during, sends=sends, needs=needs)
        return plan

    def method_quiet(self, worker: int, step: int) -> int:
        return -step % self.H  # steps before the next multiple of H (the one that sends and needs)

    def use_step(self, key: tuple) -> int:
        return self.warm + (key[1] + self.delay + 1) * self.H

    # ---------------------------------------------------------------- math (the method's two functions)
    @abstractmethod
    def contribution(self, state, worker: int, params: Tree) -> Tree:
        """What ``worker`` sends this round (``params``: its replica), before the wire format."""

    @abstractmethod
    def apply(self, state, worker: int, params: Tree, fresh: Tree, result: Result) -> None:
        """``worker``'s update once the round it needs is reduced (``fresh``: its own
        contribution this round; ``result``: the reduced round)."""

    # ---------------------------------------------------------------- the framework: queue, wait, release
    def method_ops(self, numerics, state, worker: int, step: int, plan: StepPlan) -> None:
        outgoing = plan.outgoing()
        if not outgoing:
            return
        send = outgoing[0]
        r, d = send.round, self.delay
        red_now = self.reduction(state, send.key, worker)
        old_key = (self.stream, r - d, self.group_of(r - d, worker)) if r >= d else None
        red_old = self.reduction(state, old_key, worker) if old_key is not None else None
        params = numerics.replicas.params
        box: dict = {}

        def contribute() -> None:
            fresh = box["fresh"] = self.contribution(state, worker, worker_view(params, worker))
            red_now.add(worker, self.wire(state, worker, fresh))

        def apply() -> None:
            if red_old is None:  # nothing has arrived yet (the first k rounds)
                result = Result(None, True, None, len(send.group), len(send.group))
            elif red_old.gone:  # it ran without this worker, and every user is done with it
                result = Result(None, False, None, 0, len(red_old.group))
            else:
                took = worker in red_old.present
                result = Result(red_old.mean(), took, red_old.contribs.get(worker) if took else None,
                                len(red_old.present), len(red_old.group))
            self.apply(state, worker, worker_view(params, worker), box["fresh"], result)
            if red_old is not None:
                self.release(state, old_key, worker)

        numerics.enqueue_op(worker, contribute)
        numerics.enqueue_op(worker, apply, red_old.ready if red_old is not None else None)
