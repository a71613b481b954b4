"""From a file to validated scenarios: read the YAML (``yaml_io``), split off and merge its
``variants:`` and apply ``--set`` overrides (``variants``), validate (``Scenario``, errors as
one line through ``errors.format_error``), then resolve what the scenario names relative to
its file (a text corpus, bandwidth and step-time CSVs, plug-in files and their path arguments),
checking each file once so a bad one is refused before a run starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sim import loader
from sim.scenario.errors import ScenarioError, format_error
from sim.scenario.faults import EmpiricalFactor
from sim.scenario.root import Scenario
from sim.scenario.training import TextData
from sim.scenario.variants import VARIANT_NAME, apply_overrides, merge_variant, split_variant_overrides, variant_error
from sim.scenario.yaml_io import read_yaml


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate a mapping into a Scenario; raise ScenarioError with a one-line message."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a YAML mapping of sections (got {type(data).__name__})")
    try:
        base = Path(source).parent if source and Path(source).is_file() else None
        return Scenario.model_validate(data, context={"base_dir": str(base) if base else None})
    except ValidationError as err:
        raise ScenarioError(format_error(err, Scenario)) from None


def load_variants(path: str | Path, overrides: list[str] | None = None,
                  default_run: dict | None = None, grid: list[str] | None = None) -> list[tuple[str | None, Scenario]]:
    """The scenarios a file describes: one (None, scenario) without ``variants:``; else one
    (variant name, scenario) per entry of ``variants:`` (name -> sections merged into the
    base). ``--set variants.NAME.key=value`` edits NAME's block before the merge; other
    ``--set`` overrides apply to every variant after the merge. ``default_run``: the ``run:``
    section of a scenario that has none (``locosim bandwidth`` sets its own run)."""
    data = read_yaml(path)
    data.pop("sweep", None)  # read by `locosim sweep` (sim.sweep); a single run ignores it
    grid = list(grid or [])  # a sweep's grid point (key.path=value), applied after the --set overrides
    variants, overrides = split_variant_overrides(data.pop("variants", None), overrides or [])
    set_only, overrides = overrides, overrides + grid

    def with_run(d: dict) -> dict:
        return {**d, "run": dict(default_run)} if default_run is not None and "run" not in d else d

    if variants is None:
        return [(None, _finish(parse_scenario(apply_overrides(with_run(data), overrides), str(path)), path))]
    if not isinstance(variants, dict) or not variants:
        raise ScenarioError("variants: must be a non-empty mapping of variant name -> sections to change")
    out = []
    for name, patch in variants.items():
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
            shown = name if isinstance(name, str) and re.fullmatch(r"\w+", name) else json.dumps(str(name))
            raise ScenarioError(f"variants.{shown}: a variant name becomes a directory name: 1-64 letters, "
                                "digits, _ . - starting with a letter, digit or _")
        if not isinstance(patch, dict):
            raise ScenarioError(f"variants.{name}: must be a mapping of sections to change (got {type(patch).__name__})")
        merged = merge_variant(data, patch)
        merged.setdefault("name", "scenario")
        if "name" not in patch:
            merged["name"] = f"{merged['name']}-{name}"
        try:
            sc = parse_scenario(apply_overrides(with_run(merged), overrides), str(path))
        except ScenarioError as err:
            raise ScenarioError(variant_error(str(err), name, patch, data, set_only, grid)) from None
        out.append((name, _finish(sc, path)))
    return out


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """One scenario from a file; a file with ``variants:`` gives its first variant."""
    return load_variants(path, overrides)[0][1]


def _finish(sc: Scenario, path: str | Path) -> Scenario:
    """Resolve paths in a parsed scenario relative to its file."""
    if isinstance(sc.data, TextData):
        p = Path(sc.data.path)
        if not p.is_absolute():
            p = (Path(path).parent / p).resolve()
        if not p.exists():
            raise ScenarioError(f"data.path: no such file {str(p)!r}")
        if not p.is_file():  # a directory, /dev/zero, a pipe: never read for ever
            raise ScenarioError(f"data.path: {str(p)!r} is not a regular file (a directory, device or pipe); "
                                "name a UTF-8 text file")
        sc = sc.model_copy(update={"data": sc.data.model_copy(update={"path": str(p)})})
    sc = _resolve_link_csvs(sc, Path(path).parent)
    sc = _resolve_fault_csvs(sc, Path(path).parent)
    from sim.paths import resolve_path_args

    for section in ("model", "data"):  # plug-in files and Path-typed args, relative to the scenario file
        spec = getattr(sc, section)
        if spec.kind == "plugin":
            ref = loader.resolve_ref(spec.plugin, Path(path).parent)
            try:
                args = resolve_path_args(section, ref, spec.args, Path(path).parent)
            except ValueError as err:  # the plug-in cannot be loaded: its one line
                raise ScenarioError(str(err).splitlines()[0]) from None
            sc = sc.model_copy(update={section: spec.model_copy(update={"plugin": ref, "args": args})})
    return sc


def _resolve_fault_csvs(sc: Scenario, base_dir: Path) -> Scenario:
    """Make every empirical straggler CSV path absolute (relative to base_dir) and check that it parses."""
    stragglers = list(sc.faults.stragglers)
    for i, st in enumerate(stragglers):
        if not isinstance(st.factor, EmpiricalFactor):
            continue
        p = Path(st.factor.csv)
        p = p if p.is_absolute() else (base_dir / p).resolve()
        factor = st.factor.model_copy(update={"csv": str(p)})
        try:
            factor.samples()
        except ValueError as err:
            raise ScenarioError(f"faults.stragglers.{i}.factor.csv: {err}") from None
        stragglers[i] = st.model_copy(update={"factor": factor})
    if stragglers == list(sc.faults.stragglers):
        return sc
    return sc.model_copy(update={"faults": sc.faults.model_copy(update={"stragglers": stragglers})})


def _resolve_link_csvs(sc: Scenario, base_dir: Path) -> Scenario:
    """Make every link's bandwidth_csv absolute (relative to base_dir) and check that it parses."""
    links = list(sc.topology.links)
    for i, link in enumerate(links):
        if link.bandwidth_csv is None:
            continue
        p = Path(link.bandwidth_csv)
        p = p if p.is_absolute() else (base_dir / p).resolve()
        links[i] = link.model_copy(update={"bandwidth_csv": str(p)})
        try:
            links[i].bandwidth_series()
        except ValueError as err:
            raise ScenarioError(f"topology.links.{i}.bandwidth_csv: {err}") from None
    if links == list(sc.topology.links):
        return sc
    return sc.model_copy(update={"topology": sc.topology.model_copy(update={"links": links})})

