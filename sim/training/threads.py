"""How many CPU threads torch uses for a run's numerics (``run.threads``).

Torch's default is one intra-op thread per core. For the tiny models locosim trains, one
batched step is many small kernels, and extra threads mostly spin and synchronise: alone
on this project's 2-core machines two threads are ~1.3x faster than one, but as soon as
another process competes for the cores they make a run 4-9x slower (README, Performance).
``auto`` therefore takes one thread for steps below ``SMALL_STEP_FLOP`` floating-point
operations (6 x parameters x tokens, all replicas together) and, above it, the cores this
process may use, shared out among the locosim processes a sweep runs at once. The choice
depends only on the scenario and the machine's core count, never on its load, so the
same scenario on the same machine always runs with the same threads (float results can
depend on the thread count).
"""

from __future__ import annotations

import os

SMALL_STEP_FLOP = 2e10
"""Below this many FLOPs per batched step, ``auto`` uses one thread (see the module doc)."""


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_threads(requested: int | str, step_flop: float, share: int = 1, cores: int | None = None) -> int:
    """Intra-op threads for a run: ``requested`` when it is a number, else (``auto``) one for a
    small step and the cores divided by ``share`` (processes running at once) for a large one."""
    if requested != "auto":
        return int(requested)
    if step_flop < SMALL_STEP_FLOP:
        return 1
    return max(1, (cores or available_cores()) // max(1, share))
