"""Whole runs: the run directory, determinism, interruption, every shipped scenario."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from sim.runner import Simulation
from sim.scenario import load_scenario, load_variants
from sim.writer import run_to_dir
from tests.conftest import TINY


def _run(root, out, *overrides, scenario="scenarios/quickstart.yaml"):
    sc = load_scenario(root / scenario, TINY + list(overrides))
    return run_to_dir(Simulation(sc), out)


def test_run_directory_contents(root, tmp_path):
    """A run writes manifest, events, metrics, summary and dashboard, with consistent numbers."""
    m = _run(root, tmp_path / "r", "run.max_rounds=3", "algorithm.inner_steps=4")
    d = tmp_path / "r"
    assert m["status"] == "completed"
    for f in ("manifest.json", "events.parquet", "metrics.parquet", "summary.json", "dashboard.html"):
        assert (d / f).is_file(), f
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["versions"]["torch"] and manifest["scenario"]["seed"] == 0
    summary = json.loads((d / "summary.json").read_text())
    events = pd.read_parquet(d / "events.parquet")
    metrics = pd.read_parquet(d / "metrics.parquet")
    assert summary["rounds"] == 3 and summary["steps_per_worker"] == [12] * 4
    assert set(events["kind"]) == {"state", "transfer", "sync"}
    assert (events[events.kind == "sync"]["round"].tolist()) == [0, 1, 2]
    assert summary["bytes_total"] == pytest.approx(events[events.kind == "transfer"]["payload_bytes"].sum())
    # each ring all-reduce moves 2(P-1)/P * S per worker, P workers
    assert summary["bytes_total"] == pytest.approx(3 * 2 * 3 * summary["payload_bytes_per_sync"])
    ev = metrics[metrics.kind == "eval"]
    assert len(ev) >= 2 and ev["time_s"].is_monotonic_increasing and ev["bytes"].is_monotonic_increasing
    assert metrics[metrics.kind == "train"]["tokens"].max() == summary["tokens"]
    assert 0 < summary["utilization"] <= 1
    html = (d / "dashboard.html").read_text()
    assert "plotly" in html and "Loss vs simulated time" in html


def test_same_seed_identical_results(root, tmp_path):
    """Same scenario and seed give identical events.parquet and metrics.parquet on CPU."""
    args = ("run.max_rounds=3", "algorithm.inner_steps=3", "run.device=cpu")
    _run(root, tmp_path / "a", *args)
    _run(root, tmp_path / "b", *args)
    for f in ("events.parquet", "metrics.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / f), pd.read_parquet(tmp_path / "b" / f))
    _run(root, tmp_path / "c", *args, "seed=7")
    assert not pd.read_parquet(tmp_path / "a" / "metrics.parquet").equals(
        pd.read_parquet(tmp_path / "c" / "metrics.parquet"))


@pytest.mark.parametrize("scenario", sorted(p.name for p in (__import__("pathlib").Path(__file__).parents[1] / "scenarios").glob("*.yaml")))
def test_every_scenario_runs(root, tmp_path, scenario):
    """Every file in scenarios/ runs to completion on a small budget."""
    variants = load_variants(root / "scenarios" / scenario, TINY + ["run.max_rounds=2", "run.max_tokens=null",
                                                                     "run.max_sim_time_s=null"])
    for name, sc in variants:
        m = run_to_dir(Simulation(sc), tmp_path / (name or "r"))
        assert m["status"] == "completed", name


def test_ctrl_c_leaves_readable_interrupted_directory(root, tmp_path):
    """SIGINT during a run exits 130 and leaves a readable directory whose manifest says interrupted."""
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "sim.cli", "run", "scenarios/quickstart.yaml", "--out", str(out), "--quiet",
           *sum((["--set", o] for o in TINY), []), "--set", "run.max_rounds=100000"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        mf = out / "manifest.json"
        if mf.exists() and json.loads(mf.read_text())["status"] == "running":
            break
        time.sleep(0.2)
    time.sleep(2.0)  # let it record some rounds
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["ended_at"]
    events = pd.read_parquet(out / "events.parquet")
    assert len(events) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert "Traceback" not in err
