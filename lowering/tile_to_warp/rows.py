"""A row program (dialects.tile.rows) lowered op by op into a ptx.kernel.

Thread t of a block holds columns t, t + T, t + 2T, ... of the block's row (T threads), one f32
register each; a column past N is predicated off on load and store and counts as the identity
in reductions. A reduction sums (or maxes) a thread's registers, then the warp's lanes by
butterfly shuffles, then the warps' partials through shared memory, so every thread ends with
the row's result. Addresses are 64-bit: row * N * element bytes + column * element bytes.
"""

from __future__ import annotations

import math

from dialects import ptx, tile
from dialects.ptx import KernelOp
from dialects.tile.rows import ROW_OPS, RowConfig, row_program_ops
from ir.errors import RungError
from lowering.ptx_builder import PtxBuilder
from lowering.tile_to_warp.dispatch import lower_each

_BINARY = {"add": ptx.AddOp, "sub": ptx.SubOp, "mul": ptx.MulOp, "max": ptx.MaxOp}
_IDENTITY = {"sum": 0.0, "max": -math.inf}
_ELEMENT_BYTES = {"f16": 2, "bf16": 2}


class _RowLowering:
    def __init__(self, program: tile.KernelOp):
        self.cfg: RowConfig = program.schedule.data
        args = program.body.block.args
        indices = {op.src for op in program.body.block.ops if isinstance(op, tile.LoadIndexOp)}
        for a in args:
            if str(a.type.element_type) not in _ELEMENT_BYTES and a not in indices:
                raise RungError(f"tile-to-warp: @{program.sym_name.data}: row programs read and write f16 or bf16 tensors "
                                f"(and read indices), not {a.type.element_type}")
        self.kernel = KernelOp.get(program.sym_name.data, ["u64"] * len(args), self.cfg.threads, self.cfg.shared_bytes)
        self.b = b = PtxBuilder(self.kernel.body.block)
        self.env = dict(zip(args, self.kernel.body.block.args))
        self._row_starts, self._column_bytes = {}, {}
        self.tid = b.sreg("tid.x")
        cols, threads = self.cfg.cols, self.cfg.threads
        self.columns = [b.add(self.tid, i * threads) if i else self.tid for i in range(self.cfg.per_thread)]
        # a column past N exists only in the last register, and only when T does not divide N
        self.inside = [b.setp("lt", c, cols) if (i + 1) * threads > cols else None for i, c in enumerate(self.columns)]
        lower_each(self, row_program_ops(program)[:-1], ROW_OPS, program, "row")

    def _address(self, tensor, row, i: int, stride: int | None = None, offset: int = 0):
        """The address of register i's column (plus `offset`) in `tensor`'s row of `stride` elements (N by
        default; its first row without `row`); the row's start and each column's byte offset are computed
        once per kernel, not per access."""
        b, esize = self.b, _ELEMENT_BYTES[str(tensor.type.element_type)]
        stride = stride or self.cfg.cols
        if (tensor, row, stride) not in self._row_starts:
            start = self.env[tensor]
            if row is not None:
                start = b.add(start, b.mul(b.cvt(self.env[row], "u64"), b.imm(stride * esize, "u64")))
            self._row_starts[tensor, row, stride] = start
        if (i, esize, offset) not in self._column_bytes:
            column = b.add(self.columns[i], offset) if offset else self.columns[i]
            self._column_bytes[i, esize, offset] = b.cvt(b.mul(column, esize), "u64")
        return b.add(self._row_starts[tensor, row, stride], self._column_bytes[i, esize, offset])

    def _source_row(self, op) -> None:
        """The source row: the result row's digits in its leading shape (div and rem by constants), each times its
        stride (a broadcast dimension's 0 drops it)."""
        b, rest = self.b, self.env[op.row]
        shape, strides = op.shape.get_values(), op.strides.get_values()
        source = None
        for i in reversed(range(len(shape))):
            digit = b.binary(ptx.RemOp, rest, shape[i]) if i else rest
            if i:
                rest = b.binary(ptx.DivOp, rest, shape[i])
            if strides[i]:
                term = b.mul(digit, strides[i]) if strides[i] != 1 else digit
                source = term if source is None else b.add(source, term)
        offset = op.offset.value.data if op.offset else 0
        if source is None:
            source = b.imm(offset)
        elif offset:
            source = b.add(source, offset)
        self.env[op.result] = source

    def _row_id(self, op) -> None:
        self.env[op.result] = self.b.sreg("ctaid.x")

    def _load_index(self, op) -> None:
        """Every thread loads the block's index (one address: one transaction); one out of range traps."""
        b, width = self.b, op.src.type.element_type.width.data
        if width not in (32, 64):
            raise RungError(f"tile-to-warp: tile.load_index reads 32- or 64-bit indices, not {op.src.type.element_type}")
        kind = "u64" if width == 64 else "u32"
        address = b.add(self.env[op.src], b.mul(b.cvt(self.env[op.row], "u64"), b.imm(width // 8, "u64")))
        index = b.ld("global", address, kind)
        # unsigned: a negative index is a huge one
        b.trap(b.setp("ge", index, op.limit.value.data), f"an index is outside [0, {op.limit.value.data}) (tile.load_index)")
        self.env[op.result] = b.cvt(index, "u32") if kind == "u64" else index

    def _load_row(self, op) -> None:
        b, dtype = self.b, str(op.src.type.element_type)
        stride, offset = op.columns()
        regs = []
        for i in range(self.cfg.per_thread):
            inside = self.inside[i]
            if op.padded is not None:  # a column outside src's rows (unsigned: a negative one too) reads zero
                outside_ok = b.setp("lt", b.add(self.columns[i], offset) if offset else self.columns[i], stride)
                inside = outside_ok if inside is None else b.and_pred(inside, outside_ok)
            value = b.cvt_widen(b.ld("global", self._address(op.src, op.row, i, stride, offset), "b16", pred=inside), dtype)
            regs.append(b.selp(value, b.fimm(0.0), inside) if op.padded is not None else value)
        self.env[op.result] = regs

    def _map(self, op) -> None:
        b, fn = self.b, op.fn.data
        args = [self.env[v] for v in op.inputs] + ([b.fimm(op.constant.value.data)] if op.constant is not None else [])
        width = max((len(a) for a in args if isinstance(a, list)), default=0)

        def element(i: int):
            xs = [a[i] if isinstance(a, list) else a for a in args]
            if fn in _BINARY:
                return b.binary(_BINARY[fn], *xs)
            if fn == "exp":
                return b.ex2(b.mul(xs[0], b.fimm(math.log2(math.e))))
            if fn == "rsqrt":
                return b.rsqrt(xs[0])
            if fn == "rcp":
                return b.rcp(xs[0])
            return b.sub(b.fimm(0.0), xs[0])  # neg

        self.env[op.result] = [element(i) for i in range(width)] if width else element(0)

    def _reduce_row(self, op) -> None:
        b, kind = self.b, op.kind.data
        combine = (lambda x, y: b.add(x, y)) if kind == "sum" else (lambda x, y: b.max(x, y))
        identity = b.fimm(_IDENTITY[kind])
        regs = [v if p is None else b.selp(v, identity, p, "f32") for v, p in zip(self.env[op.value], self.inside)]
        acc = regs[0]
        for v in regs[1:]:
            acc = combine(acc, v)
        for lanes in (16, 8, 4, 2, 1):
            acc = combine(acc, b.shfl_bfly(acc, lanes))
        if self.cfg.warps > 1:  # lane 0 of each warp posts its partial; every thread combines them all
            lane, warp = b.and_(self.tid, 31), b.shr(self.tid, 5)
            smem = b.shared_base()
            b.st("shared", b.add(smem, b.shl(warp, 2)), [acc], pred=b.setp("eq", lane, 0))
            b.barrier()
            parts = [b.ld("shared", smem, "f32", offset=4 * w) for w in range(self.cfg.warps)]
            acc = parts[0]
            for v in parts[1:]:
                acc = combine(acc, v)
            b.barrier()  # all have read before a later reduction writes again
        self.env[op.result] = acc

    def _store_row(self, op) -> None:
        b, dtype = self.b, str(op.dst.type.element_type)
        for i, v in enumerate(self.env[op.value]):
            b.st("global", self._address(op.dst, op.row, i), [b.cvt_half(v, dtype)], pred=self.inside[i])


def lower_row_program(program: tile.KernelOp) -> KernelOp:
    """The ptx.kernel of a row program: its arguments' addresses as parameters, a block per row."""
    return _RowLowering(program).kernel
