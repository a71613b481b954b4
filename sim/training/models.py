"""Tiny models that are really trained: a GPT and a next-token MLP.

Plain ``nn.Module``s; replicas are not separate modules but stacked parameter tensors
stepped together with ``torch.func`` (see ``replicas.py``). Attention is written out
(no fused kernels) so it vmaps on every backend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, mlp_ratio * d)
        self.fc2 = nn.Linear(mlp_ratio * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q = q.reshape(b, t, h, d // h).transpose(1, 2)
        k = k.reshape(b, t, h, d // h).transpose(1, 2)
        v = v.reshape(b, t, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    """Pre-LayerNorm decoder-only transformer with learned positions and an untied head."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, seq_len: int, mlp_ratio: int = 4):
        super().__init__()
        self.seq_len = seq_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[-1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class NextTokenMLP(nn.Module):
    """Bengio-style MLP: embeddings of the previous ``context`` tokens -> next token."""

    def __init__(self, vocab_size: int, d_model: int, hidden: int, context: int, seq_len: int):
        super().__init__()
        self.context = context
        self.vocab_size = vocab_size
        self.emb = nn.Embedding(vocab_size + 1, d_model)  # last index pads the left edge
        self.fc1 = nn.Linear(context * d_model, hidden)
        self.fc2 = nn.Linear(hidden, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        b, t = idx.shape
        pad = torch.full((b, self.context - 1), self.vocab_size, dtype=idx.dtype, device=idx.device)
        ctx = torch.cat([pad, idx], dim=1).unfold(1, self.context, 1)  # [b, t, context]
        x = self.emb(ctx).reshape(b, t, -1)
        return self.fc2(F.gelu(self.fc1(x)))


def _gpt(spec, vocab: int) -> nn.Module:
    return TinyGPT(vocab, spec.d_model, spec.n_layers, spec.n_heads, spec.seq_len, spec.mlp_ratio)


def _mlp(spec, vocab: int) -> nn.Module:
    return NextTokenMLP(vocab, spec.d_model, spec.hidden, spec.context, spec.seq_len)


def _plugin(spec, vocab: int) -> nn.Module:
    """A user's model class (``model.plugin``), built as ``Class(vocab_size=vocab, **args)``."""
    from sim.loader import PluginError, load_object

    cls = load_object(spec.plugin, "model.plugin")
    try:
        model = cls(vocab_size=vocab, **spec.args)
    except Exception as err:
        raise PluginError(f"model.args: {cls.__name__}(vocab_size={vocab}, **args) failed: "
                          f"{type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise PluginError(f"model.plugin: {cls.__name__} must build a torch.nn.Module (got {type(model).__name__})")
    return model


MODELS = {"gpt": _gpt, "mlp": _mlp, "plugin": _plugin}


def build_model(spec, vocab_size: int) -> nn.Module:
    if spec.kind not in MODELS:
        raise ValueError(f"unknown model kind '{spec.kind}'; known: {', '.join(MODELS)}")
    return MODELS[spec.kind](spec, vocab_size)


def n_layers_of(spec) -> int:
    return getattr(spec, "n_layers", 1)


# --------------------------------------------------------------------------- explicit replica dimension
def _stacked_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x [N, ..., in] @ w[N, out, in]^T + b [N, out], one batched matmul (torch.baddbmm) for all N replicas."""
    n, d_in = x.shape[0], x.shape[-1]
    y = torch.baddbmm(b.unsqueeze(1), x.reshape(n, -1, d_in), w.transpose(1, 2))
    return y.reshape(*x.shape[:-1], w.shape[1])


def _stacked_layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return F.layer_norm(x, x.shape[-1:]) * w.reshape(shape) + b.reshape(shape)


def stacked_gpt_logits(params: dict[str, torch.Tensor], idx: torch.Tensor, n_layers: int, n_heads: int) -> torch.Tensor:
    """TinyGPT's forward for N replicas at once, written with the replica dimension explicit:
    ``params`` are TinyGPT's parameters (same names) stacked to ``[N, ...]``, ``idx`` is
    ``[N, B, T]``; returns logits ``[N, B, T, V]``. Every linear layer is one ``baddbmm``
    over the replicas, so one autograd pass gives every replica's gradient (the same
    numbers as ``torch.func.vmap`` over ``TinyGPT``, to fp32 rounding)."""
    n, b, t = idx.shape
    tok = params["tok.weight"]  # [N, V, d]: one lookup in the flattened table, replica r's rows offset by r V
    rows = idx + torch.arange(n, device=idx.device).reshape(n, 1, 1) * tok.shape[1]
    x = F.embedding(rows, tok.reshape(-1, tok.shape[-1])) + params["pos.weight"][:, :t].unsqueeze(1)
    d = x.shape[-1]
    h, dh = n_heads, d // n_heads
    causal = torch.ones(t, t, dtype=torch.bool, device=idx.device).triu(1)
    for i in range(n_layers):
        p = f"blocks.{i}."
        qkv = _stacked_linear(_stacked_layer_norm(x, params[p + "ln1.weight"], params[p + "ln1.bias"]),
                              params[p + "qkv.weight"], params[p + "qkv.bias"])
        q, k, v = (z.reshape(n, b, t, h, dh).transpose(2, 3) for z in qkv.split(d, dim=-1))  # [N, B, h, T, dh]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
        att = att.masked_fill(causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(2, 3).reshape(n, b, t, d)
        x = x + _stacked_linear(y, params[p + "proj.weight"], params[p + "proj.bias"])
        hid = _stacked_linear(_stacked_layer_norm(x, params[p + "ln2.weight"], params[p + "ln2.bias"]),
                              params[p + "fc1.weight"], params[p + "fc1.bias"])
        x = x + _stacked_linear(F.gelu(hid), params[p + "fc2.weight"], params[p + "fc2.bias"])
    x = _stacked_layer_norm(x, params["ln_f.weight"], params["ln_f.bias"])
    return _stacked_linear(x, params["head.weight"], params["head.bias"])
