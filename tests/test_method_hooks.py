"""Method-specific checks are hooks of the method (``Algorithm.check_fits``,
``events_per_step``, ``diagnostic_labels``), and a plug-in that lacks a hook it needs, or never
sets ``info``, is refused before any work in one line: validate, run and sweep alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.algorithms import METHODS, algorithm_class
from sim.scenario import ScenarioError, load_scenario, parse_scenario
from tests.conftest import ROOT
from tests.test_plugins import scenario_with

QS = ROOT / "scenarios" / "quickstart.yaml"
BAD = ROOT / "tests" / "fixtures" / "bad"
BASE = {"topology": {"regions": [{"name": "a", "nodes": 4}]}, "run": {"max_rounds": 10}}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


# ---------------------------------------------------------------------------- hooks before work
@pytest.mark.parametrize("fixture, cls, hooks", [
    ("outer_without_math.py", "NoMath", "method_ops (abstract hook of sim.algorithms.common.OuterMethod)"),
    ("outer_without_step_rule.py", "NoRule", "use_step (abstract hook of sim.algorithms.common.OuterMethod)"),
])
@pytest.mark.parametrize("command", ["validate", "run", "sweep"])
def test_a_plugin_without_a_hook_it_needs_is_refused_before_work(tmp_path, fixture, cls, hooks, command):
    """An OuterMethod subclass without its math hook or its step rule is refused by validate,
    run and sweep: one line naming the plug-in and the missing hook, exit 2, nothing written."""
    path = scenario_with(tmp_path, f"{{name: bad, plugin: {BAD / fixture}:{cls}}}")
    out = tmp_path / "out"
    args = {"validate": ["validate", str(path)], "run": ["run", str(path), "--out", str(out), "--quiet"],
            "sweep": ["sweep", str(path), "--seeds", "0..1", "--out", str(out), "--quiet"]}[command]
    res = _cli(*args)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert f"algorithm.plugin: {fixture}:{cls}: {cls} does not implement {hooks}" in res.stderr
    assert not out.exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_plugin_that_never_sets_info_is_refused_before_work(tmp_path, command):
    """An Algorithm whose configure never sets ``info`` is one line naming the plug-in and the
    fix (a ScheduleInfo), exit 2, nothing written: not an AttributeError mid-run."""
    path = scenario_with(tmp_path, f"{{name: silent, plugin: {BAD / 'algorithm_without_info.py'}:Silent}}")
    out = tmp_path / "out"
    args = ["validate", str(path)] if command == "validate" else ["run", str(path), "--out", str(out), "--quiet"]
    res = _cli(*args)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "algorithm.plugin: Silent.info is never set" in res.stderr and "ScheduleInfo" in res.stderr
    assert not out.exists()


def test_every_registered_method_is_concrete_and_sets_info():
    """Every method in the registry implements every abstract hook and sets ``info`` once
    configured (the same checks a plug-in passes)."""
    from sim.algorithms.plugins import abstract_hooks, check_configured

    with_server = {**BASE["topology"], "servers": [{"name": "ps", "region": BASE["topology"]["regions"][0]["name"]}]}
    for name in METHODS:  # (a server in the topology for the methods that need one; the others ignore it)
        sc = parse_scenario({**BASE, "topology": with_server, "numerics": False,
                             "timing": {"params": 1.0e6, "layers": 4}, "algorithm": {"name": name}})
        cls = algorithm_class(sc.algorithm)
        assert abstract_hooks(cls) == {}, name
        check_configured(cls(sc.algorithm, 4, 0), [(f"blocks.{i}.w", 10) for i in range(4)], 4, name)


# ---------------------------------------------------------------------------- fits
@pytest.mark.parametrize("algorithm, expected", [
    ({"name": "noloco", "group_size": 5}, "algorithm.group_size: must be <= the number of workers (4) (got 5)"),
    ({"name": "fedavg", "island_size": 5}, "algorithm.island_size: must be <= the number of workers (4) (got 5)"),
    ({"name": "streaming_diloco", "fragment_layers": 3},
     "algorithm.fragment_layers: must be <= the model's 2 layers (model.n_layers) (got 3)"),
])
def test_knobs_that_do_not_fit_the_topology_or_model_are_refused_by_the_method(algorithm, expected):
    """What does not fit is the method's to say (check_fits): a group or island larger than the
    workers, fragments larger than the model; one line naming the field."""
    with pytest.raises(ScenarioError) as err:
        parse_scenario({**BASE, "model": {"kind": "gpt", "n_layers": 2}, "algorithm": algorithm})
    assert str(err.value) == expected


def test_a_fedavg_island_of_all_workers_fits():
    """island_size equal to the workers is plain averaging: accepted, one island."""
    sc = parse_scenario({**BASE, "algorithm": {"name": "fedavg", "island_size": 4}})
    assert algorithm_class(sc.algorithm)(sc.algorithm, 4, 0).info.syncs_per_round == 1


# ---------------------------------------------------------------------------- knob strictness
@pytest.mark.parametrize("algorithm, expected", [
    ({"name": "fedavg", "inner_steps": True}, "algorithm.inner_steps: Input should be a valid integer (got True)"),
    ({"name": "sparta", "interval": True}, "algorithm.interval: Input should be a valid integer (got True)"),
    ({"name": "demo", "chunk": 2.5}, "algorithm.chunk: Input should be a valid integer (got 2.5)"),
    ({"name": "diloco", "outer_lr": float("inf")}, "algorithm.outer_lr: Input should be a finite number (got inf)"),
    ({"name": "streaming_diloco", "outer_lr": float("inf")},
     "algorithm.outer_lr: Input should be a finite number (got inf)"),
    ({"name": "noloco", "gamma": float("inf")}, "algorithm.gamma: Input should be a finite number (got inf)"),
    ({"name": "sparta_diloco", "outer_lr": float("nan")},
     "algorithm.outer_lr: Input should be a finite number (got nan)"),
    ({"name": "sparta", "interval": 0}, "algorithm.interval: Input should be greater than or equal to 1 (got 0)"),
])
def test_method_knobs_are_strict_integers_and_finite_floats(algorithm, expected):
    """Every method section, built-in or plug-in, refuses `true` for a count and .inf / .nan for
    a float, and names the field (sparta's interval included)."""
    with pytest.raises(ScenarioError) as err:
        parse_scenario({**BASE, "algorithm": algorithm})
    assert str(err.value) == expected


def test_a_plugin_authors_int_knob_is_strict(tmp_path):
    """A plug-in that types a knob plain ``int`` gets a strict integer all the same."""
    path = scenario_with(tmp_path, f"{{name: fedavg, plugin: {ROOT / 'examples' / 'fedavg.py'}:FedAvg, "
                                    "inner_steps: true}")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(err.value) == "algorithm.inner_steps: Input should be a valid integer (got True)"


def test_demo_chunk_is_bounded_by_what_its_basis_allocates():
    """DeMo's chunk s builds an s x s float64 DCT basis: 1e8 is refused before work naming chunk
    and the size it would take; the largest allowed basis is 8 s^2 bytes = 512 MiB."""
    from sim.algorithms.demo import MAX_CHUNK

    with pytest.raises(ScenarioError) as err:
        parse_scenario({**BASE, "algorithm": {"name": "demo", "chunk": 100_000_000}})
    msg = str(err.value)
    assert msg.startswith(f"algorithm.chunk: s must be <= {MAX_CHUNK}")
    assert f"{8 * 100_000_000 ** 2 / 2**30:.3g} GiB" in msg
    assert 8 * MAX_CHUNK ** 2 == 512 * 2**20
    assert parse_scenario({**BASE, "algorithm": {"name": "demo", "chunk": MAX_CHUNK}}).algorithm.chunk == MAX_CHUNK


# ---------------------------------------------------------------------------- work estimate
def _schedule_events(sc) -> int:
    """Events the method's own schedule makes: one per inner step of each worker plus one per
    part it sends (the table the engine runs), counted step by step from at_step."""
    from sim.build import payload_layout

    n, a = sc.topology.n_workers, sc.algorithm
    method = algorithm_class(a)(a, n, sc.seed)
    method.configure(payload_layout(sc, None), sc.timing.layers)
    steps = method.warm_steps(a) + sc.run.max_rounds * method.steps_per_round(a)
    events = 0
    for w in range(n):
        for step in range(1, steps + 1):
            plan = method.at_step(w, step)
            events += 1 + len(plan.during) + len(plan.sends)
    return events


@pytest.mark.parametrize("algorithm", [
    {"name": "diloco", "inner_steps": 5},
    {"name": "streaming_diloco", "inner_steps": 10, "fragment_layers": 100},
    {"name": "noloco", "inner_steps": 5},
    {"name": "fedavg", "inner_steps": 5},
    {"name": "ddp"},
])
def test_the_work_estimate_counts_per_layer_collectives(algorithm):
    """With a timing proxy of 2,000 layers the estimate before work is within 1% of the events
    the method's schedule makes (steps plus every per-layer part), not just its steps."""
    from sim.checks import estimate_events

    sc = parse_scenario({**BASE, "numerics": False, "timing": {"params": 1.0e9, "layers": 2000},
                         "algorithm": algorithm, "run": {"max_rounds": 3}})
    est = estimate_events(sc).terms["run.max_rounds"]
    want = _schedule_events(sc)
    assert est == pytest.approx(want, rel=0.01)
    assert est > 100 * 4 * 3  # far above the steps alone


def test_a_proxy_of_10000_layers_is_not_estimated_as_its_steps():
    """The issue's case: diloco with a 10,000-layer timing proxy, H=1, 10 rounds, 4 workers is
    about 4 x 10 x 10,001 events, refused under a limit the steps alone (40) would pass."""
    from sim.checks import check_events, estimate_events

    sc = parse_scenario({**BASE, "numerics": False, "timing": {"params": 1.0e9, "layers": 10000},
                         "algorithm": {"name": "diloco", "inner_steps": 1}, "run": {"max_rounds": 10}})
    est = estimate_events(sc)
    assert est.total == pytest.approx(4 * 10 * (1 + 10001))
    with pytest.raises(ValueError, match="run.max_rounds: the run would simulate about"):
        check_events(est, 1000)


# ---------------------------------------------------------------------------- diagnostics labels
def test_diagnostic_labels_are_the_methods_and_reach_the_dashboard(tmp_path):
    """NoLoCo's spread is labelled by NoLoCo (diagnostic_labels), carried by the run result into
    the manifest, and the dashboard draws that label and axis title; the report code names no
    method's diagnostic."""
    from sim.algorithms.noloco import NoLoCo
    from sim.report.dashboard import build_dashboard
    from sim.report.runs import load_run
    from tests.conftest import TINY

    out = tmp_path / "run"
    res = _cli("run", str(QS), "--out", str(out), "--quiet", "--set=algorithm={name: noloco, inner_steps: 3}",
               *[f"--set={o}" for o in TINY])
    assert res.returncode == 0, res.stderr
    label, unit = NoLoCo.diagnostic_labels["spread"]
    assert json.loads((out / "manifest.json").read_text())["diagnostic_labels"] == {"spread": [label, unit]}
    fig = build_dashboard(load_run(out)).figures["fig-diagnostics"]
    assert fig.data[0].name == label and fig.layout.yaxis.title.text == unit
    for path in ("sim/report/dashboard.py", "sim/report/compare.py"):
        assert label not in (ROOT / path).read_text() and unit not in (ROOT / path).read_text()
