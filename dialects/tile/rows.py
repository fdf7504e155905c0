"""Row programs: one thread block per row of a [rows, N] tensor, the row spread over the block's threads.

    tile.kernel @rung_rms_norm_f16_n4096_t256 {schedule = #tile.rows<cols = 4096, threads = 256, rows = 1>} {
    ^0(%x: tensor<?x?xf16>, %w: tensor<?xf16>, %y: tensor<?x?xf16>):
      %r = tile.row_id
      %v = tile.load_row %x[%r] : tensor<?x?xf16> -> !tile.row<4096>
      %sq = tile.map "mul" %v, %v : !tile.row<4096>, !tile.row<4096> -> !tile.row<4096>
      %ss = tile.reduce_row "sum" %sq : !tile.row<4096> -> f32
      ...
      tile.store_row %y3, %y[%r] : !tile.row<4096>, tensor<?x?xf16>
      tile.yield
    }

A row (`!tile.row<N>`) holds N f32 values; a block-uniform scalar is an f32. Loads widen to f32,
stores round to the tensor's type; `tile.map` applies one function elementwise (scalars
broadcast), `tile.reduce_row` reduces a row to a scalar. Norms, softmax and elementwise chains
over rows are programs of these few ops; tile-to-warp lowers each op (lowering.tile_to_warp.rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase, Float32Type, FloatAttr, IndexType, IntAttr, IntegerAttr, IntegerType, StringAttr, TensorType, UnitAttr, f32,
)
from xdsl.ir import Attribute, Data, ParametrizedAttribute, TypeAttribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_operand_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from dialects.tile.types import parse_schedule_fields, print_schedule_fields
from ir.dtypes import eight_bit_format
from ir.errors import RungError

MAX_ROW_THREADS = 1024


@dataclass(frozen=True)
class RowConfig:
    """A row program's schedule: rows of `cols` elements, `threads` threads a row (a multiple of 32), `rows` rows
    a block (more than one only for rows of one warp: each warp of the block then takes a row)."""

    cols: int
    threads: int
    rows: int = 1

    def __post_init__(self):
        if self.cols < 1:
            raise ValueError(f"a row has at least one element, got cols = {self.cols}")
        if self.threads % 32 or not 32 <= self.threads <= MAX_ROW_THREADS:
            raise ValueError(f"threads must be a multiple of 32 from 32 to {MAX_ROW_THREADS}, got {self.threads}")
        if self.rows < 1 or (self.rows > 1 and self.threads != 32) or self.rows * self.threads > MAX_ROW_THREADS:
            raise ValueError(f"a block takes one row, or up to {MAX_ROW_THREADS // 32} rows of one warp each, not {self.rows} rows "
                             f"of {self.threads} threads")

    @property
    def warps(self) -> int:
        """Warps a row."""
        return self.threads // 32

    @property
    def per_thread(self) -> int:
        """Elements of a row each thread holds: thread t has columns t, t + threads, ..."""
        return -(-self.cols // self.threads)

    @property
    def shared_bytes(self) -> int:
        return 4 * self.warps  # a partial result per warp, for reductions across warps


@irdl_attr_definition
class RowSchedule(Data[RowConfig]):
    """#tile.rows<cols = N, threads = T, rows = R>: blocks of R rows of N elements, T threads a row."""

    name = "tile.rows"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> RowConfig:
        return parse_schedule_fields(parser, RowConfig, ("cols", "threads", "rows"), "row")

    def print_parameter(self, printer: Printer) -> None:
        print_schedule_fields(printer, self.data, ("cols", "threads", "rows"))

    @property
    def threads(self) -> int:
        """Threads a block."""
        return self.data.threads * self.data.rows

    def instances(self, shapes: list[tuple[int, ...]]) -> tuple[int, int, int]:
        """The program runs once per row of the result [rows, N] (the last of `shapes`: the operands', then the result's)."""
        return (shapes[-1][0], 1, 1)

    def launch_grid(self, shapes: list[tuple[int, ...]]) -> tuple[int, int, int]:
        """A block per R rows of the result."""
        return (-(-shapes[-1][0] // self.data.rows), 1, 1)

    def launch_dims(self, shapes: list[tuple[int, ...]]) -> list[int]:
        """The result's rows, with which a block of several rows predicates off those past the end."""
        return [shapes[-1][0]] if self.data.rows > 1 else []


@irdl_attr_definition
class RowType(ParametrizedAttribute, TypeAttribute):
    """!tile.row<N>: a row of N f32 values spread over a block's threads."""

    name = "tile.row"
    cols: IntAttr

    @staticmethod
    def get(cols: int) -> "RowType":
        return RowType(IntAttr(cols))

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.cols.data}>")

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            return (IntAttr(parser.parse_integer(allow_boolean=False, allow_negative=False)),)


def _rows(x: np.ndarray, cols: int) -> np.ndarray:
    """x as [rows, cols] (a view: stores through it reach x)."""
    return x.reshape(-1, cols)


@irdl_op_definition
class RowIdOp(IRDLOperation):
    """The row this block computes (grid x)."""

    name = "tile.row_id"
    result = result_def(IndexType)
    assembly_format = "attr-dict"

    def run(self, ids):
        return ids.x


@irdl_op_definition
class LoadRowOp(IRDLOperation):
    """Row `row` of `src` viewed as [rows, N] (N its last dimension), widened to f32; without `row`,
    a 1-D src of N elements (a weight every row shares). With `stride` and `offset`, src's rows hold
    `stride` elements and the row read is its N elements from column `offset` (a slice of the last dimension);
    `padded`, columns outside src's rows read as zero and the offset may be negative (a part of a concatenation)."""

    name = "tile.load_row"
    src = operand_def(TensorType)
    row = opt_operand_def(IndexType)
    stride = opt_prop_def(IntegerAttr)
    offset = opt_prop_def(IntegerAttr)
    padded = opt_prop_def(UnitAttr)
    result = result_def(RowType)
    assembly_format = "$src (`[` $row^ `]`)? attr-dict `:` type($src) `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    def columns(self) -> tuple[int, int]:
        """(elements a row of src holds, the first column read)."""
        cols = self.result.type.cols.data
        return (self.stride.value.data if self.stride else cols), (self.offset.value.data if self.offset else 0)

    def verify_(self):
        if len(self.src.type.get_shape()) != (2 if self.row is not None else 1):
            raise VerifyException("tile.load_row reads a row of a 2-D tensor (with `row`) or a whole 1-D tensor")
        stride, offset = self.columns()
        if self.padded is None and (offset < 0 or offset + self.result.type.cols.data > stride):
            raise VerifyException(f"tile.load_row: columns {offset} to {offset + self.result.type.cols.data} are not inside rows of {stride}")

    def run(self, ids, src, row=None):
        (stride, offset), cols = self.columns(), self.result.type.cols.data
        whole = (_rows(src, stride)[row] if row is not None else src.reshape(stride)).astype(np.float32)
        columns = np.arange(offset, offset + cols)
        inside = (columns >= 0) & (columns < stride)
        return np.where(inside, whole[np.clip(columns, 0, stride - 1)], np.float32(0))


@irdl_op_definition
class SourceRowOp(IRDLOperation):
    """The row of a source tensor that row `row` of a result reads: the result's leading dimensions are
    `shape`, and the source row is `offset` plus the sum of the row's index along each of them times its
    `strides` entry (a permute's strides are the source axes' row strides, in the result's order; a broadcast
    dimension's is 0; a slice of a leading dimension starts at `offset` rows, `step` times that axis's stride)."""

    name = "tile.source_row"
    row = operand_def(IndexType)
    shape = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    offset = opt_prop_def(IntegerAttr)
    result = result_def(IndexType)
    assembly_format = "$row attr-dict"
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self):
        shape, strides = self.shape.get_values(), self.strides.get_values()
        if len(shape) != len(strides) or min(shape, default=1) < 1 or min(strides, default=0) < 0:
            raise VerifyException(f"tile.source_row: {list(strides)} are not non-negative strides of the {len(shape)} leading dimensions")

    def run(self, ids, row):
        index = np.unravel_index(row, self.shape.get_values())
        return (self.offset.value.data if self.offset else 0) + int(sum(int(i) * s for i, s in zip(index, self.strides.get_values())))


@irdl_op_definition
class GatherRowOp(IRDLOperation):
    """Row `row` of a result whose elements are gathered from `src` viewed as `dims` (row-major): the element at
    row digits r (the row's index in `rows`) and column digits c (in `cols`) reads src at the coordinates
    origin + r . row_map + c . col_map (row_map holds a row of len(dims) coefficients per entry of `rows`, col_map
    one per entry of `cols`), or `fill` where a coordinate falls outside `dims`. Windows with padding (im2col,
    pooling) and transposes are such maps."""

    name = "tile.gather_row"
    src = operand_def(TensorType)
    row = operand_def(IndexType)
    rows = prop_def(DenseArrayBase)
    cols = prop_def(DenseArrayBase)
    dims = prop_def(DenseArrayBase)
    origin = prop_def(DenseArrayBase)
    row_map = prop_def(DenseArrayBase)
    col_map = prop_def(DenseArrayBase)
    fill = opt_prop_def(FloatAttr)
    result = result_def(RowType)
    assembly_format = "$src `[` $row `]` attr-dict `:` type($src) `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    def maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(origin [k], row_map [len(rows), k], col_map [len(cols), k]) for k = len(dims)."""
        k = len(self.dims.get_values())
        return (np.array(self.origin.get_values(), np.int64), np.array(self.row_map.get_values(), np.int64).reshape(-1, k),
                np.array(self.col_map.get_values(), np.int64).reshape(-1, k))

    def checked_axes(self) -> list[int]:
        """The source axes whose coordinate can leave [0, dims) for some row and column: the ones checked."""
        origin, row_map, col_map = self.maps()
        lo = hi = origin
        for counts, coefs in ((self.rows.get_values(), row_map), (self.cols.get_values(), col_map)):
            span = (np.array(counts, np.int64)[:, None] - 1) * coefs
            lo, hi = lo + np.minimum(span, 0).sum(axis=0), hi + np.maximum(span, 0).sum(axis=0)
        return [a for a, n in enumerate(self.dims.get_values()) if lo[a] < 0 or hi[a] >= n]

    def verify_(self):
        rows, cols, dims = (a.get_values() for a in (self.rows, self.cols, self.dims))
        if len(self.origin.get_values()) != len(dims) or len(self.row_map.get_values()) != len(rows) * len(dims) \
                or len(self.col_map.get_values()) != len(cols) * len(dims):
            raise VerifyException(f"tile.gather_row: origin needs {len(dims)} entries, row_map {len(rows)} x {len(dims)} and "
                                  f"col_map {len(cols)} x {len(dims)}")
        if int(np.prod(cols)) != self.result.type.cols.data or min((*rows, *cols, *dims), default=1) < 1:
            raise VerifyException(f"tile.gather_row: columns {list(cols)} do not make a {self.result.type}")
        if int(np.prod(dims)) != int(np.prod(self.src.type.get_shape())):
            raise VerifyException(f"tile.gather_row: {self.src.type} is not viewed as {list(dims)}")

    def run(self, ids, src, row):
        origin, row_map, col_map = self.maps()
        dims, cols = self.dims.get_values(), self.cols.get_values()
        r = np.array(np.unravel_index(row, self.rows.get_values()), np.int64)
        c = np.array(np.unravel_index(np.arange(int(np.prod(cols))), cols), np.int64).reshape(len(cols), -1)
        at = (origin + r @ row_map)[:, None] + col_map.T @ c  # [k, columns]
        inside = np.all((at >= 0) & (at < np.array(dims)[:, None]), axis=0)
        flat = np.ravel_multi_index(tuple(np.clip(at, 0, np.array(dims)[:, None] - 1)), dims)
        fill = np.float32(self.fill.value.data if self.fill else 0.0)
        return np.where(inside, src.reshape(-1)[flat].astype(np.float32), fill)


@irdl_op_definition
class LoadIndexOp(IRDLOperation):
    """Element `row` of the 1-D integer tensor `src`, as a row index below `limit` (the rows of the tensor it
    will index); an index outside [0, limit) is an error (on the GPU the kernel traps)."""

    name = "tile.load_index"
    src = operand_def(TensorType)
    row = operand_def(IndexType)
    limit = prop_def(IntegerAttr)
    result = result_def(IndexType)
    assembly_format = "$src `[` $row `]` attr-dict `:` type($src)"
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self):
        if len(self.src.type.get_shape()) != 1 or not isinstance(self.src.type.element_type, IntegerType):
            raise VerifyException(f"tile.load_index reads a 1-D integer tensor, not {self.src.type}")
        if self.limit.value.data < 1:
            raise VerifyException("tile.load_index's limit must be positive")

    def run(self, ids, src, row):
        value = int(src.reshape(-1)[row])
        if not 0 <= value < self.limit.value.data:
            raise RungError(f"index {value} at position {row} is outside [0, {self.limit.value.data})")
        return value


MAP_FUNCTIONS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
                 "exp": np.exp, "rsqrt": lambda x: 1 / np.sqrt(x), "rcp": lambda x: 1 / x, "neg": np.negative}
UNARY = ("exp", "rsqrt", "rcp", "neg")


@irdl_op_definition
class MapOp(IRDLOperation):
    """fn applied elementwise to rows and scalars (a scalar, an f32, is the same for every element):
    add, sub, mul, div (IEEE), max (two operands, or one and `constant`), exp, rsqrt, rcp, neg (one). The result is
    a row if an operand is, else a scalar."""

    name = "tile.map"
    fn = prop_def(StringAttr)
    inputs = var_operand_def(RowType | Float32Type)
    constant = opt_prop_def(FloatAttr)
    result = result_def(RowType | Float32Type)
    assembly_format = "$fn $inputs attr-dict `:` type($inputs) `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(fn: str, *inputs, constant: float | None = None) -> "MapOp":
        rows = [v.type for v in inputs if isinstance(v.type, RowType)]
        props = {"fn": StringAttr(fn), **({"constant": FloatAttr(constant, f32)} if constant is not None else {})}
        return MapOp.build(operands=[list(inputs)], result_types=[rows[0] if rows else f32], properties=props)

    def verify_(self):
        fn = self.fn.data
        if fn not in MAP_FUNCTIONS:
            raise VerifyException(f"tile.map applies one of {', '.join(MAP_FUNCTIONS)}, not '{fn}'")
        arity = len(self.inputs) + (self.constant is not None)
        if arity != (1 if fn in UNARY else 2):
            raise VerifyException(f"'{fn}' takes {1 if fn in UNARY else 2} operands (a constant counts), got {arity}")
        rows = {v.type for v in self.inputs if isinstance(v.type, RowType)}
        if len(rows) > 1:
            raise VerifyException(f"tile.map's rows must have one length, got {', '.join(map(str, rows))}")
        if self.result.type != (rows.pop() if rows else f32):
            raise VerifyException("tile.map gives a row if an operand is a row, else an f32 scalar")

    def run(self, ids, *inputs):
        args = [np.float32(x) if np.ndim(x) == 0 else x for x in inputs]
        if self.constant is not None:
            args.append(np.float32(self.constant.value.data))
        with np.errstate(all="ignore"):
            return np.asarray(MAP_FUNCTIONS[self.fn.data](*args), np.float32)


REDUCTIONS = {"sum": np.sum, "max": np.max}


@irdl_op_definition
class ReduceRowOp(IRDLOperation):
    """The sum or max of a row's elements, a scalar every thread of the block holds."""

    name = "tile.reduce_row"
    kind = prop_def(StringAttr)
    value = operand_def(RowType)
    result = result_def(f32)
    assembly_format = "$kind $value attr-dict `:` type($value) `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self):
        if self.kind.data not in REDUCTIONS:
            raise VerifyException(f"tile.reduce_row reduces by {' or '.join(REDUCTIONS)}, not '{self.kind.data}'")

    def run(self, ids, value):
        return np.float32(REDUCTIONS[self.kind.data](value.astype(np.float64)))


@irdl_op_definition
class StoreRowOp(IRDLOperation):
    """dst[row] = value (dst viewed as [rows, N]), rounded to dst's element type (f16, bf16, f32; or to nearest
    even and saturated, i8 and f8E4M3FN); a scalar value (a row's reduction) is stored as the one element of its row
    (dst viewed as [rows])."""

    name = "tile.store_row"
    value = operand_def(RowType | Float32Type)
    dst = operand_def(TensorType)
    row = operand_def(IndexType)
    assembly_format = "$value `,` $dst `[` $row `]` attr-dict `:` type($value) `,` type($dst)"

    def run(self, ids, value, dst, row):
        eight_bit = eight_bit_format(self.dst.type.element_type)
        if eight_bit is not None:
            value = eight_bit.weight.fmt.round(np.asarray(value, np.float32))
        _rows(dst, self.value.type.cols.data if isinstance(self.value.type, RowType) else 1)[row] = value
        return ()



def row_program_ops(program) -> list:
    """The ops of a row program's body, checked to be row ops (or its tile.yield)."""
    ops = list(program.body.block.ops)
    for op in ops[:-1]:
        if not isinstance(op, ROW_OPS):
            raise VerifyException(f"a row program holds row ops (tile.row_id, tile.load_index, tile.source_row, tile.load_row, tile.gather_row, tile.map, tile.reduce_row, "
                                  f"tile.store_row), not '{op.name}'")
    for op in ops:
        for v in (*op.operands, *op.results):
            if isinstance(v.type, RowType) and v.type.cols.data != program.schedule.data.cols:
                raise VerifyException(f"'{op.name}' has a {v.type}, the schedule's rows have {program.schedule.data.cols} elements")
    return ops


ROW_ATTRIBUTES: list[type[Attribute]] = [RowSchedule, RowType]
ROW_OPS = (RowIdOp, LoadIndexOp, SourceRowOp, LoadRowOp, GatherRowOp, MapOp, ReduceRowOp, StoreRowOp)
