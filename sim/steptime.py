"""Step-time models: how long one inner step takes in virtual time (used by ``sim.build``).

``fixed``: a number of seconds. ``flops``: 6 x params x tokens per step (Kaplan et al.)
divided by the GPU's peak FLOP/s x MFU x GPUs per node. ``measured``: the median wall time
of this device running the real batched step of the scenario's model (one replica).
Each node's time is then multiplied by its region's ``step_time_multiplier``. A virtual-time
model, so it lives next to the builder, not with the numerics; the GPU table is ``sim.hardware``.
"""

from __future__ import annotations

import time

from sim.hardware import GPU_PEAK_FLOPS


def flops_per_step(n_params: int, tokens_per_step: int) -> float:
    return 6.0 * n_params * tokens_per_step


def base_step_time_s(step_time, n_params: int, tokens_per_step: int, gpu: str | None, measure=None) -> float:
    """Seconds per inner step at multiplier 1 for a node with ``gpu`` (None: the default)."""
    if step_time.mode == "fixed":
        return step_time.step_time_s
    if step_time.mode == "flops":
        peak = GPU_PEAK_FLOPS[gpu or step_time.gpu]
        return flops_per_step(n_params, tokens_per_step) / (peak * step_time.mfu * step_time.gpus_per_node)
    if step_time.mode == "measured":
        if measure is None:
            raise ValueError("compute.step_time mode 'measured' needs the numerics (numerics are off)")
        return measure(step_time.repeats)
    raise ValueError(f"unknown step_time mode '{step_time.mode}'; known: fixed, flops, measured")


def measure_step_s(step_once, repeats: int) -> float:
    """Median wall seconds of ``step_once()`` after two warm-up calls."""
    step_once()
    step_once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step_once()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
