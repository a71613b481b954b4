"""DDP and DiLoCo: degenerate limits, bytes, the outer optimizer, convergence."""

import pytest
import torch

from sim.algorithms.transforms import OuterNesterov
from sim.lockstep import run_lockstep
from sim.runner import Simulation
from sim.scenario import load_scenario
from tests.conftest import TINY

QS = "scenarios/quickstart.yaml"


def _sc(root, *overrides):
    return load_scenario(root / QS, TINY + list(overrides))


def _sim(root, *overrides):
    return Simulation(_sc(root, *overrides))


def test_diloco_h1_sgd_equals_ddp(root):
    """DiLoCo with H=1, inner SGD, outer SGD lr 1 and no momentum gives the parameters of ddp with SGD."""
    common = ["optimizer.name=sgd", "optimizer.lr=0.1", "optimizer.grad_clip=null", "run.max_rounds=6"]
    # the math only: on the lock-step harness (no timeline), as the full simulation gives it bit for bit
    a = run_lockstep(_sc(root, "algorithm={name: ddp}", *common)).global_params()
    b = run_lockstep(_sc(root, "algorithm={name: diloco, inner_steps: 1, outer_lr: 1.0, outer_momentum: 0.0}",
                         *common)).global_params()
    init = run_lockstep(_sc(root, "algorithm={name: ddp}", *common), steps=0).numerics.replicas.replica(0)
    assert any(not torch.allclose(a[k], init[k]) for k in a)  # training moved the parameters
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("h", [2, 5])
def test_diloco_bytes_are_ddp_bytes_over_h(root, h):
    """For the same inner steps, DiLoCo moves exactly 1/H of ddp's bytes (same wire format)."""
    ddp = _sim(root, "algorithm={name: ddp}", f"run.max_rounds={3 * h}", "run.eval_every_steps=null")
    dil = _sim(root, f"algorithm={{name: diloco, inner_steps: {h}}}", "run.max_rounds=3", "run.eval_every_steps=null")
    ddp.run()
    dil.run()
    assert [w.steps_done for w in ddp.workers] == [w.steps_done for w in dil.workers]
    bytes_ddp = sum(t.payload_bytes for t in ddp.recorder.transfers)
    bytes_dil = sum(t.payload_bytes for t in dil.recorder.transfers)
    assert bytes_dil * h == pytest.approx(bytes_ddp, rel=1e-12)


def test_bf16_payload_halves_bytes(root):
    """A bf16 wire format sends half the bytes of fp32."""
    a = _sim(root, "run.max_rounds=1", "algorithm.inner_steps=2")
    b = _sim(root, "run.max_rounds=1", "algorithm.inner_steps=2", "algorithm.payload_dtype=bf16")
    assert b.payload_bytes * 2 == a.payload_bytes == 4 * a.n_params


def test_outer_nesterov_matches_torch_sgd():
    """OuterNesterov equals torch.optim.SGD(nesterov=True) fed the pseudo-gradient as its gradient."""
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, generator=g)
    deltas = [torch.randn(5, generator=g) for _ in range(4)]
    ref = p0.clone().requires_grad_(True)
    sgd = torch.optim.SGD([ref], lr=0.7, momentum=0.9, nesterov=True)
    outer = OuterNesterov(0.7, 0.9)
    params, state = {"p": p0.clone()}, outer.init({"p": p0})
    for d in deltas:
        ref.grad = d.clone()
        sgd.step()
        params, state = outer.update({"p": d}, state, params)
    torch.testing.assert_close(params["p"], ref.detach())


@pytest.mark.slow
def test_diloco_gap_close_to_ddp(root):
    """On the synthetic language, 4-worker DiLoCo (small H) ends within 1.1x ddp's gap to the floor at equal tokens.

    From scratch (no warm start) the outer lr matters: measured on this setup (2M tokens,
    inner AdamW lr 3e-3), ddp's gap was 0.285; DiLoCo H=10 reached 0.285 at outer lr 0.5 and
    0.314 at 0.7; H=20 at 0.7 reached 0.335. Charles et al. find the best outer lr depends
    on M and H, so this test uses 0.5.
    """
    base = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.seq_len=32", "compute.batch_size=16",
            "run.max_rounds=null", "run.max_tokens=2000000", "run.eval_batches=4", "run.eval_every_steps=null",
            "optimizer.lr=0.003"]
    sims = {}
    for name, algo in [("ddp", "{name: ddp}"), ("diloco", "{name: diloco, inner_steps: 10, outer_lr: 0.5}")]:
        sim = Simulation(load_scenario(root / QS, base + [f"algorithm={algo}"]))
        sim.run()
        sims[name] = sim
    floor = sims["ddp"].dataset.loss_floor
    gaps = {k: s.recorder.losses[-1].loss - floor for k, s in sims.items()}
    assert sims["ddp"].tokens == sims["diloco"].tokens
    assert gaps["diloco"] <= 1.1 * gaps["ddp"], gaps
