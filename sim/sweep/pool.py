"""A process pool that hands a task only to an idle worker, stops cleanly and dies with its parent.

``run_pool(fn, tasks, workers, on_result, on_lost)`` runs ``fn(*args)`` for every ``(key, args)``
in spawned worker processes, in task order, and calls ``on_result(key, value)`` in the parent as
each ends. It knows nothing of what the tasks are (a sweep's runs are one use); ``fn`` must be a
module-level function (it is pickled by name).

Ours rather than ``ProcessPoolExecutor`` because the executor queues tasks into its workers
ahead of time and cannot take them back: after Ctrl-C its workers started queued tasks, and
when the parent was killed they went on running them. Here:

* a worker gets a task only when it is idle (nothing is queued in a worker);
* a task that raises is lost with its error (``on_lost(key, FAILED, "Type: message")``) and
  its worker takes the next; a worker that dies mid-task (killed, out of memory, ``os._exit``)
  is lost with ``FAILED`` and "the worker process died (exit code N)", and a new worker takes
  the remaining tasks;
* a task interrupted inside its worker (``KeyboardInterrupt``; SIGTERM raises one there,
  ``sim.signals``) stops the pool as Ctrl-C in the parent does;
* on Ctrl-C or SIGTERM in the parent (a ``KeyboardInterrupt``, also one raised by a callback)
  no task is handed out any more; each busy worker gets one SIGTERM and ``stop_grace_s`` to end
  its task (a result that still arrives is reported; an interrupted task is not); a worker
  that does not end in time is killed and its task lost with ``INTERRUPTED`` and "the worker
  process was stopped"; then the interrupt is re-raised. ``on_lost`` is where a caller settles
  what a lost task left behind;
* a worker dies with its parent, however the parent dies (SIGKILL included): the kernel sends
  it SIGTERM (Linux ``PR_SET_PDEATHSIG``), and a thread watching ``os.getppid()`` does the same
  elsewhere and exits hard if the task does not end.

Ctrl-C is ignored in the workers (a terminal sends it to every process; the parent decides and
sends SIGTERM once).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Hashable, Sequence

from sim.signals import handle_sigterm, was_terminated

FAILED, INTERRUPTED = "failed", "interrupted"  # how a task was lost (on_lost's second argument)
STOP_GRACE_S = 600.0  # after Ctrl-C / SIGTERM: how long a busy worker may take to end its task
# (a second Ctrl-C stops at once)
WATCHDOG_EVERY_S = 1.0  # how often a worker checks that its parent is still there


def _die_with_parent(parent_pid: int, grace_s: float) -> None:
    """Make this worker end when the parent dies, however it dies (SIGKILL included): the
    kernel sends SIGTERM when the parent exits (Linux ``PR_SET_PDEATHSIG``); a thread checking
    ``os.getppid()`` does the same elsewhere, and exits hard if the task does not end."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCHDOG_EVERY_S)
        os.kill(os.getpid(), signal.SIGTERM)  # end the task as on SIGTERM
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="pool-parent-watchdog", daemon=True).start()


def _worker_main(conn, fn: Callable, parent_pid: int, grace_s: float) -> None:
    """A worker: runs what the parent sends, one task at a time, until it sends None. Each
    task's outcome goes back as (key, "ok", value), (key, "interrupted", text) or
    (key, "error", "Type: message"). SIGTERM ends the task in progress as Ctrl-C would, then
    the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handle_sigterm()
    _die_with_parent(parent_pid, grace_s)
    try:
        while not was_terminated():
            msg = conn.recv()
            if msg is None:
                break
            key, args = msg
            try:
                out = (key, "ok", fn(*args))
            except KeyboardInterrupt as err:  # SIGTERM (sim.signals.Terminated), or the task's own
                out = (key, "interrupted", str(err) or "KeyboardInterrupt")
            except BaseException as err:  # noqa: BLE001 -- a task's failure is its result, never the worker's end
                out = (key, "error", f"{type(err).__name__}: {err}")
            # a SIGTERM now would cut the message in half: hold it until the outcome is sent
            posix = hasattr(signal, "pthread_sigmask")
            if posix:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            try:
                conn.send(out)
            finally:
                if posix:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    except (EOFError, OSError, KeyboardInterrupt):  # parent gone, or SIGTERM while idle
        pass


class _Worker:
    def __init__(self, ctx, fn: Callable, grace_s: float, name: str):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, os.getpid(), grace_s), daemon=True, name=name)
        self.proc.start()
        child.close()

    def outcome(self) -> tuple[str, Any] | None:
        """(kind, payload) the worker sent for its task, or None if it died without sending one."""
        try:
            if self.conn.poll():
                _, kind, payload = self.conn.recv()
                return kind, payload
        except Exception:  # EOF, a broken pipe, a message cut short: as good as no outcome
            pass
        return None

    def stop(self, timeout_s: float) -> None:
        """Ask an idle worker to exit; kill one that does not."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5.0)
        self.conn.close()


def run_pool(fn: Callable, tasks: Sequence[tuple[Hashable, tuple]], workers: int,
             on_result: Callable[[Hashable, Any], None], on_lost: Callable[[Hashable, str, str], None],
             stop_grace_s: float = STOP_GRACE_S, name: str = "pool-worker") -> None:
    """Run ``fn(*args)`` for each ``(key, args)`` of ``tasks`` on up to ``workers`` spawned
    processes; see the module docstring for what happens on errors, deaths and interrupts."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    queue = list(reversed(tasks))  # pop() takes the next task in order
    everyone: list[_Worker] = []
    busy: dict[_Worker, Hashable] = {}

    def start() -> _Worker:
        w = _Worker(ctx, fn, stop_grace_s, name)
        everyone.append(w)
        return w

    def ended() -> list[_Worker]:
        ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                         timeout=None if deadline is None else max(0.0, deadline - time.monotonic())))
        return [w for w in busy if w.conn in ready or w.proc.sentinel in ready]

    deadline = None
    try:
        idle = [start() for _ in range(min(workers, len(queue)))]
        while queue or busy:
            while queue and idle:
                w, (key, args) = idle.pop(), queue.pop()
                busy[w] = key  # before the send: an interrupt in between still finds the worker busy
                try:
                    w.conn.send((key, args))
                except OSError:  # it died while idle: a new worker takes the task
                    del busy[w]
                    queue.append((key, args))
                    idle.append(start())
            for w in ended():
                key = busy.pop(w)
                got = w.outcome()
                if got is None:  # died without a word (killed, out of memory)
                    w.proc.join(1.0)
                    if queue:
                        idle.append(start())
                    on_lost(key, FAILED, f"the worker process died (exit code {w.proc.exitcode})")
                    continue
                kind, payload = got
                if kind == "interrupted":  # someone signalled the worker: stop the pool
                    raise KeyboardInterrupt
                idle.append(w)
                if kind == "ok":
                    on_result(key, payload)
                else:
                    on_lost(key, FAILED, payload)
    except KeyboardInterrupt:
        # Nothing more is handed out. Each busy worker gets one SIGTERM and ends its task;
        # tasks that ended meanwhile are still reported.
        for w in busy:
            try:
                os.kill(w.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + stop_grace_s
        while busy and time.monotonic() < deadline:
            for w in ended():
                key = busy.pop(w)
                got = w.outcome()
                if got is None:
                    on_lost(key, INTERRUPTED, "the worker process was stopped")
                elif got[0] == "ok":
                    on_result(key, got[1])
                elif got[0] == "error":
                    on_lost(key, FAILED, got[1])
        raise
    finally:
        stop_by = time.monotonic() + 10.0  # idle workers exit at once; one still busy here is killed
        for w in everyone:
            w.stop(timeout_s=max(0.0, stop_by - time.monotonic()))
        for key in busy.values():  # did not end within the grace period (or a second Ctrl-C)
            on_lost(key, INTERRUPTED, "the worker process was stopped")
