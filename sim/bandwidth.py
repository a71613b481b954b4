"""Bandwidth search: the smallest cross-region bandwidth at which a method reaches a CU.

For a scenario and its algorithm, compute utilization (CU = compute time / wall time,
averaged over workers) is measured in steady state by timing-only runs (numerics off,
no warm start) with every WAN link set to the same bandwidth, on a log grid (default
``np.logspace(-1, 3, 50)`` Gbit/s, the grid the Streaming DiLoCo paper's tables match).
CU does not decrease as bandwidth grows, so each target is found by binary search over
the grid, and runs are shared between targets. Steady state: the run lasts ``rounds``
outer rounds and CU is measured from the end of the first quarter of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.scenario import Scenario, TimingProxy


@dataclass
class SearchResult:
    targets: dict[float, float | None]
    evaluations: dict[float, float]
    grid: list[float]


def timing_only(sc: Scenario, rounds: int) -> Scenario:
    """The scenario as a timing-only run of ``rounds`` outer rounds without warm start."""
    timing = sc.timing
    if timing is None:  # time the trained model itself: count its parameters on the meta device
        if sc.compute.step_time.mode == "measured":
            raise ValueError("compute.step_time: mode measured cannot be searched without a timing proxy; "
                             "add timing: {params, layers, step_time_s}")
        import torch

        from sim.training.data import make_dataset
        from sim.training.models import build_model

        vocab = make_dataset(sc.data, sc.model.seq_len, sc.topology.n_workers, sc.seed).vocab_size
        with torch.device("meta"):
            model = build_model(sc.model, vocab)
        timing = TimingProxy(params=float(sum(p.numel() for p in model.parameters())),
                             layers=getattr(sc.model, "n_layers", 1))
    algo = sc.algorithm
    if hasattr(algo, "warm_start_steps"):
        algo = algo.model_copy(update={"warm_start_steps": 0})
    run = sc.run.model_copy(update={"max_rounds": rounds, "max_tokens": None, "max_sim_time_s": None,
                                    "eval_every_s": None, "eval_every_steps": None, "target_eval_loss": None})
    return sc.model_copy(update={"timing": timing, "numerics": False, "algorithm": algo, "run": run})


def with_wan_bandwidth(sc: Scenario, gbps: float) -> Scenario:
    links = [link.model_copy(update={"bandwidth_gbps": gbps}) for link in sc.topology.links]
    return sc.model_copy(update={"topology": sc.topology.model_copy(update={"links": links})})


def steady_cu(sc: Scenario) -> float:
    """CU of a timing-only run, measured from the end of its first quarter of rounds."""
    from sim.runner import Simulation

    sim = Simulation(sc)
    sim.run()
    times = sim.round_end_s
    start = times[max(0, len(times) // 4 - 1)] if len(times) >= 4 else 0.0
    end = sim.env.now
    if end <= start:
        return 1.0
    compute = sum(max(0.0, min(s.end_s, end) - max(s.start_s, start))
                  for s in sim.recorder.states if s.state == "compute")
    return compute / ((end - start) * sim.n_workers)


def search(sc: Scenario, targets: list[float], grid_min: float = 0.1, grid_max: float = 1000.0,
           grid_points: int = 50, rounds: int = 20) -> SearchResult:
    base = timing_only(sc, rounds)
    grid = [float(x) for x in np.logspace(math.log10(grid_min), math.log10(grid_max), grid_points)]
    cu: dict[int, float] = {}

    def at(i: int) -> float:
        if i not in cu:
            cu[i] = steady_cu(with_wan_bandwidth(base, grid[i]))
        return cu[i]

    found: dict[float, float | None] = {}
    for target in sorted(targets):
        if at(len(grid) - 1) < target:
            found[target] = None
            continue
        lo, hi = 0, len(grid) - 1  # invariant: at(hi) >= target
        if at(lo) >= target:
            found[target] = grid[lo]
            continue
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if at(mid) >= target:
                hi = mid
            else:
                lo = mid
        found[target] = grid[hi]
    return SearchResult(found, {grid[i]: v for i, v in sorted(cu.items())}, grid)
