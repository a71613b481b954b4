"""DeMo (sim/algorithms/demo.py, kernels/dct.py): the chunked DCT against independent formulas,
the schedule and its bytes as data, the sign-SGD limit, determinism, learning and faults."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from kernels.dct import chunk_dct, chunk_idct, dct_matrix, gather_mean, scatter_chunks, topk_chunks
from kernels.formats import payload_bytes
from sim.runner import Simulation
from sim.scenario import ScenarioError, load_scenario
from tests.conftest import ROOT, TINY

QS = ROOT / "scenarios" / "quickstart.yaml"
COMMON = TINY + ["run.device=cpu", "run.max_tokens=null"]
ONE_WORKER = "topology={regions: [{name: us, nodes: 1}], intra_region: {bandwidth_gbps: 100.0, latency_s: 0.0001}}"


def _sim(*overrides) -> Simulation:
    return Simulation(load_scenario(QS, COMMON + list(overrides)))


# ---------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("s", [1, 2, 5, 64])
def test_dct_matrix_is_orthonormal(s):
    """D D^T = I for the DCT-II matrix of every chunk size (so its inverse is D^T)."""
    d = dct_matrix(s, torch.float64)
    torch.testing.assert_close(d @ d.T, torch.eye(s, dtype=torch.float64), rtol=0, atol=1e-12)


def test_chunk_dct_equals_the_cosine_sum_in_float64():
    """Each chunk's coefficients are sum_i a_j cos(pi (2i+1) j / 2s) x_i, the tail chunk zero-padded
    (computed here with numpy loops in float64, not with the kernel's matrix)."""
    rng = np.random.default_rng(0)
    n, s = 11, 4
    x = rng.standard_normal((2, n))
    got = chunk_dct(torch.from_numpy(x), s).numpy()
    assert got.shape == (2, 3, s)
    padded = np.concatenate([x, np.zeros((2, 3 * s - n))], axis=1)
    for w in range(2):
        for c in range(3):
            for j in range(s):
                a = math.sqrt((1 if j == 0 else 2) / s)
                want = sum(a * math.cos(math.pi * (2 * i + 1) * j / (2 * s)) * padded[w, c * s + i] for i in range(s))
                assert abs(got[w, c, j] - want) < 1e-12


def test_inverse_of_the_chunked_dct_gives_back_the_values():
    """idct(dct(x)) == x for a length that is not a multiple of the chunk (padding dropped)."""
    x = torch.randn(3, 130, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(chunk_idct(chunk_dct(x, 64), 130), x, rtol=0, atol=1e-12)


def test_topk_keeps_the_largest_magnitudes_and_k_equal_chunk_keeps_everything():
    """Top-k picks the k largest |coefficients| of each chunk; with k = s every coefficient is
    sent and the receiver's decode is the full round trip."""
    coeffs = torch.tensor([[[0.1, -3.0, 2.0, 0.5]]])
    vals, idx = topk_chunks(coeffs, 2)
    assert idx.tolist() == [[[1, 2]]] and vals.tolist() == [[[-3.0, 2.0]]]
    x = torch.randn(2, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    c = chunk_dct(x, 8)
    vals, idx = topk_chunks(c, 8)
    torch.testing.assert_close(scatter_chunks(vals, idx, 8), c, rtol=0, atol=0)
    torch.testing.assert_close(chunk_idct(gather_mean(vals, idx, 8), 37), x.mean(dim=0), rtol=0, atol=1e-12)


def test_gather_mean_is_the_mean_over_senders_of_their_dense_coefficients():
    """Two senders' sparse slices decode to the mean of their dense coefficients: a position both
    sent is their mean, one only one sent is half its value, one nobody sent is zero."""
    vals = torch.tensor([[[1.0, 4.0]], [[3.0, 5.0]]])
    idx = torch.tensor([[[0, 2]], [[0, 3]]])
    assert gather_mean(vals, idx, 4).tolist() == [[2.0, 0.0, 2.0, 2.5]]


# ---------------------------------------------------------------------------- schedule and bytes
def test_every_step_all_gathers_k_values_and_indices_per_chunk_byte_exact():
    """Every step sends one ring all-gather of k (value, index) pairs per chunk of each tensor:
    8 k sum_t ceil(n_t / s) bytes per worker, as planned, as recorded per sync, and the ring moves
    P (P - 1) times that per round."""
    k, s, rounds = 3, 16, 3
    sim = _sim(f"algorithm={{name: demo, chunk: {s}, topk: {k}}}", f"run.max_rounds={rounds}",
               "run.eval_every_steps=null")
    alg = sim.algorithm
    kept = k * sum(math.ceil(math.prod(shape) / s) for shape in sim.replicas.shapes.values())
    per_worker = payload_bytes(kept, "topk:1")
    assert per_worker == 8 * kept
    for step in range(1, 6):
        assert alg.quiet_steps(0, step) == 0
        plan = alg.at_step(step % 4, step)
        (send,) = plan.outgoing()
        assert (send.collective, send.wire_format, send.elems, send.round) == ("ring_allgather", "topk:1", kept, step - 1)
        assert plan.needed() == (("demo", step - 1),) and not plan.local_step
    sim.run()
    syncs = [y for y in sim.recorder.syncs if y.stream == "demo"]
    assert len(syncs) == rounds == sim.rounds
    assert all(y.collective == "ring_allgather" and y.payload_bytes == per_worker for y in syncs)
    p = 4
    assert sum(t.payload_bytes for t in sim.recorder.transfers) == pytest.approx(rounds * p * (p - 1) * per_worker)


def test_layer_grain_splits_the_same_bytes_into_per_layer_parts():
    """At layer grain the payload leaves as one part per layer (during the backward), summing to
    the step grain's values."""
    sim = _sim("algorithm={name: demo, chunk: 16, topk: 3, sync_grain: layer}", "run.max_rounds=2")
    plan = sim.algorithm.at_step(0, 1)
    assert len(plan.during) > 1 and not plan.sends
    assert sum(s.elems for _, s in plan.during) == sim.algorithm.elems_per_step
    sim.run()
    assert sim.rounds == 2


# ---------------------------------------------------------------------------- limits
def test_one_worker_all_coefficients_no_momentum_is_sign_sgd():
    """One worker, k = s, beta = 0: the update is sign(gradient), so one step is
    theta (1 - lr lambda) - lr sign(g) of the same batch's gradient (computed here by hand), and
    the momentum left after extraction is zero."""
    lr, wd = 0.01, 0.1
    sim = _sim(ONE_WORKER, "algorithm={name: demo, chunk: 8, topk: 8, beta: 0.0}", "run.max_rounds=1",
               "run.eval_every_steps=null", f"optimizer={{name: adamw, lr: {lr}, weight_decay: {wd}, grad_clip: null}}")
    p0 = {k: v[0].clone() for k, v in sim.replicas.params.items()}
    grads = _hand_grads(sim, 0, p0)
    sim.run()
    assert sim.rounds == 1
    checked = 0
    for k, g in grads.items():
        clear = g.abs() > 1e-6 * g.abs().max()  # signs of gradients at rounding level may differ
        want = p0[k] * (1 - lr * wd) - lr * torch.sign(g)
        got = sim.replicas.params[k][0]
        torch.testing.assert_close(got[clear], want[clear], rtol=0, atol=1e-7)
        checked += int(clear.sum())
        assert float(sim.state.momentum[k].abs().max()) < 1e-7
    assert checked > 0.9 * sim.replicas.n_params


def _hand_grads(sim, worker: int, p0: dict) -> dict:
    """The gradient of ``worker``'s first batch at ``p0`` (drawn from a copy of its data stream)."""
    from torch.func import functional_call

    g = copy.deepcopy(sim.numerics.data_rngs[worker])
    batch = torch.from_numpy(sim.numerics.dataset.train_batch(g, worker, sim.numerics.batch_size))
    params = {k: v.clone().requires_grad_(True) for k, v in p0.items()}
    logits = functional_call(sim.replicas.model, params, (batch[:, :-1],))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def _np_dct(x: np.ndarray, s: int) -> np.ndarray:
    """Chunked orthonormal DCT-II of a flat float64 vector by the cosine sum: [C, s]."""
    c = -(-len(x) // s)
    xp = np.concatenate([x, np.zeros(c * s - len(x))]).reshape(c, s)
    j, i = np.arange(s)[:, None], np.arange(s)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * j / (2 * s)) * np.where(j == 0, np.sqrt(1 / s), np.sqrt(2 / s))
    return xp @ d.T, d


def test_two_workers_one_step_is_the_sign_of_the_decoded_mean_of_their_slices():
    """Two workers, k < s: one step is theta - lr sign(IDCT(mean over workers of each one's top-k
    DCT coefficients of lr g_w)), and each keeps lr g_w minus what it sent as momentum
    (recomputed here in numpy float64 from hand gradients)."""
    lr, k, s = 0.01, 3, 8
    sim = _sim("topology={regions: [{name: us, nodes: 2}], intra_region: {bandwidth_gbps: 100.0, latency_s: 0.0001}}",
               f"algorithm={{name: demo, chunk: {s}, topk: {k}, beta: 0.5}}", "run.max_rounds=1",
               "run.eval_every_steps=null", f"optimizer={{name: sgd, lr: {lr}, grad_clip: null}}")
    p0 = {name: v[0].clone() for name, v in sim.replicas.params.items()}
    grads = [_hand_grads(sim, w, p0) for w in range(2)]
    sim.run()
    flips = total = 0
    for name in p0:
        n = p0[name].numel()
        total_c = None
        for w in range(2):
            m = lr * grads[w][name].double().numpy().ravel()
            c, d = _np_dct(m, s)
            order = np.argsort(-np.abs(c), axis=1, kind="stable")[:, :k]
            sparse = np.zeros_like(c)
            np.put_along_axis(sparse, order, np.take_along_axis(c, order, 1), 1)
            left = (c - sparse) @ d
            got_m = sim.state.momentum[name][w].double().numpy().ravel()
            np.testing.assert_allclose(got_m, left.ravel()[:n], rtol=0, atol=1e-7)
            total_c = sparse if total_c is None else total_c + sparse
        u = ((total_c / 2) @ d).ravel()[:n]
        want = p0[name].double().numpy().ravel() - lr * np.sign(u)
        got = sim.replicas.params[name][0].double().numpy().ravel()
        clear = np.abs(u) > 1e-6 * max(np.abs(u).max(), 1e-30)
        np.testing.assert_allclose(got[clear], want[clear], rtol=0, atol=1e-6)
        flips += int((~clear).sum())
        total += n
        assert torch.equal(sim.replicas.params[name][1], sim.replicas.params[name][0])
    assert flips < 0.1 * total


def test_same_seed_gives_identical_losses_events_and_parameters():
    """Two runs of the same scenario and seed: the same losses, events and parameters, bit for
    bit; another seed gives other losses."""
    from sim.metrics.tables import events_table

    args = ("algorithm={name: demo, topk: 8}", "run.max_rounds=6", "run.eval_every_steps=3")
    a, b, c = _sim(*args), _sim(*args), _sim(*args, "seed=7")
    for sim in (a, b, c):
        sim.run()
    losses = [(p.kind, p.worker, p.step, p.time_s, p.loss) for p in a.recorder.losses]
    assert losses == [(p.kind, p.worker, p.step, p.time_s, p.loss) for p in b.recorder.losses]
    assert losses != [(p.kind, p.worker, p.step, p.time_s, p.loss) for p in c.recorder.losses]
    assert any(p[0] == "eval" for p in losses)
    assert events_table(a.recorder).equals(events_table(b.recorder))
    for k, v in a.replicas.params.items():
        assert torch.isfinite(v).all() and torch.equal(v, b.replicas.params[k])


def test_a_short_run_lowers_the_eval_loss():
    """60 DeMo steps on the tiny GPT lower the eval loss clearly below the initial model's."""
    sim = _sim("algorithm={name: demo, topk: 8}", "run.max_rounds=60", "run.eval_every_steps=60")
    sim.run()
    evals = [p.loss for p in sim.recorder.losses if p.kind == "eval"]
    assert evals[-1] < evals[0] - 0.03, evals


def test_a_run_with_a_failure_completes_with_finite_identical_replicas():
    """A worker down for a while: the all-gathers run over those up, the run completes its rounds,
    parameters stay finite and every replica (the one that came back included) holds the same ones."""
    sim = _sim("algorithm={name: demo, topk: 8}", "run.max_rounds=12", "run.eval_every_steps=6",
               "faults={failures: {schedule: [{node: us/1, start_s: 0.12, end_s: 0.4}]}}")
    sim.run()
    assert sim.rounds == 12
    assert any(y.participants < 4 for y in sim.recorder.syncs)
    for k, v in sim.replicas.params.items():
        assert torch.isfinite(v).all()
        assert torch.equal(v[1], v[0]), k


def test_stragglers_and_a_sync_timeout_leave_the_late_worker_out():
    """A slow worker and sync_timeout_s: all-gathers run without it, every round completes,
    parameters stay finite and identical across replicas."""
    sim = _sim("algorithm={name: demo, topk: 8, sync_timeout_s: 0.01}", "run.max_rounds=8",
               "run.eval_every_steps=4", "faults={node_step_time_multiplier: {eu/1: 3.0}}")
    sim.run()
    assert sim.rounds == 8
    assert any(y.participants == 3 for y in sim.recorder.syncs)
    for v in sim.replicas.params.values():
        assert torch.isfinite(v).all() and all(torch.equal(v[w], v[0]) for w in range(4))


def test_numerics_on_and_off_give_the_same_timeline():
    """With a timing proxy the payload is the proxy's (k per chunk of each proxy layer), so the
    events are identical whether or not the tiny model trains."""
    from sim.metrics.tables import events_table

    args = ["algorithm={name: demo, topk: 8, sync_grain: layer}", "timing={params: 1.0e8, layers: 2, step_time_s: 0.2}",
            "run.max_rounds=3"]
    on, off = _sim(*args), _sim(*args, "numerics=false")
    on.run()
    off.run()
    a, b = events_table(on.recorder), events_table(off.recorder)
    assert len(a) > 0 and a.equals(b)
    assert on.algorithm.elems_per_step == 8 * 2 * math.ceil(1.0e8 / 2 / 64)


# ---------------------------------------------------------------------------- knobs
def test_demo_is_selected_by_name_and_its_knobs_are_checked():
    """`algorithm: {name: demo}` resolves the packaged plug-in with the paper's defaults; a
    misspelled knob and k > s are refused in one line naming the field."""
    from sim.algorithms import METHODS, sections

    assert "demo" not in sections() and METHODS["demo"] == "sim.algorithms.demo:DeMo"
    sc = load_scenario(QS, ["algorithm={name: demo}"])
    assert sc.algorithm.plugin == "sim.algorithms.demo:DeMo"
    assert (sc.algorithm.chunk, sc.algorithm.topk, sc.algorithm.beta) == (64, 32, 0.999)
    for bad, word in (("algorithm={name: demo, topkk: 3}", "topkk"), ("algorithm={name: demo, chunk: 4, topk: 5}", "topk")):
        with pytest.raises(ScenarioError) as err:
            load_scenario(QS, [bad])
        assert word in str(err.value) and "\n" not in str(err.value)
