"""Dashboards: what the run page and the comparison page show, checked against the run's own files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sim.report.compare import load_groups, write_compare
from sim.report.compare_analysis import choose_target, diff_rows, group_stats, pick_baseline
from sim.report.dashboard import build_dashboard, run_figures
from sim.report.network import network_series
from sim.report.page import export_pngs
from sim.report.style import MAX_GANTT_ROWS, STATE_COLORS, byte_unit
from sim.report.timeline import timeline
from sim.report.runs import RunData, load_run
from tests.conftest import ROOT, TINY

# One tiny run per method, plus a second seed of DiLoCo (a replication). Made once per session.
METHODS = {
    "diloco": ["algorithm={name: diloco, inner_steps: 4}", "run.max_rounds=4"],
    "diloco_seed1": ["algorithm={name: diloco, inner_steps: 4}", "run.max_rounds=4", "seed=1"],
    "ddp": ["algorithm={name: ddp}", "run.max_rounds=16"],
    "streaming": ["algorithm={name: streaming_diloco, inner_steps: 4, fragment_layers: 1}", "run.max_rounds=8"],
    "eager": ["algorithm={name: eager_diloco, inner_steps: 4}", "run.max_rounds=4"],
    "noloco": ["algorithm={name: noloco, inner_steps: 4}", "run.max_rounds=4"],
}
_CACHE: dict = {}


def make_runs(tmp_path_factory) -> dict:
    """Run directories of METHODS under one sweep directory (cached for the session)."""
    if "runs" not in _CACHE:
        from sim.runner import Simulation
        from sim.scenario import load_scenario
        from sim.writer import run_to_dir

        sweep = tmp_path_factory.mktemp("sweep")
        runs = {}
        for name, overrides in METHODS.items():
            sc = load_scenario(ROOT / "scenarios" / "quickstart.yaml",
                               TINY + ["run.eval_every_steps=4", "run.max_tokens=null"] + overrides)
            run_to_dir(Simulation(sc), sweep / name)
            runs[name] = sweep / name
        _CACHE["runs"] = (sweep, runs)
    return _CACHE["runs"]


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    return make_runs(tmp_path_factory)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# ---------------------------------------------------------------------- one run
def test_dashboard_has_every_figure_and_the_summary(sweep):
    """A run's dashboard.html holds one div per figure (timeline, utilization, network, learning) and
    embeds the same summary as summary.json."""
    _, runs = sweep
    d = runs["diloco"]
    page = (d / "dashboard.html").read_text()
    for fig_id in ("fig-timeline", "fig-util-node", "fig-util-region", "fig-throughput-link", "fig-throughput-pair",
                   "fig-bytes-link", "fig-bandwidth-peak", "fig-topology", "fig-loss-time", "fig-loss-tokens",
                   "fig-loss-bytes"):
        assert f'id="{fig_id}"' in page, fig_id
    assert page.count("plotly.js v") <= 2  # plotly.js is inlined once (its banner names the version)
    embedded = page.split("id='locosim-summary'>", 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded.replace("<\\/", "</")) == json.loads((d / "summary.json").read_text())
    for text in ("compute utilization (CU)", "time to target eval loss", "bytes per worker per round",
                 "peak WAN bandwidth used", "inner_steps=4", "4 workers in 2 regions"):
        assert text in page, text


def test_figures_agree_with_summary(sweep):
    """The bytes-per-link bars are the summary's bytes per link; the utilization bars are its per-node
    state fractions; the eval-loss curve ends at its final eval loss."""
    _, runs = sweep
    run = load_run(runs["diloco"])
    figs, selector = run_figures(run)
    assert selector is None  # 4 workers: one timeline row each
    bars = figs["fig-bytes-link"][0].data[0]
    by_link = {l["link"]: l["bytes"] for l in run.summary["bytes_per_link"] if l["bytes"] > 0}
    div, unit = byte_unit(max(by_link.values()))  # the axis is in kB / MB / GB, never plotly's SI "B"
    assert figs["fig-bytes-link"][0].layout.yaxis.title.text == unit and unit in ("kB", "MB", "GB")
    assert {k: v * div for k, v in zip(bars.x, bars.y)} == pytest.approx(by_link)
    util = figs["fig-util-node"][0]
    compute = next(t for t in util.data if t.name == "compute")
    assert list(compute.y) == [run.summary["per_node"][n]["compute_frac"] for n in compute.x]
    ev = figs["fig-loss-time"][0].data[-1]
    assert ev.y[-1] == pytest.approx(run.summary["final_eval_loss"])
    rows = figs["fig-timeline"][0].layout.yaxis.categoryarray
    assert list(rows) == list(run.summary["per_node"])


def test_throughput_integrates_to_link_bytes_and_peaks_at_capacity(sweep):
    """Throughput over time per WAN link integrates to the bytes that link carried, and a ring
    all-reduce's lone flow per direction runs at the full 1 Gbit/s: the peak the summary reports."""
    _, runs = sweep
    run = load_run(runs["diloco"])
    net = network_series(run)
    wan = {(l["src"], l["dst"]): l for l in run.summary["bytes_per_link"] if l["kind"] == "wan"}
    assert set(net["links"]) == set(wan)
    for link, (t, r) in net["links"].items():
        assert np.sum(r[:-1] * np.diff(t)) == pytest.approx(wan[link]["bytes"], rel=1e-9)
        assert net["peaks_gbps"][link] == pytest.approx(1.0) == pytest.approx(wan[link]["peak_gbps"])
        assert wan[link]["mean_gbps"] == pytest.approx(wan[link]["bytes"] * 8e-9 / run.summary["sim_duration_s"])
    assert run.summary["peak_wan_gbps"] == pytest.approx(1.0)
    # us->eu traffic between regions equals what crossed the us->eu WAN link (one hop)
    t, r = net["pairs"][("us", "eu")]
    assert np.sum(r[:-1] * np.diff(t)) == pytest.approx(wan[("us", "eu")]["bytes"], rel=1e-9)
    s = run.summary
    assert s["bytes_per_worker_per_round"] == pytest.approx(s["bytes_total"] / (s["workers"] * s["rounds"]))
    for region, row in s["per_region"].items():
        assert row["utilization"] == row["compute_frac"]
        assert sum(row[f"{st}_frac"] for st in ("compute", "comm_blocked", "straggler_wait", "down")) == \
            pytest.approx(1.0)


def test_diagnostics_plotted_only_when_present(sweep):
    """Metrics rows of kind 'spread' or 'drift' (worker -1, value in the loss column) get a diagnostics
    figure with their values; a run without them has no such figure."""
    _, runs = sweep
    run = load_run(runs["diloco"])
    assert "fig-diagnostics" not in build_dashboard(run).figures
    ev = run.metrics[run.metrics["kind"] == "eval"]
    extra = pd.concat([ev.assign(kind="spread", loss=np.linspace(0.1, 0.2, len(ev))),
                       ev.assign(kind="drift", loss=np.linspace(3.0, 1.0, len(ev)))])
    with_diag = RunData(run.path, run.manifest, run.summary, run.events,
                        pd.concat([run.metrics, extra]).sort_values("time_s", kind="stable"), run.label)
    fig = build_dashboard(with_diag).figures["fig-diagnostics"]
    by_name = {t.name.split(":")[0]: t for t in fig.data}
    assert list(by_name["NoLoCo spread"].y) == pytest.approx(list(np.linspace(0.1, 0.2, len(ev))))
    assert list(by_name["eager DiLoCo drift"].y) == pytest.approx(list(np.linspace(3.0, 1.0, len(ev))))
    # the real noloco and eager runs record them too
    assert "fig-diagnostics" in build_dashboard(load_run(runs["noloco"])).figures


def test_timeline_aggregates_rows_above_64_workers():
    """With more than 64 workers the timeline has one row per region, each slice coloured by the state
    most of its workers were in, and the selector carries every worker's own row."""
    nodes = [f"r{k}/{i}" for k in range(2) for i in range(40)]
    spans = []
    for i, n in enumerate(nodes):
        slow = n.startswith("r1")  # region r1 spends most of its time blocked
        spans += [(n, "compute", 0.0, 1.0 if slow else 9.0), (n, "comm_blocked", 1.0 if slow else 9.0, 10.0)]
    events = pd.DataFrame(spans, columns=["node", "state", "start_s", "end_s"]).assign(kind="state")
    summary = {"sim_duration_s": 10.0, "per_node": {n: {} for n in nodes}}
    fig, selector = timeline(RunData(ROOT, {}, summary, events, pd.DataFrame()))
    assert len(nodes) > MAX_GANTT_ROWS
    assert list(fig.layout.yaxis.categoryarray) == ["r0 (40 workers)", "r1 (40 workers)"]
    compute, blocked = fig.data[0], fig.data[1]
    assert set(compute.y) == {"r0 (40 workers)", "r1 (40 workers)"}
    r1_compute = sum(x for y, x in zip(compute.y, compute.x) if y.startswith("r1"))
    r1_blocked = sum(x for y, x in zip(blocked.y, blocked.x) if y.startswith("r1"))
    assert r1_compute == pytest.approx(1.0, abs=0.06) and r1_blocked == pytest.approx(9.0, abs=0.06)
    assert set(selector["workers"]) == set(nodes)
    assert selector["workers"]["r0/0"][0][:1] == [0.0] and selector["workers"]["r0/0"][-1][2] == 1


# ---------------------------------------------------------------------- many runs
def test_compare_page_and_sweep_directory(sweep, tmp_path):
    """`locosim compare SWEEP_DIR` finds every run directory inside, writes one page with the
    comparison figures, and groups the two DiLoCo seeds into one replication group."""
    root, runs = sweep
    out = tmp_path / "compare.html"
    proc = cli("compare", str(root), "-o", str(out), "--baseline", "ddp")
    assert proc.returncode == 0, proc.stderr
    assert f"compared {len(runs)} runs ({len(runs) - 1} groups)" in proc.stdout
    page = out.read_text()
    for fig_id in ("cmp-fair", "cmp-loss-time", "cmp-loss-bytes", "cmp-loss-tokens", "cmp-cu",
                   "cmp-states", "cmp-bytes", "cmp-diagnostics"):
        assert f'id="{fig_id}"' in page, fig_id
    assert "id='diff-table'" in page and "(baseline)" in page
    assert 'id="cmp-time-to-target"' not in page  # no target chosen: no made-up one
    with_target = tmp_path / "target.html"
    assert cli("compare", str(root), "-o", str(with_target), "--target", "3.0").returncode == 0
    assert 'id="cmp-time-to-target"' in with_target.read_text()


def test_compare_refuses_runs_of_different_models(sweep, tmp_path):
    """Runs that train a different model are refused with one line naming the field (exit 2),
    and compared with --force."""
    _, runs = sweep
    other = tmp_path / "bigger"
    shutil.copytree(runs["ddp"], other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["scenario"]["model"]["d_model"] = 32
    (other / "manifest.json").write_text(json.dumps(manifest))
    line = one_line_exit_2(cli("compare", str(runs["diloco"]), str(other), "-o", str(tmp_path / "c.html")))
    assert "not comparable" in line and "model.d_model (32 vs 16)" in line and "--force" in line
    assert not (tmp_path / "c.html").exists()
    forced = cli("compare", str(runs["diloco"]), str(other), "-o", str(tmp_path / "c.html"), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Forced:" in (tmp_path / "c.html").read_text()
    assert "not a run directory" in one_line_exit_2(cli("compare", str(tmp_path / "c.html"), "-o",
                                                        str(tmp_path / "d.html")))
    assert "--baseline nope" in one_line_exit_2(cli("compare", str(runs["diloco"]), "--baseline", "nope", "-o",
                                                    str(tmp_path / "e.html")))


def test_replications_are_a_mean_with_a_band(sweep):
    """Two seeds of one scenario are one group: one mean line (the mean of both runs' eval curves on a
    common grid) inside a min-max band, in the group's colour, instead of two lines."""
    _, runs = sweep
    groups = load_groups([runs["diloco"], runs["diloco_seed1"], runs["ddp"]])
    assert [len(g.runs) for g in groups] == [2, 1] and groups[0].seeds == [0, 1]
    from sim.report.compare_figures import compare_figures

    fig = compare_figures(groups, None)["cmp-loss-time"][0]
    rep = [t for t in fig.data if t.legendgroup == groups[0].label]
    hi, lo, mean = rep
    assert lo.fill == "tonexty" and mean.line.color == groups[0].color
    curves = [load_run(runs[n]).metrics.query("kind == 'eval'") for n in ("diloco", "diloco_seed1")]
    x = np.asarray(mean.x)
    ys = np.array([np.interp(x, c["time_s"], c["loss"]) for c in curves])
    assert np.asarray(mean.y) == pytest.approx(ys.mean(axis=0))
    assert np.all(np.asarray(lo.y) <= np.asarray(mean.y) + 1e-12) and np.all(np.asarray(mean.y) <= np.asarray(hi.y) + 1e-12)
    assert not np.allclose(ys[0], ys[1])  # the seeds differ, so the band has width
    assert len([t for t in fig.data if t.legendgroup == groups[1].label]) == 1  # a lone run is one line


def test_baseline_differences(sweep):
    """The difference table gives each run's final loss minus the baseline's, CU minus the baseline's,
    and bytes and time to target as multiples of the baseline's (replications averaged first)."""
    _, runs = sweep
    groups = load_groups([runs["diloco"], runs["diloco_seed1"], runs["ddp"]])
    base = pick_baseline(groups, str(runs["ddp"]))
    assert base is groups[1]
    assert choose_target(groups, None)[0] is None  # no default target (see test_compare_is_fair_by_default)
    s = {n: json.loads((runs[n] / "summary.json").read_text()) for n in ("diloco", "diloco_seed1", "ddp")}
    target = max(v["final_eval_loss"] for v in s.values())  # one every run reached
    rows = diff_rows(groups, base, target)
    d, b = rows[0], rows[1]
    assert b["baseline"] and not d["baseline"]
    mean = lambda k: (s["diloco"][k] + s["diloco_seed1"][k]) / 2  # noqa: E731
    assert d["d_final_eval_loss"] == pytest.approx(mean("final_eval_loss") - s["ddp"]["final_eval_loss"])
    assert d["d_utilization"] == pytest.approx(mean("utilization") - s["ddp"]["utilization"])
    assert d["x_bytes_total"] == pytest.approx(mean("bytes_total") / s["ddp"]["bytes_total"])
    assert d["x_time_to_target"] == pytest.approx(group_stats(groups[0], target)["time_to_target_s"]
                                                  / group_stats(groups[1], target)["time_to_target_s"])
    assert b["d_final_eval_loss"] == 0 and b["x_bytes_total"] == 1
    assert d["bytes_total"] < b["bytes_total"]  # DiLoCo syncs every 4 steps, ddp every step


def test_png_export_skips_with_one_message_without_chromium(sweep, tmp_path, monkeypatch):
    """Without a Chromium, --png writes nothing and says why in one line instead of failing."""
    _, runs = sweep
    monkeypatch.setattr("sim.report.page.find_chromium", lambda: None)
    groups = load_groups([runs["diloco"]])
    written, note = export_pngs({"x": build_dashboard(groups[0].runs[0]).figures["fig-loss-time"]}, tmp_path / "png")
    assert written == [] and note.startswith("png export skipped") and "\n" not in note
    _, _, note = write_compare([runs["diloco"]], tmp_path / "c.html", png_dir=tmp_path / "png")
    assert note.startswith("png export skipped") and not list((tmp_path / "png").glob("*.png"))



# The same methods after 8 ddp warm-up steps (ddp itself has none), in one directory. Made once per session.
WARM_METHODS = {
    "ddp": ["algorithm={name: ddp}", "run.max_rounds=40"],
    "diloco": ["algorithm={name: diloco, inner_steps: 4, warm_start_steps: 8}", "run.max_rounds=6"],
    "streaming": ["algorithm={name: streaming_diloco, inner_steps: 4, fragment_layers: 1, warm_start_steps: 8}",
                  "run.max_rounds=6"],
    "eager": ["algorithm={name: eager_diloco, inner_steps: 4, warm_start_steps: 8}", "run.max_rounds=6"],
    "noloco": ["algorithm={name: noloco, inner_steps: 4, warm_start_steps: 8}", "run.max_rounds=6"],
}


def make_warm_runs(tmp_path_factory):
    """Run directories of WARM_METHODS under one directory (cached for the session)."""
    if "warm" not in _CACHE:
        from sim.runner import Simulation
        from sim.scenario import load_scenario
        from sim.writer import run_to_dir

        root = tmp_path_factory.mktemp("warm")
        for name, overrides in WARM_METHODS.items():
            sc = load_scenario(ROOT / "scenarios" / "quickstart.yaml",
                               TINY + ["run.eval_every_steps=4", "run.max_tokens=null"] + overrides)
            run_to_dir(Simulation(sc), root / name)
        _CACHE["warm"] = root
    return _CACHE["warm"]


def make_fault_run(tmp_path_factory):
    """A spot_churn run (failures, churn, stragglers, a 2 s sync timeout; every replica evaluated),
    made once per session."""
    if "faults" not in _CACHE:
        from sim.runner import Simulation
        from sim.scenario import load_variants
        from sim.writer import run_to_dir

        (_, sc), = [v for v in load_variants(ROOT / "scenarios/spot_churn.yaml",
                                             TINY + ["run.max_sim_time_s=40", "run.eval_replicas=true"])
                    if v[0] == "diloco_timeout"]
        out = tmp_path_factory.mktemp("faults") / "spot_churn"
        run_to_dir(Simulation(sc), out)
        _CACHE["faults"] = out
    return _CACHE["faults"]


def test_faults_panel_shows_every_fault_fetch_and_dropped_contribution(tmp_path_factory, tmp_path):
    """A run with failures, churn, stragglers and a sync timeout gets a Faults section: one bar per
    fault span and parameter fetch in events.parquet, one marker per dropped contribution; a run
    without faults has no such section."""
    from sim.runner import Simulation
    from sim.scenario import load_scenario
    from sim.writer import run_to_dir

    run = load_run(make_fault_run(tmp_path_factory))
    figs, _ = run_figures(run)
    fig = figs["fig-faults"][0]
    ev = run.events
    spans = ev[ev["kind"].isin(["fault", "recovery"])]
    dropped = ev[ev["kind"] == "dropped"]
    assert len(spans) and len(dropped)  # the scenario really had both
    assert sum(len(t.x) for t in fig.data if t.type == "bar") == len(spans)
    assert sum(len(t.x) for t in fig.data if t.type == "scatter") == len(dropped)
    names = {t.name for t in fig.data}
    assert "parameter fetch from a peer" in names and "node down (failure)" in names
    page = "\n".join(build_dashboard(run).parts)
    assert "<h2>Faults</h2>" in page and "contributions dropped" in page

    quiet = tmp_path / "quiet"
    run_to_dir(Simulation(load_scenario(ROOT / "scenarios/quickstart.yaml", TINY + ["run.max_rounds=2"])), quiet)
    assert "fig-faults" not in run_figures(load_run(quiet))[0]
    assert "<h2>Faults</h2>" not in "\n".join(build_dashboard(load_run(quiet)).parts)


# ---------------------------------------------------------------------- honest pages (issue 18)
def make_timing_runs(tmp_path_factory):
    """scenarios/wan_1b.yaml's five timing-only variants (1B proxy, no numerics) on a short budget,
    in one directory, made once per session."""
    if "timing" not in _CACHE:
        from sim.runner import Simulation
        from sim.scenario import load_variants
        from sim.writer import run_to_dir

        root = tmp_path_factory.mktemp("timing")
        for name, sc in load_variants(ROOT / "scenarios/wan_1b.yaml", ["run.max_rounds=3",
                                                                      "variants.ddp.run.max_rounds=30"]):
            run_to_dir(Simulation(sc), root / name)
        _CACHE["timing"] = root
    return _CACHE["timing"]


def _latest(metrics: pd.DataFrame, column: str, x: float) -> float:
    ev = metrics[(metrics["kind"] == "eval") & (metrics[column] <= x)]
    return float(ev.sort_values([column, "time_s"])["loss"].iloc[-1])


def test_compare_is_fair_by_default(sweep, tmp_path):
    """Without a target the comparison makes none up: it gives each run's eval loss at the most tokens
    and the most simulated time every run reached (the latest eval at or before each), and a notice
    names the different simulated times when the runs ended at different budgets; two runs that end
    alike get no notice."""
    from sim.report.compare_analysis import fair_budgets

    _, runs = sweep
    groups = load_groups([runs["ddp"], runs["diloco"]])
    target, why = choose_target(groups, None)
    assert target is None and "--target" in why
    fair = fair_budgets(groups)
    data = [load_run(runs[n]) for n in ("ddp", "diloco")]
    ev = [d.metrics[d.metrics["kind"] == "eval"] for d in data]
    assert fair["tokens"] == min(e["tokens"].max() for e in ev)
    assert fair["time_s"] == min(e["time_s"].max() for e in ev)
    rows = diff_rows(groups, groups[0], None)
    for row, d in zip(rows, data):
        assert row["loss_at_tokens"] == pytest.approx(_latest(d.metrics, "tokens", fair["tokens"]))
        assert row["loss_at_time"] == pytest.approx(_latest(d.metrics, "time_s", fair["time_s"]))
    assert rows[1]["d_loss_at_time"] == pytest.approx(rows[1]["loss_at_time"] - rows[0]["loss_at_time"])
    from sim.report.compare_figures import compare_figures

    floor = data[0].summary["loss_floor"]  # the chart's bars are the gap to the floor, from a real zero
    at_tokens, at_time = compare_figures(groups, None)["cmp-fair"][0].data
    assert list(at_tokens.y) == pytest.approx([r["loss_at_tokens"] - floor for r in rows])
    assert list(at_time.y) == pytest.approx([r["loss_at_time"] - floor for r in rows])
    ends = [d.summary["sim_duration_s"] for d in data]
    assert max(ends) > 1.01 * min(ends)  # ddp pays the WAN every step: the runs end at different times
    out = tmp_path / "fair.html"
    write_compare([runs["ddp"], runs["diloco"]], out)
    page = out.read_text()
    notice = page.split("id='fair-notice'>", 1)[1].split("</p>", 1)[0]
    assert "different budgets" in notice and f"{min(ends):,.4g} s" in notice and f"{max(ends):,.4g} s" in notice
    same = tmp_path / "same"
    shutil.copytree(runs["diloco"], same / "a")
    shutil.copytree(runs["diloco"], same / "b")
    write_compare([same / "a", same / "b"], tmp_path / "same.html", force=True)
    assert "fair-notice" not in (tmp_path / "same.html").read_text()


def test_timing_only_comparison_leaves_out_losses_and_shows_the_proxy(tmp_path_factory, tmp_path):
    """Timing-only runs compared: no loss figure, no time-to-target bars, no loss columns; the header
    names the timing proxy (1e+09 parameters, 24 layers) instead of the untrained tiny model; and every
    figure that is drawn has data."""
    root = make_timing_runs(tmp_path_factory)
    out = tmp_path / "timing.html"
    write_compare([root], out, baseline="ddp")
    page = out.read_text()
    for fig_id in ("cmp-loss-time", "cmp-loss-bytes", "cmp-loss-tokens", "cmp-time-to-target", "cmp-fair"):
        assert f'id="{fig_id}"' not in page, fig_id
    for fig_id in ("cmp-cu", "cmp-states", "cmp-bytes"):
        assert f'id="{fig_id}"' in page, fig_id
    header = page.split("<table class='kv'>", 1)[1].split("</table>", 1)[0]
    assert "timing proxy" in header and "1e+09 parameters, 24 layers, 0.1 s per step" in header
    assert "<th>model</th>" not in header and "not reached" not in page
    notice = page.split("id='fair-notice'>", 1)[1].split("</p>", 1)[0]  # ddp ran 30 steps, the others 300
    assert "different budgets" in notice and "tokens from 6,144 to" in notice and "are rates" in notice
    diff = page.split("id='diff-table'", 1)[1].split("</table>", 1)[0]
    assert "final eval loss" not in diff and "CU" in diff
    from sim.report.compare_figures import compare_figures

    groups = load_groups([root])
    for fig, _ in compare_figures(groups, None).values():
        assert all(len(t.y) for t in fig.data if t.type == "bar")
    dash = build_dashboard(load_run(root / "diloco"))
    header = "\n".join(dash.parts)
    assert "timing proxy" in header and "<th>model</th>" not in header


def test_method_colours_are_not_state_colours(sweep):
    """A colour means one thing on a page: no run (method) colour of the comparison, and no link
    colour of the throughput charts, is one of the worker-state colours."""
    from sim.report.style import PALETTE, SERIES_PALETTE

    states = {c.lower() for c in STATE_COLORS.values()}
    assert not states & {c.lower() for c in PALETTE} and not states & {c.lower() for c in SERIES_PALETTE}
    _, runs = sweep
    groups = load_groups([runs[n] for n in METHODS])
    assert not states & {g.color.lower() for g in groups}


def test_throughput_of_many_bursts_is_a_time_average_with_the_peak_apart():
    """500 bursts at link capacity (a ddp run) are drawn as means over equal time bins, whose area is
    still the bytes sent, plus the exact peak as its own line: not 500 spikes that fill the chart."""
    from sim.report.network import MAX_STEP_POINTS, throughput_figure as _throughput_figure

    t = np.arange(0, 100.0, 0.1)  # 1,000 steps: sending at 1 Gbit/s for 0.01 s of every 0.1 s
    t = np.sort(np.r_[t, t + 0.01])
    r = np.where(np.arange(len(t)) % 2 == 0, 1e9 / 8, 0.0)
    assert len(t) > MAX_STEP_POINTS
    fig = _throughput_figure("Throughput", {("a", "b"): (t, r)}, 100.0, {("a", "b"): 1.0})
    mean, peak = fig.data
    x, y = np.asarray(mean.x), np.asarray(mean.y)
    assert np.sum(y[:-1] * np.diff(x)) == pytest.approx(np.sum(r[:-1] * np.diff(t)) * 8 / 1e9, rel=1e-6)
    assert y.max() == pytest.approx(0.1, rel=1e-6)  # the mean: a tenth of capacity
    assert list(peak.y) == pytest.approx([1.0, 1.0]) and peak.line.dash == "dash"
    assert "mean 0.1" in mean.name and "time-averaged" in fig.layout.title.text


def test_long_timeline_is_cut_into_slices_of_state_shares():
    """A timeline with more than MAX_SPANS_PER_ROW spans in a row (488 ddp rounds) keeps one row per
    worker but is cut into slices, each drawn as its states' shares: every row's compute bars add up
    to the time it computed, and there are at most a few bars per slice, not one per span."""
    from sim.report.timeline import GANTT_SLICES, MAX_SPANS_PER_ROW

    nodes = ["a/0", "a/1", "b/0"]
    spans = []
    for n in nodes:
        for k in range(500):  # 0.2 s compute, 0.8 s blocked: 20% CU
            spans += [(n, "compute", k * 1.0, k * 1.0 + 0.2), (n, "comm_blocked", k * 1.0 + 0.2, k + 1.0)]
    events = pd.DataFrame(spans, columns=["node", "state", "start_s", "end_s"]).assign(kind="state")
    fig, selector = timeline(RunData(ROOT, {}, {"sim_duration_s": 500.0, "per_node": {n: {} for n in nodes}},
                                     events, pd.DataFrame()))
    assert 1000 > MAX_SPANS_PER_ROW and selector is None
    assert list(fig.layout.yaxis.categoryarray) == nodes
    compute, blocked = fig.data[0], fig.data[1]
    for n in nodes:
        assert sum(x for y, x in zip(compute.y, compute.x) if y == n) == pytest.approx(100.0, rel=1e-6)
        assert sum(x for y, x in zip(blocked.y, blocked.x) if y == n) == pytest.approx(400.0, rel=1e-6)
    assert sum(len(t.x) for t in fig.data) <= 2 * GANTT_SLICES * len(nodes)


def test_titles_are_wrapped_below_the_toolbar():
    """A figure title longer than a half-width figure holds is cut into lines at spaces, and every
    title starts below plotly's toolbar with a top margin that fits its lines."""
    import plotly.graph_objects as go

    from sim.report.page import Page
    from sim.report.style import TITLE_CHARS, TOOLBAR_PX

    long = "Throughput per region pair (source to destination): time-averaged (mean over 0.578 s bins), peak"
    page = Page("t")
    fig = go.Figure(layout={"title": {"text": long}, "height": 400})
    page.figure("f", fig)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) == 2 and all(len(l) <= TITLE_CHARS[False] for l in lines) and " ".join(lines) == long
    assert fig.layout.title.y == pytest.approx(1 - TOOLBAR_PX / 400) and fig.layout.title.yanchor == "top"
    assert fig.layout.margin.t >= TOOLBAR_PX + 20 * len(lines)


def test_bytes_on_the_wire_and_wan_bytes_are_defined_on_both_pages(sweep, tmp_path):
    """Both pages say what 'bytes on the wire' and 'WAN bytes' count, and the diagnostics axis has a
    unit."""
    _, runs = sweep
    run_page = (runs["noloco"] / "dashboard.html").read_text()
    write_compare([runs["ddp"], runs["noloco"]], tmp_path / "c.html")
    for page in (run_page, (tmp_path / "c.html").read_text()):
        assert "<b>WAN bytes</b>: bytes over WAN links, counted once per WAN link" in page
    fig = build_dashboard(load_run(runs["noloco"])).figures["fig-diagnostics"]
    assert "parameter units" in fig.layout.yaxis.title.text


def test_a_closing_eval_at_the_time_of_the_last_grid_eval_is_not_a_vertical_drop():
    """Two evals at the same simulated time (a grid eval, then the run's closing eval after the last
    sync) are drawn as one point holding the later loss, so the curve has no vertical segment."""
    from sim.report.compare_analysis import band

    metrics = pd.DataFrame({"kind": "eval", "worker": -1, "step": [0, 1, 2, 2], "time_s": [0.0, 1.0, 2.0, 2.0],
                            "loss": [3.0, 2.5, 2.2, 1.9], "tokens": [0, 10, 20, 20], "bytes": [0.0, 1.0, 2.0, 2.0]})
    run = RunData(ROOT, {}, {}, pd.DataFrame(), metrics)
    x, mean, lo, hi = band([run], "time_s")
    assert list(x) == [0.0, 1.0, 2.0] and list(mean) == [3.0, 2.5, 1.9]
    from sim.report.learning import loss_vs, loss_vs_time

    for fig in (loss_vs(metrics, "tokens", "t", "tokens", None), loss_vs_time(metrics, None)):  # the run page too
        assert list(fig.data[-1].y) == [3.0, 2.5, 1.9]


# --------------------------------------------------------------------------- phases, new charts (issue 27)
def test_dashboard_and_compare_show_phases_and_mark_the_end_of_warm_up(tmp_path_factory, tmp_path):
    """A run with warm-up: the dashboard's phase table has the whole run, warm-up and the method with
    summary.json's numbers, and every time-axis figure has a line where warm-up ends (summary's
    phases.warm_up.end_s); ddp (no warm-up) has no such line. The compare page's loss-vs-time marks it,
    its differences table has the after-warm-up rows, and its budgets after warm-up are the runs' own
    last evals counted from the end of warm-up."""
    from sim.report.compare_analysis import fair_budgets
    from sim.report.compare_figures import compare_figures
    from sim.report.dashboard import TIME_AXIS_FIGURES
    from sim.report.figure import WARM_UP_SHAPE

    root = make_warm_runs(tmp_path_factory)
    run = load_run(root / "diloco")
    t_w = run.summary["phases"]["warm_up"]["end_s"]
    page = build_dashboard(run)
    html = "\n".join(page.parts)
    table = html.split("id='phases-table'", 1)[1].split("</table>", 1)[0]
    method = run.summary["phases"]["method"]
    assert "warm-up (ddp)" in table and f"{method['utilization']:.1%}" in table
    figs, _ = run_figures(run)
    for fig_id in TIME_AXIS_FIGURES:
        if fig_id in figs:
            xs = [sh.x0 for sh in figs[fig_id][0].layout.shapes if sh.name == WARM_UP_SHAPE]
            assert xs and all(x == pytest.approx(t_w) for x in xs), fig_id
    ddp_figs, _ = run_figures(load_run(root / "ddp"))
    assert not any(sh.name == WARM_UP_SHAPE for f, _ in ddp_figs.values() for sh in f.layout.shapes)
    groups = load_groups([root])
    fig = compare_figures(groups, None)["cmp-loss-time"][0]
    assert [sh.x0 for sh in fig.layout.shapes if sh.name == WARM_UP_SHAPE] == [pytest.approx(t_w)]
    fair = fair_budgets(groups)
    runs = [r for g in groups for r in g.runs]
    ev = {r.label: r.metrics[r.metrics["kind"] == "eval"] for r in runs}
    warm = {r.label: ((r.summary["phases"].get("warm_up") or {}).get("end_s", 0.0),
                      (r.summary["phases"].get("warm_up") or {}).get("tokens", 0)) for r in runs}
    assert fair["after_warm_up"]
    assert fair["method_time_s"] == pytest.approx(min(ev[k]["time_s"].max() - warm[k][0] for k in ev))
    assert fair["method_tokens"] == pytest.approx(min(ev[k]["tokens"].max() - warm[k][1] for k in ev))
    out = tmp_path / "c.html"
    write_compare([root], out, baseline="ddp")
    diff = out.read_text().split("id='diff-table'", 1)[1].split("</table>", 1)[0]
    for row in ("CU after warm-up", "WAN bytes after warm-up", "loss at equal time after warm-up",
                "warm-up ends at"):
        assert row in diff, row
    rows = diff_rows(groups, groups[0], None)
    by = {r["label"]: r for r in rows}
    assert by["diloco"]["method"]["utilization"] == pytest.approx(method["utilization"])
    assert by["diloco"]["method"]["wan_bytes"] == pytest.approx(method["wan_bytes"])


def test_diagnostics_are_small_multiples_each_on_its_own_zero_based_axis(tmp_path_factory):
    """Method diagnostics: one panel per quantity, each trace on its own y axis (none overlaying
    another), zero-based for quantities that cannot be negative, on the dashboard and the compare page."""
    from sim.report.compare_figures import compare_figures

    root = make_warm_runs(tmp_path_factory)
    groups = load_groups([root])
    cmp = compare_figures(groups, None)["cmp-diagnostics"][0]
    for fig in (cmp, run_figures(load_run(root / "noloco"))[0]["fig-diagnostics"][0]):
        axes = {t.yaxis or "y" for t in fig.data}
        layout = fig.layout.to_plotly_json()
        names = [k for k in layout if k.startswith("yaxis")]
        assert all(not layout[k].get("overlaying") for k in names)
        assert all(layout[k].get("rangemode") == "tozero" for k in names), layout
        assert len(axes) == len(names)
    assert len({t.yaxis for t in cmp.data}) == 2  # eager's drift and NoLoCo's spread: two panels, not twin axes


def test_tradeoff_exposed_and_round_charts_hold_each_methods_numbers(tmp_path_factory):
    """The trade-off scatter puts each group at its loss at equal tokens and its WAN bytes and CU after
    warm-up; the exposed-communication bars add up to at most 1 and say eager hides its syncs better
    than DiLoCo; the side-by-side round chart has one panel per method on one shared time axis."""
    from sim.report.compare_analysis import exposed_shares
    from sim.report.compare_figures import compare_figures

    root = make_warm_runs(tmp_path_factory)
    groups = load_groups([root])
    figs = compare_figures(groups, None)
    scatter = figs["cmp-tradeoff"][0]
    rows = {r["label"]: r for r in diff_rows(groups, groups[0], None)}
    by_tokens_cu = [t for t in scatter.data if t.xaxis == "x2" and "tokens" in t.name][0]
    for label, x, y in zip(by_tokens_cu.text, by_tokens_cu.x, by_tokens_cu.y):
        assert x == pytest.approx(rows[label]["method"]["utilization"]) and y == pytest.approx(rows[label]["loss_at_tokens"])
    exposed = {label: exposed_shares(load_run(root / label)) for label in ("diloco", "eager")}
    for hidden, blocked, n in exposed.values():
        assert 0 <= hidden + blocked <= 1 + 1e-9 and n > 0
    assert exposed["eager"][0] > exposed["diloco"][0] and exposed["eager"][1] < exposed["diloco"][1]
    bars = figs["cmp-exposed"][0].data
    assert {t.name for t in bars} == {"hidden (computing)", "exposed (comm-blocked)"}
    rounds = figs["cmp-rounds"][0]
    panels = {t.yaxis for t in rounds.data}
    assert len(panels) == len(groups)
    layout = rounds.layout.to_plotly_json()
    xaxes = [k for k in layout if k.startswith("xaxis")]
    matched = [layout[k].get("matches") for k in xaxes]
    assert len(set(matched) - {None}) == 1 and matched.count(None) == 1  # every panel on one time axis
    assert all(min(t.base) >= 0 for t in rounds.data)


def test_fairness_notice_only_when_budgets_differ(tmp_path_factory, tmp_path):
    """Two runs with the same tokens and simulated time but different final losses (DiLoCo at two
    outer learning rates) get no fairness notice: their final losses are the fair comparison."""
    from sim.runner import Simulation
    from sim.scenario import load_scenario
    from sim.writer import run_to_dir

    for name, lr in (("a", 0.7), ("b", 0.3)):
        sc = load_scenario(ROOT / "scenarios" / "quickstart.yaml",
                           TINY + [f"algorithm={{name: diloco, inner_steps: 4, outer_lr: {lr}}}", "run.max_rounds=3"])
        run_to_dir(Simulation(sc), tmp_path / "runs" / name)
    a, b = (load_run(tmp_path / "runs" / n).summary for n in "ab")
    assert a["sim_duration_s"] == b["sim_duration_s"] and a["tokens"] == b["tokens"]
    assert a["final_eval_loss"] != b["final_eval_loss"]
    out = tmp_path / "c.html"
    write_compare([tmp_path / "runs"], out)
    assert "fair-notice" not in out.read_text()


def test_runs_table_shows_common_knobs_once_and_sweep_groups_by_grid_point(tmp_path_factory, tmp_path):
    """Knobs every run shares are listed once above the runs table and each row shows only what
    differs; sweep replications are labelled by their grid point and seeds."""
    from sim.report.compare_analysis import common_and_different, grid_point_label
    from sim.report.runs import Group

    root = make_warm_runs(tmp_path_factory)
    groups = load_groups([root])
    common, differ = common_and_different(groups)
    assert "topology" in common and "compute.batch_size" in common
    by = dict(zip([g.label for g in groups], differ))
    assert by["diloco"]["algorithm.name"] == "diloco" and "topology" not in by["diloco"]
    assert "compute.batch_size" not in by["ddp"]
    runs = [load_run(root / "diloco"), load_run(root / "diloco")]
    for r, seed, digest in zip(runs, (0, 1), ("0123456789", "abcdef0123")):
        r.path = tmp_path / f"inner_steps=10-seed={seed}-{digest}"
        r.manifest = {**r.manifest, "seed": seed}
    assert grid_point_label(Group("x", runs)) == "inner_steps=10 (seeds 0, 1)"
    runs[1].path = tmp_path / "diloco-inner_steps=10-payload_dtype=bf16-seed=1-abcdef0123"
    assert grid_point_label(Group("x", runs)) is None  # different grid points: not one group's label
    assert grid_point_label(Group("x", [runs[1]])) == "diloco, inner_steps=10, payload_dtype=bf16 (seed 1)"
