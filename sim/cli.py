"""locosim command line: validate | run | sweep | bandwidth | compare | schema.

Bad input (scenario files, flags) prints one line naming the field and what is allowed,
exits 2 and writes nothing. Ctrl-C during a run leaves a readable directory whose
manifest says ``interrupted`` (exit 130; SIGTERM the same, exit 143). A run that fails says
so in its manifest and exits 1. Output directories are claimed atomically before any work
and never reused (``sim.rundir``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import sys
from pathlib import Path

from sim.progress import RunProgress, SweepBar, ending_lines
from sim.progress import num as _num
from sim.progress import term as _term

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


class BadInput(Exception):
    """One-line message about bad user input; exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + error
        raise BadInput(f"{self.prog}: {message} (see --help)")


def _load_variants(path: str, overrides: list[str], only: str | None = None, default_run: dict | None = None):
    """[(variant name or None, scenario)] of a file, or just the variant ``only``; ``default_run``:
    the run: section of a scenario without one (see ``sim.scenario.load_variants``)."""
    from sim.scenario import ScenarioError, load_variants

    try:
        variants = load_variants(path, overrides, default_run=default_run)
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
    """The schema, then (unless --schema-only) every check `run` makes before it starts
    (sim.checks.check_before_work): data, device, kernels, memory estimate, work estimate."""
    variants = _load_variants(args.file, args.set, args.variant)
    lines = []
    for name, sc in variants:
        n = sc.topology.n_workers
        label = f" variant {name}" if name else ""
        extra = ""
        if not args.schema_only:
            from sim.checks import check_before_work

            try:
                pre = check_before_work(sc)
            except (ValueError, RuntimeError) as err:
                where = f"variants.{name}: " if name else ""
                raise BadInput(where + str(err).splitlines()[0]) from None
            except SystemExit as err:  # a plug-in's check-time code called sys.exit()
                where = f"variants.{name}: " if name else ""
                raise BadInput(f"{where}{_plugin_exit(err)} during the checks") from None
            events = pre.events.total
            extra = f"; about {_num(events)} events" if pre.events.terms else ""
            if pre.memory is not None:
                extra += f"; numerics about {_num(pre.memory.total_bytes / 1e6)} MB on {pre.device}"
        lines.append(f"{_term(args.file)}{_term(label)}: ok ({_term(sc.name)}: {_algorithm_label(sc)}, "
                     f"{n} workers in {len(sc.topology.regions)} regions{extra})")
    print("\n".join(lines))
    return 0


def _plugin_exit(err: SystemExit) -> str:
    return f"plug-in code called sys.exit({err.code!r}); locosim does not exit on a plug-in's behalf"


def _algorithm_label(sc) -> str:
    a = sc.algorithm
    return f"{a.name} H={a.inner_steps}" if hasattr(a, "inner_steps") else a.name


def _default_out(name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return Path("runs") / f"{safe}-{stamp}"


def _claim_out(args, variants):
    """Claim the run directory -- and for a file with variants each OUT/<variant> -- before
    anything is built (``sim.rundir.claim_variants``). Returns (the top claim, {variant or None:
    its run directory's claim})."""
    from sim.rundir import RunDirError, claim_variants

    default = None if args.out else _default_out(Path(args.file).stem if len(variants) > 1 else variants[0][1].name)
    try:
        return claim_variants(args.out, default, [name for name, _ in variants])
    except RunDirError as err:
        raise BadInput(f"--out {err}") from None


def _shown_as(given) -> "Callable[[Path], Path]":
    """How to print a path under a directory the user gave: relative to where the command
    started when they gave it relative (the run itself holds it absolute)."""
    cwd = os.getcwd()
    if Path(given).is_absolute():
        return lambda p: Path(p)
    return lambda p: Path(os.path.relpath(p, cwd))


def cmd_run(args) -> int:
    from sim.runner import Simulation
    from sim.signals import Terminated, handle_sigterm

    handle_sigterm()  # SIGTERM ends a run like Ctrl-C: tables written, manifest interrupted, exit 143
    every = args.progress_every
    if not (math.isfinite(every) and every >= 0):
        raise BadInput(f"--progress-every {every}: seconds between progress lines, a finite number >= 0")
    variants = _load_variants(args.file, args.set, args.variant)
    if getattr(args, "png", None):  # before the run: never replace a file locosim did not write
        from sim.outputs import check_png_dir

        _checked("--png", args.png, check_png_dir)
        args.png_shown, args.png = args.png, os.path.abspath(args.png)  # a plug-in may change the working directory
    top, unstarted = _claim_out(args, variants)
    out = top.path  # absolute from the claim on (sim.rundir.claim_dir): a plug-in may chdir
    args.shown = _shown_as(args.out or _default_out("x"))
    try:
        sims = []
        for name, sc in variants:  # build every variant before running any: bad input fails first
            try:
                sims.append((name, Simulation(sc)))
            except (ValueError, RuntimeError) as err:
                where = f"variants.{name}: " if name else ""
                raise BadInput(where + str(err).splitlines()[0]) from None
            except SystemExit as err:  # plug-in code building the run called sys.exit()
                where = f"variants.{name}: " if name else ""
                raise BadInput(f"{where}{_plugin_exit(err)} while the run was being built") from None
        if len(sims) == 1 and sims[0][0] is None:
            unstarted.clear()
            return _run_one(sims[0][1], out, args, claim=top)
        for name, sim in sims:
            claim = unstarted.pop(name)
            code = _run_one(sim, out / name, args, png_sub=name, claim=claim)
            if code != 0:
                return code
    except KeyboardInterrupt as err:  # while building (a run's own interrupt is handled in _run_one)
        what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        nothing_started = len(unstarted) == len(variants)  # their claims are released below
        print(f"{what}{' before the run started; nothing written' if nothing_started else ''}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    finally:  # claims of runs that never started (bad input, an interrupt, an earlier variant failed)
        for claim in reversed(list(unstarted.values())):
            claim.release()
        if None not in unstarted and len(unstarted) == len(variants):
            top.release()  # the variants' parent, when none of them started
    names = [name for name, _ in sims]
    if len(names) == 1:  # --variant NAME: one run, in OUT/NAME
        print(f"ran variant {_term(names[0])} of {_term(args.file)} into {args.shown(out / names[0])}")
    else:
        shown = args.shown(out)
        print(f"{len(names)} variants ({_term(', '.join(names))}) in {shown}; compare them with: "
              f"locosim compare {shown} -o {shown / 'compare.html'}")
    return 0


def _run_one(sim, out: Path, args, png_sub: str | None = None, claim=None) -> int:
    from sim.writer import run_to_dir

    sc = sim.sc
    shown = getattr(args, "shown", lambda p: p)(out)
    progress = RunProgress(sc, enabled=not args.quiet, every_s=getattr(args, "progress_every", 30.0))
    try:
        with progress:
            manifest = run_to_dir(sim, out, progress.update, source=str(args.file))
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (sim.signals.Terminated)
        from sim.signals import Terminated

        what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        if getattr(err, "run_not_started", False):  # claimed, but the running manifest was never written
            if claim is not None:
                claim.release()
            print(f"{what} before the run started; nothing written", file=sys.stderr)
        else:
            print(f"{what}: partial results in {shown} (manifest status: interrupted)", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    except Exception as err:  # the manifest records it; one line for the user
        print(f"run failed: {type(err).__name__}: {err} (details in {shown / 'manifest.json'})", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(ending_lines(sc, manifest, manifest.summary)))  # the summary as written: not read back
    print(f"dashboard: {shown / 'dashboard.html'}")
    if getattr(args, "png", None):
        from sim.report.dashboard import export_run_pngs

        png_dir = Path(args.png) / png_sub if png_sub else Path(args.png)
        written, note = export_run_pngs(out, png_dir)
        given = Path(getattr(args, "png_shown", args.png))  # as the user wrote it
        shown_png = given / png_sub if png_sub else given
        print(note or f"{len(written)} PNGs in {shown_png}", file=sys.stderr if note else sys.stdout)
    return 0


def _floats(flag: str, text: str, lo: float, hi: float) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"{flag} {text}: expected comma-separated numbers, e.g. 0.5,0.9") from None
    if not vals or any(not (lo < v <= hi) for v in vals):
        raise BadInput(f"{flag} {text}: each value must be in ({lo}, {hi}]")
    return vals


def cmd_bandwidth(args) -> int:
    from sim.bandwidth import DEFAULT_ROUNDS, WINDOW_TEXT, fill_curve, search

    # bandwidth sets its own run (timing only, --rounds rounds): a file needs no run: section
    variants = _load_variants(args.file, args.set, args.variant, default_run={"max_rounds": DEFAULT_ROUNDS})
    targets = _floats("--cu", args.cu, 0.0, 1.0)
    from sim.outputs import check_bandwidth_json, check_page

    json_path = None if args.json in (None, "-") else _checked("--json", args.json, check_bandwidth_json)
    html_path = None if args.html is None else _checked("-o", args.html, lambda p: check_page(p, "bandwidth"))
    for flag, x in (("--grid-min", args.grid_min), ("--grid-max", args.grid_max)):
        if not math.isfinite(x):  # before numpy's log grid warns and a link is blamed
            raise BadInput(f"{flag} {x}: must be a finite number of Gbit/s")
    if not (0 < args.grid_min < args.grid_max):
        raise BadInput(f"--grid-min {args.grid_min} / --grid-max {args.grid_max}: need 0 < min < max (Gbit/s)")
    if args.grid_points < 2:
        raise BadInput(f"--grid-points {args.grid_points}: need at least 2")
    if args.rounds is not None and args.rounds < 2:
        raise BadInput(f"--rounds {args.rounds}: need at least 2")
    results = {}
    for name, sc in variants:
        rounds = args.rounds if args.rounds is not None else (sc.run.max_rounds or DEFAULT_ROUNDS)
        where = f"variants.{name}: " if name else ""
        if rounds < 2:
            raise BadInput(f"{where}run.max_rounds {rounds}: the bandwidth search needs at least 2 rounds "
                           "(or --rounds)")
        try:
            res = search(sc, targets, args.grid_min, args.grid_max, args.grid_points, rounds, args.window)
        except (ValueError, RuntimeError) as err:
            raise BadInput(where + str(err).splitlines()[0]) from None
        if args.html:  # the chart draws every method's curve: a few grid points the search may have skipped
            fill_curve(sc, res)
        results[name] = (sc, res)
    window = WINDOW_TEXT[args.window]
    # The table goes to stdout, unless the JSON does (--json without a file): then to stderr, so that
    # stdout stays one JSON document for a pipe.
    table = sys.stderr if args.json == "-" else sys.stdout
    print(f"smallest WAN bandwidth (Gbit/s) reaching each CU; CU window {window}; grid {args.grid_min:g}-"
          f"{args.grid_max:g} Gbit/s, {args.grid_points} log points", file=table)
    print(f"{'method':<28}{'rounds':>7}" + "".join(f"{'CU ' + format(t, 'g'):>10}" for t in sorted(targets)),
          file=table)

    def cell(res, t: float, bw: float | None) -> str:  # '*': capped by the links the search leaves alone
        text = ">" + format(args.grid_max, "g") if bw is None else format(bw, ".3g")
        return f"{text + ('*' if t in res.capped else ''):>10}"

    for name, (sc, res) in results.items():
        cells = "".join(cell(res, t, bw) for t, bw in res.targets.items())
        print(f"{(name or _algorithm_label(sc)):<28}{res.rounds:>7}{cells}", file=table)
        if res.capped:
            print(f"  * {res.cap_warning()}", file=table)
    if any(bw is None for _, res in results.values() for bw in res.targets.values()):
        print(f">{args.grid_max:g}: the target is not reached at any bandwidth of the grid, up to {args.grid_max:g} "
              "Gbit/s (latency or the step's own compute bounds it; --grid-max looks further)", file=table)

    def one(sc, res) -> dict:
        return {"scenario": sc.name, "algorithm": sc.algorithm.model_dump(mode="json"), "rounds": res.rounds,
                "bandwidth_gbps_for_cu": {f"{t:g}": bw for t, bw in res.targets.items()},
                "fixed_links": res.fixed_links,
                "capped_by_fixed_links": {f"{t:g}": {"bandwidth_gbps_if_fixed_links_infinite": cap.uncapped_gbps,
                                                     "cu_at_infinite_wan": cap.cu_at_infinite_wan}
                                          for t, cap in res.capped.items()},
                "warning": res.cap_warning(),
                "evaluations": [{"bandwidth_gbps": b, "cu": c} for b, c in res.evaluations.items()]}

    used = {res.rounds for _, res in results.values()}
    out = {"grid": {"min_gbps": args.grid_min, "max_gbps": args.grid_max, "points": args.grid_points},
           "window": args.window, "window_definition": WINDOW_TEXT[args.window],
           "rounds": used.pop() if len(used) == 1 else None}
    if len(results) == 1 and None in results:
        out.update(one(*results[None]))
    else:
        out["variants"] = {name: one(sc, res) for name, (sc, res) in results.items()}
    if args.json == "-":
        print(json.dumps(out, indent=2))
    elif args.json:
        _write_text(_checked("--json", args.json, check_bandwidth_json), json.dumps(out, indent=2) + "\n", "--json")
        print(f"JSON: {args.json}", file=table)
    if args.html:
        from sim.report.bandwidth import bandwidth_page

        page = bandwidth_page({(name or _algorithm_label(sc)): res for name, (sc, res) in results.items()},
                              args.window, args.file)
        try:
            page.write(_checked("-o", args.html, lambda p: check_page(p, "bandwidth")))
        except OSError as err:
            raise BadInput(f"-o {args.html}: cannot write ({err.strerror or type(err).__name__})") from None
        print(f"chart: {args.html}", file=table)
    return 0


def _checked(flag: str, path: str, check) -> Path:
    """``check(path)`` from sim.outputs (what an output flag may replace), as one line (exit 2)."""
    from sim.outputs import OutputError

    try:
        return check(path)
    except OutputError as err:
        raise BadInput(f"{flag} {path}: {err}") from None
    except OSError as err:
        raise BadInput(f"{flag} {path}: cannot write there ({err.strerror or type(err).__name__})") from None


def _write_text(path: str | Path, text: str, flag: str) -> None:
    """Write a whole file (atomically) or say in one line why not (exit 2)."""
    from sim.outputs import write_atomic

    try:
        write_atomic(path, text)
    except OSError as err:
        raise BadInput(f"{flag} {path}: cannot write ({err.strerror or type(err).__name__})") from None


def cmd_compare(args) -> int:
    from sim.report.compare import CompareError, write_compare

    from sim.outputs import check_png_dir
    from sim.report.compare import check_page_output

    if args.target is not None and not (math.isfinite(args.target) and args.target > 0):
        raise BadInput(f"--target {args.target}: an eval loss must be a finite number > 0")

    out = Path(args.out)
    try:  # before reading every run: never a run's or sweep's file, nor any file but a compare page
        check_page_output(out)
    except CompareError as err:
        raise BadInput(str(err)) from None
    except OSError as err:
        raise BadInput(f"-o {out}: cannot write there ({err.strerror or type(err).__name__})") from None
    if args.png is not None:
        _checked("--png", args.png, check_png_dir)
    try:
        path, groups, note = write_compare(args.runs, out, baseline=args.baseline, force=args.force,
                                           target=args.target, png_dir=args.png)
    except CompareError as err:
        raise BadInput(str(err)) from None
    except OSError as err:  # e.g. the disk filled while writing the page
        raise BadInput(f"-o {out}: cannot write the page ({err.strerror or type(err).__name__})") from None
    n = sum(len(g.runs) for g in groups)
    print(f"compared {n} runs ({len(groups)} groups): {path}")
    if note:
        print(note, file=sys.stderr if note.startswith("png export skipped") else sys.stdout)
    return 0


def cmd_sweep(args) -> int:
    from sim.scenario import ScenarioError
    from sim.sweep.plan import apply_grid_flags, check_runs, parse_seeds, plan_sweep
    from sim.sweep.run import run_sweep

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
    try:  # what `locosim run` checks before work, for every run, before anything is written
        check_runs(plan, here=args.ray is None)
    except ScenarioError as err:
        raise BadInput(str(err)) from None
    from sim.rundir import SWEEP_JSON, RunDirError, claim_unique
    from sim.signals import handle_sigterm, was_terminated

    handle_sigterm()  # SIGTERM stops the sweep like Ctrl-C (runs in progress end interrupted), exit 143
    if args.out:
        out = Path(args.out)
        if any(len(os.fsencode(part)) > 255 for part in out.parts):
            raise BadInput(f"--out {out}: a path component is over 255 bytes long; at most 255 are allowed")
    else:  # a new directory; two sweeps started in the same second get NAME-sweep-TIMESTAMP and ...-2
        default = _default_out(Path(args.file).stem + "-sweep")
        try:
            out = claim_unique(default, placeholder=False).path
        except RunDirError as err:
            raise BadInput(f"--out {default}: {err}") from None
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / SWEEP_JSON).exists():
        raise BadInput(f"--out {out}: a non-empty directory that is not a sweep; choose a new directory")
    bar = SweepBar(len(plan.runs), enabled=not args.quiet)
    try:
        with bar:  # run_sweep holds OUT/sweep.lock: a second sweep here is refused while this one lives
            res = run_sweep(plan, out.absolute(), args.workers, args.ray, bar.update)  # a plug-in may chdir
    except RunDirError as err:
        raise BadInput(f"--out {out}: {err}") from None
    stopped = f", {res.n_interrupted} interrupted" if res.n_interrupted else ""
    print(f"sweep {out}: {res.done} done, {res.failed} failed, {res.skipped} skipped of {len(plan.runs)} "
          f"runs{stopped}; index: {res.index_path}")
    if res.interrupted:
        what = "terminated (SIGTERM)" if was_terminated() else "interrupted"
        print(f"{what}: run the same command again to resume (completed runs are skipped)", file=sys.stderr)
        return EXIT_TERMINATED if was_terminated() else EXIT_INTERRUPTED
    return EXIT_FAILED if res.failed else 0


def cmd_schema(args) -> int:
    from sim.scenario import json_schema, method_schema

    if args.plugin:  # a plug-in method's own knobs
        from sim.algorithms import method_class, registered as methods
        from sim.loader import PluginError, resolve_ref

        registered = methods()
        try:
            cls = method_class(resolve_ref(registered.get(args.plugin, args.plugin), None))
        except PluginError as err:
            raise BadInput(f"--plugin: {err}") from None
        print(json.dumps(method_schema(cls.Spec, args.plugin if args.plugin in registered else None), indent=2))
        return 0
    print(json.dumps(json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="locosim", description="Discrete-event simulator of geo-distributed, low-communication training.")
    p.add_argument("--version", action="version", version=f"locosim {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    v = sub.add_parser("validate", help="check a scenario file", description="Check a scenario file and print a one-line summary.")
    v.add_argument("file", help="scenario YAML")
    v.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a field (repeatable)")
    v.add_argument("--variant", metavar="NAME", help="check only this entry of the file's variants: section")
    v.add_argument("--schema-only", action="store_true", help="check only the schema; skip the checks `run` makes "
                                                              "before it starts (data, device, memory and work "
                                                              "estimates)")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("run", help="run a scenario and write its directory",
                       description="Run a scenario; writes manifest.json, events.parquet, metrics.parquet, "
                                   "summary.json and dashboard.html into the output directory.")
    r.add_argument("file", help="scenario YAML")
    r.add_argument("--out", help="output directory (new or empty; default runs/NAME-TIMESTAMP)")
    r.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a field, e.g. --set algorithm.inner_steps=50 (repeatable)")
    r.add_argument("--variant", metavar="NAME", help="run only this entry of the file's variants: section")
    r.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    r.add_argument("--progress-every", type=float, default=30.0, metavar="S",
                   help="when stderr is not a terminal (a log file), print a progress line every S wall seconds "
                        "(default 30)")
    r.add_argument("--png", metavar="DIR", help="also write a PNG of every dashboard figure into DIR (kaleido and "
                                                "a system Chromium; skipped with a message when missing)")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bandwidth", help="smallest WAN bandwidth reaching each compute-utilization target",
                       description="Timing-only runs on a log grid of WAN bandwidths (every link set alike); prints "
                                   "a table (and JSON with --json, a chart with -o): the smallest grid bandwidth whose "
                                   "CU (--window) reaches each target, for the scenario's algorithm, and a warning "
                                   "where links it does not vary (intra-region) cap the answer. The file needs no run: "
                                   "section.")
    b.add_argument("file", help="scenario YAML")
    b.add_argument("--cu", default="0.5,0.8,0.9,0.95,0.99", help="CU targets in (0, 1], comma-separated")
    b.add_argument("--grid-min", type=float, default=0.1, help="lowest bandwidth, Gbit/s (default 0.1)")
    b.add_argument("--grid-max", type=float, default=1000.0, help="highest bandwidth, Gbit/s (default 1000)")
    b.add_argument("--grid-points", type=int, default=50, help="log-spaced grid points (default 50)")
    b.add_argument("--variant", metavar="NAME", help="only this entry of the file's variants: section (default: each)")
    b.add_argument("--rounds", type=int, default=None, help="outer rounds (ddp: steps) per run (default: the file's "
                                                             "run.max_rounds, else 20)")
    b.add_argument("--window", choices=("steady", "all", "last_step"), default="steady",
                   help="CU window: steady = from the end of the first quarter of the rounds (default); all = the "
                        "whole run from time 0, the wait for the last sync included; last_step = from time 0 to the "
                        "end of the last inner step's compute (the last sync not waited for)")
    b.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a field (repeatable)")
    b.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="also give the answers and every evaluated point as JSON: on stdout (the table then goes to "
                        "stderr), or into FILE")
    b.add_argument("-o", "--html", metavar="FILE.html", help="also write a page with CU vs WAN bandwidth per method")
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
                                                                "runs' common run.target_eval_loss, else none: losses "
                                                                "are compared at equal tokens and equal time)")
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
    s.add_argument("--plugin", metavar="REF", help="print a plug-in method's knobs instead (FILE.py:Class or module:Class)")
    s.set_defaults(func=cmd_schema)
    return p


def _version() -> str:
    """The installed package's version (pyproject.toml), or 'unknown' when run from a bare tree."""
    import importlib.metadata as md

    try:
        return md.version("locosim")
    except md.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code. A reader that closes stdout early (``| head``,
    ``| false``) ends the command quietly (exit 1 where it had not finished), never with a traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at interpreter exit, so that a closed pipe is caught
        return code
    except BrokenPipeError:
        try:  # Python flushes stdout again at exit: point it at /dev/null so that says nothing either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_FAILED


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # --help and --version exit here (SystemExit), as argparse does
    except BadInput as err:
        print(f"error: {_term(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except BadInput as err:
        print(f"error: {_term(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as err:  # plug-in code (a hook not caught nearer) called sys.exit(): never exit 0 silently
        print(f"error: {_term(_plugin_exit(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:  # Ctrl-C (or SIGTERM) while importing or planning: nothing was started
        from sim.signals import Terminated

        if isinstance(err, Terminated):
            print("terminated (SIGTERM)", file=sys.stderr)
            return EXIT_TERMINATED
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
