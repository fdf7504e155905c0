"""tile.write_rows as a kernel: a KV cache's update in place, one thread per chunk of the source."""

from __future__ import annotations

from dialects.ptx import KernelOp
from dialects.tile import WriteRowsOp
from ir.dtypes import storage_dtype
from lowering.ptx_builder import PtxBuilder

WRITE_THREADS = 256
_CHUNK_LOADS = {16: ("b32", 4), 8: ("b32", 2), 4: ("b32", 1), 2: ("b16", 1)}  # bytes a thread moves -> (register kind, count)


def write_rows_shape(op: WriteRowsOp) -> tuple[int, int, int]:
    """(chunk bytes, position bytes, chunks of a slab R): the widest chunk the slab's bytes divide into."""
    slab = op.shape()[3] * storage_dtype(op.x.type.element_type).itemsize
    chunk = next(c for c in _CHUNK_LOADS if slab % c == 0)
    return chunk, op.positions.type.element_type.width.data // 8, slab // chunk


def write_rows_name(chunk: int, position_bytes: int) -> str:
    return f"rung_write_rows_c{chunk}_i{8 * position_bytes}"


def write_rows_kernel(chunk: int, position_bytes: int) -> KernelOp:
    """Thread g copies chunk g % chunks of slab g / chunks (slab o P + p) to slab o S + positions[p] of the output, which
    is x's buffer (the launch is in place); a position at or past S traps. Parameters (x, positions, source, out, P, S,
    chunks a slab, chunks in all)."""
    kernel = KernelOp.get(write_rows_name(chunk, position_bytes), ["u64"] * 4 + ["u32"] * 4, WRITE_THREADS)
    b = PtxBuilder(kernel.body.block)
    _, positions, source, out, count, keys, chunks, total = kernel.body.block.args
    g = b.add(b.mul(b.sreg("ctaid.x"), WRITE_THREADS), b.sreg("tid.x"))
    inside = b.setp("lt", g, total)
    slab, c = b.div(g, chunks), b.rem(g, chunks)
    outer, p = b.div(slab, count), b.rem(slab, count)
    at = b.ld("global", b.add(positions, b.cvt(b.mul(p, position_bytes), "u64")), "u32", pred=inside)  # (the low word of an i64)
    b.trap(b.and_pred(inside, b.setp("ge", at, keys)), "a position at or past the cache's length (tile.write_rows)")
    kind, n = _CHUNK_LOADS[chunk]
    values = b.ld("global", b.add(source, b.cvt(b.mul(g, chunk), "u64")), kind, n=n, pred=inside)
    dst = b.mul(b.add(b.mul(b.add(b.mul(outer, keys), at), chunks), c), chunk)
    b.st("global", b.add(out, b.cvt(dst, "u64")), list(values) if n > 1 else [values], pred=inside)
    return kernel
