"""Registers (`!ptx.reg<kind>`) and the base classes of ptx ops: how each prints and executes."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    StringAttr,
)
from xdsl.ir import (
    ParametrizedAttribute,
    SSAValue,
    TypeAttribute,
)
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

KINDS = {"pred": np.bool_, "b16": np.uint16, "b32": np.uint32, "u32": np.uint32, "s32": np.int32,
         "f32": np.float32, "b64": np.uint64, "u64": np.uint64}


@irdl_attr_definition
class RegType(ParametrizedAttribute, TypeAttribute):
    """A virtual register of one PTX type: `!ptx.reg<u32>`."""

    name = "ptx.reg"
    kind: StringAttr

    def verify(self):
        if self.kind.data not in KINDS:
            raise VerifyException(f"register kind must be one of {', '.join(KINDS)}, got {self.kind.data}")

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.kind.data}>")

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            return (StringAttr(parser.parse_identifier()),)


def reg(kind: str) -> RegType:
    return RegType(StringAttr(kind))


def kind_of(v: SSAValue) -> str:
    return v.type.kind.data


class PtxOp(IRDLOperation):
    """Base of ptx ops: `text(names)` is the instruction, `execute(cta, *values)` its meaning.

    Printed as `%d = ptx.add %a, %b : (!ptx.reg<u32>, !ptx.reg<u32>) -> !ptx.reg<u32>`."""

    assembly_format = "operands attr-dict `:` functional-type(operands, results)"
    irdl_options = (ParsePropInAttrDict(),)

    def text(self, r) -> str:
        raise NotImplementedError

    def execute(self, cta, *args):
        raise NotImplementedError

    def tied(self) -> list[tuple[SSAValue, SSAValue]]:
        """(result, operand) pairs that share a register: the instruction updates the operand in place."""
        return []


class SourceOp(PtxOp):
    """A ptx op without operands: `%d = ptx.imm {value = 3 : i64} : !ptx.reg<u32>`."""

    assembly_format = "attr-dict `:` type(results)"


class SinkOp(PtxOp):
    """A ptx op without results: `ptx.st %a, %v {space = "global"} : !ptx.reg<u64>, !ptx.reg<b32>`."""

    assembly_format = "operands attr-dict `:` type(operands)"


class MarkerOp(PtxOp):
    """A ptx op without operands or results: `ptx.bar_sync`."""

    assembly_format = "attr-dict"


def unpack_halves(bits: np.ndarray, dtype: str) -> np.ndarray:
    import ml_dtypes

    return bits.view(np.float16 if dtype == "f16" else ml_dtypes.bfloat16).astype(np.float64)
