"""SIGTERM ends work the way Ctrl-C does.

A timeout, a Slurm cancel or ``kill`` sends SIGTERM; from ``handle_sigterm`` on, the first one
raises ``Terminated`` (a ``KeyboardInterrupt``) in the main thread, so a run writes its tables
and says ``interrupted``, and a sweep stops handing out runs. Kept apart from the run directory
(``sim.rundir``) and from the process pool (``sim.sweep.pool``) because both use it and it
knows nothing of either: it imports nothing of locosim.
"""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the run or sweep ends as on Ctrl-C (tables written, status interrupted)."""


_terminated = False


def handle_sigterm() -> None:
    """From now on the first SIGTERM raises Terminated in the main thread (later ones are
    ignored, so the tables of an interrupted run get written; SIGKILL still stops everything)."""

    def handler(signum, frame):
        global _terminated
        if _terminated:
            return
        _terminated = True
        raise Terminated(f"terminated by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


def was_terminated() -> bool:
    """Whether a SIGTERM arrived since ``handle_sigterm``."""
    return _terminated
