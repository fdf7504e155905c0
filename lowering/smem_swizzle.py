"""smem-swizzle: give each shared tile the swizzle that keeps ldmatrix free of bank conflicts.

ldmatrix reads, per 8x8 matrix, the same 16-byte chunk of 8 consecutive tile rows. With rows a
multiple of 128 bytes apart those 8 chunks share banks; XOR-ing the chunk index with row bits
(`dialects.tile.swizzle_for`) spreads them over all 32 banks. Every access goes through the
tile's layout, so the swizzle changes where bytes live, never what the kernel computes.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects.tile import swizzle_for
from dialects.warp import AllocSharedOp, SmemType


@dataclass(frozen=True)
class SmemSwizzle(ModulePass):
    """Swizzle every shared tile without a layout whose rows are 64 bytes or more (a tile laid out
    on purpose, such as the shared table of pairs, carries one: the identity swizzle)."""

    name = "smem-swizzle"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for alloc in [o for o in op.walk() if isinstance(o, AllocSharedOp)]:
            t: SmemType = alloc.result.type
            if t.layout_swizzle is not None or t.row_bytes < 64:
                continue
            sw = swizzle_for(t.row_bytes)
            if t.stage_bytes % (1 << (sw.bits + sw.base + sw.shift)):
                continue  # the swizzle would not stay inside a stage
            new_type = SmemType.get(t.stages.data, t.rows.data, t.cols.data, t.element, sw)
            Rewriter.replace_op(alloc, AllocSharedOp.get(new_type, alloc.offset.value.data))
