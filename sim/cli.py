"""locosim command line: validate | run | sweep | bandwidth | compare | schema.

Bad input (scenario files, flags) prints one line naming the field and what is allowed,
exits 2 and writes nothing. Ctrl-C during a run leaves a readable directory whose
manifest says ``interrupted`` (exit 130). A run that fails says so in its manifest and
exits 1.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class BadInput(Exception):
    """One-line message about bad user input; exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + error
        raise BadInput(f"{self.prog}: {message} (see --help)")


def _load(path: str, overrides: list[str]):
    from sim.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(path, overrides)
    except ScenarioError as err:
        raise BadInput(str(err)) from None


def _load_variants(path: str, overrides: list[str], only: str | None = None):
    """[(variant name or None, scenario)] of a file, or just the variant ``only``."""
    from sim.scenario import ScenarioError, load_variants

    try:
        variants = load_variants(path, overrides)
    except ScenarioError as err:
        raise BadInput(str(err)) from None
    if only is not None:
        names = [n for n, _ in variants if n is not None]
        if only not in names:
            allowed = ", ".join(names) if names else "none (this file has no variants: section)"
            raise BadInput(f"--variant {only}: no such variant; variants: {allowed}")
        variants = [(n, sc) for n, sc in variants if n == only]
    return variants


def cmd_validate(args) -> int:
    for name, sc in _load_variants(args.file, args.set):
        n = sc.topology.n_workers
        label = f" variant {name}" if name else ""
        print(f"{args.file}{label}: ok ({sc.name}: {_algorithm_label(sc)}, {n} workers in "
              f"{len(sc.topology.regions)} regions)")
    return 0


def _algorithm_label(sc) -> str:
    a = sc.algorithm
    return f"{a.name} H={a.inner_steps}" if hasattr(a, "inner_steps") else a.name


def _default_out(name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return Path("runs") / f"{safe}-{stamp}"


def cmd_run(args) -> int:
    from sim.runner import Simulation

    variants = _load_variants(args.file, args.set, args.variant)
    out = Path(args.out) if args.out else _default_out(Path(args.file).stem if len(variants) > 1 else variants[0][1].name)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"--out {out}: already exists and is not empty; choose a new directory "
                       "(nothing is overwritten)")
    sims = []
    for name, sc in variants:  # build every variant before writing anything: bad input fails first
        try:
            sims.append((name, Simulation(sc)))
        except (ValueError, RuntimeError) as err:
            where = f"variants.{name}: " if name else ""
            raise BadInput(where + str(err).splitlines()[0]) from None
    if len(sims) == 1 and sims[0][0] is None:
        return _run_one(sims[0][1], out, args)
    for name, sim in sims:
        code = _run_one(sim, out / name, args, png_sub=name)
        if code != 0:
            return code
    print(f"{len(sims)} variants in {out}; compare them with: locosim compare {out} -o {out / 'compare.html'}")
    return 0


def _run_one(sim, out: Path, args, png_sub: str | None = None) -> int:
    from sim.runner import run_to_dir

    sc = sim.sc
    progress = _progress_reporter(sc, enabled=not args.quiet)
    try:
        with progress:
            manifest = run_to_dir(sim, out, progress.update, source=str(args.file))
    except KeyboardInterrupt:
        print(f"interrupted: partial results in {out} (manifest status: interrupted)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # the manifest records it; one line for the user
        print(f"run failed: {type(err).__name__}: {err} (details in {out / 'manifest.json'})", file=sys.stderr)
        return EXIT_FAILED
    summary = json.loads((out / "summary.json").read_text())
    floor, final = summary["loss_floor"], summary["final_eval_loss"]
    floor_txt = f" (floor {floor:.3f})" if floor is not None else ""
    loss_txt = f"final eval loss {final:.4f}{floor_txt}" if final is not None else "timing only (no numerics)"
    print(f"{sc.name}: {manifest['status']} in {manifest['wall_s']:.1f} s wall, "
          f"{summary['sim_duration_s']:.1f} s simulated, {summary['rounds']} rounds, "
          f"utilization {summary['utilization']:.1%}, {loss_txt}")
    print(f"dashboard: {out / 'dashboard.html'}")
    if getattr(args, "png", None):
        from sim.report.dashboard import export_run_pngs

        png_dir = Path(args.png) / png_sub if png_sub else Path(args.png)
        written, note = export_run_pngs(out, png_dir)
        print(note or f"{len(written)} PNGs in {png_dir}", file=sys.stderr if note else sys.stdout)
    return 0


class _progress_reporter:
    """A rich progress bar on stderr: simulated time, rounds and current loss."""

    def __init__(self, sc, enabled: bool):
        self.sc = sc
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.sc.name, total=1.0, info="")
        return self

    def update(self, p) -> None:
        if self.bar is None:
            return
        fracs = []
        if p.max_rounds:
            fracs.append(p.rounds / p.max_rounds)
        if p.max_time_s:
            fracs.append(p.time_s / p.max_time_s)
        if p.max_tokens:
            fracs.append(p.tokens / p.max_tokens)
        loss = f"{p.loss:.3f}" if p.loss is not None else "-"
        self.bar.update(self.task, completed=min(1.0, max(fracs or [0.0])),
                        info=f"sim {p.time_s:,.1f} s | round {p.rounds} | loss {loss}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def _floats(flag: str, text: str, lo: float, hi: float) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"{flag} {text}: expected comma-separated numbers, e.g. 0.5,0.9") from None
    if not vals or any(not (lo < v <= hi) for v in vals):
        raise BadInput(f"{flag} {text}: each value must be in ({lo}, {hi}]")
    return vals


def cmd_bandwidth(args) -> int:
    from sim.bandwidth import search

    variants = _load_variants(args.file, args.set, args.variant)
    targets = _floats("--cu", args.cu, 0.0, 1.0)
    if not (0 < args.grid_min < args.grid_max):
        raise BadInput(f"--grid-min {args.grid_min} / --grid-max {args.grid_max}: need 0 < min < max (Gbit/s)")
    if args.grid_points < 2:
        raise BadInput(f"--grid-points {args.grid_points}: need at least 2")
    if args.rounds < 2:
        raise BadInput(f"--rounds {args.rounds}: need at least 2")
    results = {}
    for name, sc in variants:
        try:
            res = search(sc, targets, args.grid_min, args.grid_max, args.grid_points, args.rounds)
        except (ValueError, RuntimeError) as err:
            where = f"variants.{name}: " if name else ""
            raise BadInput(where + str(err).splitlines()[0]) from None
        results[name] = (sc, res)
    print(f"smallest WAN bandwidth (Gbit/s) reaching each CU; grid {args.grid_min:g}-{args.grid_max:g} Gbit/s, "
          f"{args.grid_points} log points", file=sys.stderr)
    print(f"{'method':<28}" + "".join(f"{'CU ' + format(t, 'g'):>10}" for t in sorted(targets)), file=sys.stderr)
    for name, (sc, res) in results.items():
        cells = "".join(f"{('>' + format(args.grid_max, 'g')) if bw is None else format(bw, '.3g'):>10}"
                        for bw in res.targets.values())
        print(f"{(name or _algorithm_label(sc)):<28}{cells}", file=sys.stderr)

    def one(sc, res) -> dict:
        return {"scenario": sc.name, "algorithm": sc.algorithm.model_dump(mode="json"),
                "bandwidth_gbps_for_cu": {f"{t:g}": bw for t, bw in res.targets.items()},
                "evaluations": [{"bandwidth_gbps": b, "cu": c} for b, c in res.evaluations.items()]}

    out = {"grid": {"min_gbps": args.grid_min, "max_gbps": args.grid_max, "points": args.grid_points},
           "rounds": args.rounds}
    if len(results) == 1 and None in results:
        out.update(one(*results[None]))
    else:
        out["variants"] = {name: one(sc, res) for name, (sc, res) in results.items()}
    print(json.dumps(out, indent=2))
    return 0


def cmd_compare(args) -> int:
    from sim.report.compare import CompareError, write_compare

    out = Path(args.out)
    if out.is_dir():
        raise BadInput(f"-o {out}: is a directory; name the HTML file to write")
    try:
        path, groups, note = write_compare(args.runs, out, baseline=args.baseline, force=args.force,
                                           target=args.target, png_dir=args.png)
    except CompareError as err:
        raise BadInput(str(err)) from None
    n = sum(len(g.runs) for g in groups)
    print(f"compared {n} runs ({len(groups)} groups): {path}")
    if note:
        print(note, file=sys.stderr if note.startswith("png export skipped") else sys.stdout)
    return 0


def cmd_sweep(args) -> int:
    from sim.scenario import ScenarioError
    from sim.sweep import apply_grid_flags, parse_seeds, plan_sweep, run_sweep

    if args.workers < 1:
        raise BadInput(f"--workers {args.workers}: need at least 1")
    try:
        grid = apply_grid_flags(args.grid)
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        plan = plan_sweep(args.file, grid, seeds, args.set)
    except ScenarioError as err:
        raise BadInput(str(err)) from None
    if args.ray is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise BadInput("--ray: Ray is not installed; pip install 'locosim[ray]' (or use --workers N)") from None
    out = Path(args.out) if args.out else _default_out(Path(args.file).stem + "-sweep")
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "sweep.json").exists():
        raise BadInput(f"--out {out}: a non-empty directory that is not a sweep; choose a new directory")
    bar = _SweepBar(len(plan.runs), enabled=not args.quiet)
    with bar:
        res = run_sweep(plan, out, args.workers, args.ray, bar.update)
    print(f"sweep {out}: {res.done} done, {res.failed} failed, {res.skipped} skipped of {len(plan.runs)} runs; "
          f"index: {res.index_path}")
    if res.interrupted:
        print("interrupted: run the same command again to resume (completed runs are skipped)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if res.failed else 0


class _SweepBar:
    """One rich bar for the whole sweep: done / failed / skipped."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled and sys.stderr.isatty(), None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self.bar.__enter__()
            self.task = self.bar.add_task("sweep", total=self.total, info="")
        return self

    def update(self, done: int, failed: int, skipped: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done + failed + skipped,
                            info=f"done {done} | failed {failed} | skipped {skipped}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def cmd_schema(args) -> int:
    from sim.scenario import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="locosim", description="Discrete-event simulator of geo-distributed, low-communication training.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    v = sub.add_parser("validate", help="check a scenario file", description="Check a scenario file and print a one-line summary.")
    v.add_argument("file", help="scenario YAML")
    v.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a field (repeatable)")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("run", help="run a scenario and write its directory",
                       description="Run a scenario; writes manifest.json, events.parquet, metrics.parquet, "
                                   "summary.json and dashboard.html into the output directory.")
    r.add_argument("file", help="scenario YAML")
    r.add_argument("--out", help="output directory (new or empty; default runs/NAME-TIMESTAMP)")
    r.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a field, e.g. --set algorithm.inner_steps=50 (repeatable)")
    r.add_argument("--variant", metavar="NAME", help="run only this entry of the file's variants: section")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--png", metavar="DIR", help="also write a PNG of every dashboard figure into DIR (kaleido and "
                                                "a system Chromium; skipped with a message when missing)")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bandwidth", help="smallest WAN bandwidth reaching each compute-utilization target",
                       description="Timing-only runs on a log grid of WAN bandwidths (every link set alike); prints "
                                   "a table on stderr and JSON on stdout: the smallest grid bandwidth whose "
                                   "steady-state CU reaches each target, for the scenario's algorithm.")
    b.add_argument("file", help="scenario YAML")
    b.add_argument("--cu", default="0.5,0.8,0.9,0.95,0.99", help="CU targets in (0, 1], comma-separated")
    b.add_argument("--grid-min", type=float, default=0.1, help="lowest bandwidth, Gbit/s (default 0.1)")
    b.add_argument("--grid-max", type=float, default=1000.0, help="highest bandwidth, Gbit/s (default 1000)")
    b.add_argument("--grid-points", type=int, default=50, help="log-spaced grid points (default 50)")
    b.add_argument("--variant", metavar="NAME", help="only this entry of the file's variants: section (default: each)")
    b.add_argument("--rounds", type=int, default=20, help="outer rounds per run; CU is measured after the first quarter")
    b.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a field (repeatable)")
    b.set_defaults(func=cmd_bandwidth)

    c = sub.add_parser("compare", help="put runs side by side in one HTML page",
                       description="Compare run directories (or directories holding them, e.g. a sweep or a "
                                   "variants run) in one self-contained HTML page. Runs must train the same "
                                   "model on the same data unless --force; replications (same scenario, "
                                   "different seeds) are drawn as a mean with a min-max band.")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directory, or a directory holding run directories")
    c.add_argument("-o", "--out", default="compare.html", help="HTML file to write (default compare.html)")
    c.add_argument("--baseline", metavar="RUN", help="run (directory or label) the difference table is against "
                                                     "(default: the first)")
    c.add_argument("--target", type=float, metavar="LOSS", help="eval loss for 'time to target' (default: the "
                                                                "runs' run.target_eval_loss, else the worst final loss)")
    c.add_argument("--force", action="store_true", help="compare runs whose model or data differ")
    c.add_argument("--png", metavar="DIR", help="also write a PNG of every figure into DIR")
    c.set_defaults(func=cmd_compare)

    w = sub.add_parser("sweep", help="run a grid of scenarios x seeds (local process pool or Ray)",
                       description="Run every combination of the file's variants, --grid values and --seeds (or the "
                                   "file's sweep: section) into OUT/<label-hash>/, writing OUT/index.parquet. "
                                   "Re-running skips completed runs and reruns interrupted or failed ones.")
    w.add_argument("file", help="scenario YAML")
    w.add_argument("--grid", action="append", default=[], metavar="KEY.PATH=V1,V2,...",
                   help="values of one field to sweep (repeatable), e.g. algorithm.inner_steps=50,100,500")
    w.add_argument("--seeds", metavar="A..B|A,B,...", help="seeds, e.g. 0..4 (default: the file's)")
    w.add_argument("--out", help="sweep directory (default runs/NAME-sweep-TIMESTAMP); reuse it to resume")
    w.add_argument("--workers", type=int, default=1, help="runs at once in a local process pool (default 1)")
    w.add_argument("--ray", metavar="ADDRESS", help="run on Ray instead: 'auto' (a running cluster), 'local' "
                                                    "(start one here) or an address")
    w.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a field for every run")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.set_defaults(func=cmd_sweep)

    s = sub.add_parser("schema", help="print the JSON Schema of scenario files",
                       description="Print the JSON Schema of scenario files (for editors).")
    s.set_defaults(func=cmd_schema)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
