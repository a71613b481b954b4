"""Fused outer Nesterov update (DiLoCo's outer optimizer), in place.

PyTorch's SGD form, as ``sim.algorithms.transforms.OuterNesterov`` (DiLoCo, OpenDiLoCo,
torchft):  v <- mu v + delta;  theta <- theta - lr (delta + mu v)  (``nesterov=False``:
theta <- theta - lr v). One pass over three same-shaped fp32 tensors ``param``,
``momentum`` (updated in place) and ``delta`` (read), instead of four elementwise kernels
and three temporaries. The torch code is the spec; the Triton kernel
(``kernels.triton_kernels``) is tested against it (fp32 tolerance: a GPU may fuse a
multiply and an add into one FMA).
"""

from __future__ import annotations

import torch

from kernels.backend import resolve_backend


def outer_nesterov_(param: torch.Tensor, momentum: torch.Tensor, delta: torch.Tensor, lr: float, mu: float,
                    nesterov: bool = True, backend: str = "auto") -> None:
    """Update ``param`` and ``momentum`` in place from ``delta`` (all one shape, fp32)."""
    if not (param.shape == momentum.shape == delta.shape):
        raise ValueError(f"param, momentum and delta must share a shape (got {tuple(param.shape)}, "
                         f"{tuple(momentum.shape)}, {tuple(delta.shape)})")
    if (resolve_backend(backend, param) == "triton" and param.is_contiguous() and momentum.is_contiguous()
            and param.dtype == momentum.dtype == torch.float32):
        from kernels import triton_kernels as tk

        tk.outer_nesterov_(param, momentum, delta.float(), lr, mu, nesterov)
        return
    momentum.mul_(mu).add_(delta)
    step = delta + mu * momentum if nesterov else momentum
    param.sub_(lr * step)
