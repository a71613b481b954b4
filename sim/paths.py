"""Plug-in arguments that name files, resolved relative to the scenario file like every other path.

Every path a scenario holds (plug-in files, ``kind: text`` data, bandwidth and straggler CSVs)
is relative to the scenario file, not to the directory ``locosim`` runs in. A model's or data's
plug-in takes its own ``args``, which locosim cannot read the meaning of; so a plug-in says
which of them are paths by annotating the parameter ``pathlib.Path`` (or ``Path | None``)::

    class WordText:
        def __init__(self, seq_len, n_workers, seed, path: Path, tokenizer: Path | None = None): ...

When the scenario is loaded, such an argument given as a relative path is made absolute
against the scenario file's folder (the plug-in receives the absolute path as a string), so
the run, a sweep of it and the manifest's resolved scenario read the same file from any working
directory, and the file is fingerprinted (``sim.fingerprint``). Arguments not annotated
``Path`` are passed as written. The plug-in is imported for this only when its ``args`` hold a
relative path string.
"""

from __future__ import annotations

import inspect
import os
import re
import typing
from pathlib import Path, PurePath
from typing import Any, Callable

_PATH_WORD = re.compile(r"(?<![\w.])(?:pathlib\.)?Path\b")


def _is_path(annotation: Any) -> bool:
    """Whether an annotation is ``Path`` (or ``Path | None``, ``Optional[Path]``); a string
    annotation that could not be evaluated counts when it names ``Path``."""
    if isinstance(annotation, str):
        return bool(_PATH_WORD.search(annotation))
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return True
    return any(_is_path(a) for a in typing.get_args(annotation) if a is not type(None))


def path_params(obj: Callable) -> set[str]:
    """Names of the parameters of a plug-in's class (its constructor) or function annotated ``Path``."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return set()
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not evaluate here: read it as written
        hints = {}
    return {name for name, p in sig.parameters.items() if _is_path(hints.get(name, p.annotation))}


def _relative(value: Any) -> bool:
    return isinstance(value, str) and value != "" and not os.path.isabs(value)


def resolve_path_args(section: str, ref: str, args: dict, base_dir: Path) -> dict:
    """``args`` of the plug-in ``ref`` (resolved) with every ``Path``-annotated argument given as a
    relative path made absolute against ``base_dir`` (the scenario's folder). ``section`` (model
    or data) names the field in errors (``sim.algorithms.plugins.PluginError``, one line)."""
    if not any(_relative(v) for v in args.values()):
        return args
    from sim.loader import load_object

    names = path_params(load_object(ref, f"{section}.plugin"))
    return {k: (str((base_dir / v).resolve()) if k in names and _relative(v) else v) for k, v in args.items()}
