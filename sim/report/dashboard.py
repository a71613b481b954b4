"""The run dashboard: one self-contained HTML page (plotly.js embedded once, works offline).

Shows, for one run: eval loss vs simulated time against the loss floor, train loss,
per-node utilization split into compute / comm-blocked / straggler-wait / down, and
bytes per link (WAN links first). This package is the only place that imports plotly.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

STATE_COLORS = {"compute": "#2ca02c", "comm_blocked": "#d62728", "idle": "#ff7f0e", "down": "#7f7f7f"}
STATE_LABELS = {"compute": "compute", "comm_blocked": "comm-blocked", "idle": "straggler-wait", "down": "down"}


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(b) < 1000 or unit == "PB":
            return f"{b:,.1f} {unit}"
        b /= 1000.0
    return f"{b:.1f} PB"


def _loss_figure(metrics: pd.DataFrame, floor: float | None) -> go.Figure:
    fig = go.Figure()
    train = metrics[metrics["kind"] == "train"]
    if len(train):
        per_step = train.groupby("step").agg(time_s=("time_s", "max"), loss=("loss", "mean")).reset_index()
        fig.add_trace(go.Scatter(x=per_step["time_s"], y=per_step["loss"], mode="lines", name="train loss (mean of workers)",
                                 line={"color": "#9ecae1", "width": 1}))
    ev = metrics[metrics["kind"] == "eval"]
    fig.add_trace(go.Scatter(x=ev["time_s"], y=ev["loss"], mode="lines+markers", name="eval loss (global model)",
                             line={"color": "#08519c", "width": 2}))
    if floor is not None:
        fig.add_hline(y=floor, line={"dash": "dash", "color": "black"},
                      annotation_text=f"loss floor {floor:.3f} nats", annotation_position="top right")
    fig.update_layout(title="Loss vs simulated time", xaxis_title="simulated time (s)", yaxis_title="loss (nats)",
                      height=420, margin={"t": 50, "b": 40})
    return fig


def _loss_vs_figure(metrics: pd.DataFrame, column: str, title: str, floor: float | None) -> go.Figure:
    ev = metrics[metrics["kind"] == "eval"]
    fig = go.Figure(go.Scatter(x=ev[column], y=ev["loss"], mode="lines+markers", name="eval loss",
                               line={"color": "#08519c"}))
    if floor is not None:
        fig.add_hline(y=floor, line={"dash": "dash", "color": "black"})
    fig.update_layout(title=title, xaxis_title=column, yaxis_title="eval loss (nats)", height=360,
                      margin={"t": 50, "b": 40})
    return fig


def _utilization_figure(summary: dict) -> go.Figure:
    nodes = list(summary["per_node"])
    fig = go.Figure()
    for state, color in STATE_COLORS.items():
        fig.add_trace(go.Bar(x=nodes, y=[summary["per_node"][n][f"{state}_frac"] for n in nodes],
                             name=STATE_LABELS[state], marker_color=color))
    fig.update_layout(barmode="stack", title=f"Time per node by state (overall compute utilization "
                                             f"{summary['utilization']:.1%})",
                      yaxis={"title": "fraction of simulated time", "range": [0, 1.0001]}, height=380,
                      margin={"t": 50, "b": 40})
    return fig


def _bytes_figure(summary: dict) -> go.Figure:
    links = sorted(summary["bytes_per_link"], key=lambda l: (l["kind"] != "wan", -l["bytes"]))
    links = [l for l in links if l["bytes"] > 0]
    fig = go.Figure(go.Bar(x=[l["link"] for l in links], y=[l["bytes"] for l in links],
                           marker_color=["#6a51a3" if l["kind"] == "wan" else "#bcbddc" for l in links],
                           text=[_fmt_bytes(l["bytes"]) for l in links], textposition="outside",
                           hovertext=[f"{l['kind']} {l['bandwidth_gbps']} Gbit/s" for l in links]))
    fig.update_layout(title="Bytes per directed link (WAN dark, intra-region light)", yaxis_title="bytes",
                      height=380, margin={"t": 50, "b": 80})
    return fig


def _header(summary: dict, manifest: dict) -> str:
    sc = manifest["scenario"]
    algo = ", ".join(f"{k}={v}" for k, v in summary["algorithm"].items())
    topo = "; ".join(f"{r['name']}: {r['nodes']} nodes" for r in sc["topology"]["regions"])
    wan = "; ".join(f"{l['a']}-{l['b']} {l['bandwidth_gbps']} Gbit/s {l['latency_s'] * 1e3:g} ms"
                    for l in sc["topology"]["links"]) or "none"
    rows = [
        ("status", manifest["status"]), ("algorithm", algo), ("topology", topo), ("WAN links", wan),
        ("seed", manifest["seed"]), ("simulated duration", f"{summary['sim_duration_s']:.2f} s"),
        ("rounds / tokens", f"{summary['rounds']} / {summary['tokens']:,}"),
        ("compute utilization", f"{summary['utilization']:.1%}"),
        ("payload per sync", _fmt_bytes(summary["payload_bytes_per_sync"]) + f" ({summary['wire_format']})"),
        ("bytes on the wire (total / WAN)", f"{_fmt_bytes(summary['bytes_total'])} / {_fmt_bytes(summary['wan_bytes'])}"),
        ("final eval loss / floor", f"{summary['final_eval_loss']:.4f} / "
                                    f"{summary['loss_floor']:.4f}" if summary["loss_floor"] is not None
         else f"{summary['final_eval_loss']}"),
        ("device", manifest.get("device")),
        ("wall time", f"{summary['wall_s']:.1f} s" if summary.get("wall_s") else "-"),
    ]
    trs = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return (f"<h1>{html.escape(summary['name'])}</h1>"
            f"<p>{html.escape(sc.get('description', ''))}</p><table class='summary'>{trs}</table>")


def write_dashboard(path: Path, sim, events: pd.DataFrame, metrics: pd.DataFrame, summary: dict, manifest: dict) -> None:
    floor = summary.get("loss_floor")
    figs = [
        _loss_figure(metrics, floor),
        _utilization_figure(summary),
        _bytes_figure(summary),
        _loss_vs_figure(metrics, "tokens", "Eval loss vs tokens", floor),
        _loss_vs_figure(metrics, "bytes", "Eval loss vs bytes on the wire", floor),
    ]
    parts = []
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig{i}",
                                 config={"displaylogo": False}))
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>locosim: {html.escape(summary['name'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1200px}} table.summary th{{text-align:left;padding-right:1.5em}}
.figs{{display:grid;grid-template-columns:1fr 1fr;gap:1em}} .wide{{grid-column:1 / span 2}}</style>
</head><body>
{_header(summary, manifest)}
<div class="figs"><div class="wide">{parts[0]}</div><div>{parts[1]}</div><div>{parts[2]}</div>
<div>{parts[3]}</div><div>{parts[4]}</div></div>
<script type="application/json" id="locosim-summary">{html.escape(json.dumps(summary, default=str))}</script>
</body></html>
"""
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
