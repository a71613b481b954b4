"""``sim.signals.interrupts_held``: Ctrl-C and SIGTERM that arrive while torch is first imported
are delivered when the import is done, as they would have been, instead of aborting the process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from sim.signals import interrupts_held
from tests.conftest import ROOT


def test_ctrl_c_inside_the_block_is_raised_when_it_ends():
    """SIGINT sent inside the block does not interrupt it; KeyboardInterrupt comes as it ends,
    and the default handler is back afterwards."""
    reached_end = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # bytecode boundaries where a handler that raises would have raised
                pass
            reached_end = True
    assert reached_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_quiet_block_raises_nothing_and_restores_the_handlers():
    """No signal: nothing is raised and both handlers are what they were."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupts_held():
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_sigterm_inside_the_block_reaches_the_sigterm_handler_after_it():
    """With handle_sigterm installed, SIGTERM inside the block becomes Terminated as it ends."""
    code = ("import os, signal\n"
            "from sim.signals import Terminated, handle_sigterm, interrupts_held\n"
            "handle_sigterm()\n"
            "done = False\n"
            "try:\n"
            "    with interrupts_held():\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        done = True\n"
            "except Terminated as e:\n"
            "    print('terminated', done, e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.stdout.strip() == "terminated True terminated by SIGTERM", res.stderr


def test_outside_the_main_thread_the_block_runs_as_it_is():
    """In another thread (no handlers can be set there) the block just runs."""
    ran = []

    def body():
        with interrupts_held():
            ran.append(True)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert ran == [True]
