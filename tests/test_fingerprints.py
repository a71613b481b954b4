"""Issue 24 (fingerprints): a run's manifest records the sha256 of every plug-in source file and
data file it read; ``compare`` never puts runs of different versions in one replication group,
and a sweep reruns exactly the runs whose files changed, saying so (sim/fingerprint.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from sim.fingerprint import digest, differences, fingerprints, plugin_files, stale_reason
from sim.runner import Simulation
from sim.scenario import load_scenario
from sim.writer import run_to_dir
from tests.conftest import ROOT, TINY

SMALL = TINY + ["run.device=cpu", "run.max_rounds=1", "algorithm.inner_steps=2"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _method_scenario(tmp_path: Path, variants: bool = False) -> Path:
    """examples/fedavg.yaml with its plug-in copied beside it as fa.py (and fb.py for variant b)."""
    shutil.copy(ROOT / "examples" / "fedavg.py", tmp_path / "fa.py")
    text = (ROOT / "examples" / "fedavg.yaml").read_text().replace("plugin: fedavg.py:FedAvg", "plugin: fa.py:FedAvg")
    if variants:
        shutil.copy(ROOT / "examples" / "fedavg.py", tmp_path / "fb.py")
        text += "variants:\n  a: {}\n  b: {algorithm: {plugin: fb.py:FedAvg}}\n"
    (tmp_path / "s.yaml").write_text(text)
    return tmp_path / "s.yaml"


def _run(path: Path, out: Path, extra: list[str] = ()) -> dict:
    sim = Simulation(load_scenario(path, SMALL + list(extra)))
    run_to_dir(sim, out)
    return json.loads((out / "manifest.json").read_text())


def test_the_manifest_records_the_sha256_of_the_plugin_it_ran(tmp_path):
    """The manifest's fingerprints hold, for algorithm.plugin, the plug-in file's path and the
    sha256 of its bytes (hashlib over the file, independently)."""
    path = _method_scenario(tmp_path)
    manifest = _run(path, tmp_path / "run")
    assert manifest["fingerprints"] == {"algorithm.plugin": {str((tmp_path / "fa.py").resolve()): _sha(tmp_path / "fa.py")}}


def test_data_files_and_file_arguments_are_fingerprinted(tmp_path):
    """A text data file (data.path) and a plug-in argument naming a file are fingerprinted, with
    the data plug-in's own source; a built-in scenario reads no such file and records none."""
    (tmp_path / "book.txt").write_text(" ".join(f"w{i % 37}" for i in range(4000)))
    ref = f"{ROOT / 'examples' / 'word_data.py'}:WordText"
    scenario = {"algorithm": {"name": "diloco"},
                "model": {"kind": "gpt"},
                "data": {"kind": "plugin", "plugin": ref, "args": {"path": str(tmp_path / "book.txt"), "n": 3}}}
    fps = fingerprints(scenario)
    assert fps == {"data.plugin": {str(ROOT / "examples" / "word_data.py"): _sha(ROOT / "examples" / "word_data.py")},
                   "data.args.path": {str(tmp_path / "book.txt"): _sha(tmp_path / "book.txt")}}
    text = load_scenario(ROOT / "scenarios" / "quickstart.yaml",
                         [f"data={{kind: text, path: {tmp_path / 'book.txt'}}}"]).model_dump(mode="json")
    assert fingerprints(text) == {"data.path": {str(tmp_path / "book.txt"): _sha(tmp_path / "book.txt")}}
    built_in = load_scenario(ROOT / "scenarios" / "quickstart.yaml").model_dump(mode="json")
    assert fingerprints(built_in) == {}


def test_a_package_plugin_is_fingerprinted_by_its_module_files(tmp_path, monkeypatch):
    """For ``package.module:Name`` the module's file is hashed (a package: all its .py files);
    locosim's own modules (methods it ships as plug-ins) are identified by its version instead."""
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "meth.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugin_files("mypkg.meth:X") == [pkg / "meth.py"]
    assert plugin_files("mypkg:X") == [pkg / "__init__.py", pkg / "meth.py"]
    assert plugin_files("sim.algorithms.fedavg:FedAvg") == []


def test_digest_depends_on_content_not_location():
    """Two records of equal file contents at different paths have one digest; a changed content
    gives another, and ``differences`` names the field and the file."""
    a = {"algorithm.plugin": {"/x/fa.py": "11"}}
    b = {"algorithm.plugin": {"/y/fa.py": "11"}}
    c = {"algorithm.plugin": {"/x/fa.py": "22"}}
    assert digest(a) == digest(b) != digest(c) and digest(None) == digest({}) == ""
    assert differences(a, c) == ["algorithm.plugin (fa.py)"] and differences(a, b) == []


def test_compare_shows_two_versions_of_a_plugin_as_two_groups(tmp_path):
    """Two seed-0 runs of one scenario with the plug-in edited between them are two groups, not
    '2 seeds' with seeds 0, 0, and the page and the command say why; two seeds of one version
    stay one group."""
    from sim.report.compare import load_groups, write_compare
    from sim.report.runs import split_note

    path = _method_scenario(tmp_path)
    _run(path, tmp_path / "v1")
    _run(path, tmp_path / "v1s1", ["seed=1"])
    with open(tmp_path / "fa.py", "a") as f:
        f.write("\nVERSION = 2  # an edit of the method's file\n")
    _run(path, tmp_path / "v2")
    same = load_groups([tmp_path / "v1", tmp_path / "v1s1"])
    assert len(same) == 1 and same[0].seeds == [0, 1] and split_note(same) is None
    groups = load_groups([tmp_path / "v1", tmp_path / "v2"])
    assert [g.seeds for g in groups] == [[0], [0]]
    note = split_note(groups)
    assert note is not None and "algorithm.plugin (fa.py)" in note and "v2 is not a replication of v1" in note
    out, _groups, printed = write_compare([tmp_path / "v1", tmp_path / "v2"], tmp_path / "cmp.html")
    assert "algorithm.plugin (fa.py)" in printed and "split-note" in out.read_text()


def test_a_sweep_after_an_edit_reruns_exactly_the_changed_runs(tmp_path, capsys):
    """Variants a (fa.py) and b (fb.py) over seeds 0, 1: after fa.py is edited, a second sweep
    reruns the two runs of a (saying so, with the new fingerprint in their manifests) and
    skips the two of b, whose directories are untouched."""
    from sim.sweep.plan import plan_sweep
    from sim.sweep.run import run_sweep

    path = _method_scenario(tmp_path, variants=True)
    out = tmp_path / "sw"
    plan = plan_sweep(path, seeds=[0, 1], overrides=SMALL)
    first = run_sweep(plan, out)
    assert first.done == 4 and first.skipped == 0
    before = {r.run_id: (out / r.run_id / "manifest.json").read_text() for r in plan.runs}
    again = run_sweep(plan_sweep(path, seeds=[0, 1], overrides=SMALL), out)
    assert again.skipped == 4 and again.done == 0  # nothing changed: nothing rerun
    capsys.readouterr()
    with open(tmp_path / "fa.py", "a") as f:
        f.write("\nVERSION = 2\n")
    plan = plan_sweep(path, seeds=[0, 1], overrides=SMALL)
    res = run_sweep(plan, out)
    err = capsys.readouterr().err
    changed = sorted(r.run_id for r in plan.runs if r.params["variant"] == "a")
    kept = sorted(r.run_id for r in plan.runs if r.params["variant"] == "b")
    assert res.done == 2 and res.skipped == 2
    assert sorted(line.split()[2] for line in err.splitlines() if line.startswith("sweep: running")) == changed
    assert all("algorithm.plugin (fa.py) changed since it ran" in line for line in err.splitlines()
               if line.startswith("sweep: running"))
    for run_id in kept:
        assert (out / run_id / "manifest.json").read_text() == before[run_id]
    for run_id in changed:
        m = json.loads((out / run_id / "manifest.json").read_text())
        assert m["status"] == "completed"
        assert list(m["fingerprints"]["algorithm.plugin"].values()) == [_sha(tmp_path / "fa.py")]


def test_a_finished_run_without_fingerprints_is_stale_only_if_it_reads_files(tmp_path):
    """A manifest written before fingerprints existed: done for a scenario that reads no plug-in
    or data file, not done (never reused) for one that does."""
    (tmp_path / "m.py").write_text("X = 1\n")
    assert stale_reason({"status": "completed"}, {"algorithm": {"name": "diloco"}}) is None
    why = stale_reason({"status": "completed"}, {"algorithm": {"name": "x", "plugin": f"{tmp_path / 'm.py'}:X"}})
    assert why == "it recorded no fingerprints of the files it read"


# --------------------------------------------------------------------------- plug-in args that name files
def test_path_annotated_parameters_are_found():
    """A constructor's or function's parameters annotated Path, Path | None or Optional[Path]
    (also as strings, under ``from __future__ import annotations``) are path parameters;
    str, int and unannotated ones are not."""
    from typing import Optional

    from sim.paths import path_params

    class Data:
        def __init__(self, seq_len, n_workers, seed, a: Path, b: Path | None = None, c: Optional[Path] = None,
                     d: str = "x", e: int = 1, f="y", g: "Path | None" = None):
            pass

    def make(seq_len, n_workers, seed, corpus: Path, name: str = ""):
        return None

    assert path_params(Data) == {"a", "b", "c", "g"}
    assert path_params(make) == {"corpus"}


def test_word_data_reads_its_file_relative_to_the_scenario_from_another_directory(tmp_path):
    """examples/word_data.py with ``args: {path: book.txt}`` (a Path-typed argument) reads the
    book beside the scenario file when locosim runs in another directory; the manifest's
    resolved scenario holds the absolute path, and its fingerprints the book's sha256."""
    import os
    import subprocess
    import sys

    scen = tmp_path / "scen"
    scen.mkdir()
    (scen / "book.txt").write_text(" ".join(f"w{i % 37}" for i in range(4000)))
    shutil.copy(ROOT / "examples" / "word_data.py", scen / "word_data.py")
    text = (ROOT / "scenarios" / "quickstart.yaml").read_text().replace(
        "data: {kind: synthetic, vocab_size: 32, order: 2, branching: 3}",
        "data: {kind: plugin, plugin: word_data.py:WordText, args: {path: book.txt}}")
    (scen / "s.yaml").write_text(text)
    sc = load_scenario(scen / "s.yaml", ["data.args.eval_fraction=0.2"])
    assert sc.data.args == {"path": str((scen / "book.txt").resolve()), "eval_fraction": 0.2}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sets = sum((["--set", s] for s in SMALL), [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", "../scen/s.yaml", "--out", "out", "--quiet", *sets],
                          cwd=elsewhere, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((elsewhere / "out" / "manifest.json").read_text())
    book = (scen / "book.txt").resolve()
    assert manifest["scenario"]["data"]["args"]["path"] == str(book)
    assert manifest["fingerprints"]["data.args.path"] == {str(book): _sha(book)}
    assert manifest["status"] == "completed"
