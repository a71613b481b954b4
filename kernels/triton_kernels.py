"""Triton versions of the block-format kernels and the fused outer Nesterov update.

Optional: this module imports ``triton`` at the top, and only ``kernels.quantize`` /
``kernels.outer`` import it, when ``backend`` resolves to triton (``kernels.backend``).
The torch code in ``kernels.quantize`` and ``kernels.outer`` is the spec; the wire layout
and argument shapes are stated there and are the same here. Codes and scales equal the
reference bit for bit (tests run these kernels under ``TRITON_INTERPRET=1`` on CPU):
every rounding step is written out with exact operations -- IEEE division
(``tl.div_rn``, not the approximate ``/`` of CUDA), round-half-to-even from floor and
fraction, powers of two built from exponent bits -- so no step depends on a
device's fast-math choices. Averages and the outer update are fp32 sums and products that
may contract to FMAs on a GPU: they match the reference to fp32 tolerance.

Grids: quantize runs one program per G blocks of one payload row (a [G, B'] tile, B' the
block size rounded up to a power of two); dequantize and the outer update run one
program per TILE elements.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_FMT = {"int8": 0, "fp8": 1, "e3m0": 2}
_QMAX = {"int8": 127.0, "fp8": 448.0, "e3m0": 1.0}
TILE = 1024
PER_ROW_TILE = 128  # elements a quantize tile covers when one scale spans the row (even: e3m0 pairs)


@triton.jit
def _rne(y):
    """Round to nearest integer, ties to even (as torch.round), from exact floor / fraction."""
    fl = tl.floor(y)
    frac = y - fl
    odd = (fl - 2.0 * tl.floor(fl * 0.5)) == 1.0
    up = (frac > 0.5) | ((frac == 0.5) & odd)
    return fl + up.to(tl.float32)


@triton.jit
def _pow2(e):
    """2^e as fp32 for an int32 exponent e in the normal range, built from its bits."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _fp8_code(y):
    """float8 e4m3fn bit pattern (int32, 0..255) of fp32 ``y`` with |y| <= 448, round to nearest
    even: E = max(exponent, -6) (-6 is the subnormal exponent), r = rne(|y| 2^(3-E)) in
    0..16, code = (E + 6) * 8 + r (r = 16 carries into the exponent, r < 8 is subnormal)."""
    bits = y.to(tl.int32, bitcast=True)
    sign = (bits >> 31) & 1
    a = tl.abs(y)
    e = ((a.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    big_e = tl.maximum(e, -6)
    r = _rne(a * _pow2(3 - big_e))
    return (sign << 7) | ((big_e + 6) * 8 + r.to(tl.int32))


@triton.jit
def _fp8_value(c):
    """fp32 value of an e4m3fn bit pattern c (int32): (8 + M) 2^(E-10), or M 2^-9 when E = 0."""
    sign = (c >> 7) & 1
    big_e = (c >> 3) & 15
    m = c & 7
    mant = tl.where(big_e == 0, m, m + 8).to(tl.float32)
    v = mant * _pow2(tl.maximum(big_e, 1) - 10)
    return tl.where(sign == 1, -v, v)


@triton.jit
def _e3m0_nibble(y):
    """sign << 3 | e for fp32 y = x / s with |y| <= 1 (rule: kernels.quantize.e3m0_codes)."""
    bits = y.to(tl.int32, bitcast=True)
    sign = (bits >> 31) & 1
    k = ((bits >> 23) & 0xFF) - 127
    top = (bits >> 22) & 1
    e = tl.minimum(tl.maximum(k + 7 + top, 0), 7)
    e = tl.where(k == -7, 1, e)
    return (sign << 3) | e


@triton.jit
def _e3m0_value(nib):
    e = nib & 7
    mag = tl.where(e > 0, _pow2(e - 7), 0.0)
    return tl.where(((nib >> 3) & 1) == 1, -mag, mag)


@triton.jit
def _quantize_kernel(x_ptr, q_ptr, s_ptr, n, nb, nq, B, QMAX: tl.constexpr, FMT: tl.constexpr,
                     G: tl.constexpr, BP2: tl.constexpr, PER_ROW: tl.constexpr):
    row = tl.program_id(1).to(tl.int64)
    blk = tl.program_id(0) * G + tl.arange(0, G)
    col = tl.arange(0, BP2)
    offs = blk[:, None] * B + col[None, :]
    m = (col[None, :] < B) & (offs < n) & (blk[:, None] < nb)
    x = tl.load(x_ptr + row * n + offs, mask=m, other=0.0)
    if PER_ROW:  # one scale per row, given (computed by the launcher); blocks are only tiles here
        s = tl.load(s_ptr + row + blk * 0)
    else:
        s = tl.div_rn(tl.max(tl.abs(x), axis=1), QMAX)
        tl.store(s_ptr + row * nb + blk, s, mask=blk < nb)
    safe = tl.where(s > 0, s, 1.0)[:, None]
    if FMT == 0:
        q = tl.minimum(tl.maximum(_rne(tl.div_rn(x, safe)), -127.0), 127.0)
        tl.store(q_ptr + row * nq + offs, q.to(tl.int8), mask=m)
    elif FMT == 1:
        y = tl.minimum(tl.maximum(tl.div_rn(x, safe), -448.0), 448.0)
        tl.store(q_ptr + row * nq + offs, _fp8_code(y).to(tl.uint8), mask=m)
    else:
        half = tl.arange(0, BP2 // 2)
        even = blk[:, None] * B + 2 * half[None, :]
        pm = (2 * half[None, :] < B) & (even < n) & (blk[:, None] < nb)
        xe = tl.load(x_ptr + row * n + even, mask=pm, other=0.0)
        xo = tl.load(x_ptr + row * n + even + 1, mask=pm & (even + 1 < n), other=0.0)
        byte = _e3m0_nibble(tl.div_rn(xe, safe)) | (_e3m0_nibble(tl.div_rn(xo, safe)) << 4)
        tl.store(q_ptr + row * nq + even // 2, byte.to(tl.uint8), mask=pm)


@triton.jit
def _decode(q_ptr, s_ptr, row, offs, m, nb, nq, B, FMT: tl.constexpr):
    """fp32 values at element offsets ``offs`` of payload ``row``."""
    s = tl.load(s_ptr + row * nb + offs // B, mask=m, other=0.0)
    if FMT == 0:
        v = tl.load(q_ptr + row * nq + offs, mask=m, other=0).to(tl.float32)
    elif FMT == 1:
        v = _fp8_value(tl.load(q_ptr + row * nq + offs, mask=m, other=0).to(tl.int32))
    else:
        byte = tl.load(q_ptr + row * nq + offs // 2, mask=m, other=0).to(tl.int32)
        v = _e3m0_value(tl.where((offs & 1) == 1, byte >> 4, byte & 15))
    return v * s


@triton.jit
def _dequantize_kernel(q_ptr, s_ptr, y_ptr, n, nb, nq, B, FMT: tl.constexpr, TILE_: tl.constexpr):
    row = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * TILE_ + tl.arange(0, TILE_)
    m = offs < n
    tl.store(y_ptr + row * n + offs, _decode(q_ptr, s_ptr, row, offs, m, nb, nq, B, FMT), mask=m)


@triton.jit
def _dequantize_mean_kernel(q_ptr, s_ptr, y_ptr, n, nb, nq, B, K, rows, FMT: tl.constexpr, TILE_: tl.constexpr):
    row = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * TILE_ + tl.arange(0, TILE_)
    m = offs < n
    acc = tl.zeros([TILE_], dtype=tl.float32)
    for k in range(K):
        acc += _decode(q_ptr, s_ptr, k * rows + row, offs, m, nb, nq, B, FMT)
    tl.store(y_ptr + row * n + offs, tl.div_rn(acc, K.to(tl.float32)), mask=m)


@triton.jit
def _outer_nesterov_kernel(p_ptr, v_ptr, d_ptr, n, lr, mu, NESTEROV: tl.constexpr, TILE_: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * TILE_ + tl.arange(0, TILE_)
    m = offs < n
    p = tl.load(p_ptr + offs, mask=m)
    v = tl.load(v_ptr + offs, mask=m)
    d = tl.load(d_ptr + offs, mask=m)
    v = mu * v + d
    if NESTEROV:
        step = d + mu * v
    else:
        step = v
    tl.store(p_ptr + offs, p - lr * step, mask=m)
    tl.store(v_ptr + offs, v, mask=m)


# --------------------------------------------------------------------------- launchers
def _tile(block: int) -> tuple[int, int]:
    bp2 = triton.next_power_of_2(max(block, 2))
    return max(1, 1024 // bp2), bp2


def quantize_blocks(x2: torch.Tensor, name: str, block: int,
                    per_row: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x2 [R, n] fp32 contiguous -> (codes [R, m] int8 / uint8, scales [R, ceil(n/B)] fp32).
    ``per_row`` (the ``:tensor`` formats, ``block`` >= n): one scale per row, its absmax / QMAX
    taken here (exact, as the reference), and the row is encoded in tiles of PER_ROW_TILE."""
    r, n = x2.shape
    nb = -(-n // block)
    nq = -(-n // 2) if name == "e3m0" else n
    codes = torch.empty(r, nq, dtype=torch.int8 if name == "int8" else torch.uint8, device=x2.device)
    scales = torch.empty(r, nb, dtype=torch.float32, device=x2.device)
    if r and n:
        if per_row:
            scales = (x2.abs().amax(dim=1, keepdim=True) / _QMAX[name]).contiguous()
            block, nb = PER_ROW_TILE, -(-n // PER_ROW_TILE)  # tiles sharing the row's one scale
        g, bp2 = _tile(block)
        _quantize_kernel[(triton.cdiv(nb, g), r)](x2, codes, scales, n, nb, nq, block, QMAX=_QMAX[name],
                                                  FMT=_FMT[name], G=g, BP2=bp2, PER_ROW=per_row)
    return codes, scales


def dequantize_blocks(codes: torch.Tensor, scales: torch.Tensor, n: int, name: str, block: int) -> torch.Tensor:
    """codes [R, m], scales [R, nb] -> fp32 [R, n]."""
    r = codes.shape[0]
    out = torch.empty(r, n, dtype=torch.float32, device=codes.device)
    if r and n:
        _dequantize_kernel[(triton.cdiv(n, TILE), r)](codes.contiguous(), scales.contiguous(), out, n, scales.shape[-1],
                                                      codes.shape[-1], block, FMT=_FMT[name], TILE_=TILE)
    return out


def dequantize_mean_blocks(codes: torch.Tensor, scales: torch.Tensor, n: int, name: str, block: int) -> torch.Tensor:
    """codes [K, R, m], scales [K, R, nb] -> fp32 [R, n], the mean over the K senders."""
    k, r = codes.shape[0], codes.shape[1]
    out = torch.empty(r, n, dtype=torch.float32, device=codes.device)
    if k and r and n:
        _dequantize_mean_kernel[(triton.cdiv(n, TILE), r)](codes.contiguous(), scales.contiguous(), out, n,
                                                           scales.shape[-1], codes.shape[-1], block, k, r,
                                                           FMT=_FMT[name], TILE_=TILE)
    return out


def outer_nesterov_(param: torch.Tensor, momentum: torch.Tensor, delta: torch.Tensor, lr: float, mu: float,
                    nesterov: bool) -> None:
    """In place on contiguous fp32 tensors of one shape (see kernels.outer)."""
    n = param.numel()
    if n:
        _outer_nesterov_kernel[(triton.cdiv(n, TILE),)](param, momentum, delta.contiguous(), n, float(lr), float(mu),
                                                        NESTEROV=bool(nesterov), TILE_=TILE)
