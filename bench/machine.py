"""Where a benchmark ran: the ``machine`` object every torch benchmark in bench/ prints."""

from __future__ import annotations

import platform


def torch_machine(device) -> dict:
    """Platform, Python, torch (and triton when it imports), CPU threads, device and GPU name."""
    import torch

    from kernels.backend import triton_available

    out = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
           "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "device": str(device)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    if triton_available():
        import triton

        out["triton"] = triton.__version__
    return out
