"""conv-to-gemm: graph.conv2d as GEMMs over its windows (im2col), then back to torch's [N, O, OH, OW] by a transpose.

conv2d(x [N, C, H, W], w [O, C/g, KH, KW], b) with g groups becomes, per group, graph.im2col of the group's channels
([N * OH * OW, C/g * KH * KW]) times the group's rows of w viewed as [O, C/g * KH * KW] (graph.linear with the
group's bias); the groups' results side by side (graph.cat) are [N * OH * OW, O], which graph.permute makes
[N, O, OH * OW]. A relu or silu that is the convolution's only use moves onto each linear, where graph-to-tile
fuses it into the GEMM's epilogue (it commutes with the cat and the transpose). The windows are materialized (an
explicit im2col: KH * KW times x's bytes), not gathered by the GEMM's own loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern, op_type_rewrite_pattern

from dialects import graph as g

ACTIVATIONS = (g.ReluOp, g.SiluOp)  # what the GEMM epilogue applies, and commutes with moving elements


class ConvToGemm(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.Conv2dOp, rewriter: PatternRewriter):
        x, w, out = op.x, op.weight, op.result.type
        (n, _, _, _), (o, cg, kh, kw), (_, _, oh, ow) = x.type.get_shape(), w.type.get_shape(), out.get_shape()
        groups, elem = op.attr("groups"), out.element_type
        users = [use.operation for use in op.result.uses]
        activation = users[0] if len(users) == 1 and isinstance(users[0], ACTIVATIONS) else None

        def add(new):
            rewriter.insert(new)
            return new.results[0]

        weight = add(g.ReshapeOp.make(w, result_type=TensorType(w.type.element_type, [o, cg * kh * kw])))
        window = {a: op.attr(a) for a in ("stride", "padding", "dilation")}
        parts, og = [], o // groups
        for group in range(groups):
            rows = add(g.Im2colOp.make(x, kernel=(kh, kw), channels=(group * cg, cg), **window))
            w_g, b_g = weight, op.bias
            if groups > 1:
                w_g = add(g.SliceOp.make(weight, dim=0, start=group * og, end=(group + 1) * og))
                b_g = add(g.SliceOp.make(op.bias, dim=0, start=group * og, end=(group + 1) * og)) if op.bias is not None else None
            y = add(g.LinearOp.make(rows, w_g, b_g))
            parts.append(add(type(activation).make(y)) if activation else y)
        y = add(g.CatOp.make(*parts, dim=1)) if groups > 1 else parts[0]
        y = add(g.ReshapeOp.make(y, result_type=TensorType(elem, [n, oh * ow, o])))
        y = add(g.PermuteOp.make(y, dims=(0, 2, 1)))
        y = add(g.ReshapeOp.make(y, result_type=out))
        if activation:
            rewriter.replace(activation, [], [y])
            rewriter.erase(op)
        else:
            rewriter.replace(op, [], [y])


@dataclass(frozen=True)
class ConvToGemmPass(ModulePass):
    """Rewrite graph.conv2d as graph.im2col and graph.linear per channel group, and a transpose back to [N, O, OH, OW]."""

    name = "conv-to-gemm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(ConvToGemm(), apply_recursively=False).rewrite_module(op)
