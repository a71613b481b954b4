"""What summary.json says about a run's parameter servers (methods without a barrier).

From the run's ``Served`` records: each server's busy time (its apply time summed), the
payloads it handled and the updates it applied; the staleness of the updates applied
(server versions between a worker's start model leaving the server and its update being
applied: count, mean, median, 90th percentile, max); and each worker's rounds (pushes that
reached a server). Nothing for a run without servers.
"""

from __future__ import annotations

import numpy as np

from sim.metrics.records import Recorder


def server_summary(rec: Recorder, duration_s: float, n_workers: int) -> dict:
    """``{"servers": ..., "staleness": ..., "rounds_per_worker": ...}``, or {} without servers."""
    served = getattr(rec, "served", ())
    if not served:
        return {}
    applied = [s for s in served if s.worker >= 0 and s.staleness >= 0]  # workers' updates applied
    servers: dict[str, dict] = {}
    for s in served:
        d = servers.setdefault(s.server, {"busy_s": 0.0, "handled": 0, "updates_from_workers": 0, "version": 0})
        d["busy_s"] += s.end_s - s.start_s
        d["handled"] += 1
        d["version"] = max(d["version"], s.version)
    for s in applied:
        servers[s.server]["updates_from_workers"] += 1
    for d in servers.values():
        d["busy_fraction"] = d["busy_s"] / duration_s if duration_s > 0 else 0.0
    stale = np.array([s.staleness for s in applied], dtype=float)
    staleness = {"count": int(stale.size)}
    if stale.size:
        staleness.update(mean=float(stale.mean()), p50=float(np.percentile(stale, 50)),
                         p90=float(np.percentile(stale, 90)), max=float(stale.max()))
    rounds = [0] * n_workers
    for s in applied:
        rounds[s.worker] += 1
    return {"servers": servers, "staleness": staleness, "rounds_per_worker": rounds}
