"""Every method's schedule as data: its ``at_step`` table for a few steps and workers, built
from the method's class and a parameter layout alone (no tensors, no engine, no run), checked
against the papers' rules (REFERENCE.md) written out by hand; faults change who a gossip
worker meets; and the tables are the same with torch and simpy made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sim.algorithms import algorithm_class
from sim.scenario import load_scenario
from tests.conftest import ROOT

QS = ROOT / "scenarios" / "quickstart.yaml"
LAYOUT = [("emb", 10), ("blocks.0.w", 7), ("blocks.1.w", 7), ("head", 3)]  # 27 elements, 2 blocks
N = 4
EVERYONE = (0, 1, 2, 3)


def method(algorithm: str, n: int = N, seed: int = 0):
    """The method of ``algorithm`` (a YAML mapping) for ``n`` workers, configured with LAYOUT (and,
    for a method with servers, a server ``ps`` in the first region, workers spread over the regions
    in order, equal speeds)."""
    sc = load_scenario(QS, [f"algorithm={algorithm}", "topology.servers=[{name: ps, region: us}]"])
    cls = algorithm_class(sc.algorithm)
    m = cls(sc.algorithm, n, seed)
    m.configure(LAYOUT, None)
    regions = [r.name for r in sc.topology.regions for _ in range(r.nodes)]
    m.set_servers(cls.server_plan(sc.algorithm, sc.topology), (regions * n)[:n], [1.0] * n)
    return m


def table(m, steps, workers=EVERYONE) -> dict:
    """(worker, step) -> (logical sends as (stream, round, group, elements of all parts), needs
    as (stream, round), whether the worker steps on its own), for the steps that do anything."""
    out = {}
    for w in workers:
        for s in steps:
            plan = m.at_step(w, s)
            sends = tuple((x.stream, x.round, tuple(x.group), sum(p.elems for p in _parts(plan, x)))
                          for x in plan.outgoing())
            needs = plan.needed()
            if sends or needs or not plan.local_step:
                out[(w, s)] = (sends, needs, plan.local_step)
    return out


def _parts(plan, send):
    return [p for p in (*(p for _, p in plan.during), *plan.sends) if p.key == send.key]


def test_ddp_all_reduces_every_steps_gradients_before_the_next_step():
    """Data parallel: every step each worker's gradient buckets (one per block, the rest last)
    go to everyone as round step-1, and the step runs only when they are all reduced."""
    for algorithm in ("{name: ddp}", "{name: ddp, overlap: false}"):
        t = table(method(algorithm), range(1, 4))
        assert set(t) == {(w, s) for w in EVERYONE for s in range(1, 4)}
        for (w, s), (sends, needs, local) in t.items():
            assert not local and all(r == s - 1 and g == EVERYONE for _, r, g, _ in sends)
            assert sum(e for *_, e in sends) == 27 and needs == tuple((st, r) for st, r, _, _ in sends)
        assert len(t[(0, 1)][0]) == (3 if "overlap" not in algorithm else 1)


@pytest.mark.parametrize("grain", ["step", "layer"])
def test_diloco_syncs_the_whole_model_every_H_steps_and_applies_it_before_the_next(grain):
    """DiLoCo, H = 3: at steps 3 and 6 every worker sends its pseudo-gradient (the whole
    model) to everyone as outer round 0 and 1 and needs that round's average before going on."""
    t = table(method(f"{{name: diloco, inner_steps: 3, sync_grain: {grain}}}"), range(1, 8))
    assert t == {(w, s): ((("outer", r, EVERYONE, 27),), (("outer", r),), True)
                 for w in EVERYONE for s, r in ((3, 0), (6, 1))}


@pytest.mark.parametrize("name", ["diloco_delayed", "eager_diloco"])
@pytest.mark.parametrize("k", [1, 2])
def test_overlapped_diloco_applies_round_r_minus_k_at_round_r(name, k):
    """One-outer-step-overlapped DiLoCo (delay k): round r's sync is sent at step (r+1)H and
    waited for only at round r+k's outer step; the first k outer steps wait for nothing."""
    t = table(method(f"{{name: {name}, inner_steps: 2, outer_delay: {k}}}"), range(1, 9))
    want = {}
    for w in EVERYONE:
        for r in range(4):
            want[(w, 2 * (r + 1))] = ((("outer", r, EVERYONE, 27),), (("outer", r - k),) if r >= k else (), True)
    assert t == want


def test_warm_start_runs_ddp_steps_then_the_method_counted_from_their_end():
    """warm_start_steps: W: steps 1..W are data-parallel steps of the whole model (round
    step-1, not the worker's own step), then DiLoCo's outer steps fall at W + jH."""
    t = table(method("{name: diloco, inner_steps: 3, warm_start_steps: 2, sync_grain: step}"), range(1, 9), (0,))
    assert t == {(0, 1): ((("warmup", 0, EVERYONE, 27),), (("warmup", 0),), False),
                 (0, 2): ((("warmup", 1, EVERYONE, 27),), (("warmup", 1),), False),
                 (0, 5): ((("outer", 0, EVERYONE, 27),), (("outer", 0),), True),
                 (0, 8): ((("outer", 1, EVERYONE, 27),), (("outer", 1),), True)}


def test_streaming_diloco_staggers_its_fragments_and_applies_each_tau_steps_later():
    """Streaming DiLoCo, one block per fragment plus the embeddings' own fragment (P = 3),
    H = 6, tau = 1: fragment p is sent at t_p + jH with t_p = round(H (p + 1) / P) = 2, 4, 6
    and needed tau steps later; the fragments partition the model."""
    m = method("{name: streaming_diloco, inner_steps: 6, fragment_layers: 1, overlap_steps: 1}")
    assert m.info.syncs_per_round == 3
    sizes = m.frag_elems
    assert sorted(sizes) == [7, 7, 13] and sum(sizes) == 27
    t = table(m, range(1, 15), (0,))
    want: dict = {}
    for p, t_p in enumerate((2, 4, 6)):
        for j in range(3):
            sent, used = t_p + j * 6, t_p + j * 6 + 1
            if sent <= 14:
                want.setdefault(sent, [[], []])[0].append((f"frag{p}", j, EVERYONE, sizes[p]))
            if used <= 14:
                want.setdefault(used, [[], []])[1].append((f"frag{p}", j))
    assert t == {(0, s): (tuple(a), tuple(b), True) for s, (a, b) in want.items()}


def test_noloco_gossips_in_fresh_random_pairs_every_H_steps():
    """NoLoCo, H = 2, groups of 2 among 4 workers: every H steps each worker sends its
    pseudo-gradient and slow weights (2x the model) to its group only; the groups partition
    the workers, agree between members, and are drawn afresh (the same for the same seed)."""
    m = method("{name: noloco, inner_steps: 2, group_size: 2}")
    t = table(m, range(1, 21))
    assert {s for _, s in t} == set(range(2, 21, 2))
    pairings = []
    for r in range(10):
        groups = {w: t[(w, 2 * (r + 1))][0][0][2] for w in EVERYONE}
        for w, g in groups.items():
            assert t[(w, 2 * (r + 1))] == ((("gossip", r, g, 54),), (("gossip", r),), True)
            assert w in g and len(g) == 2 and all(groups[x] == g for x in g)
        pairings.append(frozenset(groups.values()))
    assert len(set(pairings)) > 1
    assert table(method("{name: noloco, inner_steps: 2, group_size: 2}"), range(1, 21)) == t
    assert table(method("{name: noloco, inner_steps: 2, group_size: 2}", seed=1), range(1, 21)) != t


def test_noloco_repair_pairs_around_a_worker_that_is_down():
    """dead_partner: repair: a round drawn while worker 1 is down leaves it alone and pairs
    only workers that are up; 'skip' (the default) draws over everyone as if nobody failed."""
    up = [True, False, True, True]
    repair = method("{name: noloco, inner_steps: 2, group_size: 2, dead_partner: repair}")
    repair.set_liveness(lambda: up)
    skip = method("{name: noloco, inner_steps: 2, group_size: 2}")
    skip.set_liveness(lambda: up)
    for r in range(6):
        groups = {w: repair.at_step(w, 2 * (r + 1)).outgoing()[0].group for w in EVERYONE}
        assert tuple(groups[1]) == (1,)
        assert all(1 not in groups[w] and len(groups[w]) >= 1 for w in (0, 2, 3))
        assert sorted(w for g in {tuple(g) for g in groups.values()} for w in g) == [0, 1, 2, 3]
    assert any(1 in skip.at_step(0, 2 * (r + 1)).outgoing()[0].group or
               1 in skip.at_step(2, 2 * (r + 1)).outgoing()[0].group for r in range(30))


def test_every_method_schedules_without_torch_or_simpy():
    """Every method, built-in or packaged, builds the same at_step table in a process where
    torch and simpy cannot be imported: a schedule is data."""
    from sim.algorithms import METHODS

    names = sorted(METHODS)
    algorithms = {n: f"{{name: {n}, inner_steps: 2}}" if n not in ("ddp", "demo", "sparta") else f"{{name: {n}}}"
                  for n in names}
    code = f"""
import sys, json, importlib.abc
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'simpy'):
            raise ImportError('blocked by the test: ' + name)
sys.meta_path.insert(0, Refuse())
sys.path.insert(0, {str(ROOT)!r})
from tests.test_schedules import method, table
out = {{n: repr(sorted(table(method(a), range(1, 7)).items())) for n, a in {algorithms!r}.items()}}
assert 'torch' not in sys.modules and 'simpy' not in sys.modules
print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    there = json.loads(res.stdout)
    assert set(there) == set(names)
    for n, a in algorithms.items():
        assert there[n] == repr(sorted(table(method(a), range(1, 7)).items())), n


@pytest.mark.parametrize("name", ["diloco", "noloco", "fedavg"])
def test_warm_start_steps_all_reduce_whatever_the_methods_own_collective(name):
    """Warm start is ddp: its steps all-reduce (ring_allreduce by default; the method's own
    collective where that is an all-reduce), never noloco's gossip exchange."""
    m = method(f"{{name: {name}, inner_steps: 2, warm_start_steps: 2}}")
    sends = [s for w in EVERYONE for step in (1, 2) for s in m.at_step(w, step).outgoing()]
    assert sends and {s.stream for s in sends} == {"warmup"}
    assert {s.collective for s in sends} == {"ring_allreduce"}


TEMPLATE_METHODS = [
    "{name: diloco, inner_steps: 3}",
    "{name: diloco, inner_steps: 4, warm_start_steps: 3, sync_grain: step}",
    "{name: diloco_delayed, inner_steps: 3, outer_delay: 2}",
    "{name: eager_diloco, inner_steps: 2}",
    "{name: noloco, inner_steps: 3, group_size: 2}",
    "{name: fedavg, inner_steps: 4, island_size: 2}",
    "{name: streaming_diloco, inner_steps: 6, fragment_layers: 1, overlap_steps: 0}",
    "{name: streaming_diloco, inner_steps: 6, fragment_layers: 1, overlap_steps: 4, warm_start_steps: 2}",
    "{name: streaming_diloco, inner_steps: 7, fragment_layers: 1, overlap_steps: 2, fragment_schedule: interval}",
    "{name: streaming_diloco, inner_steps: 5, fragment_layers: 2, overlap_steps: 1, embeddings_fragment: false, "
    "sync_grain: step}",
]


@pytest.mark.parametrize("algorithm", TEMPLATE_METHODS)
def test_the_templates_quiet_steps_and_use_steps_agree_with_its_table(algorithm):
    """For every method on the sync template (one stream or staggered fragment streams, a delay
    in rounds or in tau steps): ``quiet_steps`` at a step is the number of empty plans from it
    on, and ``use_step`` of every collective is the step whose plan needs it (the two are
    derived from the rule apart from ``at_step``; this checks them against the table itself)."""
    m = method(algorithm)
    last = 40
    plans = {(w, s): m.at_step(w, s) for w in EVERYONE for s in range(1, last + 1)}
    busy = {k for k, p in plans.items() if p.outgoing() or p.needed() or not p.local_step}
    for w in EVERYONE:
        for s in range(1, last - m.H - m.lag - 2):
            nxt = next(t for t in range(s, last + 1) if (w, t) in busy)
            assert m.quiet_steps(w, s) == nxt - s, (w, s)
    group = {(w, x.stream, x.round): x.group for (w, _), p in plans.items() for x in p.outgoing()}
    needs = [(w, s, key) for (w, s), p in plans.items() if p.local_step for key in p.needed()]
    assert needs
    for w, s, (stream, round_) in needs:
        assert m.use_step((stream, round_, group[(w, stream, round_)])) == s, (w, s, stream, round_)


@pytest.mark.parametrize("algorithm", [a for a in TEMPLATE_METHODS if "streaming" in a] + [
    "{name: streaming_diloco, inner_steps: 3, fragment_layers: 1, overlap_steps: 0}",
    "{name: streaming_diloco, inner_steps: 9, fragment_layers: 1, overlap_steps: 1, fragment_schedule: interval, "
    "pattern: sequential}"])
def test_a_streamed_sync_carries_the_mean_fragment_in_fp32(algorithm):
    """With fragment streams, one collective a round per fragment (syncs_per_round = P), and a
    sync's payload in fp32 is 4 bytes x the mean fragment's elements (the fragments partition
    the model: P x that mean is the whole model's 4 x 27 bytes)."""
    m = method(algorithm)
    sizes = m.frag_elems
    assert m.info.syncs_per_round == len(sizes) == len(m.offsets) and sum(sizes) == 27
    assert m.info.payload_bytes == pytest.approx(4 * 27 / len(sizes))
