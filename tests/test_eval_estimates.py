"""Evaluations in the estimates before work (issue 28: ``eval_batch_size: 1048576`` passed):
their memory is the peak of live tensors of an evaluation forward (checked here against that
peak measured on the meta device: nothing allocated), and their work counts every evaluation
(the first, the last, every ``eval_every_steps``), so a scenario whose evaluations cannot fit
or would never end is refused naming the eval field."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from sim.scenario import load_scenario  # noqa: E402
from sim.training.memory import FLOAT_BYTES, eval_floats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _peak_live_bytes(fn) -> int:
    """Peak bytes of live tensor storages while ``fn()`` runs: every storage an op's output
    holds counts from its first tensor's creation until Python drops its last (meta device:
    shapes only)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    state = {"live": 0, "peak": 0}
    refs: dict[int, int] = {}  # storage -> tensors alive on it (a view shares its base's)

    def free(key: int, n: int) -> None:
        refs[key] -= 1
        if not refs[key]:
            del refs[key]
            state["live"] -= n

    class Peak(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    key, n = storage._cdata, storage.nbytes()
                    refs[key] = refs.get(key, 0) + 1
                    weakref.finalize(t, free, key, n)
                    if refs[key] == 1:
                        state["live"] += n
                        state["peak"] = max(state["peak"], state["live"])
            return out

    with torch.no_grad(), Peak():
        fn()
    return state["peak"]


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

    peak = _peak_live_bytes(forward) - x.untyped_storage().nbytes()
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
