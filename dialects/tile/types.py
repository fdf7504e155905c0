"""The block program's tiles: !tile.shared (one tile per pipeline stage) and !tile.frag (spread over lanes)."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    ArrayAttr,
    IntAttr,
    IntegerType,
    StringAttr,
)
from xdsl.ir import (
    Attribute,
    ParametrizedAttribute,
    TypeAttribute,
)
from xdsl.irdl import (
    irdl_attr_definition,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from ir.targets import MAX_SHARED_BYTES


def parse_schedule_fields(parser: AttrParser, make, keys: tuple[str, ...], what: str):
    """`<key = N, ...>` (every key, in order) into make(**fields); what `make` refuses (a ValueError) is an
    error located at the attribute: 'bad WHAT schedule: ...'."""
    with parser.in_angle_brackets():
        start, values = parser.pos, {}
        for i, key in enumerate(keys):
            if i:
                parser.parse_punctuation(",")
            parser.parse_keyword(key)
            parser.parse_punctuation("=")
            values[key] = parser.parse_integer(allow_boolean=False, allow_negative=False)
        try:
            return make(**values)
        except ValueError as e:
            parser.raise_error(f"bad {what} schedule: {e}", start, parser.pos)


def print_schedule_fields(printer: Printer, config, keys: tuple[str, ...]) -> None:
    printer.print_string("<" + ", ".join(f"{key} = {getattr(config, key)}" for key in keys) + ">")

# --- The block program: what one thread block of a scheduled GEMM does, op by op -----------------
#
# tile-expand turns a tile.matmul into a tile.kernel (one thread block's program over
# shape-generic tensors) and a tile.launch of it over the grid of output tiles. Inside it, tiles
# live in shared memory (!tile.shared: one tile per pipeline stage) and in registers (!tile.frag:
# spread over the block's lanes as its named mma fragment layout says). Every op means something
# on numpy for one block, which tile.launch runs block by block; tile-to-warp lowers it op by op.


class _TileShapeType(ParametrizedAttribute, TypeAttribute):
    """A shape and an element type, printed <d0x...xelement[, extra]>."""

    shape: ArrayAttr[IntAttr]
    element: Attribute

    def get_shape(self) -> tuple[int, ...]:
        return tuple(d.data for d in self.shape.data)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string("<" + "x".join(str(d) for d in self.get_shape()) + "x")
        printer.print_attribute(self.element)
        for extra in self.parameters[2:]:
            printer.print_string(f", {extra.data}")
        printer.print_string(">")

    @staticmethod
    def _parse_shape(parser: AttrParser, dims: int, what: str):
        shape, element = parser.parse_ranked_shape()
        if len(shape) != dims:
            parser.raise_error(f"a {what} has {dims} dimensions")
        return ArrayAttr([IntAttr(d) for d in shape]), element


def element_bits(t: Attribute) -> int:
    """Bits of an element of a tile: integers' widths, 16-bit and 8-bit floats (a FormatError for others)."""
    from ir.dtypes import format_name
    from ir.numerics import FormatError, element_format

    if isinstance(t, IntegerType):
        return t.width.data
    name = format_name(t)
    bits = element_format(name).bits if name else {"f16": 16, "bf16": 16, "f32": 32}.get(str(t))
    if bits is None:
        raise FormatError(f"{t} is not an element type of tiles (integers, f16, bf16, f32 and low-precision formats)")
    return bits


@irdl_attr_definition
class SharedType(_TileShapeType):
    """A shared-memory buffer of stages x rows x cols elements: one tile per pipeline stage."""

    name = "tile.shared"

    def verify(self) -> None:
        try:
            bits = element_bits(self.element)
        except ValueError as e:
            raise VerifyException(str(e)) from None
        shape = self.get_shape()
        if min(shape) < 1:
            raise VerifyException(f"a shared buffer's stages, rows and columns must be positive, got {shape}")
        if int(np.prod(shape)) * bits > 8 * MAX_SHARED_BYTES:
            raise VerifyException(f"a shared buffer of {shape} exceeds the {MAX_SHARED_BYTES // 1024} KiB a block can have")

    @staticmethod
    def get(stages: int, rows: int, cols: int, element: Attribute) -> "SharedType":
        return SharedType(ArrayAttr([IntAttr(stages), IntAttr(rows), IntAttr(cols)]), element)

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            return cls._parse_shape(parser, 3, "shared buffer (stages x rows x cols)")


FRAGMENT_LAYOUTS = {
    "a": "mma A operand [M, K] (ldmatrix x4)",
    "b": "mma B operand stored [N, K] (ldmatrix)",
    "bt": "mma B operand stored [K, N] (ldmatrix.trans)",
    "packed": "low-precision B codes [N, K * bits / 32] in mma order: one 32-bit word per lane, n8 tile and k-block",
    "group": "scale or zero rows [groups, N]: each lane holds the columns of its B fragments",
    "sparse": "a sparse B tile's slots [BN, slots / BN] of (value, position) words (ir.sparse.kernel_tiles): each thread holds its share",
    "group_acc": "scale rows [groups, N]: each lane holds the columns of its accumulators",
    "acc": "mma accumulator [M, N]: lane (g, t) holds rows g and g + 8, columns 2t and 2t + 1 of each 16 x 8 tile",
}


@irdl_attr_definition
class FragType(_TileShapeType):
    """A tile in registers, spread over the block's warps (the kernel's warp grid) and their
    lanes by `layout` (FRAGMENT_LAYOUTS)."""

    name = "tile.frag"
    layout: StringAttr

    @staticmethod
    def get(rows: int, cols: int, element: Attribute, layout: str) -> "FragType":
        return FragType(ArrayAttr([IntAttr(rows), IntAttr(cols)]), element, StringAttr(layout))

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            shape, element = cls._parse_shape(parser, 2, "fragment (rows x cols)")
            parser.parse_punctuation(",")
            return shape, element, StringAttr(parser.parse_identifier())

    def verify(self) -> None:
        if self.layout.data not in FRAGMENT_LAYOUTS:
            raise VerifyException(f"fragment layout must be one of {', '.join(FRAGMENT_LAYOUTS)}, got {self.layout.data}")
