"""Sweeps: planning, resume, failures, local pool vs Ray, interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from sim.sweep.index import SUMMARY_KEYS
from sim.sweep.plan import parse_seeds, plan_sweep
from sim.sweep.run import run_sweep
from tests.conftest import TINY

QS = "scenarios/quickstart.yaml"
SMALL = TINY + ["run.max_rounds=1", "algorithm.inner_steps=3", "run.eval_every_steps=null"]
GRID_3x3 = {"algorithm.inner_steps": [2, 3, 4], "topology.links.0.bandwidth_gbps": [0.1, 1, 10]}


def _cli(root, *args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=root, capture_output=True, text=True,
                          env=env, timeout=600, **kw)


def test_plan_is_the_product_with_stable_readable_ids(root):
    """A 3x3 grid x 2 seeds plans 18 distinct runs whose ids (label + hash) are the same every time."""
    a = plan_sweep(root / QS, GRID_3x3, [0, 1], SMALL)
    b = plan_sweep(root / QS, GRID_3x3, [0, 1], SMALL)
    assert len(a.runs) == 18 == len({r.run_id for r in a.runs})
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]
    assert a.runs[0].label == "inner_steps=2-bandwidth_gbps=0.1-seed=0"
    assert a.axes == ["algorithm.inner_steps", "topology.links.0.bandwidth_gbps", "seed"]
    assert {r.scenario["seed"] for r in a.runs} == {0, 1}


def test_seed_ranges_and_lists():
    """--seeds accepts a range A..B (inclusive) or a list."""
    assert parse_seeds("0..4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3,7") == [3, 7]


def test_variants_become_a_sweep_axis(root):
    """Each variant of a file is swept like a grid value, with its name in the label."""
    plan = plan_sweep(root / "scenarios/all_methods.yaml", None, [0], TINY)
    assert len(plan.runs) == 6 and plan.axes[0] == "variant"
    assert {r.params["variant"] for r in plan.runs} == {"ddp", "diloco", "streaming_diloco", "diloco_delayed",
                                                         "eager_diloco", "noloco"}


def test_resume_skips_completed_and_reruns_interrupted(root, tmp_path):
    """Re-running a sweep skips completed runs; a run whose manifest says interrupted runs again."""
    plan = plan_sweep(root / QS, {"algorithm.inner_steps": [2, 3]}, [0], SMALL)
    first = run_sweep(plan, tmp_path)
    assert (first.done, first.failed, first.skipped) == (2, 0, 0)
    again = run_sweep(plan, tmp_path)
    assert (again.done, again.skipped) == (0, 2)
    victim = tmp_path / plan.runs[1].run_id / "manifest.json"
    m = json.loads(victim.read_text())
    m["status"] = "interrupted"
    victim.write_text(json.dumps(m))
    third = run_sweep(plan, tmp_path)
    assert (third.done, third.skipped) == (1, 1)
    index = pd.read_parquet(tmp_path / "index.parquet")
    assert list(index["status"]) == ["completed", "completed"]
    assert index["final_eval_loss"].notna().all()


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(root, tmp_path):
    """A run that fails (here: asking for CUDA on a machine without it) is marked failed with its
    error in the index; the other runs complete."""
    plan = plan_sweep(root / QS, {"run.device": ["cpu", "cuda"]}, [0], SMALL)
    cuda_ok = __import__("torch").cuda.is_available()
    res = run_sweep(plan, tmp_path)
    index = pd.read_parquet(tmp_path / "index.parquet").set_index("run.device")
    assert index.loc["cpu", "status"] == "completed"
    if not cuda_ok:
        assert res.failed == 1 and index.loc["cuda", "status"] == "failed"
        assert "cuda" in index.loc["cuda", "error"]


def test_a_sweep_that_cannot_run_is_refused_before_anything_is_written(root, tmp_path):
    """What `locosim run` checks before work is checked for every run of a sweep before the sweep
    starts: a grid point over its memory limit, or a model plug-in file that is not there, is one
    line naming the run and the field, exit 2, and no output directory."""
    out = tmp_path / "sw"
    res = _cli(root, "sweep", QS, "--grid", "run.memory_limit_gb=100,0.000001", "--out", str(out), "--quiet",
               *sum((["--set", o] for o in SMALL), []))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "sweep run memory_limit_gb=1e-06-seed=0: run: the numerics need about" in res.stderr
    assert not out.exists()

    example = (root / "examples" / "custom_model.yaml").read_text()
    (tmp_path / "custom.yaml").write_text(example.replace("conv_lm.py:ConvLM", "nope.py:ConvLM"))
    res = _cli(root, "sweep", str(tmp_path / "custom.yaml"), "--grid", "algorithm.inner_steps=2,3", "--seeds", "0..1",
               "--out", str(out), "--quiet")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "sweep run inner_steps=2-seed=0: model.plugin:" in res.stderr and "nope.py" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()


def test_sweep_checks_skip_what_depends_on_the_machine_that_runs_it(root):
    """Planned here for a Ray cluster, a run asking for CUDA is not refused for this machine's lack
    of it (its workers may have one); a memory limit the scenario states is checked anyway."""
    from sim.scenario import ScenarioError
    from sim.sweep.plan import check_runs

    check_runs(plan_sweep(root / QS, {"run.device": ["cpu", "cuda"]}, [0, 1], SMALL), here=False)
    tight = plan_sweep(root / QS, {"run.memory_limit_gb": [0.000001]}, [0], SMALL)
    with pytest.raises(ScenarioError, match="the numerics need about"):
        check_runs(tight, here=False)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ScenarioError, match="sweep run device=cuda-seed=0: "):
            check_runs(plan_sweep(root / QS, {"run.device": ["cpu", "cuda"]}, [0], SMALL))


def _summaries(index: pd.DataFrame) -> pd.DataFrame:
    return index.set_index("run_id")[list(SUMMARY_KEYS) + ["status"]].sort_index()


def test_local_pool_and_ray_give_identical_indexes(root, tmp_path):
    """The 3x3x2 quickstart sweep (tiny budget) gives the same summaries on a 2-process local pool
    and on a local Ray instance (ray.init(num_cpus=2))."""
    ray = pytest.importorskip("ray", reason="Ray not installed: pip install 'locosim[ray]'")
    plan = plan_sweep(root / QS, GRID_3x3, [0, 1], SMALL)
    local = run_sweep(plan, tmp_path / "local", workers=2)
    assert (local.done, local.failed) == (18, 0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(plan, tmp_path / "ray", ray_address="local")
    finally:
        ray.shutdown()
    assert (remote.done, remote.failed) == (18, 0)
    a = _summaries(pd.read_parquet(tmp_path / "local" / "index.parquet"))
    b = _summaries(pd.read_parquet(tmp_path / "ray" / "index.parquet"))
    pd.testing.assert_frame_equal(a, b)


def test_interrupted_sweep_resumes(root, tmp_path):
    """Ctrl-C during `locosim sweep` exits 130 with a readable index; running it again completes
    the remaining runs and skips the ones already completed."""
    out = tmp_path / "sw"
    args = ["sweep", QS, "--grid", "algorithm.inner_steps=2,3,4,5", "--seeds", "0..1", "--out", str(out), "--quiet",
            *sum((["--set", o] for o in TINY + ["run.max_rounds=40", "run.eval_every_steps=null"]), [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "index.parquet").exists():
        time.sleep(0.2)  # the index appears after the first completed run
    assert (out / "index.parquet").exists(), proc.communicate()[1]
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    before = pd.read_parquet(out / "index.parquet")
    completed = int((before["status"] == "completed").sum())
    assert 1 <= completed < 8
    res = _cli(root, *args)
    assert res.returncode == 0, res.stderr
    assert f"{8 - completed} done, 0 failed, {completed} skipped" in res.stdout
    after = pd.read_parquet(out / "index.parquet")
    assert (after["status"] == "completed").all()


def test_bad_grid_flag_is_one_line(root):
    """A malformed --grid is refused with one line and exit code 2."""
    res = _cli(root, "sweep", QS, "--grid", "algorithm.inner_steps")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--grid" in res.stderr


def test_compare_of_a_sweep_plots_metric_vs_parameter_with_seed_means(root, tmp_path):
    """`locosim compare SWEEP_DIR` adds, per swept parameter, each metric's mean over seeds
    (the plotted points equal the index's per-value means)."""
    plan = plan_sweep(root / QS, {"algorithm.inner_steps": [2, 4]}, [0, 1], SMALL)
    run_sweep(plan, tmp_path / "sw")
    res = _cli(root, "compare", str(tmp_path / "sw"), "-o", str(tmp_path / "c.html"))
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "c.html").read_text()
    assert 'id="sweep-final_eval_loss-vs-algorithm_inner_steps"' in page
    from sim.report.sweep import load_sweep, sweep_figures

    index, axes = load_sweep(tmp_path / "sw")
    fig = sweep_figures(index, axes)["sweep-final_eval_loss-vs-algorithm_inner_steps"]
    line = [t for t in fig.data if t.mode == "lines+markers"][0]
    expected = index.groupby("algorithm.inner_steps")["final_eval_loss"].mean()
    assert list(line.y) == pytest.approx([expected[2], expected[4]])
