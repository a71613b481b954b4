"""The run directory writer: one run -> manifest.json, events.parquet, metrics.parquet,
summary.json, dashboard.html (and model.pt with ``run.save_model``).

The third of the runner's pieces (``sim.build``, ``sim.adapter``, this). ``manifest.json`` is
written first (status running); on any ending -- completed, diverged, interrupted (Ctrl-C,
SIGTERM) or failed -- whatever was recorded is frozen into a ``RunResult``, turned into the
tables, the summary and the dashboard, and the manifest's status says which ending it was.
Every file is written to a ``.tmp`` and renamed, so a full disk leaves no half file. What the
directory holds -- file names, statuses, the typed ``Manifest`` and ``Summary``, strict JSON --
is ``sim.rundir``'s; this module runs the simulation and fills it. Callers import
``run_to_dir`` from here.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sim.collector import fewer_collections
from sim.rundir import (DASHBOARD, EVENTS, METRICS, MODEL, STATUS_COMPLETED, STATUS_DIVERGED, STATUS_FAILED,
                        STATUS_INTERRUPTED, STATUS_RUNNING, SUMMARY, Manifest, write_json, write_manifest)

if TYPE_CHECKING:
    import pandas as pd

    from sim.metrics.summary import Summary
    from sim.result import RunResult
    from sim.loop import Progress
    from sim.runner import Simulation


class PluginExit(RuntimeError):
    """Plug-in code called ``sys.exit()`` during a run: the run failed (locosim does not exit
    on a plug-in's behalf, and never with the plug-in's exit code)."""


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("locosim", "torch", "numpy", "simpy", "networkx", "pydantic", "plotly", "pyarrow", "pandas"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_to_dir(sim: Simulation, out_dir: Path, on_progress: Callable[[Progress], None] | None = None,
               source: str | None = None) -> Manifest:
    """Run a built simulation and write its directory; returns the final manifest, with the
    summary it wrote (``Manifest.summary``; None when none was written).

    KeyboardInterrupt is caught: the directory is completed with what was recorded and
    marked interrupted, then the interrupt is re-raised. Other errors mark it failed and
    are re-raised after the files are written. An error while writing the files (a full
    disk) marks the run failed with the reason, leaves no ``.tmp`` file and is re-raised.
    The run and the writing go with ``fewer_collections``.
    """
    with fewer_collections():
        return _run_to_dir(sim, out_dir, on_progress, source)


def run_rates(result: RunResult, events: pd.DataFrame) -> dict:
    """A finished run's link and region-pair rates in ``sim.engine.replay.network_rates``' form:
    those its network logged while it ran (``RunResult.link_rates``: nothing is simulated
    again), else the replay of its transfers."""
    if result.link_rates is not None:
        return dict(result.link_rates)
    from sim.engine.replay import network_rates

    return network_rates(result.graph, events)


def _run_to_dir(sim: Simulation, out_dir: Path, on_progress: Callable[[Progress], None] | None,
                source: str | None) -> Manifest:
    from sim.fingerprint import fingerprints
    from sim.metrics.summary import summarize
    from sim.metrics.tables import events_table, metrics_table
    from sim.report.dashboard import write_dashboard

    sc = sim.sc
    out_dir = Path(os.path.abspath(out_dir))  # a plug-in that changes the working directory moves nothing
    try:  # an interrupt before the running manifest is written: the run never started (the CLI releases the claim)
        out_dir.mkdir(parents=True, exist_ok=True)
        scenario = sc.model_dump(mode="json")
        manifest = Manifest(
            name=sc.name, status=STATUS_RUNNING, scenario=scenario, source=source,
            fingerprints=fingerprints(scenario),  # sha256 of the plug-in source and data files it reads
            seed=sc.seed, versions=_versions(), git_revision=_git_revision(), device=_describe_device(sim.device),
            host=platform.node(), pid=os.getpid(), started_at=_now())
        write_manifest(out_dir, manifest)
    except KeyboardInterrupt as err:
        err.run_not_started = True
        raise
    t0 = time.monotonic()
    pending: BaseException | None = None
    try:
        sim.run(on_progress)
        manifest.status = STATUS_DIVERGED if sim.diverged else STATUS_COMPLETED
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (sim.signals.Terminated: "terminated by SIGTERM")
        manifest.status = STATUS_INTERRUPTED
        manifest.error = str(err) or None
        pending = err
    except SystemExit as err:  # plug-in code called sys.exit(): a failed run, not locosim's exit
        manifest.status = STATUS_FAILED
        manifest.error = f"PluginExit: plug-in code called sys.exit({err.code!r}) during the run"
        manifest.traceback = traceback.format_exc()
        pending = PluginExit(manifest.error.split(": ", 1)[1])
    except Exception as err:  # recorded in the manifest, then re-raised for the CLI
        manifest.status = STATUS_FAILED
        manifest.error = f"{type(err).__name__}: {err}"
        manifest.traceback = traceback.format_exc()  # e.g. a plug-in method's own code
        pending = err
    manifest.wall_s = time.monotonic() - t0
    ending = manifest.status
    written = manifest.files  # what exists, in the order written: the tables first, then what derives from them
    summary: Summary | None = None
    try:
        if manifest.status != STATUS_COMPLETED:
            sim.close_records()  # keep what was recorded; no more numerics after an interrupt
        result = sim.result()
        manifest.diagnostic_labels = {k: list(v) for k, v in result.diagnostic_labels.items()}  # the method's words
        events = events_table(result.records)
        _write_parquet(events, out_dir / EVENTS)
        written.append(EVENTS)
        metrics = metrics_table(result)
        _write_parquet(metrics, out_dir / METRICS)
        written.append(METRICS)
        network = run_rates(result, events)  # as logged by the run: the summary's peaks and the page's curves
        summary = summarize(result, events, metrics, manifest, network)
        write_json(out_dir / SUMMARY, summary)
        written.append(SUMMARY)
        manifest.summary = summary
        write_dashboard(out_dir / DASHBOARD, events, metrics, summary.to_json(), manifest.to_json(), network)
        written.append(DASHBOARD)
        if sc.run.save_model and sim.numerics_on and manifest.status in (STATUS_COMPLETED, STATUS_DIVERGED):
            sim.save_model(out_dir / MODEL)
            written.append(MODEL)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM while writing: keep what is written, and say so
        manifest.status = STATUS_INTERRUPTED
        if pending is None:
            what = str(err) or "interrupted"
            manifest.error = (f"{what} while writing the run directory; the simulation itself had ended "
                              f"{ending}; written: {', '.join(written) or 'nothing'}")
            if summary is not None and SUMMARY in written:  # the summary says what the manifest says
                summary.status = STATUS_INTERRUPTED
                try:
                    write_json(out_dir / SUMMARY, summary)
                except OSError:
                    pass
        pending = pending or err
    except Exception as err:  # e.g. OSError: the disk is full; the run's own ending stays in the error
        reason = f"writing the run directory failed: {type(err).__name__}: {err}"
        manifest.error = f"{manifest.error}; then {reason}" if manifest.error else reason
        manifest.status = STATUS_FAILED
        pending = pending or err
    finally:
        manifest.ended_at = _now()
        manifest.diverged = sim.diverged
        manifest.ended_early = sim.ended_early
        # a full disk: overwritten in place; failing that too, the error below still reaches the caller
        write_manifest(out_dir, manifest, in_place_if_full=True)
        for tmp in out_dir.glob("*.tmp"):  # left by a writer that failed (e.g. the dashboard's page)
            tmp.unlink(missing_ok=True)
    if pending is not None:
        raise pending
    return manifest


def _write_parquet(df, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:  # a full disk (or Ctrl-C) mid-write: no half-written .tmp is left behind
        tmp.unlink(missing_ok=True)
        raise


def _describe_device(device) -> str:
    if device is None:
        return "none (timing-only run: numerics off)"
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
