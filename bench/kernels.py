"""Wire-format kernel benchmark: prints ONE JSON object (no assertions; see bench/README.md).

For every wire format (``kernels.formats``) and every backend that can run here (torch
always; triton on CUDA when it imports), times on one payload of ``--elements`` fp32
values:

* ``quantize``: fp32 -> packed payload;
* ``dequantize``: packed -> fp32;
* ``dequantize_mean``: K = ``--senders`` packed payloads -> their fp32 mean (what a
  receiver of an all-reduce accumulates);
* ``outer_nesterov``: the fused outer update (per backend, not per format).

Each entry gives the median milliseconds over ``--repeats`` and ``gb_per_s``: bytes read
plus bytes written (fp32 input, packed payload) per second, comparable to the device's
memory bandwidth. Formats whose triton backend has no kernel of its own (plain casts,
top-k: torch ops that are already single kernels) are reported under torch only.

Run: ``python bench/kernels.py [--device cpu|cuda] [--elements N] [--senders 8] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.machine import torch_machine  # noqa: E402
from kernels.backend import triton_available  # noqa: E402
from kernels.formats import parse_format, payload_bytes  # noqa: E402
from kernels.outer import outer_nesterov_  # noqa: E402
from kernels.quantize import dequantize, dequantize_mean, quantize  # noqa: E402

FORMATS = ["fp32", "bf16", "fp16", "int8", "fp8", "e3m0", "topk"]


def timed_ms(fn, device: torch.device, repeats: int) -> float:
    """Median wall milliseconds of ``fn()`` after one warm-up call (synchronized on CUDA)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--elements", type=int, default=None, help="values per payload (default 2^26 on CUDA, 2^22 on CPU)")
    ap.add_argument("--senders", type=int, default=8, help="K payloads averaged by dequantize_mean")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    n = args.elements or (1 << 26 if dev.type == "cuda" else 1 << 22)
    k = args.senders
    backends = ["torch"] + (["triton"] if dev.type == "cuda" and triton_available() else [])
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(n, generator=g, device=dev)
    xk = torch.randn(k, n, generator=g, device=dev)
    results: dict = {}
    for fmt in FORMATS:
        f = parse_format(fmt)
        wire = payload_bytes(n, fmt)
        for backend in backends:
            if backend == "triton" and (f.elementwise or f.name == "topk"):
                continue
            p = quantize(x, fmt, backend)
            pk = quantize(xk, fmt, backend)
            q_ms = timed_ms(lambda: quantize(x, fmt, backend), dev, args.repeats)
            d_ms = timed_ms(lambda: dequantize(p, backend), dev, args.repeats)
            m_ms = timed_ms(lambda: dequantize_mean(pk, backend), dev, args.repeats)
            results[f"{fmt}/{backend}"] = {
                "format": str(f), "backend": backend, "payload_bytes": wire,
                "bytes_per_value": wire / n,
                "quantize_ms": q_ms, "quantize_gb_per_s": (4 * n + wire) / q_ms / 1e6,
                "dequantize_ms": d_ms, "dequantize_gb_per_s": (wire + 4 * n) / d_ms / 1e6,
                "dequantize_mean_ms": m_ms, "dequantize_mean_gb_per_s": (k * wire + 4 * n) / m_ms / 1e6,
            }
    outer = {}
    for backend in backends:
        p, v, d = x.clone(), torch.zeros_like(x), xk[0].clone()
        ms = timed_ms(lambda: outer_nesterov_(p, v, d, 0.7, 0.9, True, backend), dev, args.repeats)
        outer[backend] = {"ms": ms, "gb_per_s": 20 * n / ms / 1e6}  # read p, v, delta; write p, v
    report = {"elements": n, "senders": k, "repeats": args.repeats, "formats": results,
              "outer_nesterov": outer, "machine": torch_machine(dev)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
