"""Smoke runs of the benchmark scripts with tiny arguments: they run and print the documented keys.

Timings are not asserted (benchmarks are not tests); each script's ``main(argv)`` is
called in-process and its JSON report checked for the keys bench/README.md describes.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import ROOT, TINY


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_kernels_reports_every_format(capsys):
    """bench/kernels.py reports quantize / dequantize / dequantize_mean GB/s for every format on the torch
    backend, with the payload size from payload_bytes, and the fused outer update."""
    mod = _bench("kernels")
    report = mod.main(["--device", "cpu", "--elements", "1000", "--senders", "2", "--repeats", "1"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))
    assert {f"{f}/torch" for f in mod.FORMATS} <= set(report["formats"])
    assert report["formats"]["e3m0/torch"]["payload_bytes"] == 500 + 4 * 8
    for entry in report["formats"].values():
        assert entry["quantize_gb_per_s"] > 0 and entry["dequantize_mean_gb_per_s"] > 0
    assert report["outer_nesterov"]["torch"]["gb_per_s"] > 0


def test_bench_replicas_reports_loop_and_batched(capsys):
    """bench/replicas.py reports, per N, replica-steps/s and tokens/s of the loop and the batched engine."""
    report = _bench("replicas").main(["--device", "cpu", "--replicas", "1", "2", "--batch-size", "2",
                                      "--seq-len", "8", "--steps", "1", "--warmup", "0"])
    capsys.readouterr()
    assert report["params"] == 478_976 - 120 * 128  # the 0.5M model, with positions for 8 tokens, not 128
    for n in ("1", "2"):
        row = report["per_replicas"][n]
        for key in ("loop_replica_steps_per_s", "batched_replica_steps_per_s", "loop_tokens_per_s",
                    "batched_tokens_per_s", "batched_over_loop"):
            assert row[key] > 0, key


@pytest.mark.slow
def test_bench_overhead_runs_the_same_numerics(capsys):
    """bench/overhead.py times a diloco run and the same numerics with no engine, and both end equal."""
    args = ["--rounds", "1"] + [a for t in TINY for a in ("--set", t)]
    report = _bench("overhead").main(args)
    capsys.readouterr()
    assert report["same_result"] is True
    assert report["run_wall_s"] > 0 and report["numerics_only_wall_s"] > 0
