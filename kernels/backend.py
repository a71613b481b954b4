"""Which implementation runs a kernel: ``backend: auto | torch | triton``.

``torch`` is the reference (the spec; runs on any device). ``triton`` needs the optional
``triton`` package and a CUDA tensor, or ``TRITON_INTERPRET=1`` (Triton's interpreter
runs the same kernels on CPU tensors, slowly but exactly: that is how the tests check
them without a GPU). ``auto`` picks triton for CUDA tensors when it imports, else torch.
"""

from __future__ import annotations

import os
from functools import lru_cache

BACKENDS = ("auto", "torch", "triton")


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when ``import triton`` works (the package is an optional extra)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install (missing driver libraries)
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, tensor) -> str:
    """'torch' or 'triton' for a kernel on ``tensor``; refuses a triton that cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend '{backend}'; known: {', '.join(BACKENDS)}")
    if backend == "torch":
        return "torch"
    on_cuda = tensor.is_cuda
    if backend == "auto":
        return "triton" if on_cuda and triton_available() else "torch"
    if not triton_available():
        raise RuntimeError("backend 'triton' asked for but triton does not import; pip install 'locosim[triton]' "
                           "or use backend 'auto' / 'torch'")
    if not on_cuda and not interpreting():
        raise RuntimeError("backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 to run the kernels on CPU)")
    return "triton"
