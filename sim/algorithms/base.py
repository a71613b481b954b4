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
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

    @property
    def key(self) -> tuple[str, int, tuple[int, ...]]:
        return (self.stream, self.round, self.group)


@dataclass(frozen=True)
class Need:
    """Before its next inner step the worker must have the result of this earlier send."""
    stream: str
    round: int


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


NOTHING = StepPlan()


@dataclass(frozen=True)
class ScheduleInfo:
    """What the rest of the simulator reports about a method (not read by the engine)."""
    wire_format: str
    syncs_per_round: int = 1
    """Collectives that complete one round (P fragments for streaming; groups for gossip)."""
    extra: dict = field(default_factory=dict)
