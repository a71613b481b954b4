"""Chunked DCT and per-chunk top-k: the transform DeMo (Peng, Quesnelle, Kingma 2024) sends.

A tensor's values, flattened to ``n`` entries, are cut into ``C = ceil(n / s)`` chunks of
``s`` values (the last one padded with zeros); each chunk is mapped by the orthonormal
DCT-II matrix ``D`` (``D D^T = I``, so the inverse is ``D^T``):

    X[c, j] = sum_i D[j, i] x[c s + i],   D[j, i] = a_j cos(pi (2 i + 1) j / (2 s)),
    a_0 = sqrt(1 / s), a_j = sqrt(2 / s) for j > 0.

Each chunk keeps its ``k`` largest-magnitude coefficients. Wire layout of one sender's
payload for one tensor: ``values`` fp32 [C, k] and ``indices`` int32 [C, k] (position of
the value within its chunk, 0 <= index < s), i.e. ``8 k C`` bytes:
``kernels.formats.payload_bytes(k * C, "topk:1")``. Receivers scatter every sender's
values into dense coefficients, average them over the senders (``gather_mean``) and invert
with ``D^T``.

Shapes: every function takes any leading dimensions (``...``, e.g. the replica axis
``[W]``) and works on the last one. This is the torch reference (the spec); there is no
Triton version: the matmul by a 64 x 64 matrix and ``torch.topk`` are already library
kernels, and no GPU was at hand to show a fused one winning.

Not the reference code's layout: bloc97/DeMo tiles a matrix into 2-D ``s x s`` blocks (a
separable 2-D DCT, top-k over ``s^2`` coefficients); here chunks run over the flattened
tensor, so a layout of (name, elements) fixes the payload size.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=32)
def _dct_matrix64(s: int) -> torch.Tensor:
    j = torch.arange(s, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(s, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2 * i + 1) * j / (2 * s)) * math.sqrt(2.0 / s)
    d[0] = math.sqrt(1.0 / s)
    return d


def dct_matrix(s: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D`` [s, s] (row j: frequency j), built in float64."""
    if s < 1:
        raise ValueError(f"chunk size must be >= 1 (got {s})")
    return _dct_matrix64(int(s)).to(dtype=dtype, device=device)


def n_chunks(n: int, s: int) -> int:
    """Chunks of ``s`` values that cover ``n`` values (the last one padded)."""
    return -(-int(n) // int(s))


def chunk_dct(x: torch.Tensor, s: int) -> torch.Tensor:
    """``x`` [..., n] -> DCT coefficients [..., C, s] of its chunks (tail zero-padded)."""
    n = x.shape[-1]
    c = n_chunks(n, s)
    pad = c * s - n
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    chunks = x.reshape(*x.shape[:-1], c, s)
    return chunks @ dct_matrix(s, x.dtype, x.device).T


def chunk_idct(coeffs: torch.Tensor, n: int) -> torch.Tensor:
    """Coefficients [..., C, s] -> values [..., n] (the inverse of ``chunk_dct``, padding dropped)."""
    s = coeffs.shape[-1]
    chunks = coeffs @ dct_matrix(s, coeffs.dtype, coeffs.device)
    return chunks.reshape(*coeffs.shape[:-2], -1)[..., :n]


def topk_chunks(coeffs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest-magnitude coefficients of each chunk: (values [..., C, k] in the
    coefficients' dtype, indices [..., C, k] int64 positions within the chunk), largest first."""
    s = coeffs.shape[-1]
    if not 1 <= k <= s:
        raise ValueError(f"top-k must be in 1..chunk size {s} (got {k})")
    idx = coeffs.abs().topk(k, dim=-1, largest=True, sorted=True).indices
    return coeffs.gather(-1, idx), idx


def scatter_chunks(values: torch.Tensor, indices: torch.Tensor, s: int) -> torch.Tensor:
    """Dense coefficients [..., C, s] holding ``values`` at ``indices`` and zeros elsewhere."""
    out = values.new_zeros(*values.shape[:-1], s)
    return out.scatter(-1, indices, values)


def gather_mean(values: torch.Tensor, indices: torch.Tensor, s: int) -> torch.Tensor:
    """What a receiver makes of P senders' payloads, values and indices [P, ..., C, k]: the mean
    over the P senders of their dense coefficients [..., C, s] (a position a sender did not send
    counts as its zero).

    The reference (bloc97/DeMo) divides each position by the number of senders that sent it
    instead; that makes a sent zero (a chunk of exact zeros, e.g. an embedding row no token
    used, picks k of its tied zeros arbitrarily) dilute the others, so the result depends on how
    ``topk`` breaks ties. Dividing by P does not, and it is the mean the paper writes."""
    return scatter_add_chunks(values, indices, s).sum(dim=0) / values.shape[0]


def scatter_add_chunks(values: torch.Tensor, indices: torch.Tensor, s: int) -> torch.Tensor:
    """Dense coefficients [..., C, s]: ``values`` added at ``indices`` (zeros elsewhere)."""
    out = values.new_zeros(*values.shape[:-1], s)
    return out.scatter_add(-1, indices, values)
