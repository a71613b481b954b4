"""Dashboards: what the run page and the comparison page show, checked against the run's own files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sim.report.compare import choose_target, diff_rows, group_stats, load_groups, pick_baseline, write_compare
from sim.report.dashboard import MAX_GANTT_ROWS, build_dashboard, network_series, run_figures, timeline
from sim.report.page import export_pngs
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
        from sim.runner import Simulation, run_to_dir
        from sim.scenario import load_scenario

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
    assert dict(zip(bars.x, bars.y)) == by_link
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
    for fig_id in ("cmp-loss-time", "cmp-loss-bytes", "cmp-loss-tokens", "cmp-cu", "cmp-time-to-target",
                   "cmp-states", "cmp-bytes", "cmp-diagnostics"):
        assert f'id="{fig_id}"' in page, fig_id
    assert "id='diff-table'" in page and "(baseline)" in page


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
    from sim.report.compare import compare_figures

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
    target, why = choose_target(groups, None)
    s = {n: json.loads((runs[n] / "summary.json").read_text()) for n in ("diloco", "diloco_seed1", "ddp")}
    assert target == max(v["final_eval_loss"] for v in s.values()) and "worst final" in why
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



def make_fault_run(tmp_path_factory):
    """A spot_churn run (failures, churn, stragglers, a 2 s sync timeout; every replica evaluated),
    made once per session."""
    if "faults" not in _CACHE:
        from sim.runner import Simulation, run_to_dir
        from sim.scenario import load_variants

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
    from sim.runner import Simulation, run_to_dir
    from sim.scenario import load_scenario

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
