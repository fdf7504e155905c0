"""warp-to-ptx: shared tiles become addresses, tile accesses become ptx instructions.

Each warp.alloc_shared becomes the kernel's shared base plus its offset. Each access's byte
offset inside a stage, the tile layout applied to (row, col) (`SmemType.offset`, swizzle
included), is computed where row and col are defined, so a loop that reuses them pays only for
the stage: address = base + stage * stage_bytes + offset. A row x + c whose c rows are whole periods
of the swizzle reuses x's offset and adds c rows' bytes (one offset held for a loop's many tiles). An unswizzled tile whose row is
computed where its column is not (a lookup's row in a loop) takes base + column bytes where the
column is defined and one mad by the row bytes where the row is. A warp.smem_desc becomes its
descriptor: the unswizzled address (the wgmma applies the swizzle itself) over 16, or-ed with
the constant fields; in a kernel with descriptors the base is rounded up to 1024 bytes (the
swizzle pattern's period), out of 1 KiB the kernel reserves for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects import ptx, warp
from ir.layout import Swizzle
from ir.errors import RungError
from lowering.ptx_builder import PtxBuilder

ALIGN = 1024  # a wgmma operand's swizzle pattern repeats every 1024 bytes of address


def emit_swizzle(b: PtxBuilder, sw: Swizzle, offset: SSAValue) -> SSAValue:
    """sw(offset) on a register: offset ^ ((offset >> shift) & (mask << base))."""
    mask = ((1 << sw.bits) - 1) << sw.base
    return b.xor(offset, b.and_(b.shr(offset, sw.shift), mask))


def _hoisted(op: Operation, values: list[SSAValue]) -> PtxBuilder:
    """A builder placed right after the last definition of `values` when they share a block
    (so loop-invariant address arithmetic stays out of loops), else right before `op`."""
    owners = [v.owner for v in values]
    if all(isinstance(o, Operation) for o in owners) and len({o.parent for o in owners}) == 1:
        block: Block = owners[0].parent
        last = max(owners, key=block.get_operation_index)
        if last.next_op is not None:
            return PtxBuilder(block, before=last.next_op)
        return PtxBuilder(block)
    return PtxBuilder(op.parent, before=op)


def _block_of(v: SSAValue) -> Block:
    """The block that defines v."""
    return v.owner.parent if isinstance(v.owner, Operation) else v.owner


def _period_steps(row: SSAValue, tile: warp.SmemType, sw: Swizzle | None) -> tuple[SSAValue, int]:
    """(x, c) for a row x + c (a constant) of a swizzled tile whose c rows span whole periods of the swizzle:
    the layout maps (x + c, col) to its offset of (x, col) plus c rows' bytes, so the access reuses x's offset,
    computed once outside a loop, and adds a constant. Else (row, 0)."""
    add = row.owner
    if sw is not None and isinstance(add, ptx.AddOp) and isinstance(add.operands[1].owner, ptx.ImmOp):
        steps = add.operands[1].owner.value.value.data
        if 0 < steps and (steps * tile.row_bytes) % (1 << (sw.bits + sw.base + sw.shift)) == 0:
            return add.operands[0], steps
    return row, 0


@dataclass(frozen=True)
class WarpToPtx(ModulePass):
    """Lower shared tiles and their accesses to shared-memory addresses and ptx instructions."""

    name = "warp-to-ptx"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        bases: dict[SSAValue, SSAValue] = {}
        aligned = {k for k in op.walk() if isinstance(k, ptx.KernelOp) and any(isinstance(o, warp.SmemDescOp) for o in k.walk())}
        for alloc in [o for o in op.walk() if isinstance(o, warp.AllocSharedOp)]:
            b = PtxBuilder(alloc.parent, before=alloc)
            base = b.shared_base()
            offset = alloc.offset.value.data
            kernel = alloc.parent_op()
            if kernel in aligned:
                if offset + alloc.result.type.bytes + ALIGN > kernel.shared_bytes.value.data:
                    raise RungError(f"@{kernel.sym_name.data}: wgmma operand tiles need {ALIGN} bytes of shared memory "
                                    "beyond the tiles to align them")
                base = b.and_(b.add(base, ALIGN - 1), -ALIGN & 0xFFFFFFFF)
            bases[alloc.result] = b.add(base, offset) if offset else base
        for access in [o for o in op.walk() if isinstance(o, (warp.LdmatrixOp, warp.CpAsyncOp, warp.LoadOp, warp.StoreOp, warp.SmemDescOp))]:
            tile: warp.SmemType = access.tile.type
            base, sw = bases[access.tile], tile.layout_swizzle
            swizzled = sw is not None and sw.bits > 0  # (the identity swizzle: a layout chosen as it is)
            b = PtxBuilder(access.parent, before=access)
            row, rows_ahead = _period_steps(access.row, tile, sw if swizzled else None)
            # a linear tile's row computed where its column is not (in a loop): the base takes the column's bytes
            # where the column is defined, so the row costs one mad (a table lookup's address)
            row_apart = not swizzled and _block_of(row) is not _block_of(access.col)
            h = _hoisted(access, [access.col, base] if row_apart else [row, access.col])
            col_bytes = h.shl(access.col, 1) if tile.element_bytes == 2 else access.col
            if row_apart:
                col_base = h.add(base, col_bytes)
                inner = _hoisted(access, [row, col_base]).mad(row, tile.row_bytes, col_base)
                addr = b.add(inner, b.mul(access.stage, tile.stage_bytes))
            else:
                inner = h.add(h.mul(row, tile.row_bytes), col_bytes)
                if swizzled and not isinstance(access, warp.SmemDescOp):
                    inner = emit_swizzle(h, sw, inner)
                addr = b.add(b.add(base, b.mul(access.stage, tile.stage_bytes)), inner)
            if rows_ahead:
                addr = b.add(addr, rows_ahead * tile.row_bytes)
            if isinstance(access, warp.SmemDescOp):
                desc = b.binary(ptx.OrOp, b.cvt(b.shr(addr, 4), "u64"), b.imm(ptx.smem_descriptor(0, 8 * tile.row_bytes), "u64"))
                Rewriter.replace_op(access, [], [desc])
                continue
            if isinstance(access, warp.LdmatrixOp):
                new = ptx.LdmatrixOp.create(operands=[addr], result_types=[r.type for r in access.results],
                                            properties=dict(access.properties))
            elif isinstance(access, warp.CpAsyncOp):
                guard = [access.pred] if access.pred is not None else []
                new = ptx.CpAsyncOp.create(operands=[addr, access.src, access.src_size, *guard], properties=dict(access.properties))
            elif isinstance(access, warp.LoadOp):
                props = {"space": StringAttr("shared"), **({"byte": access.byte} if access.byte else {})}
                new = ptx.LoadOp.create(operands=[addr], result_types=[access.result.type], properties=props)
            else:
                new = ptx.StoreOp.create(operands=[addr, *access.values], properties={"space": StringAttr("shared")})
            Rewriter.replace_op(access, new)
        for alloc in [o for o in op.walk() if isinstance(o, warp.AllocSharedOp)]:
            Rewriter.replace_op(alloc, [], [bases[alloc.result]])
