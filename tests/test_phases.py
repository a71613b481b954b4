"""summary.json's phases: warm-up and the method's own phase, each with the whole run's fields."""

import json

import pandas as pd
import pytest

from sim.runner import Simulation
from sim.scenario import load_scenario
from sim.writer import run_to_dir
from tests.conftest import TINY

N, H, WARM, ROUNDS = 4, 4, 3, 3
FP32 = 4  # bytes per parameter on the wire (payload_dtype defaults to fp32)

# What one round moves per worker, from the collectives' definitions (sim/engine/collectives.py):
# a pipelined ring all-reduce of S bytes sends 2(N-1)/N * S from each member; streaming's
# fragments add up to the whole model; a NoLoCo pair exchange sends the worker's
# pseudo-gradient and its slow weights (2 * S) to its partner.
RING = 2 * (N - 1) / N
METHODS = {
    "ddp": ("{name: ddp}", RING),
    "diloco": (f"{{name: diloco, inner_steps: {H}, warm_start_steps: {WARM}}}", RING),
    "streaming_diloco": (f"{{name: streaming_diloco, inner_steps: {H}, fragment_layers: 1, overlap_steps: 1, "
                         f"warm_start_steps: {WARM}}}", RING),
    "eager_diloco": (f"{{name: eager_diloco, inner_steps: {H}, warm_start_steps: {WARM}}}", RING),
    "noloco": (f"{{name: noloco, inner_steps: {H}, warm_start_steps: {WARM}}}", 2.0),
}


def _run(root, tmp_path, algo):
    sc = load_scenario(root / "scenarios/quickstart.yaml",
                       TINY + [f"algorithm={algo}", f"run.max_rounds={ROUNDS}", "run.max_tokens=null"])
    d = tmp_path / "run"
    run_to_dir(Simulation(sc), d)
    return json.loads((d / "summary.json").read_text()), pd.read_parquet(d / "events.parquet")


@pytest.mark.parametrize("method", list(METHODS))
def test_method_phase_bytes_per_round_is_one_rounds_collectives(root, tmp_path, method):
    """The method phase's bytes_per_worker_per_round is what one round's collectives move per
    worker (ring all-reduce 2(N-1)/N * S, NoLoCo's pair exchange 2 * S), warm-up's bytes left
    out; warm-up's is one ddp all-reduce per step; the top-level field is the method phase's."""
    algo, factor = METHODS[method]
    s, events = _run(root, tmp_path, algo)
    assert s["workers"] == N and s["rounds"] == ROUNDS
    phase = s["phases"]["method"]
    model_bytes = s["n_params"] * FP32
    assert phase["rounds"] == ROUNDS
    assert phase["bytes_per_worker_per_round"] == pytest.approx(factor * model_bytes)
    assert s["bytes_per_worker_per_round"] == phase["bytes_per_worker_per_round"]
    if method == "ddp":
        assert set(s["phases"]) == {"method"}
        return
    warm = s["phases"]["warm_up"]
    assert warm["rounds"] == WARM
    assert warm["bytes_per_worker_per_round"] == pytest.approx(RING * model_bytes)
    assert warm["tokens"] + phase["tokens"] == s["tokens"]
    assert warm["end_s"] == phase["start_s"] and phase["end_s"] == s["sim_duration_s"]


def test_phases_partition_the_run(root, tmp_path):
    """Phases partition the run: their bytes and WAN bytes add up to the run's, their
    durations to its duration, each phase's state shares sum to 1, and worker-seconds of
    compute in both phases add up to the run's utilization."""
    s, events = _run(root, tmp_path, METHODS["diloco"][0])
    warm, method = s["phases"]["warm_up"], s["phases"]["method"]
    assert warm["bytes_total"] + method["bytes_total"] == pytest.approx(s["bytes_total"])
    assert warm["wan_bytes"] + method["wan_bytes"] == pytest.approx(s["wan_bytes"])
    assert warm["sim_duration_s"] + method["sim_duration_s"] == pytest.approx(s["sim_duration_s"])
    for ph in (warm, method):
        assert sum(ph["state_fractions"].values()) == pytest.approx(1.0)
        assert ph["utilization"] == ph["state_fractions"]["compute"]
    whole = (warm["utilization"] * warm["sim_duration_s"] + method["utilization"] * method["sim_duration_s"])
    assert whole / s["sim_duration_s"] == pytest.approx(s["utilization"])
    # no transfer of the method starts before warm-up's last all-reduce has completed
    tr = events[events.kind == "transfer"]
    assert (tr["start_s"] < warm["end_s"]).sum() > 0 and warm["end_s"] > 0
