"""Scenario loading: every shipped scenario loads; every bad fixture fails with a one-line, located error."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.scenario import Scenario, ScenarioError, apply_overrides, json_schema, load_scenario, read_yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
BAD_DIR = ROOT / "tests" / "fixtures" / "bad"
BAD = sorted(BAD_DIR.glob("*.yaml"))

# fixture name -> prefix the error message must start with (the field path, or the file path
# for files that are not a YAML mapping at all).
FILE = object()  # stands for "the path of the fixture file itself"
EXPECTED_PREFIX: dict[str, object] = {
    "outage_ends_before_start": "topology.links.0.outages.0.end_s:",
    "bandwidth_csv_missing": "topology.links.0.bandwidth_csv: no such file",
    "bandwidth_csv_time_backwards": "topology.links.0.bandwidth_csv:",
    "unknown_top_key": "colour: unknown key",
    "unknown_topology_key": "topology.zones: unknown key",
    "nodes_wrong_type": "topology.regions.0.nodes:",
    "negative_bandwidth": "topology.links.0.bandwidth_gbps:",
    "link_unknown_region": "topology.links.0.b:",
    "inner_steps_zero": "algorithm.inner_steps:",
    "unknown_algorithm": "algorithm:",
    "heads_not_dividing": "model.n_heads:",
    "run_no_stop": "run:",
    "unknown_step_time_mode": "compute.step_time:",
    "invalid_yaml": FILE,
    "list_not_mapping": FILE,
    "duplicate_region": "topology.regions: region names must be unique",
    "negative_latency": "topology.links.0.latency_s:",
    "unknown_gpu": "topology.regions.0.gpu: unknown gpu",
    "faults_unknown_node": "faults.churn.0.node: unknown node",
    "faults_mtbf_without_mttr": "faults.failures: mtbf_s and mttr_s go together",
    "faults_unknown_distribution": "faults.stragglers.0.factor: unknown kind",
    "sync_timeout_negative": "algorithm.sync_timeout_s:",
    "faults_window_backwards": "faults.links.0.degrade.0.end_s:",
    "faults_empirical_csv_missing": "faults.stragglers.0.factor.csv: no such file",
    "variant_name_dotdot": 'variants."..": a variant name becomes a directory name',  # issue 13 (test_reliability)
    # issue 13: refused before work (see also tests/test_refusals.py)
    "duplicate_key": FILE,
    "yaml_date_value": "name: a date (2024-06-01)",
    "yaml_binary_value": "description: binary data (!!binary)",
    "yaml_set_value": "topology.links.0.a: a set (!!set)",
    "yaml_alias_bomb": FILE,
    "duplicate_link": "topology.links.1: links.0 already joins",
    "noloco_group_too_large": "algorithm.group_size: must be <= the number of workers (4)",
    "fragment_layers_too_large": "algorithm.fragment_layers: must be <= the model's 1 layers",
    "latency_huge": "topology.links.0.latency_s:",
    "straggler_mu_huge": "faults.stragglers.0.factor.mu:",
    "pareto_alpha_tiny": "faults.stragglers.0.factor.alpha:",
    "bandwidth_csv_zero_forever": "topology.links.0.bandwidth_csv:",
    "nodes_too_many": "topology.regions.0.nodes:",
    "workers_too_many": "topology.regions: 120,000 nodes in all",
    "synthetic_vocab_huge": "data.vocab_size: the synthetic language needs",
    "batch_huge": "compute.batch_size:",
}


def test_scenarios_dir_not_empty():
    """The repository ships at least one scenario file."""
    assert SCENARIOS


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_shipped_scenarios_load(path):
    """Every file in scenarios/ loads into a Scenario without error."""
    sc = load_scenario(path)
    assert isinstance(sc, Scenario)
    assert sc.topology.n_workers >= 1


def test_every_bad_fixture_has_an_expectation():
    """Every bad fixture file has an expected error-path prefix, and every expectation has a file."""
    assert {p.stem for p in BAD} == set(EXPECTED_PREFIX)
    assert len(BAD) >= 12


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_fixture_opens_with_defect_comment(path):
    """Every bad fixture opens with a comment line naming its defect."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# defect:") and len(first) > len("# defect: ")


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_fixture_raises_one_line_located_error(path):
    """Loading a bad fixture raises ScenarioError whose message is one line starting with the field path."""
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert msg.strip() and "\n" not in msg, msg
    expected = EXPECTED_PREFIX[path.stem]
    prefix = str(path) if expected is FILE else expected
    assert msg.startswith(prefix), f"{msg!r} does not start with {prefix!r}"
    assert "Traceback" not in msg


def test_missing_file_is_scenario_error(tmp_path):
    """A path that does not exist raises a one-line ScenarioError naming the path."""
    p = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    assert str(info.value).startswith(str(p)) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- --set overrides
BASE = {"a": {"b": 1, "c": [10, {"d": 2}]}, "top": "x"}


def test_override_nested_key():
    """A dotted key sets a nested mapping value and leaves the input unchanged."""
    out = apply_overrides(BASE, ["a.b=5"])
    assert out["a"]["b"] == 5
    assert BASE["a"]["b"] == 1


def test_override_creates_missing_sections():
    """A dotted key through missing sections creates them."""
    out = apply_overrides(BASE, ["new.sub.key=1"])
    assert out["new"] == {"sub": {"key": 1}}


def test_override_list_index():
    """A numeric path part indexes into a list, both as the last part and in the middle."""
    out = apply_overrides(BASE, ["a.c.0=11", "a.c.1.d=3"])
    assert out["a"]["c"] == [11, {"d": 3}]


@pytest.mark.parametrize("raw, value", [
    ("5", 5), ("0.5", 0.5), ("1.0e-3", 1e-3), ("true", True), ("null", None), ("fp16", "fp16"),
    ("[1, 2]", [1, 2]), ("{x: 1}", {"x": 1}), (".inf", float("inf")), ("'5'", "5"),
])
def test_override_values_are_yaml_typed(raw, value):
    """Override values are parsed as YAML (ints, floats, bools, null, strings, lists, mappings)."""
    out = apply_overrides(BASE, [f"top={raw}"])
    assert out["top"] == value and type(out["top"]) is type(value)


def test_override_value_may_contain_equals():
    """Only the first '=' splits key from value."""
    assert apply_overrides(BASE, ["top=a=b"])["top"] == "a=b"


@pytest.mark.parametrize("item", ["a.c.2=1", "a.c.x=1", "a.c.-1=1"])
def test_override_bad_list_index(item):
    """An index past the end of a list, or not a number, raises a one-line ScenarioError."""
    with pytest.raises(ScenarioError) as info:
        apply_overrides(BASE, [item])
    assert "not an index" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("item", ["top.x=1", "a.b.z=1"])
def test_override_into_a_value(item):
    """A key path that descends into a scalar raises ScenarioError."""
    with pytest.raises(ScenarioError):
        apply_overrides(BASE, [item])


@pytest.mark.parametrize("item", ["noequals", "a..b=1", "=1"])
def test_override_malformed(item):
    """An override without '=' or with an empty path part raises ScenarioError."""
    with pytest.raises(ScenarioError):
        apply_overrides(BASE, [item])


def test_load_scenario_applies_overrides():
    """load_scenario applies --set overrides before validation."""
    q = ROOT / "scenarios" / "quickstart.yaml"
    sc = load_scenario(q, ["algorithm.inner_steps=7", "topology.regions.1.nodes=3", "run.max_rounds=2"])
    assert sc.algorithm.inner_steps == 7
    assert sc.topology.regions[1].nodes == 3
    assert sc.run.max_rounds == 2
    # the file itself is unchanged
    assert read_yaml(q)["algorithm"]["inner_steps"] == 20


def test_load_scenario_exponent_without_dot():
    """'--set optimizer.lr=1e-3' gives lr 0.001 (PyYAML reads 1e-3 as a string; pydantic coerces it)."""
    sc = load_scenario(ROOT / "scenarios" / "quickstart.yaml", ["optimizer.lr=1e-3"])
    assert sc.optimizer.lr == pytest.approx(1e-3)


def test_load_scenario_override_validated():
    """An override producing an invalid scenario raises a located ScenarioError."""
    with pytest.raises(ScenarioError) as info:
        load_scenario(ROOT / "scenarios" / "quickstart.yaml", ["algorithm.inner_steps=0"])
    assert str(info.value).startswith("algorithm.inner_steps:")


def test_load_scenario_bad_override_index():
    """An override indexing past a list in a real scenario raises ScenarioError."""
    with pytest.raises(ScenarioError):
        load_scenario(ROOT / "scenarios" / "quickstart.yaml", ["topology.regions.9.nodes=1"])


# --------------------------------------------------------------------------- schema
def test_json_schema_shape():
    """json_schema() is a dict whose properties include topology and algorithm."""
    s = json_schema()
    assert isinstance(s, dict)
    assert "topology" in s["properties"] and "algorithm" in s["properties"]


def test_every_shipped_scenario_validates_against_the_json_schema():
    """An editor given `locosim schema` accepts every file in scenarios/ and examples/ (the
    methods shipped as plug-ins, eager_diloco or sparta, included with their own knobs), and
    flags a misspelled knob of such a method."""
    import jsonschema

    from tests.conftest import ROOT

    import re

    import yaml

    class Yaml12(yaml.SafeLoader):
        """As an editor reads YAML (1.2): 1.0e9 is a number, not a string."""

    Yaml12.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
                                 list("-+0123456789."))
    validator = jsonschema.Draft202012Validator(json_schema())
    files = sorted(ROOT.glob("scenarios/*.yaml")) + sorted(ROOT.glob("examples/*.yaml"))
    assert files
    for path in files:
        errors = [e.message for e in validator.iter_errors(yaml.load(path.read_text(), Loader=Yaml12))]
        assert not errors, f"{path.name}: {errors[:2]}"
    doc = read_yaml(ROOT / "scenarios" / "eager_diloco.yaml")
    doc["algorithm"] = {"name": "eager_diloco", "outer_dlay": 2}
    assert list(validator.iter_errors(doc))
    doc["algorithm"] = {"name": "eager_diloco", "outer_delay": 2}
    assert not list(validator.iter_errors(doc))
