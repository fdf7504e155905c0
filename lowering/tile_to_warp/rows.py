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
from ir.dtypes import eight_bit_format
from ir.errors import RungError
from lowering.ptx_builder import PtxBuilder
from lowering.tile_to_warp.dispatch import lower_each

_BINARY = {"add": ptx.AddOp, "sub": ptx.SubOp, "mul": ptx.MulOp, "div": ptx.DivOp, "max": ptx.MaxOp}
_IDENTITY = {"sum": 0.0, "max": -math.inf}
_ELEMENT_BYTES = {"f16": 2, "bf16": 2}
_STORED_BYTES = {**_ELEMENT_BYTES, "f32": 4, "i8": 1, "f8E4M3FN": 1}  # what a row program may also write


class _RowLowering:
    def __init__(self, program: tile.KernelOp):
        self.cfg: RowConfig = program.schedule.data
        args = program.body.block.args
        indices = {op.src for op in program.body.block.ops if isinstance(op, tile.LoadIndexOp)}
        stored = {op.dst for op in program.body.block.ops if isinstance(op, tile.StoreRowOp)}
        for a in args:
            if str(a.type.element_type) not in (_STORED_BYTES if a in stored else _ELEMENT_BYTES) and a not in indices:
                raise RungError(f"tile-to-warp: @{program.sym_name.data}: row programs read f16 or bf16 tensors (and indices) "
                                f"and write those, f32, i8 or f8E4M3FN, not {a.type.element_type}")
        many = self.cfg.rows > 1  # then the rows of the result come as the last parameter
        self.kernel = KernelOp.get(program.sym_name.data, ["u64"] * len(args) + ["u32"] * many, self.cfg.threads * self.cfg.rows,
                                   self.cfg.shared_bytes)
        self.b = b = PtxBuilder(self.kernel.body.block)
        self.env = dict(zip(args, self.kernel.body.block.args))
        self._row_starts, self._column_bytes = {}, {}
        tid = b.sreg("tid.x")
        self.tid, self.block_row, self.row_ok = tid, b.sreg("ctaid.x"), None
        if many:  # warp w of block x takes row x * R + w; a row past the end (in the last block) loads and stores nothing
            self.tid, self.block_row = b.and_(tid, 31), b.add(b.mul(self.block_row, self.cfg.rows), b.shr(tid, 5))
            self.row_ok = b.setp("lt", self.block_row, self.kernel.body.block.args[-1])
        cols, threads = self.cfg.cols, self.cfg.threads
        self.columns = [b.add(self.tid, i * threads) if i else self.tid for i in range(self.cfg.per_thread)]
        # a column past N exists only in the last register, and only when T does not divide N
        self.inside = [self._and(b.setp("lt", c, cols) if (i + 1) * threads > cols else None, self.row_ok) for i, c in enumerate(self.columns)]
        lower_each(self, row_program_ops(program)[:-1], ROW_OPS, program, "row")

    def _and(self, p, q):
        """p and q, either of which may be None (true)."""
        return q if p is None else p if q is None else self.b.and_pred(p, q)

    def _address(self, tensor, row, i: int, stride: int | None = None, offset: int = 0):
        """The address of register i's column (plus `offset`) in `tensor`'s row of `stride` elements (N by
        default; its first row without `row`); the row's start and each column's byte offset are computed
        once per kernel, not per access."""
        b, esize = self.b, _STORED_BYTES[str(tensor.type.element_type)]
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

    def _digits(self, value, shape) -> list:
        """`value`'s digits in `shape` (row-major; div and rem by constants), the first one unbounded."""
        b, digits = self.b, []
        for i in reversed(range(len(shape))):
            digits.append(b.binary(ptx.RemOp, value, shape[i]) if i else value)
            if i:
                value = b.binary(ptx.DivOp, value, shape[i])
        return digits[::-1]

    def _dot(self, digits, coefs, constant: int = 0):
        """constant + the sum of digits times their coefficients (u32; a term of coefficient 0 is dropped)."""
        b, total = self.b, None
        for d, c in zip(digits, coefs):
            if c:
                term = b.mul(d, c) if c != 1 else d
                total = term if total is None else b.add(total, term)
        if total is None:
            return b.imm(constant)
        return b.add(total, constant) if constant else total

    def _source_row(self, op) -> None:
        """The source row: the result row's digits in its leading shape, each times its stride."""
        self.env[op.result] = self._dot(self._digits(self.env[op.row], op.shape.get_values()), op.strides.get_values(),
                                        op.offset.value.data if op.offset else 0)

    def _gather_row(self, op) -> None:
        """Each element's source offset is the row's part (once a block) plus its column's (once a kernel), in u32: a
        coordinate outside the source wraps, and is predicated off by an unsigned compare per checked axis."""
        b, dtype = self.b, str(op.src.type.element_type)
        origin, row_map, col_map = op.maps()
        dims = op.dims.get_values()
        if math.prod(dims) * _ELEMENT_BYTES[dtype] >= 1 << 32:
            raise RungError(f"tile-to-warp: tile.gather_row offsets are 32-bit: a source of {math.prod(dims)} elements is too large")
        strides = [math.prod(dims[a + 1:]) for a in range(len(dims))]
        row_digits = self._digits(self.env[op.row], op.rows.get_values())
        checked = op.checked_axes()
        row_at = {a: self._dot(row_digits, row_map[:, a].tolist(), int(origin[a])) for a in checked}
        row_flat = self._dot(row_digits, (row_map @ strides).tolist(), int(origin @ strides))
        fill, regs = b.fimm(op.fill.value.data if op.fill else 0.0), []
        for i in range(self.cfg.per_thread):
            col_digits = self._digits(self.columns[i], op.cols.get_values())
            inside = self.inside[i]
            for a in checked:
                inside = self._and(inside, b.setp("lt", b.add(row_at[a], self._dot(col_digits, col_map[:, a].tolist())), dims[a]))
            offset = b.add(row_flat, self._dot(col_digits, (col_map @ strides).tolist()))
            address = b.add(self.env[op.src], b.cvt(b.mul(offset, _ELEMENT_BYTES[dtype]), "u64"))
            value = b.cvt_widen(b.ld("global", address, "b16", pred=inside), dtype)
            regs.append(b.selp(value, fill, inside, "f32") if checked else value)
        self.env[op.result] = regs

    def _row_id(self, op) -> None:
        self.env[op.result] = self.block_row

    def _load_index(self, op) -> None:
        """Every thread loads the block's index (one address: one transaction); one out of range traps."""
        b, width = self.b, op.src.type.element_type.width.data
        if width not in (32, 64):
            raise RungError(f"tile-to-warp: tile.load_index reads 32- or 64-bit indices, not {op.src.type.element_type}")
        kind = "u64" if width == 64 else "u32"
        address = b.add(self.env[op.src], b.mul(b.cvt(self.env[op.row], "u64"), b.imm(width // 8, "u64")))
        index = b.ld("global", address, kind, pred=self.row_ok)
        # unsigned: a negative index is a huge one
        b.trap(self._and(b.setp("ge", index, op.limit.value.data), self.row_ok), f"an index is outside [0, {op.limit.value.data}) (tile.load_index)")
        self.env[op.result] = b.cvt(index, "u32") if kind == "u64" else index

    def _load_row(self, op) -> None:
        b, dtype = self.b, str(op.src.type.element_type)
        stride, offset = op.columns()
        regs = []
        for i in range(self.cfg.per_thread):
            inside = self.inside[i]
            if op.padded is not None:  # a column outside src's rows (unsigned: a negative one too) reads zero
                inside = self._and(inside, b.setp("lt", b.add(self.columns[i], offset) if offset else self.columns[i], stride))
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

        eight_bit = eight_bit_format(op.dst.type.element_type)

        def stored(v):  # (the value in dst's type, whether it is a byte)
            if eight_bit is not None:
                return b.cvt_eight_bit(v, eight_bit.a8), True
            return (v if dtype == "f32" else b.cvt_half(v, dtype)), False

        if not isinstance(self.env[op.value], list):  # a scalar: thread 0 stores the row's one element
            address = b.add(self.env[op.dst], b.mul(b.cvt(self.env[op.row], "u64"), b.imm(_STORED_BYTES[dtype], "u64")))
            value, byte = stored(self.env[op.value])
            b.st("global", address, [value], pred=self._and(b.setp("eq", self.tid, 0), self.row_ok), byte=byte)
            return
        for i, v in enumerate(self.env[op.value]):
            value, byte = stored(v)
            b.st("global", self._address(op.dst, op.row, i), [value], pred=self.inside[i], byte=byte)


def lower_row_program(program: tile.KernelOp) -> KernelOp:
    """The ptx.kernel of a row program: its arguments' addresses as parameters, a block per row."""
    return _RowLowering(program).kernel
