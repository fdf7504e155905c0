"""Unstructured-sparse GEMM benchmark (Flash-LLM's): Rung's sparse kernel (Tiled-CSL slots scattered into a dense
shared tile, mma.sync) against cuBLAS f16 on the dense weight, torch's CSR sparse matmul (cuSPARSE) and torch's 2:4
semi-structured sparsity (cuSPARSELt, at 50%), in one run.

    python -m backend.bench_sparse [--out DIR] [--quick]

Skinny M (8, 16, 32: decoding and small batches) on layer shapes of Llama-3-8B and OPT-66B, at 50-90% sparsity. A
weight's nonzeros fall at random places (what magnitude pruning of a trained weight looks like to the kernel); each is
packed once on the host as `tile.pack_sparse` packs it (ir.sparse.kernel_tiles, slots ordered by shared-memory
bank) and copied on the GPU until the copies
outgrow L2. GPU time per call comes from CUDA graphs (backend.bench_gemm.gpu_time_us); the DRAM floor is the packed
weight's bytes (with x and the output) over the copy bandwidth measured in the run. Every result is checked against
x @ W^T before it is timed. Writes bench_sparse.md and bench_sparse.png into --out.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from backend.bench_gemm import bench_arguments, gpu_time_us, warm_up_clocks, write_report
from backend.bench_quant import copy_bandwidth
from dialects.tile.schedule import dense_tile_banks
from ir.sparse import kernel_tiles

SHAPES = {"Llama-3-8B gate+up": (28672, 4096), "Llama-3-8B down": (4096, 14336), "OPT-66B out": (9216, 9216)}  # N x K
MS = (8, 16, 32)
SPARSITIES = (0.5, 0.7, 0.8, 0.9)
TARGETS = {0.5: 1.0, 0.7: 1.6, 0.8: 2.0, 0.9: 2.6}  # speedup over cuBLAS f16 on the dense weight
TILE = (128, 64)  # #lp.sparse's default tile: the sparse kernel's BN x BK
CANDIDATES = [dict(split_k=s) for s in (1, 2, 4, 8)] + [dict(stages=2)]  # timed beside the scheduler's at M = 16, 80% sparsity


def random_sparse(n: int, k: int, sparsity: float, seed: int) -> np.ndarray:
    """An f16 weight [N, K] with `sparsity` of its values zero at random places."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k), dtype=np.float32).astype(np.float16)
    w[rng.random((n, k), dtype=np.float32) < sparsity] = 0
    return w


def fullest_tile(w: np.ndarray) -> int:
    """The most nonzeros one TILE of w holds (the bound #lp.sparse states)."""
    from ir.sparse import SparseFormat

    tiles_n, tiles_k = SparseFormat(*TILE).tiles(w.shape)
    mask = np.zeros((tiles_n * TILE[0], tiles_k * TILE[1]), dtype=bool)
    mask[:w.shape[0], :w.shape[1]] = w != 0
    return int(mask.reshape(tiles_n, TILE[0], tiles_k, TILE[1]).sum(axis=(1, 3)).max())


def schedule(m: int, n: int, k: int, fullest: int, override: dict | None = None):
    """The sparse kernel's schedule for x [m, K] @ W^T, W [N, K] of TILE tiles holding at most `fullest` nonzeros, as
    graph-to-tile picks it (with `override`'s fields, as its options set them)."""
    from dialects.lp import SparseAttr
    from lowering.graph_to_tile import sparse_schedule

    return sparse_schedule(m, n, k, "f16", SparseAttr(*TILE, fullest), override or {})


def planned_schedules() -> set:
    """The schedules the benchmark times, for weights as full as random ones of its sparsities get (the tests assemble them)."""
    typical = lambda sparsity: int(1.1 * (1 - sparsity) * TILE[0] * TILE[1])  # noqa: E731  (a tile's mean count and some)
    return {schedule(m, n, k, typical(s), o) for n, k in SHAPES.values() for m in MS for s in SPARSITIES
            for o in [{}] + (CANDIDATES if (m, s) == (16, 0.8) else [])}


def rung_us(m: int, w: np.ndarray, words: np.ndarray, cfg, l2: int) -> tuple[float, float]:
    """(GPU us per call, max error against x @ w^T) of the sparse kernel on its packed words."""
    import torch

    from backend.gemm import device_target, gemm_kernels
    from backend.quant import launch_addresses

    n, k = w.shape
    kernels = gemm_kernels(cfg, device_target())
    first = torch.from_numpy(words.view(np.int32)).cuda()
    copies = [first] + [first.clone() for _ in range(max(1, math.ceil(2 * l2 / (first.numel() * 4))) - 1)]
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)  # (poisoned: a tile not written shows)
    kernels.launch(launch_addresses(x, (first, None, None), out), m, n, k, x)
    err = (out.float() - x.float() @ torch.from_numpy(w).cuda().float().T).abs().max().item()
    return gpu_time_us(lambda i: kernels.launch(launch_addresses(x, (copies[i], None, None), out), m, n, k, x), len(copies)), err


def peer_us(m: int, w: np.ndarray, sparsity: float, l2: int) -> dict:
    """cuBLAS f16 on the dense weight; torch's CSR matmul (cuSPARSE); 2:4 semi-structured (cuSPARSELt) at 50%."""
    import torch

    n, k = w.shape
    dense = torch.from_numpy(w).cuda()
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    out = torch.empty(m, n, device="cuda", dtype=torch.float16)
    copies = [dense] + [dense.clone() for _ in range(max(1, math.ceil(2 * l2 / (2 * n * k))) - 1)]
    result = {"cublas_us": gpu_time_us(lambda i: torch.matmul(x, copies[i].T, out=out), len(copies))}
    copies.clear()  # (the copies go before the sparse peers allocate theirs)
    xt = x.T.contiguous()
    try:
        csr = dense.to_sparse_csr()
        result["csr_us"] = gpu_time_us(lambda i: torch.mm(csr, xt), 1)
    except (RuntimeError, NotImplementedError):
        result["csr_us"] = float("nan")
    result["semi_us"] = float("nan")
    if sparsity == 0.5:
        try:  # the same density with two of every four values kept (the largest two)
            from torch.sparse import to_sparse_semi_structured

            groups = dense.reshape(n, k // 4, 4)
            keep = groups.abs().topk(2, dim=-1).indices
            semi = torch.zeros_like(groups).scatter_(-1, keep, groups.gather(-1, keep)).reshape(n, k)
            packed = to_sparse_semi_structured(semi)
            result["semi_us"] = gpu_time_us(lambda i: torch.mm(packed, xt), 1)
        except (RuntimeError, NotImplementedError, ValueError):
            pass
    return result


def main(argv=None) -> int:
    import torch

    args, dev, date = bench_arguments("python -m backend.bench_sparse", "bench_sparse.md", "one shape, 80% sparsity", argv)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    bandwidth, _ = copy_bandwidth()
    warm_up_clocks()
    shapes = dict(list(SHAPES.items())[:1]) if args.quick else SHAPES
    sparsities = (0.8,) if args.quick else SPARSITIES
    jobs = [(name, s) for name in shapes for s in sparsities]
    with ThreadPoolExecutor() as pool:  # (numpy leaves the interpreter lock while it draws and packs)
        weights = dict(zip(jobs, pool.map(lambda job: random_sparse(*shapes[job[0]], job[1], seed=len(job[0]) + int(100 * job[1])), jobs)))
        bounds = dict(zip(jobs, pool.map(lambda job: fullest_tile(weights[job]), jobs)))
        plans = {(job, m): schedule(m, *weights[job].shape, bounds[job]) for job in jobs for m in MS}
        keys = sorted({(job, cfg.threads, cfg.sparse, ordered) for (job, _), cfg in plans.items() for ordered in (True, False)})
        words = dict(zip(keys, pool.map(lambda key: kernel_tiles(weights[key[0]], *TILE, "f16", key[1], key[2],
                                                                 dense_tile_banks(*TILE) if key[3] else None), keys)))
    rows, tried = [], []
    for (name, sparsity) in jobs:
        w = weights[name, sparsity]
        n, k = w.shape
        for m in MS:
            cfg = plans[(name, sparsity), m]
            packed = words[(name, sparsity), cfg.threads, cfg.sparse, True]
            us, err = rung_us(m, w, packed, cfg, l2)
            row = {"shape": name, "n": n, "k": k, "m": m, "sparsity": sparsity, "rung_us": us, "err": err, "kernel": cfg.name,
                   "weight_mb": packed.nbytes / 1e6, "dense_mb": 2 * n * k / 1e6,
                   "floor_us": (packed.nbytes + 2 * m * (n + k)) / bandwidth * 1e6, **peer_us(m, w, sparsity, l2)}
            rows.append(row)
            print(f"{name:20} M={m:3} {sparsity:.0%}: rung {us:8.1f} us (err {err:.3g}), cuBLAS {row['cublas_us']:8.1f}, "
                  f"CSR {row['csr_us']:8.1f}, 2:4 {row['semi_us']:8.1f}", flush=True)
            if m == 16:  # the same kernel on slots in position order (their stores meet in banks)
                unordered = words[(name, sparsity), cfg.threads, cfg.sparse, False]
                tried.append((name, sparsity, m, cfg.name + " (slots in position order)", rung_us(m, w, unordered, cfg, l2)[0], us))
            for override in CANDIDATES if (m, sparsity) == (16, 0.8) else []:
                other = schedule(m, n, k, bounds[name, sparsity], override)
                if other != cfg and other.sparse == cfg.sparse:
                    tried.append((name, sparsity, m, other.name, rung_us(m, w, packed, other, l2)[0], us))
        del weights[name, sparsity]
    write_table(args.out, rows, tried, dev, date, bandwidth)
    return 0


def write_table(out, rows: list, tried: list, dev: str, date: str, bandwidth: float) -> None:
    lines = ["# Unstructured-sparse GEMM: Rung vs cuBLAS f16 (dense), cuSPARSE CSR and cuSPARSELt 2:4", "",
             f"{dev}, {date}. y = x @ W^T, x [M, K] f16, W [N, K] with the stated share of zeros at random places. GPU time per "
             f"call (us) from CUDA graphs over weight copies larger than L2. DRAM floor: Rung's packed weight (4 bytes a slot: "
             f"value and position), x and y over the copy bandwidth measured in the run, {bandwidth / 1e12:.2f} TB/s. "
             "Target: the speedup over cuBLAS that the sparsity names (Flash-LLM's A100 figures raised).", "",
             "| layer | N x K | M | sparsity | Rung us | DRAM floor us | Rung / floor | cuBLAS f16 us | vs cuBLAS | target | "
             "CSR us | 2:4 us | weight MB (dense) | max error |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        speedup = r["cublas_us"] / r["rung_us"]
        target = TARGETS[r["sparsity"]]
        lines.append(f"| {r['shape']} | {r['n']} x {r['k']} | {r['m']} | {r['sparsity']:.0%} | {r['rung_us']:.1f} | {r['floor_us']:.1f} | "
                     f"{r['rung_us'] / r['floor_us']:.2f} | {r['cublas_us']:.1f} | {speedup:.2f} | {target:.1f} "
                     f"{'met' if speedup >= target else 'missed'} | {r['csr_us']:.1f} | {r['semi_us']:.1f} | "
                     f"{r['weight_mb']:.1f} ({r['dense_mb']:.1f}) | {r['err']:.3g} |")
    if tried:
        lines += ["", "Schedules tried beside the scheduler's at M = 16 (its slots in position order at every sparsity, other splits "
                  "and stages at 80%; us, the scheduler's in the last column):", "",
                  "| layer | sparsity | schedule | us | scheduler's us |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {name} | {s:.0%} | {kernel} | {us:.1f} | {chosen:.1f} |" for name, s, _, kernel, us, chosen in tried]
    write_report(out, "bench_sparse.md", lines)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(MS), figsize=(12, 3.5), sharey=True)
    for ax, m in zip(axes, MS):
        for shape in dict.fromkeys(r["shape"] for r in rows):
            picked = [r for r in rows if r["m"] == m and r["shape"] == shape]
            ax.plot([r["sparsity"] for r in picked], [r["cublas_us"] / r["rung_us"] for r in picked], "o-", label=shape)
        ax.plot(list(TARGETS), list(TARGETS.values()), "k--", label="target")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_title(f"M = {m}")
        ax.set_xlabel("sparsity")
    axes[0].set_ylabel("speedup over cuBLAS f16 (dense)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Unstructured-sparse GEMM, {dev}, {date}", fontsize=9)
    fig.tight_layout()
    fig.savefig(f"{out}/bench_sparse.png", dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
