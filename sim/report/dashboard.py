"""The run dashboard: one self-contained HTML page per run (plotly.js embedded, works offline).

Drawn from the run's files only, so ``render_run_dir`` can redraw any run directory:

* header: scenario, algorithm and its knobs (whatever the method: read from the manifest),
  topology, seed, simulated and wall time, device, numerics (engine, precision, kernels,
  memory estimate); a summary table (CU, time to the target eval loss, bytes, bytes per
  worker per round, peak WAN bandwidth, faults): ``sim.report.text``; the phases table
  (warm-up, method): ``sim.report.phases``;
* timeline: a Gantt of every worker's states and the steps each completed
  (``sim.report.timeline``);
* utilization per node and per region (stacked by state) and overall (``sim.report.utilization``);
* network: throughput over time per directed WAN link and per region pair, bytes per
  link, peak vs mean bandwidth per WAN link, a topology picture (``sim.report.network``);
* learning: losses vs simulated time, tokens and bytes, the loss floor, and method
  diagnostics (``sim.report.learning``);
* faults (when the run had any, ``sim.report.faults``) and asynchrony (methods with parameter
  servers, ``sim.report.asynchrony``).

This module only assembles the page: which figures a run gets, in which section and order,
what the page embeds, and where it is written. The figures live in their subject's module,
their look in ``sim.report.style``. This package is the only place that imports plotly.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from sim.report.asynchrony import async_figures
from sim.report.faults import faults_figure
from sim.report.figure import mark_warm_up
from sim.report.learning import diagnostic_labels, diagnostics, loss_vs, loss_vs_time
from sim.report.network import bytes_per_link, network_series, peak_vs_mean, throughput_figure, topology_picture
from sim.report.page import Page, export_pngs, grid_table, kv_table
from sim.report.phases import PHASE_HEADER, phase_rows, warm_up_end
from sim.report.runs import RunData, load_run
from sim.report.style import MAX_GANTT_ROWS
from sim.report.text import BYTES_DEFINITION, cap_gbps, header_rows, summary_rows
from sim.report.timeline import selector_html, steps_figure, timeline
from sim.report.utilization import utilization_by_node, utilization_by_region


def run_figures(run: RunData) -> tuple[dict[str, tuple[go.Figure, bool]], dict | None]:
    """Every figure of a run's dashboard by div id (figure, wide?), in page order, plus the
    timeline selector's data (None when every worker has its own row)."""
    s = run.summary
    floor = s.get("loss_floor")
    net = network_series(run)
    caps = {(l["src"], l["dst"]): cap_gbps(l) for l in s["bytes_per_link"]}
    wan = {(l["src"], l["dst"]) for l in s["bytes_per_link"] if l["kind"] == "wan"}
    figs: dict[str, tuple[go.Figure, bool]] = {}
    gantt, selector = timeline(run)
    figs["fig-timeline"] = (gantt, True)
    figs["fig-util-node"] = (utilization_by_node(s), False)
    figs["fig-util-region"] = (utilization_by_region(s), False)
    wan_series = {l: v for l, v in net["links"].items() if l in wan}
    if wan_series:
        figs["fig-throughput-link"] = (throughput_figure("Throughput per directed WAN link", wan_series,
                                                          net["end_s"], caps), False)
    if net["pairs"]:
        figs["fig-throughput-pair"] = (throughput_figure("Throughput per region pair (source \u2192 destination)",
                                                          net["pairs"], net["end_s"]), False)
    figs["fig-bytes-link"] = (bytes_per_link(s), False)
    if wan:
        figs["fig-bandwidth-peak"] = (peak_vs_mean(s, net["peaks_gbps"]), False)
    figs["fig-topology"] = (topology_picture(run), False)
    if len(run.metrics) and (run.metrics["kind"] == "eval").any():  # a timing-only run has no losses
        figs["fig-loss-time"] = (loss_vs_time(run.metrics, floor), True)
        figs["fig-loss-tokens"] = (loss_vs(run.metrics, "tokens", "Eval loss vs tokens", "tokens (all workers)",
                                           floor), False)
        figs["fig-loss-bytes"] = (loss_vs(run.metrics, "bytes", "Eval loss vs bytes on the wire",
                                          "bytes sent so far, all transfers", floor), False)
    diag = diagnostics(run.metrics, diagnostic_labels(run.manifest)) if len(run.metrics) else None
    if diag is not None:
        figs["fig-diagnostics"] = (diag, True)
    faults = faults_figure(run.events)
    if faults is not None:
        figs["fig-faults"] = (faults, True)
    steps = steps_figure(run)
    if steps is not None:
        figs["fig-steps"] = (steps, False)
    figs.update(async_figures(run.metrics, s))  # methods with servers: staleness, rounds, busy servers
    t_w = warm_up_end(s)
    for fig_id in TIME_AXIS_FIGURES:
        if fig_id in figs:
            fig = figs[fig_id][0]
            mark_warm_up(fig, t_w, **({"row": "all", "col": 1} if fig_id == "fig-diagnostics" else {}))
    return figs, selector


# Figures whose x axis is simulated time: each marks where warm-up ends.
TIME_AXIS_FIGURES = ("fig-timeline", "fig-throughput-link", "fig-throughput-pair", "fig-loss-time",
                     "fig-diagnostics", "fig-faults", "fig-steps", "fig-rounds")


SECTIONS = [
    ("Timeline", ["fig-timeline", "fig-steps"]),
    ("Utilization", ["fig-util-node", "fig-util-region"]),
    ("Network", ["fig-throughput-link", "fig-throughput-pair", "fig-bytes-link", "fig-bandwidth-peak",
                 "fig-topology"]),
    ("Learning", ["fig-loss-time", "fig-loss-tokens", "fig-loss-bytes", "fig-diagnostics"]),
    ("Faults", ["fig-faults"]),
    ("Asynchrony", ["fig-staleness", "fig-rounds", "fig-servers"]),
]
OPTIONAL_SECTIONS = {"Faults", "Asynchrony"}  # left out of the page when the run has none of their figures


def build_dashboard(run: RunData) -> Page:
    figs, selector = run_figures(run)
    s = run.summary
    page = Page(f"locosim: {s['name']}", kind="dashboard")
    desc = run.scenario.get("description") or ""
    page.html(f"<h1>{html.escape(s['name'])}</h1>" + (f"<p class='desc'>{html.escape(desc)}</p>" if desc else ""))
    page.html("<div class='cols'><div>" + kv_table(header_rows(run)).replace("class='kv'", "class='kv' id='header'")
              + "</div><div>" + kv_table(summary_rows(run)).replace("class='kv'", "class='kv' id='summary-table'")
              + "</div></div>")
    page.html("<h2>Phases</h2><p class='note'>Warm-up: the ddp steps an outer method starts with "
              "(algorithm.warm_start_steps); it ends when its last all-reduce completes, marked on every time axis. "
              "Bytes per worker per round: what one round moves per worker (a warm-up round is one ddp step).</p>"
              + grid_table(PHASE_HEADER, phase_rows(s), "phases-table"))
    for title, ids in SECTIONS:
        present = [i for i in ids if i in figs]
        if not present and title in OPTIONAL_SECTIONS:
            continue
        page.html(f"<h2>{title}</h2>")
        if title == "Learning" and "fig-loss-time" not in figs:
            page.html("<p class='note'>No losses: a timing-only run (no numerics).</p>")
        if title == "Network":
            page.html(f"<p class='note'>{BYTES_DEFINITION}</p>")
        if title == "Network" and "fig-throughput-link" not in figs:
            page.html("<p class='note'>No WAN traffic in this run (one region, or nothing crossed a WAN link).</p>")
        page.html("<div class='cols'>")
        for i in present:
            fig, wide = figs[i]
            page.figure(i, fig, wide=wide)
            if i == "fig-timeline" and selector is not None:
                page.html(f"<div class='wide'>{selector_html(i, selector)}</div>")
        page.html("</div>")
    page.html("<p class='note'>Throughput: the run's transfers replayed through the same flow-level network "
              "model (sim.engine.replay.replay_rates); long runs are shown as means over equal time bins.</p>")
    page.data("locosim-summary", page_summary(s))
    return page


PAGE_SUMMARY_OMITS = ("per_node", "step_time_s", "steps_per_worker", "bytes_sent_per_node", "bytes_received_per_node")


def page_summary(summary: dict) -> dict:
    """The summary a dashboard embeds: summary.json itself up to ``MAX_GANTT_ROWS`` workers;
    above, without its per-worker maps (``PAGE_SUMMARY_OMITS``) and with only the WAN links of
    ``bytes_per_link``, which at 1,024 workers are most of a megabyte (summary.json beside the
    page keeps them); ``omitted`` lists what was left out."""
    if len(summary.get("per_node") or ()) <= MAX_GANTT_ROWS:
        return summary
    out = {k: v for k, v in summary.items() if k not in PAGE_SUMMARY_OMITS}
    out["bytes_per_link"] = [l for l in summary.get("bytes_per_link", []) if l.get("kind") == "wan"]
    out["omitted"] = [k for k in PAGE_SUMMARY_OMITS if k in summary] + ["bytes_per_link (intra-region links)"]
    return out


def write_dashboard(path: Path, events: pd.DataFrame, metrics: pd.DataFrame, summary: dict, manifest: dict,
                    network: dict | None = None) -> None:
    """Write ``dashboard.html`` for a run that just finished, from the same tables the run
    directory holds (and its ``sim.engine.replay.network_rates`` when the caller has replayed them already)."""
    run = RunData(Path(path).parent, manifest, summary, events, metrics, label=Path(path).parent.name,
                  network=network)
    build_dashboard(run).write(Path(path))


def render_run_dir(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Redraw a run directory's dashboard from its files (to ``out``, default its dashboard.html)."""
    run = load_run(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "dashboard.html"
    build_dashboard(run).write(path)
    return path


def export_run_pngs(run_dir: str | Path, png_dir: str | Path) -> tuple[list[Path], str | None]:
    """PNG of every dashboard figure of a run directory (see ``page.export_pngs``)."""
    figs, _ = run_figures(load_run(run_dir))
    for fig, _wide in figs.values():
        fig.update_layout(template="plotly_white")
    return export_pngs({k: f for k, (f, _w) in figs.items()}, Path(png_dir))
