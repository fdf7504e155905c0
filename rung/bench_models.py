"""Whole-program benchmark: models brought in by torch2ir, compiled whole by rung.compile, against torch
eager and torch.compile in one run: wall time per forward, peak GPU memory, compile time.

    python -m rung.bench_models [--out DIR] [--quick] [--breakdown]

Two programs in f16: LLaMA-7B's feed-forward block, x + W_down (silu(W_gate h) * W_up h) with
h = rms_norm(x) (an rms_norm row kernel and three GEMMs: silu, SwiGLU's product and the residual add in their epilogues),
and a whole LLaMA-shaped 1.1B model from transformers (random init: 22 layers of 2048, 32 query and
4 kv heads, vocabulary 32000; a forward over a prompt of 512 tokens and over one token, no cache).
Rung runs each as a direct call (one arena for the intermediates) and as one captured CUDA graph;
torch.compile is timed in its default mode and "reduce-overhead" (its own CUDA graphs). Writes
bench_models.md into --out; with --breakdown, bench_models_breakdown.md instead: the 1.1B model's GPU time by
kernel, Rung's and torch eager's.
"""

from __future__ import annotations

import time

from backend.bench_gemm import bench_arguments, warm_up_clocks, write_report
from rung.models import main_arguments, wall_us

DIM, HIDDEN = 4096, 11008
RUNS = [("ffn", 1), ("ffn", 16), ("ffn", 512), ("llama-1b", 1), ("llama-1b", 512)]


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


def llama(layers: int = 22, hidden: int = 2048, intermediate: int = 5632, heads: int = 32, kv_heads: int = 4, vocab: int = 32000,
          device: str = "cpu"):
    """A LLaMA-shaped decoder (TinyLlama's shape by default, 1.1B parameters), random init, made in f16 on `device` (an
    8B shape made on a GPU needs no host copy)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048)
    with torch.device(device):
        return LlamaForCausalLM._from_config(config, dtype=torch.float16).eval()


def program(name: str, tokens: int) -> tuple:
    """(model, args, kwargs) of a benchmarked program on the CPU."""
    import torch

    if name == "ffn":
        return feed_forward(), (torch.randn(tokens, DIM).half(),), {}
    model = llama()
    return model, (torch.randint(0, model.config.vocab_size, (1, tokens)),), {"use_cache": False}


def peak_bytes(fn) -> int:
    """The most GPU memory torch's allocator held during fn() beyond what it held before."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def compiled_program(name: str, tokens: int) -> tuple:
    """(fn, its compile seconds, the model on the GPU, args, kwargs, @main's tensors) of a benchmarked program."""
    import rung
    from frontend.torch2ir import torch_to_ir

    model, args, kwargs = program(name, tokens)
    module, _, names = torch_to_ir(model, args, kwargs)
    start = time.perf_counter()
    fn = rung.compile(module)
    compile_s = time.perf_counter() - start
    model, args = model.cuda(), tuple(a.cuda() for a in args)
    return fn, compile_s, model, args, kwargs, main_arguments(model, names, args, kwargs)


def bench(name: str, tokens: int) -> dict:
    import torch

    from frontend.torch2ir import output_error, torch_outputs

    torch._dynamo.reset()  # the previous program's compiled graphs and their memory go
    torch.cuda.empty_cache()
    fn, compile_s, model, args, kwargs, tensors = compiled_program(name, tokens)
    with torch.no_grad():
        err = output_error(fn(*tensors), torch_outputs(model, args, kwargs))
        replay = fn.capture(*tensors)
        compiled = torch.compile(model)
        graphs = torch.compile(model, mode="reduce-overhead")
        for _ in range(3):
            compiled(*args, **kwargs), graphs(*args, **kwargs)
        times = {"rung": wall_us(lambda: fn(*tensors), 20), "rung graph": wall_us(lambda: replay(*tensors), 20),
                 "eager": wall_us(lambda: model(*args, **kwargs), 20), "compile": wall_us(lambda: compiled(*args, **kwargs), 20),
                 "compile graphs": wall_us(lambda: graphs(*args, **kwargs), 20)}
        memory = {"rung": peak_bytes(lambda: fn(*tensors)), "eager": peak_bytes(lambda: model(*args, **kwargs))}
    return {"program": name, "tokens": tokens, "err": err, "compile_s": compile_s, "arena": fn.memory.arena_bytes,
            **{f"t_{k}": v for k, v in times.items()}, **{f"m_{k}": v for k, v in memory.items()}, "kernels": fn.path.count("rung_")}


TITLES = {"ffn": "LLaMA-7B's feed-forward block", "llama-1b": "LLaMA 1.1B (whole model)"}


def kernel_times(fn, calls: int = 3) -> dict[str, float]:
    """GPU microseconds per call of fn() by kernel name (torch.profiler), the slowest first."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    times = {e.key: e.self_device_time_total / calls for e in prof.key_averages() if e.self_device_time_total > 0}
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def breakdown(tokens: int, top: int = 12) -> list[str]:
    """Where a forward of the LLaMA 1.1B program spends its GPU time, Rung's kernels beside torch eager's."""
    import torch

    fn, _, model, args, kwargs, tensors = compiled_program("llama-1b", tokens)
    lines = []
    with torch.no_grad():
        for who, times in (("Rung", kernel_times(lambda: fn(*tensors))), ("torch eager", kernel_times(lambda: model(*args, **kwargs)))):
            total = sum(times.values())
            lines += ["", f"{who}, {tokens} tokens: {total:.0f} us of kernels per forward, {len(times)} distinct kernels", "",
                      "| kernel | us per forward | share |", "| --- | --- | --- |"]
            lines += [f"| `{name[:90]}` | {t:.1f} | {100 * t / total:.0f}% |" for name, t in list(times.items())[:top]]
    return lines


def main(argv=None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--breakdown" in argv:  # GPU time by kernel instead of the benchmark table
        argv.remove("--breakdown")
        args, dev, date = bench_arguments("python -m rung.bench_models", "bench_models_breakdown.md", "1 and 512 tokens", argv)
        lines = ["# LLaMA 1.1B (f16): GPU time by kernel, Rung's and torch eager's", "", f"{dev}, {date}; torch.profiler, 3 forwards."]
        for tokens in (1, 512):
            lines += breakdown(tokens)
        write_report(args.out, "bench_models_breakdown.md", lines)
        return 0
    args, dev, date = bench_arguments("python -m rung.bench_models", "bench_models.md", "1 and 512 tokens", argv)
    warm_up_clocks()
    rows = []
    for name, tokens in RUNS:
        if args.quick and tokens == 16:
            continue
        r = bench(name, tokens)
        rows.append(r)
        print(f"{name} {tokens} tokens: rung {r['t_rung']:.1f} us (graph {r['t_rung graph']:.1f}), eager {r['t_eager']:.1f}, "
              f"compile {r['t_compile']:.1f} (graphs {r['t_compile graphs']:.1f}); max relative error {r['err']:.2e}", flush=True)
    lines = ["# Whole programs compiled by Rung vs torch (f16)", "",
             f"{dev}, {date}. {TITLES['ffn']}: x [tokens, {DIM}] -> x + W_down (silu(W_gate h) * W_up h), h = rms_norm(x), weights "
             f"{3 * DIM * HIDDEN * 2 / 2**20:.0f} MiB. {TITLES['llama-1b']}: transformers' LlamaForCausalLM, 22 layers of 2048, "
             "32 query and 4 kv heads, vocabulary 32000, random init; tokens = the prompt's length, no cache. "
             "us per forward: wall time of 20 forwards in a row, host work included "
             "(Rung graph: the whole call replayed as one CUDA graph; torch.compile graphs: its reduce-overhead mode); "
             "peak: the most memory allocated during one forward beyond the inputs and weights.", "",
             "| program | tokens | Rung kernels | Rung us | Rung graph us | torch eager us | torch.compile us | torch.compile graphs us | "
             "eager / Rung graph | compile graphs / Rung graph | Rung peak MiB | eager peak MiB | max rel. error | Rung compile s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {TITLES[r['program']]} | {r['tokens']} | {r['kernels']} | {r['t_rung']:.1f} | {r['t_rung graph']:.1f} | "
                     f"{r['t_eager']:.1f} | {r['t_compile']:.1f} | {r['t_compile graphs']:.1f} | {r['t_eager'] / r['t_rung graph']:.2f} | "
                     f"{r['t_compile graphs'] / r['t_rung graph']:.2f} | {r['m_rung'] / 2**20:.2f} | {r['m_eager'] / 2**20:.2f} | "
                     f"{r['err']:.1e} | {r['compile_s']:.1f} |")
    write_report(args.out, "bench_models.md", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
