"""Transforms over a traced program that users compose, applied before its weights go anywhere
(Thunder's idea): they rewrite @main and its weights together, so nothing float is
materialized that the program no longer reads.

    module, weights, names = torch_to_ir(model, args)          # (torch_to_ir folds batch norms: fold_batch_norms)
    names, weights, kept = quantize_linears(module, names, weights, QuantFormat("int4", 128))
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from xdsl.dialects.builtin import Float8E4M3FNType, FunctionType, ModuleOp, TensorType, f32, i8

from dialects import graph as g
from dialects.lp import QuantAttr
from ir.dtypes import storage_dtype
from ir.interpreter import find_function
from ir.errors import RungError
from ir.numerics import EIGHT_BIT_PRESETS, EightBitFormat, FormatError, QuantFormat, quant_format
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
                     quantized: dict | None = None):
    """Every graph.linear whose weight is a weight argument of @main, used by linears only,
    becomes graph.qlinear on that weight quantized to `fmt` (round to nearest; graph.qlinear8 for W8A8 and FP8,
    which quantize the activations too); a bias becomes a graph.add after it. The weight argument is replaced by its values, scales (and zeros),
    named `<weight>.qweight`, `.scales`, `.zeros`. Returns (names, weights, kept): the updated
    argument names and weights, and the weights kept in float, each with the reason.

    Weights are quantized in parallel (numpy leaves the interpreter lock while it works). `quantized`
    holds the results by weight name, reused and filled: programs traced from one model in one format
    (a prefill and a decode step) quantize each weight once."""
    fn = find_function(module, "main")
    block = fn.body.block
    attr = None if isinstance(fmt, EightBitFormat) else QuantAttr.from_format(fmt)
    weights = dict(weights)
    kept = []
    linear_weights = []
    for arg, name in [(a, n) for a, n in zip(block.args, names) if n in weights]:
        users = [use.operation for use in arg.uses]
        others = [op for op in users if not (isinstance(op, g.LinearOp) and op.weight is arg and op.x is not arg)]
        if users and not others:
            linear_weights.append((arg, name, users))
        elif len(others) < len(users):
            kept.append(f"{name}: also used by {', '.join(sorted({op.name for op in others}))}")
    quantized = {} if quantized is None else quantized
    todo = [name for _, name, _ in linear_weights if name not in quantized]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        quantized.update(zip(todo, pool.map(lambda name: _quantized(fmt, attr, weights[name]), todo)))
    for arg, name, users in linear_weights:
        if isinstance(quantized[name], FormatError):
            kept.append(f"{name}: {quantized[name]}")
            continue
        index = list(block.args).index(arg)
        new = quantized[name]
        args = {part: _insert_weight(block, weights, index + 1 + i, f"{name}.{part}", TensorType(element, value.shape), value)
                for i, (part, (element, value)) in enumerate(new.items())}
        for op in users:
            ql = (g.QLinear8Op.make(op.x, args["qweight"], args["scales"]) if attr is None else
                  g.QLinearOp.make(op.x, args["qweight"], args["scales"], args.get("zeros"), format=attr))
            block.insert_op_before(ql, op)
            out = ql
            if op.bias is not None:
                out = g.AddOp.make(ql, op.bias)
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
        element = i8 if fmt.element == "int8" else Float8E4M3FNType()
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
