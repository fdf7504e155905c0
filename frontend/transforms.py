"""Transforms over a traced program that users compose, applied before its weights go anywhere
(Thunder's idea): they rewrite @main and its weights together, so nothing float is
materialized that the program no longer reads.

    module, weights, names = torch_to_ir(model, args)
    names, weights, kept = quantize_linears(module, names, weights, QuantFormat("int4", 128))
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import FunctionType, ModuleOp, TensorType

from dialects import graph as g
from dialects.lp import QuantAttr
from ir.dtypes import storage_dtype
from ir.interpreter import find_function
from ir.numerics import FormatError, QuantFormat
from ir.syntax import ssa_name


def quantize_linears(module: ModuleOp, names: list[str], weights: dict[str, np.ndarray], fmt: QuantFormat):
    """Every graph.linear whose weight is a weight argument of @main, used by linears only,
    becomes graph.qlinear on that weight quantized to `fmt` (round to nearest); a bias becomes a
    graph.add after it. The weight argument is replaced by its values, scales (and zeros),
    named `<weight>.qweight`, `.scales`, `.zeros`. Returns (names, weights, kept): the updated
    argument names and weights, and the weights kept in float, each with the reason."""
    fn = find_function(module, "main")
    block = fn.body.block
    attr = QuantAttr.from_format(fmt)
    weights = dict(weights)
    kept = []
    for arg, name in [(a, n) for a, n in zip(block.args, names) if n in weights]:
        users = [use.operation for use in arg.uses]
        if not users or not all(isinstance(op, g.LinearOp) and op.weight is arg and op.x is not arg for op in users):
            if any(isinstance(op, g.LinearOp) for op in users):
                kept.append(f"{name}: also used by {', '.join(sorted({op.name for op in users if not isinstance(op, g.LinearOp)}))}")
            continue
        try:
            q, s, z = fmt.quantize(weights[name])
        except FormatError as e:
            kept.append(f"{name}: {e}")
            continue
        n, k = q.shape
        groups = s.shape[1]
        zero_type = attr.element if fmt.zero == "quantized" else attr.scale
        index = list(block.args).index(arg)
        new = {"qweight": (TensorType(attr.element, [n, k]), q), "scales": (TensorType(attr.scale, [n, groups]), s)}
        if z is not None:
            new["zeros"] = (TensorType(zero_type, [n, groups]), z)
        args = {}
        for i, (part, (t, value)) in enumerate(new.items()):
            args[part] = block.insert_arg(t, index + 1 + i)
            args[part].name_hint = ssa_name(f"{name}.{part}")
            weights[f"{name}.{part}"] = np.asarray(value).astype(storage_dtype(t.element_type))
        for op in users:
            ql = g.QLinearOp.make(op.x, args["qweight"], args["scales"], args.get("zeros"), format=attr)
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
