"""What the estimates before work used to miss (issue 28: ``eval_batch_size: 1048576`` and a
model plug-in whose forward allocates 16 GB passed). Evaluations: their memory is the peak of
live tensors of an evaluation forward (checked here against that peak measured on the meta
device: nothing allocated), and their work counts every evaluation (the first, the last,
every ``eval_every_steps``), so a scenario whose evaluations cannot fit or would never end is
refused naming the eval field. A plug-in model's forward is traced for what it allocates
itself, not only for what autograd saves."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from sim.scenario import load_scenario  # noqa: E402
from sim.training.memory import FLOAT_BYTES, eval_floats, peak_live_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("d_model,n_layers,n_heads,seq_len,vocab", [
    (16, 2, 4, 32, 32), (64, 2, 4, 128, 256), (32, 4, 2, 64, 1000), (128, 1, 8, 16, 64), (16, 1, 1, 256, 32),
    (64, 2, 4, 32, 50000)])
def test_eval_memory_per_token_bounds_the_measured_forward_peak(d_model, n_layers, n_heads, seq_len, vocab):
    """One evaluation batch's forward and cross-entropy, without autograd, on the meta device:
    its peak of live tensors (the held-out ids left out) is at most the estimate, and the
    estimate at most 1.6 x it (an upper bound: a block's tensors are not all alive at once)."""
    from sim.training.models import build_model

    sc = load_scenario(ROOT / "scenarios/quickstart.yaml", [f"model.d_model={d_model}", f"model.n_layers={n_layers}",
                                                            f"model.n_heads={n_heads}", f"model.seq_len={seq_len}"])
    with torch.device("meta"):
        model = build_model(sc.model, vocab)
    b = 256
    x = torch.zeros(b, seq_len + 1, dtype=torch.long, device="meta")

    def forward():
        logits = model(x[:, :-1])
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))

    with torch.no_grad():
        peak = peak_live_bytes(forward) - x.untyped_storage().nbytes()
    est = b * seq_len * eval_floats(sc.model, vocab) * FLOAT_BYTES
    assert peak <= est <= 1.6 * peak, (peak, est)


def test_an_eval_batch_that_cannot_fit_names_eval_batch_size():
    """tiny.yaml with eval_batch_size 1,048,576 under a 16 GB limit: refused before work, one
    line naming run.eval_batch_size, the estimate over 16 GB (the old one, logits only, was
    8.6 GB and passed)."""
    from sim.checks import check_before_work
    from tests.test_refusals import PREWORK

    sc = load_scenario(PREWORK / "eval_batch_size_memory.yaml")
    with pytest.raises(ValueError) as err:
        check_before_work(sc)
    line = str(err.value)
    assert "\n" not in line and line.startswith("run.eval_batch_size: the numerics need about")
    gb = float(line.split("about ")[1].split(" GB")[0])
    want = 1048576 * 32 * eval_floats(sc.model, 32) * FLOAT_BYTES / 1e9
    assert gb == pytest.approx(want, rel=0.05) and gb > 16


def test_every_evaluation_counts_in_the_work_estimate():
    """The estimate's evaluation term is (2 + steps / eval_every_steps) evaluations of
    eval_batches x eval_batch_size / batch_size step batches each, named after its largest
    factor; with no eval_every_steps, the first and last evaluations still count."""
    from sim.checks import estimate_events
    from tests.test_refusals import PREWORK

    sc = load_scenario(PREWORK / "eval_every_steps_weighted.yaml")
    est = estimate_events(sc)
    steps = 10000 * 5
    assert est.terms["run.eval_every_steps"] == pytest.approx((2 + steps) * 4 * 4096 / 4)
    sc = load_scenario(PREWORK / "eval_every_steps_weighted.yaml", ["run.eval_every_steps=null"])
    assert estimate_events(sc).terms["run.eval_batch_size"] == pytest.approx(2 * 4 * 4096 / 4)


def test_peak_live_bytes_counts_a_storage_once_and_frees_it():
    """The tracer's own arithmetic on a hand-made sequence: a (4 MB) and its view, then b (8 MB)
    while a lives, then a dropped and c (2 MB): the peak is 12 MB."""
    def fn():
        a = torch.empty(1_000_000, device="meta")
        v = a[:10]  # a view: no new storage
        b = torch.empty(2_000_000, device="meta")
        del a, v, b
        torch.empty(500_000, device="meta")

    assert peak_live_bytes(fn) == 12_000_000


def test_a_model_plugin_whose_forward_allocates_16_gb_is_refused_before_work():
    """A model plug-in whose forward makes a 16 GB scratch tensor every call (autograd saves
    none of it) is refused before work under run.memory_limit_gb: 8, its estimate over 16 GB:
    the traced peak of its forward at batch 1 and 2 sees what it allocates for itself."""
    from sim.checks import check_before_work

    plugin = ROOT / "tests/fixtures/bad/memory/model_forward_16gb.py"
    sc = load_scenario(ROOT / "scenarios/quickstart.yaml",
                       ["run.memory_limit_gb=8", "run.device=cpu", "compute.batch_size=4", "run.eval_batch_size=8",
                        f"model={{kind: plugin, plugin: {plugin}:Net, seq_len: 16}}"])
    with pytest.raises(ValueError) as err:
        check_before_work(sc)
    line = str(err.value)
    assert "\n" not in line and line.startswith("run: the numerics need about"), line
    assert float(line.split("about ")[1].split(" GB")[0]) > 4 * 16  # 16 GB in each of 4 replicas' step
