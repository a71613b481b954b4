"""Flat records that engine processes append while a run goes on.

One small object per compute span (and every other worker state span), per transfer, per
sync and per loss value. ``sim.metrics.tables`` turns lists of them into DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class StateSpan:
    """A worker spent [start_s, end_s) in one state: compute | comm_blocked | idle | down."""
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


@dataclass(slots=True)
class LossPoint:
    """A loss value: kind 'train' (one worker's step) or 'eval' (the global model)."""
    kind: str
    worker: int
    step: int
    time_s: float
    loss: float


@dataclass
class Recorder:
    """Append-only lists of records, shared by every process of one run."""
    states: list[StateSpan] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    syncs: list[Sync] = field(default_factory=list)
    losses: list[LossPoint] = field(default_factory=list)
