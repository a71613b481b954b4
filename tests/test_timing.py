"""Timing fidelity: per-layer DDP overlap, the timing proxy, timing-only runs, bandwidth search."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from sim.bandwidth import search, steady_cu, timing_only
from sim.hardware import GPU_PEAK_FLOPS
from sim.metrics.tables import events_table
from sim.runner import Simulation
from sim.scenario import load_scenario
from tests.conftest import TINY

QS = "scenarios/quickstart.yaml"
T = 0.3  # step time, s
# two workers, one per region; only the WAN link costs anything
PAIR = ["topology.regions.0.nodes=1", "topology.regions.1.nodes=1", "topology.intra_region.bandwidth_gbps=.inf",
        "topology.intra_region.latency_s=0", "topology.links.0.latency_s=0",
        f"compute.step_time={{mode: fixed, step_time_s: {T}}}"]


def _timing(root, *overrides):
    return load_scenario(root / QS, PAIR + ["numerics=false", "run.max_tokens=null", "run.max_sim_time_s=null"]
                         + list(overrides))


def _blocked(sim) -> float:
    return sum(s.end_s - s.start_s for s in sim.recorder.states if s.state != "compute")


def test_ddp_with_infinite_bandwidth_takes_exactly_the_compute_time(root):
    """With an infinitely fast network a ddp step takes exactly its compute time (CU = 1)."""
    sc = _timing(root, "algorithm={name: ddp}", "timing={params: 1.0e6, layers: 4}", "run.max_rounds=5",
                 "topology.links.0.bandwidth_gbps=.inf")
    sim = Simulation(sc)
    sim.run()
    assert sim.env.now == pytest.approx(5 * T, rel=1e-12)
    assert _blocked(sim) == 0.0


@pytest.mark.parametrize("bucket_s", [0.05, 0.4])
def test_ddp_stall_is_what_the_per_layer_schedule_predicts(root, bucket_s):
    """Hand-computed case: 2 layers, 2 workers on one full-duplex link of bandwidth B.
    Layer 1's bucket (S/2) leaves at 2T/3 (forward T/3, then half the backward), layer 0's
    at T. If one bucket takes b = (S/2)/B < T/3 the stall per step is b; otherwise both
    share the link after T and the last byte leaves at 2T/3 + 2b: stall 2b - T/3."""
    params = 1.0e6
    gbps = (params / 2) * 4 * 8 / 1e9 / bucket_s  # fp32 bucket of params/2 takes bucket_s
    sc = _timing(root, "algorithm={name: ddp}", f"timing={{params: {params}, layers: 2}}", "run.max_rounds=3",
                 f"topology.links.0.bandwidth_gbps={gbps}")
    sim = Simulation(sc)
    sim.run()
    stall = bucket_s if bucket_s < T / 3 else 2 * bucket_s - T / 3
    assert sim.env.now == pytest.approx(3 * (T + stall), rel=1e-9)
    assert _blocked(sim) == pytest.approx(2 * 3 * stall, rel=1e-9)


def test_ddp_without_overlap_pays_the_whole_allreduce_after_the_step(root):
    """ddp with overlap off all-reduces the whole gradient after the step: stall S/B per step."""
    params = 1.0e6
    gbps = params * 4 * 8 / 1e9 / 0.2  # the whole fp32 gradient takes 0.2 s
    sc = _timing(root, "algorithm={name: ddp, overlap: false}", f"timing={{params: {params}, layers: 2}}",
                 "run.max_rounds=3", f"topology.links.0.bandwidth_gbps={gbps}")
    sim = Simulation(sc)
    sim.run()
    assert sim.env.now == pytest.approx(3 * (T + 0.2), rel=1e-9)


def test_timing_only_run_never_imports_torch(root):
    """A timing-only run (numerics off) completes without importing torch."""
    code = ("import sys; from sim.scenario import load_scenario; from sim.runner import Simulation; "
            f"sc = load_scenario({str(root / QS)!r}, ['numerics=false', 'timing={{params: 1.0e11, layers: 108, "
            "step_time_s: 4.9}', 'run.max_rounds=3', 'algorithm={name: streaming_diloco, inner_steps: 20}']); "
            "s = Simulation(sc); s.run(); print(s.rounds, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "False"]


@pytest.mark.parametrize("algo", ["{name: ddp}", "{name: diloco, inner_steps: 4}",
                                  "{name: streaming_diloco, inner_steps: 6, fragment_layers: 1, embeddings_fragment: false}",
                                  "{name: eager_diloco, inner_steps: 4}", "{name: noloco, inner_steps: 4}"])
def test_numerics_on_and_off_give_the_same_timeline(root, algo):
    """The same engine decides time with and without numerics: a proxy-timed run's events
    (states, transfers, syncs) are identical whether or not the tiny model is trained."""
    args = TINY + [f"algorithm={algo}", "timing={params: 1.0e8, layers: 1, step_time_s: 0.2}", "run.max_rounds=3",
                   "run.max_tokens=null"]
    on = Simulation(load_scenario(root / QS, args))
    off = Simulation(load_scenario(root / QS, args + ["numerics=false"]))
    on.run()
    off.run()
    a, b = events_table(on.recorder), events_table(off.recorder)
    assert len(a) > 0
    assert a.equals(b)


def test_proxy_sets_payload_and_flops_step_time(root):
    """With a timing proxy, payloads are the proxy's size and a flops step time is
    6 x proxy params x tokens per step / (peak x MFU x GPUs), while the tiny model trains."""
    sc = load_scenario(root / QS, TINY + ["timing={params: 1.0e9, layers: 24, tokens_per_step: 1000000}",
                                          "compute.step_time={mode: flops, gpu: H100, mfu: 0.4, gpus_per_node: 8}",
                                          "run.max_rounds=1", "algorithm.inner_steps=2"])
    sim = Simulation(sc)
    assert sim.payload_bytes == pytest.approx(4.0e9, rel=1e-3)
    assert sim.n_params < 1e6  # the trained model is still tiny
    expected = 6 * 1.0e9 * 1_000_000 / (GPU_PEAK_FLOPS["H100"] * 0.4 * 8)
    assert sim.step_time_s == [pytest.approx(expected, rel=1e-12)] * 4


def _diloco_cu(h: int, step_s: float, payload_bits: float, gbps: float) -> float:
    """Blocking DiLoCo between two workers: each round is H steps then S / B on the wire."""
    return h * step_s / (h * step_s + payload_bits / (gbps * 1e9))


def test_bandwidth_search_matches_the_alpha_beta_answer(root):
    """For 2-worker DiLoCo at step grain (ring of 2 moves S each way, no latency, sent after
    the step) the searched bandwidth for each CU target is the smallest grid point where
    H T / (H T + S/B) reaches it."""
    params, h = 1.0e8, 10
    sc = _timing(root, f"algorithm={{name: diloco, inner_steps: {h}, payload_dtype: bf16, sync_grain: step}}",
                 f"timing={{params: {params}, layers: 4}}", "run.max_rounds=4")
    targets = [0.5, 0.9, 0.99]
    res = search(sc, targets, grid_min=0.1, grid_max=1000, grid_points=50, rounds=8)
    grid = [float(x) for x in __import__("numpy").logspace(-1, 3, 50)]
    for t in targets:
        expected = next(g for g in grid if _diloco_cu(h, T, params * 16, g) >= t - 1e-12)
        assert res.targets[t] == pytest.approx(expected, rel=1e-12), t
    for b, cu in res.evaluations.items():
        assert cu == pytest.approx(_diloco_cu(h, T, params * 16, b), rel=1e-9)


def test_bandwidth_search_at_layer_grain_matches_the_work_conserving_link(root):
    """2-worker DiLoCo at layer grain (the default): the L parts of S/L leave d = 2T/(3L)
    apart during the sync step's backward, layer 0's last, and the link works on them
    without idling, so layer 0's part -- needed first -- is in b + max(0, (L-1)(b - d)) after
    the step ends (b = S/(L B)); CU = H T / (H T + that) at every grid point searched."""
    params, h, layers = 1.0e8, 10, 4
    sc = _timing(root, f"algorithm={{name: diloco, inner_steps: {h}, payload_dtype: bf16}}",
                 f"timing={{params: {params}, layers: {layers}}}", "run.max_rounds=4")

    def cu(gbps: float) -> float:
        b, d = params * 16 / layers / (gbps * 1e9), 2 * T / (3 * layers)
        return h * T / (h * T + b + max(0.0, (layers - 1) * (b - d)))

    targets = [0.5, 0.9, 0.99]
    res = search(sc, targets, grid_min=0.1, grid_max=1000, grid_points=50, rounds=8)
    grid = [float(x) for x in __import__("numpy").logspace(-1, 3, 50)]
    for t in targets:
        assert res.targets[t] == pytest.approx(next(g for g in grid if cu(g) >= t - 1e-12), rel=1e-12), t
    for gbps, got in res.evaluations.items():
        assert got == pytest.approx(cu(gbps), rel=1e-9)
    assert res.targets[0.99] < 0.5 * next(g for g in grid if _diloco_cu(h, T, params * 16, g) >= 0.99)


def test_steady_cu_of_overlapped_method_ignores_the_first_rounds(root):
    """Eager DiLoCo hides a sync shorter than a round: steady-state CU is 1 although its first
    round already sends."""
    sc = timing_only(_timing(root, "algorithm={name: eager_diloco, inner_steps: 10}",
                             "timing={params: 1.0e8, layers: 4}", "topology.links.0.bandwidth_gbps=2"), 8)
    assert 1.0e8 * 32 / 2e9 < 10 * T  # the all-reduce (1.6 s) is shorter than a round (3 s)
    assert steady_cu(sc) == pytest.approx(1.0)


def test_bandwidth_command_prints_json_and_table(root):
    """`locosim bandwidth --json` prints a table on stderr and JSON with one bandwidth per target on stdout."""
    cmd = [sys.executable, "-m", "sim.cli", "bandwidth", str(root / QS), "--cu", "0.5,0.9", "--grid-points", "12",
           "--rounds", "4", "--set", "timing={params: 1.0e9, layers: 24, step_time_s: 0.1}", "--json"]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data["bandwidth_gbps_for_cu"]) == {"0.5", "0.9"}
    low, high = data["bandwidth_gbps_for_cu"]["0.5"], data["bandwidth_gbps_for_cu"]["0.9"]
    assert low is not None and (high is None or low <= high)  # None: not reached on the grid
    assert "CU 0.5" in out.stderr and "diloco" in out.stderr


def test_bandwidth_command_rejects_bad_targets(root):
    """A CU target outside (0, 1] is one line, exit 2."""
    out = subprocess.run([sys.executable, "-m", "sim.cli", "bandwidth", str(root / QS), "--cu", "0.5,1.5"],
                         cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "--cu" in out.stderr


def test_timing_only_requires_a_proxy(root):
    """numerics: false without a timing proxy is refused, naming the timing field."""
    from sim.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"^timing: required"):
        load_scenario(root / QS, ["numerics=false"])


def test_math_of_the_hand_computed_case_is_consistent():
    """The stall formula's two regimes meet at b = T/3 (sanity of the test's own algebra)."""
    b = T / 3
    assert math.isclose(b, 2 * b - T / 3)
