"""GEMM benchmark: Rung's kernels (mma.sync, and wgmma on sm_90a) against cuBLAS (torch.matmul) in one run.

    python -m backend.bench_gemm [--out DIR] [--quick]
    python -m backend.bench_gemm --sanitize        # GEMMs of every path, for compute-sanitizer

GPU time per call comes from a CUDA graph of 20 calls that cycle through copies of the weight
(more than 2x the L2 cache in all), so every call reads its weight from DRAM. Each shape times
the scheduler's choice and candidate schedules (`plan`); the run also measures the ceiling of
mma.sync on the device (`mma_peak_kernel`) and the host overhead (wall time of eager calls with
a tiny shape). Writes bench_gemm.md (and .png when matplotlib is there) into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import time
from pathlib import Path

SHAPES = [(4096, 4096), (11008, 4096), (28672, 8192)]  # N x K
MS = [1, 16, 256, 4096]
CASES = [(m, n, k) for n, k in SHAPES for m in MS]  # (M, N, K)
CALLS = 20
# Schedules tried besides the default one where M is large, and where M <= 16 (a measured choice for choose_config).
MMA_SYNC = dict(wgmma=False)
CANDIDATES = [
    dict(bm=128, bn=128, bk=32, warps_m=2, warps_n=2, stages=3, **MMA_SYNC),
    dict(bm=128, bn=256, bk=32, warps_m=2, warps_n=4, stages=4, **MMA_SYNC),
    dict(bm=256, bn=128, bk=32, warps_m=4, warps_n=2, stages=4, **MMA_SYNC),
    dict(bm=128, bn=128, bk=64, warps_m=2, warps_n=2, stages=4, **MMA_SYNC),
    dict(bm=128, bn=256, bk=64, warps_m=2, warps_n=4, stages=3, **MMA_SYNC),
    dict(bm=128, bn=256, bk=32, warps_m=2, warps_n=4, stages=4, prefetch=True, **MMA_SYNC),
    dict(raster=1),
    dict(raster=16),
]
WGMMA = dict(bk=64, warps_n=1, prefetch=False, wgmma=True)
WGMMA_CANDIDATES = [  # sm_90a only
    dict(bm=128, bn=256, warps_m=8, stages=4, **WGMMA),
    dict(bm=128, bn=256, warps_m=8, stages=3, **WGMMA),
    dict(bm=128, bn=128, warps_m=8, stages=4, **WGMMA),
    dict(bm=128, bn=128, warps_m=8, stages=3, **WGMMA),
    dict(bm=64, bn=256, warps_m=4, stages=4, **WGMMA),
]
SMALL_M_CANDIDATES = [dict(split_k=1), dict(split_k=2), dict(split_k=4), dict(bn=256, warps_n=8), dict(bk=128, stages=3),
                      dict(prefetch=True), dict(prefetch=True, stages=3)]
# Between them (a prompt's tokens): the K splits, and the large-M tiles with and without splits.
MID_M_CANDIDATES = [dict(split_k=s) for s in (1, 2, 4)] + [dict(c, split_k=s) for c in CANDIDATES[:4] for s in (1, 2)]
MID_M_WGMMA_CANDIDATES = [dict(c, split_k=s) for c in WGMMA_CANDIDATES for s in (1, 2, 4)]  # sm_90a only


def plan(m: int, n: int, k: int, dtype: str, sms: int, target: str) -> list:
    """The schedules timed on one shape: the scheduler's, then the candidates for its M (and target)."""
    from lowering.graph_to_tile import choose_config

    default = choose_config(m, n, k, dtype, sms=sms, target=target)
    schedules = [default]
    large = CANDIDATES + (WGMMA_CANDIDATES if target == "sm_90a" else [])
    mid = MID_M_CANDIDATES + (MID_M_WGMMA_CANDIDATES if target == "sm_90a" else [])
    for c in large if m >= 1024 else SMALL_M_CANDIDATES if m <= 16 else mid:
        try:
            cfg = dataclasses.replace(default, **c)
        except ValueError:  # not a valid schedule beside this one
            continue
        if cfg not in schedules:
            schedules.append(cfg)
    return schedules


def bench_arguments(prog: str, report: str, quick: str, argv=None) -> tuple[argparse.Namespace, str, str]:
    """A benchmark's --out and --quick, and the device's name and today's date for its table."""
    import torch

    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--out", default=".", help=f"folder for {report}")
    p.add_argument("--quick", action="store_true", help=quick)
    return p.parse_args(argv), torch.cuda.get_device_name(0), datetime.date.today().isoformat()


def write_report(out: str | Path, name: str, lines: list[str]) -> None:
    """A benchmark's table into out/name (created if missing), and onto stdout."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def warm_up_clocks(seconds: float = 1.0) -> None:
    """Keep the GPU busy until its clocks have ramped up, so the first shape timed is not timed at idle clocks
    (cuBLAS's 4096^3 GEMM measured 181 and 224 us at the start and the end of one run without it)."""
    import torch

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()


def gpu_time_us(fn_for_copy, copies: int) -> float:
    """Median GPU microseconds per call of a CUDA graph of CALLS calls cycling over weight copies."""
    import torch

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for i in range(3):  # warm up and load kernels outside the capture
            fn_for_copy(i % copies)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for i in range(CALLS):
            fn_for_copy(i % copies)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / CALLS)
    return sorted(times)[len(times) // 2]


def bench_shape(m: int, n: int, k: int, dtype) -> dict:
    """Rung's default schedule, the candidates and cuBLAS on one shape."""
    import torch

    from backend.gemm import device_multiprocessors, device_target, gemm_kernels

    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    weight_bytes = n * k * 2
    copies = max(1, math.ceil(2 * l2 / weight_bytes))
    ws = [torch.randn(n, k, device="cuda", dtype=dtype) for _ in range(copies)]
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    out = torch.empty(m, n, device="cuda", dtype=dtype)
    target = device_target()
    schedules = plan(m, n, k, "f16" if dtype == torch.float16 else "bf16", device_multiprocessors(x), target)
    default = schedules[0]
    times = {}
    for cfg in schedules:
        kernels = gemm_kernels(cfg, target)

        def call(i, kernels=kernels):
            kernels.launch({"a": x.data_ptr(), "b": ws[i].data_ptr(), "c": out.data_ptr()}, m, n, k, x)

        times[cfg] = gpu_time_us(call, copies)
    cublas_us = gpu_time_us(lambda i: torch.matmul(x, ws[i].T, out=out), copies)
    best = min(times, key=times.get)
    flops = 2 * m * n * k
    return {"m": m, "n": n, "k": k, "rung_us": times[default], "best_us": times[best], "best": best.name, "times": times,
            "cublas_us": cublas_us, "rung_tflops": flops / times[default] / 1e6, "best_tflops": flops / times[best] / 1e6,
            "cublas_tflops": flops / cublas_us / 1e6}


def host_overhead_us() -> tuple[float, float]:
    """Wall microseconds per eager call (tiny shape, so the GPU is never the bottleneck)."""
    import torch

    from backend.gemm import linear

    x = torch.randn(16, 64, device="cuda", dtype=torch.float16)
    w = torch.randn(64, 64, device="cuda", dtype=torch.float16)
    out = torch.empty(16, 64, device="cuda", dtype=torch.float16)
    result = []
    for fn in (lambda: linear(x, w, out), lambda: torch.matmul(x, w.T, out=out)):
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(2000):
            fn()
        torch.cuda.synchronize()
        result.append((time.perf_counter() - t0) / 2000 * 1e6)
    return result[0], result[1]


MMA_CHAINS, MMA_STEPS = 8, 256  # independent accumulators per warp, mma.sync per chain in the peak kernel


def mma_peak_kernel():
    """A kernel that only issues mma.sync.m16n8k16 (f16 in, f32 accumulate) on registers: each
    warp runs MMA_CHAINS independent accumulator chains MMA_STEPS deep, then stores one value
    so nothing is dead. Its rate is the ceiling of any mma.sync GEMM on the device."""
    from dialects.ptx import KernelOp
    from lowering.ptx_builder import PtxBuilder

    kernel = KernelOp.get("rung_mma_peak", ["u64"], 128)
    b = PtxBuilder(kernel.body.block)
    (out,) = kernel.body.block.args
    tid = b.sreg("tid.x")
    a = [b.add(tid, 0x3C003C00 + i) for i in range(4)]  # f16 pairs near 1.0, per thread
    frag_b = [b.add(tid, 0x3C003C00 + 7 * i) for i in range(2)]
    inits = [b.fimm(0.0)] * (4 * MMA_CHAINS)
    loop, body, _, acc = b.for_(0, MMA_STEPS, 1, inits)
    acc = list(acc)
    for c in range(MMA_CHAINS):
        acc[4 * c:4 * c + 4] = body.mma(a, frag_b, acc[4 * c:4 * c + 4], "f16")
    body.yield_(acc)
    total = list(loop.results)[0]
    for v in list(loop.results)[1:]:
        total = b.add(total, v)
    gid = b.add(b.mul(b.sreg("ctaid.x"), 128), tid)
    b.st("global", b.add(out, b.cvt(b.shl(gid, 2), "u64")), [total])
    return kernel


def mma_peak_tflops() -> float:
    """Measured mma.sync m16n8k16 f16 rate of the whole device, TFLOP/s."""
    import torch

    from backend.gemm import device_multiprocessors, device_target
    from backend.jit import Kernel
    from backend.ptx_text import module_text
    from xdsl.dialects.builtin import ModuleOp

    blocks = 16 * device_multiprocessors(torch.empty(1, device="cuda"))
    kernel = Kernel("rung_mma_peak", module_text(ModuleOp([mma_peak_kernel()]), device_target()), 128, ("u64",), "mma.sync peak")
    out = torch.empty(blocks * 128, device="cuda")
    us = gpu_time_us(lambda i: kernel.launch((blocks, 1, 1), (out.data_ptr(),), torch.cuda.current_stream().cuda_stream), 1)
    return blocks * 4 * MMA_CHAINS * MMA_STEPS * 2 * 16 * 8 * 16 / us / 1e6


def sanitize() -> None:
    """GEMMs of every path, checked, for running under compute-sanitizer: a small one and a large
    one, one with K split, quantized ones with zero points, with MX scales and with nf4's shared
    table (8- and 16-row tiles), and 8-bit x 8-bit."""
    import torch

    from backend.gemm import linear
    from backend.quant import qlinear, quantize

    for m, n, k in ((17, 72, 40), (512, 384, 256), (3, 200, 1024)):
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        w = torch.randn(n, k, device="cuda", dtype=torch.float16)
        y = linear(x, w)
        torch.cuda.synchronize()
        err = (y.float() - x.float() @ w.float().T).abs().max().item()
        print(f"sanitize {m}x{n}x{k}: max abs error {err:.3g}")
    for fmt, m in (("uint4", 5), ("mxfp4", 300), ("nf4", 1), ("nf4", 12), ("w8a8", 70), ("fp8", 3)):
        qw = quantize(torch.randn(264, 512, device="cuda"), fmt, dtype="f16")
        x = torch.randn(m, 512, device="cuda", dtype=torch.float16)
        y = qlinear(x, qw)
        torch.cuda.synchronize()
        err = (y.float() - x.float() @ qw.dequantize().float().T).abs().max().item()  # (8-bit x: quantization error included)
        print(f"sanitize {fmt} {m}x264x512: max abs error {err:.3g}")


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m backend.bench_gemm")
    p.add_argument("--out", default=".", help="folder for bench_gemm.md (and .png)")
    p.add_argument("--quick", action="store_true", help="one shape per M")
    p.add_argument("--sanitize", action="store_true", help="run GEMMs of every path once, checked, and exit (for compute-sanitizer)")
    p.add_argument("--shapes", help="MxNxK,...: print every schedule's time on these shapes, the default first, and cuBLAS's")
    args = p.parse_args(argv)
    if args.sanitize:
        sanitize()
        return 0
    if args.shapes:
        warm_up_clocks()
        for m, n, k in (map(int, s.split("x")) for s in args.shapes.split(",")):
            r = bench_shape(m, n, k, torch.float16)
            print(f"M={m} N={n} K={k}: cuBLAS {r['cublas_us']:.1f} us; " + "; ".join(f"{c.name} {t:.1f}" for c, t in r["times"].items()), flush=True)
        return 0
    dev = torch.cuda.get_device_name(0)
    date = datetime.date.today().isoformat()
    rows = []
    cases = CASES[:len(MS)] if args.quick else CASES
    warm_up_clocks()
    for m, n, k in cases:
        r = bench_shape(m, n, k, torch.float16)
        rows.append(r)
        print(f"M={m:5} N={n:6} K={k:5}  rung {r['rung_us']:9.1f} us {r['rung_tflops']:7.1f} TFLOP/s   "
              f"best {r['best_us']:9.1f} us ({r['best']})   cuBLAS {r['cublas_us']:9.1f} us {r['cublas_tflops']:7.1f} TFLOP/s",
              flush=True)
    ours, theirs = host_overhead_us()
    peak = mma_peak_tflops()
    print(f"mma.sync m16n8k16 f16 peak: {peak:.0f} TFLOP/s", flush=True)
    lines = ["# GEMM: Rung (mma.sync; wgmma on sm_90a) vs cuBLAS (fp16, f32 accumulate)", "",
             f"{dev}, {date}. GPU time per call from CUDA graphs of {CALLS} calls over weight copies larger than L2.", "",
             "| M | N | K | Rung us (default schedule) | best schedule tried | best us | cuBLAS us | Rung best TFLOP/s | cuBLAS TFLOP/s | Rung best / cuBLAS throughput |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['m']} | {r['n']} | {r['k']} | {r['rung_us']:.1f} | {r['best']} | {r['best_us']:.1f} | {r['cublas_us']:.1f} | "
                     f"{r['best_tflops']:.1f} | {r['cublas_tflops']:.1f} | {r['cublas_us'] / r['best_us']:.2f} |")
    best_cublas = max(r["cublas_tflops"] for r in rows)
    lines += ["", f"Host overhead per eager call: Rung {ours:.1f} us, torch.matmul {theirs:.1f} us.", "",
              f"The ceiling of mma.sync on this GPU (a kernel of independent mma.sync.m16n8k16 chains on registers, "
              f"backend.bench_gemm.mma_peak_kernel): {peak:.0f} TFLOP/s, {peak / best_cublas:.2f} of cuBLAS's best here "
              f"({best_cublas:.0f} TFLOP/s).", ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gemm.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        labels = [f"{r['m']}x{r['n']}x{r['k']}" for r in rows]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["best_tflops"] for r in rows], 0.4, label="Rung (best schedule)")
        ax.bar([x + 0.2 for x in xs], [r["cublas_tflops"] for r in rows], 0.4, label="cuBLAS")
        ax.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yscale("log")  # M = 1 runs at a few TFLOP/s, M = 4096 at hundreds
        ax.set_ylabel("TFLOP/s (log)")
        ax.set_title(f"fp16 GEMM, {dev}, {date}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "bench_gemm.png", dpi=120)
    except ImportError:
        pass
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
