"""decompose-graph: rewrite composite graph ops into primitive ones.

linear -> permute + matmul (+ add); silu, sigmoid, gelu, softmax, rms_norm and layer_norm
-> elementwise ops and reductions. The result computes the same function (in exact
arithmetic); it is what backends without a fused kernel for an op run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, TensorType
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from dialects import graph as g


def _scalar(rewriter: PatternRewriter, value: float, elem) -> g.ConstantOp:
    t = TensorType(elem, [])
    op = g.ConstantOp.make(result_type=t, value=DenseIntOrFPElementsAttr.from_list(t, [value]))
    rewriter.insert(op)
    return op


def _emit(rewriter: PatternRewriter, cls, *operands, **attrs):
    op = cls.make(*operands, **attrs)
    rewriter.insert(op)
    return op.results[0]


class DecomposeLinear(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.LinearOp, rewriter: PatternRewriter):
        wt = _emit(rewriter, g.PermuteOp, op.weight, dims=(1, 0))
        y = _emit(rewriter, g.MatmulOp, op.x, wt) if len(op.x.type.get_shape()) >= 2 else None
        if y is None:
            x2 = _emit(rewriter, g.ReshapeOp, op.x, result_type=TensorType(op.x.type.element_type, [1, op.x.type.get_shape()[0]]))
            y = _emit(rewriter, g.ReshapeOp, _emit(rewriter, g.MatmulOp, x2, wt), result_type=op.result.type)
        if op.bias is not None:
            y = _emit(rewriter, g.AddOp, y, op.bias)
        rewriter.replace(op, [], [y])


class DecomposeActivations(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.SiluOp | g.SigmoidOp | g.GeluOp, rewriter: PatternRewriter):
        x, elem = op.x, op.x.type.element_type
        one = _scalar(rewriter, 1.0, elem).results[0]
        if isinstance(op, g.GeluOp):
            half = _scalar(rewriter, 0.5, elem).results[0]
            if op.attr("approximate") == "tanh":
                cube = _emit(rewriter, g.MulOp, _emit(rewriter, g.MulOp, x, x), x)
                inner = _emit(rewriter, g.AddOp, x, _emit(rewriter, g.MulOp, cube, _scalar(rewriter, 0.044715, elem).results[0]))
                t = _emit(rewriter, g.TanhOp, _emit(rewriter, g.MulOp, inner, _scalar(rewriter, math.sqrt(2 / math.pi), elem).results[0]))
            else:
                t = _emit(rewriter, g.ErfOp, _emit(rewriter, g.MulOp, x, _scalar(rewriter, 1 / math.sqrt(2), elem).results[0]))
            y = _emit(rewriter, g.MulOp, _emit(rewriter, g.MulOp, x, half), _emit(rewriter, g.AddOp, t, one))
        else:
            sig = _emit(rewriter, g.DivOp, one, _emit(rewriter, g.AddOp, one, _emit(rewriter, g.ExpOp, _emit(rewriter, g.NegOp, x))))
            y = _emit(rewriter, g.MulOp, x, sig) if isinstance(op, g.SiluOp) else sig
        rewriter.replace(op, [], [y])


class DecomposeSoftmax(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.SoftmaxOp, rewriter: PatternRewriter):
        dim = op.attr("dim")
        m = _emit(rewriter, g.ReduceOp, op.x, kind="max", dims=[dim], keepdim=True)
        e = _emit(rewriter, g.ExpOp, _emit(rewriter, g.SubOp, op.x, m))
        s = _emit(rewriter, g.ReduceOp, e, kind="sum", dims=[dim], keepdim=True)
        rewriter.replace(op, [], [_emit(rewriter, g.DivOp, e, s)])


class DecomposeNorms(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.RmsNormOp | g.LayerNormOp, rewriter: PatternRewriter):
        x, elem = op.x, op.x.type.element_type
        eps = _scalar(rewriter, op.attr("eps"), elem).results[0]
        if isinstance(op, g.LayerNormOp):
            x = _emit(rewriter, g.SubOp, x, _emit(rewriter, g.ReduceOp, x, kind="mean", dims=[-1], keepdim=True))
        var = _emit(rewriter, g.ReduceOp, _emit(rewriter, g.MulOp, x, x), kind="mean", dims=[-1], keepdim=True)
        y = _emit(rewriter, g.MulOp, _emit(rewriter, g.MulOp, x, _emit(rewriter, g.RsqrtOp, _emit(rewriter, g.AddOp, var, eps))), op.weight)
        if isinstance(op, g.LayerNormOp):
            y = _emit(rewriter, g.AddOp, y, op.bias)
        rewriter.replace(op, [], [y])


@dataclass(frozen=True)
class DecomposeGraph(ModulePass):
    """Rewrite linear, activations, softmax and norms into primitive graph ops."""

    name = "decompose-graph"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        patterns = [DecomposeLinear(), DecomposeActivations(), DecomposeSoftmax(), DecomposeNorms()]
        PatternRewriteWalker(GreedyRewritePatternApplier(patterns, dce_enabled=False), apply_recursively=False).rewrite_module(op)
