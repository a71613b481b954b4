"""A run's directory says what really happened however it ends (issue 28, "Data lost" and
"Silent wrong results"): a signal before the run started releases the claim; a signal during
the final write keeps the tables, lists them in ``files`` and says so; the tables are written
before anything derived from them; plug-in code that calls ``sys.exit()`` or changes the working
directory fails or moves nothing; a sweep into an existing sweep directory adds to it.
Runs are timing-only (no torch); signals are simulated by raising what the SIGTERM handler
raises (``sim.signals.Terminated``) at the moment under test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sim.cli import main
from sim.report.runs import load_run
from sim.signals import Terminated

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = """\
name: tiny
seed: 0
topology:
  regions:
    - {name: a, nodes: 2}
  links: []
  intra_region: {bandwidth_gbps: 1000.0, latency_s: 0.00001}
timing: {params: 1.0e6, layers: 2, step_time_s: 0.1}
numerics: false
algorithm: {name: diloco, inner_steps: 2}
run:
  max_rounds: 3
"""


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(SCENARIO)
    return p


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def test_sigterm_before_the_running_manifest_releases_the_claim(scenario, tmp_path, monkeypatch, capsys):
    """SIGTERM after the directory is claimed but before the run's manifest is written: exit 143,
    'before the run started', and the claimed directory is gone (no 'starting' placeholder left)."""
    import sim.writer

    def term():
        raise Terminated("terminated by SIGTERM")

    monkeypatch.setattr(sim.writer, "_versions", term)
    out = tmp_path / "r"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 143
    assert "before the run started" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("when", ["write_dashboard", "summarize"])
def test_signal_during_the_final_write_keeps_the_tables_and_says_so(scenario, tmp_path, monkeypatch, when):
    """SIGTERM while a completed run's directory is written: the manifest says interrupted, names
    the moment and the simulation's own ending, lists exactly the files that exist, and the
    summary (when written) agrees; the tables are readable."""
    import sim.metrics.summary
    import sim.report.dashboard

    def term(*a, **k):
        raise Terminated("terminated by SIGTERM")

    monkeypatch.setattr(sim.report.dashboard if when == "write_dashboard" else sim.metrics.summary, when, term)
    out = tmp_path / "r"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 143
    m = _manifest(out)
    assert m["status"] == "interrupted"
    assert "while writing the run directory" in m["error"] and "completed" in m["error"]
    on_disk = sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    assert sorted(m["files"]) == on_disk
    assert {"events.parquet", "metrics.parquet"} <= set(m["files"])
    if when == "write_dashboard":
        assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
        assert load_run(out).summary["rounds"] == 3  # compare and the dashboard can read it
    assert len(pd.read_parquet(out / "events.parquet")) > 0


def test_tables_are_written_before_the_network_replay(scenario, tmp_path, monkeypatch):
    """An interrupt while the links are rated (``run_rates``: the run's rate log, or a replay
    of the transfers where there is none; the derived part) finds events.parquet and
    metrics.parquet already on disk and listed."""
    import sim.writer

    def term(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.writer, "run_rates", term)
    out = tmp_path / "r"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 130
    m = _manifest(out)
    assert m["files"] == ["events.parquet", "metrics.parquet"]
    assert (out / "events.parquet").is_file() and (out / "metrics.parquet").is_file()


def test_plugin_sys_exit_mid_run_is_a_failed_run(scenario, tmp_path, monkeypatch, capsys):
    """Run-time code that calls sys.exit(0) makes a failed run (exit 1, manifest failed, the
    tables kept), never locosim's exit 0."""
    import sim.runner

    real = sim.runner.Simulation.run

    def run(self, *a, **k):
        self.env.process(_exit_later(self.env))
        return real(self, *a, **k)

    def _exit_later(env):
        yield env.timeout(0.25)
        sys.exit(0)

    monkeypatch.setattr(sim.runner.Simulation, "run", run)
    out = tmp_path / "r"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 1
    m = _manifest(out)
    assert m["status"] == "failed" and "sys.exit(0)" in m["error"]
    assert "events.parquet" in m["files"]
    assert "run failed" in capsys.readouterr().err


def test_plugin_sys_exit_in_checks_is_not_a_silent_exit_0(scenario, monkeypatch, capsys):
    """validate, run and sweep: check-time code calling sys.exit(0) gives exit 2 and one line."""
    import sim.checks

    def bye(*a, **k):
        sys.exit(0)

    monkeypatch.setattr(sim.checks, "check_before_work", bye)
    for argv in (["validate", str(scenario)], ["run", str(scenario), "--quiet"],
                 ["sweep", str(scenario), "--quiet"]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert "sys.exit(0)" in capsys.readouterr().err


def test_run_dir_is_absolute_when_code_changes_directory(scenario, tmp_path, monkeypatch):
    """A relative --out: a run whose code chdirs elsewhere mid-run still writes every file into
    the directory it claimed."""
    import sim.runner

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = sim.runner.Simulation.run

    def run(self, *a, **k):
        os.chdir(elsewhere)
        return real(self, *a, **k)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sim.runner.Simulation, "run", run)
    assert main(["run", "tiny.yaml", "--out", "rel", "--quiet"]) == 0
    assert _manifest(tmp_path / "rel")["status"] == "completed"
    assert sorted(_manifest(tmp_path / "rel")["files"]) == sorted(
        ["events.parquet", "metrics.parquet", "summary.json", "dashboard.html"])
    assert not (elsewhere / "rel").exists()


def test_sweeping_into_a_sweep_adds_to_it(scenario, tmp_path, capsys):
    """--seeds 0..1 then --seeds 2..3 into the same directory: sweep.json and index.parquet list
    all four runs, each a run directory that exists."""
    out = tmp_path / "sw"
    assert main(["sweep", str(scenario), "--seeds", "0..1", "--out", str(out), "--quiet"]) == 0
    assert main(["sweep", str(scenario), "--seeds", "2..3", "--out", str(out), "--quiet"]) == 0
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    index = pd.read_parquet(out / "index.parquet")
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert sorted(runs) == dirs == sorted(index["run_id"]) and len(dirs) == 4
    assert sorted(index["seed"].astype(int)) == [0, 1, 2, 3]
    assert set(index["status"]) == {"completed"}
    # and again with an overlapping set: nothing doubled, the finished runs skipped
    assert main(["sweep", str(scenario), "--seeds", "1..2", "--out", str(out), "--quiet"]) == 0
    assert "2 skipped" in capsys.readouterr().out
    assert len(pd.read_parquet(out / "index.parquet")) == 4


def test_grid_seed_and_seeds_together_are_refused(scenario, tmp_path, capsys):
    """--grid seed=1,2 with --seeds 0..0 would run seed 0 twice under two labels: refused, exit 2."""
    out = tmp_path / "sw"
    assert main(["sweep", str(scenario), "--grid", "seed=1,2", "--seeds", "0..0", "--out", str(out), "--quiet"]) == 2
    assert "seed" in capsys.readouterr().err and not out.exists()


def test_sweep_final_line_counts_interrupted_runs(scenario, tmp_path, monkeypatch, capsys):
    """A sweep stopped by Ctrl-C prints how many runs ended interrupted, as the index has them."""
    import sim.runner

    real = sim.runner.Simulation.run

    def run(self, *a, **k):
        if self.sc.seed == 1:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(sim.runner.Simulation, "run", run)
    out = tmp_path / "sw"
    assert main(["sweep", str(scenario), "--seeds", "0..2", "--out", str(out), "--quiet"]) == 130
    index = pd.read_parquet(out / "index.parquet")
    n = int((index["status"] == "interrupted").sum())
    assert n == 1 and f"{n} interrupted" in capsys.readouterr().out


def test_sigterm_while_importing_exits_143(scenario, monkeypatch, capsys):
    """SIGTERM while the scenario's plug-ins load (before any run) exits 143, not 130."""
    import sim.cli

    def term(*a, **k):
        raise Terminated("terminated by SIGTERM")

    monkeypatch.setattr(sim.cli, "_load_variants", term)
    assert main(["run", str(scenario), "--quiet"]) == 143
    assert "SIGTERM" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["schema"], ["validate", "SCENARIO"], ["--help"]])
def test_a_reader_closing_stdout_early_gives_no_traceback(scenario, argv):
    """`locosim schema | head -c1` (and validate, --help): the command ends without a traceback
    when its reader goes away."""
    argv = [str(scenario) if a == "SCENARIO" else a for a in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; from sim.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    proc.stdout.close()  # the reader is gone before the first byte
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_plugin_sys_exit_in_a_sweep_run_is_a_failed_run(scenario, tmp_path, monkeypatch, capsys):
    """sweep --workers 1: a run whose code calls sys.exit(0) is recorded failed in the index and
    the sweep goes on and exits 1 (not 0 with no index)."""
    import sim.runner

    real = sim.runner.Simulation.run

    def run(self, *a, **k):
        if self.sc.seed == 1:
            sys.exit(0)
        return real(self, *a, **k)

    monkeypatch.setattr(sim.runner.Simulation, "run", run)
    out = tmp_path / "sw"
    assert main(["sweep", str(scenario), "--seeds", "0..2", "--out", str(out), "--quiet"]) == 1
    index = pd.read_parquet(out / "index.parquet")
    assert sorted(index["status"]) == ["completed", "completed", "failed"]
    assert "sys.exit(0)" in index.loc[index["status"] == "failed", "error"].iloc[0]
