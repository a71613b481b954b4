"""Fingerprints of what a run reads besides locosim itself: its plug-ins' source and its data files.

A scenario names its plug-ins and files by path, and a path says nothing about what the file
held when the run read it: a method edited between two runs would look like the same
experiment. So every run's manifest records, under ``fingerprints``, the sha256 of

* each plug-in's source file (``algorithm.plugin``, ``model.plugin``, ``data.plugin``): the
  ``FILE.py`` named, or for ``package.module:Name`` the module's file (every ``.py`` file of
  the package when the module is a package). locosim's own modules (``sim``, ``kernels``:
  the methods it ships as plug-ins) are left out: the manifest's version and git revision
  identify them;
* each data file: ``data.path`` (``kind: text``), every plug-in argument (``model.args``,
  ``data.args``, at any depth) that names an existing file by its absolute path -- as the
  scenario's ``Path``-typed arguments are, once resolved relative to the scenario file
  (``sim.paths``) --, links' ``bandwidth_csv`` and stragglers' ``factor.csv``.

Computed from the resolved scenario (the manifest's ``scenario``, plain JSON) alone, with no
help from the loader: the same function tells a sweep whether a finished run's code or data
changed since (``stale_reason``), and ``compare`` keeps runs with different fingerprints out of
one replication group (``digest``). Not covered: modules a plug-in file imports itself, and
directories a plug-in reads (only files named by an argument are hashed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

PLUGIN_FIELDS = ("algorithm", "model", "data")
_OWN = tuple(str(Path(__file__).resolve().parents[1] / pkg) + os.sep for pkg in ("sim", "kernels"))
_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str | None:
    """The sha256 of a file's bytes (hex), or None when it cannot be read. Cached per file
    identity (inode, size, modification and change times), so a sweep hashes a large data file
    once, and an edit (which changes those) is hashed again."""
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in _CACHE:
            return _CACHE[key]
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    _CACHE[key] = h.hexdigest()
    return _CACHE[key]


def _module_files(module: str) -> list[Path]:
    """The source file(s) of an importable module (all ``.py`` files of a package), without
    importing the module itself (its parent packages may be imported to find it)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError, AttributeError):
        return []
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return []
    origin = Path(spec.origin)
    if spec.submodule_search_locations:  # a package: its whole tree
        return sorted(origin.parent.rglob("*.py"))
    return [origin]


def plugin_files(ref: str) -> list[Path]:
    """The source files a resolved plug-in reference names (locosim's own modules left out)."""
    path, _, _name = ref.partition(":")
    files = [Path(path)] if path.endswith(".py") else _module_files(path)
    return [f for f in files if not str(f.resolve()).startswith(_OWN)]


def _arg_files(value: Any, where: str) -> list[tuple[str, Path]]:
    """(field path, file) for every string in a plug-in's args that is an absolute path to a file."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _arg_files(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in _arg_files(v, f"{where}.{i}")]
    if isinstance(value, str) and os.path.isabs(value) and "\n" not in value:
        try:
            if Path(value).is_file():
                return [(where, Path(value))]
        except (OSError, ValueError):
            pass
    return []


def referenced_files(scenario: dict) -> dict[str, list[Path]]:
    """Field path -> the files a resolved scenario (plain JSON) makes a run read, in a fixed order."""
    out: dict[str, list[Path]] = {}
    for section in PLUGIN_FIELDS:
        spec = scenario.get(section) or {}
        ref = spec.get("plugin")
        if isinstance(ref, str) and ref:
            files = plugin_files(ref)
            if files:
                out[f"{section}.plugin"] = files
    data = scenario.get("data") or {}
    if data.get("kind") == "text" and isinstance(data.get("path"), str):
        out["data.path"] = [Path(data["path"])]
    for section in ("model", "data"):
        spec = scenario.get(section) or {}
        if spec.get("kind") == "plugin":
            for where, f in _arg_files(spec.get("args") or {}, f"{section}.args"):
                out.setdefault(where, []).append(f)
    for i, link in enumerate((scenario.get("topology") or {}).get("links") or []):
        if isinstance(link, dict) and isinstance(link.get("bandwidth_csv"), str):
            out[f"topology.links.{i}.bandwidth_csv"] = [Path(link["bandwidth_csv"])]
    for i, st in enumerate((scenario.get("faults") or {}).get("stragglers") or []):
        factor = st.get("factor") if isinstance(st, dict) else None
        if isinstance(factor, dict) and isinstance(factor.get("csv"), str):
            out[f"faults.stragglers.{i}.factor.csv"] = [Path(factor["csv"])]
    return out


def fingerprints(scenario: dict) -> dict[str, dict[str, str | None]]:
    """Field path -> {file: sha256 (None: unreadable)} for every file ``referenced_files`` names:
    what the manifest records as ``fingerprints``."""
    return {where: {str(f): file_sha256(f) for f in files} for where, files in referenced_files(scenario).items()}


def _contents(fps: dict | None) -> dict[str, list]:
    """The part of fingerprints that says what was read, not where from: field -> sorted hashes."""
    if not isinstance(fps, dict):
        return {}
    return {k: sorted((v or {}).values(), key=str) for k, v in fps.items() if isinstance(v, dict)}


def digest(fps: dict | None) -> str:
    """One short hash of a run's fingerprints (a missing or empty record: ''). Equal for runs
    that read files of equal content, wherever the files were."""
    c = _contents(fps)
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16] if c else ""


def differences(old: dict | None, new: dict | None) -> list[str]:
    """The fields whose files' content differs between two fingerprint records, sorted; each as
    ``field (file names)``."""
    a, b = _contents(old), _contents(new)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            names = sorted({Path(f).name for rec in (old or {}, new or {}) for f in (rec.get(k) or {})})
            out.append(f"{k} ({', '.join(names)})" if names else k)
    return out


def stale_reason(manifest: dict, scenario: dict) -> str | None:
    """Why a finished run's results no longer answer ``scenario`` (None: they do): a file it
    read changed since, or it recorded no fingerprints while the scenario reads files."""
    now = fingerprints(scenario)
    if "fingerprints" not in manifest:
        return "it recorded no fingerprints of the files it read" if now else None
    diff = differences(manifest.get("fingerprints"), now)
    return f"{'; '.join(diff)} changed since it ran" if diff else None
