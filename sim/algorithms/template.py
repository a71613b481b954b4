"""The sync template: a periodic method states its rule once and writes its math as two functions.

**Rule** (``SyncRule``, data): round r of stream ``stream`` leaves at the (r+1)·H-th inner step
after warm start (H = ``every``), from each worker to its group (``group_of``: everyone unless
the method draws groups), as one part per layer at ``layer`` grain or one send at ``step``
grain (``knobs.OuterKnobs.sync_grain``), in the method's ``payload_dtype`` by its
``collective``; the step that sends round r needs round r - k (``delay`` k: 0 = blocking
DiLoCo, 1 = one outer step overlapped), or the step ``delay_steps`` (tau) inner steps after
the one that sent it (Streaming DiLoCo). ``every``, ``delay`` and ``delay_steps`` may name a
knob of the method's ``Spec``.

**Streams** (Streaming DiLoCo's fragments): a method whose ``fragment_names`` hook splits the
parameters into P fragments syncs each on its own stream (``stream`` + p), carrying that
fragment's layer parts, round j of fragment p at step t_p + j H with offsets staggered by
``stagger``: ``even`` t_p = round(H (p+1) / P), ``interval`` t_p = (p+1) floor(H / (P_blocks +
1)) (P_blocks: the fragments holding transformer blocks), or the name of a knob holding one of
them. Without fragments there is one stream, at t = H. ``contribution`` and ``apply`` then see
``params`` restricted to the fragment's parameters.

From the rule the template derives ``at_step`` (``method_plan``), ``quiet_steps``,
``use_step`` (which results a worker that comes back still uses) and the payload
(``ScheduleInfo``: one collective a round per stream, the mean bytes of a stream's sync).

**Math** (numerics, queued on each worker's queue in simulated order):

- ``contribution(state, worker, params)``: what ``worker`` sends this round (``params`` its
  replica's view), before the wire format;
- ``apply(state, worker, params, fresh, result)``: its update once round r - k is reduced,
  given ``fresh`` (its own contribution sent at this step, None when this step sends none on
  the stream) and ``result`` (``Result``: the mean over
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

from sim.algorithms.common import OuterMethod
from sim.algorithms.transforms import Tree, worker_view
from sim.schedule import NOTHING, ScheduleInfo, StepPlan, block_of, layer_parts, layered_needs, layered_send, sync_bytes


@dataclass(frozen=True)
class SyncRule:
    """When a periodic method syncs: every ``every`` inner steps on ``stream``, applied ``delay``
    rounds plus ``delay_steps`` inner steps later. ``every``, ``delay`` and ``delay_steps`` are
    numbers or the name of a knob of the method's Spec."""
    every: int | str = "inner_steps"
    stream: str = "outer"
    delay: int | str = 0
    copies: int = 1
    """Values sent per parameter (NoLoCo's gossip: 2, its pseudo-gradient and slow weights)."""
    delay_steps: int | str = 0
    """tau: inner steps between sending a round and applying it (Streaming DiLoCo's overlap);
    with ``delay`` 0 and tau > 0 the apply is its own step, where nothing is sent."""
    stagger: str = "even"
    """Offsets of the streams of a method with ``fragment_names``: ``even``, ``interval`` or the name
    of a knob holding one of them."""


@dataclass(frozen=True)
class Stream:
    """One stream of a periodic method: its name, the step (after warm start) of its first sync,
    the parameters it carries (None: all) and their per-layer parts."""
    name: str
    offset: int
    keys: tuple[str, ...] | None
    parts: tuple[tuple[int | None, int], ...]


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
    """Base of a periodic method: give ``sync`` (a ``SyncRule``), ``contribution`` and ``apply``
    (and ``fragment_names`` for several streams)."""

    sync: SyncRule = SyncRule()

    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.H = self._knob(self.sync.every)
        self.delay = self._knob(self.sync.delay)
        self.tau = self._knob(self.sync.delay_steps)
        self.lag = self.delay * self.H + self.tau  # steps from sending a round to applying it
        self.stream = self.sync.stream
        self.warm_collective = spec.collective
        self.info = ScheduleInfo(wire_format=spec.payload_dtype)
        self.parts: list[tuple[int | None, int]] = []
        self.layers = 1
        self.streams: list[Stream] = [Stream(self.stream, self.H, None, ())]
        self._plans: dict[int, dict[tuple, StepPlan]] = {}  # step -> groups -> its plan
        self._index()

    def _knob(self, value: int | str) -> int:
        return int(getattr(self.spec, value)) if isinstance(value, str) else int(value)

    @classmethod
    def steps_per_round(cls, spec) -> int:
        every = cls.sync.every
        return int(getattr(spec, every)) if isinstance(every, str) else int(every)

    # ---------------------------------------------------------------- schedule (derived from the rule)
    def fragment_names(self, names: list[str]) -> list[list[str]] | None:
        """The parameter names of each stream's fragment, in stream order; None (the default):
        one stream carries the whole model."""
        return None

    def configure(self, layout, proxy_layers=None) -> None:
        super().configure(layout, proxy_layers)
        frags = self.fragment_names([k for k, _ in layout])
        c = self.sync.copies
        parts, self.layers = layer_parts(layout, None, proxy_layers)
        self.parts = [(layer, c * e) for layer, e in parts]  # the whole model's payload, per layer
        if frags is None:
            self.streams = [Stream(self.stream, self.H, None, tuple(self.parts))]
        else:
            stagger = self.sync.stagger
            stagger = stagger if stagger in ("even", "interval") else getattr(self.spec, stagger)
            p = len(frags)
            if stagger == "interval":
                p_blocks = sum(1 for f in frags if any(block_of(n) is not None for n in f))
                offsets = [(i + 1) * max(1, self.H // (p_blocks + 1)) for i in range(p)]
            else:
                offsets = [max(1, round(self.H * (i + 1) / p)) for i in range(p)]
            self.streams = []
            for i, (f, t) in enumerate(zip(frags, offsets)):
                parts, self.layers = layer_parts(layout, f, proxy_layers)
                fparts = tuple((layer, c * e) for layer, e in parts)
                self.streams.append(Stream(f"{self.stream}{i}", t, tuple(f), fparts))
        self._plans = {}
        self._index()
        if frags is not None:  # one collective a round per stream; a sync's bytes: the mean over the streams
            elems = dict(layout)
            self.info = ScheduleInfo(
                wire_format=self.spec.payload_dtype, syncs_per_round=p,
                payload_bytes=sync_bytes(*(self.method_plan(0, t) for t in sorted(set(offsets)))),
                extra={"fragments": p, "fragment_params": [sum(elems[n] for n in f) for f in frags],
                       "offsets": offsets, "sync_grain": self.spec.sync_grain})

    def _index(self) -> None:
        """What the schedule queries read: streams by name, the residues mod H of the steps that
        send or apply, and from the last stream's first apply on, steps to the next such step."""
        H = self.H
        self._by_name = {s.name: s for s in self.streams}
        firsts = [f for s in self.streams for f in (s.offset, s.offset + self.lag)]
        self._busy = {f % H for f in firsts}
        self._steady = max(firsts)
        self._quiet = [min((r - i) % H for r in self._busy) for i in range(H)]
        # streams by the residue mod H of the steps at which they send / apply (the queries below
        # look at those only, not at every stream); answers of method_quiet before the steady state
        self._send_at: dict[int, list] = {}
        self._apply_at: dict[int, list] = {}
        for st in self.streams:
            self._send_at.setdefault(st.offset % H, []).append(st)
            self._apply_at.setdefault((st.offset + self.lag) % H, []).append(st)
        self._early_quiet: dict[int, int] = {}
        # everyone syncs with everyone (``group_of`` not drawn): a step's plan is every worker's
        self._by_step: dict[int, StepPlan] | None = {} if type(self).group_of is Periodic.group_of else None

    def group_of(self, round_: int, worker: int) -> tuple[int, ...]:
        """The workers ``worker`` syncs with in round ``round_`` (sorted): everyone by default."""
        return self.everyone

    def _sent(self, step: int):
        """(stream, round) of each stream that sends at ``step``."""
        H = self.H
        return [(s, (step - s.offset) // H) for s in self._send_at.get(step % H, ()) if step >= s.offset]

    def _applied(self, step: int):
        """(stream, round) of each stream whose apply falls at ``step`` (round < 0: the first
        ``delay`` rounds, nothing has arrived yet)."""
        H, lag = self.H, self.lag
        return [(s, (step - s.offset - lag) // H) for s in self._apply_at.get(step % H, ()) if step >= s.offset]

    def method_plan(self, worker: int, step: int) -> StepPlan:
        if step % self.H not in self._busy:
            return NOTHING
        by_step = self._by_step
        if by_step is not None:  # (the same plan for every worker: looked up once a step)
            plan = by_step.get(step)
            if plan is None:
                plan = by_step[step] = self._plan(worker, step)
                by_step.pop(step - 2 * self.H, None)
            return plan
        return self._plan(worker, step)

    def _plan(self, worker: int, step: int) -> StepPlan:
        sent = self._sent(step)
        applied = [(s, j) for s, j in self._applied(step) if j >= 0]
        if not (sent or applied):
            return NOTHING
        groups = tuple(self.group_of(j, worker) for _, j in sent)
        plans = self._plans.get(step)
        if plans is None:
            plans = self._plans[step] = {}
            self._plans.pop(step - 2 * self.H, None)
        plan = plans.get(groups)
        if plan is None:
            sp, g = self.spec, self.spec.sync_grain
            during: list = []
            sends: list = []
            for (s, j), group in zip(sent, groups):
                d, snd = layered_send(s.name, j, group, list(s.parts), self.layers, sp.payload_dtype, sp.collective,
                                      grain=g)
                during += d
                sends += snd
            if len(sent) > 1:
                during.sort(key=lambda fs: fs[0])  # two streams due at once: release in backward order
            needs = tuple(n for s, j in applied for n in layered_needs(s.name, j, list(s.parts), self.layers, g))
            plan = plans[groups] = StepPlan(during=tuple(during), sends=tuple(sends), needs=needs)
        return plan

    def method_quiet(self, worker: int, step: int) -> int:
        """Steps before the next one at which a stream sends (t + j H) or applies (+ the lag)."""
        H = self.H
        if step >= self._steady:
            return self._quiet[step % H]
        hit = self._early_quiet.get(step)  # (the same answer for every worker)
        if hit is not None:
            return hit
        nxt = None
        for s in self.streams:
            for first in (s.offset, s.offset + self.lag):
                at = first if step <= first else step + (-(step - first) % H)
                nxt = at if nxt is None or at < nxt else nxt
        self._early_quiet[step] = nxt - step
        return nxt - step

    def use_step(self, key: tuple) -> int:
        s = self._by_name.get(key[0])
        return self.warm + (self.H if s is None else s.offset) + key[1] * self.H + self.lag

    # ---------------------------------------------------------------- math (the method's two functions)
    @abstractmethod
    def contribution(self, state, worker: int, params: Tree) -> Tree:
        """What ``worker`` sends this round (``params``: its replica, restricted to the
        stream's fragment), before the wire format."""

    @abstractmethod
    def apply(self, state, worker: int, params: Tree, fresh: Tree | None, result: Result) -> None:
        """``worker``'s update once the round it needs is reduced (``fresh``: its own
        contribution sent at this step on the stream; ``result``: the reduced round)."""

    # ---------------------------------------------------------------- the framework: queue, wait, release
    def method_ops(self, numerics, state, worker: int, step: int, plan: StepPlan) -> None:
        if not (plan.during or plan.sends or plan.needs):
            return
        params = numerics.replicas.params
        box: dict = {}
        now: dict = {}
        for send in plan.outgoing():  # contributions first: with no lag the same stream is applied next
            keys = self._by_name[send.stream].keys
            red_now = self.reduction(state, send.key, worker)
            now[send.stream] = send

            def contribute(red_now=red_now, keys=keys, name=send.stream) -> None:
                fresh = box[name] = self.contribution(state, worker, worker_view(params, worker, keys))
                red_now.add(worker, self.wire(state, worker, fresh))

            numerics.enqueue_op(worker, contribute)
        for s, j in self._applied(step):
            if j < 0:
                red_old = old_key = None
            else:
                old_key = (s.name, j, self.group_of(j, worker))
                red_old = self.reduction(state, old_key, worker)
            group = now[s.name].group if j < 0 else None

            def apply(red_old=red_old, old_key=old_key, keys=s.keys, name=s.name, group=group) -> None:
                if red_old is None:  # nothing has arrived yet (the first k rounds)
                    result = Result(None, True, None, len(group), len(group))
                elif red_old.gone:  # it ran without this worker, and every user is done with it
                    result = Result(None, False, None, 0, len(red_old.group))
                else:
                    took = worker in red_old.present
                    result = Result(red_old.mean(), took, red_old.contribs.get(worker) if took else None,
                                    len(red_old.present), len(red_old.group))
                self.apply(state, worker, worker_view(params, worker, keys), box.get(name), result)
                if red_old is not None:
                    self.release(state, old_key, worker)

            numerics.enqueue_op(worker, apply, red_old.ready if red_old is not None else None)
