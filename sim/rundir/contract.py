"""What a run directory holds: its file names, its statuses, a typed manifest (and the typed
summary, ``sim.metrics.summary.Summary``, written next to it), and how they are written (strict
JSON, atomically), read and settled.

The writer (``sim.writer.run_to_dir``), the sweep (``sim.sweep``) and the reader
(``sim.report.runs.load_run``) all go through here, so a file name, a status or a manifest field
is spelled once. Kept apart from ``sim.rundir.claims`` (who may write a directory at all).

Strict JSON: a NaN or infinite number becomes null (``finite_json``; the summary lists what it
replaced and why), except in a manifest's scenario, where an infinity is kept as the text
"inf" / "-inf" (``inf_as_text``) and read back as itself (``restore_scenario``). Every file is
written to a ``.tmp`` and renamed; the one exception is the last-resort in-place manifest write
of a full disk (``write_json_in_place``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from sim.metrics.records import finite_json
from sim.metrics.summary import Summary

# A run directory's files (RUN_FILES: those every run writes), and a sweep directory's own files.
MANIFEST, SUMMARY, EVENTS, METRICS, DASHBOARD, MODEL = (
    "manifest.json", "summary.json", "events.parquet", "metrics.parquet", "dashboard.html", "model.pt")
RUN_FILES = (MANIFEST, SUMMARY, EVENTS, METRICS, DASHBOARD)
SWEEP_JSON, INDEX, LOCK = "sweep.json", "index.parquet", "sweep.lock"
SWEEP_FILES = (SWEEP_JSON, INDEX, LOCK)

STATUS_STARTING = "starting"  # a claimed run directory whose simulation is being built (sim.rundir.claims)
STATUS_RUNNING, STATUS_COMPLETED, STATUS_INTERRUPTED, STATUS_FAILED = "running", "completed", "interrupted", "failed"
STATUS_DIVERGED = "diverged"  # a loss or the parameters became NaN / inf (run.on_divergence)
FINISHED = (STATUS_COMPLETED, STATUS_DIVERGED)  # a diverged run is a result: a sweep does not run it again

# What a reader may rely on in each file (key -> type): a file without them was not written by a run.
MANIFEST_REQUIRED = {"status": str, "scenario": dict}
SUMMARY_REQUIRED = {"name": str, "workers": int, "utilization": (int, float), "state_fractions": dict,
                    "sim_duration_s": (int, float), "bytes_total": (int, float), "bytes_per_link": list,
                    "per_node": dict}


class RunDirError(ValueError):
    """A directory that cannot be claimed, or a path that is not a readable run directory;
    ``str(err)`` is one line."""


# ---------------------------------------------------------------------------------------- strict JSON
def _json_default(o):
    if isinstance(o, np.floating):
        return o.item() if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _plain(obj):
    """A ``Manifest`` or ``Summary`` as the JSON object it is written as; anything else as it is."""
    return obj.to_json() if isinstance(obj, (Manifest, Summary)) else obj


def write_json(path: Path, obj) -> None:
    """``obj`` (a dict, a ``Manifest`` or a ``Summary``) as indented strict JSON, through a
    ``.tmp`` file and a rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    # NaN / inf become null: bare NaN is not JSON (summarize records which values were replaced and why)
    text = json.dumps(finite_json(_plain(obj)), indent=2, default=_json_default, allow_nan=False)
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # a full disk (or Ctrl-C) mid-write: no half-written .tmp is left behind
        tmp.unlink(missing_ok=True)
        raise


def write_json_in_place(path: Path, obj) -> None:
    """Last resort for the final manifest when ``write_json`` failed (a full disk has no room for
    a new .tmp file): overwrite the existing file compactly, which fits in the blocks its indented
    first version already holds. Not atomic; used only where the alternative is a manifest that
    says ``running`` for ever."""
    text = json.dumps(finite_json(_plain(obj)), separators=(",", ":"), default=_json_default, allow_nan=False)
    with open(path, "r+b") as f:
        f.write(text.encode("utf-8"))
        f.truncate()


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


# ---------------------------------------------------------------------------------------- typed files
@dataclass(eq=False)
class Manifest:
    """``manifest.json``: the scenario as resolved, its provenance and how the run ended.

    Written first with status ``running``, and again at the end; ``traceback`` appears only for
    a run that failed with one, ``diagnostic_labels`` once the run's result was taken, and
    ``diverged`` / ``ended_early`` once the run has ended (``ended_at`` set). ``summary`` is the
    ``Summary`` written next to it (not part of manifest.json), so a caller of ``run_to_dir``
    never reads back what was just written. Read by key too (``m["status"]``, ``m.get(...)``),
    as the JSON object it is written as."""
    name: str
    status: str
    scenario: dict
    source: str | None
    fingerprints: dict
    """sha256 of the plug-in source and data files the scenario reads (``sim.fingerprint``)."""
    seed: int
    versions: dict
    git_revision: str | None
    device: str
    host: str
    pid: int
    started_at: str
    ended_at: str | None = None
    wall_s: float | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)
    """What exists besides the manifest, in the order written."""
    traceback: str | None = None
    diagnostic_labels: dict | None = None
    diverged: dict | None = None
    ended_early: str | None = None
    summary: Summary | None = field(default=None, repr=False)

    _OPTIONAL = ("traceback", "diagnostic_labels")  # written only when set

    def __getitem__(self, key: str):
        return self.to_json()[key]

    def get(self, key: str, default=None):
        return self.to_json().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_json()

    def keys(self):
        return self.to_json().keys()

    def to_json(self) -> dict:
        """The manifest as a JSON object (its scenario as the run had it, infinities as floats)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "summary" or (f.name in self._OPTIONAL and v is None):
                continue
            if f.name in ("diverged", "ended_early") and self.ended_at is None:
                continue
            out[f.name] = v
        return out

    def on_disk(self) -> dict:
        """``to_json`` with the scenario's infinities as text (``inf_as_text``): what is written."""
        out = self.to_json()
        out["scenario"] = inf_as_text(out["scenario"])
        return out


def write_manifest(run_dir: Path, manifest: Manifest, in_place_if_full: bool = False) -> None:
    """``run_dir/manifest.json`` (atomically). ``in_place_if_full``: when the atomic write fails
    (a full disk), overwrite the file in place (``write_json_in_place``) rather than leave it
    saying ``running``; an error of that too is swallowed (the caller has a better one to raise)."""
    path = Path(run_dir) / MANIFEST
    try:
        write_json(path, manifest.on_disk())
    except OSError:
        if not in_place_if_full:
            raise
        try:
            write_json_in_place(path, manifest.on_disk())
        except OSError:
            pass  # nothing left to write it with


# ---------------------------------------------------------------------------------------- reading, settling
def _read_object(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_manifest(run_dir: Path) -> dict | None:
    """``run_dir/manifest.json`` as written (a JSON object), or None when missing or unreadable."""
    return _read_object(Path(run_dir) / MANIFEST)


def read_summary(run_dir: Path) -> dict | None:
    """``run_dir/summary.json`` as written (a JSON object), or None when missing or unreadable."""
    return _read_object(Path(run_dir) / SUMMARY)


def status_of(run_dir: Path) -> str | None:
    """The status a run directory's manifest says, or None (no readable manifest)."""
    try:
        return (read_manifest(run_dir) or {})["status"]
    except KeyError:
        return None


def settle(run_dir: Path, status: str, error: str, create: bool = False) -> None:
    """Give a run that ended without writing its own ending (its process died, or never got to
    write a manifest) a final ``status`` and ``error``: only when its manifest still says
    ``running`` or there is none; a manifest with any other status is left as it is. Keeps the
    rest of the manifest. With ``create`` a missing directory is made; without, nothing is."""
    run_dir = Path(run_dir)
    st = status_of(run_dir)
    if st not in (None, STATUS_RUNNING):
        return
    if not run_dir.exists():
        if not create:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
    manifest = (read_manifest(run_dir) or {}) if st else {}
    manifest.update(status=status, error=error)
    write_json(run_dir / MANIFEST, manifest)
