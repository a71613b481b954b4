"""The fast paths of issue 26 give the results of the paths they replace, to the bit: the
worker's step loop (``engine.node.FAST_STEPS``), the column-built events table
(``metrics.tables.events_table`` against the row-built ``_events_table_rows``) and the
network's kept group shapes (``Network._group_shape``), for every method at both grains,
with stragglers, slow periods, failures, churn, link flaps and degradation windows."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from sim.engine import network, node
from sim.metrics.records import Recorder
from sim.metrics.tables import _events_table_rows, events_table
from sim.runner import Simulation
from sim.scenario import parse_scenario

FAULTS = {
    "windows": {"stragglers": [{"factor": {"kind": "lognormal", "sigma": 0.5}}],
                "links": [{"a": "us", "b": "eu", "degrade": [{"start_s": 0.4, "end_s": 1.1, "factor": 0.25}]}]},
    "failures": {"stragglers": [{"factor": {"kind": "lognormal", "sigma": 0.3},
                                 "slow_periods": {"mean_off_s": 0.5, "mean_on_s": 0.2, "factor": 3.0}}],
                 "failures": {"mtbf_s": 1.5, "mttr_s": 0.3},
                 "churn": [{"node": "eu/1", "join_s": 0.7}, {"node": "us/2", "leave_s": 2.1}],
                 "links": [{"a": "eu", "b": "ap", "mtbf_s": 0.8, "mttr_s": 0.1}]},
    "none": None,  # equal step times: many ties in time, broken by event order
}
METHODS = [
    {"name": "ddp"},
    {"name": "diloco", "inner_steps": 5},
    {"name": "streaming_diloco", "inner_steps": 8, "fragment_layers": 1, "overlap_steps": 1},
    {"name": "noloco", "inner_steps": 4},
    {"name": "eager_diloco", "inner_steps": 4},
    {"name": "diloco_delayed", "inner_steps": 4},
    {"name": "fedavg", "inner_steps": 4},
    {"name": "sparta"},
    {"name": "sparta_diloco", "inner_steps": 4},
    {"name": "demo"},
    {"name": "async_local_sgd", "inner_steps": 4},
    {"name": "halos", "inner_steps": 4, "updates_per_push": 3},
    {"name": "fedbuff", "inner_steps": 4, "buffer_size": 3},
]


def _data(algo: dict, faults: dict | None) -> dict:
    d = {"seed": 5, "numerics": False, "timing": {"params": 4.0e6, "layers": 4, "step_time_s": 0.05},
         "topology": {"regions": [{"name": "us", "nodes": 5}, {"name": "eu", "nodes": 4}, {"name": "ap", "nodes": 3}],
                      "links": [{"a": "us", "b": "eu", "bandwidth_gbps": 1.0, "latency_s": 0.03},
                                {"a": "eu", "b": "ap", "bandwidth_gbps": 2.0, "latency_s": 0.05}]},
         "algorithm": algo, "run": {"max_sim_time_s": 3.0}}
    d["topology"]["servers"] = [{"name": "ps", "region": "eu"}]  # (used by the methods without a barrier)
    if faults:
        d["faults"] = faults
    return d


def _cases() -> list:
    out = []
    for m in METHODS:
        for grain in ("step", "layer"):
            algo = {**m, "sync_grain": grain}
            try:
                parse_scenario(_data(algo, None))
            except Exception:
                if grain == "layer":
                    continue
                algo = m
            for fk in FAULTS:
                out.append(pytest.param(algo, fk, id=f"{m['name']}-{algo.get('sync_grain', 'none')}-{fk}"))
    return out


def _run(algo: dict, faults: str):
    sim = Simulation(parse_scenario(_data(algo, FAULTS[faults])))
    sim.run()
    sim.close_records()
    return sim


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


@pytest.mark.parametrize("algo,faults", _cases())
def test_fast_step_loop_and_column_table_give_the_reference_events(algo, faults, monkeypatch):
    """Every method at each grain it has, with no faults (equal step times: ties everywhere),
    stragglers and a degradation window, or slow periods, failures, churn and link flaps: the
    fast step loop records the same events as the reference loop (the row-built table of one
    equals the other's to the bit), and the column-built events table equals the row-built one
    (frame and parquet bytes)."""
    monkeypatch.setattr(node, "FAST_STEPS", False)
    reference = _events_table_rows(_run(algo, faults).recorder)
    monkeypatch.setattr(node, "FAST_STEPS", True)
    rec = _run(algo, faults).recorder
    rows = _events_table_rows(rec)
    pd.testing.assert_frame_equal(rows, reference, check_exact=True)
    cols = events_table(rec)
    pd.testing.assert_frame_equal(cols, rows, check_exact=True)
    assert _parquet(cols) == _parquet(rows)
    if faults == "failures":
        assert (rows["kind"] == "fault").any() and (rows["kind"] == "recovery").any()  # faults really ran


def test_empty_records_give_the_same_empty_table():
    """A run that recorded nothing: the column-built table has the row-built one's columns and dtypes."""
    pd.testing.assert_frame_equal(events_table(Recorder()), _events_table_rows(Recorder()), check_exact=True)


def test_kept_group_shapes_give_the_shapes_worked_out_again(monkeypatch):
    """A layer-grain DiLoCo over 12 workers (rings of 12: one class per ring, the same pairs
    every layer), with a degradation window that changes capacities mid-run: the events are
    the same to the bit whether ``transfer_group`` keeps each group's shape or works it out at
    every call, and the kept shapes were used."""
    monkeypatch.setattr(network, "_MIN_CLASS", 2)
    algo = {"name": "diloco", "inner_steps": 5, "sync_grain": "layer"}
    out = {}
    hits = {}
    for keep in (True, False):
        calls = {"n": 0, "kept": 0}
        shape = network.Network._group_shape

        def counted(self, pairs, latency_s, shape=shape, calls=calls, keep=keep):
            calls["n"] += 1
            if not keep:
                self._shapes = {}
            elif not self._down and (tuple(pairs), latency_s) in self._shapes:
                calls["kept"] += 1
            return shape(self, pairs, latency_s)

        monkeypatch.setattr(network.Network, "_group_shape", counted)
        out[keep] = _events_table_rows(_run(algo, "windows").recorder)
        hits[keep] = dict(calls)
    pd.testing.assert_frame_equal(out[True], out[False], check_exact=True)
    assert hits[True]["kept"] > hits[True]["n"] // 2 and hits[False]["kept"] == 0


def random_bin_table(r, most: int):
    """A random table of 4 states' seconds per bin, 1 to ``most - 1`` bins, with empty cells and
    empty bins (what the timeline's selector reads)."""
    nb = int(r.integers(1, most))
    t = r.random((4, nb)) * (r.random((4, nb)) < 0.5)
    t[:, r.random(nb) < 0.3] = 0.0
    return t


def test_majority_runs_are_the_merged_segments():
    """The selector's rows found with numpy (``_majority_runs``) are those of merging bins one
    by one (``_segments_from_bins``): 3,000 random bin tables, with empty bins, ties and
    single-state stretches."""
    import numpy as np

    from sim.report.timeline import majority_runs as _majority_runs, segments_from_bins as _segments_from_bins

    r = np.random.default_rng(0)
    for trial in range(3000):
        t = random_bin_table(r, 30)
        nb = t.shape[1]
        if trial % 3 == 0:  # one state per bin: long runs of one majority
            t = np.zeros((4, nb))
            for b in range(nb):
                t[int(r.integers(0, 2)), b] = r.random() * (r.random() < 0.8)
        edges = np.sort(r.random(nb + 1)) * 100
        merged = [[round(a, 6), round(b, 6), s] for a, b, s, _ in _segments_from_bins(t, edges)]
        assert _majority_runs(t, edges) == merged


def test_fewer_collections_restores_the_collector():
    """``writer.fewer_collections`` raises the collector's first threshold inside its block and
    puts the previous thresholds back after it, also when the block raises."""
    import gc

    from sim.collector import fewer_collections

    before = gc.get_threshold()
    with fewer_collections(gen0=123_456):
        assert gc.get_threshold() == (max(123_456, before[0]), *before[1:])
    assert gc.get_threshold() == before
    with pytest.raises(ZeroDivisionError):
        with fewer_collections():
            1 / 0
    assert gc.get_threshold() == before


def test_simulation_run_raises_the_collector_threshold_and_restores_it():
    """``Simulation.run`` itself (what notebooks and library users call, not only ``run_to_dir``)
    steps with the collector's first threshold raised, and gives back the one it found."""
    import gc

    before = gc.get_threshold()
    seen = []
    sim = Simulation(parse_scenario(_data({"name": "diloco", "inner_steps": 5}, None)))
    sim.run(on_progress=lambda _p: seen.append(gc.get_threshold()[0]), progress_every_s=0.0)
    assert len(seen) > 1 and min(seen[:-1]) >= 100_000
    assert gc.get_threshold() == before
