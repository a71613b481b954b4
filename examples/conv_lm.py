"""A model from one file: a small causal convolutional language model, used by a scenario as
``model: {kind: plugin, plugin: conv_lm.py:ConvLM, args: {d_model: 32, n_layers: 2}}``.

Any ``torch.nn.Module`` works if its forward maps tokens [batch, seq_len] to logits
[batch, seq_len, vocab_size] (or, with ``output: loss`` in the model section, tokens and
targets to its own loss, one number) and it is built as ``Class(vocab_size=V, **args)``. locosim
trains it on the vmap engine (all replicas stacked, one ``torch.func`` call), so its
forward must be vmappable (plain tensor ops; no ``.item()`` or branches on tensor values, no
in-place updates of buffers such as BatchNorm's running statistics): ``locosim validate`` and
``run`` try one forward and backward under vmap on the meta device before any work, and
refuse a model that fails there with the reason. Layers named
``blocks.<i>.`` are what per-layer timing (``sync_grain: layer``) splits payloads by.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalConvBlock(nn.Module):
    """Depthwise causal convolution over time, then a two-layer MLP; both residual."""

    def __init__(self, d: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.norm1 = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel, groups=d)
        self.norm2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x).transpose(1, 2)  # [b, d, t]
        h = self.conv(F.pad(h, (self.kernel - 1, 0))).transpose(1, 2)  # sees only the past
        x = x + h
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ConvLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 32, n_layers: int = 2, kernel: int = 4):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(CausalConvBlock(d_model, kernel) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
