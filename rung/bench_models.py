"""Whole-program benchmark: a model brought in by torch2ir, compiled whole by rung.compile, against torch
eager and torch.compile in one run: wall time per forward and peak GPU memory.

    python -m rung.bench_models [--out DIR] [--quick]

The program is LLaMA-7B's feed-forward block in f16, x + W_down (silu(W_gate h) * W_up h) with
h = rms_norm(x): an rms_norm row kernel, three GEMMs, the fused SwiGLU kernel and the residual add.
Rung runs it as a direct call (one arena for the intermediates) and as one captured CUDA graph;
torch.compile is timed in its default mode and "reduce-overhead" (its own CUDA graphs). Writes
bench_models.md into --out.
"""

from __future__ import annotations

import time

from backend.bench_gemm import bench_arguments, warm_up_clocks, write_report
from rung.models import main_arguments, wall_us

DIM, HIDDEN = 4096, 11008
TOKENS = [1, 16, 512]


def feed_forward(dim: int = DIM, hidden: int = HIDDEN):
    import torch
    from torch import nn

    class FeedForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.RMSNorm(dim, eps=1e-5)
            self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
            self.down = nn.Linear(hidden, dim, bias=False)

        def forward(self, x):
            h = self.norm(x)
            return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))

    torch.manual_seed(0)
    model = FeedForward().half()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p / p.float().abs().max() * 0.05 if p.ndim == 2 else torch.ones_like(p))
    return model


def peak_bytes(fn) -> int:
    """The most GPU memory torch's allocator held during fn() beyond what it held before."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def bench(tokens: int) -> dict:
    import torch

    import rung
    from frontend.torch2ir import relative_error, torch_to_ir

    model = feed_forward()
    x_cpu = torch.randn(tokens, DIM).half()
    module, _, names = torch_to_ir(model, (x_cpu,), {})
    start = time.perf_counter()
    fn = rung.compile(module)
    compile_s = time.perf_counter() - start
    model = model.cuda()
    x = x_cpu.cuda()
    args = main_arguments(model, names, (x,), {})
    with torch.no_grad():
        want = model(x)
        err = relative_error(fn(*args).float().cpu(), want.float().cpu())
        replay = fn.capture(*args)
        compiled = torch.compile(model)
        graphs = torch.compile(model, mode="reduce-overhead")
        for _ in range(3):
            compiled(x), graphs(x)
        times = {"rung": wall_us(lambda: fn(*args), 50), "rung graph": wall_us(lambda: replay(*args), 50),
                 "eager": wall_us(lambda: model(x), 50), "compile": wall_us(lambda: compiled(x), 50),
                 "compile graphs": wall_us(lambda: graphs(x), 50)}
        memory = {"rung": peak_bytes(lambda: fn(*args)), "eager": peak_bytes(lambda: model(x))}
    return {"tokens": tokens, "err": err, "compile_s": compile_s, "arena": fn.memory.arena_bytes, **{f"t_{k}": v for k, v in times.items()},
            **{f"m_{k}": v for k, v in memory.items()}, "kernels": fn.path.count("rung_")}


def main(argv=None) -> int:
    args, dev, date = bench_arguments("python -m rung.bench_models", "bench_models.md", "1 and 512 tokens", argv)
    warm_up_clocks()
    rows = []
    for tokens in [1, 512] if args.quick else TOKENS:
        r = bench(tokens)
        rows.append(r)
        print(f"{tokens} tokens: rung {r['t_rung']:.1f} us (graph {r['t_rung graph']:.1f}), eager {r['t_eager']:.1f}, "
              f"compile {r['t_compile']:.1f} (graphs {r['t_compile graphs']:.1f}); max relative error {r['err']:.2e}", flush=True)
    lines = ["# A whole program: LLaMA-7B's feed-forward block (f16) compiled by Rung vs torch", "",
             f"{dev}, {date}. x [tokens, {DIM}] -> x + W_down (silu(W_gate h) * W_up h), h = rms_norm(x); weights "
             f"{3 * DIM * HIDDEN * 2 / 2**20:.0f} MiB. us per forward: wall time of 50 forwards in a row, host work included "
             "(Rung graph: the whole call replayed as one CUDA graph; torch.compile graphs: its reduce-overhead mode); "
             "peak: the most memory allocated during one forward beyond the inputs and weights.", "",
             "| tokens | Rung kernels | Rung us | Rung graph us | torch eager us | torch.compile us | torch.compile graphs us | "
             "eager / Rung graph | compile graphs / Rung graph | Rung peak MiB | eager peak MiB | max rel. error | Rung compile s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['tokens']} | {r['kernels']} | {r['t_rung']:.1f} | {r['t_rung graph']:.1f} | {r['t_eager']:.1f} | "
                     f"{r['t_compile']:.1f} | {r['t_compile graphs']:.1f} | {r['t_eager'] / r['t_rung graph']:.2f} | "
                     f"{r['t_compile graphs'] / r['t_rung graph']:.2f} | {r['m_rung'] / 2**20:.2f} | {r['m_eager'] / 2**20:.2f} | "
                     f"{r['err']:.1e} | {r['compile_s']:.1f} |")
    write_report(args.out, "bench_models.md", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
