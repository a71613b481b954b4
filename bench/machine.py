"""Where a benchmark ran: the ``machine`` object every torch benchmark in bench/ prints."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_machine() -> dict:
    """CPU model (from /proc/cpuinfo where there is one), core counts, platform and Python."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "platform": platform.platform(), "python": platform.python_version()}


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
