"""Issue 13: every bad input is refused before work starts, with one line naming the field.

`validate` runs the same pre-work checks as `run` (sim.checks.check_before_work); amounts are
estimated before anything is allocated; YAML that is not plain data, contradictions and
values that would break the clock mid-run are refused; unbounded work is refused by an
event estimate; a run that cannot progress says what stopped it; `compare` reads malformed
run files as one line. Bad-input fixtures are one file each under tests/fixtures/bad/
(schema-level, also checked by tests/test_scenario.py) and tests/fixtures/bad/prework/
(accepted by the schema, refused by the pre-work checks).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.scenario import ScenarioError, apply_overrides, load_scenario, read_yaml
from tests.test_cli import assert_one_line_bad_input, cli

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "fixtures" / "bad"
PREWORK = BAD / "prework"
QUICKSTART = "scenarios/quickstart.yaml"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# fixture -> the field its one-line refusal starts with
PREWORK_PREFIX = {
    "text_empty": "data.path:",
    "text_not_utf8": "data.path:",
    "seq_len_huge": "run: the numerics need about",
    "memory_limit": "run: the numerics need about",
    "device_cuda": "run.device:",
    "kernels_triton": "run.kernels:",
    "failures_mtbf_tiny": "faults.failures.mtbf_s:",
    "link_flaps_tiny": "faults.links.0.mtbf_s:",
    "eval_every_s_tiny": "run.eval_every_s:",
    "warm_start_huge": "algorithm.warm_start_steps:",
    "failures_faster_than_a_step": "faults.failures.mtbf_s: the run would never finish",
    "eval_every_s_weighted": "run.eval_every_s:",
    "eval_batch_size_memory": "run.eval_batch_size: the numerics need about",
    "eval_every_steps_weighted": "run.eval_every_steps: the run would simulate about",
}
NEEDS_NO_CUDA = {"device_cuda", "kernels_triton"}
PREWORK_FIXTURES = sorted(PREWORK.glob("*.yaml"))

# the schema-level fixtures this issue added (tests/test_scenario.py checks their messages)
SCHEMA_FIXTURES = ["duplicate_key", "yaml_date_value", "yaml_binary_value", "yaml_set_value", "yaml_alias_bomb",
                   "duplicate_link", "noloco_group_too_large", "fragment_layers_too_large", "latency_huge",
                   "straggler_mu_huge", "pareto_alpha_tiny", "bandwidth_csv_zero_forever", "nodes_too_many",
                   "workers_too_many", "synthetic_vocab_huge", "batch_huge"]


def _skip_without(stem: str) -> None:
    if stem in NEEDS_NO_CUDA and _cuda():
        pytest.skip("this machine has CUDA: the scenario is valid here")
    if stem == "kernels_triton" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("TRITON_INTERPRET is set: triton kernels may run on CPU here")


def test_every_prework_fixture_has_an_expectation():
    """Every pre-work fixture has an expected field, and every expectation a file."""
    assert {p.stem for p in PREWORK_FIXTURES} == set(PREWORK_PREFIX)
    for p in PREWORK_FIXTURES:
        assert p.read_text(encoding="utf-8").startswith("# defect: ")


# --------------------------------------------------------------------------- validate == run
@pytest.mark.parametrize("path", PREWORK_FIXTURES, ids=lambda p: p.stem)
def test_prework_fixture_passes_the_schema_and_fails_the_checks(path):
    """A pre-work fixture loads (the schema accepts it), and check_before_work and Simulation
    both refuse it with the same one-line message starting with the field."""
    from sim.checks import check_before_work
    from sim.runner import Simulation

    _skip_without(path.stem)
    sc = load_scenario(path)
    with pytest.raises(ValueError) as checked:
        check_before_work(sc)
    with pytest.raises(ValueError) as built:
        Simulation(sc)
    msg = str(checked.value)
    assert msg == str(built.value)
    assert "\n" not in msg and msg.startswith(PREWORK_PREFIX[path.stem]), msg


@pytest.mark.parametrize("path", PREWORK_FIXTURES, ids=lambda p: p.stem)
def test_validate_refuses_what_run_refuses(path):
    """`validate` on a pre-work fixture exits 2 with one line naming the field; with
    --schema-only it checks the schema alone and says ok."""
    _skip_without(path.stem)
    proc = cli("validate", str(path.relative_to(ROOT)))
    assert_one_line_bad_input(proc)
    assert proc.stderr.startswith("error: " + PREWORK_PREFIX[path.stem]), proc.stderr
    ok = cli("validate", str(path.relative_to(ROOT)), "--schema-only")
    assert ok.returncode == 0 and ": ok (" in ok.stdout, ok.stderr


@pytest.mark.parametrize("stem", ["text_not_utf8", "memory_limit", "warm_start_huge"])
def test_run_refuses_prework_fixture_and_writes_nothing(tmp_path, stem):
    """`run` on a pre-work fixture exits 2 with the same line as validate and creates no --out."""
    out = tmp_path / "out"
    proc = cli("run", str((PREWORK / f"{stem}.yaml").relative_to(ROOT)), "--out", str(out), "--quiet")
    assert_one_line_bad_input(proc)
    assert proc.stderr.startswith("error: " + PREWORK_PREFIX[stem]), proc.stderr
    assert not out.exists()


def test_validate_ok_reports_the_estimates():
    """`validate` on a good file runs the checks and reports the work and memory estimates."""
    proc = cli("validate", QUICKSTART)
    assert proc.returncode == 0, proc.stderr
    # 30 rounds x (H=20 steps + 3 per-layer parts of the 2-layer model's sync) x 4 workers, and
    # 2 + 600 / 20 evaluations of 4 x 32 / 16 step batches each
    assert f"about {30 * (20 + 2 + 1) * 4 + (2 + 30) * 8:,} events" in proc.stdout and " MB on cpu" in proc.stdout


@pytest.mark.parametrize("stem", SCHEMA_FIXTURES)
def test_run_refuses_schema_fixture_fast(tmp_path, stem):
    """`run` on each schema-level fixture of this issue exits 2 with one line, within seconds
    (nothing big is allocated: no 10M-node graph, no 37 GiB language table, no alias
    expansion), and creates no --out."""
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = cli("run", str((BAD / f"{stem}.yaml").relative_to(ROOT)), "--out", str(out), "--quiet", timeout=60)
    assert_one_line_bad_input(proc)
    assert time.monotonic() - t0 < 30
    assert not out.exists()


# --------------------------------------------------------------------------- estimate before allocating
def test_memory_is_checked_before_the_data_is_built(monkeypatch):
    """The memory check runs before the data setup allocates anything: with make_dataset made
    to explode, a scenario over its memory limit is still refused by the memory line."""
    import sim.training.data as data
    from sim.runner import Simulation

    def boom(*a, **k):
        raise AssertionError("the dataset was built before the memory check")

    monkeypatch.setattr(data, "make_dataset", boom)
    sc = load_scenario(PREWORK / "memory_limit.yaml")
    with pytest.raises(ValueError, match="run.memory_limit_gb"):
        Simulation(sc)


@pytest.mark.parametrize("nodes", [1_000_000, 10_000_000])
def test_huge_worker_counts_are_refused_by_the_schema_at_once(nodes):
    """1e6 or 1e7 workers are refused by the schema in well under a second (no graph built)."""
    t0 = time.monotonic()
    with pytest.raises(ScenarioError, match=r"^topology.regions.0.nodes:"):
        load_scenario(ROOT / QUICKSTART, [f"topology.regions.0.nodes={nodes}"])
    assert time.monotonic() - t0 < 1.0


def test_synthetic_language_table_is_bounded():
    """GPT-2's vocabulary as a synthetic order-1 language is refused with its size in GiB;
    the shipped default (31 symbols, order 2) is far inside the bound."""
    with pytest.raises(ScenarioError, match=r"^data.vocab_size: .*37.6 GiB"):
        load_scenario(BAD / "synthetic_vocab_huge.yaml")
    assert load_scenario(ROOT / QUICKSTART).data.vocab_size == 32


# --------------------------------------------------------------------------- YAML
def test_alias_bomb_is_refused_quickly_before_any_copy():
    """A 1 KB alias bomb (10^9 values once expanded) is refused in seconds, before
    apply_overrides or a variant merge copies it."""
    path = BAD / "yaml_alias_bomb.yaml"
    assert path.stat().st_size < 2048
    t0 = time.monotonic()
    with pytest.raises(ScenarioError, match="expands to more than 1,000,000 values"):
        read_yaml(path)
    assert time.monotonic() - t0 < 10


def test_alias_bomb_in_a_set_value_is_refused():
    """An alias bomb given to --set is refused the same way."""
    bomb = "[&a [x,x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
           "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], " \
           "&f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e], [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]]"
    with pytest.raises(ScenarioError, match=r"^--set description: the document expands"):
        apply_overrides({"name": "x"}, [f"description={bomb}"])


@pytest.mark.parametrize("text", ["run: {max_rounds: 3, max_rounds: 5}\n", "a: 1\nb:\n  c: 1\n  c: 2\n"])
def test_duplicate_keys_anywhere_are_refused(tmp_path, text):
    """A key repeated in a flow mapping on one line, or in a nested block mapping, is refused."""
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    with pytest.raises(ScenarioError, match="duplicate key"):
        read_yaml(p)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    """'<<: *base' followed by a key it also holds is YAML's override, not a duplicate key."""
    p = tmp_path / "merge.yaml"
    p.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert read_yaml(p)["other"] == {"x": 3, "y": 2}


@pytest.mark.parametrize("raw, kind", [("2024-06-01", "a date"), ("!!binary aGVsbG8=", "binary data"),
                                       ("'!!set {a: null}'", None)])
def test_set_values_must_be_plain(raw, kind):
    """--set values that YAML reads as a date or binary are refused in one line naming the
    field; quoted, the same text is a plain string."""
    if kind is None:
        assert apply_overrides({"name": "x"}, [f"name={raw}"])["name"] == "!!set {a: null}"
        return
    with pytest.raises(ScenarioError) as info:
        apply_overrides({"name": "x"}, [f"name={raw}"])
    assert str(info.value).startswith(f"name: {kind}") and "\n" not in str(info.value)


def test_run_with_a_date_override_is_one_line(tmp_path):
    """`run --set name=2024-06-01` exits 2 with one line, not a TypeError traceback."""
    proc = cli("run", QUICKSTART, "--set", "name=2024-06-01", "--out", str(tmp_path / "o"), "--quiet")
    assert_one_line_bad_input(proc)
    assert "name: a date (2024-06-01)" in proc.stderr


@pytest.mark.parametrize("grid", ["name=2024-06-01,x", "algorithm.inner_steps=[1", "description=!!binary aGVsbG8="])
def test_sweep_grid_values_must_be_plain_yaml(tmp_path, grid):
    """A --grid value that is a date, binary or malformed YAML is refused in one line, exit 2."""
    proc = cli("sweep", QUICKSTART, "--grid", grid, "--out", str(tmp_path / "sw"), "--quiet")
    assert_one_line_bad_input(proc)
    assert proc.stderr.startswith("error: ")
    assert not (tmp_path / "sw").exists()


def test_sweep_seed_count_is_bounded(tmp_path):
    """`--seeds 0..100000000` is refused at once instead of planning a hundred million runs;
    so is a grid whose product is over the bound."""
    from sim.sweep.plan import MAX_RUNS, parse_seeds, plan_sweep

    t0 = time.monotonic()
    proc = cli("sweep", QUICKSTART, "--seeds", "0..100000000", "--out", str(tmp_path / "sw"), "--quiet")
    assert_one_line_bad_input(proc)
    assert "--seeds 0..100000000" in proc.stderr and time.monotonic() - t0 < 30
    assert len(parse_seeds(f"0..{MAX_RUNS - 1}")) == MAX_RUNS
    with pytest.raises(ScenarioError, match="at most"):
        plan_sweep(ROOT / QUICKSTART, {"seed": list(range(200)), "algorithm.inner_steps": list(range(1, 101))})


def _catches_sigint(pid: int) -> bool:
    """Whether the process has its SIGINT handler installed (Linux: SigCgt in /proc/PID/status);
    True where that cannot be read."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except OSError:
        return True
    return True


def _interrupt_after(args: list[str], delay_s: float) -> subprocess.CompletedProcess:
    """Ctrl-C ``delay_s`` after the interpreter can take it (a signal before Python installs its
    handler kills any Python program, whatever locosim does; a loaded machine can take that long)."""
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _catches_sigint(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_during_imports_is_exit_130_without_traceback(tmp_path):
    """Ctrl-C in the first second of `run` (while torch imports) exits 130 with no traceback."""
    res = _interrupt_after(["run", QUICKSTART, "--out", str(tmp_path / "o"), "--quiet"], 0.8)
    # 130, or (rarely, when the interrupt lands inside torch's C import) ended by the SIGINT
    # itself after saying so: a shell reports both as status 130
    assert res.returncode in (130, -signal.SIGINT), (res.returncode, res.stderr)
    assert "interrupted" in res.stderr
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr


def test_ctrl_c_during_sweep_planning_is_exit_130_without_traceback(tmp_path):
    """Ctrl-C while a sweep of 5,000 runs is being planned exits 130 with no traceback."""
    res = _interrupt_after(["sweep", QUICKSTART, "--seeds", "0..4999", "--out", str(tmp_path / "sw"), "--quiet"], 2.0)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr


# --------------------------------------------------------------------------- unbounded work
def test_event_estimate_of_the_quickstart_is_analytic():
    """The quickstart's estimate is exactly its inner steps plus its per-layer sync parts:
    30 rounds x (H=20 steps + L+1 parts, one per layer and one for the rest) x 4 workers; and
    its evaluations, by their work: the first, the last and one every 20 of the 600 steps, each
    eval_batches x eval_batch_size / batch_size = 4 x 32 / 16 step batches."""
    from sim.checks import estimate_events

    sc = load_scenario(ROOT / QUICKSTART)
    est = estimate_events(sc)
    assert est.terms == {"run.max_rounds": pytest.approx(30 * (20 + sc.model.n_layers + 1) * 4),
                         "run.eval_every_steps": pytest.approx((2 + 600 / 20) * 4 * 32 / 16)}
    assert est.duration_s == pytest.approx(600 * 0.05)


def test_max_events_null_lifts_the_limit():
    """run.max_events: null lets a long run through the estimate (the override the refusal names)."""
    from sim.checks import check_events, estimate_events

    sc = load_scenario(PREWORK / "warm_start_huge.yaml", ["run.max_events=null"])
    est = estimate_events(sc)
    assert est.total > 1e9
    check_events(est, sc.run.max_events)  # no limit: no refusal


def test_failures_with_long_repairs_are_not_refused():
    """Failures every microsecond are refused, but rare ones are not: the estimate follows
    compute time / mtbf_s, not a fixed rule."""
    from sim.checks import check_before_work

    sc = load_scenario(PREWORK / "failures_mtbf_tiny.yaml", ["faults.failures.mtbf_s=60"])
    assert check_before_work(sc).events.terms["faults.failures.mtbf_s"] < 10


def test_run_out_that_cannot_be_created_is_one_line():
    """`run --out /proc/x` (a directory that cannot be made) exits 2 with one line naming --out,
    before any work, instead of a failed run found mid-way."""
    proc = cli("run", QUICKSTART, "--out", "/proc/x", "--quiet")
    assert_one_line_bad_input(proc)
    assert "--out /proc/x" in proc.stderr


# --------------------------------------------------------------------------- a run that cannot progress
TIMING_ONLY = ["numerics=false", "timing={params: 1.0e6, layers: 2}", "run.max_rounds=3", "algorithm.inner_steps=2"]


def test_a_stalled_run_names_the_link_that_stopped_it():
    """When a link goes to 0 for good mid-run (beyond what the schema allows, set directly on
    the network), 'ran out of events' names the link and the workers' states."""
    from sim.runner import Simulation

    sim = Simulation(load_scenario(ROOT / QUICKSTART, TIMING_ONLY))
    u, v = "us", "eu"

    def cut():
        yield sim.env.timeout(0.09)
        sim.net.set_bandwidth_gbps(u, v, 0.0)

    sim.env.process(cut())
    with pytest.raises(RuntimeError) as info:
        sim.run()
    msg = str(info.value)
    assert "ran out of events" in msg and "\n" not in msg
    assert ("link us->eu has bandwidth 0 for good" in msg) or ("link eu->us has bandwidth 0 for good" in msg), msg
    assert "comm_blocked" in msg


def test_every_node_down_for_good_says_it_ended_early(tmp_path):
    """A run whose nodes all leave for good ends early, exit 0, and says so: the terminal
    line, the manifest and the summary give the reason; numbers print with sensible precision."""
    out = tmp_path / "gone"
    churn = "faults.churn=[" + ", ".join(f"{{node: {n}, leave_s: 0.0123}}" for n in
                                          ("us/0", "us/1", "eu/0", "eu/1")) + "]"
    proc = cli("run", QUICKSTART, *[a for s in TIMING_ONLY for a in ("--set", s)], "--set", churn,
               "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    # they leave at 0.0123 s, in their first step: the run ends when that 0.05 s step would (a one-decimal
    # format would have printed 0.1)
    assert "0.05 s simulated, 0 rounds" in proc.stdout and "ended early at 0.05 s simulated" in proc.stdout, \
        proc.stdout
    assert "down for good: us/0, us/1, eu/0, eu/1" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert manifest["ended_early"] and summary["ended_early"] == manifest["ended_early"]
    assert "ended early" in (out / "dashboard.html").read_text()


def test_terminal_output_escapes_control_characters():
    """A scenario name holding escape sequences is shown escaped, not sent to the terminal."""
    proc = cli("validate", QUICKSTART, "--schema-only", "--set", 'name="evil\\e[2J\\rname"')
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout
    assert "evil\\x1b[2J\\x0dname" in proc.stdout


def test_number_format_is_sensible():
    """Numbers keep 4 significant digits: no 0.0 for a millisecond, no 17-digit tails."""
    from sim.progress import num as _num

    assert [_num(x) for x in (0.0123, 12.345678, 1234.5678, 0.5, 3e9, 0.0)] == \
        ["0.0123", "12.35", "1,235", "0.5", "3.000e+09", "0"]


# --------------------------------------------------------------------------- compare
@pytest.fixture(scope="module")
def timing_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ok"
    proc = cli("run", QUICKSTART, *[a for s in TIMING_ONLY for a in ("--set", s)], "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("file, content", [("manifest.json", "[1, 2]"), ("manifest.json", "{}"),
                                           ("summary.json", "{}"), ("summary.json", "[1, 2]"),
                                           ("summary.json", "not json")])
def test_compare_malformed_run_file_is_one_line(tmp_path, timing_run, file, content):
    """`compare` on a run whose manifest or summary is malformed exits 2 with one line naming
    the run's file."""
    run = tmp_path / "bad"
    shutil.copytree(timing_run, run)
    (run / file).write_text(content)
    proc = cli("compare", str(timing_run), str(run), "-o", str(tmp_path / "c.html"))
    assert_one_line_bad_input(proc)
    assert str(run / file) in proc.stderr


def test_compare_malformed_sweep_file_is_one_line(tmp_path, timing_run):
    """`compare SWEEP_DIR` whose sweep.json is not a sweep's exits 2 with one line naming it."""
    import pandas as pd

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copytree(timing_run, sweep / "a")
    pd.DataFrame({"run_id": ["a"], "status": ["completed"]}).to_parquet(sweep / "index.parquet")
    (sweep / "sweep.json").write_text("[1, 2]")
    proc = cli("compare", str(sweep), "-o", str(tmp_path / "c.html"))
    assert_one_line_bad_input(proc)
    assert str(sweep / "sweep.json") in proc.stderr


@pytest.mark.parametrize("out", ["no/such/dir/c.html", "/proc/c.html"])
def test_compare_unwritable_output_is_one_line(tmp_path, timing_run, out):
    """`compare -o` somewhere that cannot be written exits 2 with one line naming -o."""
    target = out if out.startswith("/") else str(tmp_path / out)
    proc = cli("compare", str(timing_run), "-o", target)
    assert_one_line_bad_input(proc)
    assert "-o " in proc.stderr


def test_compare_directory_with_a_failed_run_draws_the_others(tmp_path, timing_run):
    """`compare DIR` where one run failed before writing its tables exits 0, draws the rest
    and lists the failed run as not drawn (it used to refuse the whole directory)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copytree(timing_run, sweep / "a")
    (sweep / "b").mkdir()
    (sweep / "b" / "manifest.json").write_text(json.dumps({"status": "failed", "error": "ValueError: boom"}))
    page = tmp_path / "c.html"
    proc = cli("compare", str(sweep), "-o", str(page))
    assert proc.returncode == 0, proc.stderr
    assert "1 run(s) not drawn" in proc.stdout and "(failed)" in proc.stdout
    html = page.read_text()
    assert "not-drawn-table" in html and "ValueError: boom" in html
