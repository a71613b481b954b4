"""Stragglers, failures, churn and flaky links (issue 4): invariants under random faults,
the barrier effect, dropped contributions, recovery and the faults schema."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sim.engine.faults import SlowPeriods, Speed, fetch_bytes
from sim.metrics.tables import events_table
from sim.runner import Simulation
from sim.scenario import load_scenario, parse_scenario
from sim.writer import run_to_dir
from tests.conftest import TINY

QS = "scenarios/quickstart.yaml"
ALGOS = ["{name: ddp}", "{name: diloco, inner_steps: 3}", "{name: streaming_diloco, inner_steps: 4}",
         "{name: diloco_delayed, inner_steps: 3}", "{name: eager_diloco, inner_steps: 3}",
         "{name: noloco, inner_steps: 3}", "{name: noloco, inner_steps: 3, dead_partner: repair}"]


def _scenario(algo: str, regions: list[int], faults: dict, timeout: float | None = None, numerics: bool = False,
              seed: int = 0, sim_time_s: float = 6.0, bandwidth_gbps: float = 1.0):
    name = algo.split("name: ")[1].split(",")[0].rstrip("}")
    alg = {"name": name}
    for part in algo.strip("{}").split(", ")[1:]:
        k, v = part.split(": ")
        alg[k] = int(v) if v.isdigit() else v
    if timeout is not None:
        alg["sync_timeout_s"] = timeout
    data = {
        "seed": seed, "numerics": numerics, "timing": {"params": 2.0e6, "layers": 2, "step_time_s": 0.1},
        "topology": {"regions": [{"name": r, "nodes": n} for r, n in zip(["us", "eu", "ap"], regions)],
                     "links": [{"a": "us", "b": r, "bandwidth_gbps": bandwidth_gbps, "latency_s": 0.03}
                               for r in ["eu", "ap"][:len(regions) - 1]]},
        "algorithm": alg, "faults": faults,
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16},
        "compute": {"batch_size": 4}, "run": {"max_sim_time_s": sim_time_s, "eval_batches": 1,
                                              "eval_batch_size": 8, "device": "cpu", "eval_every_s": 2.0},
    }
    if sim_time_s is None:
        data["run"] = {"max_rounds": 1000, "device": "cpu"}
    if name in ("async_local_sgd", "halos", "fedbuff"):  # methods without a barrier: a server in us
        data["topology"]["servers"] = [{"name": "ps", "region": "us"}]
    return parse_scenario(data)


def _down_windows(sim) -> dict[int, list[tuple[float, float]]]:
    out: dict[int, list] = {}
    for f in sim.recorder.faults:
        if f.kind in ("failure", "churn"):
            out.setdefault(f.worker, []).append((f.start_s, f.end_s))
    return out


def check_no_bytes_while_down(sim) -> None:
    """No transfer of the run overlaps a down window of its source or destination (a flow
    called off at a failure ends at its instant; issue 28)."""
    windows = _down_windows(sim)
    index = {n: i for i, n in enumerate(sim.nodes)}
    for t in sim.recorder.transfers:
        for node in (t.src, t.dst):
            for a, b in windows.get(index.get(node, -1), ()):
                assert not (t.start_s < b and t.end_s > a), (t, node, (a, b))


def check_invariants(sim) -> None:
    """The issue's invariants for one finished run."""
    now = sim.env.now
    assert now > 0
    per_worker: dict[int, float] = {}
    for s in sim.recorder.states:
        assert s.end_s >= s.start_s >= 0, s
        per_worker[s.worker] = per_worker.get(s.worker, 0.0) + (s.end_s - s.start_s)
    for w in range(sim.n_workers):  # compute + comm_blocked + straggler_wait + down = duration
        assert per_worker.get(w, 0.0) == pytest.approx(now, rel=1e-9, abs=1e-9), w
    for t in sim.recorder.transfers:
        assert t.end_s >= t.start_s and t.payload_bytes >= 0
    for x in sim.recorder.syncs:
        assert x.end_s >= x.start_s >= x.first_arrival_s
    for f in sim.recorder.faults:
        assert f.end_s >= f.start_s, f
    assert sum(sim.net.sent_bytes.values()) == pytest.approx(sum(sim.net.received_bytes.values()), rel=1e-12)
    compute = sum(s.end_s - s.start_s for s in sim.recorder.states if s.state == "compute")
    assert 0.0 <= compute / (now * sim.n_workers) <= 1.0 + 1e-12
    # no worker computes while down: compute spans never overlap its down windows, and the
    # tracker's down spans are exactly those windows
    windows = _down_windows(sim)
    for s in sim.recorder.states:
        if s.state == "compute":
            for a, b in windows.get(s.worker, ()):
                assert s.end_s <= a + 1e-12 or s.start_s >= b - 1e-12, (s, a, b)
    for w, wins in windows.items():
        down = sum(s.end_s - s.start_s for s in sim.recorder.states if s.worker == w and s.state == "down")
        assert down == pytest.approx(sum(b - a for a, b in wins), abs=1e-9)
    check_no_bytes_while_down(sim)


# ---------------------------------------------------------------------------- random scenarios
factor = st.one_of(
    st.builds(lambda s: {"kind": "lognormal", "sigma": s}, st.floats(0.0, 1.0)),
    st.builds(lambda a: {"kind": "pareto", "alpha": a}, st.floats(1.5, 5.0)),
)
straggler = st.builds(
    lambda f, slow, scope: {"factor": f, "scope": scope,
                            **({"slow_periods": {"mean_off_s": 1.0, "mean_on_s": 0.5, "factor": slow}} if slow else {})},
    factor, st.one_of(st.none(), st.floats(1.5, 4.0)), st.sampled_from(["node", "region"]))


@st.composite
def faulty(draw):
    regions = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    nodes = [f"{r}/{i}" for r, n in zip(["us", "eu", "ap"], regions) for i in range(n)]
    faults: dict = {}
    if draw(st.booleans()):
        faults["stragglers"] = draw(st.lists(straggler, min_size=1, max_size=2))
    if draw(st.booleans()):
        faults["failures"] = {"mtbf_s": draw(st.floats(0.5, 5.0)), "mttr_s": draw(st.floats(0.05, 1.0))}
    if draw(st.booleans()):
        faults.setdefault("failures", {})["schedule"] = [
            {"node": draw(st.sampled_from(nodes)), "start_s": draw(st.floats(0.0, 3.0)),
             "end_s": draw(st.one_of(st.none(), st.floats(3.1, 5.0)))}]
    if draw(st.booleans()):
        faults["churn"] = [{"node": draw(st.sampled_from(nodes)), "join_s": draw(st.floats(0.0, 3.0)),
                            "leave_s": draw(st.one_of(st.none(), st.floats(0.5, 5.0)))}]
        if faults["churn"][0]["join_s"] == faults["churn"][0]["leave_s"]:
            faults["churn"][0]["leave_s"] = None
    if len(regions) > 1 and draw(st.booleans()):
        faults["links"] = [{"a": "us", "b": "eu", "mtbf_s": draw(st.floats(0.3, 3.0)), "mttr_s": draw(st.floats(0.05, 0.5)),
                            "degrade": [{"start_s": 1.0, "end_s": 2.0, "factor": draw(st.floats(0.0, 1.0))}]}]
    if draw(st.booleans()):
        faults["node_step_time_multiplier"] = {draw(st.sampled_from(nodes)): draw(st.floats(1.0, 3.0))}
    timeout = draw(st.one_of(st.none(), st.floats(0.05, 1.0)))
    return draw(st.sampled_from(ALGOS)), regions, faults, timeout, draw(st.integers(0, 2 ** 16))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(faulty())
@example(("{name: ddp}", [1, 2], {"stragglers": [{"factor": {"kind": "lognormal", "sigma": 1.0}, "scope": "region"}],
                                  "failures": {"mtbf_s": 0.5, "mttr_s": 0.05078125}}, None, 2))  # fails mid-step, after a bucket left
def test_random_faulty_timing_runs_keep_the_invariants(case):
    """Random small timing-only scenarios with stragglers, failures, churn, flaky links and
    sync timeouts never crash, and keep: per node compute + comm_blocked + straggler_wait +
    down = duration; bytes sent = bytes received; no negative durations; utilization in
    [0, 1]; no worker computes while down."""
    algo, regions, faults, timeout, seed = case
    sim = Simulation(_scenario(algo, regions, faults, timeout, seed=seed))
    sim.run()
    assert sim.env.now == pytest.approx(6.0) or sim.ended_early
    check_invariants(sim)


NUMERIC_FAULTS = {"stragglers": [{"factor": {"kind": "lognormal", "sigma": 0.5}}],
                  "failures": {"mtbf_s": 1.5, "mttr_s": 0.3, "schedule": [{"node": "us/1", "start_s": 0.4, "end_s": 1.2}]},
                  "churn": [{"node": "eu/1", "join_s": 0.7}],
                  "links": [{"a": "us", "b": "eu", "mtbf_s": 1.0, "mttr_s": 0.2}]}


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("timeout", [None, 0.15])
def test_faulty_runs_with_numerics_complete_with_finite_params(algo, timeout):
    """With numerics on, every method under failures, churn, stragglers and link outages
    completes, keeps the invariants, ends with finite global parameters, and leaves no op
    waiting for a result that can no longer come (beyond the collectives still in flight)."""
    import torch

    sim = Simulation(_scenario(algo, [2, 2], NUMERIC_FAULTS, timeout, numerics=True, sim_time_s=4.0))
    sim.run()
    check_invariants(sim)
    assert sim.recorder.recoveries and any(r.payload_bytes == fetch_bytes(sim.wire_params) for r in sim.recorder.recoveries)
    params = sim.algorithm.global_params(sim.numerics, sim.state)
    assert all(torch.isfinite(v).all() for v in params.values())
    assert sim.numerics.waiting_ops() <= 4 * sim.n_workers
    if hasattr(sim.state, "reductions"):
        assert len(sim.state.reductions) <= 8


def test_faulty_run_directory_is_completed_and_records_faults(tmp_path):
    """A run with faults writes a completed directory whose events hold fault, dropped and
    recovery rows, and whose summary counts them (recovery bytes = fetches x model bytes)."""
    sim = Simulation(_scenario("{name: diloco, inner_steps: 3}", [2, 2], NUMERIC_FAULTS, 0.15, numerics=True,
                               sim_time_s=4.0))
    m = run_to_dir(sim, tmp_path / "r")
    assert m["status"] == "completed"
    ev = pd.read_parquet(tmp_path / "r" / "events.parquet")
    assert {"fault", "dropped", "recovery"} <= set(ev["kind"])
    import json

    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    f = summary["faults"]
    assert f["recoveries"] == len(sim.recorder.recoveries) > 0
    assert f["recovery_bytes"] == pytest.approx(sum(r.payload_bytes for r in sim.recorder.recoveries))
    assert sum(f["dropped_contributions"].values()) == len(ev[ev.kind == "dropped"])
    rec_transfers = ev[(ev.kind == "transfer") & ev["tag"].str.startswith("recovery:")]
    assert rec_transfers["payload_bytes"].sum() == pytest.approx(f["recovery_bytes"])


def test_same_seed_same_faults_identical_events():
    """Same scenario and seed give identical events (faults included); another seed differs."""
    a = Simulation(_scenario(ALGOS[5], [2, 2], NUMERIC_FAULTS, numerics=False, seed=3))
    b = Simulation(_scenario(ALGOS[5], [2, 2], NUMERIC_FAULTS, numerics=False, seed=3))
    c = Simulation(_scenario(ALGOS[5], [2, 2], NUMERIC_FAULTS, numerics=False, seed=4))
    for s in (a, b, c):
        s.run()
    pd.testing.assert_frame_equal(events_table(a.recorder), events_table(b.recorder))
    assert not events_table(a.recorder).equals(events_table(c.recorder))


# ---------------------------------------------------------------------------- the barrier effect
def _barrier_case(n: int, algo: str, rounds: int = 30, h: int = 10) -> float:
    sc = parse_scenario({
        "seed": 0, "numerics": False, "timing": {"params": 1.0e6, "layers": 1, "step_time_s": 1.0},
        "topology": {"regions": [{"name": "dc", "nodes": n}],
                     "intra_region": {"bandwidth_gbps": float("inf"), "latency_s": 0.0}},
        "algorithm": {"name": algo, "inner_steps": h},
        "faults": {"stragglers": [{"factor": {"kind": "lognormal", "mu": 1.0, "sigma": math.sqrt(0.5)}}]},
        "run": {"max_rounds": rounds}})
    sim = Simulation(sc)
    sim.run()
    return sim.env.now


def test_barrier_effect_grows_with_worker_count():
    """NoLoCo section 5.3 / Fig. 5B setup: inner-step times ~ LogNormal(mu 1, sigma^2 0.5),
    communication free. A barrier method (DiLoCo: every round waits for the slowest of all
    workers) takes longer than the no-barrier one (NoLoCo: a worker waits for its partner
    only) to finish the same rounds, and the ratio grows with the worker count (4, 16, 64)."""
    ratios = [_barrier_case(n, "diloco") / _barrier_case(n, "noloco") for n in (4, 16, 64)]
    assert all(r > 1.0 for r in ratios), ratios
    assert ratios[0] < ratios[1] < ratios[2], ratios
    assert ratios[2] > 1.2, ratios


# ---------------------------------------------------------------------------- timeouts and drops
def test_sync_timeout_drops_the_straggler_and_reweights(root):
    """With one worker 3x slower and a short sync timeout, DiLoCo rounds go on without it:
    its contributions are recorded as dropped (late), the others never wait longer than the
    timeout, and the average is over those present only."""
    sc = load_scenario(root / QS, TINY + ["run.device=cpu", "algorithm.inner_steps=3", "algorithm.sync_timeout_s=0.05",
                                          "run.max_rounds=4", "faults={node_step_time_multiplier: {eu/1: 3.0}}",
                                          "topology.links.0.bandwidth_gbps=.inf", "topology.links.0.latency_s=0",
                                          "topology.intra_region.bandwidth_gbps=.inf", "topology.intra_region.latency_s=0"])
    sim = Simulation(sc)
    sim.run()
    late = [d for d in sim.recorder.dropped if d.reason == "late"]
    assert late and {d.worker for d in late} == {3}
    waits = [s.end_s - s.start_s for s in sim.recorder.states if s.worker != 3 and s.state == "straggler_wait"]
    assert max(waits) <= 0.05 + 1e-9
    assert all(s.participants == 3 for s in sim.recorder.syncs)
    assert sim.env.now == pytest.approx(4 * 3 * 0.05 + 4 * 0.05, rel=1e-9)


def test_reduction_mean_is_over_participants_only():
    """A reduction completed over a subset averages exactly the present members' contributions
    (re-weighted, not zero-filled), ignores a late member's, and frees itself when the
    members that are not excused have released it."""
    import torch

    from sim.algorithms.transforms import Reduction

    red = Reduction((0, 1, 2))
    red.add(0, {"w": torch.tensor([1.0])})
    red.add(2, {"w": torch.tensor([5.0])})
    red.finish((0, 2))
    assert red.ready()
    red.add(1, {"w": torch.tensor([100.0])})  # late: ignored
    assert red.mean()["w"].item() == pytest.approx(3.0)
    red.excused.add(1)
    assert not red.release(0)
    assert red.release(2)


def test_ddp_step_averages_the_present_gradients():
    """ddp's gradient transform over contributors averages their rows only and gives every
    replica that mean."""
    import torch

    from sim.algorithms.common import allreduce_grads

    g = {"w": torch.tensor([[1.0], [3.0], [11.0]])}
    out = allreduce_grads("fp32", (0, 1))(g)["w"]
    assert torch.equal(out, torch.full((3, 1), 2.0))


# ---------------------------------------------------------------------------- failures and recovery
def test_failed_worker_is_down_then_fetches_before_computing(root):
    """An explicit failure: the worker is down exactly over the window, then fetches the
    model's fp32 bytes from a live peer (a real transfer, comm_blocked) before it computes
    again, and goes on from the peer's step."""
    sc = load_scenario(root / QS, TINY + ["run.device=cpu", "numerics=false", "timing={params: 1.0e6, layers: 2}",
                                          "run.max_sim_time_s=3.0", "run.max_rounds=null", "algorithm.inner_steps=4",
                                          "faults={failures: {schedule: [{node: us/1, start_s: 0.52, end_s: 1.3}]}}"])
    sim = Simulation(sc)
    sim.run()
    check_invariants(sim)
    (rec,) = sim.recorder.recoveries
    assert rec.worker == 1 and rec.peer == "us/0" and rec.start_s == pytest.approx(1.3)
    assert rec.payload_bytes == fetch_bytes(1_000_000) == 4.0e6
    (tr,) = [t for t in sim.recorder.transfers if t.tag == "recovery:1"]
    assert (tr.src, tr.dst, tr.start_s, tr.end_s) == ("us/0", "us/1", rec.start_s, rec.end_s)
    spans = sorted((s for s in sim.recorder.states if s.worker == 1), key=lambda s: s.start_s)
    down = [s for s in spans if s.state == "down"]
    assert [(s.start_s, s.end_s) for s in down] == [(pytest.approx(0.52), pytest.approx(1.3))]
    after = [s for s in spans if s.start_s >= 1.3 - 1e-12]
    assert after[0].state == "comm_blocked" and after[0].end_s == pytest.approx(rec.end_s)
    assert after[1].state == "compute" and after[1].start_s == pytest.approx(rec.end_s) and after[1].step > rec.step


def test_diloco_outer_rows_stay_shared_through_failures_and_drops():
    """DiLoCo keeps one outer model: after failures, churn and timeouts, every worker that
    is up holds the same outer parameters as the others once the queues are flushed. (At step
    grain, where this scenario's run stops with every live worker past the same round; at layer
    grain its stop falls inside one worker's sync step, which then lags a round behind.)"""
    import torch

    sim = Simulation(_scenario("{name: diloco, inner_steps: 3, sync_grain: step}", [2, 2], NUMERIC_FAULTS, 0.15,
                               numerics=True,
                               sim_time_s=4.0))
    sim.run()
    sim.numerics.flush()
    live = [w for w in range(sim.n_workers) if w not in sim.state.down]
    assert len(live) >= 2
    for k, v in sim.state.outer.items():
        for w in live[1:]:
            torch.testing.assert_close(v[w], v[live[0]], rtol=0, atol=0)


def test_noloco_partner_gone_skips_and_keeps_going(root):
    """NoLoCo with a partner that leaves for good: the worker left alone never waits for it,
    skips the outer step (its slow weights stay as they were) and rounds keep counting."""
    sc = load_scenario(root / QS, TINY + ["run.device=cpu", "algorithm={name: noloco, inner_steps: 3}",
                                          "topology.regions.0.nodes=1", "topology.regions.1.nodes=1",
                                          "run.max_rounds=6", "faults={churn: [{node: eu/0, leave_s: 0.4}]}"])
    sim = Simulation(sc)
    sim.run()
    assert sim.rounds == 6
    assert {d.reason for d in sim.recorder.dropped} == {"down"}
    sim.numerics.flush()
    phi = {k: v[0].clone() for k, v in sim.state.outer.items()}
    sim.env.run(until=sim.env.now + 1.0)  # go on by hand: 20 more lone rounds
    sim.numerics.flush()
    for k, v in sim.state.outer.items():
        assert torch_equal(v[0], phi[k])
    assert not any(s.state == "straggler_wait" and s.worker == 0 and s.start_s > 0.5 for s in sim.recorder.states)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_everyone_gone_ends_the_run_cleanly():
    """If every worker leaves for good before the stop condition (here: 1000 rounds), the run
    ends when the last one leaves (nothing more can happen) rather than failing, and says why."""
    sc = _scenario("{name: diloco, inner_steps: 3}", [1, 1],
                   {"churn": [{"node": "us/0", "leave_s": 0.5}, {"node": "eu/0", "leave_s": 0.7}]}, sim_time_s=None)
    sim = Simulation(sc)
    sim.run()
    assert sim.ended_early and 0.7 <= sim.env.now < 0.8  # the last collective in flight still lands
    check_invariants(sim)


# ---------------------------------------------------------------------------- stragglers
def test_slow_period_stretches_exactly_the_work_inside_it():
    """Hand-computed case: a slow period [1, 2) at factor 2; 2 s of work from t0 = 0.5 runs
    0.5 s at full speed, 1 s at half speed (0.5 s of work), then the last 1 s: done at 3.0."""

    class One:
        factor = 2.0
        starts, ends = [1.0], [2.0]

        def at(self, t):
            if 1.0 <= t < 2.0:
                return 2.0, 2.0
            return 1.0, (1.0 if t < 1.0 else math.inf)

    assert Speed([One()]).elapsed(0.5, 2.0) == pytest.approx(2.5)
    assert Speed([One()]).elapsed(2.5, 1.0) == pytest.approx(1.0)
    spec = type("S", (), {"mean_off_s": 1.0, "mean_on_s": 0.5, "factor": 3.0})()
    sp = SlowPeriods(spec, np.random.default_rng(0))
    f, nxt = sp.at(10.0)
    assert f in (1.0, 3.0) and nxt > 10.0
    assert all(a < b for a, b in zip(sp.starts, sp.ends)) and all(b <= a for b, a in zip(sp.ends, sp.starts[1:]))


def test_region_scope_shares_draws_and_node_scope_does_not():
    """Region-scoped straggler factors make a region's nodes equally slow step by step;
    node-scoped ones draw independently per node (own named streams)."""
    def steps(scope):
        sim = Simulation(_scenario("{name: noloco, inner_steps: 3}", [2, 1],
                                   {"stragglers": [{"factor": {"kind": "lognormal", "sigma": 0.5}, "scope": scope}]}))
        return [[sim.workers[i].step_time_s(k) for k in range(5)] for i in range(3)]

    region = steps("region")
    assert region[0] == region[1] != region[2]
    node = steps("node")
    assert node[0] != node[1]


def test_empirical_factors_are_normalized_by_the_median(tmp_path, root):
    """An empirical straggler file: factors are drawn step times divided by the file's median,
    so every factor is one of the file's times over its median."""
    (tmp_path / "times.csv").write_text("step_time_s\n1.0\n2.0\n4.0\n")
    y = (root / QS).read_text() + "\nfaults: {stragglers: [{factor: {kind: empirical, csv: times.csv}}]}\n"
    (tmp_path / "s.yaml").write_text(y)
    sc = load_scenario(tmp_path / "s.yaml", TINY + ["numerics=false", "timing={params: 1.0e6, layers: 1}"])
    sim = Simulation(sc)
    assert {round(sim.workers[0].step_time_s(k) / 0.05, 9) for k in range(40)} == {0.5, 1.0, 2.0}


def test_link_degradation_window_becomes_part_of_the_bandwidth_series():
    """A degradation window multiplies the link's bandwidth inside it and restores it after;
    the fault is recorded over the window."""
    sim = Simulation(_scenario("{name: diloco, inner_steps: 3}", [1, 1],
                               {"links": [{"a": "us", "b": "eu", "degrade": [{"start_s": 1.0, "end_s": 2.0, "factor": 0.25}]}]},
                               bandwidth_gbps=8.0))
    assert sim.graph.edges["us", "eu"]["bandwidth_series"] == [(1.0, 2.0), (2.0, 8.0)]
    sim.run()
    (f,) = [f for f in sim.recorder.faults if f.kind == "link_degraded"]
    assert (f.start_s, f.end_s, f.factor) == (1.0, 2.0, 0.25)


# ---------------------------------------------------------------------------- schema
def test_faults_schema_errors_are_one_located_line(root):
    """Bad faults are refused with one line naming the field path."""
    from sim.scenario import ScenarioError

    cases = {"faults={churn: [{node: eu/9, join_s: 3}]}": "faults.churn.0.node: unknown node",
             "faults={failures: {mtbf_s: 3}}": "faults.failures:",
             "faults={stragglers: [{factor: {kind: weibull}}]}": "faults.stragglers.0.factor:",
             "faults={stragglers: [{regions: [us]}]}": "faults.stragglers.0:",
             "faults={links: [{a: us, b: us2}]}": "faults.links.0:",
             "algorithm.sync_timeout_s=0": "algorithm.sync_timeout_s:",
             "faults={tremors: 1}": "faults.tremors: unknown key"}
    for override, prefix in cases.items():
        with pytest.raises(ScenarioError) as err:
            load_scenario(root / QS, [override])
        assert str(err.value).startswith(prefix) and "\n" not in str(err.value), (override, str(err.value))


@pytest.mark.parametrize("algo", [ALGOS[0], ALGOS[1], ALGOS[5]])
def test_faults_decide_time_the_same_with_and_without_numerics(algo):
    """Faults are engine-only: a run's events (states, transfers, syncs, faults, drops,
    fetches) are identical whether or not the tiny model is trained."""
    def events(numerics):
        sc = _scenario(algo, [2, 2], NUMERIC_FAULTS, 0.15, numerics=numerics, sim_time_s=3.0)
        sc = sc.model_copy(update={"timing": sc.timing.model_copy(update={"layers": 1})})
        sim = Simulation(sc)
        sim.run()
        return events_table(sim.recorder)

    pd.testing.assert_frame_equal(events(True), events(False))


def test_syncs_go_around_a_transatlantic_outage_through_a_third_region():
    """Three regions in a triangle (us-eu direct, us-ap-eu detour) with us-eu down from 1 s on:
    every transfer that starts after that avoids us-eu -- the link carries bytes only before the
    outage -- and DiLoCo keeps syncing (rounds after the outage began) instead of stalling."""
    sc = _scenario("{name: diloco, inner_steps: 3}", [1, 1, 1],
                   {"links": [{"a": "us", "b": "eu", "degrade": [{"start_s": 1.0, "end_s": 100.0, "factor": 0.0}]}]})
    data = sc.model_dump(mode="json")
    data["topology"]["links"].append({"a": "ap", "b": "eu", "bandwidth_gbps": 1.0, "latency_s": 0.03})
    sim = Simulation(parse_scenario(data))
    sim.run()
    crossing = [t for t in sim.recorder.transfers if {"us", "eu"} <= set(t.route.split(">"))]
    assert crossing, "the scenario has us-eu traffic"
    for t in crossing:
        hops = t.route.split(">")
        direct = any({a, b} == {"us", "eu"} for a, b in zip(hops, hops[1:]))
        if abs(t.start_s - 1.0) > 1e-9:  # a flow starting at the very instant may see either state
            assert direct == (t.start_s < 1.0), (t.start_s, t.route)
            assert direct or "ap" in hops
    assert any(s.start_s > 2.0 for s in sim.recorder.syncs)
    check_invariants(sim)
