"""How a run's and a sweep's progress are shown on a terminal (stderr), apart from the commands.

``RunProgress``: a rich bar with an ETA on a terminal; otherwise (a log file, a pipe, a batch
job) one plain line every ``every_s`` wall seconds (``progress_line``), so a log is never
silent. ``SweepBar``: one bar for a whole sweep. ``term``: text from a scenario made safe to
print; ``num``: a number as the commands print it; ``ending_lines``: what ``locosim run`` says
of a run that ended. The CLI (``sim.cli``) only chooses what to show.
"""

from __future__ import annotations

import re
import sys
import time

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def term(text: str) -> str:
    """Text from a scenario made safe for a terminal: control characters (escape sequences,
    carriage returns, newlines) are shown as \\xNN instead of acting on the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def num(x: float | None, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, without a long tail or a bare exponent
    for everyday magnitudes: 0.05, 12.35, 1,234, 1.23e+09."""
    if x is None:
        return "-"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    if x == 0 or 1e-3 <= abs(x) < 1e6:
        text = f"{x:,.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}g}"
        return text if "e" not in text else f"{x:,.{max(0, digits - len(str(int(abs(x)))))}f}"
    return f"{x:.{digits - 1}e}"


def _fmt_wall(seconds: float | None) -> str:
    """Wall seconds as 42s, 3m05s or 1h02m (what a progress line needs)."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "-"
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_fraction(p) -> float | None:
    """How far a run is towards its nearest stop condition (rounds, simulated time, tokens),
    0..1; None when it has none that can be measured."""
    fracs = []
    if p.max_rounds:
        fracs.append(p.rounds / p.max_rounds)
    if p.max_time_s:
        fracs.append(p.time_s / p.max_time_s)
    if p.max_tokens:
        fracs.append(p.tokens / p.max_tokens)
    return min(1.0, max(fracs)) if fracs else None


def progress_line(p, wall_s: float) -> str:
    """One line of a run's progress: simulated time, round, loss, wall time and ETA (the wall
    time left if the rest goes as fast as the part done; '-' before there is a part done)."""
    frac = progress_fraction(p)
    eta = wall_s * (1 - frac) / frac if frac else None
    loss = f"{p.loss:.3f}" if p.loss is not None else "-"
    rounds = f"{p.rounds}/{p.max_rounds}" if p.max_rounds else f"{p.rounds}"
    done = f" ({frac:.0%})" if frac is not None else ""
    return (f"sim {p.time_s:,.1f} s | round {rounds} | loss {loss} | wall {_fmt_wall(wall_s)} | "
            f"ETA {_fmt_wall(eta)}{done}")


class RunProgress:
    """Progress of a run on stderr: a rich bar with an ETA on a terminal; otherwise (a log file,
    a pipe, a batch job) one plain line every ``every_s`` wall seconds, so a log is never silent."""

    def __init__(self, sc, enabled: bool, every_s: float = 30.0):
        self.sc = sc
        self.tty = sys.stderr.isatty()
        self.enabled = enabled
        self.every_s = every_s
        self.bar = None
        self.started = self.last_line = None

    def __enter__(self):
        self.started = self.last_line = time.monotonic()
        if self.enabled and self.tty:
            from rich.markup import escape
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task(escape(term(self.sc.name)), total=1.0, info="")  # no markup, no escapes
        return self

    def update(self, p) -> None:
        if not self.enabled:
            return
        if self.bar is None:  # not a terminal: a plain line now and then
            now = time.monotonic()
            if now - self.last_line >= self.every_s:
                self.last_line = now
                print(f"{term(self.sc.name)}: {progress_line(p, now - self.started)}", file=sys.stderr, flush=True)
            return
        loss = f"{p.loss:.3f}" if p.loss is not None else "-"
        self.bar.update(self.task, completed=progress_fraction(p) or 0.0,
                        info=f"sim {p.time_s:,.1f} s | round {p.rounds} | loss {loss}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


class SweepBar:
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


def ending_lines(sc, manifest, summary) -> list[str]:
    """What ``locosim run`` prints of a finished run: status, wall and simulated time, rounds,
    utilization and final loss; then why it diverged or ended early, if it did. From the
    ``Manifest`` and ``Summary`` the run directory writer returned (nothing is read back)."""
    floor, final = summary.loss_floor, summary.final_eval_loss
    floor_txt = f" (floor {floor:.3f})" if floor is not None else ""
    loss_txt = (f"final eval loss {num(final)}{floor_txt}" if final is not None else
                "final eval loss not finite" if summary.diverged else "timing only (no numerics)")
    lines = [f"{term(sc.name)}: {manifest.status} in {num(manifest.wall_s, 3)} s wall, "
             f"{num(summary.sim_duration_s)} s simulated, {summary.rounds} rounds, "
             f"utilization {summary.utilization:.1%}, {loss_txt}"]
    if summary.diverged:
        lines.append(f"diverged: {term(summary.diverged['reason'])} (run.on_divergence: {sc.run.on_divergence})")
    if summary.ended_early:
        lines.append(f"ended early at {num(summary.sim_duration_s)} s simulated, before any stop condition: "
                     f"{term(summary.ended_early)}")
    return lines
