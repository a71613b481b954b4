"""Quantize / dequantize for the wire formats of ``kernels.formats`` (torch reference).

The torch reference is the spec. Layout: a payload is a tensor of any shape; fp32 is
sent as is, bf16 / fp16 are element-wise casts (round to nearest even). Dequantized
values are fp32 and averaging happens in fp32.
"""

from __future__ import annotations

import torch

from kernels.formats import WIRE_FORMATS

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def quantize(x: torch.Tensor, fmt: str) -> torch.Tensor:
    if fmt not in _DTYPES:
        raise ValueError(f"unknown wire format '{fmt}'; known: {', '.join(WIRE_FORMATS)}")
    return x.to(_DTYPES[fmt])


def dequantize(q: torch.Tensor, fmt: str) -> torch.Tensor:
    return q.to(torch.float32)


def roundtrip(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """What the receiver sees of ``x`` after it crossed the wire in format ``fmt``."""
    if fmt == "fp32" and x.dtype == torch.float32:
        return x
    return dequantize(quantize(x, fmt), fmt)
