"""Records -> tables -> summary.

``events_table``: one flat row per worker state span (compute, comm_blocked, straggler_wait, down),
per transfer and per sync. ``metrics_table``: one row per loss value (train: per worker
per step; eval: the global model), with simulated time, tokens and payload bytes so far.
``summarize``: utilization breakdown per node and region, bytes per link, time to target,
bytes per worker per round, and each link's mean and peak bandwidth actually used.

Bandwidth over time comes from the run itself: its network logs each WAN link's and each
region pair's summed rate whenever it changes (``RunResult.link_rates``, read by
``run_rates``). For a run known only from its files, ``replay_rates`` recovers the same
step functions by replaying the recorded transfers through the same flow-level network
model, because a transfer record keeps only its start and arrival, not the rates it got.
"""

from __future__ import annotations

import operator
from dataclasses import fields

import numpy as np
import pandas as pd
import pyarrow as pa

from sim.engine.node import STATES
from sim.metrics.phases import METHOD, run_phases
from sim.metrics.records import Recorder, finite_json
from sim.metrics.servers import server_summary
from sim.result import RunResult

EVENT_COLUMNS = {
    "kind": "string", "worker": "Int64", "node": "string", "state": "string", "start_s": "float64",
    "end_s": "float64", "duration_s": "float64", "step": "Int64", "src": "string", "dst": "string",
    "payload_bytes": "float64", "tag": "string", "route": "string", "round": "Int64", "participants": "Int64",
    "stream": "string", "factor": "float64",
}


_FIELDS: dict[type, tuple[str, ...]] = {}


def _flat(record) -> dict:
    """A flat record as a dict (``dataclasses.asdict`` without its deep copy: the fields are
    numbers, strings and lists that the table only reads)."""
    names = _FIELDS.get(type(record))
    if names is None:
        names = _FIELDS[type(record)] = tuple(f.name for f in fields(record))
    return {n: getattr(record, n) for n in names}


def events_table(rec: Recorder) -> pd.DataFrame:
    """One row per state span, transfer, sync, fault, dropped contribution, recovery and payload
    a server handled (``EVENT_COLUMNS``), sorted by start time, kind, worker, src and dst (stably: records of
    one kind keep the order they were appended in). Built column by column from the record
    lists (a 1,024-worker layer-grain run has ~250K transfer rows)."""
    n = 0
    cols: dict[str, list] = {c: [] for c in EVENT_COLUMNS if c != "duration_s"}

    def add(kind: str, count: int, **given: list) -> None:
        nonlocal n
        if not count:
            return
        for c, values in cols.items():
            if c == "kind":
                values.extend([kind] * count)
            elif c in given:
                values.extend(given[c])
            else:
                values.extend([None] * count)
        n += count

    st = rec.states
    add("state", len(st), worker=[s.worker for s in st], node=[s.node for s in st], state=[s.state for s in st],
        start_s=[s.start_s for s in st], end_s=[s.end_s for s in st], step=[s.step for s in st])
    tr = rec.transfers
    add("transfer", len(tr), src=[t.src for t in tr], dst=[t.dst for t in tr],
        payload_bytes=[t.payload_bytes for t in tr], start_s=[t.start_s for t in tr], end_s=[t.end_s for t in tr],
        tag=[t.tag for t in tr], route=[t.route for t in tr])
    sy = rec.syncs
    add("sync", len(sy), round=[s.round for s in sy], tag=[s.collective for s in sy],
        participants=[s.participants for s in sy], payload_bytes=[s.payload_bytes for s in sy],
        start_s=[s.start_s for s in sy], end_s=[s.end_s for s in sy])
    fa = getattr(rec, "faults", ())
    add("fault", len(fa), worker=[f.worker if f.worker >= 0 else None for f in fa], node=[f.node for f in fa],
        tag=[f.kind for f in fa], start_s=[f.start_s for f in fa], end_s=[f.end_s for f in fa],
        factor=[f.factor or None for f in fa])
    dr = getattr(rec, "dropped", ())
    add("dropped", len(dr), worker=[d.worker for d in dr], node=[d.node for d in dr], tag=[d.reason for d in dr],
        stream=[d.stream for d in dr], round=[d.round for d in dr], start_s=[d.time_s for d in dr],
        end_s=[d.time_s for d in dr])
    rc = getattr(rec, "recoveries", ())
    add("recovery", len(rc), worker=[r.worker for r in rc], node=[r.node for r in rc],
        src=[r.peer or None for r in rc], dst=[r.node for r in rc], payload_bytes=[r.payload_bytes for r in rc],
        start_s=[r.start_s for r in rc], end_s=[r.end_s for r in rc], step=[r.step for r in rc])
    sv = getattr(rec, "served", ())  # a server handled a payload (step: its version after; tag: its stream)
    add("serve", len(sv), worker=[s.worker if s.worker >= 0 else None for s in sv], node=[s.server for s in sv],
        src=[s.sender for s in sv], dst=[s.server for s in sv], tag=[s.stream for s in sv],
        round=[s.round for s in sv], start_s=[s.start_s for s in sv], end_s=[s.end_s for s in sv],
        step=[s.version for s in sv])
    if n > 1:  # sorted before the columns are made: a gather of Python lists, not of arrow arrays
        order = np.lexsort([_sort_codes(cols[c]) for c in ("dst", "src", "worker", "kind")]
                           + [np.array(cols["start_s"], dtype=float)])
        pick = operator.itemgetter(*order.tolist())
        cols = {c: list(pick(values)) for c, values in cols.items()}
    data = {}
    for c, dtype in EVENT_COLUMNS.items():
        if c == "duration_s":
            data[c] = data["end_s"] - data["start_s"]
        else:
            data[c] = _column(cols[c], dtype)
    return pd.DataFrame(data, columns=list(EVENT_COLUMNS))


def _sort_codes(values: list) -> np.ndarray:
    """Integer codes that sort ``values`` (strings or ints, None last) as pandas' ``sort_values``
    orders the column: by value, missing values after all others."""
    distinct = sorted({v for v in values if v is not None})
    code = {v: i for i, v in enumerate(distinct)}
    code[None] = len(distinct)
    return np.fromiter(map(code.__getitem__, values), dtype=np.int64, count=len(values))


def _column(values: list, dtype: str):
    """``values`` (None where missing) as the pandas array ``pd.array(values, dtype)`` gives,
    through pyarrow (many times faster for strings and nullable integers)."""
    if dtype == "float64":
        return np.array(values, dtype=float) if values else np.zeros(0)
    if dtype == "string":
        return pd.array(pa.array(values, type=pa.large_string()), dtype="string")
    if dtype == "Int64":
        arr = pa.array(values, type=pa.int64())
        return pd.arrays.IntegerArray(arr.fill_null(0).to_numpy(), arr.is_null().to_numpy(zero_copy_only=False))
    return pd.array(values, dtype=dtype)


def _events_table_rows(rec: Recorder) -> pd.DataFrame:
    """``events_table`` as first written, a dict per row (tests compare the two)."""
    rows: list[dict] = []
    for s in rec.states:
        rows.append({"kind": "state", **_flat(s)})
    for t in rec.transfers:
        rows.append({"kind": "transfer", **_flat(t)})
    for s in rec.syncs:
        d = _flat(s)
        rows.append({"kind": "sync", "round": d["round"], "tag": d["collective"], "participants": d["participants"],
                     "payload_bytes": d["payload_bytes"], "start_s": d["start_s"], "end_s": d["end_s"]})
    rows += _fault_rows(rec)
    df = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    df["duration_s"] = df["end_s"] - df["start_s"]
    df = df.astype(EVENT_COLUMNS)
    return df.sort_values(["start_s", "kind", "worker", "src", "dst"], kind="stable").reset_index(drop=True)


def _fault_rows(rec: Recorder) -> list[dict]:
    """Rows of kind 'fault' (tag: failure, churn, slow_period, link_outage, link_degraded;
    factor: the slowdown or bandwidth multiplier), 'dropped' (a contribution left out of a
    collective; tag: late, down, rejoined) and 'recovery' (a parameter fetch, src = peer)."""
    rows = []
    for f in getattr(rec, "faults", ()):
        rows.append({"kind": "fault", "worker": f.worker if f.worker >= 0 else None, "node": f.node, "tag": f.kind,
                     "start_s": f.start_s, "end_s": f.end_s, "factor": f.factor or None})
    for d in getattr(rec, "dropped", ()):
        rows.append({"kind": "dropped", "worker": d.worker, "node": d.node, "tag": d.reason, "stream": d.stream,
                     "round": d.round, "start_s": d.time_s, "end_s": d.time_s})
    for r in getattr(rec, "recoveries", ()):
        rows.append({"kind": "recovery", "worker": r.worker, "node": r.node, "src": r.peer or None, "dst": r.node,
                     "payload_bytes": r.payload_bytes, "start_s": r.start_s, "end_s": r.end_s, "step": r.step})
    for s in getattr(rec, "served", ()):  # a server handled a payload (step: its version after; tag: its stream)
        rows.append({"kind": "serve", "worker": s.worker if s.worker >= 0 else None, "node": s.server, "src": s.sender,
                     "dst": s.server, "tag": s.stream, "round": s.round, "start_s": s.start_s, "end_s": s.end_s,
                     "step": s.version})
    return rows


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


def metrics_table(result: RunResult) -> pd.DataFrame:
    rec = result.records
    df = pd.DataFrame([_flat(p) for p in rec.losses], columns=["kind", "worker", "step", "time_s", "loss"])
    df = df.astype({"kind": "string", "worker": "int64", "step": "int64", "time_s": "float64", "loss": "float64"})
    steps = np.sort(np.asarray(result.step_done_times, dtype=float))
    df["tokens"] = np.searchsorted(steps, df["time_s"].to_numpy(), side="right") * result.tokens_per_step
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


def wan_links(graph) -> list[tuple[str, str]]:
    """Both directions of every WAN edge of a topology graph (``engine.network.build_graph``)."""
    out = []
    for u, v, d in graph.edges(data=True):
        if d.get("kind") == "wan":
            out += [(u, v), (v, u)]
    return sorted(out)


def _region(node: str) -> str:
    return node.rsplit("/", 1)[0]


def _active_flows(net) -> list:
    """Flows sending now in a replayed network (its public accessor)."""
    return net.flows_in_flight()


def replay_rates(graph, transfers: pd.DataFrame) -> tuple[dict, dict]:
    """Bytes/s over time on every directed WAN link and between every ordered pair of
    regions, recovered by replaying the run's transfers through the network model.

    Transfer records keep only start and arrival; the rate a flow got while it shared
    links is not recorded. Max-min fair rates depend only on which flows are active, their
    sizes and link capacities, so starting every recorded transfer again at its
    ``start_s`` in a fresh ``Network`` over the same graph gives the same rates the run
    had (and the same bandwidth series and outages). Rates are read after every instant
    at which something happened. Returns ``({link: (times, rates)}, {(src_region,
    dst_region): (times, rates)})``: step functions, ``rates[i]`` on [times[i], times[i+1]),
    the last rate 0.
    """
    import math

    import simpy

    from sim.engine.network import Network
    from sim.metrics.records import Recorder

    env = simpy.Environment()
    net = Network(env, graph, Recorder())
    links = wan_links(graph)
    tr = transfers.sort_values("start_s", kind="stable")
    rows = list(zip(tr["start_s"].astype(float), tr["src"].astype(str), tr["dst"].astype(str),
                    tr["payload_bytes"].astype(float)))

    def starter():
        for t, src, dst, nbytes in rows:
            if t > env.now:
                yield env.timeout(t - env.now)
            net.transfer(src, dst, nbytes, "replay")

    env.process(starter())
    times: list[float] = [0.0]
    link_rows: list[list[float]] = [[0.0] * len(links)]
    pair_rows: list[dict] = [{}]
    while not math.isinf(env.peek()):
        now = env.peek()
        while env.peek() == now:
            env.step()
        per_link = dict.fromkeys(links, 0.0)
        pr: dict[tuple[str, str], float] = {}
        for f in _active_flows(net):
            if not 0 < f.rate < math.inf:
                continue
            for l in f.links:
                if l in per_link:
                    per_link[l] += f.rate
            key = (_region(f.src), _region(f.dst))
            if key[0] != key[1]:
                pr[key] = pr.get(key, 0.0) + f.rate
        lr = list(per_link.values())
        if lr == link_rows[-1] and pr == pair_rows[-1]:
            continue
        if now == times[-1]:
            link_rows[-1], pair_rows[-1] = lr, pr
        else:
            times.append(now)
            link_rows.append(lr)
            pair_rows.append(pr)
    t = np.array(times)
    lr_arr = np.array(link_rows).reshape(len(times), len(links))
    by_link = {l: (t, lr_arr[:, i]) for i, l in enumerate(links) if lr_arr[:, i].any()}
    pairs = sorted({k for pr in pair_rows for k in pr})
    by_pair = {k: (t, np.array([pr.get(k, 0.0) for pr in pair_rows])) for k in pairs}
    return by_link, by_pair


def network_rates(graph, events: pd.DataFrame) -> dict:
    """``replay_rates`` of a run's transfers (the events table's transfer rows) over its graph:
    ``{"links": {link: (times, rates)}, "pairs": {(src_region, dst_region): (times, rates)},
    "error": None}``. The rates are a diagnostic: a replay that breaks must not lose the run,
    so its error is returned (one line, ``"error"``) with empty series instead of raised."""
    try:
        by_link, by_pair = replay_rates(graph, events[events["kind"] == "transfer"])
    except Exception as err:
        return {"links": {}, "pairs": {}, "error": f"{type(err).__name__}: {err}"}
    return {"links": by_link, "pairs": by_pair, "error": None}


def run_rates(result: RunResult, events: pd.DataFrame) -> dict:
    """A finished run's link and region-pair rates in ``network_rates``' form: those its
    network logged while it ran (``RunResult.link_rates``: nothing is simulated again),
    else the replay of its transfers."""
    if result.link_rates is not None:
        return dict(result.link_rates)
    return network_rates(result.graph, events)


def bytes_in_bins(times: np.ndarray, rates: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bytes a step function (``replay_rates``) carries in each bin [edges[k], edges[k+1])."""
    cum = np.concatenate([[0.0], np.cumsum(rates[:-1] * np.diff(times))])
    at_edges = np.interp(edges, times, cum, left=0.0, right=float(cum[-1]))
    return np.diff(at_edges)


def _cap_gbps(edge: dict) -> float:
    """Highest bandwidth a graph edge ever has (its bandwidth series included)."""
    series = edge.get("bandwidth_series") or []
    return float(max([edge["bandwidth_gbps"]] + [bw for _, bw in series]))


def summarize(result: RunResult, events: pd.DataFrame, metrics: pd.DataFrame, manifest: dict,
              network: dict | None = None) -> dict:
    """summary.json of a finished run. ``network``: its ``run_rates`` when the caller has them
    at hand (the run directory writer takes them once for this and the dashboard), else taken
    here (the rates the run logged; a replay only for a result without them)."""
    duration = float(result.duration_s)
    nodes = list(result.nodes)
    graph = result.graph
    util = utilization(events, duration, nodes)
    region = {n: graph.nodes[n]["region"] for n in nodes}
    per_region = util.groupby(util.index.map(region)).mean()
    if network is None:
        network = run_rates(result, events)
    rates, replay_error = network["links"], network["error"]
    links = []
    for (u, v), b in sorted(result.link_bytes.items()):
        edge = graph.edges[u, v]
        kind = edge.get("kind", "link")
        entry = {"link": f"{u}->{v}", "src": u, "dst": v, "kind": kind, "bytes": b,
                 "bandwidth_gbps": edge["bandwidth_gbps"], "cap_gbps": _cap_gbps(edge),
                 "mean_gbps": b * 8 / 1e9 / duration if duration > 0 else 0.0}
        if kind == "wan":  # peak rate actually used (from the replay); not tracked for intra-region links
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
    summary = {
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
    }
    # NaN / inf (a diverged run) become null, each with the reason, so summary.json stays valid JSON
    replaced: dict[str, str] = {}
    summary = finite_json(summary, replaced=replaced)
    why = summary["diverged"]["reason"] if summary["diverged"] else "not a finite number"
    summary["non_finite"] = {k: f"{v} ({why})" for k, v in replaced.items()}
    return summary

