"""The import graph of ``sim`` (every import statement, module-level or inside a function, read
with ast): the scenario schema, the method registry and the plug-in loader do not import each
other in a loop, and the methods never import the schema."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / "sim").rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The sim modules a module imports anywhere in its body, with the packages that importing
    them runs (``from sim.a.b import c`` runs sim.a, sim.a.b and sim.a.b.c when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in known and prefix != name:
                    out.add(prefix)
    return out


SCHEMA = "sim.scenario"


def _node(name: str) -> str:
    """The scenario schema is a package whose modules import each other and whose ``__init__``
    re-exports them: the graph reads it as one node, ``sim.scenario``."""
    return SCHEMA if name == SCHEMA or name.startswith(SCHEMA + ".") else name


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        graph.setdefault(_node(name), set()).update(_node(m) for m in _imports(path, name, set(mods)))
    for name, deps in graph.items():
        deps.discard(name)
    return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_is_read():
    """The graph is what the code says: the scenario imports the loader and the method registry."""
    graph = import_graph()
    assert {"sim.loader", "sim.algorithms", "sim.algorithms.knobs"} <= graph["sim.scenario"]
    assert "sim.loader" in graph["sim.algorithms.plugins"]


def test_no_loop_through_the_scenario_schema():
    """No module the scenario imports (directly or not) imports the scenario back: the loader,
    the registry and every method module stay below the schema."""
    graph = import_graph()
    below = _reaches(graph, "sim.scenario")
    loops = sorted(m for m in below if "sim.scenario" in _reaches(graph, m))
    assert not loops, f"these modules import sim.scenario and are imported by it: {loops}"
    for name in graph:
        if name == "sim.loader" or name.startswith("sim.algorithms"):
            assert "sim.scenario" not in _reaches(graph, name), name


def test_a_loop_is_seen():
    """The check fails on a loop: a graph where the loader imports the scenario back has one."""
    graph = import_graph()
    graph["sim.loader"] = graph["sim.loader"] | {"sim.scenario"}
    below = _reaches(graph, "sim.scenario")
    assert "sim.loader" in below and "sim.scenario" in _reaches(graph, "sim.loader")
