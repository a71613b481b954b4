"""The runner only wires (issue 14): a finished run is frozen into a ``RunResult`` that the
tables, summary and dashboard read; the run's network is replayed once and a dashboard
redrawn from the files sees the same bandwidth the run saw; the runner's pieces name no
method; the reported payload per sync is what a sync really sends."""

from __future__ import annotations

import ast
import dataclasses
import json

import numpy as np
import pytest

from sim.engine.replay import network_rates
from sim.metrics.records import LossPoint
from sim.metrics.summary import summarize
from sim.metrics.tables import events_table, metrics_table
from sim.report.runs import load_run, run_graph
from sim.rundir import write_json
from sim.runner import Simulation
from sim.scenario import load_scenario
from sim.writer import run_to_dir
from tests.conftest import ROOT, TINY

QS = ROOT / "scenarios" / "quickstart.yaml"
FLAKY = ROOT / "scenarios" / "flaky_transatlantic.yaml"
CPU = ["run.device=cpu", "run.max_tokens=null", "run.eval_every_steps=null"]


def test_result_is_frozen_and_kept_apart_from_the_simulation():
    """``result()`` is a frozen copy: assigning a field fails, and records appended to the
    simulation afterwards do not reach a result already taken."""
    sim = Simulation(load_scenario(QS, TINY + CPU + ["run.max_rounds=2"]))
    sim.run()
    res = sim.result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.rounds = 7
    n_losses, n_transfers = len(res.records.losses), len(res.records.transfers)
    sim.recorder.losses.append(LossPoint("eval", -1, 99, 1e9, 0.0))
    sim.net.link_bytes[("x", "y")] = 1.0
    assert len(res.records.losses) == n_losses and len(res.records.transfers) == n_transfers
    assert ("x", "y") not in res.link_bytes
    assert res.rounds == 2 and res.n_workers == len(sim.workers) and res.tokens == sim.tokens


def test_summary_json_is_summarize_of_the_frozen_result(tmp_path):
    """The summary a run directory holds is ``summarize`` of the run's frozen result (the
    writer's one network replay changes nothing in it)."""
    sim = Simulation(load_scenario(QS, TINY + CPU + ["run.max_rounds=2"]))
    manifest = run_to_dir(sim, tmp_path / "r")
    res = sim.result()
    events = events_table(res.records)
    again = summarize(res, events, metrics_table(res), manifest)  # replays on its own
    write_json(tmp_path / "again.json", again)
    written = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert json.loads((tmp_path / "again.json").read_text()) == written
    assert written["rounds"] == 2 and written["status"] == "completed"


def test_a_redrawn_dashboard_replays_the_bandwidth_the_run_saw(tmp_path):
    """With a degradation window and random outages on the WAN link, the graph rebuilt from a
    run directory's files replays the transfers to exactly the rates the run's own graph gives
    (the manifest's topology alone would not: it lacks the window and the outages), and the
    summary's peak is the peak of those rates."""
    sc = load_scenario(FLAKY, ["run.max_sim_time_s=500"])
    sim = Simulation(sc)
    run_to_dir(sim, tmp_path / "r")
    run = load_run(tmp_path / "r")
    assert (run.events["tag"] == "link_outage").any() and (run.events["tag"] == "link_degraded").any()
    live = network_rates(sim.result().graph, run.events)
    redrawn = network_rates(run_graph(run), run.events)
    assert live["error"] is None and redrawn["error"] is None
    assert live["links"].keys() == redrawn["links"].keys() and live["links"]
    for link, (t, r) in live["links"].items():
        np.testing.assert_array_equal(redrawn["links"][link][0], t)
        np.testing.assert_array_equal(redrawn["links"][link][1], r)
    peak = max(float(r.max()) for _, r in live["links"].values()) * 8 / 1e9
    assert run.summary["peak_wan_gbps"] == pytest.approx(peak, rel=1e-12)
    from sim.report.runs import topology_graph

    plain = network_rates(topology_graph(run.scenario["topology"]), run.events)
    assert any(not np.array_equal(plain["links"][l][1], r) for l, (_, r) in live["links"].items())


@pytest.mark.parametrize("algorithm", [
    "{name: diloco, inner_steps: 2, sync_grain: step}",
    "{name: fedavg, inner_steps: 2}",
    "{name: sparta, fraction: 0.1, interval: 2}",
    "{name: sparta, fraction: 0.1, interval: 2, sync_grain: step, payload_dtype: int8}",
    "{name: demo, topk: 2, chunk: 16}",
])
def test_payload_per_sync_is_what_each_sync_sends(algorithm):
    """summary's ``payload_bytes_per_sync`` equals the bytes every recorded sync carried per
    worker: the whole model for dense methods, the sparse values (SPARTA) or the top-k values
    and indices (DeMo) for sparse ones, not the whole model."""
    sim = Simulation(load_scenario(QS, TINY + CPU + [f"algorithm={algorithm}", "run.max_rounds=2"]))
    sim.run()
    sent = {s.payload_bytes for s in sim.recorder.syncs}
    assert sent == {sim.result().payload_bytes}
    if "sparta" in algorithm or "demo" in algorithm:  # a tenth of the values; DeMo: an eighth plus indices
        from kernels.formats import payload_bytes

        assert sim.result().payload_bytes < 0.5 * payload_bytes(sim.wire_params, "fp32")


@pytest.mark.parametrize("algorithm,share", [
    ("{name: ddp, overlap: true}", 1.0),
    ("{name: ddp, overlap: true, sync_grain: layer}", 1.0),
    ("{name: streaming_diloco, inner_steps: 4}", 1.0),
    ("{name: streaming_diloco, inner_steps: 4, sync_grain: step}", 1.0),
    ("{name: noloco, inner_steps: 2, group_size: 2}", 2.0),
    ("{name: noloco, inner_steps: 2, group_size: 2, sync_grain: step}", 2.0),
])
def test_payload_per_sync_is_the_mean_sync_where_syncs_differ(algorithm, share):
    """Where a round's syncs are not one whole model (DDP's gradient buckets and streaming's
    fragments split it; NoLoCo's gossip carries pseudo-gradient and slow weights, twice it),
    ``payload_bytes_per_sync`` is the mean of what the recorded syncs carried per worker, and a
    round's syncs of one worker together carry ``share`` x the model (fp32: bytes are linear)."""
    from kernels.formats import payload_bytes

    sim = Simulation(load_scenario(QS, TINY + CPU + [f"algorithm={algorithm}", "run.max_rounds=2"]))
    sim.run()
    syncs = sim.recorder.syncs
    per = sim.result().payload_bytes
    assert per == pytest.approx(sum(s.payload_bytes for s in syncs) / len(syncs), rel=1e-12)
    n, rounds = sim.sc.topology.n_workers, len({s.round for s in syncs})
    per_worker_round = sum(s.payload_bytes * s.participants for s in syncs) / n / rounds
    assert per_worker_round == pytest.approx(share * payload_bytes(sim.wire_params, "fp32"), rel=1e-12)


RUNNER_PIECES = ["sim/runner.py", "sim/build.py", "sim/adapter.py", "sim/rounds.py", "sim/writer.py", "sim/result.py"]


def _code_words(path) -> set[str]:
    """Identifiers, attribute names and string constants of a module's code (docstrings and
    comments left out: they may name a method as an example)."""
    tree = ast.parse((ROOT / path).read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    words: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            words.add(n.id)
        elif isinstance(n, ast.Attribute):
            words.add(n.attr)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            words.add(n.value)
    return {w.lower() for w in words}


@pytest.mark.parametrize("path", RUNNER_PIECES)
def test_the_runner_pieces_name_no_method_and_probe_nothing(path):
    """No piece of the runner names a method (built-in or packaged) in its code, and none
    probes for hooks with ``hasattr``: everything it asks a method goes through the protocol."""
    from sim.algorithms import METHODS

    names = {n.lower() for n in METHODS} | {ref.partition(":")[2].lower() for ref in METHODS.values()}
    words = _code_words(path)
    assert not names & words, f"{path} names {sorted(names & words)}"
    assert "hasattr" not in words
