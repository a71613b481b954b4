"""Scale benchmark: prints ONE JSON object (no assertions; see bench/README.md).

Workloads (issue 16), each timed in this process unless said otherwise:

* ``diloco_1024``: timing-only DiLoCo, 1,024 workers in 8 regions of 128 (a ring of
  10 Gbit/s, 20 ms WAN links), a 1B 24-layer proxy at 0.1 s per step, bf16, H = 100,
  10 rounds (about 1M inner steps): ``simulate_s`` (build + run) and ``report_s`` (tables,
  summary and dashboard written by ``run_to_dir``), with quiet stretches on and off
  (``--grain step``, the default, is the schedule the issue measured; ``layer`` adds 24
  per-layer collectives a sync).
* ``layer_1024`` (issue 26): the same 1,024-worker, 10-round, timing-only run at layer
  grain for ``diloco``, ``streaming_diloco`` (fragments of one block, tau = 1) and
  ``noloco``: ``simulate_s`` and ``report_s`` in this process, and ``command_s``, the whole
  ``locosim run`` command in a fresh process (imports, simulation, tables, summary and
  dashboard), next to ``simpy_1m_timeouts_s``: one million raw SimPy timeouts, measured in
  the same run (the issue's yardstick: the command should cost at most ~2x of it).
  ``--methods`` picks some; ``--no-command`` skips the fresh-process runs; ``--rounds`` sets
  the rounds (10).
* ``dashboard_1024``: the dashboard of the ``layer_1024`` DiLoCo run (10 rounds) opened in
  headless Chromium (Playwright and /usr/bin/chromium or $LOCOSIM_CHROMIUM; skipped with a
  reason without them): ``dashboard_bytes`` and ``draw_s``, from navigation start to every
  figure drawn (the page's own clock), the median of ``--draws`` loads; ``draw_main_thread_cpu_s``,
  the CPU seconds of the page's main thread over the same span (Chromium's trace, ``--draws``
  more loads), which other processes on a busy machine disturb less than ``draw_s``;
  ``figures_redrawn_for_margins``, the figures plotly laid out twice for their labels (automargin).
* ``barrier_1024``: the NoLoCo-vs-DiLoCo barrier study: 1,024 workers, lognormal per-step
  stragglers (sigma 0.5), no communication cost (infinite bandwidth, no latency),
  H = 100, ``--barrier-rounds`` outer steps (250 in the issue): simulate seconds each.
* ``async_1024`` (issue 25): timing-only Async Local-SGD on the same 1,024 workers and ring
  (8 regions of 128), one parameter server in r0, H = 100 with dynamic local updates (equal
  speeds: H_w = H), bf16 pushes and fp32 models, ``--async-rounds`` rounds (10: 10,240 updates
  applied): ``simulate_s`` and ``report_s`` as above, updates applied and transfers.
* ``threads``: a 6-worker DiLoCo run of the tiny GPT (2 rounds of H = 20, one process per
  run) with ``run.threads`` 1, 2 and auto, alone and next to a CPU-bound neighbour (a
  busy-looping process); wall seconds each, and auto's ratio to the best choice.

Run: ``python bench/scale.py [--only diloco_1024,layer_1024,dashboard_1024,barrier_1024,async_1024,threads]
[--grain step|layer] [--barrier-rounds 250] [--async-rounds 10] [--draws 3] [--methods diloco,streaming_diloco,noloco]
[--no-command] [--rounds 10]``. The network's own workloads (``churn_congested``) are in
bench/network.py; the engine overhead with numerics on in bench/overhead.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_machine  # noqa: E402
from sim.collector import fewer_collections  # noqa: E402
from sim.runner import Simulation  # noqa: E402
from sim.scenario import parse_scenario  # noqa: E402
from sim.writer import run_to_dir  # noqa: E402


def ring_scenario(workers: int, regions: int, algorithm: dict, run: dict, gbps: float = 10.0,
                  latency_s: float = 0.02, faults: dict | None = None) -> dict:
    names = [f"r{i}" for i in range(regions)]
    per = [workers // regions + (i < workers % regions) for i in range(regions)]
    data = {
        "name": "scale", "seed": 0, "numerics": False,
        "timing": {"params": 1.0e9, "layers": 24, "step_time_s": 0.1},
        "topology": {"regions": [{"name": n, "nodes": k} for n, k in zip(names, per)],
                     "links": [{"a": names[i], "b": names[(i + 1) % regions], "bandwidth_gbps": gbps,
                                "latency_s": latency_s} for i in range(regions)],
                     "intra_region": {"bandwidth_gbps": 100.0 if gbps != float("inf") else gbps,
                                      "latency_s": 1e-5 if latency_s else 0.0}},
        "algorithm": algorithm, "run": run,
    }
    if faults:
        data["faults"] = faults
    return data


def _timed_run(data: dict):
    """Simulate ``data`` and write its run directory: (simulation, simulate s, report s, dashboard bytes).
    The simulation runs with the garbage-collector setting ``run_to_dir`` (the ``locosim run``
    path) uses, ``fewer_collections``."""
    t0 = time.perf_counter()
    sim = Simulation(parse_scenario(data))
    with fewer_collections():
        sim.run()
    simulate = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t1 = time.perf_counter()
        run_to_dir(sim, Path(d) / "run")  # the run is done: this writes tables, summary, dashboard
        report = time.perf_counter() - t1
        size = (Path(d) / "run" / "dashboard.html").stat().st_size
    return sim, simulate, report, size


def diloco_1024(grain: str) -> dict:
    out: dict = {"workers": 1024, "rounds": 10, "sync_grain": grain}
    for coalesce in (True, False):
        data = ring_scenario(1024, 8, {"name": "diloco", "inner_steps": 100, "payload_dtype": "bf16",
                                       "sync_grain": grain}, {"max_rounds": 10, "coalesce": coalesce})
        sim, simulate, report, size = _timed_run(data)
        key = "quiet_stretches" if coalesce else "step_by_step"
        out[key] = {"simulate_s": simulate, "report_s": report, "total_s": simulate + report,
                    "inner_steps": sum(w.steps_done for w in sim.workers), "dashboard_bytes": size}
    out["simulate_speedup"] = out["step_by_step"]["simulate_s"] / out["quiet_stretches"]["simulate_s"]
    return out


LAYER_METHODS = {
    "diloco": {"name": "diloco", "inner_steps": 100, "payload_dtype": "bf16", "sync_grain": "layer"},
    "streaming_diloco": {"name": "streaming_diloco", "inner_steps": 100, "payload_dtype": "bf16",
                         "fragment_layers": 1, "overlap_steps": 1, "sync_grain": "layer"},
    "noloco": {"name": "noloco", "inner_steps": 100, "payload_dtype": "bf16", "sync_grain": "layer"},
}


def async_1024(rounds: int = 10) -> dict:
    """Timing-only Async Local-SGD at 1,024 workers (8 regions of 128 on the ring of 10 Gbit/s
    links, one server in r0, the 1B proxy, bf16, H = 100, DyLU on equal speeds): simulate and
    report seconds, pushes applied and transfers."""
    data = ring_scenario(1024, 8, {"name": "async_local_sgd", "inner_steps": 100, "payload_dtype": "bf16"},
                         {"max_rounds": rounds})
    data["topology"]["servers"] = [{"name": "ps", "region": "r0"}]
    sim, simulate, report, size = _timed_run(data)
    return {"workers": 1024, "rounds": rounds, "simulate_s": simulate, "report_s": report,
            "total_s": simulate + report, "inner_steps": sum(w.steps_done for w in sim.workers),
            "updates_applied": len(sim.recorder.served), "transfers": len(sim.recorder.transfers),
            "sim_time_s": float(sim.env.now), "dashboard_bytes": size}


def simpy_timeouts(n: int = 1_000_000) -> float:
    """Seconds for ``n`` raw SimPy timeouts yielded by one process (the cost floor of ~1M
    inner steps as separate events)."""
    import simpy

    env = simpy.Environment()

    def proc():
        for _ in range(n):
            yield env.timeout(0.1)

    env.process(proc())
    t0 = time.perf_counter()
    env.run()
    return time.perf_counter() - t0


def _command(data: dict) -> float:
    """Wall seconds of ``locosim run`` on the scenario in a fresh Python process."""
    import yaml

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "scale.yaml"
        path.write_text(yaml.safe_dump(data))
        code = "import sys; sys.path.insert(0, %r); from sim.cli import main; raise SystemExit(main(sys.argv[1:]))" % str(ROOT)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, "run", str(path), "--out", str(Path(d) / "run"), "--quiet"],
                       check=True, capture_output=True, text=True)
        return time.perf_counter() - t0


def layer_1024(methods: list[str], command: bool, rounds: int = 10) -> dict:
    out: dict = {"workers": 1024, "rounds": rounds, "sync_grain": "layer", "simpy_1m_timeouts_s": simpy_timeouts()}
    for name in methods:
        data = ring_scenario(1024, 8, LAYER_METHODS[name], {"max_rounds": rounds})
        sim, simulate, report, size = _timed_run(data)
        entry = {"simulate_s": simulate, "report_s": report, "total_s": simulate + report,
                 "inner_steps": sum(w.steps_done for w in sim.workers), "transfers": len(sim.recorder.transfers),
                 "flow_classes": getattr(sim.net, "classes_started", None),
                 "flow_classes_split": getattr(sim.net, "classes_split", None),
                 "rate_recomputations": sim.net.rate_recomputations,
                 "rate_recomputed_flows": sim.net.rate_recomputed_flows,
                 "rate_recomputed_columns": getattr(sim.net, "rate_recomputed_columns", None),
                 "reduced_solves": getattr(sim.net, "reduced_solves", None),
                 "compiled_solves": getattr(sim.net, "compiled_solves", None),
                 "sim_time_s": float(sim.env.now),
                 "dashboard_bytes": size}
        if command:
            entry["command_s"] = _command(data)
            entry["command_over_1m_timeouts"] = entry["command_s"] / out["simpy_1m_timeouts_s"]
        out[name] = entry
    return out


DRAWN = """() => { const divs = document.querySelectorAll('.js-plotly-plot');
  return divs.length > 0 && Array.from(divs).every(d => d.querySelector('.main-svg') && d._fullLayout); }"""


# The figures plotly laid out a second time because their labels pushed the margins (automargin).
REDRAWN = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
  .filter(d => '_redrawFromAutoMarginCount' in d._fullLayout).map(d => d.id)"""


def dashboard_1024(draws: int) -> dict:
    """Bytes of the 1,024-worker layer-grain DiLoCo dashboard and seconds Chromium takes to draw it."""
    chromium = os.environ.get("LOCOSIM_CHROMIUM", "/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "needs the playwright Python package"}
    if not Path(chromium).is_file():
        return {"skipped": f"needs Chromium at {chromium}"}
    data = ring_scenario(1024, 8, LAYER_METHODS["diloco"], {"max_rounds": 10})
    sim = Simulation(parse_scenario(data))
    sim.run()
    out: dict = {"workers": 1024, "rounds": 10, "sync_grain": "layer", "method": "diloco"}
    with tempfile.TemporaryDirectory() as d:
        run_to_dir(sim, Path(d) / "run")
        page_path = Path(d) / "run" / "dashboard.html"
        out["dashboard_bytes"] = page_path.stat().st_size
        times, cpu = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            for _ in range(draws):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(page_path.resolve().as_uri(), wait_until="load")
                page.wait_for_function(DRAWN, polling=10, timeout=120_000)
                times.append(page.evaluate("() => performance.now()") / 1000)
                redrawn = page.evaluate(REDRAWN)
                page.close()
            for _ in range(draws):  # separate loads: tracing slows the page a little
                cpu.append(_draw_main_thread_cpu_s(browser, page_path))
            browser.close()
    out["figures_redrawn_for_margins"] = redrawn
    out["draw_s"] = sorted(times)[len(times) // 2]
    out["draws_s"] = times
    out["draw_main_thread_cpu_s"] = sorted(cpu)[len(cpu) // 2]
    out["draws_main_thread_cpu_s"] = cpu
    return out


def _draw_main_thread_cpu_s(browser, page_path: Path) -> float:
    """CPU seconds of the page's main thread (the renderer thread that parses, runs scripts and lays
    out) from navigation to every figure drawn, from Chromium's trace (the thread time of its tasks):
    less sensitive than ``draw_s`` to other processes on a busy machine."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto("about:blank")
    browser.start_tracing(page=page, categories=["disabled-by-default-devtools.timeline"])
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    page.wait_for_function(DRAWN, polling=10, timeout=120_000)
    events = json.loads(browser.stop_tracing())["traceEvents"]
    page.close()
    per_thread: dict = {}
    for e in events:
        if e.get("name") == "RunTask" and e.get("ph") == "X":
            key = (e["pid"], e["tid"])
            per_thread[key] = per_thread.get(key, 0) + e.get("tdur", 0)
    return max(per_thread.values()) / 1e6  # the busiest thread is the page's main thread


def barrier_1024(rounds: int) -> dict:
    out: dict = {"workers": 1024, "rounds": rounds}
    faults = {"stragglers": [{"factor": {"kind": "lognormal", "sigma": 0.5}}]}
    for name in ("diloco", "noloco"):
        # no communication cost: the grain would change nothing but the number of collectives
        data = ring_scenario(1024, 8, {"name": name, "inner_steps": 100, "sync_grain": "step"}, {"max_rounds": rounds},
                             gbps=float("inf"), latency_s=0.0, faults=faults)
        t0 = time.perf_counter()
        sim = Simulation(parse_scenario(data))
        with fewer_collections():  # as run_to_dir (locosim run, sweep) runs it
            sim.run()
        out[name] = {"simulate_s": time.perf_counter() - t0, "sim_time_s": sim.env.now}
    out["diloco_over_noloco_sim_time"] = out["diloco"]["sim_time_s"] / out["noloco"]["sim_time_s"]
    return out


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def _tiny_run(threads: str) -> float:
    """Wall seconds of one tiny-model run in a fresh process (imports excluded: timed inside)."""
    code = (
        "import time, sys; sys.path.insert(0, %r)\n"
        "from sim.scenario import load_scenario\nfrom sim.runner import Simulation\n"
        "sc = load_scenario(%r, ['topology.regions.0.nodes=3', 'topology.regions.1.nodes=3', "
        "'run.max_rounds=2', 'run.eval_every_steps=null', 'run.device=cpu', 'run.threads=%s'])\n"
        "t = time.perf_counter(); Simulation(sc).run(); print(time.perf_counter() - t)\n"
    ) % (str(ROOT), str(ROOT / "scenarios" / "quickstart.yaml"), threads)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def threads_workload() -> dict:
    out: dict = {}
    for neighbour in (False, True):
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,)) if neighbour else None
        if spinner is not None:
            spinner.start()
        try:
            runs = {t: _tiny_run(t) for t in ("1", "2", "auto")}
        finally:
            if spinner is not None:
                stop.set()
                spinner.join()
        best = min(runs["1"], runs["2"])
        out["with_neighbour" if neighbour else "alone"] = {**{f"threads_{k}_s": v for k, v in runs.items()},
                                                           "auto_over_best": runs["auto"] / best}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="diloco_1024,barrier_1024,threads")
    ap.add_argument("--grain", choices=["step", "layer"], default="step")
    ap.add_argument("--barrier-rounds", type=int, default=250)
    ap.add_argument("--async-rounds", type=int, default=10, help="async_1024's rounds")
    ap.add_argument("--draws", type=int, default=3, help="dashboard_1024: page loads (median reported)")
    ap.add_argument("--methods", default=",".join(LAYER_METHODS), help="layer_1024's methods")
    ap.add_argument("--no-command", action="store_true", help="layer_1024 without the fresh-process command runs")
    ap.add_argument("--rounds", type=int, default=10, help="layer_1024's rounds")
    args = ap.parse_args()
    only = set(args.only.split(","))
    result: dict = {}
    if "diloco_1024" in only:
        result["diloco_1024"] = diloco_1024(args.grain)
    if "layer_1024" in only:
        result["layer_1024"] = layer_1024(args.methods.split(","), not args.no_command, args.rounds)
    if "dashboard_1024" in only:
        result["dashboard_1024"] = dashboard_1024(args.draws)
    if "barrier_1024" in only:
        result["barrier_1024"] = barrier_1024(args.barrier_rounds)
    if "async_1024" in only:
        result["async_1024"] = async_1024(args.async_rounds)
    if "threads" in only:
        result["threads"] = threads_workload()
    result["machine"] = cpu_machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
