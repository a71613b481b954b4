"""Bad scenario input as one line: ``ScenarioError`` and the formatter that turns pydantic's
``ValidationError`` into ``field.path: what is allowed``.

The formatter walks the schema from its root model along the error's location: to list the
keys allowed where an unknown one was written (and to name the field a paper symbol such as
``H`` or ``tau`` stands for), to list a union's kinds, and to drop the discriminator tags
pydantic inserts into locations. It is separate from the sections so that every layer that
refuses input (the sections, the YAML reader, the variants) shares one kind of message; it
knows no section: the root model is passed in.
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ValidationError

from sim.algorithms import registered
from sim.algorithms.knobs import FieldError
from sim.scenario.base import DISCRIMINATORS


class ScenarioError(ValueError):
    """Bad scenario input; ``str(err)`` is one line naming the field and what is allowed."""


def _model_at(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    """Walk the schema from ``root`` along an error location to the model that owns the last key."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            # a discriminated-union tag (e.g. 'diloco') names the member model
            member = _union_member(model, part)
            if member is None:
                return None
            model = member
            continue
        model = _unwrap(fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(ann: Any) -> Any:
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin in (list, tuple):
        return _unwrap(typing.get_args(ann)[0])
    if origin is Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else tuple(_unwrap(a) for a in args)
    return ann


def _union_member(model: Any, tag: str) -> Any:
    members = model if isinstance(model, tuple) else ()
    for m in members:
        # a discriminator's value (not any Literal's: sparta's interval); a union may hold plain types (Literal, int)
        for key, f in getattr(m, "model_fields", {}).items():
            if key in DISCRIMINATORS and typing.get_origin(f.annotation) is Literal and tag in typing.get_args(f.annotation):
                return m
    return None


def format_error(err: ValidationError, root: type[BaseModel]) -> str:
    """The first error of ``err`` (validating ``root``) as one line: ``field.path: message``."""
    e = err.errors()[0]
    loc = tuple(e["loc"])
    ctx = e.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, FieldError):
        loc = loc + tuple(inner.loc)
        msg = inner.msg
    elif e["type"] == "extra_forbidden":
        owner = _model_at(loc[:-1], root)
        allowed = ", ".join(owner.model_fields) if owner is not None else "see `locosim schema`"
        named = field_for_symbol(owner, str(loc[-1])) if owner is not None else None
        hint = f"did you mean {named} (the paper's {loc[-1]})? " if named else ""
        msg = f"unknown key; {hint}allowed here: {allowed}"
    # the algorithm union is told apart by a function (sim.scenario.algorithm._method_tag), not a key
    elif e["type"] in ("union_tag_invalid", "union_tag_not_found") and ctx.get("discriminator") == "_method_tag()":
        methods = ", ".join(registered())
        msg = (f"unknown name {ctx.get('tag')!r}; allowed: {methods}, or a plug-in (plugin: FILE.py:Class)"
               if e["type"] == "union_tag_invalid" else f"missing name; allowed: {methods}")
    elif e["type"] == "union_tag_invalid":
        msg = f"unknown {ctx.get('discriminator', 'kind').strip(chr(39))} {ctx.get('tag')!r}; allowed: {ctx.get('expected_tags')}"
    elif e["type"] == "union_tag_not_found":
        msg = f"missing {ctx.get('discriminator', 'kind').strip(chr(39))}; allowed: " + _tags_at(loc, root)
    elif e["type"] == "missing":
        msg = "required field is missing"
    else:
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if "input" in e and e["type"] not in ("model_type", "dict_type") and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
    path = ".".join(str(p) for p in _drop_tags(loc, root)) or "<top level>"
    return f"{path}: {msg}"


def field_for_symbol(owner, key: str) -> str | None:
    """The field a paper symbol names (``H`` -> ``inner_steps``, ``tau`` -> ``overlap_steps``): the
    one whose description opens with the symbol ("H in DiLoCo: ...", "tau: ...", "eta, ..."); H is
    inner_steps in every method that has it, whatever its description says."""
    fields = getattr(owner, "model_fields", {})
    if key == "H" and "inner_steps" in fields:
        return "inner_steps"
    for name, f in fields.items():
        if re.match(rf"{re.escape(key)}(?: in |: |, )", f.description or ""):
            return name
    return None


def _tags_at(loc: tuple, root: type[BaseModel]) -> str:
    owner = _model_at(loc[:-1], root)
    if owner is None:
        return "see `locosim schema`"
    ann = owner.model_fields[loc[-1]].annotation if loc and loc[-1] in owner.model_fields else None
    members = _unwrap(ann) if ann is not None else ()
    tags = []
    for m in members if isinstance(members, tuple) else (members,):
        for f in m.model_fields.values():
            if typing.get_origin(f.annotation) is Literal:
                tags += list(typing.get_args(f.annotation))
                break
    return ", ".join(map(str, tags))


def _drop_tags(loc: tuple, root: type[BaseModel]) -> tuple:
    """Remove discriminated-union tags that pydantic inserts into locations."""
    out: list = []
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            continue
        fields = getattr(model, "model_fields", None)
        if fields is not None and part in fields:
            out.append(part)
            model = _unwrap(fields[part].annotation)
            continue
        member = _union_member(model, part) if isinstance(model, tuple) else None
        if member is not None:
            model = member
            continue
        out.append(part)
    return tuple(out)
