"""Records -> tables (the summary of them: ``sim.metrics.summary``).

``events_table``: one flat row per worker state span (compute, comm_blocked, straggler_wait, down),
per transfer and per sync. ``metrics_table``: one row per loss value (train: per worker
per step; eval: the global model), with simulated time, tokens and payload bytes so far.
``utilization``: seconds and fractions per worker and state. ``bytes_in_bins``: what a rate
step function carries per time bin.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sim.metrics.records import STATES, Recorder
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
    # Each column as segments, one per kind of record: arrays made from the records' values,
    # or all-missing ones (no Python list of Nones), joined once.
    parts: dict[str, list] = {c: [] for c in EVENT_COLUMNS if c != "duration_s"}

    def add(kind: str, count: int, **given: list) -> None:
        nonlocal n
        if not count:
            return
        for c, segments in parts.items():
            dtype = EVENT_COLUMNS[c]
            if c == "kind":
                segments.append(pa.repeat(pa.scalar(kind, pa.large_string()), count))
            elif c in given:
                segments.append(_arrow(given[c], dtype))
            elif dtype == "float64":
                segments.append(np.full(count, np.nan))
            else:
                segments.append(pa.nulls(count, pa.large_string() if dtype == "string" else pa.int64()))
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
    arrays = {c: _join(segments, EVENT_COLUMNS[c]) for c, segments in parts.items()}
    if n > 1:  # sorted as arrays (a gather in C), by codes that order each key as pandas' sort_values does
        order = np.lexsort([_sort_codes(arrays[c]) for c in ("dst", "src", "worker", "kind")]
                           + [arrays["start_s"]])
        arrays = {c: a.take(order) for c, a in arrays.items()}
    data = {}
    for c, dtype in EVENT_COLUMNS.items():
        if c == "duration_s":
            data[c] = data["end_s"] - data["start_s"]
        else:
            data[c] = _pandas(arrays[c], dtype)
    return pd.DataFrame(data, columns=list(EVENT_COLUMNS))


def _arrow(values: list, dtype: str):
    """A column's ``values`` (None where missing) as an array to sort and gather: numpy floats
    for ``float64``, a pyarrow array for strings and nullable integers (many times faster than
    pandas' own conversion of Python lists)."""
    if dtype == "float64":
        return np.array(values, dtype=float) if values else np.zeros(0)
    return pa.array(values, type=pa.large_string() if dtype == "string" else pa.int64())


def _join(segments: list, dtype: str):
    """A column's segments as one ``_arrow`` array (an empty one when there are none; pyarrow
    segments as a chunked array: not copied until the rows are gathered)."""
    if not segments:
        return _arrow([], dtype)
    if dtype == "float64":
        return np.concatenate(segments) if len(segments) > 1 else segments[0]
    return pa.chunked_array(segments) if len(segments) > 1 else segments[0]  # (copied once: by the gather)


def _pandas(arr, dtype: str):
    """An ``_arrow`` column as the pandas array ``pd.array(values, dtype)`` gives."""
    if dtype == "float64":
        return arr
    if dtype == "string":
        return pd.array(arr, dtype="string")
    return pd.arrays.IntegerArray(arr.fill_null(0).to_numpy(), arr.is_null().to_numpy(zero_copy_only=False))


def _sort_codes(arr) -> np.ndarray:
    """Integer codes that sort an ``_arrow`` column of strings or ints (nulls last) as pandas'
    ``sort_values`` orders it: by value, missing values after all others (strings by code
    point, which is their UTF-8 bytes' order)."""
    if pa.types.is_integer(arr.type):
        values = arr.fill_null(0).to_numpy()
        if not arr.null_count:
            return values
        return np.where(arr.is_null().to_numpy(zero_copy_only=False), values.max(initial=0) + 1, values)
    if isinstance(arr, pa.ChunkedArray):  # one dictionary for the whole column
        arr = arr.combine_chunks()
    encoded = arr.dictionary_encode()
    words = encoded.dictionary
    rank = np.empty(len(words) + 1, dtype=np.int64)
    rank[pc.array_sort_indices(words).to_numpy()] = np.arange(len(words))
    rank[len(words)] = len(words)  # null: after every word
    return rank.take(encoded.indices.fill_null(len(words)).to_numpy().astype(np.int64))


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
    st = events.loc[events["kind"] == "state", ["node", "state", "duration_s"]]  # (the columns read)
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


def bytes_in_bins(times: np.ndarray, rates: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bytes a step function (``sim.engine.replay.replay_rates``) carries in each bin [edges[k], edges[k+1])."""
    cum = np.concatenate([[0.0], np.cumsum(rates[:-1] * np.diff(times))])
    at_edges = np.interp(edges, times, cum, left=0.0, right=float(cum[-1]))
    return np.diff(at_edges)
