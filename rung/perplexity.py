"""Perplexity of a causal LM on a public-domain text for each weight format: what quantization costs in quality.

    python -m rung.perplexity [--model smollm2] [--formats float,int8,int4,...] [--tokens 256] [--out DIR]

The text is the opening of Alice's Adventures in Wonderland (rung/data/alice.txt). The model's forward
over its first --tokens tokens is brought in by torch2ir (no cache: logits at every position), its
linears quantized per format as `torch2ir --quantize` does (embeddings stay in float), and run on the
IR interpreter; perplexity = exp(mean negative log-likelihood of each next token). It prints a markdown
table (and writes perplexity.md under --out).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ir.errors import RungError, run_tool

TEXT = Path(__file__).parent / "data" / "alice.txt"
FORMATS = ("float", "int8", "e4m3", "int4", "uint4", "nf4", "e2m1", "mxfp4", "int2")  # "float": the model's own weights


def perplexity(logits: np.ndarray, ids: np.ndarray) -> float:
    """exp of the mean negative log-likelihood of ids[1:] under logits[:-1] ([tokens, vocab])."""
    z = np.asarray(logits, np.float64)[:-1]
    z = z - z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(np.exp(-log_p[np.arange(len(ids) - 1), ids[1:]].mean()))


def bits_per_weight(fmt) -> float:
    """A quantized weight's storage per element: its code, and its group's scale (and zero) shared by `group` elements."""
    from ir.numerics import FORMATS

    code = FORMATS[fmt.element].bits
    scale = 8 if fmt.scale == "e8m0" else 32 if fmt.scale == "f32" else 16
    zero = code if fmt.zero == "quantized" else scale if fmt.zero == "rescale" else 0
    return code + (scale + zero) / fmt.group if fmt.group else code


def evaluate(model: str, formats: list[str], tokens: int, dtype: str = "f32", progress=lambda msg: None, loaded=None) -> list[tuple]:
    """(format, weight bits per parameter of the linears, perplexity, seconds) for each format (`loaded`: the model and
    its tokenizer, already loaded)."""
    import torch

    from frontend.causal_lm import load_causal_lm
    from frontend.torch2ir import torch_to_ir
    from frontend.transforms import named_format, quantize_linears
    from ir.interpreter import run
    quantized = {name: named_format(name, "--formats") for name in formats if name != "float"}  # bad names fail before the model loads
    lm, tokenizer = loaded or load_causal_lm(model, dtype)
    if tokenizer is None:
        raise RungError(f"{model} comes with no tokenizer to read the text with")
    ids = np.asarray(tokenizer(TEXT.read_text())["input_ids"][:tokens], np.int64)
    if len(ids) < 2:
        raise RungError(f"--tokens must be 2 or more, got {tokens}")
    progress(f"exporting the forward over {len(ids)} tokens ...")
    module, weights, names = torch_to_ir(lm, (torch.from_numpy(ids)[None],), {"use_cache": False})
    rows = []
    for name in formats:
        t0 = time.perf_counter()
        program, args, values, bits = module, names, weights, 16 if dtype != "f32" else 32
        if name != "float":
            fmt = quantized[name]
            program = module.clone()
            args, values, _ = quantize_linears(program, names, weights, fmt)
            bits = bits_per_weight(fmt)
        progress(f"{name}: running on the interpreter ...")
        logits = run(program, [values[n] if n in values else ids[None] for n in args])[0]
        rows.append((name, bits, perplexity(np.asarray(logits)[0], ids), time.perf_counter() - t0))
    return rows


def table(model: str, tokens: int, rows: list[tuple]) -> str:
    base = rows[0][2] if rows and rows[0][0] == "float" else None
    lines = [f"Perplexity of {model} on the first {tokens} tokens of rung/data/alice.txt (the IR interpreter, f32 activations)", "",
             "| weights | bits per weight | perplexity |" + (" vs float |" if base else ""), "| --- | --- | --- |" + (" --- |" if base else "")]
    for name, bits, ppl, _ in rows:
        lines.append(f"| {name} | {bits:.2f} | {ppl:.2f} |" + (f" {ppl / base:.3f}x |" if base else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rung.perplexity", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2", help="as rung-generate --model (default: %(default)s)")
    p.add_argument("--formats", default=",".join(FORMATS), help="comma-separated: float and quantization formats (default: %(default)s)")
    p.add_argument("--tokens", type=int, default=256, help="tokens of the text to score (default: %(default)s)")
    p.add_argument("--out", help="write perplexity.md here")
    args = p.parse_args(argv)

    def work() -> int:
        rows = evaluate(args.model, args.formats.split(","), args.tokens,
                        progress=lambda msg: print(f"perplexity: {msg}", file=sys.stderr, flush=True))
        text = table(args.model, args.tokens, rows)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "perplexity.md").write_text(text + "\n")
        print(text)
        return 0

    return run_tool("perplexity", work)


if __name__ == "__main__":
    sys.exit(main())
