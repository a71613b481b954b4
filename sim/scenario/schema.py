"""The scenario's JSON Schema (``locosim schema``, for editors): the root model's schema, with
every registered plug-in method's knobs added to the ``algorithm`` choices, and the two
sections read outside the models (``variants:``, ``sweep:``); and one plug-in method's knobs
alone (``locosim schema --plugin``).
"""

from __future__ import annotations

from pydantic import BaseModel

from sim import loader
from sim.algorithms import method_class, registered
from sim.scenario.algorithm import METHOD_SECTIONS
from sim.scenario.root import Scenario
from sim.scenario.variants import VARIANT_NAME


def json_schema() -> dict:
    """The scenario's JSON Schema (for editors): built-in methods, every method shipped or
    installed as a plug-in (``sim.algorithms.registered``: its class's ``Spec``, with its name as a
    constant) and the generic plug-in section; variants and sweep."""
    schema = Scenario.model_json_schema()
    _add_plugin_methods(schema)
    schema.setdefault("properties", {})["variants"] = {
        "type": "object", "additionalProperties": {"type": "object"},
        "propertyNames": {"pattern": VARIANT_NAME.pattern},
        "description": "Optional: variant name -> sections merged into this scenario; `locosim run` runs each "
                       "into its own subdirectory (e.g. one variant per method)."}
    schema["properties"]["sweep"] = {
        "type": "object", "description": "Optional, for `locosim sweep`: grid (key.path -> list of values) and seeds.",
        "properties": {"grid": {"type": "object", "additionalProperties": {"type": "array"}},
                       "seeds": {"type": "array", "items": {"type": "integer", "minimum": 0}}},
        "additionalProperties": False}
    return schema


def method_schema(spec: type[BaseModel], name: str | None = None) -> dict:
    """A plug-in method's knobs (its ``Spec``) as JSON Schema; ``name``, when the method is
    registered under one (``locosim.algorithms`` entry point or packaged), is the constant the
    section's ``name`` must be."""
    sub = spec.model_json_schema(ref_template="#/$defs/{model}")
    if name is not None:
        sub["properties"]["name"] = {"const": name, "default": name, "title": "Name", "type": "string"}
        sub["required"] = ["name"]
    return sub


def _add_plugin_methods(schema: dict) -> None:
    """Put each registered plug-in method's knobs into the algorithm section's choices. They
    become ``anyOf``: the generic plug-in section (any name) overlaps the named ones. A
    registered method that cannot be loaded is left out (``validate`` names its error)."""
    alg = schema["properties"]["algorithm"]
    choices = alg.pop("oneOf")
    defs = schema.setdefault("$defs", {})
    named = []
    for name, ref in registered().items():
        if name in METHOD_SECTIONS:
            continue
        try:
            spec = method_class(ref).Spec
        except loader.PluginError:
            continue
        sub = method_schema(spec, name)
        defs.update(sub.pop("$defs", {}))
        key = f"plugin_{name}"
        defs[key] = sub
        named.append({"$ref": f"#/$defs/{key}"})
    alg["anyOf"] = choices[:-1] + named + choices[-1:]
