"""raise-norms: RMS norm as transformers write it, decomposed, back to one graph.rms_norm.

A transformers model normalizes in f32 and multiplies by the weight in its own type:
    w * cast(cast(x, f32) * rsqrt(mean(cast(x, f32) ** 2, -1, keepdim) + eps), x's type)
torch.export keeps those eight ops. When the chain is exactly that (each inner value used by the chain
alone, the weight [N] over x's last dimension N), it becomes graph.rms_norm(x, w, eps), which has a row
kernel. The result differs from the chain's by the rounding of x * rsqrt(...) to x's type before the
weight multiplies it: graph.rms_norm rounds once, after (at most an ulp of x's type). Gemma's norm
multiplies by (cast(w, f32) + 1) before the cast instead: graph.rms_norm with `offset` 1, the same
rounding as the chain's.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, f32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern

from dialects import graph as g
from lowering.elementwise import splat_value


def defined_by(v: SSAValue, cls, uses: int = 1) -> Operation | None:
    """The op of class `cls` that defines `v`, if `v` has exactly `uses` uses."""
    return v.owner if isinstance(v.owner, cls) and len(list(v.uses)) == uses else None


def _operands(op: Operation, cls) -> tuple[SSAValue, SSAValue] | None:
    """(the operand `cls` defines, the other one) of a binary op, either order."""
    a, b = op.operands
    if isinstance(a.owner, cls):
        return a, b
    if isinstance(b.owner, cls):
        return b, a
    return None


def _normalized(scaled: g.MulOp | None, x32_uses: int) -> tuple | None:
    """(x, eps, ops, constants) if `scaled` is cast(x, f32) * rsqrt(mean(cast(x, f32) ** 2, -1, keepdim) + eps)."""
    pair = scaled and _operands(scaled, g.RsqrtOp)
    if not pair:
        return None
    inv, x32 = pair
    rsqrt = defined_by(inv, g.RsqrtOp)
    shifted = rsqrt and defined_by(rsqrt.operands[0], g.AddOp)
    pair = shifted and _operands(shifted, g.ReduceOp)
    if not pair or splat_value(pair[1]) is None:
        return None
    mean = defined_by(pair[0], g.ReduceOp)
    power = mean and defined_by(mean.operands[0], g.PowOp)
    up = defined_by(x32, g.CastOp, uses=x32_uses)
    if not (power and up and power.operands[0] is x32 and splat_value(power.operands[1]) == 2.0):
        return None
    x = up.operands[0]
    shape = x.type.get_shape()
    if not shape or (mean.attr("kind") != "mean" or [d % len(shape) for d in mean.attr("dims")] != [len(shape) - 1] or not mean.attr("keepdim")
            or x32.type.element_type != f32):
        return None
    return x, splat_value(pair[1]), [up, power, mean, shifted, rsqrt, scaled], [v.owner for v in (power.operands[1], pair[1])]


def match_rms_norm(root: g.MulOp) -> tuple | None:
    """(x, weight, eps, offset, the chain's ops, its constants) if `root` ends transformers' RMS norm
    (w * cast(normalized, x's type)), else None."""
    pair = _operands(root, g.CastOp)
    if pair is None:
        return None
    back, w = pair
    cast_back = defined_by(back, g.CastOp)
    found = cast_back and _normalized(defined_by(cast_back.operands[0], g.MulOp), 2)
    if not found:
        return None
    x, eps, chain, constants = found
    if back.type != x.type or w.type.get_shape() != x.type.get_shape()[-1:] or w.type.element_type != x.type.element_type:
        return None
    return x, w, eps, 0.0, [*chain, cast_back], constants


def match_offset_rms_norm(root: g.CastOp) -> tuple | None:
    """(x, weight, eps, offset, ops, constants) if `root` ends Gemma's RMS norm, cast(normalized * (cast(w, f32) + c),
    x's type): the weight offset by c in f32, else None."""
    product = defined_by(root.operands[0], g.MulOp)
    pair = product and _operands(product, g.AddOp)
    if not pair:
        return None
    shift, scaled = pair
    offset = defined_by(shift, g.AddOp)
    pair = offset and _operands(offset, g.CastOp)
    if not pair or splat_value(pair[1]) is None:
        return None
    w_cast = defined_by(pair[0], g.CastOp)
    found = w_cast and _normalized(defined_by(scaled, g.MulOp), 2)
    if not found:
        return None
    x, eps, chain, constants = found
    w = w_cast.operands[0]
    if root.results[0].type != x.type or w.type.get_shape() != x.type.get_shape()[-1:] or w.type.element_type != x.type.element_type:
        return None
    return x, w, eps, splat_value(pair[1]), [*chain, w_cast, offset, product], [*constants, pair[1].owner]


class RaiseRmsNorm(RewritePattern):
    def match_and_rewrite(self, op, rewriter: PatternRewriter):
        found = match_rms_norm(op) if isinstance(op, g.MulOp) else match_offset_rms_norm(op) if isinstance(op, g.CastOp) else None
        if found is None:
            return
        x, w, eps, offset, chain, constants = found
        rewriter.replace_matched_op(g.RmsNormOp.make(x, w, eps=eps, **({"offset": offset} if offset else {})))
        for inner in reversed(chain):
            rewriter.erase_op(inner)
        for constant in set(constants):  # the exponent, eps and offset, unless something else reads them
            if not constant.results[0].uses:
                rewriter.erase_op(constant)


@dataclass(frozen=True)
class RaiseNorms(ModulePass):
    """Rewrite RMS norm as transformers decompose it (cast, pow, mean, add, rsqrt, mul, cast, mul; or Gemma's, the
    weight plus one multiplied in f32 before the cast) into graph.rms_norm."""

    name = "raise-norms"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(RaiseRmsNorm(), apply_recursively=False).rewrite_module(op)
