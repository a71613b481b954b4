"""Run directories as the report reads them (the one reader), and what makes two runs comparable.

A dashboard is drawn from a run's files only (``manifest.json``, ``summary.json``,
``events.parquet``, ``metrics.parquet``: names, statuses and what each file must hold come from
``sim.rundir``, which writes them), so a page can be redrawn later and many runs can be put
side by side. No plotly here: this module decides *which* runs go together
(replications: the same scenario except its seed) and *whether* they may be compared
(the same data and model); ``compare`` draws them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sim.rundir import (EVENTS, MANIFEST, MANIFEST_REQUIRED, METRICS, SUMMARY, SUMMARY_REQUIRED, RunDirError,
                        restore_scenario)

# Scenario sections that must be equal for two runs' losses to mean the same thing.
COMPARABLE_SECTIONS = ("data", "model")


class NotDrawable(RunDirError):
    """A run directory whose run ended before it wrote its tables (failed while building,
    or interrupted): its manifest is readable, there is nothing to draw."""

    def __init__(self, msg: str, manifest: dict):
        super().__init__(msg)
        self.manifest = manifest


@dataclass
class RunData:
    """One run directory's files, read."""
    path: Path
    manifest: dict
    summary: dict
    events: pd.DataFrame
    metrics: pd.DataFrame
    label: str = ""
    network: dict | None = None
    """The run's replayed rates (``sim.engine.replay.network_rates``) when its writer had them at hand;
    None: replayed from the files when needed (``run_graph``)."""

    @property
    def scenario(self) -> dict:
        return self.manifest["scenario"]

    @property
    def algorithm(self) -> dict:
        return self.scenario["algorithm"]


def load_run(path: str | Path) -> RunData:
    """Read a run directory; RunDirError (one line) when a file is missing or unreadable."""
    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise RunDirError(f"{p}: not a run directory (no {MANIFEST})")
    try:
        manifest = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(f"{p / MANIFEST}: unreadable ({type(err).__name__})") from None
    _check_shape(p / MANIFEST, manifest, {"status": str})
    manifest["scenario"] = restore_scenario(manifest.get("scenario"))  # "inf" back to infinity
    missing = [f for f in (SUMMARY, EVENTS, METRICS) if not (p / f).is_file()]
    if missing:
        raise NotDrawable(f"{p}: run has no {', '.join(missing)} (status {manifest['status']}); nothing to draw",
                          manifest)
    _check_shape(p / MANIFEST, manifest, MANIFEST_REQUIRED)
    try:
        summary = json.loads((p / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(f"{p / SUMMARY}: unreadable ({type(err).__name__})") from None
    _check_shape(p / SUMMARY, summary, SUMMARY_REQUIRED)
    try:
        events = pd.read_parquet(p / EVENTS)
        metrics = pd.read_parquet(p / METRICS)
    except (OSError, ValueError) as err:
        raise RunDirError(f"{p}: unreadable run files ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    return RunData(p, manifest, summary, events, metrics, label=p.name)


def _check_shape(path: Path, obj, keys: dict) -> None:
    """RunDirError (one line naming the run's file) when ``obj`` is not a JSON object with
    ``keys`` of the right types."""
    if not isinstance(obj, dict):
        raise RunDirError(f"{path}: not a run's {path.name} (a JSON {type(obj).__name__}, not an object)")
    for k, t in keys.items():
        if k not in obj:
            raise RunDirError(f"{path}: not a run's {path.name} (no '{k}')")
        if not isinstance(obj[k], t) or isinstance(obj[k], bool):
            raise RunDirError(f"{path}: not a run's {path.name} ('{k}' is a {type(obj[k]).__name__})")
    if "scenario" in keys:
        for section in ("algorithm", "topology", "model", "data"):
            if not isinstance(obj["scenario"].get(section), dict):
                raise RunDirError(f"{path}: not a run's {path.name} (no scenario.{section})")


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: each is a run directory (it has manifest.json) or a
    directory holding run directories at any depth (a sweep or a variants run), taken in
    sorted order. Duplicates are dropped; RunDirError when a path holds no run."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise RunDirError(f"{p}: no such directory")
        if (p / MANIFEST).is_file():
            found = [p]
        elif p.is_dir():
            found = sorted(m.parent for m in p.rglob(MANIFEST))
            if not found:
                raise RunDirError(f"{p}: not a run directory and holds none (no manifest.json inside)")
        else:
            raise RunDirError(f"{p}: not a run directory (a file, not a directory)")
        for f in found:
            if f.resolve() not in {o.resolve() for o in out}:
                out.append(f)
    return out


def unique_labels(runs: list[RunData]) -> None:
    """Give each run a short unique label: its directory name, prefixed by its parent's name
    where two runs share a directory name."""
    names = [r.path.name for r in runs]
    for r in runs:
        r.label = r.path.name if names.count(r.path.name) == 1 else f"{r.path.parent.name}/{r.path.name}"
    seen: dict[str, int] = {}
    for r in runs:
        n = seen.get(r.label, 0)
        seen[r.label] = n + 1
        if n:
            r.label = f"{r.label}#{n + 1}"


def _first_difference(a, b, path: str) -> str | None:
    """Dotted path and values of the first place two JSON values differ (None if equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}.{i}")
            if d:
                return d
        return None
    return None if a == b else f"{path} ({json.dumps(b)} vs {json.dumps(a)})"


def incomparable(runs: list[RunData]) -> str | None:
    """Why the runs cannot be compared (one line), or None: every run must train the same
    model on the same data (scenario sections ``data`` and ``model``) as the first."""
    base = runs[0]
    for r in runs[1:]:
        for section in COMPARABLE_SECTIONS:
            d = _first_difference(base.scenario.get(section), r.scenario.get(section), section)
            if d:
                return f"{r.path} differs from {base.path} in {d}"
    return None


def replication_key(run: RunData) -> str:
    """Runs with equal keys are replications: the same scenario except its seed, and the same
    content of the plug-in source and data files they read (``sim.fingerprint``: two versions of
    a method at one path are two experiments, not two seeds of one)."""
    from sim.fingerprint import digest

    sc = {k: v for k, v in run.scenario.items() if k != "seed"}
    return json.dumps(sc, sort_keys=True) + "|" + digest(run.manifest.get("fingerprints"))


@dataclass
class Group:
    """Runs of one scenario that differ only in seed (often just one run)."""
    label: str
    runs: list[RunData] = field(default_factory=list)
    color: str = "#1f77b4"
    split: str | None = None
    """Why this group is not one with another group of the same scenario (its files differ)."""

    @property
    def seeds(self) -> list[int]:
        return [r.manifest.get("seed") for r in self.runs]


def group_replications(runs: list[RunData]) -> list[Group]:
    """Group runs by ``replication_key`` in first-seen order; a group of several runs is
    labelled by its first run and its seed count."""
    from sim.fingerprint import differences

    groups: dict[str, Group] = {}
    for r in runs:
        groups.setdefault(replication_key(r), Group(label=r.label)).runs.append(r)
    out = list(groups.values())
    for g in out:
        if len(g.runs) > 1:
            g.label = f"{g.runs[0].label} ({len(g.runs)} seeds)"
    first: dict[str, Group] = {}  # same scenario but different files: say why they are apart
    for g in out:
        r0 = g.runs[0]
        key = json.dumps({k: v for k, v in r0.scenario.items() if k != "seed"}, sort_keys=True)
        if key not in first:
            first[key] = g
            continue
        other = first[key].runs[0]
        diff = differences(other.manifest.get("fingerprints"), r0.manifest.get("fingerprints")) or ["fingerprints"]
        g.split = f"{g.label} is not a replication of {first[key].label}: {'; '.join(diff)} differ"
    return out


def split_note(groups: list[Group]) -> str | None:
    """One line saying which groups share a scenario but read different plug-in or data files
    (None when none do)."""
    why = [g.split for g in groups if g.split]
    return ("same scenario, different files, shown as separate runs: " + " | ".join(why)) if why else None


def topology_graph(topology: dict):
    """The network graph of a manifest's topology (``engine.topology.build_graph``). A link's
    bandwidth_csv that can no longer be read is dropped (nominal bandwidth instead)."""
    from sim.engine.topology import build_graph
    from sim.scenario import Topology

    topo = Topology.model_validate(topology)
    try:
        return build_graph(topo)[0]
    except (ValueError, OSError):
        links = [l.model_copy(update={"bandwidth_csv": None}) for l in topo.links]
        return build_graph(topo.model_copy(update={"links": links}))[0]


def run_graph(run: RunData):
    """The network graph a run ended with, rebuilt from its files: the manifest's topology,
    its link degradation windows, and the random link outages its events recorded (kind
    fault, tag link_outage, node ``a<->b``), so a replay sees the bandwidth the run saw."""
    from sim.engine.faults import apply_link_windows
    from sim.scenario import LinkFault

    graph = topology_graph(run.scenario["topology"])
    if (run.events["kind"] == "serve").any():  # a method with servers
        _add_method_servers(graph, run.scenario)
    link_faults = [LinkFault.model_validate(lf) for lf in (run.scenario.get("faults") or {}).get("links") or []]
    apply_link_windows(graph, link_faults)
    ev = run.events
    outages = ev[(ev["kind"] == "fault") & (ev["tag"] == "link_outage")]
    for node, start, end in zip(outages["node"], outages["start_s"], outages["end_s"]):
        a, _, b = str(node).partition("<->")
        if graph.has_edge(a, b) and float(end) > float(start):
            graph.edges[a, b].setdefault("outages", []).append((float(start), float(end)))
    return graph


def _add_method_servers(graph, scenario: dict) -> None:
    """The servers a method created (HALoS's per-region ones, ``Algorithm.server_plan``) that a
    manifest's topology does not list: put back on their regions' switches."""
    try:
        from sim.algorithms import algorithm_class
        from sim.engine.topology import add_servers
        from sim.scenario import parse_scenario

        sc = parse_scenario(scenario)
        add_servers(graph, algorithm_class(sc.algorithm).server_plan(sc.algorithm, sc.topology), sc.topology.intra_region)
    except Exception:  # noqa: BLE001 -- a scenario that no longer loads (moved plug-in): its declared servers only
        return


def algorithm_label(algorithm: dict) -> str:
    """``name k=v ...`` from a scenario's algorithm section, whatever the method."""
    knobs = [f"{k}={v}" for k, v in algorithm.items() if k != "name"]
    return " ".join([str(algorithm.get("name", "?"))] + knobs)
