"""Flat records that engine processes append while a run goes on.

One small object per compute span (and every other worker state span), per transfer, per
sync and per loss value. ``sim.metrics.tables`` turns lists of them into DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATES = ("compute", "comm_blocked", "straggler_wait", "down")
"""A worker's states, in the order tables and figures list them (a ``StateSpan``'s ``state``)."""


@dataclass(slots=True)
class StateSpan:
    """A worker spent [start_s, end_s) in one state: compute | comm_blocked | straggler_wait | down."""
    worker: int
    node: str
    state: str
    start_s: float
    end_s: float
    step: int  # inner steps completed by the worker when the span began


@dataclass(slots=True)
class Transfer:
    """One flow: ``payload_bytes`` from src to dst, started at start_s, delivered at end_s."""
    src: str
    dst: str
    payload_bytes: float
    start_s: float
    end_s: float
    tag: str
    route: str


@dataclass(slots=True)
class Sync:
    """One collective: who took part, from the last arrival (start_s) to completion (end_s)."""
    round: int
    collective: str
    participants: int
    payload_bytes: float
    first_arrival_s: float
    start_s: float
    end_s: float
    stream: str = ""  # which schedule stream ('outer', 'frag2', 'gossip', 'grads', 'warmup')


@dataclass(slots=True)
class LossPoint:
    """A value over time: kind 'train' (one worker's step loss), 'eval' (the global model's
    held-out loss), 'replica_eval' (one replica's own held-out loss, ``run.eval_replicas``),
    'spread' (NoLoCo: std of slow weights across workers) or 'drift'
    (eager DiLoCo: max pairwise distance between workers' outer parameters)."""
    kind: str
    worker: int
    step: int
    time_s: float
    loss: float


@dataclass(slots=True)
class FaultSpan:
    """A fault lasted [start_s, end_s): kind 'failure' or 'churn' (a node down or absent),
    'slow_period' (a node computes slower), 'link_outage' or 'link_degraded' (a WAN link)."""
    kind: str
    worker: int  # -1 for a link
    node: str  # node name, or 'a<->b' for a link
    start_s: float
    end_s: float
    factor: float = 0.0  # slow_period: step-time multiplier; link_degraded: bandwidth multiplier


@dataclass(slots=True)
class Dropped:
    """A worker's contribution to one collective was not part of it: reason 'late' (the
    sync timeout ran out), 'down' (the worker was down or fetching parameters) or
    'rejoined' (it came back past that step, with a peer's parameters)."""
    worker: int
    node: str
    stream: str
    round: int
    time_s: float
    reason: str


@dataclass(slots=True)
class Recovery:
    """A worker that came back (failure or join) fetched ``payload_bytes`` of parameters
    from ``peer`` over [start_s, end_s) and went on from the peer's step ``step``."""
    worker: int
    node: str
    peer: str
    start_s: float
    end_s: float
    payload_bytes: float
    step: int


@dataclass(slots=True)
class Served:
    """A server handled one payload over [start_s, end_s) (its apply time): from ``sender`` (a
    worker's node or a server), on ``stream`` round ``round``; ``version``: the server's model
    version after it; ``staleness``: versions applied since the sender got its model (-1: not an
    update from a worker)."""
    server: str
    sender: str
    worker: int  # the sending worker, -1 for a server
    stream: str
    round: int
    start_s: float
    end_s: float
    version: int
    staleness: int


@dataclass
class Recorder:
    """Append-only lists of records, shared by every process of one run."""
    states: list[StateSpan] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    syncs: list[Sync] = field(default_factory=list)
    losses: list[LossPoint] = field(default_factory=list)
    faults: list[FaultSpan] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)


def finite_json(obj, path: str = "", replaced: dict | None = None):
    """A copy of JSON-like ``obj`` with every NaN or infinite float (numpy's too) replaced by
    None, so ``json.dumps(..., allow_nan=False)`` writes valid JSON; ``replaced`` (if given)
    collects dotted path -> what the value was ('nan', 'inf', '-inf')."""
    import math

    if isinstance(obj, dict):
        return {k: finite_json(v, f"{path}.{k}" if path else str(k), replaced) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v, f"{path}.{i}" if path else str(i), replaced) for i, v in enumerate(obj)]
    if isinstance(obj, float) or type(obj).__name__ in ("float32", "float64", "float16"):
        v = float(obj)
        if not math.isfinite(v):
            if replaced is not None:
                replaced[path] = str(v)
            return None
        return v
    return obj
