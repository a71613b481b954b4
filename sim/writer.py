"""The run directory writer: one run -> manifest.json, events.parquet, metrics.parquet,
summary.json, dashboard.html (and model.pt with ``run.save_model``).

The third of the runner's pieces (``sim.build``, ``sim.adapter``, this). ``manifest.json`` is
written first (status running); on any ending -- completed, diverged, interrupted (Ctrl-C,
SIGTERM) or failed -- whatever was recorded is frozen into a ``RunResult``, turned into the
tables, the summary and the dashboard, and the manifest's status says which ending it was.
Every file is written to a ``.tmp`` and renamed, so a full disk leaves no half file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import subprocess
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from sim.metrics.records import finite_json

if TYPE_CHECKING:
    from sim.runner import Progress, Simulation

STATUS_RUNNING, STATUS_COMPLETED, STATUS_INTERRUPTED, STATUS_FAILED = "running", "completed", "interrupted", "failed"
STATUS_DIVERGED = "diverged"  # a loss or the parameters became NaN / inf (run.on_divergence)


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


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    # NaN / inf become null: bare NaN is not JSON (summarize records which values were replaced and why)
    text = json.dumps(finite_json(obj), indent=2, default=_json_default, allow_nan=False)
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # a full disk (or Ctrl-C) mid-write: no half-written .tmp is left behind
        tmp.unlink(missing_ok=True)
        raise


def inf_as_text(obj):
    """A copy of scenario data with every infinite float as the text "inf" / "-inf": JSON has no
    infinity, and a scenario may hold one (``bandwidth_gbps: .inf``) that must come back as
    itself, not as null (``restore_scenario`` reads it back)."""
    if isinstance(obj, dict):
        return {k: inf_as_text(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [inf_as_text(v) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    return obj


def restore_scenario(data):
    """A manifest's scenario as the run had it: the texts "inf" of ``inf_as_text`` become
    infinite floats again where the schema has a number (validated; data that does not
    validate, e.g. a plug-in not importable here, is returned as it is)."""
    if not isinstance(data, dict):
        return data
    text = json.dumps(data)
    if '"inf"' not in text and '"-inf"' not in text:  # nothing was infinite: as written
        return data
    try:
        from sim.scenario import Scenario

        return Scenario.model_validate(data).model_dump(mode="json")  # (infinite floats stay floats)
    except (Exception, SystemExit):  # noqa: BLE001 -- only a better reading; the raw data stays usable
        return data


def on_disk(manifest: dict) -> dict:
    """The manifest as written: its scenario with infinities kept as text (``inf_as_text``)."""
    return {**manifest, "scenario": inf_as_text(manifest.get("scenario"))}


def _write_json_in_place(path: Path, obj) -> None:
    """Last resort for the final manifest when ``write_json`` failed (a full disk has no room for
    a new .tmp file): overwrite the existing file compactly, which fits in the blocks its indented
    first version already holds. Not atomic; used only where the alternative is a manifest that
    says ``running`` for ever."""
    text = json.dumps(finite_json(obj), separators=(",", ":"), default=_json_default, allow_nan=False)
    with open(path, "r+b") as f:
        f.write(text.encode("utf-8"))
        f.truncate()


def _json_default(o):
    if isinstance(o, np.floating):
        return o.item() if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def fewer_collections(gen0: int = 100_000):
    """Raise the cyclic garbage collector's first threshold to ``gen0`` allocations (Python's
    default: 700) for the block, then restore it. A large run keeps hundreds of thousands of
    records alive and makes short-lived reference cycles (events and their callbacks), and at
    the default the collector traverses the records again and again: a quarter to a third of a
    1,024-worker layer-grain run (``bench/scale.py``). The collector still runs, less often;
    nothing the run computes depends on when."""
    old = gc.get_threshold()
    gc.set_threshold(max(gen0, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def run_to_dir(sim: Simulation, out_dir: Path, on_progress: Callable[[Progress], None] | None = None,
               source: str | None = None) -> dict:
    """Run a built simulation and write its directory; returns the final manifest.

    KeyboardInterrupt is caught: the directory is completed with what was recorded and
    marked interrupted, then the interrupt is re-raised. Other errors mark it failed and
    are re-raised after the files are written. An error while writing the files (a full
    disk) marks the run failed with the reason, leaves no ``.tmp`` file and is re-raised.
    The run and the writing go with ``fewer_collections``.
    """
    with fewer_collections():
        return _run_to_dir(sim, out_dir, on_progress, source)


def _run_to_dir(sim: Simulation, out_dir: Path, on_progress: Callable[[Progress], None] | None,
                source: str | None) -> dict:
    from sim.fingerprint import fingerprints
    from sim.metrics.tables import events_table, metrics_table, run_rates, summarize
    from sim.report.dashboard import write_dashboard

    sc = sim.sc
    out_dir = Path(os.path.abspath(out_dir))  # a plug-in that changes the working directory moves nothing
    try:  # an interrupt before the running manifest is written: the run never started (the CLI releases the claim)
        out_dir.mkdir(parents=True, exist_ok=True)
        scenario = sc.model_dump(mode="json")
        manifest = {
            "name": sc.name, "status": STATUS_RUNNING, "scenario": scenario, "source": source,
            "fingerprints": fingerprints(scenario),  # sha256 of the plug-in source and data files it reads
            "seed": sc.seed, "versions": _versions(), "git_revision": _git_revision(),
            "device": _describe_device(sim.device),
            "host": platform.node(), "pid": os.getpid(), "started_at": _now(), "ended_at": None, "wall_s": None,
            "error": None, "files": [],
        }
        write_json(out_dir / "manifest.json", on_disk(manifest))
    except KeyboardInterrupt as err:
        err.run_not_started = True
        raise
    t0 = time.monotonic()
    pending: BaseException | None = None
    try:
        sim.run(on_progress)
        manifest["status"] = STATUS_DIVERGED if sim.diverged else STATUS_COMPLETED
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (sim.rundir.Terminated: "terminated by SIGTERM")
        manifest["status"] = STATUS_INTERRUPTED
        manifest["error"] = str(err) or None
        pending = err
    except SystemExit as err:  # plug-in code called sys.exit(): a failed run, not locosim's exit
        manifest["status"] = STATUS_FAILED
        manifest["error"] = f"PluginExit: plug-in code called sys.exit({err.code!r}) during the run"
        manifest["traceback"] = traceback.format_exc()
        pending = PluginExit(manifest["error"].split(": ", 1)[1])
    except Exception as err:  # recorded in the manifest, then re-raised for the CLI
        manifest["status"] = STATUS_FAILED
        manifest["error"] = f"{type(err).__name__}: {err}"
        manifest["traceback"] = traceback.format_exc()  # e.g. a plug-in method's own code
        pending = err
    manifest["wall_s"] = time.monotonic() - t0
    ending = manifest["status"]
    written = manifest["files"]  # what exists, in the order written: the tables first, then what derives from them
    summary = None
    try:
        if manifest["status"] != STATUS_COMPLETED:
            sim.close_records()  # keep what was recorded; no more numerics after an interrupt
        result = sim.result()
        manifest["diagnostic_labels"] = {k: list(v) for k, v in result.diagnostic_labels.items()}  # the method's words
        events = events_table(result.records)
        _write_parquet(events, out_dir / "events.parquet")
        written.append("events.parquet")
        metrics = metrics_table(result)
        _write_parquet(metrics, out_dir / "metrics.parquet")
        written.append("metrics.parquet")
        network = run_rates(result, events)  # as logged by the run: the summary's peaks and the page's curves
        summary = summarize(result, events, metrics, manifest, network)
        write_json(out_dir / "summary.json", summary)
        written.append("summary.json")
        write_dashboard(out_dir / "dashboard.html", events, metrics, summary, manifest, network)
        written.append("dashboard.html")
        if sc.run.save_model and sim.numerics_on and manifest["status"] in (STATUS_COMPLETED, STATUS_DIVERGED):
            sim.save_model(out_dir / "model.pt")
            written.append("model.pt")
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM while writing: keep what is written, and say so
        manifest["status"] = STATUS_INTERRUPTED
        if pending is None:
            what = str(err) or "interrupted"
            manifest["error"] = (f"{what} while writing the run directory; the simulation itself had ended "
                                 f"{ending}; written: {', '.join(written) or 'nothing'}")
            if summary is not None and "summary.json" in written:  # the summary says what the manifest says
                summary["status"] = STATUS_INTERRUPTED
                try:
                    write_json(out_dir / "summary.json", summary)
                except OSError:
                    pass
        pending = pending or err
    except Exception as err:  # e.g. OSError: the disk is full; the run's own ending stays in the error
        reason = f"writing the run directory failed: {type(err).__name__}: {err}"
        manifest["error"] = f"{manifest['error']}; then {reason}" if manifest["error"] else reason
        manifest["status"] = STATUS_FAILED
        pending = pending or err
    finally:
        manifest["ended_at"] = _now()
        manifest["diverged"] = sim.diverged
        manifest["ended_early"] = sim.ended_early
        try:
            write_json(out_dir / "manifest.json", on_disk(manifest))
        except OSError:
            try:
                _write_json_in_place(out_dir / "manifest.json", on_disk(manifest))
            except OSError:
                pass  # nothing left to write it with; the error below still reaches the caller
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
