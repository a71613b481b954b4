"""summary.json of a finished run: the typed ``Summary`` and ``summarize``, which makes it.

Utilization breakdown per node and region, bytes per link, time to target, bytes per worker per
round, each link's mean and peak bandwidth actually used, faults, phases and servers. Apart from
``sim.metrics.tables`` because the tables are the run's record and this is what is said about
them; the run directory (``sim.rundir``) writes it.

Bandwidth over time comes from the run itself: its network logs each WAN link's and each
region pair's summed rate whenever it changes (``RunResult.link_rates``). For a run whose log
was off, ``sim.engine.replay`` recovers the same step functions by replaying the recorded
transfers; the caller passes those rates in (``network``), so nothing here imports the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import pandas as pd

from sim.metrics.phases import METHOD, run_phases
from sim.metrics.records import STATES, Recorder, finite_json
from sim.metrics.servers import server_summary
from sim.metrics.tables import time_to_loss, utilization
from sim.result import RunResult


@dataclass(eq=False)
class Summary:
    """``summary.json``: what a finished run measured (``summarize``); every
    number finite or null, ``non_finite`` saying which were not and why. The three server fields
    appear only for a method with servers (``sim.metrics.servers``)."""
    name: str
    status: str
    diverged: dict | None
    algorithm: dict
    workers: int
    regions: list[str]
    n_params: int
    payload_bytes_per_sync: float
    wire_format: str
    sim_duration_s: float
    rounds: int
    steps_per_worker: list[int]
    tokens: int
    utilization: float
    state_fractions: dict[str, float]
    per_node: dict[str, dict]
    per_region: dict[str, dict]
    step_time_s: dict[str, float]
    bytes_total: float
    bytes_per_worker_per_round: float | None
    bytes_per_link: list[dict]
    peak_wan_gbps: float | None
    peak_error: str | None
    wan_bytes: float
    bytes_sent_per_node: dict[str, float]
    bytes_received_per_node: dict[str, float]
    final_eval_loss: float | None
    loss_floor: float | None
    gap_to_floor: float | None
    target_eval_loss: float | None
    time_to_target_s: float | None
    wall_s: float | None
    faults: dict
    ended_early: str | None
    numerics: dict | None
    phases: dict
    servers: dict | None = None
    staleness: dict | None = None
    rounds_per_worker: list[int] | None = None
    non_finite: dict[str, str] = field(default_factory=dict)

    _SERVER_FIELDS = ("servers", "staleness", "rounds_per_worker")

    @classmethod
    def from_values(cls, values: dict) -> "Summary":
        """A summary of raw values: NaN / inf become null (``finite_json``), each listed in
        ``non_finite`` with the reason (the divergence's, else "not a finite number")."""
        replaced: dict[str, str] = {}
        clean = finite_json(values, replaced=replaced)
        why = clean["diverged"]["reason"] if clean.get("diverged") else "not a finite number"
        clean["non_finite"] = {k: f"{v} ({why})" for k, v in replaced.items()}
        return cls(**clean)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.name in self._SERVER_FIELDS and getattr(self, f.name) is None)}


def fault_summary(rec: Recorder) -> dict:
    """Counts of faults by kind, dropped contributions by reason, and recovery fetches."""
    kinds: dict[str, int] = {}
    for f in rec.faults:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    dropped: dict[str, int] = {}
    for d in rec.dropped:
        dropped[d.reason] = dropped.get(d.reason, 0) + 1
    return {"faults": kinds, "dropped_contributions": dropped, "recoveries": len(rec.recoveries),
            "recovery_bytes": float(sum(r.payload_bytes for r in rec.recoveries)),
            "recovery_s": float(sum(r.end_s - r.start_s for r in rec.recoveries))}


def _cap_gbps(edge: dict) -> float:
    """Highest bandwidth a graph edge ever has (its bandwidth series included)."""
    series = edge.get("bandwidth_series") or []
    return float(max([edge["bandwidth_gbps"]] + [bw for _, bw in series]))


NO_RATES = {"links": {}, "pairs": {}, "error": "no rates: the run logged none and none were given "
                                               "(sim.engine.replay.network_rates)"}


def summarize(result: RunResult, events: pd.DataFrame, metrics: pd.DataFrame, manifest,
              network: dict | None = None) -> Summary:
    """summary.json of a finished run. ``manifest``: the run's (its status and wall time).
    ``network``: the run's link and region-pair rates (``sim.engine.replay.network_rates``'
    form), which the run directory writer takes once for this and the dashboard; without it,
    the rates the run logged (``RunResult.link_rates``), else none (``peak_error`` says why)."""
    duration = float(result.duration_s)
    nodes = list(result.nodes)
    graph = result.graph
    util = utilization(events, duration, nodes)
    region = {n: graph.nodes[n]["region"] for n in nodes}
    per_region = util.groupby(util.index.map(region)).mean()
    if network is None:
        network = dict(result.link_rates) if result.link_rates is not None else NO_RATES
    rates, replay_error = network["links"], network["error"]
    links = []
    for (u, v), b in sorted(result.link_bytes.items()):
        edge = graph.edges[u, v]
        kind = edge.get("kind", "link")
        entry = {"link": f"{u}->{v}", "src": u, "dst": v, "kind": kind, "bytes": b,
                 "bandwidth_gbps": edge["bandwidth_gbps"], "cap_gbps": _cap_gbps(edge),
                 "mean_gbps": b * 8 / 1e9 / duration if duration > 0 else 0.0}
        if kind == "wan":  # peak rate actually used (logged or replayed); not tracked for intra-region links
            entry["peak_gbps"] = (None if replay_error else
                                  float(rates[(u, v)][1].max()) * 8 / 1e9 if (u, v) in rates else 0.0)
        links.append(entry)
    wan_peaks = [l["peak_gbps"] for l in links if l["kind"] == "wan" and l["peak_gbps"] is not None]
    bytes_total = float(sum(t.payload_bytes for t in result.records.transfers))
    ev = metrics[metrics["kind"] == "eval"]
    floor = result.loss_floor
    final_eval = float(ev["loss"].iloc[-1]) if len(ev) else None
    sc = result.scenario
    n, rounds = result.n_workers, result.rounds
    phases = run_phases(result, events)  # warm-up and the method's own phase (sim.metrics.phases)
    return Summary.from_values({  # NaN / inf (a diverged run) become null, each with the reason (non_finite)
        "name": sc.name,
        "status": manifest["status"],
        "diverged": dict(result.diverged) if result.diverged else None,
        "algorithm": sc.algorithm.model_dump(mode="json"),
        "workers": n,
        "regions": [r.name for r in sc.topology.regions],
        "n_params": result.n_params,
        "payload_bytes_per_sync": result.payload_bytes,
        "wire_format": result.wire_format,
        "sim_duration_s": duration,
        "rounds": rounds,
        "steps_per_worker": list(result.steps_per_worker),
        "tokens": int(result.tokens),
        "utilization": float(util["compute_s"].sum() / (duration * n)) if duration > 0 else 0.0,
        "state_fractions": {s: float(util[f"{s}_s"].sum() / (duration * n)) if duration > 0 else 0.0
                            for s in STATES},
        "per_node": {node: {k: float(v) for k, v in row.items()} for node, row in util.iterrows()},
        "per_region": {r: {"utilization": float(row["utilization"]),
                           **{f"{s}_frac": float(row[f"{s}_frac"]) for s in STATES}}
                       for r, row in per_region.iterrows()},
        "step_time_s": dict(zip(nodes, result.step_time_s)),
        "bytes_total": bytes_total,
        # what one round of the method moves per worker (warm-up left out): the method phase's
        "bytes_per_worker_per_round": phases[METHOD]["bytes_per_worker_per_round"],
        "bytes_per_link": links,
        "peak_wan_gbps": max(wan_peaks) if wan_peaks else None,
        "peak_error": replay_error,
        "wan_bytes": float(sum(l["bytes"] for l in links if l["kind"] == "wan")),
        "bytes_sent_per_node": {node: result.sent_bytes[node] for node in nodes},
        "bytes_received_per_node": {node: result.received_bytes[node] for node in nodes},
        "final_eval_loss": final_eval,
        "loss_floor": floor,
        "gap_to_floor": (final_eval - floor) if (final_eval is not None and floor is not None) else None,
        "target_eval_loss": sc.run.target_eval_loss,
        "time_to_target_s": time_to_loss(metrics, sc.run.target_eval_loss),
        "wall_s": manifest.get("wall_s"),
        "faults": fault_summary(result.records),
        "ended_early": result.ended_early,
        "numerics": dict(result.numerics) if result.numerics is not None else None,
        "phases": phases,
        **server_summary(result.records, duration, n),
    })
