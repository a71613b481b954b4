"""The locosim command line, run as a subprocess: bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "scenarios/quickstart.yaml"
BAD = sorted((ROOT / "tests" / "fixtures" / "bad").glob("*.yaml"))


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [l for l in proc.stderr.splitlines() if l.strip()]


def assert_one_line_bad_input(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_quickstart_ok():
    """`validate` on the quickstart scenario exits 0 and prints an ok line."""
    proc = cli("validate", QUICKSTART)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_validate_with_set_override():
    """`validate --set` applies the override before checking (an invalid override exits 2)."""
    ok = cli("validate", QUICKSTART, "--set", "algorithm.inner_steps=5")
    assert ok.returncode == 0 and "H=5" in ok.stdout, ok.stderr
    bad = cli("validate", QUICKSTART, "--set", "algorithm.inner_steps=0")
    assert_one_line_bad_input(bad)
    assert "algorithm.inner_steps" in bad.stderr


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_validate_bad_fixture(path):
    """`validate` on each bad fixture exits 2 with exactly one non-empty stderr line and no traceback."""
    proc = cli("validate", str(path.relative_to(ROOT)))
    assert_one_line_bad_input(proc)
    assert proc.stdout == ""


def test_run_bad_fixture_creates_nothing(tmp_path):
    """`run` on a bad fixture exits 2 and does not create the --out directory."""
    out = tmp_path / "x"
    proc = cli("run", str(BAD[0]), "--out", str(out), "--quiet")
    assert_one_line_bad_input(proc)
    assert not out.exists()


def test_run_refuses_non_empty_out(tmp_path):
    """`run` with --out pointing at a non-empty existing directory exits 2 and leaves its file untouched."""
    out = tmp_path / "existing"
    out.mkdir()
    keep = out / "keep.txt"
    keep.write_text("precious")
    proc = cli("run", QUICKSTART, "--out", str(out), "--quiet")
    assert_one_line_bad_input(proc)
    assert "--out" in proc.stderr
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_run_refuses_out_that_is_a_file(tmp_path):
    """`run` with --out pointing at an existing file exits 2 and leaves the file untouched."""
    out = tmp_path / "afile"
    out.write_text("precious")
    proc = cli("run", QUICKSTART, "--out", str(out), "--quiet")
    assert_one_line_bad_input(proc)
    assert out.read_text() == "precious"


def test_schema_prints_json():
    """`schema` exits 0 and prints valid JSON with topology and algorithm properties."""
    proc = cli("schema")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "topology" in data["properties"] and "algorithm" in data["properties"]


@pytest.mark.parametrize("command", ["validate", "run", "schema"])
def test_help(command):
    """`COMMAND --help` exits 0 and prints usage for validate, run and schema."""
    proc = cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()


def test_top_level_help():
    """`--help` at the top level exits 0 and lists the commands."""
    proc = cli("--help")
    assert proc.returncode == 0
    for c in ("validate", "run", "schema"):
        assert c in proc.stdout


@pytest.mark.parametrize("args", [
    ["validate", QUICKSTART, "--bogus"],
    ["run", QUICKSTART, "--nope"],
    ["schema", "--extra"],
    ["frobnicate"],
    [],
], ids=["validate-flag", "run-flag", "schema-flag", "unknown-command", "no-command"])
def test_unknown_flag_one_line(args):
    """An unknown flag or command exits 2 with one stderr line and no traceback."""
    proc = cli(*args)
    assert_one_line_bad_input(proc)


def test_missing_file_one_line(tmp_path):
    """`validate` on a missing file exits 2 with one line naming the path."""
    p = tmp_path / "missing.yaml"
    proc = cli("validate", str(p))
    assert_one_line_bad_input(proc)
    assert str(p) in proc.stderr
