"""Engine overhead benchmark: prints ONE JSON object (no assertions; see bench/README.md).

Runs ``scenarios/quickstart.yaml`` (4 workers, diloco H = 20, fp32; ``--rounds`` outer
rounds, evaluation only at the start and the end) through ``sim.runner.Simulation``, and
then the same numerics with no engine around them: the same replicas, data streams,
batched inner steps (all 4 workers at once), outer Nesterov steps and two evaluations,
in a plain loop. ``run_wall_s`` is ``Simulation.run()``, ``numerics_only_wall_s`` the
loop; ``overhead`` = run / numerics-only - 1 is what the SimPy engine, the network model,
the lazy-numerics queues and the metrics records add (issue 8 asks for under 15%). Both
runs end with the same parameters (``same_result``), so they did the same work.

Run: ``python bench/overhead.py [--rounds 30] [--device cpu|cuda] [--repeats 1] [--set KEY=VALUE ...]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.machine import torch_machine  # noqa: E402
from sim.algorithms.transforms import OuterNesterov, assign, replica_mean, worker_view  # noqa: E402
from sim.runner import Simulation  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_run(overrides: list[str]) -> tuple[float, Simulation]:
    sim = Simulation(load_scenario(ROOT / "scenarios/quickstart.yaml", overrides))
    _sync(sim.device)
    t0 = time.perf_counter()
    sim.run()
    _sync(sim.device)
    return time.perf_counter() - t0, sim


def numerics_only(overrides: list[str]) -> tuple[float, dict, Simulation]:
    """The quickstart's diloco numerics in a plain loop (pieces built by a Simulation that never runs)."""
    sim = Simulation(load_scenario(ROOT / "scenarios/quickstart.yaml", overrides))
    spec, sc = sim.sc.algorithm, sim.sc
    reps, num = sim.replicas, sim.numerics
    workers = list(range(reps.n))
    outer_opt = OuterNesterov(spec.outer_lr, spec.outer_momentum, spec.nesterov)
    outer = {k: v[0].clone() for k, v in reps.params.items()}
    mom = outer_opt.init(outer)
    _sync(sim.device)
    t0 = time.perf_counter()
    reps.eval_loss(outer, sim.eval_batches)
    for _ in range(sc.run.max_rounds):
        for _ in range(spec.inner_steps):
            reps.step(workers, num._tokens(workers))
        with torch.no_grad():
            delta = replica_mean({k: outer[k] - v for k, v in reps.params.items()})
            outer, mom = outer_opt.update(delta, mom, outer)
            for w in workers:
                assign(worker_view(reps.params, w), outer)
    reps.eval_loss(outer, sim.eval_batches)
    _sync(sim.device)
    return time.perf_counter() - t0, outer, sim


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="outer rounds (quickstart: 30)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each; medians are reported")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra scenario override, as in locosim run --set (e.g. model.d_model=16)")
    args = ap.parse_args(argv)
    overrides = args.set + [f"run.max_rounds={args.rounds}", "run.eval_every_steps=null", f"run.device={args.device}"]
    runs, loops = [], []
    for _ in range(args.repeats):
        t_run, sim = engine_run(overrides)
        t_loop, outer, bare = numerics_only(overrides)
        runs.append(t_run)
        loops.append(t_loop)
    got = sim.algorithm.global_params(sim.numerics, sim.state)
    same = all(torch.allclose(got[k], outer[k], rtol=1e-5, atol=1e-6) for k in outer)
    run_s, loop_s = statistics.median(runs), statistics.median(loops)
    report = {
        "scenario": "scenarios/quickstart.yaml", "rounds": args.rounds, "workers": sim.n_workers,
        "inner_steps": sim.sc.algorithm.inner_steps, "replica_steps": sim.numerics.replica_steps,
        "batched_calls": sim.numerics.batched_calls, "params": sim.n_params,
        "run_wall_s": run_s, "numerics_only_wall_s": loop_s, "overhead": run_s / loop_s - 1,
        "run_wall_s_all": runs, "numerics_only_wall_s_all": loops, "same_result": same,
        "simulated_s": sim.env.now,
        "machine": torch_machine(sim.device),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
