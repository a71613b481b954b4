"""Records -> tables -> summary.

``events_table``: one flat row per worker state span (compute, comm_blocked, idle, down),
per transfer and per sync. ``metrics_table``: one row per loss value (train: per worker
per step; eval: the global model), with simulated time, tokens and payload bytes so far.
``summarize``: utilization breakdown per node and region, bytes per link, time to target.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from sim.engine.node import STATES
from sim.metrics.records import Recorder

EVENT_COLUMNS = {
    "kind": "string", "worker": "Int64", "node": "string", "state": "string", "start_s": "float64",
    "end_s": "float64", "duration_s": "float64", "step": "Int64", "src": "string", "dst": "string",
    "payload_bytes": "float64", "tag": "string", "route": "string", "round": "Int64", "participants": "Int64",
}


def events_table(rec: Recorder) -> pd.DataFrame:
    rows: list[dict] = []
    for s in rec.states:
        rows.append({"kind": "state", **asdict(s)})
    for t in rec.transfers:
        rows.append({"kind": "transfer", **asdict(t)})
    for s in rec.syncs:
        d = asdict(s)
        rows.append({"kind": "sync", "round": d["round"], "tag": d["collective"], "participants": d["participants"],
                     "payload_bytes": d["payload_bytes"], "start_s": d["start_s"], "end_s": d["end_s"]})
    df = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    df["duration_s"] = df["end_s"] - df["start_s"]
    df = df.astype(EVENT_COLUMNS)
    return df.sort_values(["start_s", "kind", "worker", "src", "dst"], kind="stable").reset_index(drop=True)


def metrics_table(sim) -> pd.DataFrame:
    rec = sim.recorder
    df = pd.DataFrame([asdict(p) for p in rec.losses], columns=["kind", "worker", "step", "time_s", "loss"])
    df = df.astype({"kind": "string", "worker": "int64", "step": "int64", "time_s": "float64", "loss": "float64"})
    steps = np.sort(np.asarray(sim.step_done_times, dtype=float))
    df["tokens"] = np.searchsorted(steps, df["time_s"].to_numpy(), side="right") * sim.tokens_per_step
    if rec.transfers:
        ends = np.array([t.end_s for t in rec.transfers])
        order = np.argsort(ends, kind="stable")
        cum = np.cumsum(np.array([t.payload_bytes for t in rec.transfers])[order])
        idx = np.searchsorted(ends[order], df["time_s"].to_numpy(), side="right")
        df["bytes"] = np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0)
    else:
        df["bytes"] = 0.0
    return df.sort_values(["time_s", "kind", "worker", "step"], kind="stable").reset_index(drop=True)


def utilization(events: pd.DataFrame, duration_s: float, nodes: list[str]) -> pd.DataFrame:
    """Seconds and fraction of the run per worker in each state; rows in worker order."""
    st = events[events["kind"] == "state"]
    secs = st.pivot_table(index="node", columns="state", values="duration_s", aggfunc="sum", fill_value=0.0)
    secs = secs.reindex(index=nodes, columns=list(STATES), fill_value=0.0)
    frac = secs / duration_s if duration_s > 0 else secs * 0.0
    out = secs.add_suffix("_s").join(frac.add_suffix("_frac"))
    out["utilization"] = out["compute_frac"]
    return out


def time_to_loss(metrics: pd.DataFrame, target: float | None) -> float | None:
    if target is None:
        return None
    ev = metrics[(metrics["kind"] == "eval") & (metrics["loss"] <= target)]
    return float(ev["time_s"].iloc[0]) if len(ev) else None


def summarize(sim, events: pd.DataFrame, metrics: pd.DataFrame, manifest: dict) -> dict:
    duration = float(sim.env.now)
    util = utilization(events, duration, sim.nodes)
    region = {n: sim.graph.nodes[n]["region"] for n in sim.nodes}
    per_region = util.groupby(util.index.map(region)).mean()
    links = []
    for (u, v), b in sorted(sim.net.link_bytes.items()):
        kind = sim.graph.edges[u, v].get("kind", "link")
        links.append({"link": f"{u}->{v}", "src": u, "dst": v, "kind": kind, "bytes": b,
                      "bandwidth_gbps": sim.graph.edges[u, v]["bandwidth_gbps"]})
    ev = metrics[metrics["kind"] == "eval"]
    floor = getattr(sim.dataset, "loss_floor", None)
    final_eval = float(ev["loss"].iloc[-1]) if len(ev) else None
    sc = sim.sc
    return {
        "name": sc.name,
        "status": manifest["status"],
        "algorithm": sc.algorithm.model_dump(mode="json"),
        "workers": sim.n_workers,
        "regions": [r.name for r in sc.topology.regions],
        "n_params": sim.n_params,
        "payload_bytes_per_sync": sim.payload_bytes,
        "wire_format": sim.schedule.wire_format,
        "sim_duration_s": duration,
        "rounds": sim.rounds,
        "steps_per_worker": [w.steps_done for w in sim.workers],
        "tokens": int(sim.tokens),
        "utilization": float(util["compute_s"].sum() / (duration * len(sim.nodes))) if duration > 0 else 0.0,
        "state_fractions": {s: float(util[f"{s}_s"].sum() / (duration * len(sim.nodes))) if duration > 0 else 0.0
                            for s in STATES},
        "per_node": {n: {k: float(v) for k, v in row.items()} for n, row in util.iterrows()},
        "per_region": {r: {"utilization": float(row["utilization"])} for r, row in per_region.iterrows()},
        "step_time_s": {n: t for n, t in zip(sim.nodes, sim.step_time_s)},
        "bytes_total": float(sum(t.payload_bytes for t in sim.recorder.transfers)),
        "bytes_per_link": links,
        "wan_bytes": float(sum(l["bytes"] for l in links if l["kind"] == "wan")),
        "bytes_sent_per_node": {n: sim.net.sent_bytes[n] for n in sim.nodes},
        "bytes_received_per_node": {n: sim.net.received_bytes[n] for n in sim.nodes},
        "final_eval_loss": final_eval,
        "loss_floor": floor,
        "gap_to_floor": (final_eval - floor) if (final_eval is not None and floor is not None) else None,
        "target_eval_loss": sc.run.target_eval_loss,
        "time_to_target_s": time_to_loss(metrics, sc.run.target_eval_loss),
        "wall_s": manifest.get("wall_s"),
        "numerics": {"batched_calls": sim.numerics.batched_calls, "replica_steps": sim.numerics.replica_steps,
                     "device": str(sim.device)},
    }
