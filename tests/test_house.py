"""The house's rules, read off the import graph (every ``import`` statement of sim/ and
kernels/, parsed with ``ast``: module level, inside functions and under TYPE_CHECKING alike,
since each is an arrow a reader has to follow) and off the files' lengths.

Rules (../shared/DESIGN.md): no import loop between modules; metrics read records, never the
engine; the engine imports the schedule contract (``sim.schedule``), never the algorithms
package; training and algorithms never reach simpy; only sim/report imports plotly; kernels
import nothing of sim/; no module is over ~600 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 620  # "no module over ~600 lines"


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("sim", "kernels"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = p.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours (``known``) and third-party top-level packages ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def ours(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                found.add(ours(a.name) or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            hits = {ours(f"{target}.{a.name}") for a in node.names} - {None, name}
            found |= hits or {ours(target) or target.split(".")[0]}
    found.discard(name)
    return found


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_node(name, ours=True)
        for target in _imports(name, path, set(mods)):
            g.add_edge(name, target)
    return g


def _arrows(g: nx.DiGraph, src: str, dst: str) -> list[tuple[str, str]]:
    def under(m: str, prefix: str) -> bool:
        return m == prefix or m.startswith(prefix + ".")
    return sorted((a, b) for a, b in g.edges if under(a, src) and under(b, dst))


def test_the_parser_sees_the_arrows_it_must(graph):
    """The graph holds arrows known to exist (so the rules below cannot pass on an empty graph):
    the runner imports the assembly, the engine's node imports simpy and the schedule contract."""
    assert graph.has_edge("sim.runner", "sim.build")
    assert graph.has_edge("sim.engine.node", "simpy")
    assert graph.has_edge("sim.engine.node", "sim.schedule")
    assert graph.number_of_nodes() > 80


def test_no_import_loops(graph):
    """No two modules import each other, directly or through others."""
    ours = graph.subgraph(n for n, d in graph.nodes(data=True) if d.get("ours"))
    loops = [sorted(c) for c in nx.strongly_connected_components(ours) if len(c) > 1]
    assert loops == []


def test_metrics_read_records_not_the_engine(graph):
    """Nothing under sim/metrics imports sim/engine (records are the interface)."""
    assert _arrows(graph, "sim.metrics", "sim.engine") == []


def test_the_engine_imports_the_schedule_contract_not_the_algorithms(graph):
    """Nothing under sim/engine imports the algorithms package; its vocabulary is sim.schedule."""
    assert _arrows(graph, "sim.engine", "sim.algorithms") == []


def test_training_and_algorithms_never_reach_simpy(graph):
    """No module that sim/training, sim/algorithms or sim.schedule imports, directly or through
    others, imports simpy."""
    starts = [n for n in graph if n.startswith(("sim.training", "sim.algorithms")) or n == "sim.schedule"]
    for start in starts:
        reached = nx.descendants(graph, start) | {start}
        assert "simpy" not in {t for m in reached for t in graph.successors(m)}, start


def test_only_the_report_imports_plotly(graph):
    """plotly is imported by modules under sim/report only."""
    importers = sorted(a for a, b in graph.edges if b == "plotly")
    assert importers and all(m.startswith("sim.report") for m in importers), importers


def test_kernels_import_nothing_of_sim(graph):
    """kernels/ is below sim/: it imports nothing from it."""
    assert _arrows(graph, "kernels", "sim") == []


def test_no_module_is_over_600_lines():
    """Every module of sim/ and kernels/ is at most ~600 lines."""
    long = {name: n for name, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
