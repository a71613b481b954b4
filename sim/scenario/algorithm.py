"""The ``algorithm:`` section: a union generated from the method registry (``sim.algorithms``),
never a list kept here. A shipped method whose knobs are a plain section is one of the union's
choices; any other method (shipped on the plug-in path, installed by a package, or named by
``plugin: FILE.py:Class``) is validated by its class's own ``Spec`` (``plugin_method``), with the
same one-line errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Discriminator, SerializeAsAny, Tag, ValidationError

from sim import loader
from sim.algorithms import method_class, registered, sections
from sim.algorithms.knobs import FieldError, MethodSpec
from sim.scenario.errors import field_for_symbol

METHOD_SECTIONS: dict[str, type[BaseModel]] = sections()
"""Methods whose knobs are choices of this schema's ``algorithm`` union (from the registry,
``sim.algorithms``); the others carry theirs as their class's ``Spec`` (a ``MethodSpec``)."""


def _method_tag(value: Any) -> str | None:
    if isinstance(value, MethodSpec):
        return "plugin"
    if isinstance(value, dict):
        return value.get("name")
    return getattr(value, "name", None)


AlgorithmSpec = Annotated[Union[tuple(Annotated[m, Tag(n)] for n, m in METHOD_SECTIONS.items())
                                + (Annotated[SerializeAsAny[MethodSpec], Tag("plugin")],)],
                          Discriminator(_method_tag)]


def plugin_method(alg: dict, base_dir: Path | None) -> MethodSpec:
    """A plug-in method's validated knobs (its class's ``Spec``), or a located one-line error."""
    ref = alg.get("plugin")
    if ref is None:
        ref = registered().get(alg.get("name"))
    if not isinstance(ref, str) or not ref:
        raise FieldError(("plugin",), "must be FILE.py[:Class] or package.module:Class")
    ref = loader.resolve_ref(ref, base_dir)
    try:
        cls = method_class(ref)
    except loader.PluginError as err:
        raise FieldError(("plugin",), str(err)) from None
    try:
        return cls.Spec.model_validate({**alg, "plugin": ref})
    except ValidationError as err:
        e = err.errors()[0]
        loc = tuple(e["loc"])
        inner = (e.get("ctx") or {}).get("error")
        if isinstance(inner, FieldError):  # a validator that names its field (error_feedback, ...)
            loc, msg = loc + tuple(inner.loc), inner.msg
        elif e["type"] == "extra_forbidden":
            msg = f"unknown key for {cls.__name__}; allowed here: {', '.join(cls.Spec.model_fields)}"
            named = field_for_symbol(cls.Spec, str(loc[-1]))
            if named:
                msg += f"; did you mean {named} (the paper's {loc[-1]})?"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
        raise FieldError(loc, msg) from None

