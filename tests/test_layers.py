"""The rooms of the design stay apart: training and algorithms import no simpy (not even
through another module), and only sim/report imports plotly."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

_BLOCK = """
import sys, importlib.abc
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked by the test: ' + name)
sys.meta_path.insert(0, Refuse())
sys.path.insert(0, {root!r})
"""


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_training_and_algorithms_import_without_simpy():
    """With simpy made unimportable, every training module, every algorithm and the named
    random streams import (they decide what the numbers are, never when)."""
    mods = ["sim.rng", "sim.algorithms", "sim.algorithms.base", "sim.algorithms.common", "sim.algorithms.transforms",
            "sim.training.models", "sim.training.data", "sim.training.replicas", "sim.steptime",
            "sim.training.memory", "sim.training.threads"]
    code = _BLOCK.format(blocked={"simpy"}, root=str(ROOT)) + "".join(f"import {m}\n" for m in mods) + \
        "assert 'simpy' not in sys.modules\nprint('ok')\n"
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_only_the_report_package_imports_plotly():
    """Importing every module outside sim/report (engine, runner, metrics, CLI, sweep,
    bandwidth search) loads no plotly."""
    mods = ["sim.scenario", "sim.engine.node", "sim.engine.network", "sim.engine.sync", "sim.engine.faults",
            "sim.engine.collectives", "sim.runner", "sim.metrics.tables", "sim.metrics.records", "sim.cli",
            "sim.sweep", "sim.bandwidth", "sim.algorithms", "sim.training.replicas"]
    code = _BLOCK.format(blocked={"plotly"}, root=str(ROOT)) + "".join(f"import {m}\n" for m in mods) + \
        "assert 'plotly' not in sys.modules\nprint('ok')\n"
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
