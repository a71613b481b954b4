"""locosim command line: validate | run | schema.

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


def cmd_validate(args) -> int:
    sc = _load(args.file, args.set)
    n = sc.topology.n_workers
    print(f"{args.file}: ok ({sc.name}: {_algorithm_label(sc)}, {n} workers in "
          f"{len(sc.topology.regions)} regions)")
    return 0


def _algorithm_label(sc) -> str:
    a = sc.algorithm
    return f"{a.name} H={a.inner_steps}" if hasattr(a, "inner_steps") else a.name


def _default_out(sc) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", sc.name)
    return Path("runs") / f"{safe}-{stamp}"


def cmd_run(args) -> int:
    from sim.runner import Simulation, run_to_dir

    sc = _load(args.file, args.set)
    out = Path(args.out) if args.out else _default_out(sc)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"--out {out}: already exists and is not empty; choose a new directory "
                       "(nothing is overwritten)")
    try:
        sim = Simulation(sc)
    except (ValueError, RuntimeError) as err:
        raise BadInput(str(err).splitlines()[0]) from None
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
    floor = summary["loss_floor"]
    floor_txt = f" (floor {floor:.3f})" if floor is not None else ""
    print(f"{sc.name}: {manifest['status']} in {manifest['wall_s']:.1f} s wall, "
          f"{summary['sim_duration_s']:.1f} s simulated, {summary['rounds']} rounds, "
          f"utilization {summary['utilization']:.1%}, final eval loss {summary['final_eval_loss']:.4f}{floor_txt}")
    print(f"dashboard: {out / 'dashboard.html'}")
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
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

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
