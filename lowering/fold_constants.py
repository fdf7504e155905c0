"""fold-constants: a graph op whose operands are all constants becomes the constant it computes.

Shapes are static, so what a model computes from no input at all (the position ids and causal masks
that transformers build from arange, full, compare, cumsum, logical_and, index, ...) is known at compile
time. Each such op is run once by its own interpreter rule (the same numerics as rung-run) and replaced
by a graph.constant; what no longer has a use is erased. A result of more than `max_elements` elements
stays an op (an IR of megabytes of constants helps nobody).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects import graph as g
from ir.dtypes import compute_view, is_float, to_storage


def constant_value(op: g.ConstantOp) -> np.ndarray:
    """A graph.constant's value in its storage type, splats broadcast to the result's shape."""
    t = op.results[0].type
    return np.broadcast_to(to_storage(np.asarray(op.execute()), t), t.get_shape())


def constant_op(value: np.ndarray, t: TensorType) -> g.ConstantOp:
    """A graph.constant of type `t` holding `value`."""
    flat = np.asarray(to_storage(value, t)).reshape(-1)
    values = flat.astype(np.float64 if is_float(t.element_type) else np.int64).tolist()
    attr = DenseIntOrFPElementsAttr.from_list(t, values)
    return g.ConstantOp.create(result_types=[t], properties={"value": attr})


def static_value(v: SSAValue, limit: int) -> np.ndarray | None:
    """The value of `v` if it is computed from graph.constants alone, each value at most `limit` elements
    (computed by the ops' interpreter rules, the IR left as it is); else None."""
    op = v.owner
    if isinstance(op, g.ConstantOp):
        return constant_value(op)
    if not isinstance(op, Operation) or not foldable(op) or int(np.prod(v.type.get_shape(), dtype=np.int64)) > limit:
        return None
    values = [static_value(x, limit) for x in op.operands]
    if any(x is None for x in values):
        return None
    with np.errstate(all="ignore"):
        return to_storage(np.asarray(op.execute(*(compute_view(x) for x in values))), v.type)


@dataclass(frozen=True)
class FoldConstants(ModulePass):
    """Replace each graph op whose operands are all graph.constants by the constant it computes."""

    name = "fold-constants"
    max_elements: int = 1 << 16

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for fn in (f for f in op.ops if isinstance(f, func.FuncOp) and f.body.blocks):
            for inner in list(fn.body.block.ops):
                if not foldable(inner) or any(not isinstance(v.owner, g.ConstantOp) for v in inner.operands):
                    continue
                t = inner.results[0].type
                if int(np.prod(t.get_shape(), dtype=np.int64)) > self.max_elements:
                    continue
                with np.errstate(all="ignore"):
                    value = inner.execute(*(compute_view(constant_value(v.owner)) for v in inner.operands))
                folded = constant_op(np.asarray(value), t)
                Rewriter.replace_op(inner, folded)
            for dead in reversed([o for o in fn.body.block.ops if isinstance(o, g.ConstantOp) and not o.results[0].uses]):
                Rewriter.erase_op(dead)


def foldable(op) -> bool:
    """A graph op with one tensor result that its interpreter rule computes (constants themselves aside)."""
    return (op.name.startswith("graph.") and not isinstance(op, g.ConstantOp) and len(op.results) == 1
            and isinstance(op.results[0].type, TensorType) and hasattr(op, "execute") and not op.regions)
