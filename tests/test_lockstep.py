"""The lock-step harness (sim/lockstep.py): a method and its numerics without simpy, with
instant collectives, give a full simulation's train losses bit for bit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sim.lockstep import run_lockstep
from sim.runner import Simulation
from sim.scenario import load_scenario
from tests.conftest import ROOT, TINY

QS = ROOT / "scenarios" / "quickstart.yaml"
COMMON = TINY + ["run.device=cpu", "run.max_rounds=4", "run.max_tokens=null"]


@pytest.mark.parametrize("algorithm", [
    "{name: diloco, inner_steps: 3}",
    "{name: diloco, inner_steps: 3, warm_start_steps: 2, payload_dtype: int8, error_feedback: true}",
    "{name: streaming_diloco, inner_steps: 4, fragment_layers: 1}",
    "{name: streaming_diloco, inner_steps: 5, fragment_layers: 1, overlap_steps: 2, mixing: 0.3, "
    "fragment_schedule: interval, payload_dtype: 'e3m0:32', error_feedback: true}",
    "{name: noloco, inner_steps: 3}",
    "{name: fedavg, inner_steps: 3}",
    "{name: fedavg, inner_steps: 3, island_size: 2}",
    "{name: eager_diloco, inner_steps: 3}",
])
def test_the_harness_reproduces_a_full_runs_train_losses_bit_for_bit(algorithm):
    """Every train loss of a full simulated run (WAN links, per-layer overlap, evaluations) is
    the lock-step harness's for the same (worker, step), exactly: the math of a method does not
    depend on its timeline."""
    sc = load_scenario(QS, COMMON + [f"algorithm={algorithm}"])
    sim = Simulation(sc)
    sim.run()
    full = {(p.worker, p.step): p.loss for p in sim.recorder.losses if p.kind == "train"}
    assert full
    harness = run_lockstep(sc, steps=max(step for _, step in full)).losses
    assert harness == full


def test_the_harness_runs_without_simpy():
    """The harness imports no simpy (the engine is not needed to check a method's math)."""
    code = f"""
import sys, importlib.abc
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'simpy':
            raise ImportError('blocked by the test: ' + name)
sys.meta_path.insert(0, Refuse())
sys.path.insert(0, {str(ROOT)!r})
from sim.lockstep import run_lockstep
from sim.scenario import load_scenario
sc = load_scenario({str(QS)!r}, {COMMON + ['algorithm={name: diloco, inner_steps: 2}']!r})
losses = run_lockstep(sc).losses
assert 'simpy' not in sys.modules
print(len(losses))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) == 4 * 4 * 2  # 4 workers x 4 rounds x H=2


def test_the_harness_refuses_what_it_cannot_model():
    """Faults and timing proxies change nothing in lock step: such a scenario is refused, not
    silently run as another one."""
    with pytest.raises(ValueError, match="^faults:"):
        run_lockstep(load_scenario(QS, COMMON + ["faults.stragglers=[{factor: {kind: lognormal, sigma: 0.5}}]"]))
