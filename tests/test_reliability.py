"""Nothing a user runs is lost or overwritten (issue 13, "Data loss"): run directories are claimed
atomically before any work, variant names and sweep labels stay inside --out, compare never writes
over a run's files, a sweep directory is locked, SIGTERM and a full disk leave an honest manifest,
and a sweep's pool workers stop with their parent.

Runs here are timing-only (no torch) on one node, so each takes well under a second; "long" runs
have millions of rounds and are always stopped by a signal, never waited for. Conditions on other
processes are polled with generous timeouts; no assertion depends on how long anything took.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sim.cli import main
from sim.rundir import RUN_FILES, SweepLock, SweepLocked
from sim.runner import Simulation
from sim.scenario import ScenarioError, load_scenario, load_variants
from sim.sweep.plan import plan_sweep
from sim.sweep.run import run_sweep
from sim.writer import run_to_dir

ROOT = Path(__file__).resolve().parents[1]
BAD_DOTDOT = ROOT / "tests" / "fixtures" / "bad" / "variant_name_dotdot.yaml"
LONG = 2_000_000  # rounds: a run that a signal ends long before it would (about 100 s on 2 CPU cores)

SCENARIO = """\
name: {name}
seed: 0
topology:
  regions:
    - {{name: a, nodes: 1}}
  links: []
  intra_region: {{bandwidth_gbps: 1000.0, latency_s: 0.00001}}
timing: {{params: 1.0e6, layers: 2, step_time_s: 0.1}}
numerics: false
algorithm: {{name: ddp}}
run:
  max_rounds: {rounds}
"""


def write_scenario(tmp_path: Path, name: str = "tiny", rounds: int = 3, variants: str = "") -> Path:
    """A timing-only, one-node ddp scenario (no torch) written into tmp_path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(SCENARIO.format(name=name, rounds=rounds) + variants)
    return path


_PROCS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _clean_up():
    """main() installs a SIGTERM handler: give pytest its own back after each test. And kill
    whatever a failed test left running (each command is its own process group, workers too)."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)
    while _PROCS:
        proc = _PROCS.pop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=60)


def cli_proc(*args: str, cwd: Path = ROOT) -> subprocess.Popen:
    """`locosim ARGS` in its own session (signals sent to it never reach pytest)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _PROCS.append(proc)
    return proc


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = cli_proc(*args)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(cond, what: str, proc: subprocess.Popen | None = None, timeout_s: float = 180.0):
    """Poll ``cond()`` until it is truthy; on timeout kill ``proc`` and fail with its stderr."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    err = ""
    if proc is not None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        err = proc.communicate(timeout=60)[1]
    raise AssertionError(f"timed out waiting for {what}; stderr: {err[-2000:]}")


def manifest(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def started(run_dir: Path) -> bool:
    """The run itself started: its real manifest (not a claim placeholder) says running."""
    m = manifest(run_dir)
    return bool(m) and m["status"] == "running" and "scenario" in m


def run_dirs(out: Path) -> dict[str, dict | None]:
    return {d.name: manifest(d) for d in sorted(out.iterdir()) if d.is_dir()} if out.is_dir() else {}


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return "\nState:\tZ" not in status


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------- 1. atomic run directories
class _FrozenClock:
    """Stands in for sim.cli's datetime module: every call is in the same second."""

    class datetime:
        @staticmethod
        def now(tz=None):
            import datetime as dt

            return dt.datetime(2026, 1, 2, 3, 4, 5)


def test_two_runs_in_the_same_second_without_out_get_two_directories(tmp_path, monkeypatch, capsys):
    """Two runs started in the same second without --out get NAME-TIMESTAMP and NAME-TIMESTAMP-2;
    neither replaces the other."""
    yaml = write_scenario(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sim.cli._dt", _FrozenClock)
    assert main(["run", str(yaml), "--quiet"]) == 0
    first = tmp_path / "runs" / "tiny-20260102-030405"
    before = (first / "manifest.json").read_bytes()
    assert main(["run", str(yaml), "--quiet", "--set", "run.max_rounds=2"]) == 0
    second = tmp_path / "runs" / "tiny-20260102-030405-2"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [first.name, second.name]
    assert (first / "manifest.json").read_bytes() == before
    assert json.loads((first / "summary.json").read_text())["rounds"] == 3
    assert json.loads((second / "summary.json").read_text())["rounds"] == 2
    assert "dashboard: runs/tiny-20260102-030405-2/dashboard.html" in capsys.readouterr().out


def test_the_same_out_given_to_three_runs_at_once_goes_to_exactly_one(tmp_path):
    """Three `locosim run --out X` started together: exactly one runs into X (exit 0), the others
    are refused with one line (exit 2), and X holds one completed run."""
    yaml = write_scenario(tmp_path)
    out = tmp_path / "same"
    procs = [cli_proc("run", str(yaml), "--out", str(out), "--quiet") for _ in range(3)]
    results = [(p.wait(timeout=300), *p.communicate(timeout=60)) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2, 2], results
    for code, _, err in results:
        if code == 2:
            assert one_error_line(err).startswith(f"error: --out {out}:")
    assert manifest(out)["status"] == "completed"
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)


def test_out_and_each_variant_directory_are_claimed_before_the_build(tmp_path, monkeypatch):
    """By the time a simulation is built, --out and every OUT/<variant> already exist and each
    variant's directory holds a placeholder manifest naming this process."""
    seen = []
    original = Simulation.__init__

    def spy(self, sc):
        seen.append({v: manifest(tmp_path / "o" / v) for v in ("x", "y")})
        original(self, sc)

    monkeypatch.setattr(Simulation, "__init__", spy)
    yaml = write_scenario(tmp_path, variants="variants:\n  x: {}\n  y: {run: {max_rounds: 2}}\n")
    assert main(["run", str(yaml), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    first = seen[0]
    for v in ("x", "y"):
        assert first[v]["status"] == "starting"
        assert first[v]["claim"] == {"pid": os.getpid(), "host": platform.node()}
        assert manifest(tmp_path / "o" / v)["status"] == "completed"


def test_bad_input_found_while_building_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A scenario refused while building (after the directory was claimed) exits 2 with one line
    and releases the claim: neither --out nor a default directory is left behind."""
    def refuse(self, sc):
        raise ValueError("model.d_model: refused for this test")

    monkeypatch.setattr(Simulation, "__init__", refuse)
    monkeypatch.chdir(tmp_path)
    yaml = write_scenario(tmp_path, variants="variants:\n  x: {}\n  y: {}\n")
    assert main(["run", str(yaml), "--out", str(tmp_path / "deep" / "o"), "--quiet"]) == 2
    assert main(["run", str(yaml), "--quiet"]) == 2
    assert one_error_line(capsys.readouterr().err.splitlines()[0]).startswith("error: variants.x: model.d_model")
    assert not (tmp_path / "deep").exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("where", ["afile/run", "afile"])
def test_an_out_that_cannot_be_claimed_is_one_line(tmp_path, capsys, where):
    """--out under a file (or a file itself) exits 2 with one line naming --out; the file stays."""
    (tmp_path / "afile").write_text("precious")
    out = tmp_path / where
    assert main(["run", str(write_scenario(tmp_path)), "--out", str(out), "--quiet"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: --out {out}: ")
    assert (tmp_path / "afile").read_text() == "precious"


def test_sigterm_while_building_exits_143_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """SIGTERM (here raised as sim.rundir.Terminated, as the handler does) while the simulation is
    being built exits 143 with one line, and the claimed directory is released."""
    from sim.signals import Terminated

    def terminated(self, sc):
        raise Terminated("terminated by SIGTERM")

    monkeypatch.setattr(Simulation, "__init__", terminated)
    out = tmp_path / "o"
    assert main(["run", str(write_scenario(tmp_path)), "--out", str(out), "--quiet"]) == 143
    assert one_error_line(capsys.readouterr().err) == "terminated (SIGTERM) before the run started; nothing written"
    assert not out.exists()


# ------------------------------------------------------------------- 2. names stay one path component
@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "-flag", "x" * 65, "ok\n"])
def test_variant_names_that_are_not_one_safe_path_component_are_refused(tmp_path, name):
    """A variant name that is not one safe path component ('..', '.', hidden, with a slash,
    flag-like, over 64 characters) is refused with one line naming variants.<name>."""
    yaml = write_scenario(tmp_path, variants=f"variants:\n  {json.dumps(name)}: {{}}\n")
    with pytest.raises(ScenarioError) as info:
        load_variants(yaml)
    msg = str(info.value)
    assert msg.startswith("variants.") and "a variant name becomes a directory name" in msg
    assert "\n" not in msg


def test_a_variant_named_dotdot_writes_nothing_over_a_sibling_run(tmp_path, capsys):
    """`run --out parent/new` of a file with a variant '..' exits 2 (one line naming the field) and
    the finished run next to it in parent/ is untouched."""
    parent = tmp_path / "runs"
    finished = parent / "finished"
    finished.mkdir(parents=True)
    (finished / "manifest.json").write_text('{"status": "completed"}')
    assert main(["run", str(BAD_DOTDOT), "--out", str(parent / "new"), "--quiet"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith('error: variants."..":')
    assert sorted(p.name for p in parent.iterdir()) == ["finished"]
    assert (finished / "manifest.json").read_text() == '{"status": "completed"}'


def test_sweep_labels_make_one_path_component(tmp_path):
    """A grid key like `faults.node_step_time_multiplier.a/0` and a value with '/' and '..' still
    give run ids that are one path component; the sweep writes only OUT/<run_id>/ directories."""
    yaml = write_scenario(tmp_path)
    grid = {"faults.node_step_time_multiplier.a/0": [1.0, 1.5], "name": ["../up"]}
    plan = plan_sweep(yaml, grid, [0])
    assert len(plan.runs) == 2
    for r in plan.runs:
        assert "/" not in r.run_id and "\\" not in r.run_id and not r.run_id.startswith((".", "-"))
        assert Path(r.run_id).name == r.run_id and len(r.run_id) < 255
    out = tmp_path / "sw"
    res = run_sweep(plan, out)
    assert (res.done, res.failed) == (2, 0)
    assert sorted(d.name for d in out.iterdir() if d.is_dir()) == sorted(r.run_id for r in plan.runs)
    assert all(manifest(out / r.run_id)["status"] == "completed" for r in plan.runs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sw", "tiny.yaml"]


def test_sweep_labels_are_bounded_in_length(tmp_path):
    """A very long grid value still gives a run id short enough for a file name, and distinct
    values stay distinct (the hash of the resolved scenario follows the label)."""
    yaml = write_scenario(tmp_path)
    plan = plan_sweep(yaml, {"name": ["n" * 300 + "a", "n" * 300 + "b"]}, [0])
    ids = [r.run_id for r in plan.runs]
    assert len(set(ids)) == 2 and all(len(i) < 200 for i in ids)


# ------------------------------------------------------------------- 3. compare never writes over a run
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    run_to_dir(Simulation(load_scenario(write_scenario(tmp_path_factory.mktemp("yaml")))), out)
    return out


@pytest.mark.parametrize("name", RUN_FILES)
def test_compare_refuses_to_write_over_a_run_file(finished_run, tmp_path, name, capsys):
    """`compare RUN -o RUN/<its own file>` exits 2 with one line and leaves the file as it was."""
    run = shutil.copytree(finished_run, tmp_path / "run")
    before = (run / name).read_bytes()
    assert main(["compare", str(run), "-o", str(run / name)]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {run / name}: is the {name} of run directory")
    assert (run / name).read_bytes() == before


def test_compare_rewrites_its_own_page_but_no_other_file_in_a_run_or_sweep_dir(finished_run, tmp_path, capsys):
    """In a run directory compare may write a new page and later overwrite that page, but not a
    file it did not write (also through a symlink); in a sweep directory not the index."""
    run = shutil.copytree(finished_run, tmp_path / "run")
    page = run / "compare.html"
    assert main(["compare", str(run), "-o", str(page)]) == 0
    assert main(["compare", str(run), "-o", str(page)]) == 0
    assert "<title>locosim compare: " in page.read_text()[:2048]
    notes = run / "notes.txt"
    notes.write_text("mine")
    link = tmp_path / "link.html"
    link.symlink_to(run / "manifest.json")
    capsys.readouterr()
    assert main(["compare", str(run), "-o", str(notes)]) == 2
    assert "is not a compare page" in one_error_line(capsys.readouterr().err)
    assert main(["compare", str(run), "-o", str(link)]) == 2
    assert "is the manifest.json of run directory" in one_error_line(capsys.readouterr().err)
    assert notes.read_text() == "mine" and manifest(run)["status"] == "completed"
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "index.parquet").write_bytes(b"PAR1")
    assert main(["compare", str(run), "-o", str(sweep / "index.parquet")]) == 2
    assert (sweep / "index.parquet").read_bytes() == b"PAR1"


# ------------------------------------------------------------------- 4. one sweep per directory
def test_a_second_sweep_on_a_running_sweep_is_refused_and_deletes_nothing(tmp_path):
    """While a sweep runs, the same sweep started again on its directory exits 2 with one line
    naming the owner's pid, and the first sweep's run in progress is still there, still running."""
    yaml = write_scenario(tmp_path, rounds=LONG)
    out = tmp_path / "sw"
    args = ["sweep", str(yaml), "--seeds", "0..1", "--out", str(out), "--quiet"]
    first = cli_proc(*args)
    try:
        running = wait_for(lambda: [d for d in out.glob("*/") if started(d)], "the first sweep's run", first)[0]
        pid = manifest(running)["pid"]
        second = cli(*args)
        assert second.returncode == 2, second.stderr
        line = one_error_line(second.stderr)
        assert "in use by a running sweep" in line and f"pid {first.pid}" in line
        assert started(running) and manifest(running)["pid"] == pid
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGINT)
        first.communicate(timeout=180)
    assert first.returncode == 130
    assert manifest(running)["status"] == "interrupted"


def test_a_held_sweep_lock_refuses_before_touching_anything(tmp_path):
    """run_sweep on a directory whose lock another holder has raises SweepLocked and leaves an
    unfinished run (which resuming would delete) in place."""
    yaml = write_scenario(tmp_path)
    plan = plan_sweep(yaml, None, [0])
    out = tmp_path / "sw"
    victim = out / plan.runs[0].run_id
    victim.mkdir(parents=True)
    (victim / "manifest.json").write_text('{"status": "running"}')
    with SweepLock(out):
        with pytest.raises(SweepLocked):
            run_sweep(plan, out)
    assert manifest(victim) == {"status": "running"}
    assert run_sweep(plan, out).done == 1  # once the holder is gone, the sweep resumes normally


def test_a_stale_sweep_lock_is_taken_over_with_a_note(tmp_path):
    """A lock left by a sweep that died (its pid no longer runs) is taken over; the note names the
    dead pid; after the sweep the lock file names nobody."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    yaml = write_scenario(tmp_path)
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.lock").write_text(json.dumps({"pid": dead.pid, "host": platform.node()}))
    notes = []
    res = run_sweep(plan_sweep(yaml, None, [0]), out, on_note=notes.append)
    assert res.done == 1
    assert len(notes) == 1 and "stale lock" in notes[0] and f"pid {dead.pid}" in notes[0]
    assert (out / "sweep.lock").read_text() == ""


# ------------------------------------------------------------------- 5. SIGTERM and a full disk
def test_sigterm_ends_a_run_like_ctrl_c(tmp_path):
    """SIGTERM during `locosim run` exits 143; the manifest says interrupted (by SIGTERM) and the
    tables and summary are written."""
    out = tmp_path / "r"
    proc = cli_proc("run", str(write_scenario(tmp_path, rounds=LONG)), "--out", str(out), "--quiet")
    wait_for(lambda: started(out), "the run to start", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err
    m = manifest(out)
    assert m["status"] == "interrupted" and m["error"] == "terminated by SIGTERM" and m["ended_at"]
    assert len(pd.read_parquet(out / "events.parquet")) > 0
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert "terminated (SIGTERM)" in err and "Traceback" not in err


def test_sigterm_ends_a_sweep_like_ctrl_c(tmp_path):
    """SIGTERM during `locosim sweep` (runs in this process) exits 143: the run in progress ends
    interrupted with its tables, no further run starts, and the index says so."""
    out = tmp_path / "sw"
    proc = cli_proc("sweep", str(write_scenario(tmp_path, rounds=LONG)), "--seeds", "0..2", "--out", str(out),
                    "--quiet")
    running = wait_for(lambda: [d for d in out.glob("*/") if started(d)], "the first run", proc)[0]
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err
    assert list(run_dirs(out)) == [running.name]
    assert manifest(running)["status"] == "interrupted" and (running / "events.parquet").exists()
    index = pd.read_parquet(out / "index.parquet")
    assert sorted(index["status"]) == ["interrupted", "pending", "pending"]
    assert "0 done, 0 failed, 0 skipped of 3 runs" in stdout


def _full_disk(path: Path, *_a, **_k):
    """Write half a file, as a full disk does, then fail like one."""
    path.write_bytes(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_the_dashboard_marks_the_run_failed(tmp_path, monkeypatch):
    """When the dashboard cannot be written (ENOSPC), the run raises, its manifest says failed
    with the reason, no .tmp file is left, and the tables written before are kept."""
    def dashboard(path, *args):
        _full_disk(Path(path).with_name(Path(path).name + ".tmp"))

    monkeypatch.setattr("sim.report.dashboard.write_dashboard", dashboard)
    out = tmp_path / "r"
    with pytest.raises(OSError):
        run_to_dir(Simulation(load_scenario(write_scenario(tmp_path))), out)
    m = manifest(out)
    assert m["status"] == "failed" and "No space left on device" in m["error"]
    assert not list(out.glob("*.tmp"))
    assert {"events.parquet", "metrics.parquet", "summary.json"} <= {p.name for p in out.iterdir()}
    assert "dashboard.html" not in m["files"]


def test_a_disk_full_for_every_new_file_still_ends_the_manifest_failed(tmp_path, monkeypatch):
    """Once the run has ended, every new file fails (tables, summary, even the manifest's .tmp):
    the manifest is still rewritten in place to say failed, and no .tmp file is left."""
    full = {"now": False}
    write_text = Path.write_text

    def to_parquet(self, path, *a, **k):
        full["now"] = True
        _full_disk(Path(path))

    def guarded_write_text(self, *a, **k):
        if full["now"] and self.name.endswith(".tmp"):
            _full_disk(self)
        return write_text(self, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
    monkeypatch.setattr(Path, "write_text", guarded_write_text)
    out = tmp_path / "r"
    with pytest.raises(OSError):
        run_to_dir(Simulation(load_scenario(write_scenario(tmp_path))), out)
    m = manifest(out)
    assert m["status"] == "failed" and "No space left on device" in m["error"] and m["ended_at"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


# ------------------------------------------------------------------- 6. pool workers and the parent
def _mixed_sweep(tmp_path: Path) -> tuple[list[str], Path]:
    """3 short runs then 3 long ones, on 2 workers: when both long runs have started, the short
    ones are done and one long run is still queued."""
    out = tmp_path / "sw"
    args = ["sweep", str(write_scenario(tmp_path)), "--grid", f"run.max_rounds=2,{LONG}", "--seeds", "0..2",
            "--workers", "2", "--out", str(out), "--quiet"]
    return args, out


def _two_long_runs_started(out: Path) -> list[Path]:
    dirs = run_dirs(out)
    long_started = [out / d for d, m in dirs.items() if m and m.get("scenario", {}).get("run", {}).get("max_rounds")
                    == LONG and m["status"] == "running"]
    done = [d for d, m in dirs.items() if m and m["status"] == "completed"]
    return long_started if len(long_started) == 2 and len(done) == 3 else []


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_sweep_queue_at_once(tmp_path, how):
    """Ctrl-C (SIGINT to the whole process group) or SIGTERM (to the sweep process only) with
    --workers 2: the two runs in progress end interrupted with their tables, the queued run never
    starts, the exit code is 130 / 143, and the printed counts equal index.parquet's."""
    args, out = _mixed_sweep(tmp_path)
    proc = cli_proc(*args)
    long_runs = wait_for(lambda: _two_long_runs_started(out), "two long runs in progress", proc)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=240)
    assert proc.returncode == (130 if how == "ctrl-c" else 143), err
    assert "Traceback" not in err
    dirs = run_dirs(out)
    assert len(dirs) == 5  # the sixth run was queued and never started
    for d in long_runs:
        assert manifest(d)["status"] == "interrupted" and (d / "events.parquet").exists()
    index = pd.read_parquet(out / "index.parquet")
    counts = index["status"].value_counts().to_dict()
    assert counts == {"completed": 3, "interrupted": 2, "pending": 1}
    assert f"{counts['completed']} done, {counts.get('failed', 0)} failed, 0 skipped of 6 runs" in stdout


def test_sweep_workers_die_with_a_killed_parent(tmp_path):
    """SIGKILL of `locosim sweep --workers 2`: its workers end their runs as interrupted and exit
    (so the output pipes close), and the queued run never starts."""
    args, out = _mixed_sweep(tmp_path)
    proc = cli_proc(*args)
    long_runs = wait_for(lambda: _two_long_runs_started(out), "two long runs in progress", proc)
    workers = {manifest(d)["pid"] for d in long_runs}
    assert len(workers) == 2 and proc.pid not in workers
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=240)  # returns only once every holder of the pipes (the workers) is gone
    wait_for(lambda: not any(alive(pid) for pid in workers), "the workers to exit")
    assert len(run_dirs(out)) == 5
    for d in long_runs:
        assert manifest(d)["status"] == "interrupted"
