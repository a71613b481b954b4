"""Issue 13: divergence is a result, not a silence.

A run whose loss or parameters become NaN / inf is marked ``diverged`` with the step and the
simulated time (manifest, summary, terminal line, dashboard header); ``run.on_divergence``
stops it there (default) or lets it go on; summary.json and the dashboard's embedded JSON stay
valid JSON (null plus the reason); `compare` and sweeps show such runs as diverged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sim.scenario import load_scenario
from tests.conftest import TINY
from tests.test_cli import cli

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "scenarios/quickstart.yaml"
SMALL = TINY + ["algorithm.inner_steps=5", "run.max_rounds=6", "run.eval_every_steps=5", "run.device=cpu"]
# an inner learning rate no model survives: the train loss is NaN within a few steps
BLOW_UP = ["optimizer.lr=1.0e6", "optimizer.grad_clip=null", "algorithm.outer_lr=50"]


def _strict_json(text: str):
    def no_constants(name):
        raise ValueError(f"bare {name} is not JSON")

    return json.loads(text, parse_constant=no_constants)


def _sim(*overrides):
    from sim.runner import Simulation

    return Simulation(load_scenario(ROOT / QUICKSTART, SMALL + list(overrides)))


def test_a_finite_run_is_not_diverged():
    """A well-behaved run ends with diverged None and all its rounds."""
    sim = _sim("run.max_rounds=2")
    sim.run()
    assert sim.diverged is None and sim.rounds == 2


def test_nan_loss_stops_the_run_at_once():
    """With the default on_divergence stop, the first NaN train loss ends the run there: it is
    recorded with its step, simulated time and what went bad, before the rounds are done."""
    sim = _sim(*BLOW_UP)
    sim.run()
    d = sim.diverged
    assert d is not None and d["what"].startswith("train loss of worker")
    assert d["value"] in ("nan", "inf", "-inf")
    assert 1 <= d["step"] <= 5 and 0 < d["time_s"] <= sim.env.now
    assert sim.rounds < 6
    assert f"at step {d['step']}" in d["reason"]


def test_on_divergence_continue_runs_to_the_end():
    """on_divergence continue keeps simulating to the stop condition; the divergence is still noted."""
    sim = _sim(*BLOW_UP, "run.on_divergence=continue")
    sim.run()
    assert sim.diverged is not None and sim.rounds == 6


def test_non_finite_global_parameters_are_caught_at_an_eval(monkeypatch):
    """An eval whose global parameters hold NaN marks the run diverged, naming the parameter."""
    import torch

    sim = _sim()
    real = sim.algorithm.global_params

    def poisoned(numerics, state):
        params = dict(real(numerics, state))
        name = next(iter(params))
        params[name] = torch.full_like(params[name], float("nan"))
        return params

    monkeypatch.setattr(sim.algorithm, "global_params", poisoned)
    sim.evaluate(0)
    assert sim.diverged is not None and sim.diverged["what"].startswith("global parameter ")
    assert sim.stop.triggered


def test_write_json_never_writes_bare_nan(tmp_path):
    """Run files are strict JSON: NaN and inf (numpy's too) are written as null."""
    from sim.rundir import write_json

    p = tmp_path / "x.json"
    write_json(p, {"a": float("nan"), "b": [np.float64("inf"), 1.5], "c": {"d": -math.inf}})
    assert _strict_json(p.read_text()) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("div") / "run"
    sets = SMALL + BLOW_UP + ["run.on_divergence=continue"]
    proc = cli("run", QUICKSTART, *[a for s in sets for a in ("--set", s)], "--out", str(out), "--quiet")
    return out, proc


def test_diverged_run_is_marked_everywhere(diverged_run):
    """A run that diverges exits 0 (a result, not a failure) and says `diverged` with the step
    and simulated time in its terminal line, manifest, summary and dashboard header."""
    out, proc = diverged_run
    assert proc.returncode == 0, proc.stderr
    assert ": diverged in " in proc.stdout and "diverged: train loss of worker" in proc.stdout, proc.stdout
    manifest = _strict_json((out / "manifest.json").read_text())
    assert manifest["status"] == "diverged"
    d = manifest["diverged"]
    assert isinstance(d["step"], int) and d["time_s"] > 0
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged"] == d
    page = (out / "dashboard.html").read_text()
    header = page.split("id='header'", 1)[1].split("</table>", 1)[0]
    assert "diverged: train loss of worker" in header and f"at step {d['step']}" in header


def test_diverged_summary_is_valid_json_with_reasons(diverged_run):
    """summary.json of a run whose eval loss went NaN is strict JSON: the loss is null and
    `non_finite` says what it was and why; the dashboard's embedded summary parses too."""
    out, _ = diverged_run
    text = (out / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = _strict_json(text)
    assert summary["final_eval_loss"] is None
    assert summary["non_finite"]["final_eval_loss"].startswith("nan (train loss of worker")
    page = (out / "dashboard.html").read_text()
    embedded = page.split("id='locosim-summary'>", 1)[1].split("</script>", 1)[0]
    assert _strict_json(embedded)["final_eval_loss"] is None


def test_compare_shows_a_diverged_run_as_such(tmp_path, diverged_run):
    """`compare` with a diverged run and a normal one exits 0 and labels the diverged one."""
    out, _ = diverged_run
    ok = tmp_path / "ok"
    proc = cli("run", QUICKSTART, *[a for s in SMALL + ["run.max_rounds=2"] for a in ("--set", s)],
               "--out", str(ok), "--quiet")
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "c.html"
    proc = cli("compare", str(ok), str(out), "-o", str(page))
    assert proc.returncode == 0, proc.stderr
    html = page.read_text()
    table = html.split("id='diff-table'", 1)[1].split("</table>", 1)[0]
    assert ">diverged<" in table
    assert "diverged: train loss" in html.split("id='runs-table'", 1)[1].split("</table>", 1)[0]


def test_sweep_counts_a_diverged_run_as_a_result(tmp_path):
    """A sweep where one grid point diverges finishes (exit 0), its index says `diverged` for
    that run, and `compare SWEEP_DIR` draws both."""
    import pandas as pd

    sw = tmp_path / "sw"
    sets = SMALL + ["optimizer.grad_clip=null", "run.max_rounds=2"]
    proc = cli("sweep", QUICKSTART, "--grid", "optimizer.lr=0.003,1.0e6",
               *[a for s in sets for a in ("--set", s)], "--out", str(sw), "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    index = pd.read_parquet(sw / "index.parquet")
    assert sorted(index["status"]) == ["completed", "diverged"]
    cmp = cli("compare", str(sw), "-o", str(tmp_path / "c.html"))
    assert cmp.returncode == 0, cmp.stderr


# outer Nesterov at lr 3 and inner AdamW at lr 0.3: the eval loss climbs to tens of nats, yet stays finite
FINITE_BLOW_UP = ["optimizer.lr=0.3", "algorithm.outer_lr=3"]


def test_a_finite_loss_far_above_uniform_counts_as_diverged():
    """An eval loss that stays finite but rises above the uniform loss log V by more than
    run.divergence_loss_margin (default 1 nat) marks the run diverged and stops it there, like
    a NaN; with the margin null the same run is not flagged and runs all its rounds."""
    sim = _sim(*FINITE_BLOW_UP)
    sim.run()
    d = sim.diverged
    uniform = math.log(sim.adapter.dataset.vocab_size)
    evals = [p.loss for p in sim.recorder.losses if p.kind == "eval"]
    assert d is not None and d["what"].startswith("eval loss") and "log V" in d["what"]
    assert math.isfinite(float(d["value"])) and float(d["value"]) > uniform + 1.0
    first = next(v for v in evals if v > uniform + 1.0)  # the first eval past the margin is the one reported
    assert all(math.isfinite(v) for v in evals) and first == pytest.approx(float(d["value"]), rel=1e-5)
    assert sim.rounds < 6
    free = _sim(*FINITE_BLOW_UP, "run.divergence_loss_margin=null")
    free.run()
    assert free.diverged is None and free.rounds == 6
    assert max(p.loss for p in free.recorder.losses if p.kind == "eval") > uniform + 1.0


def test_divergence_margin_must_be_a_nonnegative_number():
    """run.divergence_loss_margin below zero is refused, naming the field."""
    from sim.scenario import ScenarioError

    with pytest.raises(ScenarioError, match="divergence_loss_margin"):
        load_scenario(ROOT / QUICKSTART, ["run.divergence_loss_margin=-1"])
