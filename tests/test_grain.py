"""Grain of a sync: per-layer releases and per-layer needs (``sync_grain``), checked against
hand-computed timelines, the step-grain timelines recorded before the knob existed, and
numerics that do not depend on the grain."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kernels.formats import payload_bytes
from sim.metrics.tables import events_table
from sim.runner import Simulation
from sim.scenario import load_scenario, parse_scenario
from sim.schedule import Need, backward_done, forward_start, layer_parts
from tests.conftest import TINY

QS = "scenarios/quickstart.yaml"
T = 0.3  # step time, s
PARAMS = 1.2e8  # proxy parameters; fp32 on the wire (the default)
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "timelines"


def _pair(root, algo: str, layers: int, gbps: float, *more: str) -> Simulation:
    """Two workers, one per region, joined by one WAN link without latency; only it costs time."""
    sc = load_scenario(root / QS, [
        "topology.regions.0.nodes=1", "topology.regions.1.nodes=1", "topology.intra_region.bandwidth_gbps=.inf",
        "topology.intra_region.latency_s=0", "topology.links.0.latency_s=0", f"topology.links.0.bandwidth_gbps={gbps}",
        f"compute.step_time={{mode: fixed, step_time_s: {T}}}", "numerics=false", "run.max_tokens=null",
        "run.max_sim_time_s=null", f"timing={{params: {PARAMS}, layers: {layers}}}", f"algorithm={algo}", *more])
    return Simulation(sc)


def _gbps_for(part_s: float, layers: int) -> float:
    """The WAN bandwidth at which one layer's fp32 payload crosses a 2-worker ring in ``part_s``
    (a ring of two moves the payload once each way, full duplex: time = bits / bandwidth)."""
    bits = payload_bytes(int(PARAMS) // layers, "fp32") * 8
    return bits / part_s / 1e9


def _blocked(sim, worker: int = 0) -> list[tuple[float, float]]:
    """(start, duration) of each comm_blocked span of ``worker``."""
    return [(s.start_s, s.end_s - s.start_s) for s in sim.recorder.states
            if s.worker == worker and s.state == "comm_blocked"]


def _spans_close(got, want, tol=1e-9) -> None:
    assert len(got) == len(want), (got, want)
    for (s, d), (s2, d2) in zip(got, want):
        assert s == pytest.approx(s2, abs=tol) and d == pytest.approx(d2, abs=tol), (got, want)


# ---------------------------------------------------------------------- schedules as data
def test_layer_parts_of_a_proxy_split_exactly_and_map_blocks_to_proxy_layers():
    """With a proxy the parts are the proxy's layers, their elements summing exactly to the
    payload; a trained model's block i of n stands for proxy layers [i L/n, (i+1) L/n)."""
    layout = [("emb", 10), ("blocks.0.w", 7), ("blocks.1.w", 7), ("head", 3)]
    parts, layers = layer_parts(layout, None, None)
    assert (parts, layers) == ([(0, 7), (1, 7), (None, 13)], 2)
    parts, layers = layer_parts(layout, None, 6)
    assert layers == 6 and [p for p, _ in parts] == list(range(6)) and sum(e for _, e in parts) == 27
    parts, _ = layer_parts(layout, ["blocks.1.w"], 6)
    assert [p for p, _ in parts] == [3, 4, 5] and sum(e for _, e in parts) == 7
    assert layer_parts(layout, ["emb", "head"], 6) == ([(None, 13)], 6)


def test_diloco_schedule_releases_each_layer_at_its_backward_and_needs_it_at_its_forward(root):
    """A DiLoCo sync step at layer grain: L parts leave at the end of their layer's backward
    (the last layer's first), and the next step needs part l at the start of layer l's forward."""
    sim = _pair(root, "{name: diloco, inner_steps: 3}", 3, 10.0)
    plan = sim.algorithm.at_step(0, 3)
    assert not plan.sends and len(plan.during) == 3
    assert [f for f, _ in plan.during] == [backward_done(2, 3), backward_done(1, 3), backward_done(0, 3)]
    assert [s.part for _, s in plan.during] == [2, 1, 0] and all(s.parts == 3 for _, s in plan.during)
    assert sum(s.elems for _, s in plan.during) == int(PARAMS)
    assert plan.needs == tuple(Need("outer", 0, i, forward_start(i, 3)) for i in range(3))
    assert not sim.algorithm.at_step(0, 2).during  # not a sync step
    step = _pair(root, "{name: diloco, inner_steps: 3, sync_grain: step}", 3, 10.0).algorithm.at_step(0, 3)
    assert not step.during and step.sends[0].elems == int(PARAMS) and step.needs == (Need("outer", 0),)


def test_ddp_layer_grain_needs_each_bucket_at_its_layer_forward(root):
    """ddp's buckets leave as at step grain; at layer grain bucket l is needed at layer l's
    forward (step grain, the default: all before the step)."""
    layer = _pair(root, "{name: ddp, sync_grain: layer}", 3, 10.0).algorithm.at_step(0, 1)
    step = _pair(root, "{name: ddp}", 3, 10.0).algorithm.at_step(0, 1)
    assert layer.during == step.during
    assert [n.at for n in step.needs] == [0.0] * 3
    assert [n.at for n in layer.needs] == [forward_start(2, 3), forward_start(1, 3), forward_start(0, 3)]


# ---------------------------------------------------------------------- hand-computed timelines
@pytest.mark.parametrize("grain", ["layer", "step"])
def test_two_layer_diloco_stalls_only_for_the_part_still_on_the_wire(root, grain):
    """Two layers, each part b = T/4 on the wire alone (less than the T/3 between the two
    releases, so the parts never share the link). Layer grain: layer 1's part is done before
    the sync step ends, layer 0's leaves at the end and is needed first: each round stalls b.
    Step grain: both parts leave at the end: 2b."""
    b = T / 4
    sim = _pair(root, f"{{name: diloco, inner_steps: 2, sync_grain: {grain}}}", 2, _gbps_for(b, 2), "run.max_rounds=2")
    sim.run()
    stall = b if grain == "layer" else 2 * b
    _spans_close(_blocked(sim), [(2 * T, stall), (4 * T + stall, stall)])


@pytest.mark.parametrize("grain", ["layer", "step"])
def test_three_layer_diloco_parts_share_the_link_from_the_first_release(root, grain):
    """Three layers, b = 0.3 T per part alone, releases 2T/9 apart from 4T/9 before the step's
    end: the parts share the link max-min (the link is never idle from the first release), so
    the last one is done 3b - 4T/9 after the step ends; layers 1 and 2, released earlier, are
    done before layer 0 and never stall the forward. Step grain: 3b after the step."""
    b = 0.3 * T
    sim = _pair(root, f"{{name: diloco, inner_steps: 2, sync_grain: {grain}}}", 3, _gbps_for(b, 3), "run.max_rounds=1")
    sim.run()
    stall = 3 * b - 4 * T / 9 if grain == "layer" else 3 * b
    _spans_close(_blocked(sim), [(2 * T, stall)])
    sync = sim.recorder.syncs[0]  # one record for the whole payload, first part's start to last part's end
    assert sync.start_s == pytest.approx(2 * T - (4 * T / 9 if grain == "layer" else 0), abs=1e-9)
    assert sync.end_s == pytest.approx(2 * T + stall, abs=1e-9)
    assert sync.payload_bytes == payload_bytes(int(PARAMS), "fp32")


@pytest.mark.parametrize("grain", ["layer", "step"])
def test_three_layer_streaming_stalls_each_layer_forward_by_its_reduction_end(root, grain):
    """Streaming DiLoCo, three one-layer fragments synced at steps 2, 4, 6 (H = 6, tau = 0), each
    b = 0.8 T on the wire alone. Layer grain: fragment l leaves when layer l's backward is done
    (T (1 - backward_done(l)) before its step ends) and the next step's forward of layer l waits
    for it: stall = max(0, reduction end - forward start) = b - (1 - backward_done(l)) T -
    forward_start(l) T, mid-step for l > 0. Step grain: each fragment stalls b at the step's start."""
    b = 0.8 * T
    sim = _pair(root, f"{{name: streaming_diloco, inner_steps: 6, fragment_layers: 1, overlap_steps: 0, "
                      f"embeddings_fragment: false, sync_grain: {grain}}}", 3, _gbps_for(b, 3), "run.max_rounds=1")
    assert sim.algorithm.offsets == [2, 4, 6]
    sim.run()
    want, stalled = [], 0.0
    for layer, sync_step in ((0, 2), (1, 4), (2, 6)):
        step_end = sync_step * T + stalled
        if grain == "layer":
            done = step_end - (1 - backward_done(layer, 3)) * T + b
            forward = step_end + forward_start(layer, 3) * T
        else:
            done, forward = step_end + b, step_end
        stall = max(0.0, done - forward)
        want.append((forward, stall))
        stalled += stall
    _spans_close(_blocked(sim), want)
    if grain == "layer":  # mid-step stalls: layer 1 after T/9 of forward, layer 2 after 2T/9
        assert [round(s, 9) for _, s in want] == [round(b, 9), round(b - T / 3, 9), round(b - 2 * T / 3, 9)]


def test_streaming_tau0_is_not_diloco_at_layer_grain_but_is_at_step_grain(root):
    """Three one-layer fragments (tau = 0) against DiLoCo on the same 3-layer proxy: at step
    grain each fragment's sync blocks a whole step start, so the stalls add up to DiLoCo's one
    sync of the whole model; at layer grain a fragment's layer waits only from its forward,
    so streaming stalls less than DiLoCo."""
    b = 0.8 * T
    gbps = _gbps_for(b, 3)
    stream = "{name: streaming_diloco, inner_steps: 6, fragment_layers: 1, overlap_steps: 0, embeddings_fragment: false"
    blocked = {}
    for grain in ("step", "layer"):
        for name, algo in (("diloco", "{name: diloco, inner_steps: 6"), ("streaming", stream)):
            sim = _pair(root, f"{algo}, sync_grain: {grain}}}", 3, gbps, "run.max_rounds=2")
            sim.run()
            blocked[grain, name] = sum(d for _, d in _blocked(sim))
    assert blocked["step", "streaming"] == pytest.approx(blocked["step", "diloco"], rel=1e-9)
    assert blocked["layer", "streaming"] < 0.9 * blocked["layer", "diloco"]
    # DiLoCo at layer grain: the link is busy from the first release, 4T/9 before the step's end
    assert blocked["layer", "diloco"] == pytest.approx(2 * (3 * b - 4 * T / 9), rel=1e-9)


def test_ddp_layer_grain_equals_step_grain_when_buckets_finish_in_release_order(root):
    """Equal proxy buckets released last layer first finish in release order under max-min
    sharing, so the first layer's bucket -- needed first -- is always the last in: per-layer
    needs change nothing for ddp then (a degenerate limit of the layer-grain schedule)."""
    gbps = _gbps_for(0.5 * T, 3)
    runs = {g: _pair(root, f"{{name: ddp, sync_grain: {g}}}", 3, gbps, "run.max_rounds=5") for g in ("step", "layer")}
    for sim in runs.values():
        sim.run()
    a, b = (events_table(runs[g].recorder) for g in ("step", "layer"))
    pd.testing.assert_frame_equal(a, b)


def test_a_mid_step_need_stalls_by_its_reduction_end_minus_its_forward_start(root):
    """Engine level: a hand-made schedule releases layer 2's part (b = 1.5 T alone) when its
    backward is done and needs it at its forward in the next step (2T/9 in). The next step
    starts on time, computes 2T/9, waits exactly until the part is in, and finishes the rest
    of the step: stall = reduction end - forward start."""
    from sim.schedule import Send, StepPlan

    b = 1.5 * T
    sim = _pair(root, "{name: diloco, inner_steps: 2}", 3, _gbps_for(b, 3), "run.max_rounds=1")
    part = Send("x", 0, (0, 1), int(PARAMS) // 3, "fp32", "ring_allreduce", True, 2, 3)
    plans = {1: StepPlan(during=((backward_done(2, 3), part),), needs=(Need("x", 0, 2, forward_start(2, 3)),))}
    for w in sim.workers:
        w.plan = lambda worker, step: plans.get(step, StepPlan())
    sim.barrier.on_done = lambda send, participants: None
    sim.env.run(until=4 * T)
    end = T - (1 - backward_done(2, 3)) * T + b
    forward = T + forward_start(2, 3) * T
    _spans_close(_blocked(sim), [(forward, end - forward)])
    for w in sim.workers:
        w.tracker.finish()
    compute = sum(s.end_s - s.start_s for s in sim.recorder.states if s.worker == 0 and s.state == "compute")
    assert compute == pytest.approx(4 * T - (end - forward), abs=1e-9)  # the stall only pauses the step
    assert sim.workers[0].steps_done == 3  # step 2 ended at 2T + stall, step 3 at 3T + stall < 4T


# ---------------------------------------------------------------------- step grain = before
def _cases() -> dict:
    return json.loads((GOLDEN / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("name", sorted(_cases()))
def test_step_grain_reproduces_the_timelines_recorded_before_the_knob(name):
    """``sync_grain: step`` gives exactly (every state span, transfer, sync and fault, to the
    bit) the timeline the engine gave before layer grain existed (tests/fixtures/timelines,
    made at the commit named in cases.json by make.py there; the fault cases remade when a
    failure on the wire started re-forming its collective, as its "remade" entry says)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("timelines_make", GOLDEN / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    case = _cases()[name]
    data = make.scenario_data(case)
    data["algorithm"]["sync_grain"] = "step"
    sim = Simulation(parse_scenario(data))
    sim.run()
    got = events_table(sim.recorder)
    want = pd.read_parquet(GOLDEN / f"{name}.parquet")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_exact=True,
                                  check_dtype=False)


# ---------------------------------------------------------------------- numerics do not care
@pytest.mark.parametrize("algo", ["{name: diloco, inner_steps: 3}",
                                  "{name: streaming_diloco, inner_steps: 4, fragment_layers: 1, overlap_steps: 1}",
                                  "{name: eager_diloco, inner_steps: 3}", "{name: noloco, inner_steps: 3}",
                                  "{name: ddp}"])
def test_numerics_are_the_same_at_either_grain(root, algo):
    """The math happens at the same logical point whatever the grain: every worker's train loss
    at every step both runs took (each depends on every outer step before it) is identical;
    only the timeline differs (the outer methods': it must, the link being slow)."""
    runs = {}
    for grain in ("step", "layer"):
        sc = load_scenario(root / QS, TINY + ["model.n_layers=2", "run.device=cpu", f"algorithm={algo}",
                                              f"algorithm.sync_grain={grain}", "run.max_rounds=4", "run.max_tokens=null",
                                              "topology.links.0.bandwidth_gbps=0.001", "run.eval_every_steps=3"])
        sim = Simulation(sc)
        sim.run()
        runs[grain] = sim
    losses = {g: {(p.worker, p.step): p.loss for p in s.recorder.losses if p.kind == "train"} for g, s in runs.items()}
    common = set(losses["step"]) & set(losses["layer"])
    assert len(common) >= 8
    assert all(losses["step"][k] == losses["layer"][k] for k in common)
    if "ddp" not in algo:
        times = {g: [s.end_s for s in r.recorder.states if s.state == "comm_blocked"] for g, r in runs.items()}
        assert times["step"] != times["layer"]


@pytest.mark.parametrize("layers, interval", [(24, 11), (48, 5), (108, 2)])
def test_interval_fragment_schedule_is_the_papers_simulated_one(root, layers, interval):
    """``fragment_schedule: interval`` syncs a fragment every floor(H / (P + 1)) steps: with
    3-layer fragments at H = 100 that is every 11 / 5 / 2 steps for the 1B / 10B / 100B
    proxies (24 / 48 / 108 layers: 8 / 16 / 36 fragments), as the Streaming DiLoCo paper's
    appendix states; ``even`` spreads them over H."""
    algo = "{name: streaming_diloco, inner_steps: 100, fragment_layers: 3, fragment_schedule: %s}"
    sim = _pair(root, algo % "interval", layers, 10.0)
    p = layers // 3
    assert len(sim.algorithm.fragments) == p
    assert sim.algorithm.offsets == [interval * (i + 1) for i in range(p)]
    due = [s for s in range(1, 101) if sim.algorithm.at_step(0, s).during]
    assert due == sim.algorithm.offsets
    even = _pair(root, algo % "even", layers, 10.0).algorithm.offsets
    assert even == [round(100 * (i + 1) / p) for i in range(p)] and even[-1] == 100


@pytest.mark.parametrize("collective, factor", [("ring_allreduce", 1.0), ("tree_allreduce", 2.0),
                                                ("parameter_server", 1.0), ("hierarchical_allreduce", None)])
def test_a_method_syncs_over_the_collective_its_scenario_names(root, collective, factor):
    """``algorithm.collective`` picks the all-reduce of every sync, warm start's ddp steps
    included: the sync records name it, and with two workers and no latency each takes its
    formula's time: ring 2(P-1)/P S/B = S/B, tree 2 ceil(log2 P) S/B = 2 S/B, star k S/B = S/B."""
    sim = _pair(root, f"{{name: diloco, inner_steps: 2, warm_start_steps: 2, collective: {collective}, "
                      f"sync_grain: step}}", 2, 10.0, "run.max_rounds=2")
    assert sim.algorithm.at_step(0, 1).sends[0].collective == collective  # a warm-start ddp step
    sim.run()
    assert {s.collective for s in sim.recorder.syncs} == {collective}
    if factor is not None:
        s_over_b = payload_bytes(int(PARAMS), "fp32") * 8 / 10e9
        outer = [s for s in sim.recorder.syncs if s.stream == "outer"]
        assert outer and all(s.end_s - s.start_s == pytest.approx(factor * s_over_b, rel=1e-9) for s in outer)


def test_noloco_can_gather_around_a_ring(root):
    """noloco's ``collective: ring_allgather`` moves each member's 2x-model payload to the
    other member of a pair in S/B (ring of two: one hop), as ``exchange`` does."""
    times = {}
    for c in ("exchange", "ring_allgather"):
        sim = _pair(root, f"{{name: noloco, inner_steps: 2, collective: {c}, sync_grain: step}}", 2, 10.0,
                    "run.max_rounds=1")
        sim.run()
        assert {s.collective for s in sim.recorder.syncs} == {c}
        times[c] = sim.recorder.syncs[0].end_s - sim.recorder.syncs[0].start_s
    assert times["ring_allgather"] == pytest.approx(times["exchange"], rel=1e-9)
