"""Transforms over a traced program that users compose, applied before its weights go anywhere
(Thunder's idea): they rewrite @main and its weights together, so nothing float is
materialized that the program no longer reads.

    module, weights, names = torch_to_ir(model, args)          # (torch_to_ir folds batch norms: fold_batch_norms)
    names, weights, kept = quantize_linears(module, names, weights, QuantFormat("int4", 128))
    names, weights, kept = sparsify_linears(module, names, weights, 0.8)   # Flash-LLM's unstructured sparsity
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatch

import numpy as np
from xdsl.dialects.builtin import FunctionType, IntegerType, ModuleOp, Signedness, TensorType, f32, i32

from dialects import graph as g
from dialects.lp import QuantAttr, SparseAttr
from ir.dtypes import EIGHT_BIT_TYPES, storage_dtype
from ir.interpreter import find_function
from ir.errors import RungError, progress_bar
from ir.numerics import EIGHT_BIT_PRESETS, EightBitFormat, FormatError, QuantFormat, quant_format
from ir.sparse import SparseFormat, encode, prune
from ir.syntax import ssa_name


def named_format(name: str, option: str, group: int | None = None) -> QuantFormat | EightBitFormat:
    """The format a command line names (a preset such as int4, an element format, or w8a8 / fp8: 8-bit activations too),
    with its group overridden unless `group` is None (0: one scale per output channel); a bad name or group is a
    RungError naming `option`."""
    if name in EIGHT_BIT_PRESETS:
        if group:
            raise RungError(f"{option}: {name} scales each output channel and each token: it takes no group")
        return EIGHT_BIT_PRESETS[name]
    try:
        return quant_format(name, **({} if group is None else {"group": group or None}))
    except FormatError as e:
        raise RungError(f"{option}: {e}") from None


def quantize_linears(module: ModuleOp, names: list[str], weights: dict[str, np.ndarray], fmt: QuantFormat | EightBitFormat,
                     quantized: dict | None = None, keep=()):
    """Every graph.linear whose weight is a weight argument of @main, used by linears only,
    becomes graph.qlinear on that weight quantized to `fmt` (round to nearest; graph.qlinear8 for W8A8 and FP8,
    which quantize the activations too); a bias becomes a graph.add after it. The weight argument is replaced by its
    values, scales (and zeros), named `<weight>.qweight`, `.scales`, `.zeros`. Returns (names, weights, kept): the
    updated argument names and weights, and the weights kept in float, each with the reason.

    Weights are quantized in parallel (numpy leaves the interpreter lock while it works). `quantized`
    holds the results by weight name, reused and filled: programs traced from one model in one format
    (a prefill and a decode step) quantize each weight once. Weights whose names match a `keep` pattern (fnmatch,
    e.g. `*lm_head*`) stay float."""
    attr = None if isinstance(fmt, EightBitFormat) else QuantAttr.from_format(fmt)

    def make(op, args, _):
        if attr is None:
            return g.QLinear8Op.make(op.x, args["qweight"], args["scales"])
        return g.QLinearOp.make(op.x, args["qweight"], args["scales"], args.get("zeros"), format=attr)

    return _replace_linears(module, names, weights, lambda weight, _: _quantized(fmt, attr, weight), make, quantized, keep)


def sparsify_linears(module: ModuleOp, names: list[str], weights: dict[str, np.ndarray], sparsity: float, per: str = "row",
                     fmt: SparseFormat = SparseFormat(), quantize: QuantFormat | None = None, sparse: dict | None = None, keep=()):
    """Every graph.linear whose weight is a weight argument of @main, used by linears only, becomes
    graph.sparse_linear on that weight pruned by magnitude (ir.sparse.prune: `sparsity` of each row, or of the whole
    tensor) and stored in Tiled-CSL with `fmt`'s tiles; with `quantize` (a format without zero points), the kept values
    quantized to it. The weight argument is replaced by `<weight>.values`, `.positions`, `.offsets` (and `.scales`);
    a bias becomes a graph.add after it. Returns (names, weights, kept) as quantize_linears does; `sparse` memoizes
    the results by weight name as its `quantized` does, and `keep` is its `keep`."""
    try:
        prune(np.zeros((1, 1)), sparsity, per)  # a bad sparsity or mode fails once, before any weight
    except FormatError as e:
        raise RungError(f"sparsify: {e}") from None
    if isinstance(quantize, EightBitFormat):
        raise RungError(f"sparsify: the values of a sparse weight are quantized alone, not its activations: not {quantize.element} "
                        "with 8-bit activations")
    if quantize is not None and quantize.zero != "none":
        raise RungError(f"sparsify: quantized sparse values take no zero point (a pruned zero must stay zero), got {quantize.element} "
                        f"with zero mode {quantize.zero}")
    quant = quantize and QuantAttr.from_format(quantize)

    def make(op, args, parts):
        fullest = max(1, int(np.diff(parts["offsets"][1]).max(initial=0)))  # the bound a sparse kernel's slots are made for (0: unstated)
        return g.SparseLinearOp.make(op.x, args["values"], args["positions"], args["offsets"], args.get("scales"),
                                     sparse=SparseAttr.from_format(fmt, fullest), n=op.weight.type.get_shape()[0], format=quant)

    return _replace_linears(module, names, weights, lambda weight, element: _sparse(weight, element, sparsity, per, fmt, quant), make,
                            sparse, keep)


def _replace_linears(module: ModuleOp, names: list[str], weights: dict, parts_of, make, done: dict | None = None, keep=()):
    """The driver of quantize_linears and sparsify_linears: each linear-only weight argument's parts (`parts_of(weight,
    its element type)`: {part: (element type, array)}, or a FormatError that keeps it float), computed in parallel
    and memoized in `done` by name, become new arguments `<weight>.<part>`, and each linear on it
    `make(linear, {part: argument}, the parts)`. Weights whose names match a `keep` pattern (fnmatch) stay float."""
    fn = find_function(module, "main")
    block = fn.body.block
    weights = dict(weights)
    kept = []
    linear_weights = []
    for arg, name in [(a, n) for a, n in zip(block.args, names) if n in weights]:
        users = [use.operation for use in arg.uses]
        others = [op for op in users if not (isinstance(op, g.LinearOp) and op.weight is arg and op.x is not arg)]
        if users and not others and any(fnmatch(name, pattern) for pattern in keep):
            kept.append(f"{name}: kept as asked ({', '.join(p for p in keep if fnmatch(name, p))})")
        elif users and not others:
            linear_weights.append((arg, name, users))
        elif len(others) < len(users):
            kept.append(f"{name}: also used by {', '.join(sorted({op.name for op in others}))}")
    done = {} if done is None else done
    todo = [(name, arg.type.element_type) for arg, name, _ in linear_weights if name not in done]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        parts = pool.map(lambda item: parts_of(weights[item[0]], item[1]), todo)
        done.update(zip([name for name, _ in todo], progress_bar(parts, len(todo), "weights")))
    for arg, name, users in linear_weights:
        if isinstance(done[name], FormatError):
            kept.append(f"{name}: {done[name]}")
            continue
        index = list(block.args).index(arg)
        new = done[name]
        args = {part: _insert_weight(block, weights, index + 1 + i, f"{name}.{part}", TensorType(element, value.shape), value)
                for i, (part, (element, value)) in enumerate(new.items())}
        for op in users:
            replacement = make(op, args, new)
            block.insert_op_before(replacement, op)
            out = replacement
            if op.bias is not None:
                out = g.AddOp.make(replacement, op.bias)
                block.insert_op_before(out, op)
            op.results[0].replace_all_uses_with(out.results[0])
            op.detach()
            op.erase()
        block.erase_arg(arg)
        del weights[name]
        at = names.index(name)
        names = names[:at] + [f"{name}.{part}" for part in new] + names[at + 1:]
    fn.function_type = FunctionType.from_lists([a.type for a in block.args], list(fn.function_type.outputs))
    return names, weights, kept


def _sparse(weight: np.ndarray, element, sparsity: float, per: str, fmt: SparseFormat, quant: QuantAttr | None):
    """{part: (element type, array)} of `weight` (of `element`) pruned and in Tiled-CSL, its values quantized to
    `quant` if given, or the FormatError that says why it cannot be."""
    try:
        pruned = prune(weight, sparsity, per)
        if quant is not None:
            pruned, scales, _ = quant.format.quantize(pruned)
        csl = encode(pruned, fmt)
    except FormatError as e:
        return e
    value_type = quant.element if quant is not None else element
    parts = {"values": (value_type, csl.values), "positions": (IntegerType(16, Signedness.UNSIGNED), csl.positions),
             "offsets": (i32, csl.offsets)}
    if quant is not None:
        parts["scales"] = (quant.scale, scales)
    return {part: (t, np.asarray(value).astype(storage_dtype(t))) for part, (t, value) in parts.items()}


def _quantized(fmt: QuantFormat | EightBitFormat, attr: QuantAttr | None, weight: np.ndarray):
    """{part: (element type, array in its storage)} for the parts of `weight` quantized to `fmt` (qweight, scales and
    maybe zeros), or the FormatError that says why it cannot be."""
    if isinstance(fmt, EightBitFormat) and np.shape(weight)[-1] % 16:
        return FormatError(f"8-bit activations are read in 16-byte rows: K must be a multiple of 16, got {np.shape(weight)[-1]}")
    try:
        q, s, z = (fmt.weight if attr is None else fmt).quantize(weight)
    except FormatError as e:
        return e
    if attr is None:  # one f32 scale per output channel
        element = EIGHT_BIT_TYPES[fmt.element]
        return {"qweight": (element, q.astype(storage_dtype(element))), "scales": (f32, s[:, 0].copy())}
    parts = {"qweight": (attr.element, q), "scales": (attr.scale, s)}
    if z is not None:
        parts["zeros"] = (attr.element if fmt.zero == "quantized" else attr.scale, z)
    return {part: (element, np.asarray(value).astype(storage_dtype(element))) for part, (element, value) in parts.items()}


def _insert_weight(block, weights: dict, index: int, name: str, type_, value):
    """A new weight argument of @main at `index`, named `name`, holding `value` in type_'s storage."""
    arg = block.insert_arg(type_, index)
    arg.name_hint = ssa_name(name)
    weights[name] = np.asarray(value).astype(storage_dtype(type_.element_type), copy=False)
    return arg


def fold_batch_norms(module: ModuleOp, names: list[str], weights: dict[str, np.ndarray]):
    """Every graph.batch_norm of a graph.conv2d's result (its only use) whose parameters, and the convolution's
    weight and bias, are weight arguments of @main folds into the convolution: w * s and (b - mean) * s + beta
    with s = gamma / sqrt(var + eps), computed once in f64 and stored in the weight's type as new arguments
    `<conv weight>.folded` and `.folded_bias`. Weight arguments nothing reads are dropped. Returns (names, weights)."""
    fn = find_function(module, "main")
    block = fn.body.block
    weights = dict(weights)
    name_of = {a: n for a, n in zip(block.args, names)}
    for bn in [op for op in block.ops if isinstance(op, g.BatchNormOp)]:
        conv = bn.x.owner
        if not isinstance(conv, g.Conv2dOp) or len(list(conv.result.uses)) != 1:
            continue
        params = [conv.weight, conv.bias, bn.mean, bn.var, bn.weight, bn.bias]
        if any(v is not None and name_of.get(v) not in weights for v in params):
            continue
        w, b, mean, var, gamma, beta = (np.asarray(weights[name_of[v]], np.float64) if v is not None else None for v in params)
        scale = gamma / np.sqrt(var + bn.attr("eps"))
        bias = ((b if b is not None else 0.0) - mean) * scale + beta
        index = list(block.args).index(conv.weight)
        name = name_of[conv.weight]
        new_w = _insert_weight(block, weights, index, f"{name}.folded", conv.weight.type, w * scale.reshape(-1, 1, 1, 1))
        new_b = _insert_weight(block, weights, index + 1, f"{name}.folded_bias", bn.bias.type, bias)
        name_of.update({new_w: f"{name}.folded", new_b: f"{name}.folded_bias"})
        folded = g.Conv2dOp.make(conv.x, new_w, new_b, result_type=bn.result.type,
                                 **{a: conv.attr(a) for a in ("stride", "padding", "dilation", "groups")})
        block.insert_op_before(folded, bn)
        bn.result.replace_all_uses_with(folded.result)
        for op in (bn, conv):
            op.detach()
            op.erase()
    for arg in [a for a in block.args if name_of[a] in weights and not list(a.uses)]:
        weights.pop(name_of[arg])
        block.erase_arg(arg)
    names = [name_of[a] for a in block.args]
    fn.function_type = FunctionType.from_lists([a.type for a in block.args], list(fn.function_type.outputs))
    return names, weights


def transform_weights(module: ModuleOp, names: list[str], weights: dict, quantize: str | None, group: int | None,
                      sparsity: float | None, per: str = "row", progress=lambda msg: None, keep=()):
    """torch2ir's --quantize FORMAT [--group G] and --sparsify S [--sparsify-per row|tensor]: quantize_linears, or
    sparsify_linears (its kept values quantized when both are given), saying what each did. Returns (names, weights,
    fmt): fmt the weight format named, or None. Weights matching a `keep` pattern stay float (--keep)."""
    fmt = named_format(quantize, "--quantize", group) if quantize else None
    before = sum(isinstance(op, g.LinearOp) for op in module.walk())
    if sparsity is not None:
        names, weights, kept = sparsify_linears(module, names, weights, sparsity, per, quantize=fmt, keep=keep)
        done = sum(isinstance(op, g.SparseLinearOp) for op in module.walk())
        progress(f"pruned {done} of {before} linears to {sparsity:.0%} sparsity per {per}, stored in Tiled-CSL"
                 + (f" with {fmt.element} values" if fmt else ""))
    elif fmt is not None:
        names, weights, kept = quantize_linears(module, names, weights, fmt, keep=keep)
        done = sum(isinstance(op, (g.QLinearOp, g.QLinear8Op)) for op in module.walk())
        if isinstance(fmt, EightBitFormat):
            progress(f"quantized {done} of {before} linears to {fmt.element} weights per channel and {fmt.element} activations per token")
        else:
            progress(f"quantized {done} of {before} linears to {fmt.element}, group {fmt.group or 'channel'}, scale {fmt.scale}"
                     + (f", zero {fmt.zero}" if fmt.zero != "none" else ""))
    else:
        return names, weights, None
    for reason in kept:
        progress(f"kept in float: {reason}")
    return names, weights, fmt


def dense_weights(module: ModuleOp, names: list[str], weights: dict) -> dict[str, np.ndarray]:
    """The [N, K] weight each transformed linear of @main computes with, by the name of the weight it replaced (what
    --check gives the PyTorch model to compare with)."""
    block = find_function(module, "main").body.block
    name_of = dict(zip(block.args, names))
    dense = {}
    for op in block.ops:
        if isinstance(op, (g.QLinearOp, g.QLinear8Op, g.SparseLinearOp)) and all(v in name_of for v in op.operands[1:]):
            parts = [name_of[v] for v in op.operands[1:]]
            dense[parts[0].rsplit(".", 1)[0]] = op.dense_weight(*(weights[p] for p in parts))
    return dense
