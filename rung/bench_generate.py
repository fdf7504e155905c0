"""Generation speed on the GPU: Rung's prefill and CUDA-graph decode against transformers' static-cache generate.

    python -m rung.bench_generate [--out DIR] [--quick]

A LLaMA-shaped model (rung.bench_models.llama: 1.1B, 22 layers of 2048; --quick: 4 layers), random
init, f16, batch 1: the time of a 512-token prefill (its first token included) and the decode speed over
64 new tokens, greedy; and Rung's speculative decoding with an int4 copy of the model drafting 4 tokens
(random weights: the draft's acceptance says little about a trained model's). Peers in the same run:
transformers' generate with a static cache, eager and with torch.compile (its decode step compiled,
gpt-fast's recipe). Writes bench_generate.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROMPT, NEW = 512, 64


def transformers_speed(lm, prompt, compiled: bool) -> tuple[float, float]:
    """(prefill s with the first token, decode tokens/s) of transformers' greedy generate with a static cache."""
    import torch

    kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=0, cache_implementation="static")
    if compiled:
        lm.forward = torch.compile(lm.forward, mode="reduce-overhead", fullgraph=True)
    for _ in range(2):  # warm-up (compiles)
        lm.generate(prompt, max_new_tokens=NEW, **kwargs)

    def timed(new: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        lm.generate(prompt, max_new_tokens=new, min_new_tokens=new, **kwargs)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    first, whole = timed(1), timed(NEW)
    if compiled:
        del lm.forward
    return first, (NEW - 1) / (whole - first)


def main(argv=None) -> int:
    import torch

    from rung.bench_models import llama
    from rung.generate import Generator

    p = argparse.ArgumentParser(prog="python -m rung.bench_generate", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write bench_generate.md here")
    p.add_argument("--quick", action="store_true", help="4 layers instead of 22")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_generate: no CUDA GPU here", file=sys.stderr)
        return 1
    layers = 4 if args.quick else 22
    lm = llama(layers=layers).half().cuda().eval()
    prompt = torch.randint(0, lm.config.vocab_size, (1, PROMPT), device="cuda")
    t0 = time.perf_counter()
    gen = Generator(lm, PROMPT + NEW, device="gpu")
    gen.generate(prompt[0].tolist(), 2)  # exports, compiles and captures
    setup = time.perf_counter() - t0
    gen.generate(prompt[0].tolist(), NEW)
    ours = gen.generate(prompt[0].tolist(), NEW)
    rows = [("Rung (decode step one CUDA graph)", ours.prefill_s, ours.decode_tokens_per_s)]
    from ir.numerics import quant_format

    draft = Generator(lm, PROMPT + NEW + 4, quant_format("int4"), device="gpu")
    speculative = Generator(lm, PROMPT + NEW + 4, device="gpu")
    speculative.speculate(prompt[0].tolist(), 8, draft, 4)  # exports, compiles and captures
    spec = speculative.speculate(prompt[0].tolist(), NEW, draft, 4)
    rows.append((f"Rung speculative, int4 draft, k = 4 (kept {spec.accepted} of {spec.proposed})", spec.prefill_s, spec.decode_tokens_per_s))
    with torch.no_grad():
        for name, compiled in (("transformers eager, static cache", False), ("transformers + torch.compile, static cache", True)):
            rows.append((name, *transformers_speed(lm, prompt, compiled)))
    lines = [f"### Generation, LLaMA-shaped {layers}-layer model (f16, batch 1)", "",
             f"{torch.cuda.get_device_name()}, {time.strftime('%Y-%m-%d')}. Hidden 2048, 32 query and 4 kv heads, vocabulary 32000, "
             f"random init; a {PROMPT}-token prompt, {NEW} new tokens, greedy. Rung's setup (export, compile, capture): {setup:.1f} s; "
             f"peak GPU memory in the run {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB.", "",
             "| system | prefill ms (first token) | decode tokens/s | decode vs transformers eager |", "| --- | --- | --- | --- |"]
    eager = next(speed for name, _, speed in rows if name.startswith("transformers eager"))
    for name, prefill, speed in rows:
        lines.append(f"| {name} | {prefill * 1e3:.1f} | {speed:.1f} | {speed / eager:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench_generate.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
