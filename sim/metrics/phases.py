"""A run's phases: warm-up (the ddp steps an outer method starts with) and the method's own.

Every outer method of the DiLoCo family may start with ``warm_start_steps`` of plain ddp (the
papers start from a pretrained model). Those steps all-reduce the whole model every step, so
over a thin WAN link they dominate a short run's blocked time and bytes; the whole-run
figures then describe the warm-up, not the method. ``phases`` splits the run at the end of
warm-up -- the time the last warm-up all-reduce completed (syncs of stream ``warmup``) -- and
gives each phase the whole run's fields:

- ``utilization`` and ``state_fractions``: worker-seconds in each state inside the phase (state
  spans are clipped at the boundary) over workers x the phase's duration;
- ``bytes_total`` and ``wan_bytes``: payload bytes of the transfers that started in the phase
  (a WAN byte counted once per WAN link it crossed, as ``bytes_per_link`` counts them);
- ``bytes_per_worker_per_round``: what one round moves per worker -- the phase's bytes over
  workers x the phase's rounds (a warm-up round is one ddp step; the method's rounds are the
  run's ``rounds``, which never count warm-up);
- ``sim_duration_s``, ``start_s``, ``end_s``, ``tokens`` and ``rounds``.

A run without warm-up (ddp, or ``warm_start_steps: 0``) has one phase, ``method``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.metrics.records import STATES

WARM_UP, METHOD = "warm_up", "method"


def warm_up_syncs(syncs) -> list:
    """The run's warm-up all-reduces (``Sync`` records of stream ``warmup``)."""
    return [s for s in syncs if s.stream == "warmup"]


def _wan_hops(graph, route: str) -> int:
    nodes = route.split(">") if route else []
    return sum(1 for u, v in zip(nodes, nodes[1:]) if graph.has_edge(u, v) and graph.edges[u, v].get("kind") == "wan")


def _phase(events: pd.DataFrame, graph, n: int, start: float, end: float, tokens: int, rounds: int) -> dict:
    duration = max(end - start, 0.0)
    kind = events["kind"]  # each kind's rows with only the columns read (a 1,024-worker run has ~1M rows)
    st = events.loc[kind == "state", ["state", "start_s", "end_s"]]
    lo = np.maximum(st["start_s"].to_numpy(dtype=float), start)
    hi = np.minimum(st["end_s"].to_numpy(dtype=float), end)
    secs = pd.Series(np.clip(hi - lo, 0.0, None), index=st.index).groupby(st["state"].to_numpy()).sum()
    denom = duration * n
    fractions = {s: float(secs.get(s, 0.0) / denom) if denom > 0 else 0.0 for s in STATES}
    tr = events.loc[kind == "transfer", ["start_s", "payload_bytes", "route"]]
    starts = tr["start_s"].to_numpy(dtype=float)
    inside = (starts >= start) & (starts < end) if end > start else np.zeros(len(tr), dtype=bool)
    tr = tr[inside]
    size = tr["payload_bytes"].to_numpy(dtype=float)
    # WAN hops per distinct route (a 1,024-worker run has ~250K transfers over a few thousand routes)
    codes, routes = pd.factorize(tr["route"].fillna("").to_numpy(dtype=object))
    hops = np.array([_wan_hops(graph, r) for r in routes], dtype=float)[codes] if len(tr) else np.zeros(0)
    bytes_total = float(size.sum())
    return {
        "start_s": float(start), "end_s": float(end), "sim_duration_s": float(duration),
        "utilization": fractions["compute"], "state_fractions": fractions,
        "bytes_total": bytes_total, "wan_bytes": float((size * hops).sum()) if len(size) else 0.0,
        "rounds": int(rounds),
        "bytes_per_worker_per_round": bytes_total / (n * rounds) if rounds else None,
        "tokens": int(tokens),
    }


def phases(events: pd.DataFrame, syncs, graph, n_workers: int, duration_s: float, rounds: int, tokens: int,
           steps_per_worker, tokens_per_step: int, warm_start_steps: int) -> dict:
    """``{'warm_up': {...}, 'method': {...}}`` (``warm_up`` only when the run had one); see the
    module. ``syncs``: the run's ``Sync`` records (the events table does not keep their stream)."""
    warm = warm_up_syncs(syncs)
    tokens = int(tokens)
    if not warm or warm_start_steps <= 0:
        return {METHOD: _phase(events, graph, n_workers, 0.0, duration_s, tokens, rounds)}
    t_w = min(max(s.end_s for s in warm), duration_s)
    warm_tokens = sum(min(int(s), warm_start_steps) for s in steps_per_worker) * tokens_per_step
    warm_rounds = len({s.round for s in warm})  # one ddp step each, however many buckets it has
    return {WARM_UP: _phase(events, graph, n_workers, 0.0, t_w, warm_tokens, warm_rounds),
            METHOD: _phase(events, graph, n_workers, t_w, duration_s, tokens - warm_tokens, rounds)}


def run_phases(result, events: pd.DataFrame) -> dict:
    """``phases`` of a finished run (``sim.result.RunResult``) and its events table."""
    sc = result.scenario
    return phases(events, result.records.syncs, result.graph, result.n_workers, float(result.duration_s),
                  result.rounds, result.tokens, result.steps_per_worker, result.tokens_per_step,
                  int(getattr(sc.algorithm, "warm_start_steps", 0) or 0))
