"""Every method's knobs as the scenario schema shows them, and their defaults, are the ones
recorded in tests/fixtures/schema/methods.json (written from the schema before the knobs
moved next to their methods): moving a method's section never changes what a user may write."""

import json
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "schema" / "methods.json"
BASE = {"topology": {"regions": [{"name": "a", "nodes": 4}]}, "run": {"max_rounds": 10}}
METHOD_NAMES = ("ddp", "diloco", "streaming_diloco", "noloco", "diloco_delayed", "eager_diloco", "fedavg", "sparta",
                "sparta_diloco", "demo")


def _refs(node, out: set) -> set:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out.add(ref[len("#/$defs/"):])
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)
    return out


def method_sections() -> dict:
    """The algorithm section of `locosim schema` with every definition it reaches, each
    method's own schema (`locosim schema --plugin NAME`) and each method's defaults."""
    from sim.scenario import json_schema, method_schema, parse_scenario

    schema = json_schema()
    alg = schema["properties"]["algorithm"]
    defs, todo = {}, _refs(alg, set())
    while todo:
        name = todo.pop()
        if name not in defs:
            defs[name] = schema["$defs"][name]
            todo |= _refs(defs[name], set()) - set(defs)
    methods, defaults = {}, {}
    for name in METHOD_NAMES:
        sc = parse_scenario({**BASE, "algorithm": {"name": name}})
        defaults[name] = sc.algorithm.model_dump(mode="json")
        if getattr(sc.algorithm, "plugin", None):
            methods[name] = method_schema(type(sc.algorithm), name)
    return {"algorithm": alg, "defs": defs, "methods": methods, "defaults": defaults}


def test_method_schemas_and_defaults_unchanged():
    """The generated JSON schema of every method (built-in and packaged) and its defaults equal the recorded ones."""
    want = json.loads(FIXTURE.read_text())
    got = json.loads(json.dumps(method_sections()))
    assert sorted(got["defaults"]) == sorted(want["defaults"])
    for name in want["defaults"]:
        assert got["defaults"][name] == want["defaults"][name], name
    for name in want["methods"]:
        assert got["methods"][name] == want["methods"][name], name
    assert got["algorithm"] == want["algorithm"]
    assert got["defs"] == want["defs"]
