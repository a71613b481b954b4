"""SIGTERM ends work the way Ctrl-C does.

A timeout, a Slurm cancel or ``kill`` sends SIGTERM; from ``handle_sigterm`` on, the first one
raises ``Terminated`` (a ``KeyboardInterrupt``) in the main thread, so a run writes its tables
and says ``interrupted``, and a sweep stops handing out runs. Kept apart from the run directory
(``sim.rundir``) and from the process pool (``sim.sweep.pool``) because both use it and it
knows nothing of either: it imports nothing of locosim.
"""

from __future__ import annotations

import contextlib
import signal
import threading


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


@contextlib.contextmanager
def interrupts_held():
    """Ctrl-C (SIGINT) and SIGTERM held back while the block runs, then delivered as they would
    have been (their handlers as they were: ``KeyboardInterrupt``, ``Terminated``). For the first
    import of torch: its C++ start-up calls back into Python, and an interrupt raised there is an
    exception C++ cannot pass on, so the process aborts (SIGABRT) with nothing said or written.
    Outside the main thread (where handlers cannot be set) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    kinds = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in kinds}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):  # each kind once, in the order they came
            signal.raise_signal(sig)
