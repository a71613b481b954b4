"""What an algorithm is: a schedule (data, read by the engine) plus its math (numerics).

The engine reads only the ``Schedule``: how many inner steps between syncs, which
collective, what is sent and in which wire format, whether inner steps advance each
replica on its own. The math is ``init`` / ``on_sync`` / ``global_params`` over explicit
state, built from the small transforms in ``transforms.py``. Neither part imports simpy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    sync_every: int
    """Inner steps between syncs (H in DiLoCo; 1 for ddp)."""
    collective: str
    """Collective that carries the payload (a key of ``sim.engine.collectives.COLLECTIVES``)."""
    payload: str
    """What is sent: 'gradients' or 'pseudo_gradients'."""
    wire_format: str
    """A key of ``kernels.formats.BYTES_PER_ELEMENT``."""
    local_steps: bool
    """True: an inner step changes its replica as soon as it is computed (diloco).
    False: replicas only move through the sync (ddp: the step applies all-reduced grads)."""
    blocking: bool = True
    """Workers wait for the collective before computing again."""
