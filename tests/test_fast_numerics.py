"""Replica engine selection, bf16 autocast, batched per-replica evaluation, and the memory
estimate that refuses scenarios before anything is allocated (issue 8)."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sim.runner import Simulation
from sim.scenario import InnerOptimizer, ScenarioError, load_scenario
from sim.training.memory import FLOAT_BYTES, STATE_COPIES, activation_floats, saved_tensor_bytes
from sim.training.models import NextTokenMLP, TinyGPT
from sim.training.replicas import Replicas, StackedReplicas
from sim.writer import run_to_dir
from tests.conftest import ROOT, TINY

QUICK = str(ROOT / "scenarios/quickstart.yaml")


def _sim(*overrides: str, base: str = QUICK) -> Simulation:
    return Simulation(load_scenario(base, TINY + ["run.max_rounds=2", "algorithm={name: diloco, inner_steps: 3}"]
                                    + list(overrides)))


def _losses(sim: Simulation, kind: str) -> list[float]:
    return [p.loss for p in sim.recorder.losses if p.kind == kind]


# ---------------------------------------------------------------------- engine selection
MLP = "model={kind: mlp, d_model: 8, hidden: 16, context: 2, seq_len: 16}"


@pytest.mark.parametrize("kind, engine, want", [("gpt", "auto", "stacked"), ("mlp", "auto", "vmap"),
                                                ("gpt", "vmap", "vmap"), ("gpt", "stacked", "stacked")])
def test_run_engine_picks_the_replica_engine(kind, engine, want):
    sim = _sim(MLP if kind == "mlp" else "model.kind=gpt", f"run.engine={engine}")
    assert sim.engine == want
    assert isinstance(sim.replicas, StackedReplicas) == (want == "stacked")


def test_stacked_engine_with_an_mlp_is_refused_naming_the_field():
    with pytest.raises(ScenarioError, match=r"run\.engine.*gpt"):
        load_scenario(QUICK, [MLP, "run.engine=stacked"])


def test_both_engines_give_the_same_run():
    """A diloco run with the stacked engine ends where the vmap engine's does (fp32 rounding apart)."""
    runs = {}
    for engine in ("vmap", "stacked"):
        sim = _sim(f"run.engine={engine}")
        sim.run()
        runs[engine] = sim
    a, b = runs["vmap"], runs["stacked"]
    torch.testing.assert_close(torch.tensor(_losses(b, "train")), torch.tensor(_losses(a, "train")), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(_losses(b, "eval")), torch.tensor(_losses(a, "eval")), rtol=1e-4, atol=1e-5)
    assert a.env.now == b.env.now  # numerics never change the schedule


# ---------------------------------------------------------------------- precision
@pytest.mark.parametrize("engine", ["vmap", "stacked"])
def test_bf16_autocast_trains_close_to_fp32_and_keeps_fp32_state(engine):
    opt = InnerOptimizer(lr=1e-2)
    cls = StackedReplicas if engine == "stacked" else Replicas
    model = TinyGPT(vocab_size=11, d_model=16, n_layers=2, n_heads=2, seq_len=8)
    a = cls(model, 3, opt, torch.device("cpu"), seed=1)
    b = cls(model, 3, opt, torch.device("cpu"), seed=1, precision="bf16")
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        tokens = torch.randint(0, 11, (3, 4, 9), generator=g)
        la, lb = a.step([0, 1, 2], tokens), b.step([0, 1, 2], tokens)
        assert lb.dtype == torch.float32
        torch.testing.assert_close(lb, la, rtol=0, atol=0.05)  # bf16 keeps ~3 significant digits
    for k in a.params:
        assert b.params[k].dtype == b.exp_avg[k].dtype == torch.float32
    assert any(not torch.equal(a.params[k], b.params[k]) for k in a.params)  # bf16 really ran


def test_unknown_precision_is_refused():
    with pytest.raises(ScenarioError, match=r"run\.precision"):
        load_scenario(QUICK, ["run.precision=fp8"])


# ---------------------------------------------------------------------- per-replica evaluation
@pytest.mark.parametrize("cls", [Replicas, StackedReplicas])
def test_batched_replica_eval_equals_evaluating_each_replica_alone(cls):
    model = TinyGPT(vocab_size=11, d_model=16, n_layers=2, n_heads=2, seq_len=8)
    reps = cls(model, 4, InnerOptimizer(lr=1e-2), torch.device("cpu"), seed=0)
    g = torch.Generator().manual_seed(1)
    for i in range(4):  # make the replicas differ
        reps.step([i], torch.randint(0, 11, (1, 4, 9), generator=g))
    batches = [torch.randint(0, 11, (5, 9), generator=g) for _ in range(2)]
    got = reps.eval_losses(reps.params, batches)
    want = torch.tensor([reps.eval_loss(reps.replica(i), batches) for i in range(4)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert len(set(got.tolist())) == 4


def test_ddp_replica_evals_equal_the_global_eval():
    """ddp's replicas are identical at all times, so each replica's eval is the global model's."""
    sim = _sim("algorithm={name: ddp}", "run.max_rounds=6", "run.eval_every_steps=2", "run.eval_replicas=true")
    sim.run()
    ev = _losses(sim, "eval")
    reps = [p for p in sim.recorder.losses if p.kind == "replica_eval"]
    assert len(reps) == len(ev) * sim.n_workers
    for i, value in enumerate(ev):
        for p in reps[i * sim.n_workers:(i + 1) * sim.n_workers]:
            assert p.loss == pytest.approx(value, rel=1e-5)


def test_replica_eval_rows_reach_the_metrics_table_and_dashboard(tmp_path):
    sim = _sim("run.eval_replicas=true")
    run_to_dir(sim, tmp_path / "run")
    import pandas as pd

    m = pd.read_parquet(tmp_path / "run/metrics.parquet")
    rows = m[m["kind"] == "replica_eval"]
    assert sorted(rows["worker"].unique()) == list(range(sim.n_workers))
    html = (tmp_path / "run/dashboard.html").read_text()
    assert "eval loss (each replica)" in html


# ---------------------------------------------------------------------- memory
def test_persistent_state_estimate_equals_the_bytes_allocated():
    """(3 + the method's outer copies) x P x 4 bytes per replica is what the run really holds:
    parameters, both AdamW moments, outer parameters and momentum."""
    for algo in ("ddp", "diloco", "noloco"):
        sim = _sim("algorithm={name: ddp}" if algo == "ddp" else f"algorithm={{name: {algo}, inner_steps: 3}}")
        sim.run()
        tensors = [sim.replicas.params, sim.replicas.exp_avg, sim.replicas.exp_avg_sq]
        if sim.state is not None and getattr(sim.state, "outer", None) is not None:
            tensors += [sim.state.outer, sim.state.momentum]
        held = sum(t.numel() * t.element_size() for d in tensors for t in d.values())
        copies = STATE_COPIES + sim.algorithm.outer_state_copies
        assert held == sim.n_workers * copies * sim.n_params * FLOAT_BYTES, algo


@pytest.mark.parametrize("kind, cfg", [
    ("gpt", dict(d_model=32, n_layers=2, n_heads=4, seq_len=64, mlp_ratio=4)),
    ("gpt", dict(d_model=64, n_layers=3, n_heads=2, seq_len=24, mlp_ratio=2)),
    ("mlp", dict(d_model=16, hidden=256, context=5, seq_len=64)),
])
def test_activation_estimate_bounds_what_autograd_saves(kind, cfg):
    """The per-token activation estimate is at least what autograd really keeps for backward
    (measured with saved-tensor hooks) and at most twice it."""
    vocab, batch = 40, 6
    spec = SimpleNamespace(kind=kind, **cfg)
    model = (TinyGPT(vocab, cfg["d_model"], cfg["n_layers"], cfg["n_heads"], cfg["seq_len"], cfg["mlp_ratio"])
             if kind == "gpt" else NextTokenMLP(vocab, cfg["d_model"], cfg["hidden"], cfg["context"], cfg["seq_len"]))
    x = torch.randint(0, vocab, (batch, cfg["seq_len"] + 1), generator=torch.Generator().manual_seed(0))

    def forward():
        logits = model(x[:, :-1])
        F.cross_entropy(logits.reshape(-1, vocab), x[:, 1:].reshape(-1))

    saved = saved_tensor_bytes(forward, list(model.parameters()))
    est = batch * cfg["seq_len"] * activation_floats(spec, vocab) * FLOAT_BYTES
    assert saved <= est <= 2 * saved, (saved, est)


def test_summary_reports_memory_and_engine(tmp_path):
    sim = _sim()
    run_to_dir(sim, tmp_path / "run")
    num = json.loads((tmp_path / "run/summary.json").read_text())["numerics"]
    assert num["engine"] == "stacked" and num["precision"] == "fp32"
    mem = num["memory_estimate"]
    assert mem["bytes_per_replica"] == mem["state_bytes_per_replica"] + mem["activation_bytes_per_replica"]
    assert mem["total_bytes"] >= sim.n_workers * mem["bytes_per_replica"]


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_a_scenario_over_the_memory_limit_is_refused_before_it_starts(tmp_path):
    out = tmp_path / "run"
    res = _cli("run", QUICK, "--set", "run.memory_limit_gb=0.001", "--out", str(out), cwd=ROOT)
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "run.memory_limit_gb" in line and "GB" in line
    assert not out.exists()


def test_a_model_too_big_for_this_machine_is_refused_without_allocating_it(tmp_path):
    """~13e9 parameters x 4 replicas: refused from the estimate (the model is built on the meta
    device), in seconds, instead of running out of memory."""
    out = tmp_path / "run"
    res = _cli("run", QUICK, "--set", "model.d_model=4096", "--set", "model.n_layers=64", "--set", "model.n_heads=32",
               "--out", str(out), cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert "run: the numerics need about" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()
