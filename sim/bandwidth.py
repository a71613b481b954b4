"""Bandwidth search: the smallest cross-region bandwidth at which a method reaches a CU.

For a scenario and its algorithm, compute utilization (CU = compute time / wall time,
averaged over workers) is measured by timing-only runs (numerics off, no warm start) of
``rounds`` outer rounds (ddp: steps) with every WAN link set to the same bandwidth (a
link's ``bandwidth_csv`` is dropped), on a log grid (default ``np.logspace(-1, 3, 50)``
Gbit/s, the grid the Streaming DiLoCo paper's tables match). CU does not decrease as
bandwidth grows, so each target is found by binary search over the grid, and runs are
shared between targets.

The CU window (``window``); the first two end when the run ends, i.e. when the last round's
sync has completed and been applied (the runner stops there):

* ``steady``: from the end of the first quarter of the rounds (start-up left out): a long
  run's CU, where neither end matters;
* ``all``: from time 0 (the whole run, its first sync and its last one included), i.e.
  compute time / (end time x workers), as the Streaming DiLoCo paper's simulation defines
  CU (compute time / total time of the simulated schedule; REFERENCE.md section 2);
* ``last_step``: from time 0 to the time the last inner step's compute ends (on any worker),
  i.e. compute time / (workers x that time): the final sync is not waited for, as in a
  training run that stops after its last step (the horizon of the scaling-laws simulations).

Links the search does not vary (each node's link to its region switch,
``topology.intra_region``) can cap the answer: a target is *capped* when its answer would
change if those links were infinitely fast (bandwidth; latencies kept). Assuming CU does
not decrease in any link's bandwidth, that happens exactly when, with the fixed links
infinite, the grid point just below the answer (or, for a target not reached, the top of
the grid) already reaches the target. The search checks that with one extra run per target
(shared where targets share an answer); for a capped target it also searches the grid with the
fixed links infinite and reports that answer, and, when the target is not reached at all, the
CU at infinite WAN bandwidth with the fixed links as given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sim.scenario import Scenario, TimingProxy


WINDOWS = ("steady", "all", "last_step")
# One line per window, for tables and help texts.
WINDOW_TEXT = {"steady": "steady (from the end of the first quarter of the rounds to the end of the last sync)",
               "all": "all (from time 0 to the end of the last sync)",
               "last_step": "last_step (from time 0 to the end of the last inner step's compute; the last sync "
                            "not waited for)"}
DEFAULT_ROUNDS = 20


@dataclass
class Cap:
    """A target whose answer the fixed links change: ``uncapped_gbps`` is the answer with them
    infinitely fast; ``cu_at_infinite_wan`` the CU with the WAN infinitely fast and the fixed
    links as given (measured only for a target not reached on the grid: it shows the target
    is out of reach at any WAN bandwidth)."""
    uncapped_gbps: float
    cu_at_infinite_wan: float | None = None


@dataclass
class SearchResult:
    targets: dict[float, float | None]
    evaluations: dict[float, float]
    grid: list[float]
    window: str = "steady"
    rounds: int = DEFAULT_ROUNDS
    fixed_links: str | None = None  # the links the search leaves alone, in words; None: none limit anything
    capped: dict[float, Cap] = field(default_factory=dict)

    def cap_warning(self) -> str | None:
        """One line naming the capped targets, or None."""
        if not self.capped:
            return None
        needs = ", ".join(f"CU {t:g} needs {cap.uncapped_gbps:.3g}" for t, cap in self.capped.items())
        ceilings = [c.cu_at_infinite_wan for c in self.capped.values() if c.cu_at_infinite_wan is not None]
        ceiling = f"; as given, CU at infinite WAN bandwidth is only {ceilings[0]:.4g}" if ceilings else ""
        return (f"warning: {self.fixed_links}, which the search does not vary, cap the answer: with them infinitely "
                f"fast {needs} Gbit/s{ceiling}")


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
    """Every WAN link at ``gbps`` each way, all the time (a ``bandwidth_csv`` series is dropped)."""
    links = [link.model_copy(update={"bandwidth_gbps": gbps, "bandwidth_csv": None}) for link in sc.topology.links]
    return sc.model_copy(update={"topology": sc.topology.model_copy(update={"links": links})})


def without_fixed_links(sc: Scenario) -> Scenario:
    """The links the search does not vary (node to region switch) made infinitely fast."""
    intra = sc.topology.intra_region.model_copy(update={"bandwidth_gbps": math.inf})
    return sc.model_copy(update={"topology": sc.topology.model_copy(update={"intra_region": intra})})


def fixed_links(sc: Scenario) -> str | None:
    """The links the search leaves alone that could limit a transfer, in words (None: none)."""
    gbps = sc.topology.intra_region.bandwidth_gbps
    return None if math.isinf(gbps) else f"intra-region links ({gbps:g} Gbit/s)"


def window_cu(sim, window: str = "steady") -> float:
    """CU of a finished run over ``window`` (see the module docstring); ``sim`` a ``Simulation``."""
    if window not in WINDOWS:
        raise ValueError(f"window '{window}': use one of {', '.join(WINDOWS)}")
    end = sim.env.now  # the run stops when its last round's sync has completed and been applied
    if window == "last_step":
        end = max((s.end_s for s in sim.recorder.states if s.state == "compute"), default=0.0)
    start = 0.0
    times = sim.round_end_s
    if window == "steady" and len(times) >= 4:
        start = times[len(times) // 4 - 1]
    if end <= start:
        return 1.0
    compute = sum(max(0.0, min(s.end_s, end) - max(s.start_s, start))
                  for s in sim.recorder.states if s.state == "compute")
    return compute / ((end - start) * sim.n_workers)


def run_cu(sc: Scenario, window: str = "steady") -> float:
    """CU of a timing-only run of ``sc`` over ``window``."""
    from sim.runner import Simulation

    sim = Simulation(sc)
    sim.net.keep_rate_log(False)  # only the workers' states are read: no rates, no report
    sim.run()
    return window_cu(sim, window)


def steady_cu(sc: Scenario) -> float:
    """CU of a timing-only run, measured from the end of its first quarter of rounds."""
    return run_cu(sc, "steady")


def _grid_search(at, target: float, hi: int) -> int | None:
    """Smallest index i <= hi with at(i) >= target (at non-decreasing), or None."""
    if at(hi) < target:
        return None
    lo = 0
    if at(lo) >= target:
        return lo
    while hi - lo > 1:  # invariant: at(lo) < target <= at(hi)
        mid = (lo + hi) // 2
        if at(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def search(sc: Scenario, targets: list[float], grid_min: float = 0.1, grid_max: float = 1000.0,
           grid_points: int = 50, rounds: int = DEFAULT_ROUNDS, window: str = "steady",
           check_caps: bool = True) -> SearchResult:
    """The smallest grid bandwidth reaching each CU target over ``window`` (None: not on the
    grid), and (``check_caps``) which targets the links the search does not vary cap."""
    if window not in WINDOWS:
        raise ValueError(f"window '{window}': use one of {', '.join(WINDOWS)}")
    base = timing_only(sc, rounds)
    grid = [float(x) for x in np.logspace(math.log10(grid_min), math.log10(grid_max), grid_points)]
    top = len(grid) - 1
    cu: dict[int, float] = {}
    free_cu: dict[int, float] = {}  # the same with the fixed links infinitely fast
    free = without_fixed_links(base)

    def at(i: int) -> float:
        if i not in cu:
            cu[i] = run_cu(with_wan_bandwidth(base, grid[i]), window)
        return cu[i]

    def free_at(i: int) -> float:
        if i not in free_cu:
            free_cu[i] = run_cu(with_wan_bandwidth(free, grid[i]), window)
        return free_cu[i]

    found: dict[float, float | None] = {}
    index: dict[float, int | None] = {}
    for target in sorted(targets):
        index[target] = _grid_search(at, target, top)
        found[target] = None if index[target] is None else grid[index[target]]

    described = fixed_links(base)
    capped: dict[float, Cap] = {}
    ceiling: list[float] = []  # CU at infinite WAN bandwidth, fixed links as given (run once, if needed)
    if check_caps and described is not None:
        for target, i in index.items():
            below = top if i is None else i - 1  # the answer changes iff this point reaches the target freed
            if below < 0 or free_at(below) < target:
                continue
            if i is None and not ceiling:
                ceiling.append(run_cu(with_wan_bandwidth(base, math.inf), window))
            capped[target] = Cap(grid[_grid_search(free_at, target, below)], ceiling[0] if i is None else None)
    return SearchResult(found, {grid[i]: v for i, v in sorted(cu.items())}, grid, window, rounds, described, capped)


CURVE_POINTS = 9  # grid points every method is evaluated at for the chart (``-o FILE.html``)


def fill_curve(sc: Scenario, res: SearchResult, points: int = CURVE_POINTS) -> SearchResult:
    """Evaluate ``points`` log-spaced points of the grid (ends included) that the search did not,
    so the chart draws every method's CU-vs-bandwidth curve, not only the points its binary
    search needed (a method that never reaches a target, like ddp on a thin link, would
    otherwise be one dot at the top of the grid). Adds them to ``res.evaluations``."""
    base = timing_only(sc, res.rounds)
    top = len(res.grid) - 1
    for i in sorted({int(round(x)) for x in np.linspace(0, top, min(points, top + 1))}):
        b = res.grid[i]
        if b not in res.evaluations:
            res.evaluations[b] = run_cu(with_wan_bandwidth(base, b), res.window)
    res.evaluations = dict(sorted(res.evaluations.items()))
    return res
