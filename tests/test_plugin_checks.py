"""Issue 24 (plug-ins checked before work) and issue 28 (a short batch trains silently): a data
plug-in's vocabulary and first batches, and a model plug-in under the engine that will train it,
are checked by ``sim.checks.check_before_work`` -- the one function ``validate``, ``run`` and
``sweep`` all call -- so a bad plug-in is one line naming the field, exit 2, nothing written.
Each bad plug-in is one file under tests/fixtures/bad/plugins/, opening with its defect."""

from __future__ import annotations

import pytest

from sim.scenario import load_scenario
from tests.conftest import ROOT, TINY
from tests.test_cli import assert_one_line_bad_input, cli

PLUGINS = ROOT / "tests" / "fixtures" / "bad" / "plugins"
QS = "scenarios/quickstart.yaml"
BASE = TINY + ["run.device=cpu", "run.max_rounds=1", "algorithm.inner_steps=2"]

# fixture -> what its one-line refusal starts with
DATA_EXPECTED = {
    "data_short_batch": "data.plugin: train_batch must return [batch_size, seq_len + 1] = [4, 17] token ids "
                        "(got [4, 16]); one token short",
    "data_eval_short_batch": "data.plugin: eval_batch must return [batch_size, seq_len + 1] = [8, 17] token ids "
                             "(got [8, 15])",
    "data_float_ids": "data.plugin: train_batch must return int64 token ids (got float32)",
    "data_id_out_of_vocab": "data.plugin: train_batch returned token id 16, outside [0, vocab_size) = [0, 16)",
    "data_vocab_zero": "data.plugin: vocab_size must be an integer >= 2, the number of token ids the batches use "
                       "(got 0)",
    "data_vocab_negative": "data.plugin: vocab_size must be an integer >= 2, the number of token ids the batches "
                           "use (got -3)",
    "data_vocab_fraction": "data.plugin: vocab_size must be an integer >= 2, the number of token ids the batches "
                           "use (got 1.5)",
}
MODEL_EXPECTED = {
    "model_batchnorm": "model.plugin: Net cannot train on the vmap engine (run.engine: auto; torch.func.vmap over "
                       "stacked replicas, the only engine for plug-in models): forward and backward failed under "
                       "vmap: RuntimeError: ",
    "model_step_counter": "model.plugin: Net cannot train on the vmap engine (run.engine: auto;",
}


def _data(stem: str) -> str:
    return f"data={{kind: plugin, plugin: {PLUGINS / stem}.py:Data}}"


def _model(stem: str) -> str:
    return f"model={{kind: plugin, plugin: {PLUGINS / stem}.py:Net, seq_len: 16}}"


def test_every_plugin_fixture_has_an_expectation():
    """Every bad plug-in fixture has an expected message, and states its defect on its first line."""
    files = sorted(PLUGINS.glob("data_*.py")) + sorted(PLUGINS.glob("model_*.py"))
    assert {p.stem for p in files} == set(DATA_EXPECTED) | set(MODEL_EXPECTED)
    for p in files:
        assert p.read_text(encoding="utf-8").startswith("# defect: ")


@pytest.mark.parametrize("stem", sorted(DATA_EXPECTED))
def test_a_bad_data_plugin_is_refused_before_work(stem):
    """check_before_work and Simulation refuse each bad data plug-in with the same one line,
    naming data.plugin and what is allowed."""
    from sim.checks import check_before_work
    from sim.runner import Simulation

    sc = load_scenario(ROOT / QS, BASE + [_data(stem)])
    with pytest.raises(ValueError) as checked:
        check_before_work(sc)
    with pytest.raises(ValueError) as built:
        Simulation(sc)
    msg = str(checked.value)
    assert msg == str(built.value) and "\n" not in msg
    assert msg.startswith(DATA_EXPECTED[stem]), msg


@pytest.mark.parametrize("stem", sorted(MODEL_EXPECTED))
def test_a_model_that_cannot_be_vmapped_is_refused_before_work(stem):
    """A model plug-in whose forward passes the plain meta-device trace but cannot run under
    torch.func.vmap (the engine plug-in models train on) is refused before work, with the
    reason and the fix; the same model trains nowhere else, so the fix is in its forward."""
    from sim.checks import check_before_work

    sc = load_scenario(ROOT / QS, BASE + [_model(stem)])
    with pytest.raises(ValueError) as checked:
        check_before_work(sc)
    msg = str(checked.value)
    assert "\n" not in msg and msg.startswith(MODEL_EXPECTED[stem]), msg
    assert "make its forward vmappable" in msg and "in-place" in msg


def test_the_vmap_check_runs_what_the_engine_runs():
    """The check's verdict is the engine's: each refused model fails at its first real vmap step
    (a Replicas step on CPU), and the example ConvLM, which the check accepts, takes that step."""
    import torch

    from sim.algorithms.plugins import load_object
    from sim.checks import check_model_engine
    from sim.scenario import InnerOptimizer
    from sim.training.replicas import Replicas

    for stem in list(MODEL_EXPECTED) + ["conv"]:
        ref = f"{ROOT / 'examples' / 'conv_lm.py'}:ConvLM" if stem == "conv" else f"{PLUGINS / stem}.py:Net"
        sc = load_scenario(ROOT / QS, BASE + [f"model={{kind: plugin, plugin: {ref}, seq_len: 16}}"])
        model = load_object(ref, "model.plugin")(vocab_size=32)
        with torch.device("meta"):
            meta = load_object(ref, "model.plugin")(vocab_size=32)
        reps = Replicas(model, 2, InnerOptimizer(), torch.device("cpu"), seed=0)
        tokens = torch.zeros((2, 2, 17), dtype=torch.long)
        if stem == "conv":
            check_model_engine(meta, sc)
            assert reps.step([0, 1], tokens).shape == (2,)
        else:
            with pytest.raises(ValueError):
                check_model_engine(meta, sc)
            with pytest.raises(RuntimeError):
                reps.step([0, 1], tokens)


def test_a_good_data_plugin_passes_and_trains(tmp_path):
    """A correct data plug-in passes the check (its vocabulary returned as an int, a numpy
    integer accepted) and the run trains on it."""
    from sim.checks import check_data_plugin
    from sim.runner import Simulation

    code = ("import numpy as np\n"
            "class Data:\n"
            "    vocab_size = np.int64(7)\n"
            "    def __init__(self, seq_len, n_workers, seed):\n"
            "        self.seq_len = seq_len\n"
            "    def train_batch(self, g, worker, batch_size):\n"
            "        return g.integers(0, 7, size=(batch_size, self.seq_len + 1))\n"
            "    def eval_batch(self, g, batch_size):\n"
            "        return g.integers(0, 7, size=(batch_size, self.seq_len + 1))\n")
    (tmp_path / "good.py").write_text(code)
    sc = load_scenario(ROOT / QS, BASE + [f"data={{kind: plugin, plugin: {tmp_path / 'good.py'}:Data}}"])
    sim = Simulation(sc)
    vocab = check_data_plugin(sim.dataset, sc)
    assert vocab == 7 and type(vocab) is int
    sim.run()
    assert [p.loss for p in sim.recorder.losses if p.kind == "train"]


# --------------------------------------------------------------------------- validate, run and sweep alike
def test_validate_refuses_a_short_batch():
    """`validate` on issue 28's case (batches [b, seq_len]) exits 2 with one line naming data.plugin."""
    proc = cli("validate", QS, *sum((["--set", s] for s in BASE + [_data("data_short_batch")]), []))
    assert_one_line_bad_input(proc)
    assert proc.stderr.startswith("error: " + DATA_EXPECTED["data_short_batch"]), proc.stderr


def test_run_refuses_a_short_batch_and_writes_nothing(tmp_path):
    """`run` on issue 28's case exits 2 with the same line as validate and creates no --out
    (before: it trained on shifted targets, reported completed and overstated the tokens)."""
    out = tmp_path / "out"
    proc = cli("run", QS, "--out", str(out), "--quiet",
               *sum((["--set", s] for s in BASE + [_data("data_short_batch")]), []))
    assert_one_line_bad_input(proc)
    assert proc.stderr.startswith("error: " + DATA_EXPECTED["data_short_batch"]), proc.stderr
    assert not out.exists()


def test_sweep_refuses_a_short_batch_and_writes_nothing(tmp_path):
    """`sweep` on issue 28's case exits 2 with one line naming the run and data.plugin, and
    writes no sweep directory."""
    out = tmp_path / "sw"
    proc = cli("sweep", QS, "--seeds", "0..1", "--out", str(out), "--quiet",
               *sum((["--set", s] for s in BASE + [_data("data_short_batch")]), []))
    assert_one_line_bad_input(proc)
    assert DATA_EXPECTED["data_short_batch"] in proc.stderr, proc.stderr
    assert not out.exists()


def test_run_refuses_a_model_that_cannot_be_vmapped_and_writes_nothing(tmp_path):
    """`run` with a BatchNorm model plug-in exits 2 with one line naming model.plugin and
    run.engine, before anything is written (today: a failed run at its first step)."""
    out = tmp_path / "out"
    proc = cli("run", QS, "--out", str(out), "--quiet",
               *sum((["--set", s] for s in BASE + [_model("model_batchnorm")]), []))
    assert_one_line_bad_input(proc)
    assert proc.stderr.startswith("error: " + MODEL_EXPECTED["model_batchnorm"]), proc.stderr
    assert not out.exists()

