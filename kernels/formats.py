"""Wire formats: the single source of truth for payload sizes.

Every transfer the engine simulates takes its size from ``payload_bytes``, and the
numerics apply the matching quantization (``kernels.quantize``), so wire time and the
real effect of a lossy format cannot drift apart. This module imports no torch, so
timing-only code paths stay free of tensor libraries.

A format is named by a string, ``NAME`` or ``NAME:PARAM`` (the same string in YAML, in a
``Send`` and here). One payload is one flat vector of ``n`` values (one sender's message);
its bytes on the wire, with ``B`` the block size and ``k`` the values kept:

=============  ====================================  =========================================
name           what is sent                          bytes for n values
=============  ====================================  =========================================
``fp32``       the values                            4 n
``bf16``       bf16 casts (round to nearest even)    2 n
``fp16``       fp16 casts (round to nearest even)    2 n
``int8[:B]``   int8 codes, one fp32 absmax/127       n + 4 ceil(n / B)
               scale per block of B (default 128)
``fp8[:B]``    fp8 e4m3 codes, one fp32 absmax/448   n + 4 ceil(n / B)
               scale per block of B (default 128)
``e3m0[:B]``   4-bit floats (1 sign, 3 exponent,     ceil(n / 2) + 4 ceil(n / B)
               0 mantissa bits), two per byte, one
               fp32 absmax scale per block of B
               (default 128; B even)
``X:tensor``   X = int8, fp8 or e3m0 with ONE fp32   as X with a single scale: n + 4;
               scale for the whole payload (its      e3m0 (exactly 4 bits a value):
               absmax), e.g. ``e3m0:tensor``         ceil(n / 2) + 4  (0 for n = 0)
``topk[:f]``   the k = ceil(f n) largest-magnitude   8 k  (fp32 value + int32 index)
               values (default f = 0.01) and their
               int32 indices
=============  ====================================  =========================================

E3M0 is the FP4 of Streaming DiLoCo (REFERENCE.md section 2); int8 blockwise absmax
stands for INTELLECT-1's int8 all-reduce (section 6: it used a 256-bucket codebook; the
bytes are the same to within the scales); fp8 e4m3 with fp32 scales is torchft's
``should_quantize`` (per row there, per block here). Receivers dequantize to fp32 and
average in fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

BYTES_PER_ELEMENT: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}
BLOCK_FORMATS = ("int8", "fp8", "e3m0")
SPARSE_FORMATS = ("topk",)
WIRE_FORMATS = tuple(BYTES_PER_ELEMENT) + BLOCK_FORMATS + SPARSE_FORMATS
DEFAULT_BLOCK_SIZE = 128
DEFAULT_TOPK_FRACTION = 0.01
SCALE_BYTES = 4   # one fp32 scale per block
INDEX_BYTES = 4   # one int32 index per kept value (top-k)
TOPK_VALUE_BYTES = 4  # kept values travel as fp32

_FORMS = ("fp32, bf16, fp16, int8[:B], fp8[:B], e3m0[:B] (B: block size, default 128; even for e3m0; "
          "B = 'tensor': one scale for the whole payload, e.g. e3m0:tensor), "
          "topk[:f] (f: fraction kept, 0 < f <= 1, default 0.01)")
PER_TENSOR = "tensor"  # the block parameter meaning "one block: the whole payload"


@dataclass(frozen=True)
class WireFormat:
    """A parsed format string: its base ``name`` and its parameter (block size or top-k fraction).
    ``per_tensor``: a block format with one scale for the whole payload (``block_size`` is None;
    ``block_for(n)`` gives the block the kernels use)."""

    name: str
    block_size: int | None = None
    topk_fraction: float | None = None
    per_tensor: bool = False

    def block_for(self, n: int) -> int:
        """Block size the kernels use for a payload of ``n`` values: B, or for ``:tensor`` the
        whole payload, rounded up to an even size (so e3m0's nibbles pair up within the block;
        the padding is zeros, which change no absmax and are never sent)."""
        if self.per_tensor:
            return max(2, n + (n & 1))
        if self.block_size is None:
            raise ValueError(f"wire format '{self}' has no blocks")
        return self.block_size

    @property
    def lossless(self) -> bool:
        return self.name == "fp32"

    @property
    def elementwise(self) -> bool:
        """True for plain casts: each value is sent on its own, so how a payload is split into
        tensors does not change what is received."""
        return self.name in BYTES_PER_ELEMENT

    def __str__(self) -> str:
        if self.per_tensor:
            return f"{self.name}:{PER_TENSOR}"
        if self.block_size is not None:
            return f"{self.name}:{self.block_size}"
        if self.topk_fraction is not None:
            return f"{self.name}:{self.topk_fraction:g}"
        return self.name


@lru_cache(maxsize=256)
def parse_format(fmt: str) -> WireFormat:
    """``'int8:256'`` -> WireFormat('int8', block_size=256). Raises ValueError listing the valid forms."""
    if isinstance(fmt, WireFormat):
        return fmt
    if not isinstance(fmt, str):
        raise ValueError(f"wire format must be a string; valid: {_FORMS}")
    name, sep, param = fmt.partition(":")
    if name in BYTES_PER_ELEMENT:
        if sep:
            raise ValueError(f"wire format '{fmt}': {name} takes no parameter; valid: {_FORMS}")
        return WireFormat(name)
    if name in BLOCK_FORMATS:
        block = DEFAULT_BLOCK_SIZE
        if sep and param == PER_TENSOR:
            return WireFormat(name, per_tensor=True)
        if sep:
            if not param.isdigit() or int(param) < 1:
                raise ValueError(f"wire format '{fmt}': block size must be a positive integer or "
                                 f"'{PER_TENSOR}'; valid: {_FORMS}")
            block = int(param)
        if name == "e3m0" and block % 2:
            raise ValueError(f"wire format '{fmt}': e3m0 packs two values per byte, so its block size must be even")
        return WireFormat(name, block_size=block)
    if name in SPARSE_FORMATS:
        frac = DEFAULT_TOPK_FRACTION
        if sep:
            try:
                frac = float(param)
            except ValueError:
                frac = float("nan")
            if not 0 < frac <= 1:
                raise ValueError(f"wire format '{fmt}': top-k fraction must be in (0, 1]; valid: {_FORMS}")
        return WireFormat(name, topk_fraction=frac)
    raise ValueError(f"unknown wire format '{fmt}'; valid: {_FORMS}")


def topk_count(n_elements: int, fraction: float) -> int:
    """Values kept of ``n_elements`` by top-k at ``fraction``: ceil(f n), at least 1 of a non-empty payload."""
    if n_elements <= 0:
        return 0
    # round first so that e.g. 0.07 * 100 = 7.000000000000001 keeps 7, not 8
    return min(n_elements, max(1, math.ceil(round(fraction * n_elements, 9))))


def payload_bytes(n_elements: int, fmt: str) -> int:
    """Bytes on the wire for one payload of ``n_elements`` values sent in format ``fmt``
    (formula per format in the module docstring; equals the packed tensors' sizes)."""
    if n_elements < 0:
        raise ValueError(f"n_elements must be >= 0 (got {n_elements})")
    f = parse_format(fmt)
    n = int(n_elements)
    if f.name in BYTES_PER_ELEMENT:
        return n * BYTES_PER_ELEMENT[f.name]
    if f.name in BLOCK_FORMATS:
        blocks = (1 if n else 0) if f.per_tensor else -(-n // f.block_size)
        codes = -(-n // 2) if f.name == "e3m0" else n
        return codes + SCALE_BYTES * blocks
    k = topk_count(n, f.topk_fraction)
    return k * (TOPK_VALUE_BYTES + INDEX_BYTES)
