"""Weight-only quantized GEMM benchmark: Rung's integer-weight kernels against cuBLAS fp16,
torch's int4 kernel (tinygemm, `torch._weight_int4pack_mm`, group 128) and the DRAM floor.

    python -m backend.bench_quant [--out DIR] [--quick]

GPU time per call comes from CUDA graphs over weight copies larger than L2 (backend.bench_gemm).
The DRAM floor is the bytes a call must move (packed weight, scales, activations, output) over
the copy bandwidth measured in the same run. Writes bench_quant.md into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
from pathlib import Path

from backend.bench_gemm import gpu_time_us

SHAPES = [(4096, 4096), (28672, 8192)]  # N x K
MS = [1, 16, 256, 4096]
FORMATS = [("int4", 128)]


def copy_bandwidth() -> float:
    """Bytes read plus written per second by a large device-to-device copy."""
    import torch

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = gpu_time_us(lambda i: dst.copy_(src), 1)
    return 2 * src.numel() / (us * 1e-6)


def torch_int4(x, n: int, k: int, copies: int):
    """A call of torch's int4 kernel per weight copy (x must be bf16 on CUDA), or None when this torch has none."""
    import torch

    try:
        packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device="cuda")
        ws = [torch.ops.aten._convert_weight_to_int4pack(packed, 8) for _ in range(copies)]
        sz = torch.rand(k // 128, n, 2, device="cuda", dtype=torch.bfloat16)
        xb = x.to(torch.bfloat16)
        torch.ops.aten._weight_int4pack_mm(xb, ws[0], 128, sz)
    except (RuntimeError, AttributeError) as e:
        print(f"torch int4 kernel unavailable: {str(e).splitlines()[0]}")
        return None
    return lambda i: torch.ops.aten._weight_int4pack_mm(xb, ws[i], 128, sz)


def bench_case(m: int, n: int, k: int, weight: str, group: int, bandwidth: float) -> dict:
    import numpy as np
    import torch

    from backend.gemm import device_target, gemm_kernel_for
    from lowering.graph_to_tile import choose_config
    from lowering.ladder import IntDecode, mma_b_words

    d = IntDecode.of(weight)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    code_bytes = n * k * d.bits // 8
    copies = max(1, math.ceil(2 * l2 / code_bytes))
    q = np.random.default_rng(0).integers(-d.offset, (1 << d.bits) - d.offset, (n, k))
    words = torch.from_numpy(mma_b_words(q, d).view(np.int32)).cuda()
    codes = [words.clone() for _ in range(copies)]
    scales = torch.rand(n, k // (group or k), device="cuda", dtype=torch.float16) * 0.01
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    out = torch.empty(m, n, device="cuda", dtype=torch.float16)
    cfg = dataclasses.replace(choose_config(m, n, k, "f16"), bk=64, weight=weight, group=group)
    kernel = gemm_kernel_for(cfg, device_target())
    stream = lambda: torch.cuda.current_stream().cuda_stream  # noqa: E731
    rung_us = gpu_time_us(lambda i: kernel.launch(cfg.grid(m, n), (x.data_ptr(), codes[i].data_ptr(), scales.data_ptr(),
                                                                    out.data_ptr(), m, n, k), stream()), copies)
    fp16 = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(max(1, math.ceil(2 * l2 / (2 * n * k))))]
    cublas_us = gpu_time_us(lambda i: torch.matmul(x, fp16[i].T, out=out), len(fp16))
    del fp16
    tiny = torch_int4(x, n, k, copies) if weight == "int4" and group == 128 else None
    tiny_us = gpu_time_us(tiny, copies) if tiny else float("nan")
    floor_bytes = code_bytes + scales.numel() * 2 + m * k * 2 + m * n * 2
    return {"m": m, "n": n, "k": k, "format": f"{weight} g{group}", "kernel": cfg.name, "rung_us": rung_us, "cublas_us": cublas_us,
            "torch_int4_us": tiny_us, "floor_us": floor_bytes / bandwidth * 1e6}


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m backend.bench_quant")
    p.add_argument("--out", default=".", help="folder for bench_quant.md")
    p.add_argument("--quick", action="store_true", help="the smallest shape only")
    args = p.parse_args(argv)
    dev, date = torch.cuda.get_device_name(0), datetime.date.today().isoformat()
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write)", flush=True)
    rows = []
    for n, k in SHAPES[:1] if args.quick else SHAPES:
        for m in MS:
            for weight, group in FORMATS:
                r = bench_case(m, n, k, weight, group, bandwidth)
                rows.append(r)
                print(f"M={m:5} N={n:6} K={k:5} {r['format']:9} rung {r['rung_us']:9.1f} us  cuBLAS fp16 {r['cublas_us']:9.1f}  "
                      f"torch int4 {r['torch_int4_us']:9.1f}  floor {r['floor_us']:7.1f}", flush=True)
    lines = ["# Weight-only quantized GEMM: Rung vs cuBLAS fp16 and torch int4", "",
             f"{dev}, {date}. GPU time per call (us) from CUDA graphs over weight copies larger than L2; "
             f"DRAM floor at the measured copy bandwidth {bandwidth / 1e12:.2f} TB/s.", "",
             "| M | N | K | format | Rung us | cuBLAS fp16 us | torch int4 us | DRAM floor us | Rung / floor | cuBLAS / Rung | torch int4 / Rung |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['m']} | {r['n']} | {r['k']} | {r['format']} | {r['rung_us']:.1f} | {r['cublas_us']:.1f} | "
                     f"{r['torch_int4_us']:.1f} | {r['floor_us']:.1f} | {r['rung_us'] / r['floor_us']:.2f} | "
                     f"{r['cublas_us'] / r['rung_us']:.2f} | {r['torch_int4_us'] / r['rung_us']:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_quant.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
