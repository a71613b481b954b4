"""No silent wrong answer and no message that blames the wrong thing (issue 28): strict thread
counts and integers, flags with a NaN or infinity refused, an infinite bandwidth that survives
the run directory, and one-line refusals that name what is really wrong. Scenario fixtures are
one file each under tests/fixtures/bad/strict/ (a first line ``# defect: ...``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cli import main
from sim.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
STRICT = ROOT / "tests" / "fixtures" / "bad" / "strict"

# fixture -> the start of its one-line refusal
EXPECTED = {
    "run_threads_true": "run.threads: 'auto' or a whole number of CPU threads from 1 to 1024 (got True)",
    "run_threads_zero": "run.threads: 'auto' or a whole number",
    "run_threads_huge": "run.threads: 'auto' or a whole number",
    "run_threads_word": "run.threads: 'auto' or a whole number",
    "inner_steps_octal": "not valid YAML at line 14",
    "synthetic_vocab_billion": "data.vocab_size: (vocab_size - topics) ** order",
    "text_path_device": "data.path: '/dev/zero' is not a regular file",
}


def test_every_strict_fixture_has_an_expectation():
    """Each fixture file has an expected message, and each opens with its defect."""
    files = sorted(STRICT.glob("*.yaml"))
    assert {p.stem for p in files} == set(EXPECTED)
    assert all(p.read_text().startswith("# defect: ") for p in files)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_strict_fixture_is_one_line_naming_the_field(stem, capsys):
    """`validate --schema-only` on each fixture: exit 2, one line starting with the field (no
    traceback, no other field blamed)."""
    path = STRICT / f"{stem}.yaml"
    assert main(["validate", str(path), "--schema-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert EXPECTED[stem] in err, err


@pytest.mark.parametrize("text,value", [("10", 10), ("0", 0), ("-3", -3), ("1_000", 1000), ("0x10", 16)])
def test_unambiguous_integers_read_as_written(text, value):
    """Decimal (with _ separators) and 0x integers read as written."""
    from sim.scenario import load_yaml_text

    assert load_yaml_text(f"a: {text}")["a"] == value


@pytest.mark.parametrize("text", ["010", "0755", "1:30"])
def test_ambiguous_integers_are_refused_in_set(text, capsys):
    """--set algorithm.inner_steps=010 (or 1:30) is refused in one line, never read as 8 or 90."""
    assert main(["validate", "scenarios/quickstart.yaml", "--schema-only",
                 "--set", f"algorithm.inner_steps={text}"]) == 2
    assert "ambiguous" in capsys.readouterr().err


def test_duplicate_key_inside_set_is_named(capsys):
    """A duplicate key inside a --set value says so (not 'missing name')."""
    assert main(["validate", "scenarios/quickstart.yaml", "--schema-only",
                 "--set", "algorithm={name: diloco, name: noloco}"]) == 2
    err = capsys.readouterr().err
    assert "duplicate key 'name'" in err and "missing name" not in err


def test_validate_refuses_a_device_as_the_scenario(capsys):
    """`locosim validate /dev/zero` is one line at once (it would read for ever)."""
    assert main(["validate", "/dev/zero"]) == 2
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["compare", "RUN", "--target", "nan"], ["compare", "RUN", "--target", "-1"], ["compare", "RUN", "--target", "inf"],
    ["run", "SC", "--progress-every", "nan"], ["run", "SC", "--progress-every", "-1"],
    ["bandwidth", "SC", "--grid-max", "inf"], ["bandwidth", "SC", "--grid-min", "nan"],
])
def test_non_finite_flags_are_refused(argv, tmp_path, capsys):
    """--target, --progress-every, --grid-min/--grid-max with NaN, infinity or a negative value:
    exit 2 with one line naming the flag (no numpy warning, nothing written)."""
    sc = tmp_path / "t.yaml"
    sc.write_text(TIMING)
    argv = [str(sc) if a == "SC" else str(tmp_path) if a == "RUN" else a for a in argv]
    out = tmp_path / "out.html"
    assert main([*argv, *(["-o", str(out)] if argv[0] == "compare" else ["--out", str(tmp_path / "r")]
                          if argv[0] == "run" else [])]) == 2
    err = capsys.readouterr().err
    flag = next(a for a in argv if a.startswith("--"))
    assert err.startswith(f"error: {flag} ") and err.count("\n") == 1, err
    assert not out.exists() and not (tmp_path / "r").exists()


TIMING = """\
name: t
seed: 0
topology:
  regions:
    - {name: us, nodes: 1}
    - {name: eu, nodes: 1}
  links: [{a: us, b: eu, bandwidth_gbps: .inf, latency_s: 0.05}]
timing: {params: 1.0e6, layers: 2, step_time_s: 0.1}
numerics: false
algorithm: {name: diloco, inner_steps: 2}
run:
  max_rounds: 3
"""


def test_infinite_bandwidth_round_trips_through_the_manifest(tmp_path):
    """bandwidth_gbps: .inf is written to the manifest as "inf" (JSON has no infinity), the
    resolved scenario loads back with an infinite bandwidth, and compare draws the run."""
    from sim.report.runs import load_run
    from sim.scenario import Scenario

    sc = tmp_path / "t.yaml"
    sc.write_text(TIMING)
    out = tmp_path / "r"
    assert main(["run", str(sc), "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "manifest.json").read_text())["scenario"]
    assert saved["topology"]["links"][0]["bandwidth_gbps"] == "inf"
    assert Scenario.model_validate(saved).topology.links[0].bandwidth_gbps == float("inf")
    assert load_run(out).scenario["topology"]["links"][0]["bandwidth_gbps"] == float("inf")
    assert main(["compare", str(out), "-o", str(tmp_path / "c.html")]) == 0


VARIANTS = """\
name: v
topology:
  regions: [{name: a, nodes: 1}]
timing: {params: 1.0e6, layers: 2, step_time_s: 0.1}
numerics: false
algorithm: {name: diloco, inner_steps: 2}
run: {max_rounds: 2}
variants:
  one: {}
  two: {algorithm: {name: diloco, inner_steps: 3}}
"""


def test_a_grid_value_is_blamed_on_grid_not_set(tmp_path, capsys):
    """A bad --grid value in a file with variants names --grid, and a bad --set names --set."""
    sc = tmp_path / "v.yaml"
    sc.write_text(VARIANTS)
    assert main(["sweep", str(sc), "--grid", "algorithm.inner_steps=0,1", "--out", str(tmp_path / "a")]) == 2
    assert "(from --grid, applied to variant one)" in capsys.readouterr().err
    assert main(["sweep", str(sc), "--set", "algorithm.inner_steps=0", "--out", str(tmp_path / "b")]) == 2
    assert "(from --set, applied to variant one)" in capsys.readouterr().err


def test_compare_names_what_a_run_lacks(tmp_path, capsys):
    """compare on a run whose summary.json is gone says the file is missing, not just 'is completed'."""
    sc = tmp_path / "t.yaml"
    sc.write_text(TIMING)
    out = tmp_path / "r"
    assert main(["run", str(sc), "--out", str(out), "--quiet"]) == 0
    (out / "summary.json").unlink()
    capsys.readouterr()
    assert main(["compare", str(out), "-o", str(tmp_path / "c.html")]) == 2
    assert "no summary.json" in capsys.readouterr().err


def test_text_data_that_is_a_directory_is_not_called_missing(tmp_path):
    """data.path naming a directory says it is not a regular file (not 'no such file')."""
    with pytest.raises(ScenarioError, match="not a regular file"):
        load_scenario("scenarios/quickstart.yaml", [f"data={{kind: text, path: {tmp_path}}}"])
