"""Weight-only quantized GEMM benchmark: Rung's low-precision kernels against cuBLAS fp16,
torch's int4 kernel (tinygemm, `torch._weight_int4pack_mm`, group 128), torch.compile'd int8
weight-only (gpt-fast's `F.linear(x, w.to(x.dtype)) * scales`, M = 1 and 16) and the DRAM floor, in one run.

    python -m backend.bench_quant [--out DIR] [--quick]
    python -m backend.bench_quant --profile        # the kernels of PROFILED, three launches each, for ncu

GPU time per call comes from CUDA graphs over weight copies larger than L2 (backend.bench_gemm).
The DRAM floor is the bytes a call must move (packed weight, scales, activations, output) over
the copy bandwidth measured in the same run. Kernel speed does not depend on the codes'
values, so weights are random words (never zeros) made on the GPU; the tests check every
format's results. Writes bench_quant.md and bench_quant.png into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
from pathlib import Path

from backend.bench_gemm import gpu_time_us, warm_up_clocks

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (28672, 8192), (8192, 28672)]  # N x K
MS = [1, 4, 16, 64, 256, 4096]
# every format at M <= 16 (and 4096) on the two largest shapes: preset or element, group, scale, zero
FORMATS = {
    "int4 g128": ("int4", 128, "", False), "uint4 g128 zeros": ("uint4", 128, "", True), "nf4 g64": ("nf4", 64, "", False),
    "fp4 e2m1 g32": ("e2m1", 32, "", False), "mxfp4": ("e2m1", 32, "e8m0", False), "fp8 e4m3 g128": ("e4m3", 128, "", False),
    "mxfp8": ("e4m3", 32, "e8m0", False), "int2 g64": ("int2", 64, "", False), "int1 g128": ("int1", 128, "", False),
}
EIGHT_BIT = {"w8a8 (int8 x int8)": "s8", "fp8 (e4m3 x e4m3)": "e4m3"}  # 8-bit activations and weights, mma.m16n8k32
TARGET_SPEEDUP = {4: 3.0, 2: 5.0, 1: 7.0}  # vs cuBLAS fp16 at M <= 16, by weight bits
SMALL_M_CANDIDATES = [  # small-M schedules timed besides the scheduler's choice (the measurement choose_config follows)
    dict(prefetch=False), dict(split_k=1), dict(split_k=4), dict(split_k=8), dict(stages=2), dict(stages=4),
    dict(bn=128, warps_n=8), dict(bn=256, warps_n=8), dict(bk=64), dict(scale_partials=False), dict(scale_partials=True), dict(bm=16),
]
WGMMA_WEIGHT_CANDIDATES = [  # int4 at M = 4096 on sm_90a: decoded-weight wgmma tiles (activation rows, stages, raster)
    dict(bm=128), dict(bm=192), dict(stages=3), dict(stages=5), dict(raster=4), dict(raster=16),
]
FORMAT_CANDIDATES = [  # every other format at M = 1: the loop, the split and where the scales apply
    dict(prefetch=False), dict(split_k=1), dict(split_k=4), dict(prefetch=False, split_k=4),
    dict(prefetch=False, scale_partials=False), dict(prefetch=False, scale_partials=True), dict(bm=16), dict(bm=16, prefetch=False),
    dict(shared_table=False), dict(shared_table=False, split_k=4),  # nf4 by prmt from registers (its best split before the table)
]


def copy_bandwidth() -> tuple[float, dict]:
    """Bytes read plus written per second by the fastest of three device-to-device copies of
    1 GiB (torch's copy, which a CUDA graph may hand to the copy engines, and two SM kernels:
    an elementwise copy and a clone), and each one's figure."""
    import torch

    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ways = {"copy_": lambda i: dst.copy_(src), "elementwise": lambda i: torch.mul(src, 1.0, out=dst),
            "add": lambda i: torch.add(src, 0.0, out=dst)}
    rates = {name: 2 * src.numel() * 4 / (gpu_time_us(fn, 1) * 1e-6) for name, fn in ways.items()}
    return max(rates.values()), rates


def random_weight(n: int, k: int, cfg, copies: int):
    """`copies` packed weights of random codes: (codes, scales, zeros) tensors for cfg's format."""
    import torch

    from ir.numerics import element_format
    from ir.packing import N_ALIGN

    if cfg.a8:  # 8-bit weight as stored, f32 scales per channel (e4m3 from normal values: no NaN codes)
        return [(torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda") if cfg.a8 == "s8" else
                 torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn), torch.rand(n, device="cuda") * 0.01, None)
                for _ in range(copies)]
    bits = element_format(cfg.weight).bits
    groups = k // (cfg.group or k)
    n16 = -(-n // N_ALIGN) * N_ALIGN
    half = torch.float16 if cfg.dtype == "f16" else torch.bfloat16
    out = []
    for _ in range(copies):
        codes = torch.randint(-2**31, 2**31 - 1, (n, k * bits // 32), dtype=torch.int32, device="cuda")
        if cfg.scale == "e8m0":
            scales = torch.randint(120, 130, (groups, n16), dtype=torch.uint8, device="cuda")
        else:
            scales = (torch.rand(groups, n16, device="cuda") * 0.01 + 0.001).to(half)
        zeros = (torch.randn(groups, n16, device="cuda") * 0.01).to(half) if cfg.zero else None
        out.append((codes, scales, zeros))
    return out


def rung_us(m: int, n: int, k: int, cfg, l2: int) -> tuple[float, int]:
    """(GPU us per call, bytes of the packed weight) of one schedule."""
    import torch

    from backend.gemm import device_target, gemm_kernels
    from backend.quant import launch_addresses, per_token

    x = torch.randn(m, k, device="cuda", dtype=torch.float16 if cfg.dtype == "f16" else torch.bfloat16)
    out = torch.empty(m, n, device="cuda", dtype=x.dtype)
    x8, x_scales = per_token(x, cfg.a8) if cfg.a8 else (x, None)  # 8-bit activations: quantized once, outside the timing
    probe = random_weight(n, k, cfg, 1)[0]
    weight_bytes = sum(t.numel() * t.element_size() for t in probe if t is not None)
    weights = [probe] + random_weight(n, k, cfg, max(1, math.ceil(2 * l2 / weight_bytes)) - 1)
    kernels = gemm_kernels(cfg, device_target())

    def call(i):
        kernels.launch(launch_addresses(x8, weights[i], out, x_scales), m, n, k, x)

    return gpu_time_us(call, len(weights)), weight_bytes


def peer_us(m: int, n: int, k: int, l2: int) -> dict:
    """cuBLAS fp16, torch's int4 kernel (M <= 64) and torch.compile'd int8 weight-only on one shape."""
    import torch

    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    out = torch.empty(m, n, device="cuda", dtype=torch.float16)
    copies = lambda nbytes: max(1, math.ceil(2 * l2 / nbytes))  # noqa: E731
    fp16 = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(copies(2 * n * k))]
    result = {"cublas_us": gpu_time_us(lambda i: torch.matmul(x, fp16[i].T, out=out), len(fp16))}
    fp16.clear()  # (the copies go before the next peer allocates its own)
    result["torch_int4_us"] = float("nan")
    if m <= 64:
        xb = x.to(torch.bfloat16)
        packed = [torch.ops.aten._convert_weight_to_int4pack(torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device="cuda"), 8)
                  for _ in range(copies(n * k // 2))]
        sz = torch.rand(k // 128, n, 2, device="cuda", dtype=torch.bfloat16)
        result["torch_int4_us"] = gpu_time_us(lambda i: torch.ops.aten._weight_int4pack_mm(xb, packed[i], 128, sz), len(packed))
        del packed
    result["torch_int8_us"] = float("nan")
    if m in (1, 16):  # decoding, where gpt-fast uses it (each shape compiles anew)
        w8 = [torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda") for _ in range(copies(n * k))]
        s8 = torch.rand(n, device="cuda", dtype=torch.float16) * 0.01
        result["torch_int8_us"] = gpu_time_us(lambda i: _int8_linear()(x, w8[i], s8), len(w8))
    return result


_INT8 = []


def _int8_linear():
    """gpt-fast's int8 weight-only linear under torch.compile (static shapes, as gpt-fast compiles)."""
    if not _INT8:
        import torch
        import torch.nn.functional as F

        torch._dynamo.config.cache_size_limit = 64  # one graph per benchmarked shape
        _INT8.append(torch.compile(lambda x, w, s: F.linear(x, w.to(x.dtype)) * s))
    return _INT8[0]


PROFILED = [(1, 28672, 8192, "int4 g128"), (1, 28672, 8192, "nf4 g64"), (16, 28672, 8192, "nf4 g64"), (16, 28672, 8192, "fp4 e2m1 g32"),
            (1, 28672, 8192, "int2 g64"), (1, 28672, 8192, "int1 g128"), (16, 28672, 8192, "int1 g128"), (4096, 28672, 8192, "int4 g128")]


def profile_targets() -> int:
    """Run each PROFILED kernel three times (ncu --launch-skip 2 --launch-count 1 per name)."""
    import torch

    from backend.gemm import device_multiprocessors, device_target, gemm_kernels
    from backend.quant import launch_addresses
    from lowering.graph_to_tile import choose_config

    sms = device_multiprocessors(torch.empty(1, device="cuda"))
    for m, n, k, label in PROFILED:
        weight, group, scale, zero = FORMATS[label]
        cfg = choose_config(m, n, k, "f16", weight=weight, group=group, scale=scale, zero=zero, sms=sms, target=device_target())
        packed = random_weight(n, k, cfg, 1)[0]
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        out = torch.empty(m, n, device="cuda", dtype=torch.float16)
        for _ in range(3):
            gemm_kernels(cfg, device_target()).launch(launch_addresses(x, packed, out), m, n, k, x)
        torch.cuda.synchronize()
        print(f"profiled {label} M={m} N={n} K={k}: {cfg.name}", flush=True)
    return 0


def plan(sms: int, quick: bool = False, target: str = "", formats: tuple = ()) -> list[tuple]:
    """What the benchmark times: (m, n, k, format label, the scheduler's schedule, candidate schedules);
    at M = 4096 on sm_90a packed weights and 8-bit operands take wgmma tiles, timed beside the
    mma.sync ones (and int4 beside other wgmma tiles). `formats`: only the rows whose label starts with one of them."""
    from lowering.graph_to_tile import choose_config

    shapes, ms = (SHAPES[3:], [1, 16, 4096]) if quick else (SHAPES, MS)
    cases = []
    for n, k in shapes:
        for m in ms:
            names = FORMATS if (n, k) in SHAPES[3:] and (m <= 16 or m == 4096) else {"int4 g128": FORMATS["int4 g128"]}
            if quick and m == 4096:
                names = {"int4 g128": FORMATS["int4 g128"]}
            for label, (weight, group, scale, zero) in names.items():
                if formats and not label.startswith(formats):
                    continue
                fields = dict(weight=weight, group=group, scale=scale, zero=zero, sms=sms)
                cfg, plain = (choose_config(m, n, k, "f16", **fields, target=t) for t in (target, ""))
                candidates = [plain] if plain != cfg else []
                tried = SMALL_M_CANDIDATES if label == "int4 g128" and m <= 16 else FORMAT_CANDIDATES if m == 1 else \
                    WGMMA_WEIGHT_CANDIDATES if label == "int4 g128" and cfg.wgmma and m == 4096 else []
                if (n, k) in SHAPES[3:]:
                    rows16 = choose_config(16, n, k, "f16", **fields, target=target)
                    for cand in tried:
                        if cand.get("bm") == 16 and "scale_partials" not in cand:  # where 16-row tiles apply the scales
                            cand = {**cand, "scale_partials": rows16.scale_partials}
                        try:
                            alt = dataclasses.replace(cfg, **cand)
                        except ValueError:  # not a valid schedule beside this one
                            continue
                        if alt != cfg and alt not in candidates:
                            candidates.append(alt)
                cases.append((m, n, k, label, cfg, candidates))
            if (n, k) in SHAPES[3:] and m in (1, 16, 4096):
                for label, a8 in EIGHT_BIT.items():
                    if formats and not label.startswith(formats):
                        continue
                    cfg, plain = (choose_config(m, n, k, "f16", sms=sms, a8=a8, target=t) for t in (target, ""))
                    cases.append((m, n, k, label, cfg, [plain] if plain != cfg else []))
    return cases


def main(argv=None) -> int:
    import torch

    from backend.gemm import device_multiprocessors, device_target

    p = argparse.ArgumentParser(prog="python -m backend.bench_quant")
    p.add_argument("--out", default=".", help="folder for bench_quant.md and .png")
    p.add_argument("--quick", action="store_true", help="the two largest shapes, M in {1, 16} (and 4096 for int4)")
    p.add_argument("--formats", default="", help="comma-separated label prefixes to time, e.g. 'int4,mxfp4' (default: all)")
    p.add_argument("--profile", action="store_true", help="run the kernels worth profiling a few times each (for ncu) and exit")
    args = p.parse_args(argv)
    dev, date = torch.cuda.get_device_name(0), datetime.date.today().isoformat()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    sms = device_multiprocessors(torch.empty(1, device="cuda"))
    bandwidth, ways = copy_bandwidth()
    print(f"{dev}: copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write; "
          f"{', '.join(f'{w} {r / 1e12:.2f}' for w, r in ways.items())}), {sms} SMs, L2 {l2 >> 20} MiB", flush=True)
    if args.profile:
        return profile_targets()
    warm_up_clocks()
    rows, tuning, peers = [], [], {}
    for m, n, k, label, cfg, candidates in plan(sms, args.quick, device_target(), tuple(f for f in args.formats.split(",") if f)):
        if (m, n, k) not in peers:
            peers[(m, n, k)] = peer_us(m, n, k, l2)
        us, wbytes = rung_us(m, n, k, cfg, l2)
        best_us, best = us, cfg
        for alt in candidates:
            t, _ = rung_us(m, n, k, alt, l2)
            tuning.append((m, n, k, alt.name, t))
            if t < best_us:
                best_us, best = t, alt
        x_bytes = (1 + 4 / k) * m * k if cfg.a8 else 2 * m * k
        r = {"m": m, "n": n, "k": k, "format": label, "bits": cfg.weight_bits, "a8": cfg.a8, "kernel": cfg.name, "rung_us": us,
             "best_us": best_us, "best": best.name, "floor_us": (wbytes + x_bytes + 2 * m * n) / bandwidth * 1e6, **peers[(m, n, k)]}
        rows.append(r)
        print(f"M={m:5} N={n:6} K={k:6} {label:17} rung {us:9.1f} us (best {best_us:8.1f})  cuBLAS {r['cublas_us']:8.1f}  "
              f"torch int4 {r['torch_int4_us']:8.1f}  torch int8 {r['torch_int8_us']:8.1f}  floor {r['floor_us']:7.1f}", flush=True)
    write_report(Path(args.out), rows, tuning, dev, date, bandwidth, per_token_us(4096, 8192))
    return 0


def per_token_us(m: int, k: int) -> dict:
    """GPU us of quantizing activations [M, K] per token to each 8-bit type (torch ops, as rung.qlinear does)."""
    import torch

    from backend.quant import per_token

    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    return {a8: gpu_time_us(lambda i, a8=a8: per_token(x, a8), 1) for a8 in EIGHT_BIT.values()}


def write_report(out: Path, rows: list, tuning: list, dev: str, date: str, bandwidth: float, quantize_us: dict) -> None:
    lines = ["# Weight-only quantized GEMM: Rung vs cuBLAS fp16, torch int4 and torch.compile int8", "",
             f"{dev}, {date}. GPU time per call (us) from CUDA graphs over weight copies larger than L2, f16 activations; "
             f"DRAM floor at the measured copy bandwidth {bandwidth / 1e12:.2f} TB/s. torch int4 is tinygemm (group 128, bf16 "
             "activations, timed for M <= 64 only); torch int8 is torch.compile'd int8 weight-only (timed for M = 1 and 16).", "",
             "| M | N | K | format | Rung us | floor us | Rung / floor | cuBLAS fp16 us | cuBLAS / Rung | torch int4 us | torch int8 us | target |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        speedup = r["cublas_us"] / r["rung_us"]
        target = ""
        if r["m"] <= 16 and (r["n"], r["k"]) in SHAPES[3:]:
            want = TARGET_SPEEDUP.get(r["bits"])
            target = f"{'met' if speedup >= want else 'missed'} ({want:g}x cuBLAS)" if want else ""
            if r["format"] == "int4 g128":
                target += f"; {'met' if r['rung_us'] <= 1.15 * r['floor_us'] else 'missed'} (1.15x floor)"
        if r["m"] == 4096 and r["format"] == "int4 g128":
            target = f"{'met' if r['rung_us'] <= 1.3 * r['cublas_us'] else 'missed'} (1.3x cuBLAS time)"
        if r["m"] == 4096 and r["a8"]:
            target = f"{'met' if r['rung_us'] < r['cublas_us'] else 'missed'} (faster than cuBLAS fp16)"
        lines.append(f"| {r['m']} | {r['n']} | {r['k']} | {r['format']} | {r['rung_us']:.1f} | {r['floor_us']:.1f} | "
                     f"{r['rung_us'] / r['floor_us']:.2f} | {r['cublas_us']:.1f} | {speedup:.2f} | {r['torch_int4_us']:.1f} | "
                     f"{r['torch_int8_us']:.1f} | {target} |")
    lines += ["", "8-bit activations are quantized per token before the kernel (rung.qlinear does it with torch ops; not in the "
              "times above): " + ", ".join(f"{a8} {us:.1f} us" for a8, us in quantize_us.items()) + " for a 4096 x 8192 f16 input."]
    if tuning:
        lines += ["", "Schedules tried beside the scheduler's (int4 g128 at M <= 16 and, wgmma tiles on sm_90a, at M = 4096; every "
                  "format at M = 1; the mma.sync schedule wherever wgmma was chosen):", "", "| M | N | K | schedule | us |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {m} | {n} | {k} | {name} | {us:.1f} |" for m, n, k, name, us in tuning]
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_quant.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        picked = [r for r in rows if r["format"] == "int4 g128"]
        fig, ax = plt.subplots(figsize=(10, 4))
        xs = range(len(picked))
        for i, (key, label) in enumerate((("floor_us", "DRAM floor"), ("rung_us", "Rung int4"), ("torch_int4_us", "torch int4"),
                                          ("torch_int8_us", "torch.compile int8"), ("cublas_us", "cuBLAS fp16"))):
            ax.bar([x + (i - 2) * 0.16 for x in xs], [r[key] for r in picked], 0.16, label=label)
        ax.set_yscale("log")
        ax.set_xticks(list(xs), [f"{r['m']}x{r['n']}x{r['k']}" for r in picked], rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("us per call (log)")
        ax.set_title(f"W4A16 (int4 g128), {dev}, {date}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "bench_quant.png", dpi=120)
    except ImportError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
