"""Attention benchmark: Rung's FlashAttention kernel against each of torch's SDPA backends in one run.

    python -m rung.bench_attention [--out DIR] [--quick]

Prefill: causal attention over the whole sequence, 32 heads of 128, f16; judged in TFLOP/s (a causal
score matrix counts half). Decode: one query row per head against a long KV cache, 32 query heads
sharing 8 kv heads, bf16; judged by the KV bytes it must read against the copy bandwidth measured in
the same run (the DRAM floor). GPU time per call from CUDA graphs (backend.bench_gemm.gpu_time_us) cycling
over copies of K and V larger than L2 together, so every call reads them from DRAM.
A backend that refuses a shape reads n/a. Writes bench_attention.md into --out.
"""

from __future__ import annotations

import math

from backend.bench_gemm import bench_arguments, gpu_time_us, warm_up_clocks, write_report
from backend.bench_quant import copy_bandwidth

PREFILL = [(1, 1024), (1, 4096), (4, 2048), (8, 8192)]  # (batch, sequence): 32 heads of 128, causal
DECODE = [1024, 8192, 32768]  # KV length: one query, 32 query heads, 8 kv heads of 128
BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")


def program(batch: int, heads: int, kv_heads: int, rows: int, keys: int, dim: int, dtype: str, causal: bool) -> str:
    q, kv = f"tensor<{batch}x{heads}x{rows}x{dim}x{dtype}>", f"tensor<{batch}x{kv_heads}x{keys}x{dim}x{dtype}>"
    return (f"func.func @main(%q: {q}, %k: {kv}, %v: {kv}) -> {q} {{\n"
            f"  %y = graph.sdpa %q, %k, %v {{{'causal' if causal else ''}}} : ({q}, {kv}, {kv}) -> {q}\n"
            f"  func.return %y : {q}\n}}\n")


def bench(batch: int, heads: int, kv_heads: int, rows: int, keys: int, dtype, causal: bool, dim: int = 128) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import rung

    name = {torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    fn = rung.compile(program(batch, heads, kv_heads, rows, keys, dim, name, causal))
    kv_bytes = 2 * batch * kv_heads * keys * dim * 2
    copies = max(1, math.ceil(2 * torch.cuda.get_device_properties(0).L2_cache_size / kv_bytes))  # every call reads K and V from DRAM
    q = torch.randn(batch, heads, rows, dim, device="cuda", dtype=dtype)
    kvs = [[torch.randn(batch, kv_heads, keys, dim, device="cuda", dtype=dtype) for _ in range(2)] for _ in range(copies)]
    gqa = kv_heads < heads
    want = F.scaled_dot_product_attention(q.float(), *(x.float() for x in kvs[0]), is_causal=causal, enable_gqa=gqa)
    times = {"rung": gpu_time_us(lambda i: fn(q, *kvs[i]), copies)}
    err = (fn(q, *kvs[0]).float() - want).abs().max().item()
    for backend in BACKENDS:
        def call(i):
            with sdpa_kernel([getattr(SDPBackend, backend)]):
                return F.scaled_dot_product_attention(q, *kvs[i], is_causal=causal, enable_gqa=gqa)
        try:
            call(0)
            times[backend] = gpu_time_us(call, copies)
        except RuntimeError:  # this backend does not take the shape (or is not built)
            times[backend] = None
    flops = 4 * batch * heads * rows * keys * dim * (0.5 if causal else 1.0)
    return {"batch": batch, "rows": rows, "keys": keys, "dtype": name, "flops": flops, "kv_bytes": kv_bytes, "err": err, **times}


def _cell(us: float | None, scale: float, digits: int = 0) -> str:
    """Time (us) and, in brackets, `scale` per second in units of 10^12."""
    return "n/a" if us is None else f"{us:.1f} ({scale / (us * 1e-6) / 1e12:.{digits}f})"


def main(argv=None) -> int:
    import torch

    args, dev, date = bench_arguments("python -m rung.bench_attention", "bench_attention.md", "one shape each", argv)
    bandwidth, _ = copy_bandwidth()
    warm_up_clocks()
    prefill = [bench(b, 32, 32, s, s, torch.float16, True) for b, s in (PREFILL[1:2] if args.quick else PREFILL)]
    decode = [bench(1, 32, 8, 1, s, torch.bfloat16, False) for s in (DECODE[1:2] if args.quick else DECODE)]
    for r in prefill + decode:
        print(f"attention b{r['batch']} {r['rows']} x {r['keys']} {r['dtype']}: rung {r['rung']:.1f} us, "
              + ", ".join(f"{b} {r[b]:.1f}" if r[b] else f"{b} n/a" for b in BACKENDS) + f" (max error {r['err']:.3g})", flush=True)
    short = {"FLASH_ATTENTION": "torch flash", "EFFICIENT_ATTENTION": "torch efficient", "CUDNN_ATTENTION": "torch cuDNN"}
    lines = ["# Attention: Rung's FlashAttention kernel vs torch SDPA's backends", "",
             f"{dev}, {date}. GPU time per call (us) from CUDA graphs, cycling over K and V copies larger than L2.", "",
             "Prefill: causal, 32 heads of 128, f16; in brackets TFLOP/s (the causal half of 4 b h L^2 d). "
             "best / Rung: the fastest torch backend's time over Rung's.", "",
             "| batch x sequence | Rung | " + " | ".join(short[b] for b in BACKENDS) + " | flash / Rung | best / Rung |",
             "| --- | --- | " + " | ".join("---" for _ in BACKENDS) + " | --- | --- |"]
    for r in prefill:
        best = min(r[b] for b in BACKENDS if r[b] is not None)
        lines.append(f"| {r['batch']} x {r['rows']} | {_cell(r['rung'], r['flops'])} | "
                     + " | ".join(_cell(r[b], r['flops']) for b in BACKENDS)
                     + f" | {(r['FLASH_ATTENTION'] or float('nan')) / r['rung']:.2f} | {best / r['rung']:.2f} |")
    lines += ["", f"Decode: one query row, 32 query heads on 8 kv heads of 128, bf16 KV cache; in brackets the KV bytes "
              f"read per second in TB/s; % of floor = that against the copy bandwidth measured in the run, {bandwidth / 1e12:.2f} TB/s.", "",
              "| KV length | Rung | % of floor | " + " | ".join(short[b] for b in BACKENDS) + " | best / Rung |",
              "| --- | --- | --- | " + " | ".join("---" for _ in BACKENDS) + " | --- |"]
    for r in decode:
        best = min((r[b] for b in BACKENDS if r[b] is not None), default=float("nan"))
        lines.append(f"| {r['keys']} | {_cell(r['rung'], r['kv_bytes'], 2)} | {100 * r['kv_bytes'] / (r['rung'] * 1e-6) / bandwidth:.0f}% | "
                     + " | ".join(_cell(r[b], r['kv_bytes'], 2) for b in BACKENDS) + f" | {best / r['rung']:.2f} |")
    write_report(args.out, "bench_attention.md", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
