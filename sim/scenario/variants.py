"""Changing scenario data before it is validated: ``--set key.path=value`` overrides and a
file's ``variants:`` (name -> sections deep-merged into the base), with the rule for a
variant's name and the rule that says whom to blame for a bad value (the variant's block, the
base section it inherits, or a ``--set`` / ``--grid``).

Works on plain YAML data (dicts and lists), never on the models: ``sim.scenario.load`` reads
the file, applies these, then validates.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from sim.scenario.base import DISCRIMINATORS
from sim.scenario.errors import ScenarioError
from sim.scenario.yaml_io import StrictYAMLError, check_plain, load_yaml_text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested mapping copy."""
    data = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for item in overrides:
        if "=" not in item:
            raise ScenarioError(f"--set {item}: expected key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ScenarioError(f"--set {item}: empty key in path")
        try:
            value = load_yaml_text(raw)
        except StrictYAMLError as err:  # a duplicate key or an ambiguous integer: not a string to fall back to
            raise ScenarioError(f"--set {item}: {err.problem}") from None
        except (yaml.YAMLError, ValueError, RecursionError):
            value = raw
        check_plain(value, tuple(parts), source=f"--set {key}")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ScenarioError(f"--set {key}: '{part}' is not an index of a list of {len(node)} items")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ScenarioError(f"--set {key}: '{'.'.join(parts[:i])}' is a value, not a section")
    return data


# A variant name becomes a directory (OUT/<name>/) and part of sweep run ids: one path component,
# never "." or ".." (which would write over or outside OUT), never hidden or flag-like.
VARIANT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def merge_variant(base: Any, patch: Any) -> Any:
    """Deep-merge a variant's sections into the base scenario data (a copy).

    Mappings merge key by key; any other value replaces. A section whose discriminator
    (``name`` of the algorithm, ``kind`` of model/data, ``mode`` of step_time) differs
    from the base's is replaced whole, so a noloco variant does not inherit DiLoCo knobs.
    """
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return json.loads(json.dumps(patch))
    if any(t in patch and t in base and patch[t] != base[t] for t in DISCRIMINATORS):
        return json.loads(json.dumps(patch))
    out = json.loads(json.dumps(base))
    for k, v in patch.items():
        out[k] = merge_variant(out[k], v) if k in out else json.loads(json.dumps(v))
    return out


def split_variant_overrides(variants: Any, overrides: list[str]) -> tuple[Any, list[str]]:
    """Split off ``variants.NAME.key.path=value`` overrides and apply them to NAME's block of
    ``variants:`` (as if the file said so, before the merge); return the variants and the
    other overrides (which apply to every variant after the merge)."""
    rest, mine = [], []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        (mine if key == "variants" or key.startswith("variants.") else rest).append(item)
    for item in mine:
        key = item.split("=", 1)[0].strip()
        name = key.split(".")[1] if key.count(".") >= 1 else ""
        if not isinstance(variants, dict):
            raise ScenarioError(f"--set {key}: this file has no variants: section "
                                "(a mapping of variant name -> sections)")
        if not name:
            raise ScenarioError(f"--set {key}: name a variant, e.g. variants.NAME.algorithm.inner_steps=50; "
                                f"variants: {', '.join(map(str, variants))}")
        if name not in variants:
            raise ScenarioError(f"--set {key}: no variant '{name}'; variants: {', '.join(map(str, variants))}")
        variants = apply_overrides({"variants": variants}, [item])["variants"]
    return variants, rest


def _has_path(data: Any, keys: list[str]) -> bool:
    """Whether the dotted path ``keys`` names a value written in ``data`` (dicts, list indices)."""
    for k in keys:
        if isinstance(data, dict) and k in data:
            data = data[k]
        elif isinstance(data, list) and k.isdigit() and int(k) < len(data):
            data = data[int(k)]
        else:
            return False
    return True


def variant_error(msg: str, name: str, patch: dict, base: dict, overrides: list[str] = (),
                   grid: list[str] = ()) -> str:
    """Blame the section that holds the bad value: the variant's block when the field's path is
    written there (``variants.NAME: path: ...``), else the base section every variant inherits
    (``path: ... (base section, inherited by variant NAME)``), not a variant that never wrote it."""
    path = msg.split(": ", 1)[0]
    keys = path.split(".") if path and path != "<top level>" else []
    if keys and not _has_path(patch, keys):
        for flag, items in (("--grid", grid), ("--set", overrides)):  # a sweep's grid point is not a --set
            keys = [o.split("=", 1)[0].strip() for o in items]
            if any(path == k or path.startswith(k + ".") or k.startswith(path + ".") for k in keys):
                return f"{msg} (from {flag}, applied to variant {name})"
        if _has_path(base, keys):
            return f"{msg} (in the base section, inherited by variant {name})"
    return f"variants.{name}: {msg}"

