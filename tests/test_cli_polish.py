"""The command line as a newcomer meets it: --version, validate --variant, what `run --variant`
says it ran, progress lines in a log file, `bandwidth`'s table without JSON unless asked (and
its chart), and errors that blame the section that holds the bad key and name the field a
paper symbol stands for."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys

import pytest
import yaml

from sim.cli import main
from sim.progress import progress_line
from sim.loop import Progress
from tests.conftest import ROOT
from tests.test_bandwidth_cli import _pair, _write


def _variants_file(tmp_path, base_algorithm: dict, other: dict | None = None) -> str:
    data = _pair(run={"max_rounds": 3})
    data["algorithm"] = base_algorithm
    data["variants"] = {"fast": {"run": {"max_rounds": 2}}, "other": other or {"run": {"max_rounds": 4}}}
    return _write(tmp_path, data, "variants.yaml")


def test_version_prints_the_installed_version(capsys):
    """`locosim --version` prints the installed package's version and exits 0."""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"locosim {md.version('locosim')}"


def test_validate_checks_one_variant(tmp_path, capsys):
    """`validate --variant NAME` checks only that variant (one line naming it); an unknown name is one
    line listing the variants, exit 2."""
    path = _variants_file(tmp_path, {"name": "diloco", "inner_steps": 5, "sync_grain": "step"})
    assert main(["validate", path, "--variant", "fast"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "variant fast: ok" in out[0]
    assert main(["validate", path, "--variant", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --variant nope: no such variant; variants: fast, other"]


def test_run_variant_says_which_variant_it_ran(tmp_path, capsys):
    """`run FILE --variant NAME` ends by naming the variant and its directory, not '1 variants'."""
    path = _variants_file(tmp_path, {"name": "diloco", "inner_steps": 5, "sync_grain": "step"})
    out = tmp_path / "out"
    assert main(["run", path, "--variant", "fast", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"ran variant fast of {path} into {out / 'fast'}" in text and "1 variants" not in text
    assert (out / "fast" / "summary.json").is_file()


def test_base_section_key_is_not_blamed_on_a_variant_and_paper_symbols_name_their_field(tmp_path, capsys):
    """A bad key written in the base section is reported as the base section's (inherited by the
    variant), a bad key in a variant's block as that variant's; a paper symbol used as a key (H) gets
    the field it stands for (inner_steps) suggested."""
    path = _variants_file(tmp_path, {"name": "diloco", "H": 5})
    assert main(["validate", path]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: algorithm.H: unknown key; did you mean inner_steps (the paper's H)?")
    assert "(in the base section, inherited by variant fast)" in line and "variants.fast" not in line
    path = _variants_file(tmp_path, {"name": "diloco", "inner_steps": 5},
                          other={"algorithm": {"name": "streaming_diloco", "tau": 1}})
    assert main(["validate", path]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: variants.other: algorithm.tau: unknown key; did you mean overlap_steps")


def test_progress_line_has_time_round_loss_wall_and_eta():
    """A progress line gives simulated time, round of max, loss, wall time and an ETA that assumes the
    rest runs as fast as the part done (a quarter done in 30 s: 90 s left)."""
    p = Progress(time_s=12.5, rounds=5, max_rounds=20, max_time_s=None, tokens=0, max_tokens=None, loss=2.345)
    assert progress_line(p, 30.0) == "sim 12.5 s | round 5/20 | loss 2.345 | wall 30s | ETA 1m30s (25%)"
    p = Progress(time_s=0.0, rounds=0, max_rounds=None, max_time_s=None, tokens=0, max_tokens=None, loss=None)
    assert progress_line(p, 2.0).endswith("| ETA -")


def test_run_prints_progress_lines_when_not_on_a_terminal(tmp_path):
    """With stderr a pipe (a log file), `run` prints plain progress lines (--progress-every S wall
    seconds), each with the round, loss, wall time and ETA; --quiet prints none."""
    path = _write(tmp_path, _pair(run={"max_rounds": 3000}, h=1))
    cmd = [sys.executable, "-m", "sim.cli", "run", path, "--progress-every", "0.2"]
    proc = subprocess.run(cmd + ["--out", str(tmp_path / "a")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if "| ETA " in l]
    assert lines, proc.stderr
    assert all(l.startswith("pair: sim ") and "| round " in l and "/3000 |" in l and "| wall " in l for l in lines)
    quiet = subprocess.run(cmd + ["--out", str(tmp_path / "b"), "--quiet"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert quiet.returncode == 0 and "| ETA " not in quiet.stderr


def test_bandwidth_prints_the_table_and_json_only_when_asked(tmp_path, capsys):
    """`bandwidth` prints its table on stdout and no JSON; a target not reached anywhere on the grid is
    '>MAX' with a line saying what that means; --json FILE writes the JSON there; -o FILE.html writes a
    CU-vs-bandwidth chart with one line per method."""
    path = _write(tmp_path, _pair(run={"max_rounds": 4}))
    common = ["--cu", "0.5,0.999", "--grid-min", "0.5", "--grid-max", "8", "--grid-points", "5"]
    assert main(["bandwidth", path, *common]) == 0
    out = capsys.readouterr().out
    assert "CU 0.5" in out and "{" not in out
    assert ">8" in out and ">8: the target is not reached at any bandwidth of the grid, up to 8 Gbit/s" in out
    js, page = tmp_path / "bw.json", tmp_path / "bw.html"
    assert main(["bandwidth", path, *common, "--json", str(js), "-o", str(page)]) == 0
    out = capsys.readouterr().out
    data = json.loads(js.read_text())
    assert set(data["bandwidth_gbps_for_cu"]) == {"0.5", "0.999"} and data["bandwidth_gbps_for_cu"]["0.999"] is None
    html = page.read_text()
    assert 'id="bw-cu"' in html and f"JSON: {js}" in out and f"chart: {page}" in out
    from sim.report.bandwidth import bandwidth_figure
    from sim.scenario import load_scenario
    from sim.bandwidth import search

    res = search(load_scenario(path), [0.5], 0.5, 8, 5, 4, "steady")
    fig = bandwidth_figure({"diloco": res}, "steady")
    assert list(fig.data[0].x) == sorted(res.evaluations) and list(fig.data[0].y) == [
        res.evaluations[b] for b in sorted(res.evaluations)]
    assert main(["bandwidth", path, *common, "-o", str(tmp_path / "missing" / "x.html")]) == 2
    assert "no such directory" in capsys.readouterr().err
