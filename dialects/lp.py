"""The `lp` dialect: low-precision element types and quantization formats.

Element types reuse MLIR's builtin types where they exist (si4/ui4 and the other narrow
integers, f8E4M3FN, f8E5M2, f6E3M2FN, f6E2M3FN, f4E2M1FN, f8E8M0FNU); `lp` adds `!lp.nf4`
and the quantization format attribute

    #lp.quant<si4, group 128, scale f16>
    #lp.quant<ui4, group 64, scale bf16, zero quantized>
    #lp.quant<f4E2M1FN, group 32, scale f8E8M0FNU>          (mxfp4)
    #lp.quant<si8, group channel, scale f32>

and the tiling of unstructured-sparse weights, `#lp.sparse<tile 128x64>`. Their exact numerics live in
`ir.numerics` and `ir.sparse`.
"""

from __future__ import annotations

from typing import ClassVar

from xdsl.dialects.builtin import (
    BFloat16Type,
    Float8E8M0FNUType,
    Float16Type,
    Float32Type,
    IntAttr,
    IntegerType,
    Signedness,
    StringAttr,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, TypeAttribute
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from ir.dtypes import FLOAT_FORMATS, format_name
from ir.numerics import FormatError, QuantFormat, int_name
from ir.sparse import SparseFormat


@irdl_attr_definition
class NF4Type(ParametrizedAttribute, TypeAttribute):
    """4-bit NormalFloat (QLoRA): 16 quantiles of N(0, 1) scaled to [-1, 1]."""

    name = "lp.nf4"
    FORMAT: ClassVar[str] = "nf4"  # its ir.numerics format (ir.dtypes.format_name)


@irdl_attr_definition
class FormatType(ParametrizedAttribute, TypeAttribute):
    """An element type of a format defined as text (ir.format_text), by the name it was registered under:
    `!lp.format<e3m2b2>`. The module that uses it is read after its definitions are loaded (rung-opt --format-file)."""

    name = "lp.format"

    format_name: StringAttr

    def __init__(self, format_name: str):
        super().__init__(StringAttr(format_name))

    @property
    def FORMAT(self) -> str:  # noqa: N802  (ir.dtypes.format_name reads it, as lp.nf4's class attribute)
        return self.format_name.data

    def verify(self) -> None:
        from ir.numerics import element_format

        try:
            element_format(self.FORMAT)
        except FormatError as e:
            raise VerifyException(str(e)) from None

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.FORMAT}>")

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            return (StringAttr(parser.parse_identifier()),)


_SCALE_TYPES = {Float16Type: "f16", BFloat16Type: "bf16", Float32Type: "f32", Float8E8M0FNUType: "e8m0"}


class _FormatAttr(ParametrizedAttribute):
    """An attribute standing for an ir format (its `format`): it verifies by building that format."""

    def verify(self) -> None:
        try:
            self.format
        except FormatError as e:
            raise VerifyException(str(e)) from None


@irdl_attr_definition
class QuantAttr(_FormatAttr):
    """A weight quantization format: element type, group size along the reduction axis
    (0 = one group per output channel), scale type and zero-point mode."""

    name = "lp.quant"

    element: Attribute
    group: IntAttr
    scale: Attribute
    zero: StringAttr

    def __init__(self, element: Attribute, group: int | None, scale: Attribute, zero: str = "none"):
        super().__init__(element, IntAttr(group or 0), scale, StringAttr(zero))

    @staticmethod
    def from_format(fmt: QuantFormat) -> "QuantAttr":
        """The attribute of an ir.numerics.QuantFormat (the inverse of `format`)."""
        name = fmt.element
        if int_name(name):
            bits, signed = int_name(name)
            element = IntegerType(bits, Signedness.SIGNED if signed else Signedness.UNSIGNED)
        else:
            builtin = next((t for t, n in FLOAT_FORMATS.items() if n == name), None)
            element = NF4Type() if name == "nf4" else builtin() if builtin else FormatType(name)
        scale = next(t for t, n in _SCALE_TYPES.items() if n == fmt.scale)()
        return QuantAttr(element, fmt.group, scale, fmt.zero)

    @property
    def format(self) -> QuantFormat:
        fmt = format_name(self.element)
        if fmt is None:
            raise FormatError(f"{self.element} is not a low-precision element type (use e.g. si4, ui4, f8E4M3FN, !lp.nf4)")
        scale = _SCALE_TYPES.get(type(self.scale))
        if scale is None:
            raise FormatError(f"scale type must be f16, bf16, f32 or f8E8M0FNU, got {self.scale}")
        return QuantFormat(fmt, self.group.data or None, scale, self.zero.data)

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_attribute(self.element)
            printer.print_string(", group " + (str(self.group.data) if self.group.data else "channel"))
            printer.print_string(", scale ")
            printer.print_attribute(self.scale)
            if self.zero.data != "none":
                printer.print_string(", zero " + self.zero.data)

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            element = parser.parse_type()
            parser.parse_punctuation(",")
            parser.parse_keyword("group")
            group = 0 if parser.parse_optional_keyword("channel") else parser.parse_integer(allow_boolean=False)
            parser.parse_punctuation(",")
            parser.parse_keyword("scale")
            scale = parser.parse_type()
            zero = "none"
            if parser.parse_optional_punctuation(","):
                parser.parse_keyword("zero")
                zero = parser.parse_identifier()
        return (element, IntAttr(group), scale, StringAttr(zero))


@irdl_attr_definition
class SparseAttr(_FormatAttr):
    """Tiled-CSL's tiling of an unstructured-sparse weight (ir.sparse): `#lp.sparse<tile 128x64>`, tile_n rows by
    tile_k columns, and optionally the most nonzeros a tile of the weight holds, `#lp.sparse<tile 128x64, max 1638>`
    (0: not stated), which a sparse kernel's slots are made for (the packing checks the weight keeps to it)."""

    name = "lp.sparse"

    tile_n: IntAttr
    tile_k: IntAttr
    max_nnz: IntAttr

    def __init__(self, tile_n: int, tile_k: int, max_nnz: int = 0):
        super().__init__(IntAttr(tile_n), IntAttr(tile_k), IntAttr(max_nnz))

    @staticmethod
    def from_format(fmt: SparseFormat, max_nnz: int = 0) -> "SparseAttr":
        return SparseAttr(fmt.tile_n, fmt.tile_k, max_nnz)

    @property
    def format(self) -> SparseFormat:
        fmt = SparseFormat(self.tile_n.data, self.tile_k.data)
        if not 0 <= self.max_nnz.data <= fmt.tile_n * fmt.tile_k:
            raise FormatError(f"a {fmt.tile_n}x{fmt.tile_k} tile holds 0 to {fmt.tile_n * fmt.tile_k} nonzeros, not max {self.max_nnz.data}")
        return fmt

    def print_parameters(self, printer: Printer) -> None:
        bound = f", max {self.max_nnz.data}" if self.max_nnz.data else ""
        printer.print_string(f"<tile {self.tile_n.data}x{self.tile_k.data}{bound}>")

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            parser.parse_keyword("tile")
            n, k = parser.parse_dimension_list()  # "128x64"
            bound = 0
            if parser.parse_optional_punctuation(","):
                parser.parse_keyword("max")
                bound = parser.parse_integer(allow_negative=False)
        return (IntAttr(n), IntAttr(k), IntAttr(bound))


LP = Dialect("lp", [], [NF4Type, FormatType, QuantAttr, SparseAttr])
