"""Wire-format kernels: byte counts, round-trip error bounds, Triton against the torch
reference, the fused outer update, and error feedback in the algorithms.

Triton kernels run under TRITON_INTERPRET=1 on CPU when there is no CUDA (set below,
before ``kernels.triton_kernels`` is imported); those tests skip when triton does not
import. Inputs stay small: the interpreter is slow but exact.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from kernels.backend import resolve_backend, triton_available  # noqa: E402
from kernels.formats import parse_format, payload_bytes, topk_count  # noqa: E402
from kernels.outer import outer_nesterov_  # noqa: E402
from kernels.quantize import dequantize, dequantize_mean, quantize, roundtrip  # noqa: E402
from sim.algorithms.transforms import ErrorFeedback, OuterNesterov, wire_roundtrip  # noqa: E402
from sim.runner import Simulation  # noqa: E402
from sim.scenario import ScenarioError, load_scenario  # noqa: E402
from tests.conftest import TINY  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton does not import (optional extra)")
ALL_FORMATS = ["fp32", "bf16", "fp16", "int8", "int8:16", "fp8", "fp8:6", "e3m0", "e3m0:4", "topk", "topk:0.25"]
BLOCK_FORMATS = ["int8:16", "int8:5", "fp8:16", "fp8:6", "e3m0:16", "e3m0:6", "e3m0:128"]
SIZES = [1, 2, 7, 16, 33, 100]


def _x(rows: int, n: int, seed: int = 0) -> torch.Tensor:
    """Values over six decades, some exact zeros, a whole zero block in row 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g) * torch.logspace(-3, 3, n).roll(n // 3)
    x[0, : min(n, 16)] = 0.0
    if n > 20:
        x[-1, 20] = -0.0
    return x


# --------------------------------------------------------------------------- sizes
def test_payload_bytes_formulas():
    """payload_bytes follows the documented formula of every format (n = 1001 values)."""
    n = 1001
    assert payload_bytes(n, "fp32") == 4004
    assert payload_bytes(n, "bf16") == payload_bytes(n, "fp16") == 2002
    assert payload_bytes(n, "int8") == n + 4 * 8            # default block 128: ceil(1001/128) = 8 scales
    assert payload_bytes(n, "int8:256") == n + 4 * 4
    assert payload_bytes(n, "fp8:1000") == n + 4 * 2
    assert payload_bytes(n, "e3m0") == 501 + 4 * 8          # two values per byte, odd n rounds up
    assert payload_bytes(n, "e3m0:32") == 501 + 4 * 32
    assert payload_bytes(n, "topk") == 11 * 8               # ceil(0.01 n) = 11 values + int32 indices
    assert payload_bytes(n, "topk:1") == n * 8
    assert payload_bytes(0, "e3m0") == payload_bytes(0, "topk") == 0
    assert payload_bytes(100, "topk:0.07") == 7 * 8         # 0.07 * 100 is 7, not 8, despite float error


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("n", SIZES)
def test_payload_bytes_equal_packed_tensor_sizes(fmt, n):
    """The bytes the engine charges for a payload are exactly the bytes of the packed tensors."""
    p = quantize(_x(3, n), fmt, backend="torch")
    assert p.payload_nbytes == payload_bytes(n, fmt)
    assert p.nbytes == 3 * payload_bytes(n, fmt)


@pytest.mark.parametrize("bad", ["fp64", "int8:0", "int8:x", "e3m0:3", "topk:0", "topk:1.5", "topk:a", "fp32:2", "int4"])
def test_bad_format_strings_are_refused_with_the_valid_forms(bad):
    """A malformed format string raises ValueError that names the string (and, for unknown ones, the forms)."""
    with pytest.raises(ValueError, match=bad.split(":")[0]):
        parse_format(bad)


def test_scenario_accepts_format_strings_and_canonicalizes(root):
    """payload_dtype takes NAME[:PARAM] strings (stored canonical), and refuses bad ones with a located message."""
    sc = load_scenario(root / "scenarios/quickstart.yaml", ["algorithm.payload_dtype=int8"])
    assert sc.algorithm.payload_dtype == "int8:128"
    sc = load_scenario(root / "scenarios/quickstart.yaml", ["algorithm.payload_dtype='e3m0:64'"])
    assert sc.algorithm.payload_dtype == "e3m0:64"
    with pytest.raises(ScenarioError, match="payload_dtype"):
        load_scenario(root / "scenarios/quickstart.yaml", ["algorithm.payload_dtype=int3"])
    with pytest.raises(ScenarioError, match="error_feedback"):
        load_scenario(root / "scenarios/quickstart.yaml", ["algorithm.error_feedback=true"])


# --------------------------------------------------------------------------- error bounds (torch reference)
def _block_absmax(x: torch.Tensor, block: int) -> torch.Tensor:
    """absmax of each element's block, broadcast back to [rows, n]."""
    rows, n = x.shape
    nb = -(-n // block)
    xp = torch.nn.functional.pad(x.abs(), (0, nb * block - n)).reshape(rows, nb, block)
    return xp.amax(-1).repeat_interleave(block, dim=-1)[:, :n]


@pytest.mark.parametrize("fmt,rel", [("fp32", 0.0), ("bf16", 2.0 ** -8), ("fp16", 2.0 ** -11)])
def test_cast_roundtrip_error_within_half_ulp(fmt, rel):
    """fp32 is exact; bf16 / fp16 casts are within half an ulp (relative 2^-8 / 2^-11) in their normal range."""
    x = _x(2, 64) * 1e-2 + 1e-3  # within fp16's normal range
    err = (roundtrip(x, fmt) - x).abs()
    assert (err <= rel * x.abs()).all()


@pytest.mark.parametrize("block", [5, 16, 128])
def test_int8_roundtrip_error_at_most_half_a_step(block):
    """int8 blockwise absmax: every value is within half a quantization step, absmax/254, of the original."""
    x = _x(3, 300)
    err = (roundtrip(x, f"int8:{block}", "torch") - x).abs()
    assert (err <= _block_absmax(x, block) / 254 * (1 + 1e-6)).all()
    blocks = torch.nn.functional.pad(x, (0, -300 % block)).reshape(3, -1, block)
    got = torch.nn.functional.pad(roundtrip(x, f"int8:{block}", "torch"), (0, -300 % block)).reshape(3, -1, block)
    torch.testing.assert_close(got.abs().amax(-1), blocks.abs().amax(-1))  # the block's absmax is exact


@pytest.mark.parametrize("block", [6, 16, 128])
def test_fp8_roundtrip_error_within_half_an_e4m3_ulp(block):
    """fp8 e4m3 with block scales: error <= |x| 2^-4 (half an ulp, 3 mantissa bits) or, below the
    normal range, half the subnormal step (absmax / 448 * 2^-10)."""
    x = _x(3, 300)
    err = (roundtrip(x, f"fp8:{block}", "torch") - x).abs()
    bound = torch.maximum(x.abs() * 2.0 ** -4, _block_absmax(x, block) / 448 * 2.0 ** -10)
    assert (err <= bound * (1 + 1e-6)).all()


@pytest.mark.parametrize("block", [4, 16, 128])
def test_e3m0_roundtrip_is_the_nearest_power_of_two_level(block):
    """E3M0: each value is received as the nearest (linear distance) of 0 and +-absmax 2^-6 .. 2^0 of its
    block, so the error is at most max(|x| / 3, absmax 2^-7)."""
    x = _x(3, 300)
    got = roundtrip(x, f"e3m0:{block}", "torch")
    amax = _block_absmax(x, block)
    levels = torch.tensor([0.0] + [2.0 ** -e for e in range(6, -1, -1)])
    cand = torch.cat([levels, -levels[1:]])[None, None, :] * amax[..., None]  # [rows, n, 15]
    best = (cand - x[..., None]).abs().amin(-1)
    err = (got - x).abs()
    assert torch.isclose(got[..., None], cand, rtol=0, atol=0).any(-1).all()  # received values are levels
    torch.testing.assert_close(err, best, rtol=1e-6, atol=0)                   # ... and the nearest ones
    assert (err <= torch.maximum(x.abs() / 3, amax * 2.0 ** -7) * (1 + 1e-6)).all()


def test_topk_keeps_the_largest_magnitudes_exactly():
    """top-k: k = ceil(f n) values arrive exact, the rest as 0, and no dropped value is larger than a kept one."""
    x = _x(2, 200)
    got = roundtrip(x, "topk:0.1", "torch")
    kept = got != 0
    assert (kept.sum(-1) == topk_count(200, 0.1)).all()
    assert torch.equal(got[kept], x[kept])
    for r in range(2):
        assert x[r][kept[r]].abs().min() >= x[r][~kept[r]].abs().max()


@pytest.mark.parametrize("fmt", ["int8:16", "e3m0:8", "topk:0.2", "bf16"])
def test_rows_are_independent_payloads(fmt):
    """Quantizing [rows, n] at once equals quantizing each row alone (each row is one sender's payload)."""
    x = _x(4, 50)
    whole = roundtrip(x, fmt, "torch")
    for r in range(4):
        torch.testing.assert_close(whole[r], roundtrip(x[r], fmt, "torch"), rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["fp16", "int8:16", "fp8:16", "e3m0:16", "topk:0.3"])
def test_dequantize_mean_is_the_fp32_mean_of_the_dequantized(fmt):
    """dequantize_mean over K senders equals the mean of each sender's dequantized payload."""
    x = _x(5, 70)
    p = quantize(x, fmt, "torch")
    torch.testing.assert_close(dequantize_mean(p, "torch"), dequantize(p, "torch").mean(0))


def test_wire_roundtrip_flattens_a_tree_into_one_payload():
    """Block formats see a tree as one flat payload (what payload_bytes counts): the result equals
    the round trip of the concatenated vector, and stacked trees are one payload per replica."""
    g = torch.Generator().manual_seed(1)
    tree = {"a": torch.randn(3, 5, generator=g), "b": torch.randn(7, generator=g)}
    flat = torch.cat([tree["a"].reshape(-1), tree["b"]])
    got = wire_roundtrip(tree, "int8:8")
    want = roundtrip(flat, "int8:8")
    torch.testing.assert_close(torch.cat([got["a"].reshape(-1), got["b"]]), want, rtol=0, atol=0)
    stacked = {k: torch.stack([v, 2 * v]) for k, v in tree.items()}
    got2 = wire_roundtrip(stacked, "int8:8", stacked=True)
    for k in tree:
        torch.testing.assert_close(got2[k][0], got[k], rtol=0, atol=0)


# --------------------------------------------------------------------------- Triton against the reference
@needs_triton
@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
@pytest.mark.parametrize("n", [1, 7, 33, 130])
def test_triton_quantize_equals_reference_bit_for_bit(fmt, n):
    """Triton codes, scales and dequantized values equal the torch reference exactly."""
    x = _x(3, n, seed=n).to(DEVICE)
    ref, tri = quantize(x, fmt, "torch"), quantize(x, fmt, "triton")
    assert torch.equal(tri.data, ref.data)
    assert torch.equal(tri.scales, ref.scales)
    assert tri.payload_nbytes == payload_bytes(n, fmt)
    torch.testing.assert_close(dequantize(ref, "triton"), dequantize(ref, "torch"), rtol=0, atol=0)


@needs_triton
def test_triton_fp8_rounds_like_torchs_cast_at_every_boundary():
    """The arithmetic e4m3 encoder (round to nearest even, subnormals) equals torch's float8_e4m3fn cast
    on every code value, every midpoint between neighbours (ties) and one fp32 ulp either side."""
    codes = torch.arange(0, 127, dtype=torch.uint8)  # 0 .. 448, 0x7f is NaN
    vals = codes.view(torch.float8_e4m3fn).float()
    mids = (vals[1:] + vals[:-1]) / 2
    probes = torch.cat([vals, mids, mids.nextafter(torch.tensor(0.0)), mids.nextafter(torch.tensor(1e9))])
    probes = torch.cat([probes, -probes])
    # one block per probe: [448, probe] has scale absmax/448 = 1, so each probe is encoded as is
    x = torch.stack([torch.full_like(probes, 448.0), probes], dim=1).reshape(-1).to(DEVICE)
    ref, tri = quantize(x, "fp8:2", "torch"), quantize(x, "fp8:2", "triton")
    assert torch.equal(ref.scales, torch.ones_like(ref.scales))
    assert torch.equal(tri.data, ref.data)


@needs_triton
@pytest.mark.parametrize("fmt", ["int8:16", "fp8:6", "e3m0:6"])
def test_triton_dequantize_mean_matches_reference(fmt):
    """Triton's fused dequantize-and-average over K senders matches the reference mean (fp32 tolerance)."""
    x = _x(4, 45).reshape(2, 2, 45).to(DEVICE)  # K = 2 senders, 2 payload rows each
    p = quantize(x, fmt, "torch")
    torch.testing.assert_close(dequantize_mean(p, "triton"), dequantize_mean(p, "torch"))


@needs_triton
@pytest.mark.parametrize("nesterov", [True, False])
def test_triton_outer_nesterov_matches_reference(nesterov):
    """The fused Triton outer update matches the torch reference over three steps."""
    g = torch.Generator().manual_seed(3)
    p0, d = torch.randn(2, 1500, generator=g), torch.randn(3, 2, 1500, generator=g)
    pa, va = p0.clone().to(DEVICE), torch.zeros(2, 1500, device=DEVICE)
    pb, vb = p0.clone().to(DEVICE), torch.zeros(2, 1500, device=DEVICE)
    for t in range(3):
        outer_nesterov_(pa, va, d[t].to(DEVICE), 0.7, 0.9, nesterov, backend="torch")
        outer_nesterov_(pb, vb, d[t].to(DEVICE), 0.7, 0.9, nesterov, backend="triton")
    torch.testing.assert_close(pb, pa)
    torch.testing.assert_close(vb, va)


def test_outer_nesterov_kernel_equals_the_algorithms_transform():
    """kernels.outer.outer_nesterov_ (reference) is the same rule as OuterNesterov in the algorithms."""
    g = torch.Generator().manual_seed(4)
    p0, deltas = torch.randn(50, generator=g), [torch.randn(50, generator=g) for _ in range(4)]
    for nesterov in (True, False):
        opt = OuterNesterov(0.7, 0.9, nesterov)
        params, state = {"p": p0.clone()}, opt.init({"p": p0})
        p, v = p0.clone(), torch.zeros(50)
        for d in deltas:
            params, state = opt.update({"p": d}, state, params)
            outer_nesterov_(p, v, d, 0.7, 0.9, nesterov, backend="torch")
        torch.testing.assert_close(p, params["p"])
        torch.testing.assert_close(v, state["p"])


def test_backend_resolution(monkeypatch):
    """auto is torch for CPU tensors; an unknown backend, or triton on CPU without the interpreter, is refused."""
    cpu = torch.zeros(1)
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("torch", cpu) == "torch"
    with pytest.raises(ValueError, match="auto, torch, triton"):
        resolve_backend("cuda", cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="triton"):
        resolve_backend("triton", cpu)


# --------------------------------------------------------------------------- error feedback
@pytest.mark.parametrize("fmt", ["e3m0:16", "int8:16", "topk:0.1"])
def test_error_feedback_sent_sum_tracks_true_sum(fmt):
    """With error feedback, the sum of what a worker sent over 30 rounds differs from the sum of its true
    deltas by exactly its current residual, which for a quantizer is one payload's error (top-k: the
    values still waiting their turn); without it the errors pile up (5x larger here)."""
    g = torch.Generator().manual_seed(5)
    ef = ErrorFeedback(fmt)
    true_sum = torch.zeros(64)
    sent_ef, sent_plain = torch.zeros(64), torch.zeros(64)
    bias = torch.randn(64, generator=g)  # a persistent direction, as pseudo-gradients have
    for _ in range(30):
        d = bias + 0.3 * torch.randn(64, generator=g)
        true_sum += d
        sent_ef += ef.send(0, {"w": d})["w"]
        sent_plain += wire_roundtrip({"w": d}, fmt)["w"]
    torch.testing.assert_close(true_sum - sent_ef, ef.residual[0]["w"], rtol=0, atol=1e-4)
    if not fmt.startswith("topk"):  # |residual| <= one round's quantization error of a delta
        one_round = (roundtrip(bias, fmt) - bias).abs().max() + 1.0
        assert (true_sum - sent_ef).abs().max() <= 2 * one_round
    assert (true_sum - sent_ef).norm() < 0.2 * (true_sum - sent_plain).norm()


def test_error_feedback_residuals_are_per_worker():
    """Each worker carries its own residual: worker 1's first payload is unaffected by worker 0's."""
    ef = ErrorFeedback("e3m0:8")
    d = {"w": torch.linspace(-1, 1, 16)}
    ef.send(0, d)
    torch.testing.assert_close(ef.send(1, d)["w"], wire_roundtrip(d, "e3m0:8")["w"], rtol=0, atol=0)


METHODS = {
    "diloco": "{name: diloco, inner_steps: 2}",
    "streaming_diloco": "{name: streaming_diloco, inner_steps: 2, fragment_layers: 1, overlap_steps: 1}",
    "eager_diloco": "{name: eager_diloco, inner_steps: 2}",
    "noloco": "{name: noloco, inner_steps: 2}",
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_outer_methods_run_with_a_lossy_format_and_error_feedback(root, name):
    """Every outer method trains with e3m0 payloads and error feedback: finite parameters, bytes per sync
    from payload_bytes, residuals kept for every worker, and results that differ from fp32."""
    base = TINY + [f"algorithm={METHODS[name]}", "run.max_rounds=3", "run.eval_every_steps=null", "run.device=cpu"]
    lossy = Simulation(load_scenario(root / "scenarios/quickstart.yaml",
                                     base + ["algorithm.payload_dtype='e3m0:32'", "algorithm.error_feedback=true"]))
    exact = Simulation(load_scenario(root / "scenarios/quickstart.yaml", base))
    lossy.run()
    exact.run()
    a = lossy.algorithm.global_params(lossy.numerics, lossy.state)
    b = exact.algorithm.global_params(exact.numerics, exact.state)
    assert all(torch.isfinite(v).all() for v in a.values())
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert sorted(lossy.state.ef.residual) == list(range(len(lossy.workers)))
    per_sync = payload_bytes(lossy.wire_params, "e3m0:32")
    if name in ("diloco", "eager_diloco"):  # a sync carries the whole model once
        assert lossy.payload_bytes == per_sync
    else:  # streaming: a fragment a sync; noloco: pseudo-gradient and slow weights, 2x the model
        assert lossy.payload_bytes == _mean_sync(lossy)
        share = 2 if name == "noloco" else 1
        assert _per_worker_round(lossy) == pytest.approx(share * per_sync, rel=0.02)  # each part's last scale block
    assert lossy.payload_bytes < exact.payload_bytes / 6  # 4 bits + a scale per 32 vs 32 bits


def _mean_sync(sim) -> float:
    return sum(s.payload_bytes for s in sim.recorder.syncs) / len(sim.recorder.syncs)


def _per_worker_round(sim) -> float:
    """Payload bytes one worker's syncs of one round carried (every sync's, over the workers)."""
    syncs = sim.recorder.syncs
    return sum(s.payload_bytes * s.participants for s in syncs) / len(sim.workers) / len({s.round for s in syncs})


def test_ddp_grads_with_block_format_match_bytes(root):
    """ddp with int8 gradients trains (finite) and each all-reduce is charged payload_bytes of int8."""
    sim = Simulation(load_scenario(root / "scenarios/quickstart.yaml",
                                   TINY + ["algorithm={name: ddp, payload_dtype: int8}", "run.max_rounds=3",
                                           "run.eval_every_steps=null", "run.device=cpu"]))
    sim.run()
    assert all(torch.isfinite(v).all() for v in sim.replicas.params.values())
    assert sim.payload_bytes == _mean_sync(sim)  # the mean gradient bucket a sync
    assert _per_worker_round(sim) == pytest.approx(payload_bytes(sim.wire_params, "int8:128"), rel=0.02)
    assert math.isclose(_per_worker_round(sim) / sim.wire_params, 1 + 4 / 128, rel_tol=0.02)


@needs_triton
@pytest.mark.parametrize("name", ["diloco", "streaming_diloco"])
def test_a_run_with_triton_kernels_equals_the_torch_reference(root, name):
    """run.kernels: triton puts the Triton quantize/dequantize and fused outer-update kernels in the
    run path (here under the interpreter on CPU); the run ends where the torch reference's does."""
    base = TINY + [f"algorithm={METHODS[name]}", "algorithm.payload_dtype='int8:32'", "algorithm.error_feedback=true",
                   "run.max_rounds=3", "run.eval_every_steps=null", f"run.device={DEVICE}"]
    runs = {}
    for backend in ("torch", "triton"):
        sim = Simulation(load_scenario(root / "scenarios/quickstart.yaml", base + [f"run.kernels={backend}"]))
        sim.run()
        runs[backend] = sim
    ref, tri = runs["torch"], runs["triton"]
    assert tri.algorithm.kernels == "triton"
    a = ref.algorithm.global_params(ref.numerics, ref.state)
    b = tri.algorithm.global_params(tri.numerics, tri.state)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)


def test_triton_kernels_without_cuda_or_interpreter_are_refused_naming_the_field(root, monkeypatch):
    """run.kernels: triton on a CPU run without TRITON_INTERPRET is bad input (exit 2 in the CLI), not a crash."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is here: triton kernels can run")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    sc = load_scenario(root / "scenarios/quickstart.yaml", TINY + ["run.kernels=triton", "run.device=cpu"])
    with pytest.raises(ValueError, match=r"run\.kernels"):
        Simulation(sc)


# --------------------------------------------------------------------------- one scale per payload (X:tensor)
TENSOR_FORMATS = ["e3m0:tensor", "int8:tensor", "fp8:tensor"]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1001, 2 ** 20 + 1, 10 ** 9])
def test_e3m0_tensor_is_exactly_4_bits_a_value_plus_one_fp32_scale(n):
    """e3m0:tensor costs ceil(n/2) bytes of codes plus one 4-byte scale (nothing for n = 0): for even n,
    exactly 4 n + 32 bits; int8:tensor / fp8:tensor cost n + 4."""
    scale = 4 if n else 0
    assert payload_bytes(n, "e3m0:tensor") == math.ceil(n / 2) + scale
    assert payload_bytes(n, "int8:tensor") == payload_bytes(n, "fp8:tensor") == n + scale
    if n and n % 2 == 0:
        assert 8 * payload_bytes(n, "e3m0:tensor") == 4 * n + 32


@pytest.mark.parametrize("fmt", TENSOR_FORMATS)
@pytest.mark.parametrize("n", SIZES)
def test_tensor_scale_packed_sizes_equal_payload_bytes(fmt, n):
    """The packed tensors of a :tensor payload are its codes and ONE scale per payload row."""
    p = quantize(_x(3, n), fmt, backend="torch")
    assert p.scales.shape == (3, 1)
    assert p.payload_nbytes == payload_bytes(n, fmt)


@pytest.mark.parametrize("fmt", TENSOR_FORMATS)
@pytest.mark.parametrize("n", [1, 2, 7, 33, 130, 1000])
def test_tensor_scale_roundtrip_equals_the_block_format_with_block_the_payload_size(fmt, n):
    """X:tensor gives exactly the codes, scale and received values of X:B with B = n (rounded up to
    even: e3m0's block size must be even, and the padding is zeros that change no absmax)."""
    x = _x(3, n, seed=n)
    name = fmt.split(":")[0]
    block = n + n % 2 if name == "e3m0" else n
    one, blocked = quantize(x, fmt, "torch"), quantize(x, f"{name}:{block}", "torch")
    assert torch.equal(one.data, blocked.data) and torch.equal(one.scales, blocked.scales)
    torch.testing.assert_close(dequantize(one, "torch"), dequantize(blocked, "torch"), rtol=0, atol=0)
    torch.testing.assert_close(roundtrip(x, fmt, "torch"), roundtrip(x, f"{name}:{block}", "torch"), rtol=0, atol=0)


def test_tensor_scale_spans_the_whole_flattened_payload_not_each_tensor():
    """A tree sent as e3m0:tensor shares one scale across all its tensors (one payload, one absmax)."""
    tree = {"a": torch.randn(3, 5) * 100.0, "b": torch.randn(7) * 1e-3}
    got = wire_roundtrip(tree, "e3m0:tensor", backend="torch")
    flat = torch.cat([tree["a"].reshape(-1), tree["b"]])
    want = roundtrip(flat, f"e3m0:{flat.numel() + flat.numel() % 2}", "torch")
    torch.testing.assert_close(torch.cat([got["a"].reshape(-1), got["b"]]), want, rtol=0, atol=0)
    assert got["b"].abs().max() < tree["b"].abs().max()  # b's tiny values fall under the shared scale's levels


def test_tensor_format_strings_parse_canonicalize_and_refuse_typos(root):
    """'e3m0:tensor' is a payload_dtype (kept as written); 'e3m0:tensors' is refused naming the forms,
    and the runner charges ceil(n/2) + 4 bytes a payload."""
    assert str(parse_format("e3m0:tensor")) == "e3m0:tensor" and parse_format("e3m0:tensor").per_tensor
    with pytest.raises(ValueError, match="tensor"):
        parse_format("e3m0:tensors")
    sc = load_scenario(root / "scenarios/quickstart.yaml", ["algorithm.payload_dtype='e3m0:tensor'"])
    assert sc.algorithm.payload_dtype == "e3m0:tensor"
    from sim.scenario import load_variants

    sc = dict(load_variants(root / "scenarios/wan_1b.yaml", ["variants.diloco.algorithm.payload_dtype='e3m0:tensor'"]))
    sim = Simulation(sc["diloco"])
    assert sim.payload_bytes == -(-sim.wire_params // 2) + 4


@needs_triton
@pytest.mark.parametrize("fmt", TENSOR_FORMATS)
@pytest.mark.parametrize("n", [1, 7, 130, 301])
def test_triton_tensor_scale_equals_reference_bit_for_bit(fmt, n):
    """The Triton path of X:tensor (one scale per row, the row encoded in tiles) equals the reference."""
    x = _x(3, n, seed=n).to(DEVICE)
    ref, tri = quantize(x, fmt, "torch"), quantize(x, fmt, "triton")
    assert torch.equal(tri.data, ref.data) and torch.equal(tri.scales, ref.scales)
    torch.testing.assert_close(dequantize(ref, "triton"), dequantize(ref, "torch"), rtol=0, atol=0)
    p = quantize(_x(4, n, seed=n).reshape(2, 2, n).to(DEVICE), fmt, "torch")
    torch.testing.assert_close(dequantize_mean(p, "triton"), dequantize_mean(p, "torch"))
