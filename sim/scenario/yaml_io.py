"""Reading a scenario's YAML, with the rules that make it safe to read: a mapping may not name
a key twice, an integer may not be ambiguous (``010``, ``1:30``), only plain JSON-like values
(no dates, ``!!binary``, ``!!set``), at most ``MAX_YAML_VALUES`` values after alias expansion
and ``MAX_YAML_BYTES`` bytes, and never a device or a pipe that would be read for ever.

Every refusal is a one-line ``ScenarioError``. ``--set`` values and sweep grids are read by
the same rules (``load_yaml_text``, ``check_plain``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sim.scenario.errors import ScenarioError

MAX_YAML_VALUES = 1_000_000  # values in a loaded document, counting every alias expansion
MAX_YAML_BYTES = 16 * 2**20


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a mapping naming the same key twice (YAML says keys are
    unique; PyYAML would silently keep the last one, e.g. a second ``algorithm:``)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if first is not None:
            raise StrictYAMLError(
                None, None, f"duplicate key {key!r} (first at line {first}); each key may appear once in a mapping",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


class StrictYAMLError(yaml.constructor.ConstructorError):
    """YAML that PyYAML would read but we refuse: a duplicate key, an ambiguous integer."""


_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9_]*)")


def _construct_strict_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """Integers are strict: ``010`` (YAML 1.1 reads it as octal 8, YAML 1.2 as 10) and ``1:30``
    (sexagesimal, 90) are refused rather than read as a number the writer did not mean;
    decimal, ``0x``, ``0o`` and ``0b`` forms are read as written."""
    text = str(node.value)
    plain = text.replace("_", "")
    if _DECIMAL.fullmatch(text) or re.fullmatch(r"[-+]?0(x[0-9a-fA-F]+|o[0-7]+|b[01]+)", plain):
        return loader.construct_yaml_int(node) if not plain.lstrip("+-").startswith("0o") else int(plain, 8)
    raise StrictYAMLError(None, None, f"the integer {text!r} is ambiguous (YAML 1.1 reads a leading 0 as octal and "
                          "a:b as base 60); write it in plain decimal, or quote it for a string", node.start_mark)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_strict_int)


def _kind_of(value: Any) -> str:
    import datetime as dt

    if isinstance(value, (dt.date, dt.datetime)):
        return f"a date ({value.isoformat()})"
    if isinstance(value, (bytes, bytearray)):
        return "binary data (!!binary)"
    if isinstance(value, (set, frozenset)):
        return "a set (!!set)"
    return f"a {type(value).__name__}"


def check_plain(data: Any, path: tuple = (), source: str | None = None) -> None:
    """Refuse (ScenarioError, one line) YAML data that is not plain JSON-like values -- dates,
    ``!!binary``, ``!!set`` -- or that expands (through aliases) to more than MAX_YAML_VALUES
    values, before anything copies it. ``path``: where ``data`` sits in the scenario;
    ``source``: what to name when the whole document is too large (its file)."""
    count = 0
    stack: list[tuple[Any, tuple]] = [(data, tuple(path))]
    while stack:
        value, at = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ScenarioError(f"{source or '.'.join(map(str, path)) or '<top level>'}: the document expands to more "
                                f"than {MAX_YAML_VALUES:,} values (YAML aliases repeated inside each other?); "
                                "write the scenario out plainly")
        dotted = ".".join(str(p) for p in at) or "<top level>"
        if isinstance(value, dict):
            for k, v in value.items():
                if not (k is None or isinstance(k, (str, int, float, bool))):
                    raise ScenarioError(f"{dotted}: a key is {_kind_of(k)}; keys are strings")
                stack.append((v, at + (k,)))
        elif isinstance(value, list):
            stack.extend((v, at + (i,)) for i, v in enumerate(value))
        elif not (value is None or isinstance(value, (str, int, float, bool))):
            raise ScenarioError(f"{dotted}: {_kind_of(value)} is not a string, number, boolean, list or mapping; "
                                "quote it to make it a string")


def load_yaml_text(text: str) -> Any:
    """Parse YAML like ``yaml.safe_load`` but refusing duplicate keys (yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    try:
        if p.exists() and not p.is_dir() and not p.is_file():  # /dev/zero, a pipe: would be read for ever
            raise ScenarioError(f"{p}: not a regular file (a device, pipe or socket); a scenario is a YAML file")
        if p.is_file() and p.stat().st_size > MAX_YAML_BYTES:
            raise ScenarioError(f"{p}: {p.stat().st_size:,} bytes; a scenario file may have at most "
                                f"{MAX_YAML_BYTES:,}")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as err:
        raise ScenarioError(f"{p}: cannot read as a UTF-8 text file ({type(err).__name__})") from None
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise ScenarioError(f"{p}: not valid YAML{where}: {problem}") from None
    except (ValueError, RecursionError) as err:  # e.g. a timestamp like 2024-13-45, or nesting too deep
        first = str(err).splitlines()[0] if str(err) else ""
        raise ScenarioError(f"{p}: not valid YAML: {type(err).__name__}: {first}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{p}: a scenario must be a YAML mapping of sections (got {type(data).__name__})")
    check_plain(data, source=str(p))
    return data
