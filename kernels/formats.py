"""Wire formats: the single source of truth for payload sizes.

Every transfer the engine simulates takes its size from ``payload_bytes``, and the
numerics apply the matching quantization (``kernels.quantize``), so wire time and the
real effect of a lossy format cannot drift apart. This module imports no torch, so
timing-only code paths stay free of tensor libraries.
"""

from __future__ import annotations

BYTES_PER_ELEMENT: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}
WIRE_FORMATS = tuple(BYTES_PER_ELEMENT)


def payload_bytes(n_elements: int, fmt: str) -> int:
    """Bytes on the wire for ``n_elements`` values sent in format ``fmt``."""
    if fmt not in BYTES_PER_ELEMENT:
        raise ValueError(f"unknown wire format '{fmt}'; known: {', '.join(WIRE_FORMATS)}")
    if n_elements < 0:
        raise ValueError(f"n_elements must be >= 0 (got {n_elements})")
    return int(n_elements) * BYTES_PER_ELEMENT[fmt]
