"""The generic process pool (``sim.sweep.pool``) on trivial functions: every task's result comes
back under its key, a task that raises or a worker that dies is lost with a reason while the
rest go on, and an interrupt stops the workers and settles every task still out."""

from __future__ import annotations

import os
import signal
import time

import pytest

from sim.sweep.pool import FAILED, INTERRUPTED, run_pool


def square(x: int) -> int:
    return x * x


def square_or_raise(x: int) -> int:
    if x == 3:
        raise ValueError(f"no square of {x}")
    return x * x


def square_or_die(x: int) -> int:
    if x == 2:
        os._exit(7)
    return x * x


def sleep_then_square(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x * x


def sleep_through_sigterm(seconds: float) -> int:
    """Ignore SIGTERM (and the KeyboardInterrupt it raises) and sleep: a task that never ends."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)
    return 0


def _run(fn, tasks, workers, **kw):
    results, lost = {}, {}
    run_pool(fn, tasks, workers, on_result=lambda k, v: results.__setitem__(k, v),
             on_lost=lambda k, status, error: lost.__setitem__(k, (status, error)), **kw)
    return results, lost


def test_one_worker_returns_every_result_in_task_order():
    """With one worker the results arrive in task order, each under its key, each fn(*args)."""
    order = []
    run_pool(square, [(f"t{i}", (i,)) for i in range(5)], 1, on_result=lambda k, v: order.append((k, v)),
             on_lost=lambda *a: pytest.fail(f"lost {a}"))
    assert order == [(f"t{i}", i * i) for i in range(5)]


def test_several_workers_return_every_result_once():
    """With three workers and seven tasks every task's result comes back once under its key."""
    results, lost = _run(square, [(i, (i,)) for i in range(7)], 3)
    assert results == {i: i * i for i in range(7)} and lost == {}


def test_a_task_that_raises_is_lost_with_its_error_and_the_rest_go_on():
    """A task that raises is lost as failed with "Type: message"; every other task, including
    those after it on the same worker, still returns its result."""
    results, lost = _run(square_or_raise, [(i, (i,)) for i in range(6)], 2)
    assert lost == {3: (FAILED, "ValueError: no square of 3")}
    assert results == {i: i * i for i in range(6) if i != 3}


def test_a_worker_that_dies_is_lost_with_its_exit_code_and_a_new_worker_takes_the_rest():
    """A worker that exits mid-task (os._exit(7)) loses that task as failed, naming the exit
    code, and the tasks after it still run (on a new worker)."""
    results, lost = _run(square_or_die, [(i, (i,)) for i in range(5)], 1)
    assert lost == {2: (FAILED, "the worker process died (exit code 7)")}
    assert results == {0: 0, 1: 1, 3: 9, 4: 16}


def test_an_interrupt_hands_out_nothing_more_and_settles_what_was_out():
    """A KeyboardInterrupt in the parent (here raised by the first result's callback) stops the
    pool: no further task starts, a busy task that ignores SIGTERM past the grace period is lost
    as interrupted, and the interrupt reaches the caller."""
    results, lost, started = {}, {}, time.monotonic()

    def on_result(key, value):
        results[key] = value
        raise KeyboardInterrupt

    # "quick" ends after "stuck" has surely started ignoring SIGTERM (both start at once)
    tasks = [("quick", (0, 5.0)), ("stuck", (60.0,))] + [(f"later{i}", (i, 0.0)) for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        run_pool(_dispatch, [(k, (k, a)) for k, a in tasks], 2, on_result=on_result,
                 on_lost=lambda k, status, error: lost.__setitem__(k, (status, error)), stop_grace_s=1.0)
    assert results == {"quick": 0}
    assert lost == {"stuck": (INTERRUPTED, "the worker process was stopped")}
    assert time.monotonic() - started < 40.0  # the stuck task's 60 s were not waited for


def test_a_task_ended_by_sigterm_is_neither_a_result_nor_lost():
    """On an interrupt, a busy task that SIGTERM ends (it raises KeyboardInterrupt in its worker)
    ends its own way: it is reported neither as a result nor as lost ("quick" ends after "slow"
    has surely started)."""
    results, lost = {}, {}

    def on_result(key, value):
        results[key] = value
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pool(_dispatch, [("quick", ("quick", (0, 5.0))), ("slow", ("slow", (1, 60.0)))], 2,
                 on_result=on_result, on_lost=lambda k, status, error: lost.__setitem__(k, (status, error)),
                 stop_grace_s=30.0)
    assert results == {"quick": 0} and lost == {}


def _dispatch(key: str, args: tuple) -> int:
    """The stuck task ignores SIGTERM; the others sleep, then square."""
    if key == "stuck":
        return sleep_through_sigterm(*args)
    return sleep_then_square(*args)
