"""What an algorithm is: a schedule (data, read by the engine) plus its math (numerics).

The engine asks the schedule one question for every inner step a worker computes:
``at_step(worker, step) -> StepPlan``: what this worker puts on the wire during the step
(``during``, at fractions of its compute) and when it ends (``Send``:
which stream and round, with which group, how many parameters, in which wire format,
by which collective) and which earlier sends it must have received before it computes
its next step (``Need``). A blocking method (DiLoCo) needs, at step t, the round it just
sent; an overlapped one (Streaming DiLoCo, eager DiLoCo) needs a round sent tau steps or
one outer step earlier; a gossip method sends to its group only. The engine runs any
such plan -- adding a method never touches the engine.

The math is explicit state plus small ops over it (``init``, ``on_step``, ``on_reduced``,
``global_params``), built from the transforms in ``transforms.py``. Neither part imports
simpy. Ops run lazily in each worker's simulated order (``training.replicas.Numerics``).

Grain of a sync (``sync_grain``). At ``step`` grain a method's payload leaves as one send
at the end of the step and the whole next step waits for it. At ``layer`` grain (the
compute-utilization model of the DiLoCo papers: a DAG of forward, backward and reduction
nodes per layer) the payload is split into *parts*, one per layer: part l leaves as soon
as layer l's backward is done (``during``, like ddp's buckets) and the worker waits for
it only at the forward of layer l in the step that needs it (``Need.at``). Each part is
its own collective on the wire; the numerics see one logical collective (``Send.key``),
complete when all its parts are, so the math is the same at either grain.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def block_of(name: str) -> int | None:
    """The transformer block a parameter belongs to (``blocks.<i>.``), None for the others
    (embeddings, final norm, head)."""
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Send:
    """A worker's contribution to one collective: stream ``stream``, round ``round``."""
    stream: str
    round: int
    group: tuple[int, ...]
    """Workers taking part (the collective starts when all of them have sent)."""
    elems: int
    """Parameters in this payload (its bytes come from ``kernels.formats.payload_bytes``)."""
    wire_format: str
    collective: str
    counts_as_round: bool = True
    """Whether this send's completion counts toward the run's outer-round count."""
    part: int = 0
    """Which part of the payload this is (layer grain: one part per layer), 0 <= part < parts."""
    parts: int = 1
    """How many parts the payload is split into; each is its own collective on the wire."""
    to: str | None = None
    """A point-to-point send to the named server (``collective`` ``p2p``, ``group`` the worker
    alone): a flow that starts when the worker releases it and waits for no other worker. A
    ``Need`` of this send waits for the server's answer to it (``Message.answers``)."""

    @property
    def key(self) -> tuple[str, int, tuple[int, ...]]:
        """The logical collective (all parts): what the numerics reduce."""
        return (self.stream, self.round, self.group)

    @property
    def part_key(self) -> tuple[str, int, tuple[int, ...], int]:
        """One part's collective on the wire."""
        return (self.stream, self.round, self.group, self.part)


@dataclass(frozen=True)
class Need:
    """Before its next inner step the worker must have the result of this earlier send
    (of part ``part`` of it; at fraction ``at`` of that next step's compute, e.g. the start
    of a layer's forward, where 0 means before the step starts)."""
    stream: str
    round: int
    part: int = 0
    at: float = 0.0


@dataclass(frozen=True)
class StepPlan:
    during: tuple[tuple[float, Send], ...] = ()
    """Sends released while the step computes, at a fraction of its compute time (ddp's
    per-layer gradient buckets), in increasing fraction order."""
    sends: tuple[Send, ...] = ()
    needs: tuple[Need, ...] = ()
    local_step: bool = True
    """True: the step just done moved this worker's replica on its own (inner step).
    False: the step only happens through a collective (ddp: the all-reduced gradient)."""

    def outgoing(self) -> tuple[Send, ...]:
        """The logical sends of this step (one per collective, whatever its parts), in order."""
        if not self.during:
            return self.sends  # step grain: one send per collective
        seen: dict[tuple, Send] = {}
        for send in (*(s for _, s in self.during), *self.sends):
            seen.setdefault(send.key, send)
        return tuple(seen.values())

    def needed(self) -> tuple[tuple[str, int], ...]:
        """The (stream, round) of each collective whose result this step needs, in order."""
        return tuple(dict.fromkeys((n.stream, n.round) for n in self.needs))


NOTHING = StepPlan()


@dataclass(frozen=True)
class Message:
    """A point-to-point payload to or from a server (methods without a barrier). ``sender`` and
    ``to`` are a worker index (int) or a server's name (str)."""
    stream: str
    round: int
    sender: int | str
    to: int | str
    elems: int
    wire_format: str
    answers: tuple[str, int] | None = None
    """For a message to a worker: the (stream, round) of the worker's send it answers (the worker's
    ``Need`` of that send is met when this message arrives); None: it answers nothing."""

    @property
    def key(self) -> tuple:
        """What identifies the message (sender, receiver, stream, round): the numerics' mailbox."""
        return (self.sender, self.to, self.stream, self.round)


@dataclass(frozen=True)
class Served:
    """What a server did with one arrival (``Algorithm.serve``; schedule only, no tensors)."""
    sends: tuple[Message, ...] = ()
    """Payloads the server sends now (to workers or servers), after its apply time."""
    applied: bool = False
    """Whether the arrival was an update applied to the server's model (counts toward the server's version)."""
    staleness: int | None = None
    """Server versions applied between sending the update's sender its model and applying the update."""
    version: int = 0
    """The server's version after this arrival."""
    counts: int = 0
    """Updates this arrival applied at the method's top server (``run.max_rounds`` counts them)."""
    release_at: float | None = None
    """Simulated time ``sends`` leave (the end of that instant; they carry the server's values
    then); None: the end of this instant (a grace period holds answers back)."""


@dataclass(frozen=True)
class ServerInfo:
    """A parameter server of the topology as a method sees it."""
    name: str
    region: str
    bandwidth_gbps: float | None = None
    """Its NIC, each direction (None: the region's intra-region link)."""
    apply_time_s: float = 0.0
    """Simulated seconds it spends on each payload it handles (serialised: one at a time)."""


def sync_bytes(*plans: StepPlan) -> float:
    """Bytes one worker's payload of one collective holds, averaged over the collectives that
    ``plans`` send (a collective's parts summed, each part in its own wire format: the sizes the
    engine moves and records). ``ScheduleInfo.payload_bytes`` of a method whose payload is not
    the whole model once (sparse values, DDP's buckets, streaming's fragments, gossip's two);
    0 when the plans send nothing."""
    from kernels.formats import payload_bytes

    per: dict[tuple, float] = {}
    for s in (*(s for plan in plans for _, s in plan.during), *(s for plan in plans for s in plan.sends)):
        per[s.key] = per.get(s.key, 0.0) + payload_bytes(s.elems, s.wire_format)
    return sum(per.values()) / len(per) if per else 0.0

FORWARD_SHARE = 1 / 3
"""Share of a step's compute that is the forward pass (the rest is backward), per layer in equal parts."""


def forward_start(layer: int, layers: int) -> float:
    """Fraction of a step at which layer ``layer`` (0 = next to the input) of ``layers`` starts its forward."""
    return FORWARD_SHARE * layer / layers


def backward_done(layer: int, layers: int) -> float:
    """Fraction of a step at which layer ``layer``'s backward is done (the last layer's first)."""
    return FORWARD_SHARE + (1 - FORWARD_SHARE) * (layers - layer) / layers


def split_evenly(total: int, n: int) -> list[int]:
    """``total`` elements in ``n`` integer parts that sum to it exactly (the first ones larger)."""
    q, r = divmod(int(total), n)
    return [q + (i < r) for i in range(n)]


def layer_parts(layout: list[tuple[str, int]], names=None, proxy_layers: int | None = None
                ) -> tuple[list[tuple[int | None, int]], int]:
    """The per-layer parts of the parameters ``names`` (all of ``layout`` when None) and the
    layer count their positions refer to: ((layer or None, elements) per part, layers).

    Without a timing proxy, one part per transformer block the names touch, plus one for
    their non-block parameters. With a proxy of L layers the step's compute is the proxy's:
    block i of the trained model's n stands for proxy layers [i L / n, (i + 1) L / n), and
    the names' elements (already the proxy's payload) are split evenly over the proxy layers
    they stand for; names without blocks are one part, released at the step's end."""
    chosen = layout if names is None else [(k, e) for k, e in layout if k in set(names)]
    n_blocks = len({b for k, _ in layout if (b := block_of(k)) is not None})
    per_block: dict[int, int] = {}
    other = 0
    for k, e in chosen:
        b = block_of(k)
        if b is None:
            other += e
        else:
            per_block[b] = per_block.get(b, 0) + e
    if not per_block:
        return ([(None, other)] if other else []), max(1, proxy_layers or n_blocks)
    if proxy_layers is None:
        parts: list[tuple[int | None, int]] = [(b, per_block[b]) for b in sorted(per_block)]
        return parts + ([(None, other)] if other else []), n_blocks
    covered: set[int] = set()
    for b in per_block:
        lo, hi = b * proxy_layers // n_blocks, (b + 1) * proxy_layers // n_blocks
        covered.update(range(lo, max(hi, lo + 1)))
    layers = sorted(covered)
    total = sum(per_block.values()) + other
    return list(zip(layers, split_evenly(total, len(layers)))), proxy_layers


def layered_send(stream: str, round_: int, group: tuple[int, ...], parts: list[tuple[int | None, int]],
                 layers: int, wire_format: str, collective: str, counts_as_round: bool = True,
                 grain: str = "layer") -> tuple[tuple[tuple[float, Send], ...], tuple[Send, ...]]:
    """A payload of ``parts`` ((layer or None for non-block parameters, elements) each) as
    (during, sends) of a ``StepPlan``: at ``layer`` grain each part leaves when its layer's
    backward is done (non-block parameters at the end of the step); at ``step`` grain the
    whole payload is one send at the end of the step."""
    if grain == "step" or not parts:
        total = sum(e for _, e in parts)
        return (), (Send(stream, round_, group, total, wire_format, collective, counts_as_round),)
    n = len(parts)
    during = [(1.0 if layer is None else backward_done(layer, layers),
               Send(stream, round_, group, elems, wire_format, collective, counts_as_round, i, n))
              for i, (layer, elems) in enumerate(parts)]
    during.sort(key=lambda fs: (fs[0], fs[1].part))
    return tuple(during), ()


def layered_needs(stream: str, round_: int, parts: list[tuple[int | None, int]], layers: int,
                  grain: str = "layer") -> tuple[Need, ...]:
    """What the next step needs of a payload made by ``layered_send`` with the same ``parts``:
    at ``layer`` grain part l at the start of its layer's forward (non-block parameters: before
    the step); at ``step`` grain all of it before the step."""
    if grain == "step" or not parts:
        return (Need(stream, round_),)
    return tuple(Need(stream, round_, i, 0.0 if layer is None else forward_start(layer, layers))
                 for i, (layer, _) in enumerate(parts))


@dataclass(frozen=True)
class ScheduleInfo:
    """What the rest of the simulator reports about a method (not read by the engine)."""
    wire_format: str
    syncs_per_round: int = 1
    """Collectives that complete one round (P fragments for streaming; groups for gossip)."""
    payload_bytes: float | None = None
    """Bytes one worker's payload of one sync holds, the mean over a round's syncs where they
    differ (summary.json's ``payload_bytes_per_sync``); None: the whole model in ``wire_format``.
    Methods that send something else set it (``sync_bytes`` of the plans of a round's syncs)."""
    extra: dict = field(default_factory=dict)


class Algorithm(ABC):
    """The protocol every method implements, built-in or a user's: the runner calls these
    hooks and nothing else (no attribute probing). A method is constructed as
    ``Method(spec, n_workers, seed)`` (``spec``: its validated scenario section).

    Schedule (data; read by the engine, no tensors):
      ``configure``, ``at_step``, ``quiet_steps``, ``info``, ``round_groups``,
      ``set_liveness``, ``use_step``.
    Math (numerics; explicit state, ops queued in each worker's simulated order):
      ``init``, ``on_step``, ``on_reduced``, ``global_params``, ``diagnostics``,
      ``evaluate_after``.
    Faults: ``on_member_down``, ``on_member_up``, ``recover``.
    Sizes: ``outer_state_copies`` (memory estimate), ``kernels`` (set by the runner).
    Checks before work (class methods over the validated knobs): ``check_fits`` (knobs that do
    not fit the topology or model), ``steps_per_round``, ``warm_steps`` and
    ``events_per_step`` (the work estimate); ``diagnostic_labels`` names what ``diagnostics``
    returns in reports.

    The defaults below are what a method without that concern does; ``at_step``, ``init``,
    ``on_step``, ``on_reduced``, ``global_params`` and ``recover`` have none: they are
    abstract, so a class that lacks one is refused when it is loaded (naming the hooks), never
    halfway through a run.
    """

    outer_state_copies = 0
    """Per-worker copies of the parameters kept besides the replica (memory estimate)."""
    kernels = "auto"
    """Backend of the wire-format and outer-update kernels (``run.kernels``; set by the runner)."""
    info: ScheduleInfo
    """What reports say about the schedule (wire format, collectives per round); set by ``configure``."""

    diagnostic_labels: dict[str, tuple[str, str]] = {}
    """Name of each value ``diagnostics`` returns -> (its label in reports, the axis title with
    its unit); the run carries them to the dashboards."""

    # ------------------------------------------------------------------ checks before work
    @classmethod
    def check_fits(cls, spec, n_workers: int, layers: int | None, layers_field: str | None) -> None:
        """Refuse knobs the user set that do not fit the topology (``n_workers``) or the model
        (``layers``, read from the scenario field ``layers_field``; None when unknown): raise
        ``knobs.FieldError((field,), why)``, located inside the ``algorithm`` section. A
        default that does not fit may be clipped instead. Default: everything fits."""

    @classmethod
    def steps_per_round(cls, spec) -> int:
        """Inner steps of one outer round (``run.max_rounds`` -> steps, for the work estimate)."""
        return getattr(spec, "inner_steps", 1)

    @classmethod
    def warm_steps(cls, spec) -> int:
        """Inner steps before the first round (warm start)."""
        return getattr(spec, "warm_start_steps", 0)

    @classmethod
    def events_per_step(cls, spec, layers: int) -> float:
        """Events one worker's inner step costs the simulation on average, for the work estimate
        before a run (``run.max_events``): the step itself plus every collective part it
        sends, spread over the steps of a round. ``layers``: the timed model's (a timing
        proxy's when there is one). Default: one event a step."""
        return 1.0

    # ------------------------------------------------------------------ schedule
    def configure(self, layout: list[tuple[str, int]], proxy_layers: int | None = None) -> None:
        """Learn the parameter layout ((name, elements on the wire) in model order; a timing
        proxy's ``proxy_layers`` when there is one) before the first ``at_step``."""

    @abstractmethod
    def at_step(self, worker: int, step: int) -> StepPlan:
        """What ``worker`` sends during and after its ``step``-th inner step (1-based) and what
        it needs before (or, ``Need.at``, during) the next one."""
        raise NotImplementedError

    def quiet_steps(self, worker: int, step: int) -> int:
        """How many steps from ``step`` on have empty plans, said without drawing anything
        (0: look at every step; the engine may run quiet ones as one event)."""
        return 0

    rounds_by_groups = False
    """True for methods whose groups differ per round (gossip): the runner counts a round once
    each of its ``round_groups`` has synced or can no longer sync. False: a round is
    ``info.syncs_per_round`` completed collectives whose sends count as rounds."""

    def round_groups(self, round_: int) -> tuple[str, list[tuple[int, ...]], int]:
        """(stream, the groups of round ``round_``, the step at which they sync); needed only
        where ``rounds_by_groups``."""
        raise NotImplementedError

    def set_liveness(self, alive) -> None:
        """``alive()`` -> list of bools (worker i up), for methods that draw groups among the
        workers up (noloco's repair). Default: not needed."""

    # ------------------------------------------------------------------ math
    @abstractmethod
    def init(self, replicas):
        """The method's state for these replicas (called once, numerics on)."""
        raise NotImplementedError

    @abstractmethod
    def on_step(self, numerics, state, worker: int, step: int, time_s: float, plan: StepPlan) -> None:
        """``worker`` finished ``step`` at ``time_s`` with ``plan``: queue its inner step and the
        method's ops (contribute, outer step, merge) on the worker's numerics queue."""
        raise NotImplementedError

    @abstractmethod
    def on_reduced(self, numerics, state, send: Send, time_s: float, participants: tuple | None = None) -> list:
        """The engine finished ``send``'s collective (all its parts) over ``participants`` (None:
        the whole group); returns the (worker, step, time, loss) records of steps it ran."""
        raise NotImplementedError

    def evaluate_after(self, records: list, every_steps: int | None) -> int | None:
        """After ``on_reduced`` ran steps (``records``: ddp's, or warm start's), the step at
        which the global model is to be evaluated now, or None: by default the steps' own on
        the ``run.eval_every_steps`` grid (a step that only runs once its all-reduce is done
        is evaluated then, not when worker 0 finished computing it)."""
        if not records or not every_steps:
            return None
        step = records[0][1]
        return step if step % every_steps == 0 else None

    @abstractmethod
    def global_params(self, numerics, state):
        """The parameters evaluated as 'the model'."""
        raise NotImplementedError

    def diagnostics(self, numerics, state) -> dict[str, float]:
        """Extra values recorded at each evaluation (e.g. noloco's spread)."""
        return {}

    # ------------------------------------------------------------------ faults
    # ------------------------------------------------------------------ servers (methods without a barrier)
    @classmethod
    def server_plan(cls, spec, topology) -> list[ServerInfo]:
        """The servers this method runs on, resolved against ``topology`` (its ``servers``
        section and regions): those it names and those it creates (HALoS's per-region ones).
        Raise ``knobs.FieldError((field,), why)`` for a server the topology lacks. Default: none."""
        return []

    def set_servers(self, servers: list[ServerInfo], worker_regions: list[str], step_time_s: list[float]) -> None:
        """Before the run: the servers (``server_plan``), each worker's region and its known seconds
        per inner step (region multiplier x node multiplier; dynamic local updates read them)."""

    def serve(self, server: str, message: Message, time_s: float) -> Served:
        """``message`` has arrived at ``server`` (called in simulated arrival order, after the
        server's apply time): what it does (schedule only: no tensors; the same with numerics off)."""
        raise NotImplementedError(f"{type(self).__name__} has no servers")

    def departed(self, server: str, messages: list[Message], time_s: float) -> None:
        """``messages`` (what ``serve`` said to send, to workers that are up) leave ``server`` now,
        at the end of the instant in which ``serve`` returned them (schedule)."""

    def on_served(self, numerics, state, server: str, message: Message, served: Served, time_s: float) -> None:
        """Numerics of ``serve``: queue the server's math on its own queue, in simulated order."""

    def on_departed(self, numerics, state, server: str, messages: list[Message], time_s: float) -> None:
        """Numerics of ``departed``: queue, on the server's queue, taking the values ``messages`` carry."""

    def on_delivered(self, numerics, state, message: Message, time_s: float) -> None:
        """A server's ``message`` has reached worker ``message.to``: queue its use on the worker's
        queue (before the worker computes again)."""

    def on_dropped(self, numerics, state, message: Message, time_s: float) -> None:
        """``message`` left but is not used: called off on the wire (its worker failed) or it
        reached a worker that no longer waits for it: forget what it carries."""

    def home_server(self, worker: int) -> str | None:
        """The server a worker that comes back fetches the current model from (None: a live peer)."""
        return None

    def rejoined(self, worker: int, server: str, step: int) -> None:
        """Schedule side of a worker's return: it took ``server``'s current model and goes on
        after its step ``step``."""

    def on_member_down(self, state, worker: int) -> None:
        """``worker`` failed: results it has not registered for must not wait for it."""

    def on_member_up(self, state, worker: int, step: int) -> None:
        """``worker`` is back and goes on after engine step ``step``."""

    @abstractmethod
    def recover(self, numerics, state, worker: int, peer: int) -> None:
        """``worker`` fetches ``peer``'s parameters, starting now (queue the copy)."""
        raise NotImplementedError
