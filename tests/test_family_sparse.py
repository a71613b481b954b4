"""FedAvg with islands, SPARTA and SPARTA-DiLoCo (issue 15), built only through the public
plug-in path (``sim.algorithms.METHODS``): their limits, exact payload bytes, schedule as data,
named random streams, determinism and faults."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from kernels.formats import payload_bytes
from sim.algorithms import sections
from sim.algorithms.sparta import sparse_count
from sim.metrics.tables import events_table
from sim.rng import rng as named_rng
from sim.runner import Simulation
from sim.scenario import ScenarioError, load_scenario
from sim.schedule import NOTHING
from tests.conftest import ROOT, TINY

QS = ROOT / "scenarios" / "quickstart.yaml"
CPU = ["run.device=cpu", "run.max_tokens=null", "run.eval_every_steps=null"]
METHODS = {
    "fedavg": "{name: fedavg, inner_steps: 3}",
    "fedavg_islands": "{name: fedavg, inner_steps: 3, island_size: 2}",
    "sparta": "{name: sparta, fraction: 0.1}",
    "sparta_diloco": "{name: sparta_diloco, inner_steps: 4, interval: 2, fraction: 0.1}",
}


def _sim(*overrides: str) -> Simulation:
    return Simulation(load_scenario(QS, TINY + CPU + list(overrides)))


def _run(*overrides: str) -> Simulation:
    sim = _sim(*overrides)
    sim.run()
    sim.numerics.flush()
    return sim


def _global(sim: Simulation) -> dict[str, torch.Tensor]:
    return sim.algorithm.global_params(sim.numerics, sim.state)


def _close(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), **tol)


# ---------------------------------------------------------------------------- the public path
@pytest.mark.parametrize("name, cls", [("fedavg", "FedAvg"), ("sparta", "SPARTA"), ("sparta_diloco", "SPARTADiLoCo")])
def test_methods_are_plugins_selected_by_name_without_a_plugin_key(name, cls):
    """`algorithm: {name: NAME}` resolves through the registry to the plug-in path, not the
    schema's own union of sections, and the class's own Spec validates the knobs."""
    assert name not in sections()
    sc = load_scenario(QS, [f"algorithm={{name: {name}}}"])
    assert sc.algorithm.plugin.endswith(f":{cls}")
    assert type(Simulation(sc).algorithm).__name__ == cls


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unknown_knob_is_rejected_with_its_path(name):
    """A misspelled knob is refused in one line naming the field path."""
    with pytest.raises(ScenarioError) as err:
        load_scenario(QS, [f"algorithm={METHODS[name]}", "algorithm.inner_stepz=4"])
    assert str(err.value).startswith("algorithm.inner_stepz: unknown key") and "\n" not in str(err.value)


@pytest.mark.parametrize("override, expected", [
    ("algorithm={name: sparta, fraction: 0}", "algorithm.fraction: Input should be greater than 0"),
    ("algorithm={name: sparta, fraction: 1.5}", "algorithm.fraction: Input should be less than or equal to 1"),
    ("algorithm={name: sparta, payload_dtype: int8, error_feedback: true}", "algorithm: error_feedback: not supported"),
    ("algorithm={name: fedavg, island_size: 0}", "algorithm.island_size: Input should be greater than or equal to 1"),
])
def test_bad_knob_values_are_one_line(override, expected):
    """Out-of-range fractions, island sizes and error feedback on sparse payloads are refused."""
    with pytest.raises(ScenarioError) as err:
        load_scenario(QS, [override])
    assert str(err.value).startswith(expected), str(err.value)


# ---------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", sorted(METHODS))
def test_contract_three_rounds_shapes_and_determinism(name):
    """Each method runs 3 rounds, keeps every parameter's shape and finite values, and the same
    seed gives identical losses, events and parameters; another seed gives other losses."""
    args = (f"algorithm={METHODS[name]}", "run.max_rounds=3", "run.eval_every_steps=2")
    a, b, c = _sim(*args), _sim(*args), _sim(*args, "seed=7")
    for sim in (a, b, c):
        sim.run()
    assert a.rounds == 3
    pa, pb = _global(a), _global(b)
    for k, shape in a.replicas.shapes.items():
        assert tuple(pa[k].shape) == shape and torch.isfinite(pa[k]).all()
        assert torch.equal(pa[k], pb[k]), k
    losses = [(p.kind, p.worker, p.step, p.time_s, p.loss) for p in a.recorder.losses]
    assert losses == [(p.kind, p.worker, p.step, p.time_s, p.loss) for p in b.recorder.losses]
    assert any(p[0] == "eval" for p in losses)
    assert losses != [(p.kind, p.worker, p.step, p.time_s, p.loss) for p in c.recorder.losses]
    assert events_table(a.recorder).equals(events_table(b.recorder))


# ---------------------------------------------------------------------------- limits
def test_fedavg_with_all_workers_is_diloco_with_outer_sgd_lr_one_no_momentum():
    """Averaging the parameters of all workers every H steps is DiLoCo's outer step with SGD at
    lr 1 and no momentum (theta - 1 x mean(theta - theta_m) = mean theta_m)."""
    fed = _run("algorithm={name: fedavg, inner_steps: 4}", "run.max_rounds=3")
    dil = _run("algorithm={name: diloco, inner_steps: 4, outer_lr: 1.0, outer_momentum: 0.0, nesterov: false}",
               "run.max_rounds=3")
    assert fed.rounds == dil.rounds == 3
    assert [w.steps_done for w in fed.workers] == [w.steps_done for w in dil.workers] == [12] * 4
    # equal in exact arithmetic; in float32 mean(theta_m) and theta - (theta - mean) round apart by a
    # few ulps, which AdamW's normalised steps carry on (up to ~2e-6 with one intra-op thread)
    _close(_global(fed), _global(dil), rtol=1e-5, atol=1e-5)
    _close(fed.replicas.params, dil.replicas.params, rtol=1e-5, atol=1e-5)


def test_sparta_with_every_entry_every_step_is_parameter_averaging_every_step():
    """SPARTA with p = 1 and interval 1 averages every entry after every step: FedAvg with H = 1
    (same replicas, same evaluated model)."""
    sp = _run("algorithm={name: sparta, fraction: 1.0, interval: 1}", "run.max_rounds=5")
    fed = _run("algorithm={name: fedavg, inner_steps: 1}", "run.max_rounds=5")
    assert sp.rounds == fed.rounds == 5
    _close(sp.replicas.params, fed.replicas.params)
    _close(_global(sp), _global(fed))
    assert sum(s.payload_bytes for s in sp.recorder.syncs) == sum(s.payload_bytes for s in fed.recorder.syncs)


def test_sparta_diloco_with_rare_sparse_rounds_is_diloco():
    """SPARTA-DiLoCo whose sparse interval never falls between outer steps (interval = H) is
    DiLoCo: the same parameters and bytes."""
    common = ("algorithm.inner_steps=3", "run.max_rounds=3")
    sd = _run("algorithm={name: sparta_diloco, interval: 3, fraction: 0.5}", *common)
    dil = _run("algorithm={name: diloco, outer_lr: 0.7, outer_momentum: 0.9}", *common)
    assert {s.stream for s in sd.recorder.syncs} == {"outer"}
    _close(_global(sd), _global(dil))
    _close(sd.replicas.params, dil.replicas.params)


# ---------------------------------------------------------------------------- bytes
def _model_counts(sim: Simulation, p: float) -> int:
    """sum over the trained model's tensors of max(1, round(p n)), from the shapes."""
    return sum(max(1, round(p * math.prod(shape))) for shape in sim.replicas.shapes.values())


@pytest.mark.parametrize("fmt", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("grain", ["step", "layer"])
def test_sparta_payload_bytes_are_values_only_exactly(fmt, grain):
    """Each sparse sync carries exactly sum_W max(1, round(p n_W)) values in the wire format and
    no index bytes (per part at layer grain); a ring all-reduce over M moves 2(M-1) times it."""
    p = 0.1
    sim = _run(f"algorithm={{name: sparta, fraction: {p}, payload_dtype: {fmt}, sync_grain: {grain}}}",
               "run.max_rounds=3")
    k = _model_counts(sim, p)
    assert sim.algorithm.sparse_elems == k
    parts = [e for _, e in sim.algorithm.sparse_parts]
    assert sum(parts) == k and len(parts) == 2  # block 0, then the non-block tensors
    expected = sum(payload_bytes(e, fmt) for e in (parts if grain == "layer" else [k]))
    if fmt == "fp32":
        assert expected == 4 * k  # values only: no indices
    syncs = [s for s in sim.recorder.syncs if s.stream == "sparse"]
    assert len(syncs) == 3 and all(s.payload_bytes == expected for s in syncs)
    moved = Counter()
    for t in sim.recorder.transfers:
        moved[t.tag.split("/")[0]] += t.payload_bytes
    m = sim.sc.topology.n_workers
    assert moved == {f"sparse:{r}": pytest.approx(2 * (m - 1) * expected) for r in range(3)}


def test_sparta_diloco_sends_sparse_values_between_outer_steps_and_the_model_at_them():
    """SPARTA-DiLoCo: sparse syncs of exactly the sparse count between outer steps (not counted
    as rounds), full-model outer syncs every H (counted)."""
    sim = _run("algorithm={name: sparta_diloco, inner_steps: 4, interval: 1, fraction: 0.2, sync_grain: step}",
               "run.max_rounds=2")
    k = _model_counts(sim, 0.2)
    n = sum(math.prod(s) for s in sim.replicas.shapes.values())
    by = Counter((s.stream, s.payload_bytes) for s in sim.recorder.syncs)
    assert by == {("sparse", 4 * k): 6, ("outer", 4 * n): 2}
    assert sim.rounds == 2


def test_fedavg_islands_each_sync_the_whole_model_over_their_own_members():
    """Each island is its own collective carrying the whole model among its members only."""
    sim = _run("algorithm={name: fedavg, inner_steps: 2, island_size: 2, sync_grain: step}", "run.max_rounds=3")
    n = sum(math.prod(s) for s in sim.replicas.shapes.values())
    assert sim.rounds == 3
    assert len(sim.recorder.syncs) == 6  # 2 islands x 3 rounds
    assert all(s.participants == 2 and s.payload_bytes == 4 * n for s in sim.recorder.syncs)


# ---------------------------------------------------------------------------- schedule as data
def test_sparta_schedule_as_data():
    """SPARTA sends on every interval-th step to everyone, needs it before the next step, and
    says how many quiet steps lie between."""
    alg = _sim("algorithm={name: sparta, fraction: 0.1, interval: 2, sync_grain: step}").algorithm
    for step in range(1, 9):
        plan = alg.at_step(1, step)
        if step % 2:
            assert plan == NOTHING and alg.quiet_steps(1, step) == 1
            continue
        (send,) = plan.outgoing()
        assert (send.stream, send.round, send.group, send.elems) == ("sparse", step // 2 - 1, (0, 1, 2, 3),
                                                                      alg.sparse_elems)
        assert send.counts_as_round and plan.needed() == (("sparse", step // 2 - 1),)
        assert alg.quiet_steps(1, step) == 0


def test_sparta_diloco_schedule_as_data():
    """SPARTA-DiLoCo (H = 6, interval 2): sparse sends on steps 2 and 4 (not rounds), the full
    outer sync alone on step 6 (a round), then sparse again on 8 and 10."""
    alg = _sim("algorithm={name: sparta_diloco, fraction: 0.1, interval: 2, inner_steps: 6, sync_grain: step}").algorithm
    seen = {}
    for step in range(1, 13):
        out = alg.at_step(0, step).outgoing()
        seen[step] = [(s.stream, s.round, s.counts_as_round, s.elems) for s in out]
    full, k = alg.n_params, alg.sparse_elems
    assert seen == {1: [], 2: [("sparse", 0, False, k)], 3: [], 4: [("sparse", 1, False, k)], 5: [],
                    6: [("outer", 0, True, full)], 7: [], 8: [("sparse", 3, False, k)], 9: [],
                    10: [("sparse", 4, False, k)], 11: [], 12: [("outer", 1, True, full)]}
    assert [alg.quiet_steps(0, s) for s in range(1, 7)] == [1, 0, 1, 0, 1, 0]


def test_fedavg_schedule_as_data_islands_per_round():
    """FedAvg with islands of 2 of 4 workers sends every H steps, each worker to its own island
    (the same tuple for both members), and nothing in between; warm-up steps are ddp's."""
    alg = _sim("algorithm={name: fedavg, inner_steps: 3, island_size: 2, warm_start_steps: 2}").algorithm
    assert alg.at_step(0, 1).outgoing()[0].stream == "warmup"
    for step in range(3, 3 + 12):
        plans = [alg.at_step(w, step) for w in range(4)]
        if (step - 2) % 3:
            assert all(p == NOTHING for p in plans)
            continue
        r = (step - 2) // 3 - 1
        groups = [{s.group for s in p.outgoing()} for p in plans]
        assert all(len(g) == 1 for g in groups)
        islands = {w: next(iter(g)) for w, g in enumerate(groups)}
        assert all(w in isl and len(isl) == 2 for w, isl in islands.items())
        assert all(islands[w] == islands[m] for w, isl in islands.items() for m in isl)
        stream, listed, sync_step = alg.round_groups(r)
        assert stream == "avg" and sorted(set(islands.values())) == listed and sync_step == step


# ---------------------------------------------------------------------------- named streams
def test_islands_are_drawn_from_the_named_stream():
    """Islands are consecutive chunks of the permutation drawn from fedavg/islands/<round>: the
    same seed gives the same islands, other rounds (and another seed) other ones."""
    arg = "algorithm={name: fedavg, inner_steps: 3, island_size: 2}"
    a, b = _sim(arg).algorithm, _sim(arg).algorithm
    for r in range(6):
        perm = named_rng(0, f"fedavg/islands/{r}").permutation(4).tolist()
        expected = sorted({tuple(sorted(perm[i:i + 2])) for i in (0, 2)})
        assert a.round_groups(r)[1] == expected == b.round_groups(r)[1]
    assert len({tuple(a.round_groups(r)[1]) for r in range(6)}) > 1
    other = _sim(arg, "seed=3").algorithm
    assert any(other.round_groups(r)[1] != a.round_groups(r)[1] for r in range(6))


def test_sparse_indices_are_shared_drawn_from_the_named_stream_and_written_back():
    """The entries averaged in round r are k distinct ones drawn from sparta/indices/<r> (the same
    for every worker, other ones next round); after the round they are equal on every worker,
    while the entries not sent still differ."""
    p = 0.1
    sim = _run(f"algorithm={{name: sparta, fraction: {p}, interval: 3}}", "run.max_rounds=1")
    params = sim.replicas.params
    idx0 = sim.algorithm.indices(0, params)
    g = named_rng(0, "sparta/indices/0")
    for name, v in params.items():
        n = v[0].numel()
        want = torch.from_numpy(g.choice(n, sparse_count(n, p), replace=False)).sort().values
        assert torch.equal(idx0[name], want)
    idx1 = sim.algorithm.indices(1, params)
    assert any(not torch.equal(idx0[k], idx1[k]) for k in params)
    differ = 0
    for name, v in params.items():
        flat = v.reshape(4, -1)
        sent = flat[:, idx0[name]]
        assert torch.equal(sent, sent[:1].expand_as(sent)), name  # averaged and written back
        mask = torch.ones(flat.shape[1], dtype=torch.bool)
        mask[idx0[name]] = False
        differ += int((flat[:, mask] != flat[:1, mask]).any())
    assert differ > 0  # the rest is each worker's own


# ---------------------------------------------------------------------------- faults
@pytest.mark.parametrize("name", sorted(METHODS))
def test_methods_complete_with_a_failure_and_a_straggler(name):
    """A worker down for part of the run (left out, then back from a peer) and a straggler: the
    run completes its rounds with finite parameters, and the failure left someone out."""
    sim = _run(f"algorithm={METHODS[name]}", "run.max_rounds=6",
               "faults={failures: {schedule: [{node: eu/1, start_s: 0.12, end_s: 0.5}]}, "
               "node_step_time_multiplier: {us/1: 1.7}}")
    assert sim.rounds == 6
    assert [f.node for f in sim.recorder.faults if f.kind == "failure"] == ["eu/1"]
    assert any(d.node == "eu/1" for d in sim.recorder.dropped)
    assert [r.node for r in sim.recorder.recoveries] == ["eu/1"]  # back from a live peer
    for v in _global(sim).values():
        assert torch.isfinite(v).all()
    for v in sim.replicas.params.values():
        assert torch.isfinite(v).all()


@pytest.mark.parametrize("name", ["fedavg", "sparta"])
def test_methods_complete_with_a_sync_timeout(name):
    """With sync_timeout_s and a slow worker, syncs complete without the late member and the run finishes."""
    sim = _run(f"algorithm={METHODS[name]}", "algorithm.sync_timeout_s=0.01", "run.max_rounds=4",
               "faults={node_step_time_multiplier: {us/1: 3.0}}")
    assert sim.rounds == 4
    assert any(s.participants < 4 for s in sim.recorder.syncs)
    for v in _global(sim).values():
        assert torch.isfinite(v).all()
