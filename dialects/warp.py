"""The `warp` dialect: per-lane access to shared-memory tiles by logical coordinates.

A kernel at this level computes, per lane, which (stage, row, column) of a shared tile it
reads or writes; the tile's type carries its layout:

    %a = warp.alloc_shared {offset = 0 : i64} : !warp.smem<3x128x32xf16, swizzle 2 4 3>
    %f:4 = warp.ldmatrix %a, %stage, %row, %col : ... -> (!ptx.reg<b32>, ...)

so that choosing a layout (`smem-swizzle`) and turning coordinates into byte addresses
(`warp-to-ptx`) are passes, not index arithmetic inside the kernel generator; `warp.smem_desc`
names a tile's rows as a wgmma operand. Everything else a lane does (address arithmetic,
mma.sync, wgmma, cp.async groups, barriers) uses the `ptx` ops.
A tile value is, for the interpreter, its byte offset in the block's shared memory.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import ArrayAttr, IntAttr, IntegerAttr, IntegerType, UnitAttr, i64
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, TypeAttribute
from xdsl.irdl import (
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from dialects.ptx import PtxOp, RegType, SinkOp, SourceOp, cp_async_lanes, ldmatrix_lanes
from ir.errors import RungError
from ir.layout import Swizzle
from ir.targets import MAX_SHARED_BYTES


@irdl_attr_definition
class SmemType(ParametrizedAttribute, TypeAttribute):
    """A shared-memory tile of `stages` x `rows` x `cols` elements (16-bit, or 8-bit for an i8/ui8
    element), each stage row-major; byte offset (s, r, c) = s * stage_bytes + swizzle(r * row_bytes
    + c * element bytes), no swizzle by default."""

    name = "warp.smem"
    stages: IntAttr
    rows: IntAttr
    cols: IntAttr
    element: Attribute
    swizzle: ArrayAttr  # [] or [bits, base, shift]

    @staticmethod
    def get(stages: int, rows: int, cols: int, element: Attribute, swizzle: Swizzle | None = None) -> "SmemType":
        sw = ArrayAttr([IntAttr(v) for v in (swizzle.bits, swizzle.base, swizzle.shift)]) if swizzle else ArrayAttr([])
        return SmemType(IntAttr(stages), IntAttr(rows), IntAttr(cols), element, sw)

    @property
    def element_bytes(self) -> int:
        return 1 if isinstance(self.element, IntegerType) and self.element.width.data == 8 else 2

    @property
    def row_bytes(self) -> int:
        return self.element_bytes * self.cols.data

    @property
    def stage_bytes(self) -> int:
        return self.rows.data * self.row_bytes

    @property
    def bytes(self) -> int:
        return self.stages.data * self.stage_bytes

    @property
    def layout_swizzle(self) -> Swizzle | None:
        return Swizzle(*(v.data for v in self.swizzle.data)) if self.swizzle.data else None

    def offset(self, stage, row, col, swizzled: bool = True):
        """Byte offsets of (stage, row, col), on ints or numpy arrays (`swizzled` False: before the
        swizzle, as a wgmma descriptor names them)."""
        inner = row * self.row_bytes + self.element_bytes * col
        sw = self.layout_swizzle if swizzled else None
        return stage * self.stage_bytes + (sw(inner) if sw else inner)

    def verify(self) -> None:
        if min(self.stages.data, self.rows.data, self.cols.data) < 1:
            raise VerifyException("a shared tile's stages, rows and columns must be positive")
        if self.bytes > MAX_SHARED_BYTES:
            raise VerifyException(f"a shared tile of {self.bytes} bytes exceeds the {MAX_SHARED_BYTES // 1024} KiB a block can have")
        if len(self.swizzle.data) not in (0, 3):
            raise VerifyException("swizzle takes bits, base and shift")
        if any(not 0 <= v.data <= 16 for v in self.swizzle.data):
            raise VerifyException("swizzle bits, base and shift must each be 0 to 16 (a period beyond shared memory means nothing)")
        sw = self.layout_swizzle
        if sw and self.stage_bytes % (1 << (sw.bits + sw.base + sw.shift)):
            raise VerifyException(f"a stage of {self.stage_bytes} bytes is not a whole number of swizzle periods")

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.stages.data}x{self.rows.data}x{self.cols.data}x")
        printer.print_attribute(self.element)
        if self.swizzle.data:
            printer.print_string(", swizzle " + " ".join(str(v.data) for v in self.swizzle.data))
        printer.print_string(">")

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            dims, element = parser.parse_ranked_shape()
            if len(dims) != 3:
                parser.raise_error("a shared tile is stages x rows x cols")
            swizzle = []
            if parser.parse_optional_punctuation(","):
                parser.parse_keyword("swizzle")
                swizzle = [IntAttr(parser.parse_integer(allow_boolean=False)) for _ in range(3)]
        return (IntAttr(dims[0]), IntAttr(dims[1]), IntAttr(dims[2]), element, ArrayAttr(swizzle))


@irdl_op_definition
class AllocSharedOp(SourceOp):
    """A shared tile at byte `offset` of the block's shared memory."""

    name = "warp.alloc_shared"
    result = result_def(SmemType)
    offset = prop_def(IntegerAttr)

    @staticmethod
    def get(tile: SmemType, offset: int) -> "AllocSharedOp":
        return AllocSharedOp.create(result_types=[tile], properties={"offset": IntegerAttr(offset, i64)})

    def execute(self, cta):
        return np.full(cta.threads, self.offset.value.data, np.int64)


# Each access op declares tile, stage, row and col itself: IRDL puts a base class's operands
# after the subclass's own, and the operand order is the op's interface.


def _addresses(op, base, stage, row, col) -> np.ndarray:
    """Byte addresses of each lane's (stage, row, col) of the op's tile."""
    t: SmemType = op.tile.type
    return base + t.offset(stage.astype(np.int64), row.astype(np.int64), col.astype(np.int64))


@irdl_op_definition
class LdmatrixOp(PtxOp):
    """ldmatrix (x1, x2 or x4, optionally transposed) whose row addresses are lanes' (row, col) of a tile."""

    name = "warp.ldmatrix"
    tile = operand_def(SmemType)
    stage = operand_def(RegType)
    row = operand_def(RegType)
    col = operand_def(RegType)
    results_ = var_result_def(RegType)
    trans = opt_prop_def(UnitAttr)

    def execute(self, cta, base, stage, row, col):
        return ldmatrix_lanes(cta, _addresses(self, base, stage, row, col), len(self.results_), bool(self.trans))


@irdl_op_definition
class CpAsyncOp(SinkOp):
    """[@p] cp.async of `size` bytes from global `src` to a tile's (stage, row, col), src_size of them read."""

    name = "warp.cp_async"
    tile = operand_def(SmemType)
    stage = operand_def(RegType)
    row = operand_def(RegType)
    col = operand_def(RegType)
    src = operand_def(RegType)
    src_size = operand_def(RegType)
    pred = opt_operand_def(RegType)
    size = prop_def(IntegerAttr)

    def execute(self, cta, base, stage, row, col, src, src_size, pred=None):
        cp_async_lanes(cta, _addresses(self, base, stage, row, col), src, src_size, self.size.value.data, pred)
        return ()


LOAD_KINDS = {"b32": 4, "b16": 2}


@irdl_op_definition
class LoadOp(PtxOp):
    """ld.shared of a tile's (stage, row, col): a b32 or b16 result, or, with `byte`, one byte
    zero-extended into a b32."""

    name = "warp.ld_shared"
    tile = operand_def(SmemType)
    stage = operand_def(RegType)
    row = operand_def(RegType)
    col = operand_def(RegType)
    result = result_def(RegType)
    byte = opt_prop_def(UnitAttr)

    def verify_(self):
        if self.result.type.kind.data not in LOAD_KINDS:
            raise VerifyException(f"warp.ld_shared gives a b32 or b16 register, not {self.result.type.kind.data}")

    def execute(self, cta, base, stage, row, col):
        addrs = _addresses(self, base, stage, row, col)
        if self.byte:
            return cta.load("shared", addrs, 1, None).reshape(-1).astype(np.uint32)
        width = LOAD_KINDS[self.result.type.kind.data]
        return cta.load("shared", addrs, width, None).view(np.uint32 if width == 4 else np.uint16).reshape(-1).copy()


@irdl_op_definition
class StoreOp(SinkOp):
    """st.shared of one, two or four registers (all b16 or all b32) side by side from a tile's
    (stage, row, col) on."""

    name = "warp.st_shared"
    tile = operand_def(SmemType)
    stage = operand_def(RegType)
    row = operand_def(RegType)
    col = operand_def(RegType)
    values = var_operand_def(RegType)

    def verify_(self):
        kinds = {v.type.kind.data for v in self.values}
        if len(self.values) not in (1, 2, 4) or len(kinds) != 1 or not kinds <= set(LOAD_KINDS):
            raise VerifyException(f"warp.st_shared stores 1, 2 or 4 registers, all b32 or all b16, got {len(self.values)} of {sorted(kinds)}")

    def execute(self, cta, base, stage, row, col, *values):
        width = LOAD_KINDS[self.values[0].type.kind.data]
        data = np.stack([np.ascontiguousarray(v.astype(np.uint32 if width == 4 else np.uint16)) for v in values], axis=1)
        cta.store("shared", _addresses(self, base, stage, row, col), data.view(np.uint8).reshape(cta.threads, -1), None)
        return ()


WGMMA_SWIZZLE = Swizzle(3, 4, 3)  # the 128-byte swizzle a wgmma descriptor (mode 1) reads: 16-byte chunk ^= row % 8


@irdl_op_definition
class SmemDescOp(PtxOp):
    """The wgmma descriptor (ptx.smem_descriptor) of a tile's rows from (stage, row, col) on, K
    along its columns: the tile has 128-byte rows and the 128-byte swizzle, and `row` is a
    multiple of 8, so that each 8-row group is one 1024-byte swizzle pattern."""

    name = "warp.smem_desc"
    tile = operand_def(SmemType)
    stage = operand_def(RegType)
    row = operand_def(RegType)
    col = operand_def(RegType)
    result = result_def(RegType)

    def verify_(self):
        t: SmemType = self.tile.type
        if t.row_bytes != 128 or t.layout_swizzle != WGMMA_SWIZZLE:
            raise VerifyException(f"a wgmma operand tile has 128-byte rows with the 128-byte swizzle, got {t}")

    def execute(self, cta, base, stage, row, col):
        from dialects.ptx import smem_descriptor

        t: SmemType = self.tile.type
        if (row % 8).any():
            raise RungError("a wgmma operand starts on a multiple of 8 rows")
        addr = base + t.offset(*(v.astype(np.int64) for v in (stage, row, col)), swizzled=False)
        return smem_descriptor(addr, 8 * t.row_bytes).astype(np.uint64)


WARP = Dialect("warp", [AllocSharedOp, LdmatrixOp, CpAsyncOp, LoadOp, StoreOp, SmemDescOp], [SmemType])
