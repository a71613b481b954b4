"""The explicit-replica-dimension GPT engine (StackedReplicas) equals the vmap engine (Replicas)."""

from __future__ import annotations

import warnings

import pytest
import torch

from sim.scenario import InnerOptimizer
from sim.training.models import NextTokenMLP, TinyGPT, stacked_gpt_logits
from sim.training.replicas import Replicas, StackedReplicas


def _gpt() -> TinyGPT:
    return TinyGPT(vocab_size=11, d_model=16, n_layers=2, n_heads=2, seq_len=8)


def test_stacked_logits_equal_each_replicas_own_forward():
    """stacked_gpt_logits on [N, ...] parameters gives, for every replica, TinyGPT's logits with that replica's parameters."""
    model = _gpt()
    g = torch.Generator().manual_seed(0)
    params = {k: torch.randn(3, *v.shape, generator=g) * 0.1 for k, v in model.named_parameters()}
    idx = torch.randint(0, 11, (3, 2, 8), generator=g)
    got = stacked_gpt_logits(params, idx, n_layers=2, n_heads=2)
    for i in range(3):
        want = torch.func.functional_call(model, {k: v[i] for k, v in params.items()}, (idx[i],))
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("subset", [False, True])
def test_stacked_engine_steps_equal_vmap_engine(subset):
    """Three AdamW steps (with clipping) of StackedReplicas end at the parameters, optimizer state and
    losses of the vmap Replicas, for all replicas and for a masked subset."""
    opt = InnerOptimizer(lr=1e-2, grad_clip=0.5)
    a = Replicas(_gpt(), 4, opt, torch.device("cpu"), seed=1)
    b = StackedReplicas(_gpt(), 4, opt, torch.device("cpu"), seed=1)
    g = torch.Generator().manual_seed(2)
    idx = [0, 2, 3] if subset else [0, 1, 2, 3]
    for _ in range(3):
        tokens = torch.randint(0, 11, (len(idx), 2, 9), generator=g)
        torch.testing.assert_close(b.step(idx, tokens), a.step(idx, tokens), rtol=1e-5, atol=1e-6)
    for k in a.params:
        torch.testing.assert_close(b.params[k], a.params[k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.exp_avg_sq[k], a.exp_avg_sq[k], rtol=1e-4, atol=1e-9)


def test_stacked_engine_refuses_other_models():
    """StackedReplicas is written for the GPT; another model is refused with a message naming the vmap engine."""
    with pytest.raises(ValueError, match="Replicas"):
        StackedReplicas(NextTokenMLP(11, 8, 16, 2, 8), 2, InnerOptimizer(), torch.device("cpu"), seed=0)


def test_compiled_stacked_engine_equals_eager():
    """run.compile: the stacked engine's forward under torch.compile (inductor; a C++ compiler on CPU)
    takes the same steps as eager, to fp32 rounding, for all replicas and for a masked subset
    (a different replica count, so a second graph)."""
    opt = InnerOptimizer(lr=1e-2, grad_clip=0.5)
    eager = StackedReplicas(_gpt(), 3, opt, torch.device("cpu"), seed=1)
    comp = StackedReplicas(_gpt(), 3, opt, torch.device("cpu"), seed=1, compile=True)
    g = torch.Generator().manual_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would make this test vacuous
        for idx in ([0, 1, 2], [0, 2], [0, 1, 2]):
            tokens = torch.randint(0, 11, (len(idx), 2, 9), generator=g)
            torch.testing.assert_close(comp.step(idx, tokens), eager.step(idx, tokens), rtol=1e-5, atol=1e-6)
    assert comp.compiled
    for k in eager.params:  # AdamW divides by sqrt(v): a near-zero gradient's rounding moves a weight by up to ~lr
        torch.testing.assert_close(comp.params[k], eager.params[k], rtol=1e-4, atol=1e-4)


def test_a_failing_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    """When torch.compile cannot build the graph (no compiler, unsupported backend), the step runs eager."""
    opt = InnerOptimizer(lr=1e-2)
    eager = StackedReplicas(_gpt(), 2, opt, torch.device("cpu"), seed=1)
    comp = StackedReplicas(_gpt(), 2, opt, torch.device("cpu"), seed=1, compile=True)

    def broken(*_a, **_k):
        raise RuntimeError("no C++ compiler found")

    comp._train_losses = broken
    tokens = torch.randint(0, 11, (2, 2, 9), generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="run.compile"):
        got = comp.step([0, 1], tokens)
    torch.testing.assert_close(got, eager.step([0, 1], tokens))
    assert not comp.compiled


@pytest.mark.parametrize("cls", [Replicas, StackedReplicas])
def test_a_replicas_step_does_not_depend_on_who_it_is_batched_with(cls):
    """The lazy flush batches whichever workers have steps pending, so a replica's step should not
    depend on who it is batched with. The stacked engine (the default for gpt) gives bit-identical
    results alone, with some replicas or with all of them (its embedding is one lookup in the
    flattened [N V, d] table, whose backward adds each row's contributions in the same order
    whatever N is). Under vmap, some weight gradients (the head's, on this model) come from a
    matmul kernel chosen by the batch size, so they agree to the last bits only."""
    opt = InnerOptimizer(lr=1e-2, grad_clip=0.5)
    g = torch.Generator().manual_seed(3)
    tokens = [torch.randint(0, 11, (4, 3, 9), generator=g) for _ in range(3)]
    engines = {groups: cls(_gpt(), 4, opt, torch.device("cpu"), seed=1)
               for groups in (((0, 1, 2, 3),), ((0,), (1, 2), (3,)), ((2, 0), (3, 1)))}
    for groups, reps in engines.items():
        for t in tokens:
            for grp in groups:
                reps.step(list(grp), t[list(grp)])
    ref = engines[((0, 1, 2, 3),)]
    for reps in engines.values():
        for k in ref.params:
            if cls is StackedReplicas:
                assert torch.equal(reps.params[k], ref.params[k]), k
            else:
                torch.testing.assert_close(reps.params[k], ref.params[k], rtol=1e-4, atol=1e-4)  # ~1% of one step's lr
