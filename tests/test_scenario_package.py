"""The scenario package (sim/scenario/): its public face exports every name the project imports
from it, and the files a scenario names are parsed by plain functions, outside the models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sim.scenario
from sim.scenario.files import read_bandwidth_csv, read_step_times_csv

ROOT = Path(__file__).resolve().parents[1]


def _imported_names() -> dict[str, set[str]]:
    """Name -> the files that import it from ``sim.scenario`` (code, notebooks, README)."""
    out: dict[str, set[str]] = {}
    files = [*ROOT.glob("sim/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/*.py"),
             *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("examples/*.py"), ROOT / "README.md"]
    for f in files:
        for m in re.finditer(r"from sim\.scenario import (?:\(([^)]*)\)|([\w ,]+))", f.read_text(encoding="utf-8")):
            for name in (m.group(1) or m.group(2)).split(","):
                if name.strip():
                    out.setdefault(name.split()[0], set()).add(str(f.relative_to(ROOT)))
    return out


def test_the_package_exports_every_name_the_project_imports_from_it():
    """Every name that sim/, tests/, bench/, notebooks/, examples/ or the README imports from
    ``sim.scenario`` is one the package's ``__init__`` exports (in ``__all__``)."""
    names = _imported_names()
    assert {"Scenario", "ScenarioError", "load_scenario", "load_variants", "json_schema"} <= set(names)
    missing = {n: sorted(where) for n, where in names.items() if n not in sim.scenario.__all__}
    assert not missing, f"imported from sim.scenario but not exported: {missing}"
    assert all(hasattr(sim.scenario, n) for n in sim.scenario.__all__)


def test_a_bandwidth_csv_is_read_as_written(tmp_path):
    """A bandwidth CSV gives its rows as (time_s, bandwidth_gbps) pairs, in order, blank lines and
    spaces around values ignored; a row whose time does not increase is refused naming its line."""
    p = tmp_path / "wan.csv"
    p.write_text("time_s, bandwidth_gbps\n\n0, 2.5\n 10.5 ,0\n\n20,1e-3\n", encoding="utf-8")
    assert read_bandwidth_csv(p) == [(0.0, 2.5), (10.5, 0.0), (20.0, 0.001)]
    p.write_text("time_s,bandwidth_gbps\n5,1\n5,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^wan\.csv line 3: time_s must increase"):
        read_bandwidth_csv(p)


def test_a_step_time_csv_is_read_from_its_column(tmp_path):
    """A step-time CSV gives the values of its 'step_time_s' column, whatever other columns it has;
    a value that is not > 0 is refused naming its line."""
    p = tmp_path / "times.csv"
    p.write_text("node,step_time_s\nus/0,0.25\nus/1,0.5\n", encoding="utf-8")
    assert read_step_times_csv(p) == [0.25, 0.5]
    p.write_text("step_time_s\n0.1\n0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^times\.csv line 3: step_time_s must be finite and > 0"):
        read_step_times_csv(p)
