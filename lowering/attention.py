"""graph.sdpa -> a tile.launch of an attention program (dialects.tile.attention), FlashAttention's schedule.

An f16/bf16 sdpa without a mask (raise-attention turns the causal ones into the `causal` flag, those over a
KV cache into `positions`, which the kernel reads), with
head dim D a multiple of 16 up to 128 and v's as k's, and k and v of q's heads or grouped-query
(fewer heads, dividing q's): q, k and v flattened to [heads, rows, D], the result reshaped back.
Without a causal mask the query heads that share a kv head are one head of their rows together
(a reshape), so K and V are read once per kv head; a launch that would not fill the GPU splits the
keys, and tile.merge_splits combines the splits' partial results (`attention_config`). A transpose of the heads
after it ([B, H, S, D] -> [B, S, H, D], as transformers write it before the output projection) is folded
into the kernel's stores (tile.attention `o_heads`) where the keys are not split.
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import FloatAttr, IntegerAttr, StringAttr, TensorType, UnitAttr, f32, i64
from xdsl.ir import Block, Region
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from dialects import graph as g
from dialects import tile as t
from dialects.tile.attention import HEAD_DIMS, AttentionConfig, AttentionOp, AttentionSchedule, MergeSplitsOp
from ir.targets import SMS
from lowering.row_programs import ROW_DTYPES, add_kernel_once, float_tag, reshaped


def attention_config(heads: int, rows: int, keys: int, head_dim: int, sms: int = SMS) -> AttentionConfig:
    """64 query rows a block (4 warps); fewer for a few rows (decoding), where more would idle. When the
    blocks do not fill the GPU twice over, the keys split among more (at least two key tiles each)."""
    bm, bn = 16 if rows <= 16 else 32 if rows <= 32 else 64, 64
    blocks = -(-rows // bm) * heads
    splits = 1 if blocks >= sms else max(1, min(64, -(-keys // bn) // 2, -(-2 * sms // blocks)))
    return AttentionConfig(head_dim, block_m=bm, block_n=bn, splits=splits)


def attention_kernel_name(dtype: str, cfg: AttentionConfig, causal: bool, scale: float, group: int, o_heads: int = 0,
                          positions: str = "") -> str:
    """The kernel's name says all it bakes in: the schedule, causality or the positions' type, the scale (unless
    1/sqrt(D)), the group and o's layout ([B, S, H, D] for o_heads H)."""
    name = f"rung_attention_{dtype}_d{cfg.head_dim}_m{cfg.block_m}_n{cfg.block_n}" + ("_causal" if causal else "")
    name += f"_pos{positions}" if positions else ""
    name += f"_z{cfg.splits}" if cfg.splits > 1 else ""
    if not math.isclose(scale, 1 / math.sqrt(cfg.head_dim), rel_tol=1e-6):
        name += "_" + float_tag("s", scale)
    return name + (f"_g{group}" if group > 1 else "") + (f"_o{o_heads}" if o_heads else "")


def why_no_attention_kernel(op: g.SdpaOp) -> str | None:
    """Why the attention kernel does not take `op` (None: it does)."""
    q, k, v = (x.type.get_shape() for x in (op.q, op.k, op.v))
    if op.mask is not None and not op.attr("positions"):
        return "only causal attention, attention over a KV cache's positions or none has a kernel yet (a mask other than those stays)"
    if op.attr("positions") and (op.attr("causal") or str(op.mask.type.element_type) not in ("i32", "i64")):
        return f"the attention kernel reads positions of i32 or i64 without a causal flag, not {op.mask.type}"
    if op.attr("scale") < 0:
        return f"the attention kernel takes a positive scale, not {op.attr('scale')}"
    if v[-1] != q[-1] or q[-1] not in HEAD_DIMS:
        return f"the attention kernel takes head dims (q's, k's and v's alike) that are a multiple of 16 up to 128, not {q[-1]} and {v[-1]}"
    if len(q) < 3 or len(k) != len(q) or k[:-3] != q[:-3] or q[-3] % k[-3]:
        return "the attention kernel takes q, k and v of the same leading dimensions, k's and v's heads dividing q's"
    return None


class SdpaToTile(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.SdpaOp, rewriter: PatternRewriter):
        dtype = str(op.result.type.element_type)
        if dtype not in ROW_DTYPES or why_no_attention_kernel(op) is not None:
            return
        q, k = op.q.type.get_shape(), op.k.type.get_shape()
        heads, kv_heads, (rows, dim), keys = math.prod(q[:-2]), math.prod(k[:-2]), q[-2:], k[-2]
        scale, causal, group = op.attr("scale") or 1 / math.sqrt(dim), bool(op.attr("causal")), heads // kv_heads
        if not causal and group > 1:  # the query heads of a kv head are its rows (q [heads, L, D] is [kv heads, group L, D]): K and V read once
            heads, rows, group = kv_heads, group * rows, 1
        cfg = attention_config(heads, rows, keys, dim)
        # the heads' transpose after attention ([B, H, S, D] -> [B, S, H, D]), its only use, written by the kernel's stores
        transpose = heads_transpose(op) if cfg.splits == 1 and heads == math.prod(q[:-2]) else None
        o_heads = q[-3] if transpose else 0
        positions = op.mask.type.element_type if op.attr("positions") else None
        name = attention_kernel_name(dtype, cfg, causal, scale, group, o_heads, str(positions or "").removeprefix("i"))
        add_kernel_once(op, attention_program(name, cfg, op.result.type.element_type, causal, scale, group, o_heads, positions))
        flat = [reshaped(rewriter, op.q, [heads, rows, dim])] + [reshaped(rewriter, x, [kv_heads, keys, dim]) for x in (op.k, op.v)]
        flat += [op.mask] if positions else []
        element = op.result.type.element_type
        if transpose:
            rewriter.insert(launch := t.LaunchOp.get(name, flat, TensorType(element, [heads // o_heads, rows, o_heads * dim])))
            rewriter.replace(transpose, [], [reshaped(rewriter, launch.result, list(transpose.result.type.get_shape()))])
            rewriter.erase(op)
            return
        if cfg.splits == 1:
            rewriter.insert(launch := t.LaunchOp.get(name, flat, TensorType(element, [heads, rows, dim])))
            result = launch.result
        else:  # partial results of each split, merged
            rewriter.insert(launch := t.LaunchOp.get(name, flat, TensorType(f32, [cfg.splits * heads, rows, dim + 2])))
            rewriter.insert(merge := MergeSplitsOp.build(operands=[launch.result], result_types=[TensorType(element, [heads, rows, dim])]))
            result = merge.result
        rewriter.replace(op, [], [reshaped(rewriter, result, list(op.result.type.get_shape()))])


def heads_transpose(op: g.SdpaOp) -> g.PermuteOp | None:
    """The permute [B, H, S, D] -> [B, S, H, D] that is the only use of a rank-4 sdpa's result, if it is one."""
    users = [use.operation for use in op.result.uses]
    permute = users[0] if len(users) == 1 and isinstance(users[0], g.PermuteOp) else None
    rank = len(op.result.type.get_shape())
    return permute if permute is not None and rank == 4 and [d % rank for d in permute.attr("dims")] == [0, 2, 1, 3] else None


def attention_program(name: str, cfg: AttentionConfig, element, causal: bool, scale: float, group: int, o_heads: int = 0,
                      positions=None) -> t.KernelOp:
    """The block program: q, k, v, [positions (of element type `positions`),] o."""
    block = Block(arg_types=[t.generic_tensor(element, 3)] * 3 + ([t.generic_tensor(positions, 1)] if positions else [])
                  + [t.generic_tensor(element, 3)])
    props = {"scale": FloatAttr(scale, f32), "group": IntegerAttr(group, i64)} | ({"causal": UnitAttr()} if causal else {})
    if o_heads:
        props["o_heads"] = IntegerAttr(o_heads, i64)
    *inputs, o = block.args
    block.add_op(AttentionOp.build(operands=[*inputs[:3], inputs[3:], o], properties=props))
    block.add_op(t.YieldOp.build(operands=[[]]))
    return t.KernelOp.create(properties={"sym_name": StringAttr(name), "schedule": AttentionSchedule(cfg)}, regions=[Region(block)])
