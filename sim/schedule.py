"""The schedule contract: the data a method hands the engine, and nothing else.

A method's schedule is data (see ``sim.algorithms.base`` for the ``Algorithm`` protocol that
produces it). The engine asks one question for every inner step a worker computes:
``at_step(worker, step) -> StepPlan``: what this worker puts on the wire during the step
(``during``, at fractions of its compute) and when it ends (``Send``: which stream and round,
with which group, how many parameters, in which wire format, by which collective, or ``to``
which server) and which earlier sends it must have received before it computes its next step
(``Need``). A blocking method (DiLoCo) needs, at step t, the round it just sent; an overlapped
one (Streaming DiLoCo, eager DiLoCo) needs a round sent tau steps or one outer step earlier; a
gossip method sends to its group only; an asynchronous one sends to a server and needs its
answer. Servers' side of the contract: ``Message`` (a point-to-point payload), ``Served`` (what
a server did with one arrival) and ``ServerInfo`` (a server as a method sees it).

This module is separate so that the engine (``sim.engine``, which runs any such plan) and the
methods (``sim.algorithms``, which write them) share one vocabulary without the engine
importing the algorithms package. It imports neither simpy nor torch.

Grain of a sync (``sync_grain``). At ``step`` grain a method's payload leaves as one send
at the end of the step and the whole next step waits for it. At ``layer`` grain (the
compute-utilization model of the DiLoCo papers: a DAG of forward, backward and reduction
nodes per layer) the payload is split into *parts*, one per layer: part l leaves as soon
as layer l's backward is done (``during``, like ddp's buckets) and the worker waits for
it only at the forward of layer l in the step that needs it (``Need.at``). Each part is
its own collective on the wire; the numerics see one logical collective (``Send.key``),
complete when all its parts are, so the math is the same at either grain. The builders of
layer-grain plans (``layer_parts``, ``layered_send``, ``layered_needs``) and ``sync_bytes``
live here with the vocabulary they build.
"""


from __future__ import annotations

import re
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
