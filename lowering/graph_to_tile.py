"""graph-to-tile: schedule graph.linear and 2-D graph.matmul on tensor cores as tile.matmul.

A linear with f16/bf16 operands becomes tile.matmul (x flattened to 2-D
and the result reshaped back), with its bias, and with a following relu or silu (the linear's
only use) fused into the epilogue. Tile sizes follow the shape (`choose_config`) unless the
pass options set them. Other linears are left as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from dialects import graph as g
from dialects.tile import GemmConfig, MatmulOp, copy_elems
from ir.errors import RungError


@lru_cache(maxsize=4096)  # on the launch path: shapes repeat
def choose_config(m: int, n: int, k: int, dtype: str, b_kn: bool = False) -> GemmConfig:
    """Tile sizes from the shape: small M takes 64-row tiles so that more blocks cover the GPU;
    rows that are not 16-byte aligned (K, or N for a [K, N] B, not a multiple of 8) copy in
    narrow pieces and take 64x64 tiles (larger tiles' per-thread copy addresses would spill)."""
    copies = {"copy_elems": copy_elems(k), "b_kn": b_kn, "b_copy_elems": copy_elems(n) if b_kn else 8}
    if min(copies["copy_elems"], copies["b_copy_elems"]) < 8:
        return GemmConfig(dtype, bm=64, bn=64, bk=32, warps_m=2, warps_n=2, stages=3, **copies)
    if m <= 64:
        return GemmConfig(dtype, bm=64, bn=128, bk=32, warps_m=2, warps_n=2, stages=4, **copies)
    return GemmConfig(dtype, bm=128, bn=128, bk=32, warps_m=2, warps_n=2, stages=3, **copies)


def _schedule(m: int, n: int, k: int, dtype: str, override: dict, b_kn: bool = False, **epilogue) -> GemmConfig:
    """choose_config's schedule with the epilogue and the pass options applied; a bad option is a RungError."""
    try:
        return GemmConfig(**{**choose_config(m, n, k, dtype, b_kn).__dict__, **epilogue, **override})
    except ValueError as e:
        raise RungError(f"graph-to-tile: {e}") from None


FUSABLE = {g.ReluOp: "relu", g.SiluOp: "silu"}


def tensor_core_linear(op: g.LinearOp) -> bool:
    x = op.x.type
    return str(x.element_type) in ("f16", "bf16") and len(x.get_shape()) >= 1


@dataclass
class LinearToTile(RewritePattern):
    override: dict

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.LinearOp, rewriter: PatternRewriter):
        if not tensor_core_linear(op):
            return
        elem, shape = op.x.type.element_type, op.x.type.get_shape()
        k, n = shape[-1], op.weight.type.get_shape()[0]
        m = math.prod(shape[:-1])
        users = [use.operation for use in op.result.uses]
        fused = users[0] if len(users) == 1 and type(users[0]) in FUSABLE else None
        epilogue = {"bias": op.bias is not None, "activation": FUSABLE[type(fused)] if fused else "none"}
        cfg = _schedule(m, n, k, str(elem), self.override, **epilogue)
        x = op.x
        if len(shape) != 2:
            flat = g.ReshapeOp.make(x, result_type=TensorType(elem, [m, k]))
            rewriter.insert(flat)
            x = flat.results[0]
        mm = MatmulOp.get(x, op.weight, op.bias, cfg)
        rewriter.insert(mm)
        y = mm.results[0]
        if len(shape) != 2:
            back = g.ReshapeOp.make(y, result_type=TensorType(elem, [*shape[:-1], n]))
            rewriter.insert(back)
            y = back.results[0]
        if fused is not None:
            rewriter.replace(fused, [], [y])
            rewriter.erase(op)
        else:
            rewriter.replace(op, [], [y])


@dataclass
class MatmulToTile(RewritePattern):
    """A 2-D f16/bf16 graph.matmul becomes tile.matmul with B read as [K, N]."""

    override: dict

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MatmulOp, rewriter: PatternRewriter):
        a, b = op.lhs.type, op.rhs.type
        if str(a.element_type) not in ("f16", "bf16") or len(a.get_shape()) != 2 or len(b.get_shape()) != 2:
            return
        (m, k), n = a.get_shape(), b.get_shape()[1]
        cfg = _schedule(m, n, k, str(a.element_type), self.override, b_kn=True)
        rewriter.replace(op, MatmulOp.get(op.lhs, op.rhs, None, cfg))


@dataclass(frozen=True)
class GraphToTile(ModulePass):
    """Schedule f16/bf16 graph.linear and 2-D graph.matmul as tile.matmul (options override the tile sizes)."""

    name = "graph-to-tile"
    bm: int = 0
    bn: int = 0
    bk: int = 0
    warps_m: int = 0
    warps_n: int = 0
    stages: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        override = {f: v for f in ("bm", "bn", "bk", "warps_m", "warps_n", "stages") if (v := getattr(self, f))}
        patterns = GreedyRewritePatternApplier([LinearToTile(override), MatmulToTile(override)])
        PatternRewriteWalker(patterns, apply_recursively=False).rewrite_module(op)
