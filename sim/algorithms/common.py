"""What every outer (low-communication) method shares: warm start, outer state, results.

- Warm start: the first ``warm_start_steps`` inner steps are plain ddp (the DiLoCo paper
  starts from a pretrained model; from scratch, an outer Nesterov step at lr 0.7 first
  throws a tiny model back toward the uniform loss). The method's own outer state is
  taken from the replicas when the last warm-up step is applied, and its schedule counts
  inner steps from there.
- Outer state is kept per worker, stacked like the replicas (``outer``: the outer /
  slow parameters; ``momentum``: the outer optimizer's buffer). Methods whose workers
  all apply the same update (DiLoCo, delayed, streaming) keep identical rows; eager
  DiLoCo and NoLoCo let them differ, and report how far apart they are.
- Each collective's inputs and result live in a ``Reduction`` keyed by ``Send.key``,
  created when the step that sends is queued, completed when the engine reports the
  collective done.
- Faults (issue 4): a collective may complete over a subset of its group; the average
  is over those present, and a worker that is not among them applies the outer step to
  its outer copy (which stays the shared one) but keeps its own local parameters (the
  DiLoCo paper's dropped outer gradients). A worker that comes back (``recover``) takes
  a live peer's outer state and restarts from its outer parameters, at the point of the
  peer's queue where the fetch began; its own inner optimizer state is kept (a joiner's
  is fresh). ``use_step`` tells which results a worker that came back will still use.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Callable

from sim.algorithms.base import Algorithm
from sim.algorithms.transforms import ErrorFeedback, Reduction, Tree, replica_mean, wire_roundtrip
from sim.schedule import Need, Send, StepPlan


def allreduce_plan(stream: str, round_: int, group: tuple[int, ...], elems: int, wire_format: str,
                   counts_as_round: bool, collective: str = "ring_allreduce") -> StepPlan:
    """Data-parallel step: send this step's gradient to everyone and wait for the mean."""
    send = Send(stream, round_, group, elems, wire_format, collective, counts_as_round)
    return StepPlan(sends=(send,), needs=(Need(stream, round_),), local_step=False)


def allreduce_grads(wire_format: str, contributors: tuple[int, ...] | None = None, backend: str = "auto"):
    """Gradient transform of one ddp step: every replica gets the mean of the wire-format
    grads (of ``contributors`` only when some gradients were dropped)."""
    def transform(grads: Tree) -> Tree:
        sent = wire_roundtrip(grads, wire_format, stacked=True, backend=backend)
        if contributors is not None:
            import torch

            idx = torch.tensor(contributors, device=next(iter(sent.values())).device)
            sent = {k: v.index_select(0, idx) for k, v in sent.items()}
        mean = replica_mean(sent)
        return {k: mean[k].unsqueeze(0).expand_as(g) for k, g in grads.items()}
    return transform


def only(records: list, contributors: tuple[int, ...] | None) -> list:
    """Train records of the workers whose gradients counted (all when ``contributors`` is None)."""
    if contributors is None:
        return records
    keep = set(contributors)
    return [r for r in records if r[0] in keep]


def run_or_enqueue(numerics, worker: int, fn, ready=None) -> None:
    """Run ``fn`` now if ``worker``'s queue is empty and it is ready (its state is current),
    else queue it behind what the worker has queued."""
    if not numerics.pending[worker] and (ready is None or ready()):
        fn()
        numerics.ops_run += 1
    else:
        numerics.enqueue_op(worker, fn, ready)


def split_into_groups(order: list[int], size: int) -> dict[int, tuple[int, ...]]:
    """Worker -> its group: consecutive slices of ``order`` of ``size`` workers, each sorted
    (the last may be smaller)."""
    groups: dict[int, tuple[int, ...]] = {}
    for i in range(0, len(order), size):
        group = tuple(sorted(order[i:i + size]))
        groups.update({w: group for w in group})
    return groups


def copy_row(stacked: Tree, dst: int, src: Tree) -> None:
    for k in stacked:
        stacked[k][dst].copy_(src[k])


@dataclass
class Membership:
    """The framework's state of who takes part (``OuterMethod`` and the sync template own it; a
    method's math never reads or writes it)."""
    reductions: dict = field(default_factory=dict)
    """Send.key -> Reduction: each collective's contributions and result."""
    absent: set = field(default_factory=set)
    """Workers down now (results they have not registered for do not wait for them)."""
    down: set = field(default_factory=set)
    """Workers whose outer rows are stale (down, or about to take a peer's)."""
    applying: dict = field(default_factory=dict)
    """Worker -> parameter fetches queued and not yet applied."""
    short: dict = field(default_factory=dict)
    """Send.key -> participants, for collectives that ran without some member."""


@dataclass
class OuterMath:
    """The method's math state. Rows of ``outer`` and ``momentum`` are workers, stacked like the
    replicas."""
    outer: Tree | None = None
    """The outer (slow) parameters; None during warm start."""
    momentum: Tree | None = None
    """The outer optimizer's buffer."""
    ef: ErrorFeedback | None = None
    """Each worker's quantization residual (``error_feedback``)."""


@dataclass
class OuterState(OuterMath, Membership):
    """The state of an outer method (numerics; per run): its math (``OuterMath``) and the
    framework's membership (``Membership``), typed apart, held in one object."""


class OuterMethod(Algorithm):
    """Base of the DiLoCo family and NoLoCo; subclasses give ``method_plan``, ``method_ops`` and
    ``use_step`` (abstract: a subclass without one is refused when it is loaded)."""

    @classmethod
    def events_per_step(cls, spec, layers: int) -> float:
        """The step, plus one event per part of a round's payload (at layer grain one per layer
        and one for the non-block parameters; at step grain one) spread over the round's steps."""
        parts = layers + 1 if getattr(spec, "sync_grain", "step") == "layer" else 1
        return 1.0 + parts * cls.peers_per_part(spec) / max(1, cls.steps_per_round(spec))

    @classmethod
    def peers_per_part(cls, spec) -> int:
        """Transfers one worker makes per part of its payload (1 for a collective; gossip: one
        per other member of its group)."""
        return 1

    def __init__(self, spec, n_workers: int, seed: int):
        self.spec = spec
        self.n_workers = n_workers
        self.seed = seed
        self.everyone = tuple(range(n_workers))
        self.warm = spec.warm_start_steps
        self.warm_collective = "ring_allreduce"  # the all-reduce of warm start's ddp steps
        self._sorted_groups: dict[int, tuple[dict, list]] = {}  # round -> (its groups, them sorted)
        self.n_params = 0

    # ---------------------------------------------------------------- schedule (data)
    def configure(self, layout: list[tuple[str, int]], proxy_layers: int | None = None) -> None:
        """Learn the parameter layout: (name, elements on the wire) in model order. Payload
        sizes come from it (scaled to a timing proxy when there is one); no tensors needed."""
        self.layout = list(layout)
        self.n_params = sum(e for _, e in layout)

    def at_step(self, worker: int, step: int) -> StepPlan:
        if step <= self.warm:
            return allreduce_plan("warmup", step - 1, self.everyone, self.n_params, self.spec.payload_dtype, False,
                                  self.warm_collective)
        return self.method_plan(worker, step - self.warm)

    @abstractmethod
    def method_plan(self, worker: int, step: int) -> StepPlan:
        """``at_step`` counted from the end of warm start."""
        raise NotImplementedError

    def quiet_steps(self, worker: int, step: int) -> int:
        """How many steps from ``step`` on have empty plans (no send, no need), said without
        drawing anything (the engine may then run them as one stretch of compute)."""
        if step <= self.warm:
            return 0
        return self.method_quiet(worker, step - self.warm)

    def method_quiet(self, worker: int, step: int) -> int:
        """``quiet_steps`` counted from the end of warm start; a method that does not say
        has none (every step is looked at)."""
        return 0

    # ---------------------------------------------------------------- numerics
    def init(self, replicas) -> OuterState:
        state = OuterState(ef=ErrorFeedback(self.spec.payload_dtype, self.kernels) if self.spec.error_feedback else None)
        if self.warm == 0:
            self.start(replicas, state)
        return state

    def start(self, replicas, state: OuterState) -> None:
        """Take the outer state from the replicas (after warm start, or at once)."""
        import torch

        state.outer = {k: v.clone() for k, v in replicas.params.items()}
        state.momentum = {k: torch.zeros_like(v) for k, v in replicas.params.items()}

    def on_step(self, numerics, state: OuterState, worker: int, step: int, time_s: float, plan: StepPlan) -> None:
        if not plan.local_step:
            return  # a ddp step: it runs when its all-reduce completes (on_reduced)
        numerics.enqueue(worker, step, time_s)
        self.method_ops(numerics, state, worker, step - self.warm, plan)

    @abstractmethod
    def method_ops(self, numerics, state: OuterState, worker: int, step: int, plan: StepPlan) -> None:
        """The method's math for ``worker``'s step ``step`` (counted from the end of warm start):
        queue its contribute / apply ops on the worker's numerics queue."""
        raise NotImplementedError

    def wire(self, state: OuterState, worker: int, tree: Tree) -> Tree:
        """What the receivers see of ``worker``'s payload ``tree`` (with error feedback: of the
        payload plus the worker's residual, which is then updated)."""
        if state.ef is not None:
            return state.ef.send(worker, tree)
        return wire_roundtrip(tree, self.spec.payload_dtype, backend=self.kernels)

    def reduction(self, state: OuterState, key: tuple, worker: int | None = None) -> Reduction:
        """The reduction of collective ``key``; ``worker`` registers as one that will use it."""
        red = state.reductions.get(key)
        if red is None and worker is not None and worker not in state.short.get(key, (worker,)):
            red = Reduction(key[2])  # it ran without this worker and every user is done with it
            red.finish(state.short[key])
            red.gone = True
            return red
        if red is None:
            red = state.reductions[key] = Reduction(key[2])
            red.excused |= state.absent & set(key[2])
        if worker is not None:
            red.users.add(worker)
            red.excused.discard(worker)
        return red

    def release(self, state: OuterState, key: tuple, worker: int) -> None:
        red = state.reductions.get(key)
        if red is not None and red.release(worker):
            del state.reductions[key]

    def on_reduced(self, numerics, state: OuterState, send: Send, time_s: float, participants: tuple | None = None) -> list:
        """The engine finished ``send``'s collective over ``participants`` (None: the whole
        group); returns train records of steps it ran."""
        if send.stream == "warmup":
            records = [] if participants is not None and not participants else numerics.synchronous_step(
                send.round + 1, time_s, allreduce_grads(self.spec.payload_dtype, participants, self.kernels))
            # (no whole gradient arrived, empty participants: no step; the outer state is still taken)
            if send.round + 1 == self.warm:
                self.start(numerics.replicas, state)
            return only(records, participants)
        self.reduction(state, send.key).finish(participants)
        if participants is not None:
            state.short[send.key] = participants
        return []

    # ---------------------------------------------------------------- faults
    @abstractmethod
    def use_step(self, key: tuple) -> int:
        """The last engine step at which a worker uses the result of collective ``key``."""
        raise NotImplementedError

    group_stream = "gossip"
    """Stream of the per-round group collectives of a method with ``rounds_by_groups``."""

    def groups(self, round_: int) -> dict[int, tuple[int, ...]]:
        """Worker -> its group in round ``round_`` (methods with ``rounds_by_groups``)."""
        raise NotImplementedError

    def round_groups(self, round_: int) -> tuple[str, list[tuple[int, ...]], int]:
        """(stream, the distinct groups of round ``round_`` sorted, the engine step at which they
        sync), from ``groups``; the sorted list is kept while ``groups`` returns the same draw."""
        g = self.groups(round_)
        cache = self._sorted_groups
        cached = cache.get(round_)
        if cached is None or cached[0] is not g:
            cached = cache[round_] = (g, sorted(set(g.values())))
            cache.pop(round_ - 8, None)
        return self.group_stream, cached[1], self.use_step((self.group_stream, round_, ()))

    def _sweep(self, state: OuterState) -> None:
        for key in [k for k, red in state.reductions.items() if red.freeable()]:
            del state.reductions[key]

    def on_member_down(self, state: OuterState, worker: int) -> None:
        """``worker`` failed (simulated time): results it has not registered for will not wait for it."""
        state.absent.add(worker)
        state.down.add(worker)
        for red in state.reductions.values():
            if worker in red.group and worker not in red.users:
                red.excused.add(worker)
        self._sweep(state)

    def on_member_up(self, state: OuterState, worker: int, step: int) -> None:
        """``worker`` is back and goes on after engine step ``step``: it will use the results
        whose use comes later, and none of the others."""
        state.absent.discard(worker)
        if not state.applying.get(worker):
            state.down.discard(worker)
        for key, red in state.reductions.items():
            if worker in red.group and worker not in red._released:
                if self.use_step(key) > step:
                    red.excused.discard(worker)
                else:
                    red.excused.add(worker)
        self._sweep(state)

    def recover(self, numerics, state: OuterState, worker: int, peer: int) -> None:
        """``worker`` fetches ``peer``'s parameters, starting now: snapshot the peer's state at
        this point of its queue; overwrite the worker's outer state with it and its replica
        with the outer parameters (during warm start: the peer's replica) at this point of
        the worker's queue."""
        box: dict = {}
        params = numerics.replicas.params

        def snapshot() -> None:
            box["params"] = {k: v[peer].clone() for k, v in params.items()}
            if state.outer is not None:
                box["outer"] = {k: v[peer].clone() for k, v in state.outer.items()}
                box["momentum"] = {k: v[peer].clone() for k, v in state.momentum.items()}

        def apply() -> None:
            if "outer" in box and state.outer is not None:
                copy_row(state.outer, worker, box["outer"])
                copy_row(state.momentum, worker, box["momentum"])
                copy_row(params, worker, box["outer"])
            else:
                copy_row(params, worker, box["params"])
            state.applying[worker] -= 1
            if not state.applying[worker] and worker not in state.absent:
                state.down.discard(worker)

        state.applying[worker] = state.applying.get(worker, 0) + 1
        run_or_enqueue(numerics, peer, snapshot)
        run_or_enqueue(numerics, worker, apply, lambda: "params" in box)

    def _live_rows(self, state: OuterState) -> list[int]:
        """Workers whose outer rows are current (not down, not waiting to take a peer's)."""
        rows = [w for w in range(self.n_workers) if w not in state.down]
        return rows or list(range(self.n_workers))

    outer_state_copies = 2
    """Per-worker copies of the parameters kept besides the replica: outer parameters and momentum."""
    kernels = "auto"
    """Backend of the wire-format and outer-update kernels (``run.kernels``; set by the runner)."""
    outer_rows_differ = False
    """True where workers' outer parameters may differ (eager, noloco): evaluate their mean."""
    diagnostic: tuple[str, Callable[[Tree], float]] | None = None
    """(metric name, function of the stacked outer parameters) reported at every evaluation."""

    def global_params(self, numerics, state: OuterState) -> Tree:
        """Parameters evaluated as 'the model': the outer parameters (their mean over workers
        where they differ; replica 0 during warm start)."""
        if state.outer is None:
            return numerics.replicas.replica(0)
        rows = self._live_rows(state)  # workers down (or about to take a peer's state) have stale rows
        if self.outer_rows_differ:
            if len(rows) == self.n_workers:
                return {k: v.float().mean(dim=0) for k, v in state.outer.items()}
            return {k: v[rows].float().mean(dim=0) for k, v in state.outer.items()}
        return {k: v[rows[0]] for k, v in state.outer.items()}

    def diagnostics(self, numerics, state: OuterState) -> dict[str, float]:
        if self.diagnostic is None or state.outer is None:
            return {}
        name, fn = self.diagnostic
        return {name: fn(state.outer)}
