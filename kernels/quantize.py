"""Quantize / dequantize / dequantize-and-average for the wire formats of ``kernels.formats``.

The torch code here is the spec: it runs on any device, and ``kernels.triton_kernels``
(the block formats, on CUDA) is tested against it bit for bit. Every public function takes
``backend: auto | torch | triton`` (``kernels.backend``).

Layout. ``x`` is ``[..., n]``: each row (the last dim) is one payload, one sender's
message; leading dims (replicas, senders) are independent payloads. ``quantize`` returns
a ``Packed`` whose tensors are exactly what goes on the wire, so
``Packed.payload_nbytes == kernels.formats.payload_bytes(n, fmt)``:

* ``fp32`` / ``bf16`` / ``fp16``: ``data [..., n]`` in that dtype (casts round to nearest even).
* ``int8:B``: ``data [..., n]`` int8 codes ``q = round(x / s)`` (round half to even,
  clamped to +-127), ``scales [..., ceil(n/B)]`` fp32 ``s = absmax(block) / 127``;
  value ``q * s``.
* ``fp8:B``: ``data [..., n]`` uint8 bit patterns of float8 e4m3fn (bias 7, subnormals,
  max 448, no infinities) of ``x / s`` clamped to +-448, rounded to nearest even;
  ``scales`` fp32 ``s = absmax(block) / 448``; value ``fp8(code) * s``.
* ``e3m0:B`` (FP4, 1 sign + 3 exponent bits, no mantissa): ``data [..., ceil(n/2)]``
  uint8, element 2i in the low nibble of byte i and 2i+1 in the high nibble (0 when n is
  odd); nibble ``sign << 3 | e``; value ``(-1)^sign * s * 2^(e-7)`` for e in 1..7 and 0
  for e = 0; ``scales`` fp32 ``s = absmax(block)``. ``|x| / s`` goes to the nearest of
  0, 2^-6, ..., 2^0 in linear distance (ties upward): relative error at most 1/3 above
  2^-7 s.
* ``int8:tensor`` / ``fp8:tensor`` / ``e3m0:tensor``: as above with one block, the whole
  payload: ``scales [..., 1]`` (``[..., 0]`` when n = 0), so e3m0 sends exactly 4 bits a
  value plus one fp32 scale. Equal, value for value, to the block format with B = n (n
  rounded up to even; the zero padding is never sent).
* ``topk:f``: ``data [..., k]`` fp32 values and ``indices [..., k]`` int32 positions
  (ascending) of the k = ceil(f n) largest magnitudes; the rest are received as 0.

Blocks run along the row; the last one may be short. A block of zeros has ``s = 0`` and
decodes to zeros. Inputs must be finite. Dequantized values are fp32; averages are fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.backend import resolve_backend
from kernels.formats import BYTES_PER_ELEMENT, parse_format, topk_count

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QMAX = {"int8": 127.0, "fp8": 448.0, "e3m0": 1.0}  # |x| / s is at most this
# 2^(e-7) for the E3M0 exponent field e (0 encodes zero)
_E3M0_LEVELS = [0.0] + [2.0 ** (e - 7) for e in range(1, 8)]


@dataclass(frozen=True)
class Packed:
    """A quantized payload (or ``[...]`` of payloads): the tensors that go on the wire."""

    fmt: str                              # canonical format string, e.g. 'int8:128'
    n: int                                # values per payload
    data: torch.Tensor                    # [..., m] codes or values (see module docstring)
    scales: torch.Tensor | None = None    # [..., ceil(n/B)] fp32, block formats
    indices: torch.Tensor | None = None   # [..., k] int32, top-k

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[:-1])

    @property
    def nbytes(self) -> int:
        """Bytes of every payload held here together."""
        return sum(t.numel() * t.element_size() for t in (self.data, self.scales, self.indices) if t is not None)

    @property
    def payload_nbytes(self) -> int:
        """Bytes of one payload: what ``kernels.formats.payload_bytes(n, fmt)`` says."""
        rows = 1
        for d in self.lead_shape:
            rows *= d
        return self.nbytes // max(rows, 1)

    def select(self, i) -> "Packed":
        """Payload(s) ``i`` of the leading dim."""
        pick = (lambda t: None if t is None else t[i])
        return Packed(self.fmt, self.n, self.data[i], pick(self.scales), pick(self.indices))


# --------------------------------------------------------------------------- public API
def quantize(x: torch.Tensor, fmt: str, backend: str = "auto") -> Packed:
    """Pack ``x [..., n]`` (each row one payload) in wire format ``fmt``."""
    f = parse_format(fmt)
    if f.elementwise:
        return Packed(str(f), x.shape[-1] if x.dim() else 1, x.to(_DTYPES[f.name]))
    lead, n = tuple(x.shape[:-1]), x.shape[-1]
    x2 = x.reshape(-1, n).float().contiguous()
    if f.name == "topk":  # no Triton kernel: torch.topk is already one kernel on CUDA
        return _topk_quantize(x2, n, f.topk_fraction, str(f), lead)
    if resolve_backend(backend, x) == "triton":
        from kernels import triton_kernels as tk

        data, scales = tk.quantize_blocks(x2, f.name, f.block_for(n), per_row=f.per_tensor)
    else:
        data, scales = _quantize_blocks_ref(x2, f.name, f.block_for(n))
    return Packed(str(f), n, data.reshape(*lead, -1), scales.reshape(*lead, -1))


def dequantize(p: Packed, backend: str = "auto") -> torch.Tensor:
    """fp32 values ``[..., n]`` the receivers see of ``p``."""
    f = parse_format(p.fmt)
    if f.elementwise:
        return p.data.to(torch.float32)
    lead = p.lead_shape
    if f.name == "topk":
        out = torch.zeros(*lead, p.n, dtype=torch.float32, device=p.data.device)
        return out.scatter_(-1, p.indices.long(), p.data.float())
    data = p.data.reshape(-1, p.data.shape[-1])
    scales = p.scales.reshape(-1, p.scales.shape[-1])
    if resolve_backend(backend, p.data) == "triton":
        from kernels import triton_kernels as tk

        out = tk.dequantize_blocks(data, scales, p.n, f.name, f.block_for(p.n))
    else:
        out = _dequantize_blocks_ref(data, scales, p.n, f.name, f.block_for(p.n))
    return out.reshape(*lead, p.n)


def dequantize_mean(p: Packed, backend: str = "auto") -> torch.Tensor:
    """fp32 mean over the leading dim (K senders) of the dequantized payloads: ``[K, ..., n]``
    packed -> ``[..., n]``. What a receiver of K contributions accumulates (in fp32)."""
    f = parse_format(p.fmt)
    if (not f.elementwise and f.name != "topk" and p.data.dim() >= 2
            and resolve_backend(backend, p.data) == "triton"):
        from kernels import triton_kernels as tk

        k = p.data.shape[0]
        rest = p.lead_shape[1:]
        data = p.data.reshape(k, -1, p.data.shape[-1])
        scales = p.scales.reshape(k, -1, p.scales.shape[-1])
        return tk.dequantize_mean_blocks(data, scales, p.n, f.name, f.block_for(p.n)).reshape(*rest, p.n)
    return dequantize(p, "torch").mean(dim=0)


def roundtrip(x: torch.Tensor, fmt: str, backend: str = "auto") -> torch.Tensor:
    """What the receiver sees of ``x [..., n]`` after it crossed the wire in ``fmt`` (fp32)."""
    if fmt == "fp32" and x.dtype == torch.float32:
        return x
    return dequantize(quantize(x, fmt, backend), backend)


# --------------------------------------------------------------------------- torch reference
def _blocks(x2: torch.Tensor, block: int) -> torch.Tensor:
    """[R, n] -> [R, nb, B], the last block zero-padded (padding is never sent)."""
    r, n = x2.shape
    nb = -(-n // block)
    pad = nb * block - n
    return (F.pad(x2, (0, pad)) if pad else x2).reshape(r, nb, block)


def e3m0_codes(a: torch.Tensor) -> torch.Tensor:
    """Exponent field e (int32, 0..7) of ``a = |x| / s`` in [0, 1]: the nearest of 0 and
    2^(e-7) in linear distance, ties upward. Read off the fp32 bits: with a in [2^k, 2^(k+1)),
    e = k + 7, plus 1 when the first mantissa bit is set (a >= 1.5 * 2^k, past the midpoint);
    a in [2^-7, 2^-6) is past the midpoint between 0 and 2^-6, so e = 1; below, e = 0."""
    bits = a.contiguous().view(torch.int32)
    k = ((bits >> 23) & 0xFF) - 127
    top = (bits >> 22) & 1
    return torch.where(k == -7, torch.ones_like(k), (k + 7 + top).clamp(0, 7))


def _quantize_blocks_ref(x2: torch.Tensor, name: str, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    r, n = x2.shape
    xb = _blocks(x2, block)
    absmax = xb.abs().amax(dim=-1)                       # [R, nb]
    scales = absmax / QMAX[name]
    safe = torch.where(scales > 0, scales, torch.ones_like(scales)).unsqueeze(-1)
    y = xb / safe
    if name == "int8":
        codes = torch.round(y).clamp(-127, 127).to(torch.int8).reshape(r, -1)[:, :n]
    elif name == "fp8":
        codes = y.clamp(-448.0, 448.0).to(torch.float8_e4m3fn).view(torch.uint8).reshape(r, -1)[:, :n]
    else:  # e3m0
        sign = (y.contiguous().view(torch.int32) >> 31) & 1
        nib = ((sign << 3) | e3m0_codes(y.abs())).reshape(r, -1)[:, :n]
        if n % 2:
            nib = F.pad(nib, (0, 1))
        codes = (nib[:, 0::2] | (nib[:, 1::2] << 4)).to(torch.uint8)
    return codes.contiguous(), scales.contiguous()


def _dequantize_blocks_ref(codes: torch.Tensor, scales: torch.Tensor, n: int, name: str, block: int) -> torch.Tensor:
    r = codes.shape[0]
    if name == "int8":
        vals = codes.to(torch.float32)
    elif name == "fp8":
        vals = codes.contiguous().view(torch.float8_e4m3fn).to(torch.float32)
    else:  # e3m0
        c = codes.to(torch.int32)
        nib = torch.stack((c & 0xF, c >> 4), dim=-1).reshape(r, -1)[:, :n]
        levels = torch.tensor(_E3M0_LEVELS, dtype=torch.float32, device=codes.device)
        vals = levels[nib & 7] * (1 - 2 * (nib >> 3)).to(torch.float32)
    s = scales.repeat_interleave(block, dim=-1)[:, :n]
    return vals * s


def _topk_quantize(x2: torch.Tensor, n: int, fraction: float, fmt: str, lead: tuple[int, ...]) -> Packed:
    k = topk_count(n, fraction)
    idx = x2.abs().topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values
    vals = x2.gather(-1, idx)
    return Packed(fmt, n, vals.reshape(*lead, k), indices=idx.to(torch.int32).reshape(*lead, k))


__all__ = ["Packed", "quantize", "dequantize", "dequantize_mean", "roundtrip", "BYTES_PER_ELEMENT"]
