"""raise-attention: graph.sdpa as transformers call it, back to what the attention kernel does natively.

- A mask computed from constants alone (arange, compare, ... : what transformers build for a static
  shape; fold-constants folds the small ones) that says only "key j <= query i" becomes the op's
  `causal` flag; an all-true one goes. The kernel then skips the
  masked tiles instead of reading a mask.
- A mask arange(S) <= positions[:, None] (broadcast; a step over a KV cache, frontend.causal_lm)
  becomes graph.sdpa's `positions`: the kernel reads the positions and skips the keys past them.
- Grouped-query attention written as transformers' repeat_kv, k and v each
  reshape([B, H, S, D]) of broadcast([B, Hkv, G, S, D]) of reshape([B, Hkv, 1, S, D]) of kv [B, Hkv, S, D],
  reads kv itself: graph.sdpa with fewer kv heads than query heads (each query head reads kv head
  h / G), so the repeated copies are never made.
- Attention an exporter wrote as matmul(softmax(matmul(q * a, k^T * b)), v) (ONNX's MatMul and Softmax)
  becomes graph.sdpa with scale a * b.
The result is the same tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import FloatAttr, ModuleOp, UnitAttr
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern, op_type_rewrite_pattern

from dialects import graph as g
from lowering.fold_constants import static_value


MASK_ELEMENTS = 1 << 26  # the largest mask (and value it is computed from) evaluated to see what it says


def _mask_kind(mask: SSAValue, rows: int, cols: int) -> str:
    """'causal', 'none' (all true) or 'other' for a boolean mask over [rows, cols] scores."""
    value = static_value(mask, MASK_ELEMENTS) if str(mask.type.element_type) == "i1" else None
    if value is None:
        return "other"
    value = np.broadcast_to(value.astype(bool), (*mask.type.get_shape()[:-2], rows, cols))
    if value.all():
        return "none"
    return "causal" if (value == np.tril(np.ones((rows, cols), bool))).all() else "other"


def positions_of(mask: SSAValue, rows: int, cols: int) -> SSAValue | None:
    """positions [rows] where `mask` is compare(arange(cols) <= positions[:, None]) (or >= swapped), through reshapes and
    broadcasts that keep its [rows, cols] rows (unit dims in front, copies over leading dims), else None."""
    v = mask
    while isinstance(v.owner, (g.ReshapeOp, g.BroadcastOp)) and tuple(v.type.get_shape()[-2:]) == (rows, cols):
        v = v.owner.operands[0]
    compare = v.owner
    if not isinstance(compare, g.CompareOp) or tuple(v.type.get_shape()[-2:]) != (rows, cols):
        return None
    keys, query = compare.operands if compare.attr("predicate") == "le" else compare.operands[::-1] \
        if compare.attr("predicate") == "ge" else (None, None)
    if keys is None or set(keys.type.get_shape()[:-1]) - {1} or keys.type.get_shape()[-1] != cols:
        return None
    if set(query.type.get_shape()[:-2]) - {1} or tuple(query.type.get_shape()[-2:]) != (rows, 1) or not isinstance(query.owner, g.ReshapeOp):
        return None
    value = static_value(keys, MASK_ELEMENTS)
    positions = query.owner.operands[0]
    if value is None or not np.array_equal(np.ravel(value), np.arange(cols)) or positions.type.get_shape() != (rows,):
        return None
    return positions if "i" in str(positions.type.element_type) else None


def repeated_kv(v: SSAValue, heads: int) -> SSAValue | None:
    """kv [B, Hkv, S, D] where `v` is repeat_kv(kv) with `heads` heads (module docstring), else None."""
    outer = v.owner
    if not isinstance(outer, g.ReshapeOp) or not isinstance(outer.operands[0].owner, g.BroadcastOp):
        return None
    spread = outer.operands[0].owner
    inner = spread.operands[0].owner
    if not isinstance(inner, g.ReshapeOp):
        return None
    kv = inner.operands[0]
    shape, wide, narrow = kv.type.get_shape(), spread.results[0].type.get_shape(), spread.operands[0].type.get_shape()
    if len(shape) != 4 or list(narrow) != [shape[0], shape[1], 1, *shape[2:]]:
        return None
    if list(wide) != [shape[0], shape[1], heads // shape[1], *shape[2:]] or shape[1] * wide[2] != heads:
        return None
    return kv if list(v.type.get_shape()) == [shape[0], heads, *shape[2:]] else None


class RaiseAttention(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.SdpaOp, rewriter: PatternRewriter):
        q, k, v = op.q.type.get_shape(), op.k.type.get_shape(), op.v.type.get_shape()
        operands, props = [op.q, op.k, op.v], dict(op.properties)
        if op.mask is not None and not op.attr("positions") and (kind := _mask_kind(op.mask, q[-2], k[-2])) != "other":
            operands.append(None)
            if kind == "causal":
                props["causal"] = UnitAttr()
        elif op.mask is not None and not op.attr("positions") and (positions := positions_of(op.mask, q[-2], k[-2])) is not None:
            operands.append(positions)
            props["positions"] = UnitAttr()
        elif op.mask is not None:
            operands.append(op.mask)
        if len(q) == 4 and op.group() == 1 and k[:-1] == v[:-1] and q[1] == k[1]:
            kv = repeated_kv(op.k, q[1]), repeated_kv(op.v, q[1])
            if None not in kv and kv[0].type.get_shape()[1] == kv[1].type.get_shape()[1]:
                operands[1:3] = kv
        if operands[1:] == [op.k, op.v, op.mask] and props == dict(op.properties):
            return
        mask = [m for m in operands[3:] if m is not None]
        rewriter.replace_op(op, g.SdpaOp.create(operands=[*operands[:3], *mask], result_types=[op.result.type], properties=props))


def _scaled(v: SSAValue) -> tuple[SSAValue, float]:
    """(x, c) where v is graph.mul of x by a one-element constant c (the scale an exporter splits over q and k^T), else (v, 1)."""
    op = v.owner
    if isinstance(op, g.MulOp) and len(list(v.uses)) == 1:
        for x, c in (op.operands, op.operands[::-1]):
            value = static_value(c, 1)
            if value is not None and value.size == 1 and x.type == v.type:
                return x, float(value.reshape(-1)[0])
    return v, 1.0


class RaiseMatmulAttention(RewritePattern):
    """matmul(softmax(matmul(q * a, k^T * b), dim=-1), v) on [B, H, S, D] tensors, attention as exporters write it
    (ONNX's MatMul and Softmax), becomes graph.sdpa(q, k, v) with scale a * b: the attention kernel instead of two
    batched matmuls. k is k^T's permute with its last two dimensions swapped back (one permute of another composes)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MatmulOp, rewriter: PatternRewriter):
        probs, v = op.operands
        softmax = probs.owner
        if not isinstance(softmax, g.SoftmaxOp) or softmax.attr("dim") not in (-1, 3) or len(list(probs.uses)) != 1:
            return
        scores = softmax.operands[0]
        if not isinstance(scores.owner, g.MatmulOp) or len(list(scores.uses)) != 1 or len(scores.type.get_shape()) != 4:
            return
        (q, a), (kt, b) = (_scaled(x) for x in scores.owner.operands)
        shapes = [x.type.get_shape() for x in (q, kt, v)]
        if any(len(x) != 4 for x in shapes) or not shapes[0][:2] == shapes[1][:2] == shapes[2][:2]:
            return  # (batch and heads alike: no broadcasting matmul)
        swap = [0, 1, 3, 2]
        if isinstance(kt.owner, g.PermuteOp):  # k^T = permute(y, p): k = permute(y, p then swap)
            y, dims = kt.owner.operands[0], [list(kt.owner.attr("dims"))[i] % 4 for i in swap]
        else:
            y, dims = kt, swap
        k = g.PermuteOp.make(y, dims=tuple(dims))
        sdpa = g.SdpaOp.create(operands=[q, k.results[0], v], result_types=[op.result.type], properties={"scale": FloatAttr(a * b, 64)})
        rewriter.replace_op(op, [k, sdpa])


@dataclass(frozen=True)
class RaiseAttentionPass(ModulePass):
    """Attention written as matmul, softmax, matmul becomes graph.sdpa; constant causal (or all-true) masks become
    graph.sdpa's `causal` flag (or go), position masks its `positions`; repeat_kv's copies of k and v become
    grouped-query attention on the kv heads themselves; ops left without a use are erased."""

    name = "raise-attention"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(RaiseMatmulAttention(), apply_recursively=False).rewrite_module(op)
        PatternRewriteWalker(RaiseAttention(), apply_recursively=False).rewrite_module(op)
        erase_unused(op)


def erase_unused(module: ModuleOp) -> None:
    """Erase graph ops (last to first) whose results have no use: what a rewrite left behind."""
    for fn in (f for f in module.ops if isinstance(f, func.FuncOp) and f.body.blocks):
        for dead in reversed(list(fn.body.block.ops)):
            if dead.name.startswith("graph.") and dead.results and not any(r.uses for r in dead.results):
                fn.body.block.erase_op(dead)
