"""Network engine benchmark: prints ONE JSON object (no assertions; see bench/README.md).

Workloads, each run in one Python thread:

* ``ring_1024``: a 1,024-worker pipelined ring all-reduce of 4 GB (1B fp32 parameters)
  over 3 regions (342 + 341 + 341 workers on 100 Gbit/s region links, a triangle of
  10 Gbit/s WAN links). Wall time covers building the graph, the Network and running
  the collective to completion; the median of ``--repeats`` runs is ``ring_1024_wall_s``.
* ``stepwise_64`` / ``pipelined_64``: the same topology shape with 64 workers, stepwise
  (2(P-1)·P flows) versus pipelined (P flows) ring, for scale.
* ``churn``: ``--churn-flows`` point-to-point flows between random workers of the
  1,024-worker topology, Poisson arrivals (1,000 per simulated second), log-normal sizes
  (one named random stream), WAN links loaded to ~0.75; ``flows_per_s`` and
  ``events_per_s`` (SimPy events processed per wall second) come from it. ``cpu_s`` is
  the process's CPU time over the same span: steadier than wall time on a shared machine.
* ``churn_congested``: a tenth as many flows, 3.2x larger: the WAN is overloaded, hundreds
  of flows share one component and every start or end re-rates all of them (the
  worst case for incremental max-min).

Run: ``python bench/network.py [--repeats 3] [--churn-flows 20000]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import networkx  # noqa: E402
import simpy  # noqa: E402

from bench.machine import cpu_machine  # noqa: E402
from sim.rng import rng  # noqa: E402
from sim.engine.collectives import COLLECTIVES  # noqa: E402
from sim.engine.network import Network  # noqa: E402
from sim.engine.topology import build_graph, gbps_to_bytes_per_s  # noqa: E402
from sim.scenario import Link, Region, Topology  # noqa: E402

PAYLOAD_BYTES = 4e9  # 1B parameters in fp32
# Churn: 1,000 flows per simulated second between random workers; ~2/3 cross a WAN link,
# ~1/9 of them each directed WAN link (1.25 GB/s). A 5 MB median (8 MB mean) loads each
# WAN direction to ~0.75: stable, tens of flows active. The congested variant (26 MB
# mean) offers more than the WAN carries, so hundreds of flows pile up in one component.
CHURN_MEDIAN_BYTES = 5e6
CONGESTED_MEDIAN_BYTES = 16e6
WAN = [("us", "eu", 10.0, 0.04), ("eu", "asia", 10.0, 0.08), ("asia", "us", 10.0, 0.10)]


def topology(n_workers: int) -> Topology:
    sizes = [n_workers // 3 + (1 if i < n_workers % 3 else 0) for i in range(3)]
    return Topology(regions=[Region(name=n, nodes=s) for n, s in zip(("us", "eu", "asia"), sizes)],
                    links=[Link(a=a, b=b, bandwidth_gbps=bw, latency_s=lat) for a, b, bw, lat in WAN],
                    intra_region={"bandwidth_gbps": 100.0, "latency_s": 1e-4})


def run_events(env: simpy.Environment) -> int:
    """Run to the end, counting processed events."""
    n = 0
    step = env.step
    try:
        while True:
            step()
            n += 1
    except simpy.core.EmptySchedule:
        return n


def ring(n_workers: int, collective: str) -> dict:
    topo = topology(n_workers)
    t0 = time.perf_counter()
    g, workers = build_graph(topo)
    env = simpy.Environment()
    net = Network(env, g)
    env.process(COLLECTIVES[collective](env, net, workers, PAYLOAD_BYTES, "bench"))
    events = run_events(env)
    wall = time.perf_counter() - t0
    p = len(workers)
    ring_latency = sum(net.route_latency_s(workers[i], workers[(i + 1) % p]) for i in range(p))
    bottleneck = gbps_to_bytes_per_s(min(bw for _, _, bw, _ in WAN))
    return {"wall_s": wall, "sim_time_s": env.now, "events": events, "flows": net.flows_started,
            "rate_recomputations": net.rate_recomputations, "rate_recomputed_flows": net.rate_recomputed_flows,
            "alpha_beta_s": 2 * (p - 1) / p * (ring_latency + PAYLOAD_BYTES / bottleneck)}


def churn(n_flows: int, median_bytes: float, seed: int = 0) -> dict:
    g, workers = build_graph(topology(1024))
    env = simpy.Environment()
    net = Network(env, g)
    r = rng(seed, "bench/churn")
    src = r.integers(0, len(workers), n_flows)
    dst = (src + r.integers(1, len(workers), n_flows)) % len(workers)
    gaps = r.exponential(1e-3, n_flows)  # 1,000 flows per simulated second
    sizes = median_bytes * r.lognormal(mean=0.0, sigma=1.0, size=n_flows)
    active_samples: list[int] = []

    def arrivals():
        for i in range(n_flows):
            yield env.timeout(float(gaps[i]))
            net.transfer(workers[src[i]], workers[dst[i]], float(sizes[i]), "churn")
            if i % 100 == 0:
                active_samples.append(net.active_flows)

    env.process(arrivals())
    t0, c0 = time.perf_counter(), time.process_time()
    events = run_events(env)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "flows": n_flows, "events": events, "sim_time_s": env.now,
            "mean_active_flows": statistics.fmean(active_samples), "max_active_flows": max(active_samples),
            "rate_recomputations": net.rate_recomputations,
            "mean_recomputed_component": net.rate_recomputed_flows / max(net.rate_recomputations, 1)}


def machine() -> dict:
    return {**cpu_machine(), "simpy": simpy.__version__, "networkx": networkx.__version__, "threads_used": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--churn-flows", type=int, default=20000)
    args = ap.parse_args()
    rings = [ring(1024, "ring_allreduce") for _ in range(args.repeats)]
    ring_1024 = min(rings, key=lambda r: r["wall_s"]) | {"wall_s_runs": [r["wall_s"] for r in rings]}
    stepwise = ring(64, "ring_allreduce_stepwise")
    pipelined = ring(64, "ring_allreduce")
    ch = churn(args.churn_flows, CHURN_MEDIAN_BYTES)
    congested = churn(max(args.churn_flows // 10, 1), CONGESTED_MEDIAN_BYTES)
    print(json.dumps({
        "ring_1024_wall_s": statistics.median(r["wall_s"] for r in rings),
        "events_per_s": ch["events"] / ch["wall_s"],
        "flows_per_s": ch["flows"] / ch["wall_s"],
        "ring_1024": ring_1024,
        "ring_64_stepwise": stepwise,
        "ring_64_pipelined": pipelined,
        "churn": ch,
        "churn_congested": congested,
        "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
