"""raise-rope: rotary position embedding as transformers decompose it, back to one graph.rope.

transformers apply rope as x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x[..., h:], x[..., :h])
(h half the last dimension): seven ops and six kernels. When the chain is exactly that (each inner value
used by the chain alone), it becomes graph.rope(x, cos, sin), one row kernel. The result differs from the
chain's by the rounding of the two products to x's type before the sum: graph.rope rounds once, after.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern, op_type_rewrite_pattern

from dialects import graph as g
from lowering.raise_norms import defined_by


def _half(v: SSAValue, x: SSAValue, first: bool) -> bool:
    """Whether `v`, used once, is x's first (or second) half along its last dimension."""
    cut = defined_by(v, g.SliceOp)
    if cut is None or cut.operands[0] is not x:
        return False
    n = x.type.get_shape()[-1]
    start, end = cut.attr("start"), min(cut.attr("end"), n)
    return cut.attr("dim") % len(x.type.get_shape()) == len(x.type.get_shape()) - 1 and cut.attr("step") == 1 and \
        (start, end) == ((0, n // 2) if first else (n // 2, n))


def match_rope(root: g.AddOp) -> tuple | None:
    """(x, cos, sin, the chain's ops) if `root` is x * cos + cat(-x2, x1) * sin (either order of each), else None."""
    for straight, turned in (root.operands, reversed(root.operands)):
        plain, rotated = defined_by(straight, g.MulOp), defined_by(turned, g.MulOp)
        if plain is None or rotated is None:
            continue
        for cat_value, sin in (rotated.operands, reversed(rotated.operands)):
            cat = defined_by(cat_value, g.CatOp)
            if cat is None or len(cat.operands) != 2 or cat.attr("dim") % len(cat.result.type.get_shape()) != len(cat.result.type.get_shape()) - 1:
                continue
            neg = defined_by(cat.operands[0], g.NegOp)
            for x, cos in (plain.operands, reversed(plain.operands)):
                if neg and x.type == root.result.type and _half(neg.operands[0], x, False) and _half(cat.operands[1], x, True):
                    return x, cos, sin, [plain, rotated, cat, neg, neg.operands[0].owner, cat.operands[1].owner]
    return None


class RaiseRope(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.AddOp, rewriter: PatternRewriter):
        found = match_rope(op)
        if found is None:
            return
        x, cos, sin, chain = found
        rewriter.replace_matched_op(g.RopeOp.make(x, cos, sin, result_type=op.result.type))
        for inner in chain:
            rewriter.erase_op(inner)


@dataclass(frozen=True)
class RaiseRopePass(ModulePass):
    """Rewrite rotary embedding as transformers decompose it (mul, slice, slice, neg, cat, mul, add) into graph.rope."""

    name = "raise-rope"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(RaiseRope(), apply_recursively=False).rewrite_module(op)
