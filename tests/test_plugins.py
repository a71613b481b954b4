"""A user's method as a plug-in (examples/fedavg.py): run as a user would, checked against a
built-in limit, and every way a plug-in can be wrong is one line before anything is written."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sim.runner import Simulation
from sim.scenario import ScenarioError, load_scenario
from tests.conftest import ROOT, TINY

EXAMPLE = ROOT / "examples" / "fedavg.yaml"
QS = ROOT / "scenarios" / "quickstart.yaml"


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_the_example_plugin_runs_through_the_cli_like_a_built_in(tmp_path):
    """`locosim run examples/fedavg.yaml` from another folder (the plug-in path is relative to
    the scenario file) completes, counts its rounds, and `--set` reaches the plug-in's knob."""
    out = tmp_path / "run"
    res = _cli("run", str(EXAMPLE), "--out", str(out), "--quiet", "--set", "run.max_rounds=3",
               "--set", "algorithm.inner_steps=5", *[f"--set={o}" for o in TINY], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert manifest["status"] == "completed" and summary["rounds"] == 3
    alg = manifest["scenario"]["algorithm"]
    assert alg["name"] == "fedavg" and alg["inner_steps"] == 5
    assert Path(alg["plugin"].split(":")[0]).is_absolute()  # re-usable from anywhere (sweeps, compare)
    assert summary["steps_per_worker"] == [15] * 4


def test_fedavg_is_diloco_with_outer_sgd_at_lr_one_without_momentum():
    """Averaging the parameters every H steps is DiLoCo's outer step with SGD at lr 1 and no
    momentum (theta - 1 x mean(theta - theta_m) = mean theta_m): the same parameters."""
    import torch

    common = TINY + ["run.device=cpu", "run.max_rounds=3", "run.max_tokens=null", "run.eval_every_steps=null"]
    fed = Simulation(load_scenario(EXAMPLE, common + ["algorithm.inner_steps=4"]))
    dil = Simulation(load_scenario(QS, common + [
        "algorithm={name: diloco, inner_steps: 4, outer_lr: 1.0, outer_momentum: 0.0, nesterov: false}"]))
    for sim in (fed, dil):
        sim.run()
        sim.numerics.flush()
    # equal in exact arithmetic; float32 rounds mean(theta_m) and theta - (theta - mean) apart by a few
    # ulps, which AdamW's normalised steps carry on (up to ~2e-6 with one intra-op thread)
    for k, v in fed.state.outer.items():
        torch.testing.assert_close(v, dil.state.outer[k], rtol=1e-5, atol=1e-5)
    assert fed.rounds == dil.rounds == 3


def _plugin_scenario(tmp_path: Path, code: str, algorithm: str) -> Path:
    (tmp_path / "mine.py").write_text(textwrap.dedent(code))
    return scenario_with(tmp_path, algorithm)


def scenario_with(tmp_path: Path, algorithm: str) -> Path:
    """The quickstart with its ``algorithm`` line replaced, written to tmp_path/s.yaml."""
    text = QS.read_text().replace(
        "algorithm: {name: diloco, inner_steps: 20, outer_lr: 0.7, outer_momentum: 0.9, payload_dtype: fp32}",
        f"algorithm: {algorithm}")
    assert f"algorithm: {algorithm}" in text
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


NO_HOOK = """
from sim.algorithms.knobs import MethodSpec
class Half:
    class Spec(MethodSpec):
        pass
    def configure(self, layout, proxy_layers=None): pass
    def at_step(self, worker, step): pass
"""
BAD_SPEC = """
class Odd:
    Spec = dict
    def configure(self): pass
    at_step = init = on_step = on_reduced = global_params = configure
"""
BROKEN_IMPORT = "import not_a_module_anywhere\n"


@pytest.mark.parametrize("code, algorithm, expected", [
    ("", "{name: x, plugin: missing.py:X}", "algorithm.plugin: "),
    ("", "{name: x, plugin: mine.py:Nope}", "algorithm.plugin: "),
    (NO_HOOK, "{name: half, plugin: mine.py:Half}", "missing init, on_step, on_reduced, global_params"),
    (BAD_SPEC, "{name: odd, plugin: mine.py:Odd}", "Spec must be a subclass of sim.algorithms.knobs.MethodSpec"),
    (BROKEN_IMPORT, "{name: x, plugin: mine.py:X}", "failed to import: ModuleNotFoundError"),
    ("", "{name: x, plugin: not_a_package.anywhere:X}", "cannot import module 'not_a_package.anywhere'"),
    ("", "{name: fedavg_unknown}", "algorithm: unknown name 'fedavg_unknown'"),
    ("raise SystemExit(3)\n", "{name: x, plugin: mine.py:X}", "mine.py failed to import: SystemExit(3)"),
    ("import sys\nsys.exit('usage: mine.py N')\n", "{name: x, plugin: mine.py:X}", "failed to import: SystemExit("),
])
def test_a_plugin_that_cannot_be_used_is_one_line_and_exit_2(tmp_path, code, algorithm, expected):
    """A missing file, a missing class, a class without the protocol's hooks (named), knobs that
    are not a MethodSpec, a module that fails to import (or exits while it is imported), or an
    unknown name: one line naming the field, exit 2, nothing written."""
    path = _plugin_scenario(tmp_path, code, algorithm)
    res = _cli("run", str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert expected in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_plugin_that_exits_while_imported_is_one_line(tmp_path):
    """Models and data load through the same loader as methods: a model file that calls
    sys.exit at import is one line naming model.plugin, exit 2, nothing written."""
    (tmp_path / "net.py").write_text("import sys\nsys.exit(1)\n")
    path = _plugin_scenario(tmp_path, "", "{name: diloco, inner_steps: 2}")
    res = _cli("run", str(path), "--out", str(tmp_path / "out"), "--quiet", "--set=model={kind: plugin, plugin: net.py:Net}")
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "model.plugin: net.py failed to import: SystemExit(1)" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override, expected", [
    ("algorithm.inner_steps=0", "algorithm.inner_steps: Input should be greater than or equal to 1"),
    ("algorithm.H=3", "algorithm.H: unknown key for FedAvg; allowed here: "),
])
def test_a_plugin_knob_gets_the_built_in_one_line_errors(override, expected):
    """The plug-in's own knobs are validated by its Spec, located and one line."""
    with pytest.raises(ScenarioError) as err:
        load_scenario(EXAMPLE, [override])
    assert str(err.value).startswith(expected)


def test_a_plugin_that_raises_during_the_run_leaves_a_failed_run_with_its_traceback(tmp_path):
    """A plug-in whose own code fails mid-run: exit 1, run directory marked failed, the
    plug-in's traceback (its file and line) in the manifest."""
    code = (ROOT / "examples" / "fedavg.py").read_text().replace(
        "        return params  # what a worker sends: its parameters",
        "        raise ZeroDivisionError('a bug in my method')")
    path = _plugin_scenario(tmp_path, code, "{name: fedavg, plugin: mine.py:FedAvg, inner_steps: 3}")
    out = tmp_path / "out"
    res = _cli("run", str(path), "--out", str(out), "--quiet", *[f"--set={o}" for o in TINY])
    assert res.returncode == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "a bug in my method" in manifest["error"]
    assert "mine.py" in manifest["traceback"] and "ZeroDivisionError" in manifest["traceback"]


def test_an_installed_package_can_register_a_method_by_name(monkeypatch):
    """A name registered under the `locosim.algorithms` entry point needs no plugin: key."""
    import importlib.metadata

    ref = f"{ROOT / 'examples' / 'fedavg.py'}:FedAvg"
    ep = importlib.metadata.EntryPoint(name="fedavg_installed", value=ref, group="locosim.algorithms")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [ep] if group == ep.group else [])
    sc = load_scenario(QS, ["algorithm={name: fedavg_installed, inner_steps: 7}"])
    assert sc.algorithm.plugin == ref and sc.algorithm.inner_steps == 7
    assert type(Simulation(sc).algorithm).__name__ == "FedAvg"


def test_save_model_writes_the_evaluated_parameters(tmp_path):
    """run.save_model: model.pt holds the final global parameters: loaded into the scenario's
    model, its held-out loss is the run's final eval loss."""
    import torch

    from sim.training.models import build_model
    from sim.writer import run_to_dir

    sc = load_scenario(QS, TINY + ["run.device=cpu", "run.max_rounds=2", "algorithm.inner_steps=3",
                                   "run.save_model=true"])
    sim = Simulation(sc)
    manifest = run_to_dir(sim, tmp_path / "run")
    assert "model.pt" in manifest["files"]
    state = torch.load(tmp_path / "run" / "model.pt")
    model = build_model(sc.model, sim.dataset.vocab_size)
    model.load_state_dict(state)
    final = [p for p in sim.recorder.losses if p.kind == "eval"][-1].loss
    params = {k: v.to(sim.device) for k, v in state.items()}
    assert sim.replicas.eval_loss(params, sim.eval_batches) == pytest.approx(final, rel=1e-6)


# ---------------------------------------------------------------------- models and data
CUSTOM = ROOT / "examples" / "custom_model.yaml"


def test_a_model_from_one_file_trains_on_the_vmap_engine(tmp_path):
    """examples/conv_lm.py, run through the CLI from another folder: completes on the vmap
    engine, its eval loss falls below the uniform loss ln V, and its blocks are the layers."""
    import math

    out = tmp_path / "run"
    res = _cli("run", str(CUSTOM), "--out", str(out), "--quiet", "--set", "run.max_rounds=8", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    import pandas as pd

    evals = pd.read_parquet(out / "metrics.parquet").query("kind == 'eval'")["loss"].tolist()
    assert evals[0] == pytest.approx(math.log(32), abs=0.3) and evals[-1] < evals[0] - 0.2
    assert summary["numerics"]["engine"] == "vmap"
    sim = Simulation(load_scenario(CUSTOM, ["run.max_rounds=1", "run.device=cpu"]))
    assert [p for p, _ in sim.algorithm.parts] == [0, 1, None]  # blocks.0, blocks.1, the rest


OWN_LOSS = """
import sys
import torch.nn.functional as F
sys.path.insert(0, {examples!r})
from conv_lm import ConvLM

class OwnLoss(ConvLM):
    def forward(self, idx, targets):
        logits = super().forward(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

class PerToken(ConvLM):
    def forward(self, idx, targets):
        logits = super().forward(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")

class Wide(ConvLM):
    def forward(self, idx):
        return super().forward(idx)[..., :3]

class Padded(ConvLM):  # a vocabulary rounded up past the data's, as GPT implementations do
    def __init__(self, vocab_size, **args):
        super().__init__(vocab_size + 8, **args)
"""


def test_a_model_that_returns_its_own_loss_trains_as_the_same_model_with_logits(tmp_path):
    """``model.output: loss``: forward(tokens, targets) gives the loss, trained and evaluated as
    it is. The example ConvLM with the next-token cross-entropy inside its forward gives the
    same train and eval losses as ConvLM returning logits (locosim taking that cross-entropy)."""
    (tmp_path / "own.py").write_text(OWN_LOSS.format(examples=str(ROOT / "examples")))
    base = ["run.max_rounds=2", "run.device=cpu"]
    own = f"model={{kind: plugin, plugin: {tmp_path / 'own.py'}:OwnLoss, output: loss, args: {{d_model: 32, n_layers: 2}}, seq_len: 32}}"
    losses = []
    for overrides in (base, base + [own]):
        sim = Simulation(load_scenario(CUSTOM, overrides))
        sim.run()
        losses.append([(p.kind, p.worker, p.step, p.loss) for p in sim.recorder.losses])
    assert losses[0] == losses[1] and any(k == "eval" for k, *_ in losses[0])


def test_a_model_whose_vocabulary_is_padded_past_the_datas_trains(tmp_path):
    """Logits wider than the data's vocabulary (a padded embedding table) are accepted: the
    cross-entropy runs over all of them and the targets are the data's tokens."""
    (tmp_path / "own.py").write_text(OWN_LOSS.format(examples=str(ROOT / "examples")))
    sim = Simulation(load_scenario(CUSTOM, ["run.max_rounds=1", "run.device=cpu",
                                            f"model.plugin={tmp_path / 'own.py'}:Padded"]))
    sim.run()
    evals = [p.loss for p in sim.recorder.losses if p.kind == "eval"]
    assert evals and all(math.isfinite(v) for v in evals)
    assert sim.replicas.shapes["head.weight"] == (32 + 8, 32)


@pytest.mark.parametrize("model, expected", [
    ("OwnLoss, output: logits", "model.plugin: OwnLoss.forward(tokens) (model.output: logits) failed on a [1, 32] "
                                "batch: TypeError"),
    ("Wide, output: loss", "model.plugin: Wide.forward(tokens, targets) (model.output: loss) failed"),
    ("Wide", "model.output: logits: forward(tokens) must return [batch, seq_len, at least 32] (got (1, 32, 3))"),
    ("PerToken, output: loss", "model.output: loss: forward(tokens, targets) must return one number (got (32,))"),
])
def test_a_model_whose_forward_does_not_give_what_it_says_is_one_line(tmp_path, model, expected):
    """A forward that fails, or returns the wrong thing for ``model.output``, is refused before
    any work: one line naming the field, exit 2, nothing written."""
    (tmp_path / "own.py").write_text(OWN_LOSS.format(examples=str(ROOT / "examples")))
    text = CUSTOM.read_text().replace("plugin: conv_lm.py:ConvLM", f"plugin: {tmp_path / 'own.py'}:{model}")
    (tmp_path / "s.yaml").write_text(text)
    res = _cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--quiet")
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert expected in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_a_plugin_models_memory_is_traced_not_guessed():
    """The activation estimate of a plug-in model comes from tracing its forward on the meta
    device: for the built-in GPT wrapped as a plug-in it lies between the analytic estimate
    (what the GPT formula counts) and that plus the weights the layers save."""
    import torch

    from sim.training.memory import activation_floats, measured_activation_floats
    from sim.training.models import build_model

    sc = load_scenario(QS, ["model.d_model=32", "model.n_layers=2"])
    with torch.device("meta"):
        model = build_model(sc.model, 32)
    measured = measured_activation_floats(model, sc.model.seq_len, 32)
    analytic = activation_floats(sc.model, 32)
    weights = sum(p.numel() for p in model.parameters())
    assert analytic <= measured <= analytic + weights / sc.model.seq_len + 4 * 32


def _word_data_twice(data: str) -> tuple[Simulation, list[list[float]]]:
    """Two short quickstart runs on the data section ``data``: the last simulation and each
    run's train losses."""
    args = TINY + ["run.device=cpu", "run.max_rounds=2", "algorithm.inner_steps=3", f"data={data}"]
    runs = []
    for _ in range(2):
        sim = Simulation(load_scenario(QS, args))
        sim.run()
        runs.append([p.loss for p in sim.recorder.losses if p.kind == "train"])
    return sim, runs


def test_data_from_one_file_reads_a_local_text_word_by_word(tmp_path):
    """examples/word_data.py as data: its vocabulary is the file's distinct words, and the same
    seed gives the same losses (the batches come from locosim's named streams)."""
    words = [f"w{i % 37}" for i in range(4000)]
    (tmp_path / "book.txt").write_text(" ".join(words))
    data = f"{{kind: plugin, plugin: {ROOT / 'examples' / 'word_data.py'}:WordText, args: {{path: {tmp_path / 'book.txt'}}}}}"
    sim, runs = _word_data_twice(data)
    assert sim.dataset.vocab_size == 37
    assert runs[0] == runs[1] and len(runs[0]) > 0


def test_word_data_with_a_hugging_face_tokenizer_file(tmp_path):
    """examples/word_data.py's documented Hugging Face path: a tokenizer file (here a word-level
    one trained on the local text with the `tokenizers` library, nothing downloaded) gives the
    token ids, its vocabulary sizes the model, and runs stay reproducible."""
    pytest.importorskip("tokenizers", reason="pip install tokenizers (in the test extra)")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = " ".join(f"w{(i * 7) % 41}" for i in range(5000))
    (tmp_path / "book.txt").write_text(text)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train([str(tmp_path / "book.txt")], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    data = (f"{{kind: plugin, plugin: {ROOT / 'examples' / 'word_data.py'}:WordText, "
            f"args: {{path: {tmp_path / 'book.txt'}, tokenizer: {tmp_path / 'tokenizer.json'}}}}}")
    sim, runs = _word_data_twice(data)
    assert sim.dataset.vocab_size == 42  # 41 words and [UNK]
    ids = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids
    assert list(sim.dataset.train) + list(sim.dataset.eval) == ids
    assert runs[0] == runs[1] and len(runs[0]) > 0


def test_a_data_plugin_is_built_once_per_run(tmp_path):
    """The data plug-in object the pre-work checks build (to learn its vocabulary) is the one the
    run trains on: a loader that reads or tokenizes a corpus does it once, not twice."""
    code = """
    import numpy as np
    from pathlib import Path
    class Counted:
        vocab_size = 7
        loss_floor = None
        def __init__(self, seq_len, n_workers, seed, log):
            with open(log, "a") as f:
                f.write("built\\n")
            self.seq_len = seq_len
        def train_batch(self, g, worker, batch_size):
            return g.integers(0, 7, size=(batch_size, self.seq_len + 1))
        def eval_batch(self, g, batch_size):
            return g.integers(0, 7, size=(batch_size, self.seq_len + 1))
    """
    (tmp_path / "counted.py").write_text(textwrap.dedent(code))
    log = tmp_path / "built.log"
    data = f"{{kind: plugin, plugin: {tmp_path / 'counted.py'}:Counted, args: {{log: {log}}}}}"
    sim = Simulation(load_scenario(QS, TINY + ["run.device=cpu", "run.max_rounds=1", "algorithm.inner_steps=2",
                                               f"data={data}"]))
    sim.run()
    assert log.read_text() == "built\n" and sim.dataset.vocab_size == 7
    assert sim.recorder.losses


@pytest.mark.parametrize("section, expected", [
    ("model: {kind: plugin, plugin: mine.py:Nope, seq_len: 16}", "model.plugin: "),
    ("model: {kind: plugin, plugin: mine.py:Net, args: {width: 3}, seq_len: 16}", "model.args: Net(vocab_size=32, **args) failed: TypeError"),
    ("model: {kind: plugin, plugin: mine.py:NotAModule, seq_len: 16}", "must build a torch.nn.Module"),
    ("data: {kind: plugin, plugin: mine.py:NoBatches}", "data.plugin: the object it returned lacks train_batch, eval_batch"),
])
def test_a_model_or_data_plugin_that_cannot_be_used_is_one_line(tmp_path, section, expected):
    """Model and data plug-ins fail before any work: one line naming the field, exit 2."""
    code = """
    import torch
    class Net(torch.nn.Module):
        def __init__(self, vocab_size):
            super().__init__()
            self.head = torch.nn.Linear(4, vocab_size)
    class NotAModule:
        def __init__(self, vocab_size):
            pass
    class NoBatches:
        vocab_size = 5
        def __init__(self, seq_len, n_workers, seed):
            pass
    """
    (tmp_path / "mine.py").write_text(textwrap.dedent(code))
    text = QS.read_text()
    key = section.split(":")[0]
    lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key}:")]
    (tmp_path / "s.yaml").write_text("\n".join(lines + [section]) + "\n")
    res = _cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--quiet")
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert expected in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_plugins_knobs_have_a_json_schema():
    """`locosim schema --plugin FILE.py:Class` prints the plug-in's knobs (for editors), with
    their defaults and descriptions; a missing file is one line, exit 2."""
    res = _cli("schema", "--plugin", "examples/fedavg.py:FedAvg")
    assert res.returncode == 0, res.stderr
    props = json.loads(res.stdout)["properties"]
    assert props["inner_steps"]["default"] == 20 and "H" in props["inner_steps"]["description"]
    assert {"name", "plugin", "warm_start_steps", "sync_grain", "collective"} <= set(props)
    assert "const" not in props["name"]  # a file's method takes any name
    bad = _cli("schema", "--plugin", "no_such_file.py:X")
    assert bad.returncode == 2 and "no such file" in bad.stderr


# ---------------------------------------------------------------------------- built-ins on the public path
# today's knobs and defaults of the two methods, recorded from the built-in specs before they moved
OVERLAPPED_DEFAULTS = {"warm_start_steps": 0, "payload_dtype": "fp32", "error_feedback": False, "sync_grain": "layer",
                       "sync_timeout_s": None, "inner_steps": 30, "outer_lr": 0.35, "outer_momentum": 0.9,
                       "nesterov": True, "collective": "ring_allreduce", "outer_delay": 1}


@pytest.mark.parametrize("name, cls", [("diloco_delayed", "DelayedDiLoCo"), ("eager_diloco", "EagerDiLoCo")])
def test_overlapped_diloco_is_shipped_through_the_plugin_path_with_its_knobs(name, cls):
    """eager_diloco and diloco_delayed resolve through the registry to the plug-in path, not the
    schema's own union of sections, and their own Spec gives the knobs and defaults they always had."""
    from sim.algorithms import METHODS as PACKAGED
    from sim.algorithms import sections

    assert name not in sections()
    assert PACKAGED[name] == f"sim.algorithms.eager:{cls}"
    sc = load_scenario(QS, [f"algorithm={{name: {name}}}"])
    assert type(Simulation(sc).algorithm).__name__ == cls
    assert sc.algorithm.model_dump() == {**OVERLAPPED_DEFAULTS, "name": name, "plugin": PACKAGED[name]}
    set_ = load_scenario(QS, [f"algorithm={{name: {name}}}", "algorithm.outer_delay=2", "algorithm.payload_dtype=int8",
                              "algorithm.error_feedback=true"]).algorithm
    assert (set_.outer_delay, set_.payload_dtype, set_.error_feedback) == (2, "int8:128", True)


@pytest.mark.parametrize("override, expected", [
    ("algorithm.outer_delay=-1", "algorithm.outer_delay: Input should be greater than or equal to 0 (got -1)"),
    ("algorithm.outer_momentum=1", "algorithm.outer_momentum: Input should be less than 1 (got 1)"),
    ("algorithm.error_feedback=true", "algorithm.error_feedback: needs a lossy payload_dtype"),
    ("algorithm.k=2", "algorithm.k: unknown key for EagerDiLoCo; allowed here: "),
])
def test_overlapped_diloco_bad_knobs_are_one_located_line(override, expected):
    """A bad knob of a packaged built-in is one line naming its field, as before the move (a
    validator's own field, error_feedback, included); a paper symbol gets its field suggested."""
    with pytest.raises(ScenarioError) as err:
        load_scenario(QS, ["algorithm={name: eager_diloco}", override])
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    if override.startswith("algorithm.k="):
        assert str(err.value).endswith("did you mean outer_delay (the paper's k)?")


def test_overlapped_diloco_knobs_print_by_name():
    """`locosim schema --plugin eager_diloco` prints the packaged method's knobs, as for fedavg."""
    res = _cli("schema", "--plugin", "eager_diloco")
    assert res.returncode == 0, res.stderr
    props = json.loads(res.stdout)["properties"]
    assert props["outer_delay"]["default"] == 1 and props["outer_delay"]["description"].startswith("k: ")
    assert props["inner_steps"]["default"] == 30 and props["outer_lr"]["default"] == 0.35
    assert props["name"]["const"] == "eager_diloco"  # a registered name is the section's name
