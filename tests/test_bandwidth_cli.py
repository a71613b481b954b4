"""`locosim bandwidth`: the CU window, the number of rounds, files without run:, variant
overrides and the warning when links the search does not vary cap the answer.

Expected values come from the alpha-beta model, not from the engine: two workers, one per
region, blocking DiLoCo at step grain: a round is H steps of T seconds, then a ring all-reduce
of 2 members, two steps of (alpha + (S/2) / B) each, i.e. sync = 2 alpha + S / B."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

import sim.bandwidth as bandwidth
from sim.bandwidth import search
from sim.cli import main
from sim.scenario import ScenarioError, load_scenario, load_variants

T, H, ALPHA, PARAMS = 0.3, 10, 0.05, 1.0e8
S_BITS = PARAMS * 16  # bf16 on the wire
X_OUTAGE = 7.5        # the WAN link is down over [0, X): the first sync waits for it (X > H T)


def _pair(intra_gbps: float = math.inf, run: dict | None = None, h: int = H, **extra) -> dict:
    """Scenario data: two workers, one per region; a WAN link of latency ALPHA; a 1e8-parameter,
    4-layer timing proxy at T s a step; blocking DiLoCo at step grain with bf16 payloads."""
    data = {
        "name": "pair",
        "topology": {"regions": [{"name": "a", "nodes": 1}, {"name": "b", "nodes": 1}],
                     "links": [{"a": "a", "b": "b", "bandwidth_gbps": 1.0, "latency_s": ALPHA}],
                     "intra_region": {"bandwidth_gbps": intra_gbps, "latency_s": 0.0}},
        "timing": {"params": PARAMS, "layers": 4, "step_time_s": T},
        "numerics": False,
        "algorithm": {"name": "diloco", "inner_steps": h, "payload_dtype": "bf16", "sync_grain": "step"},
    }
    if run is not None:
        data["run"] = run
    data.update(extra)
    return data


def _write(tmp_path, data: dict, name: str = "pair.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _sync_s(gbps: float, intra_gbps: float = math.inf) -> float:
    return 2 * ALPHA + S_BITS / (min(gbps, intra_gbps) * 1e9)


def _round_cu(gbps: float, h: int = H, intra_gbps: float = math.inf) -> float:
    """CU of every round alike: H T / (H T + sync)."""
    return h * T / (h * T + _sync_s(gbps, intra_gbps))


def _outage_all_cu(gbps: float, rounds: int) -> float:
    """CU from time 0 when the first sync can only start at X: the run ends at
    X + sync + (R - 1)(H T + sync) and each worker computed R H T of it."""
    d = _sync_s(gbps)
    return rounds * H * T / (X_OUTAGE + d + (rounds - 1) * (H * T + d))


def _grid(points: int, lo: float = 0.1, hi: float = 1000.0) -> list[float]:
    return [float(x) for x in np.logspace(math.log10(lo), math.log10(hi), points)]


def _first(grid: list[float], cu, target: float) -> float | None:
    return next((g for g in grid if cu(g) >= target - 1e-12), None)


def _bandwidth(capsys, *argv) -> tuple[int, dict | None, str]:
    rc = main(["bandwidth", *map(str, argv), "--json"])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else None), out.err


# --------------------------------------------------------------------------- A: the CU window
@pytest.mark.parametrize("window", ["steady", "all"])
def test_both_windows_give_the_alpha_beta_round_fraction_when_every_round_is_alike(tmp_path, window):
    """Blocking DiLoCo with every round alike: CU over either window is H T / (H T + 2 alpha + S/B)
    at every grid bandwidth, and each answer is the smallest grid point where that reaches the target."""
    sc = load_scenario(_write(tmp_path, _pair(run={"max_rounds": 8})))
    targets = [0.5, 0.8, 0.9]
    res = search(sc, targets, grid_points=20, rounds=8, window=window)
    assert res.window == window and res.rounds == 8
    assert len(res.evaluations) >= 5
    for b, cu in res.evaluations.items():
        assert cu == pytest.approx(_round_cu(b), rel=1e-9), b
    for t in targets:
        assert res.targets[t] == pytest.approx(_first(_grid(20), _round_cu, t), rel=1e-12), t


def test_all_window_counts_a_slow_first_round_that_the_steady_window_leaves_out(tmp_path, capsys):
    """With the WAN link down over [0, X) the first sync waits until X: --window all charges that
    wait (CU = R H T / (X + sync + (R - 1)(H T + sync))), --window steady does not (H T / (H T + sync));
    R is the file's run.max_rounds unless --rounds says otherwise."""
    links = [{"a": "a", "b": "b", "bandwidth_gbps": 1.0, "latency_s": ALPHA,
              "outages": [{"start_s": 0.0, "end_s": X_OUTAGE}]}]
    data = _pair(run={"max_rounds": 6})
    data["topology"]["links"] = links
    path = _write(tmp_path, data)
    common = ["--cu", "0.5", "--grid-min", "0.5", "--grid-max", "8", "--grid-points", "5"]
    seen = {}
    for window, rounds_flag, rounds in (("all", [], 6), ("all", ["--rounds", "8"], 8), ("steady", [], 6)):
        rc, out, err = _bandwidth(capsys, path, "--window", window, *rounds_flag, *common)
        assert rc == 0, err
        assert out["window"] == window and out["rounds"] == rounds
        assert f"CU window {window}" in err and f"{rounds:>7}" in err.splitlines()[2]
        expect = (lambda b: _outage_all_cu(b, rounds)) if window == "all" else _round_cu
        for e in out["evaluations"]:
            assert e["cu"] == pytest.approx(expect(e["bandwidth_gbps"]), rel=1e-9), (window, e)
        seen[window, rounds] = {e["bandwidth_gbps"]: e["cu"] for e in out["evaluations"]}
    shared = set(seen["all", 6]) & set(seen["steady", 6])
    assert shared and all(seen["all", 6][b] < seen["steady", 6][b] - 1e-3 for b in shared)


def test_bad_window_and_rounds_are_one_line_exit_2(tmp_path, capsys):
    """--window outside steady|all, --rounds below 2 and a file's run.max_rounds of 1 are refused in one line."""
    path = _write(tmp_path, _pair(run={"max_rounds": 1}))
    for argv, word in (([path, "--window", "half"], "--window"), ([path, "--rounds", "1"], "--rounds"),
                       ([path], "run.max_rounds")):
        rc, _, err = _bandwidth(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and word in err, err


# --------------------------------------------------------------------------- B: no run: section
def test_bandwidth_needs_no_run_section_and_then_runs_20_rounds(tmp_path, capsys):
    """A file without run: is searched over 20 rounds (the all-window CU of the outage case with
    R = 20 proves it); `locosim validate` still asks for run: (a run needs a stop condition)."""
    data = _pair()
    data["topology"]["links"][0]["outages"] = [{"start_s": 0.0, "end_s": X_OUTAGE}]
    path = _write(tmp_path, data)
    rc, out, err = _bandwidth(capsys, path, "--window", "all", "--cu", "0.5", "--grid-min", "1", "--grid-max", "4",
                              "--grid-points", "3")
    assert rc == 0, err
    assert out["rounds"] == 20
    for e in out["evaluations"]:
        assert e["cu"] == pytest.approx(_outage_all_cu(e["bandwidth_gbps"], 20), rel=1e-9)
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run" in err


# --------------------------------------------------------------------------- C: --set variants.NAME.
def _variants_file(tmp_path) -> str:
    data = _pair(run={"max_rounds": 4})
    data["variants"] = {"short": {"algorithm": {"inner_steps": 5}}, "long": {"algorithm": {"inner_steps": 40}}}
    return _write(tmp_path, data, "variants.yaml")


def test_set_on_a_variant_edits_only_that_variants_block(tmp_path):
    """--set variants.NAME.k=v edits NAME's block before the merge (as if the file said so); plain
    --set applies to every variant after it; a changed algorithm name replaces the section."""
    path = _variants_file(tmp_path)
    got = dict(load_variants(path, ["variants.long.algorithm.inner_steps=50", "algorithm.outer_lr=0.5"]))
    assert got["long"].algorithm.inner_steps == 50 and got["short"].algorithm.inner_steps == 5
    assert got["long"].algorithm.outer_lr == got["short"].algorithm.outer_lr == 0.5
    got = dict(load_variants(path, ["variants.short.algorithm={name: noloco}"]))
    assert got["short"].algorithm.name == "noloco" and got["short"].algorithm.inner_steps == 50  # noloco's default
    assert got["long"].algorithm.name == "diloco"
    got = dict(load_variants(path, ["variants.long.algorithm.inner_steps=7", "algorithm.inner_steps=9"]))
    assert got["long"].algorithm.inner_steps == got["short"].algorithm.inner_steps == 9  # after the merge: wins


def test_set_on_an_unknown_variant_is_one_line_listing_the_variants(tmp_path, capsys):
    """An unknown variant name, or variants.* on a file without variants:, is one line, exit 2."""
    path = _variants_file(tmp_path)
    assert main(["validate", path, "--set", "variants.medium.algorithm.inner_steps=50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no variant 'medium'" in err and "variants: short, long" in err
    with pytest.raises(ScenarioError, match="no variants: section"):
        load_variants(_write(tmp_path, _pair(run={"max_rounds": 4})), ["variants.x.algorithm.inner_steps=5"])


def test_bandwidth_search_uses_the_variant_override(tmp_path, capsys):
    """`locosim bandwidth --variant long --set variants.long.algorithm.inner_steps=20` measures H = 20."""
    path = _variants_file(tmp_path)
    rc, out, err = _bandwidth(capsys, path, "--variant", "long", "--set", "variants.long.algorithm.inner_steps=20",
                              "--cu", "0.9", "--grid-min", "1", "--grid-max", "10", "--grid-points", "4")
    assert rc == 0, err
    one = out["variants"]["long"]
    assert one["algorithm"]["inner_steps"] == 20 and one["rounds"] == 4
    for e in one["evaluations"]:
        assert e["cu"] == pytest.approx(_round_cu(e["bandwidth_gbps"], h=20), rel=1e-9)


# --------------------------------------------------------------------------- E: fixed links that cap
def test_slow_intra_region_link_caps_the_answer_and_the_search_says_so(tmp_path, capsys):
    """With 4 Gbit/s node-to-switch links a transfer moves at min(B, 4): targets that need more are
    not reached on the grid, and the search marks them capped, with the bandwidth they need when
    those links are infinitely fast and the CU at infinite WAN bandwidth; reachable targets are not."""
    intra = 4.0
    path = _write(tmp_path, _pair(intra_gbps=intra, run={"max_rounds": 4}))
    targets = [0.5, 0.9, 0.95]
    rc, out, err = _bandwidth(capsys, path, "--cu", ",".join(map(str, targets)), "--grid-points", "20")
    assert rc == 0, err
    grid = _grid(20)

    def capped(b):
        return _round_cu(b, intra_gbps=intra)

    for e in out["evaluations"]:
        assert e["cu"] == pytest.approx(capped(e["bandwidth_gbps"]), rel=1e-9)
    expect_capped = {}
    for t in targets:
        got, free = _first(grid, capped, t), _first(grid, _round_cu, t)
        assert out["bandwidth_gbps_for_cu"][f"{t:g}"] == (None if got is None else pytest.approx(got, rel=1e-12))
        if got != free:
            expect_capped[f"{t:g}"] = free
    assert set(expect_capped) == {"0.9", "0.95"}  # the case is what the test means it to be
    caps = out["capped_by_fixed_links"]
    assert set(caps) == set(expect_capped)
    for t, free in expect_capped.items():
        assert caps[t]["bandwidth_gbps_if_fixed_links_infinite"] == pytest.approx(free, rel=1e-12)
        assert caps[t]["cu_at_infinite_wan"] == pytest.approx(_round_cu(math.inf, intra_gbps=intra), rel=1e-9)
    assert out["fixed_links"] == "intra-region links (4 Gbit/s)"
    assert out["warning"].startswith("warning: intra-region links (4 Gbit/s)")
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "CU 0.9 needs" in warning[0] and "CU 0.5" not in warning[0]
    row = next(line for line in err.splitlines() if line.startswith("diloco"))
    assert row.split()[-2:] == [">1000*", ">1000*"] and not row.split()[-3].endswith("*")


def test_fixed_links_faster_than_the_grid_raise_no_warning(tmp_path, capsys):
    """Node-to-switch links at the top of the grid's speed never bind: nothing is capped."""
    path = _write(tmp_path, _pair(intra_gbps=1000.0, run={"max_rounds": 4}))
    rc, out, err = _bandwidth(capsys, path, "--cu", "0.5,0.9,0.99", "--grid-points", "12")
    assert rc == 0, err
    assert out["fixed_links"] == "intra-region links (1000 Gbit/s)"
    assert out["capped_by_fixed_links"] == {} and out["warning"] is None and "warning" not in err


def test_a_reached_target_is_capped_when_freeing_the_fixed_links_lowers_its_answer(tmp_path, monkeypatch):
    """Where the fixed links add to every sync (CU = H T / (H T + S/B + S/I), a store-and-forward
    model standing in for the engine), a target reached on the grid is still capped when its answer
    with I infinite is lower; the search's verdicts equal a brute force over the grid both ways."""
    def model_cu(sc, window="steady"):
        b = sc.topology.links[0].bandwidth_gbps * 1e9
        i = sc.topology.intra_region.bandwidth_gbps * 1e9
        return H * T / (H * T + S_BITS / b + S_BITS / i)

    monkeypatch.setattr(bandwidth, "run_cu", model_cu)
    sc = load_scenario(_write(tmp_path, _pair(intra_gbps=20.0, run={"max_rounds": 4})))
    targets = [0.3, 0.6, 0.8, 0.9]
    res = search(sc, targets, grid_points=30, rounds=4)
    grid = _grid(30)

    def with_intra(gbps):
        return lambda b: H * T / (H * T + S_BITS / (b * 1e9) + S_BITS / (gbps * 1e9))

    for t in targets:
        given, free = _first(grid, with_intra(20.0), t), _first(grid, with_intra(math.inf), t)
        assert res.targets[t] == given
        assert (t in res.capped) == (given != free), t
        if t in res.capped:
            assert res.capped[t].uncapped_gbps == free
    assert any(res.targets[t] is not None for t in res.capped)  # a reached target is among the capped
    assert any(t not in res.capped for t in targets)


# --------------------------------------------------------------------------- each window on a two-round timeline
def _two_round_outage_timeline(gbps: float) -> dict:
    """The outage pair over 2 rounds, by hand: compute [0, H T]; the first sync waits for the link
    until X and ends at X + d; compute [X + d, X + d + H T]; the last sync ends at X + 2 d + H T.
    Each worker computes 2 H T in all."""
    d = _sync_s(gbps)
    last_step = X_OUTAGE + d + H * T
    return {"compute": 2 * H * T, "last_step": last_step, "end": last_step + d}


@pytest.mark.parametrize("window", ["steady", "all", "last_step"])
def test_each_window_on_a_hand_computed_two_round_timeline(tmp_path, capsys, window):
    """Over two rounds with the first sync held up by an outage: `all` is 2 H T / (end of the last
    sync); `last_step` is 2 H T / (end of the last inner step's compute), the last sync not waited
    for; `steady` starts after the first quarter of the rounds, which for two rounds is time 0, so it
    equals `all`. The table and the JSON name the window."""
    data = _pair(run={"max_rounds": 2})
    data["topology"]["links"][0]["outages"] = [{"start_s": 0.0, "end_s": X_OUTAGE}]
    path = _write(tmp_path, data)
    rc, out, err = _bandwidth(capsys, path, "--window", window, "--cu", "0.5", "--grid-min", "0.5", "--grid-max", "8",
                              "--grid-points", "5")
    assert rc == 0, err
    assert out["window"] == window and out["window_definition"].startswith(window) and out["rounds"] == 2
    assert f"CU window {window}" in err
    for e in out["evaluations"]:
        tl = _two_round_outage_timeline(e["bandwidth_gbps"])
        horizon = tl["last_step"] if window == "last_step" else tl["end"]
        assert e["cu"] == pytest.approx(tl["compute"] / horizon, rel=1e-9), e
    if window == "last_step":
        assert all(e["cu"] > _two_round_outage_timeline(e["bandwidth_gbps"])["compute"]
                   / _two_round_outage_timeline(e["bandwidth_gbps"])["end"] for e in out["evaluations"])


def test_the_chart_draws_every_methods_curve_even_one_that_reaches_no_target(tmp_path, capsys):
    """With -o, every method is evaluated at the chart's log-spaced grid points (ends included), so
    ddp, which reaches no target on a thin link, is drawn as a curve like DiLoCo, not as one dot at the
    top of the grid; its CU does not decrease with bandwidth."""
    from sim.bandwidth import CURVE_POINTS

    data = _pair(run={"max_rounds": 4}, variants={"ddp": {"algorithm": {"name": "ddp", "payload_dtype": "bf16"}},
                                                   "diloco": {}})
    path = _write(tmp_path, data)
    html_path = tmp_path / "bw.html"
    rc, out, err = _bandwidth(capsys, path, "--cu", "0.999", "--grid-min", "0.5", "--grid-max", "8", "--grid-points",
                              "12", "-o", html_path)
    assert rc == 0, err
    grid = _grid(12, 0.5, 8)
    ends = {grid[0], grid[-1]}
    for name in ("ddp", "diloco"):
        ev = out["variants"][name]["evaluations"]
        bws = [e["bandwidth_gbps"] for e in ev]
        assert len(bws) >= CURVE_POINTS and ends <= set(bws), (name, bws)
        cus = [e["cu"] for e in sorted(ev, key=lambda e: e["bandwidth_gbps"])]
        assert all(b >= a - 1e-12 for a, b in zip(cus, cus[1:])), (name, cus)
    assert out["variants"]["ddp"]["bandwidth_gbps_for_cu"]["0.999"] is None
    page = html_path.read_text()
    assert page.count('"name":"ddp"') + page.count('"name": "ddp"') >= 1
