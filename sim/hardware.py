"""What the simulator knows about accelerators: one table, read by the step-time model
(``sim.steptime``, ``compute.step_time`` mode ``flops``) and by the scenario's checks of GPU
names. Separate so that neither the schema nor the numerics owns a hardware fact.
"""

from __future__ import annotations

# Peak dense bf16 FLOP/s of common accelerators (vendor datasheets, no sparsity).
GPU_PEAK_FLOPS: dict[str, float] = {
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
    "B200": 2250e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "RTX4090": 165e12,
    "V100": 125e12,
    "TPUv5e": 197e12,
}
