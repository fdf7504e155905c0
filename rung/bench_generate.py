"""Generation speed on the GPU: Rung's prefill and CUDA-graph decode, per weight format, against transformers'
static-cache generate.

    python -m rung.bench_generate [--out DIR] [--model llama|PATH] [--shape 1b|8b] [--layers N] [--formats f16,int8,...] [--quick]
                                  [--no-speculate]

A LLaMA-shaped model (rung.bench_models.llama, random init, made on the GPU: 1.1B, 22 layers of 2048, or
Llama-3-8B's shape with --shape 8b; --quick: 4 layers and f16 and int4 alone), or a model that rung-generate's --model takes (smollm2, say), f16 activations, batch 1:
the time of a 512-token prefill (its first token included) and the decode speed over 64 new tokens, greedy,
for each weight format (quantized at load, lm_head and embeddings kept in f16; w8a8 and fp8 quantize the
activations per token too); and Rung's speculative decoding of the f16 model with an int4 copy drafting 4 tokens
(with random weights the draft's acceptance says little about a trained model's). Peers in the same run:
transformers' generate with a static cache, eager and with torch.compile (its decode step compiled,
gpt-fast's recipe), and where int4 is benchmarked the same compiled with gpt-fast's int4 weight-only linears
(torch's tinygemm kernel, bf16). On sm_90 the f16 row is run a second time with the kernels launched one after another (no
programmatic launch, no early weight copies) to show what launching each while the one before runs gives. Each Rung row has its DRAM floor (the bytes its decode step reads over the copy bandwidth
measured in the run) and the GPU memory it holds; each peer's row its peak allocation. Writes bench_generate.md;
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path

PROMPT, NEW = 512, 64
FORMATS = ("f16", "int8", "int4", "nf4", "int2", "w8a8", "fp8")
SHAPES = {"1b": dict(layers=22, hidden=2048, intermediate=5632, heads=32, kv_heads=4, vocab=32000),
          "8b": dict(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256)}


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def transformers_speed(lm, prompt, compiled: bool) -> tuple[float, float]:
    """(prefill s with the first token, decode tokens/s) of transformers' greedy generate with a static cache: eager, or
    with its decode step compiled as transformers does by itself for a static cache on a GPU (torch.compile, fullgraph,
    CUDA graphs: gpt-fast's recipe)."""
    import torch

    kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=0, cache_implementation="static", disable_compile=not compiled)
    for _ in range(2):  # warm-up (compiles)
        lm.generate(prompt, max_new_tokens=NEW, **kwargs)

    def timed(new: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        lm.generate(prompt, max_new_tokens=new, min_new_tokens=new, **kwargs)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    first, whole = timed(1), timed(NEW)
    return first, (NEW - 1) / (whole - first)


def tinygemm_int4_copy(lm):
    """The model with every linear but the output head as gpt-fast's int4 weight-only linear (torch's tinygemm kernel,
    `torch._weight_int4pack_mm`, group 128, bf16 activations: what torch.compile runs for gpt-fast's int4), in bf16.
    A timing peer: its codes and scales are random, so its tokens mean nothing."""
    import copy

    import torch

    class Int4Linear(torch.nn.Module):
        def __init__(self, linear):
            super().__init__()
            n, k = linear.weight.shape
            codes = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=linear.weight.device)
            self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack(codes, 8))
            self.register_buffer("scales_and_zeros", torch.rand(k // 128, n, 2, device=codes.device, dtype=torch.bfloat16) * 0.01)
            self.n = n

        def forward(self, x):
            y = torch.ops.aten._weight_int4pack_mm(x.reshape(-1, x.shape[-1]), self.packed, 128, self.scales_and_zeros)
            return y.reshape(*x.shape[:-1], self.n)

    peer = copy.deepcopy(lm).to(torch.bfloat16)
    for attr in ("_compiled_call", "_last_compile_config"):  # (a copy would run the f16 model's own compiled forward)
        peer.__dict__.pop(attr, None)
    head = peer.get_output_embeddings()
    for parent in list(peer.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not head:
                setattr(parent, name, Int4Linear(child))
    return peer


def _bytes(tensors) -> int:
    """Bytes of the distinct storages among `tensors` (torch tensors: a tied weight counts once) and numpy arrays."""
    import torch

    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if isinstance(t, torch.Tensor)}
    return sum(storages.values()) + sum(t.nbytes for t in tensors if not isinstance(t, torch.Tensor))


def rung_footprint(gen, position: int) -> tuple[int, int]:
    """(bytes a decode step at `position` reads from DRAM, bytes Rung holds on the GPU) of a Generator that has run:
    every weight the decode step reads on the GPU (the packed copy of a quantized one) whole but tables it only looks
    rows up in (embeddings, rotary tables), and the caches up to the position; held: those weights and tables, the
    whole caches, the packed weights and the largest program's arena."""
    from dialects import graph as g
    from ir.interpreter import find_function

    program = gen._program(1)
    args = list(find_function(program.module, "main").body.block.args)
    caches = {name for _, name in program.updates}
    lookups = (g.EmbeddingOp, g.GatherOp, g.IndexSelectOp, g.IndexOp)
    read = 0
    for name, arg in zip(program.names[:-2], args):
        tensor = gen._state[name]
        if name in caches:
            read += _bytes([tensor]) * position // gen.max_seq_len
        elif not all(isinstance(use.operation, lookups) for use in arg.uses):
            read += _bytes([tensor])
    packed = [t for tensors in gen._packed.values() for t in tensors]
    arena = max(p.compiled.memory.arena_bytes for p in gen._programs.values())
    return read + _bytes(packed), _bytes([*gen._state.values(), *packed]) + arena


def rung_speed(lm, prompt: list[int], fmt: str, programmatic: bool = True) -> tuple[float, float, float, int, int]:
    """(prefill s, decode tokens/s, setup s, bytes a decode step reads, bytes held on the GPU: rung_footprint) of Rung's
    generation in `fmt` (`programmatic`: rung.compile's)."""
    from frontend.transforms import named_format
    from rung.generate import Generator

    start = time.perf_counter()
    gen = Generator(lm, PROMPT + NEW, None if fmt == "f16" else named_format(fmt, "--formats"), device="gpu", progress=_say,
                    programmatic=programmatic)
    gen.generate(prompt, 2)  # exports, quantizes, compiles, packs and captures
    setup = time.perf_counter() - start
    gen.generate(prompt, NEW)
    out = gen.generate(prompt, NEW)
    return out.prefill_s, out.decode_tokens_per_s, setup, *rung_footprint(gen, PROMPT + NEW // 2)


def main(argv=None) -> int:
    import torch

    from frontend.transforms import named_format
    from ir.errors import RungError
    from rung.bench_models import llama
    from rung.generate import Generator

    p = argparse.ArgumentParser(prog="python -m rung.bench_generate", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write bench_generate.md here")
    p.add_argument("--model", default="llama", help="llama (the random-init LLaMA shape) or what rung-generate --model takes")
    p.add_argument("--shape", choices=sorted(SHAPES), default="1b", help="the LLaMA shape: 1b (TinyLlama's, the default) or 8b "
                   "(Llama-3-8B's: 32 layers of 4096, 8 kv heads, vocabulary 128256)")
    p.add_argument("--layers", type=int, help="decoder layers of the LLaMA shape (default: the shape's)")
    p.add_argument("--formats", default=",".join(FORMATS), help="weight formats, comma-separated (f16: none)")
    p.add_argument("--quick", action="store_true", help="4 layers, f16 and int4")
    p.add_argument("--speculate", action=argparse.BooleanOptionalAction, default=True, help="the speculative decoding row (default: on)")
    args = p.parse_args(argv)
    shape = SHAPES[args.shape]
    layers, formats = (4, ["f16", "int4"]) if args.quick else (args.layers or shape["layers"], args.formats.split(","))
    try:
        for fmt in formats:
            if fmt != "f16":
                named_format(fmt, "--formats")  # a bad name fails before any work
    except RungError as e:
        print(f"bench_generate: error: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("bench_generate: no CUDA GPU here", file=sys.stderr)
        return 1
    if args.model == "llama":
        lm = llama(**{**shape, "layers": layers}, device="cuda")
    else:
        from frontend.causal_lm import load_causal_lm

        lm = load_causal_lm(args.model, "f16")[0].cuda()
    c = lm.config
    what = f"LLaMA-shaped {layers}-layer model ({args.shape} shape), random init" if args.model == "llama" else f"{args.model}"
    header = [f"### Generation, {what} (batch 1)", "",
              f"{torch.cuda.get_device_name()}, {time.strftime('%Y-%m-%d')}. {c.num_hidden_layers} layers of {c.hidden_size}, "
              f"{c.num_attention_heads} query and {c.num_key_value_heads} kv heads, vocabulary {c.vocab_size}, f16 activations; "
              f"a {PROMPT}-token prompt, {NEW} new tokens, greedy. Setup: export, quantize, compile, pack and capture, once per "
              "model and format.", "",
              "| system | prefill ms (first token) | decode tokens/s | decode vs transformers eager | DRAM floor tokens/s (reached) "
              "| GPU memory GiB | setup, notes |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    from backend.bench_quant import copy_bandwidth

    bandwidth = copy_bandwidth()[0]
    header[2] += (f" DRAM floor: the bytes a decode step reads (weights as stored, the caches up to the middle of the decode) "
                  f"over the copy bandwidth measured in the run, {bandwidth / 1e12:.2f} TB/s. GPU memory: Rung's, the weights, "
                  "caches, packed weights and arena it holds; transformers', its peak allocation during generate (model included).")
    prompt = torch.randint(0, c.vocab_size, (1, PROMPT), device="cuda")
    rows = []

    def add(row) -> None:  # the table is rewritten after every row: a run cut short keeps what it measured
        rows.append(row)
        eager = next((speed for name, _, speed, *_ in rows if name.startswith("transformers eager")), math.nan)
        cells = [(name, f"{prefill * 1e3:.1f}", f"{speed:.1f}", f"{speed / eager:.2f}x",
                  f"{bandwidth / read:.0f} ({speed * read / bandwidth:.0%})" if read else "", f"{held / 2**30:.2f}" if held else "", notes)
                 for name, prefill, speed, read, held, notes in rows]
        text = "\n".join(header + ["| " + " | ".join(c) + " |" for c in cells])
        print("| " + " | ".join(cells[-1]) + " |", flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "bench_generate.md").write_text(text + "\n")

    def peer(name: str, compiled: bool, model=None, notes: str = "") -> None:
        _say(name)
        try:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                timings = transformers_speed(model() if model else lm, prompt, compiled)
            add((name, *timings, 0, 0 if model else torch.cuda.max_memory_allocated(), notes))  # (a copy's peak holds the original too)
        except Exception as e:  # a peer's failure is a row of the table too
            traceback.print_exc()
            add((name, math.nan, math.nan, 0, 0, f"failed: {type(e).__name__}: {str(e)[:200]}"))
        torch._dynamo.reset()

    peer("transformers eager, static cache, f16", False)
    from backend.gemm import device_target
    from ir.targets import programmatic_launch

    runs = [(fmt, True) for fmt in formats]
    if "f16" in formats and programmatic_launch(device_target()):  # what launching each kernel while the one before runs gives
        runs.insert(formats.index("f16") + 1, ("f16", False))
    for fmt, programmatic in runs:
        name = f"Rung, {fmt}" + ("" if programmatic else ", kernels launched one after another")
        _say(name)
        try:
            prefill, speed, setup, read, held = rung_speed(lm, prompt[0].tolist(), fmt, programmatic)
        except Exception as e:  # one format's failure is a row of the table, not the end of the run
            traceback.print_exc()
            add((name, math.nan, math.nan, 0, 0, f"failed: {type(e).__name__}: {str(e)[:200]}"))
            continue
        finally:
            torch.cuda.empty_cache()
        add((name, prefill, speed, read, held, f"setup {setup:.0f} s"))
    peer("transformers + torch.compile (its static-cache decode compiled, CUDA graphs), f16", True)
    if "int4" in formats:
        peer("transformers + torch.compile, int4 g128 weight-only by torch's tinygemm kernel (gpt-fast's), bf16", True,
             lambda: tinygemm_int4_copy(lm), "random codes: a timing peer")
        torch.cuda.empty_cache()
    if not args.speculate:
        return 0
    _say("Rung, speculative decoding with an int4 draft")
    draft = Generator(lm, PROMPT + NEW + 4, named_format("int4", "--draft"), device="gpu", progress=_say)
    speculative = Generator(lm, PROMPT + NEW + 4, device="gpu", progress=_say)
    speculative.speculate(prompt[0].tolist(), 8, draft, 4)  # exports, compiles and captures
    spec = speculative.speculate(prompt[0].tolist(), NEW, draft, 4)
    add(("Rung speculative, f16 with an int4 draft, k = 4", spec.prefill_s, spec.decode_tokens_per_s, 0, 0,
         f"kept {spec.accepted} of {spec.proposed} drafted"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
