"""The run directory's contract (``sim.rundir``): ``settle`` gives an ending only to a run that
has none, the typed manifest writes exactly the keys its stage has, and ``run_to_dir`` returns
the summary it wrote, equal to the file."""

from __future__ import annotations

import json
import math

from sim.rundir import (MANIFEST, STATUS_COMPLETED, STATUS_FAILED, STATUS_INTERRUPTED, STATUS_RUNNING, SUMMARY,
                        Manifest, read_manifest, settle, status_of, write_json, write_manifest)


def _manifest(**kw) -> Manifest:
    base = dict(name="n", status=STATUS_RUNNING, scenario={"topology": {"bw": math.inf}}, source=None,
                fingerprints={}, seed=0, versions={}, git_revision=None, device="cpu", host="h", pid=1,
                started_at="t0")
    return Manifest(**{**base, **kw})


def test_settle_marks_a_running_run_and_keeps_the_rest_of_its_manifest(tmp_path):
    """A manifest that still says running gets the given status and error; its other keys stay."""
    write_json(tmp_path / MANIFEST, {"status": STATUS_RUNNING, "name": "x", "seed": 3})
    settle(tmp_path, STATUS_FAILED, "the worker process died (exit code 9)")
    assert read_manifest(tmp_path) == {"status": STATUS_FAILED, "name": "x", "seed": 3,
                                       "error": "the worker process died (exit code 9)"}


def test_settle_leaves_a_run_that_wrote_its_own_ending_alone(tmp_path):
    """A manifest with a final status (here completed) is not changed by settle."""
    write_json(tmp_path / MANIFEST, {"status": STATUS_COMPLETED, "error": None})
    before = (tmp_path / MANIFEST).read_bytes()
    settle(tmp_path, STATUS_INTERRUPTED, "the worker process was stopped")
    assert (tmp_path / MANIFEST).read_bytes() == before


def test_settle_creates_a_directory_only_when_asked(tmp_path):
    """Without create a missing run directory stays missing; with it, the directory holds a
    manifest of just the status and the error."""
    settle(tmp_path / "gone", STATUS_INTERRUPTED, "stopped")
    assert not (tmp_path / "gone").exists()
    settle(tmp_path / "new", STATUS_FAILED, "ValueError: bad", create=True)
    assert read_manifest(tmp_path / "new") == {"status": STATUS_FAILED, "error": "ValueError: bad"}
    assert status_of(tmp_path / "new") == STATUS_FAILED and status_of(tmp_path / "gone") is None


def test_the_manifest_writes_the_keys_of_its_stage_and_infinity_as_text(tmp_path):
    """A running manifest has no traceback, diagnostic labels, diverged or ended_early; once ended
    it has diverged and ended_early (null or not); an infinite scenario value is written as "inf"
    and the file is strict JSON."""
    m = _manifest()
    write_manifest(tmp_path, m)
    text = (tmp_path / MANIFEST).read_text()
    running = json.loads(text)
    assert not {"traceback", "diagnostic_labels", "diverged", "ended_early"} & set(running)
    assert running["scenario"] == {"topology": {"bw": "inf"}} and "Infinity" not in text
    assert m["scenario"]["topology"]["bw"] == math.inf and m["status"] == STATUS_RUNNING
    m.status, m.ended_at, m.wall_s = STATUS_COMPLETED, "t1", float("nan")
    write_manifest(tmp_path, m)
    ended = json.loads((tmp_path / MANIFEST).read_text())
    assert ended["diverged"] is None and ended["ended_early"] is None and ended["wall_s"] is None
    assert list(ended)[:len(running)] == list(running)  # the keys keep their order


def test_run_to_dir_returns_the_summary_it_wrote(tmp_path):
    """The summary on the returned manifest, written as JSON, equals summary.json (the CLI prints
    from it without reading the file back), and the returned manifest equals manifest.json."""
    from sim.runner import Simulation
    from sim.scenario import load_scenario
    from sim.writer import run_to_dir
    from tests.conftest import ROOT, TINY

    sc = load_scenario(ROOT / "scenarios" / "quickstart.yaml", TINY + ["run.device=cpu", "run.max_tokens=null",
                                                                       "run.eval_every_steps=null", "run.max_rounds=2"])
    m = run_to_dir(Simulation(sc), tmp_path / "r")
    write_json(tmp_path / "again.json", m.summary)
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads((tmp_path / "r" / SUMMARY).read_text())
    write_json(tmp_path / "m.json", m.on_disk())
    assert json.loads((tmp_path / "m.json").read_text()) == read_manifest(tmp_path / "r")
    assert m.summary.rounds == 2 and m.summary.status == m.status == STATUS_COMPLETED
