"""Constants, special registers, integer and float arithmetic, comparisons and selects."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    IntegerAttr,
    StringAttr,
    i64,
)
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
)
from xdsl.utils.exceptions import VerifyException

from dialects.ptx.base import KINDS, PtxOp, RegType, SourceOp, kind_of, reg

# --- constants, special registers, arithmetic -----------------------------------------------------------


@irdl_op_definition
class ImmOp(SourceOp):
    """mov.<kind> dst, value."""

    name = "ptx.imm"
    result = result_def(RegType)
    value = prop_def(IntegerAttr)

    @staticmethod
    def get(value: int, kind: str = "u32") -> "ImmOp":
        return ImmOp.create(result_types=[reg(kind)], properties={"value": IntegerAttr(value, i64)})

    def text(self, r):
        k = kind_of(self.result)
        v = self.value.value.data
        if k == "f32":
            return f"mov.b32 {r(self.result)}, {v & 0xFFFFFFFF:#010x};"
        return f"mov.{k} {r(self.result)}, {v};"

    def verify_(self):
        k, v = kind_of(self.result), self.value.value.data
        bits = 1 if k == "pred" else np.dtype(KINDS[k]).itemsize * 8
        low = 0 if k == "pred" else -(1 << (bits - 1))  # a negative value is its two's-complement bits
        if not low <= v < 1 << bits:
            raise VerifyException(f"ptx.imm {v} does not fit a {k} register ({low} to {(1 << bits) - 1})")

    def execute(self, cta):
        k = kind_of(self.result)
        v = self.value.value.data
        dtype = np.dtype(KINDS[k])
        if k == "pred":
            return np.full(cta.threads, bool(v))
        bits = np.dtype(f"u{dtype.itemsize}")
        return np.full(cta.threads, v & ((1 << (8 * dtype.itemsize)) - 1), bits).view(dtype)


SPECIAL = ("tid.x", "ntid.x", "ctaid.x", "ctaid.y", "ctaid.z", "nctaid.x", "nctaid.y", "nctaid.z", "laneid")


@irdl_op_definition
class SpecialRegOp(SourceOp):
    """mov.u32 dst, %<reg>: thread and block ids, and the grid's size."""

    name = "ptx.sreg"
    result = result_def(RegType)
    reg = prop_def(StringAttr)

    def verify_(self):
        if self.reg.data not in SPECIAL:
            raise VerifyException(f"special register must be one of {', '.join(SPECIAL)}")

    def text(self, r):
        return f"mov.u32 {r(self.result)}, %{self.reg.data};"

    def execute(self, cta):
        return cta.special(self.reg.data)


@irdl_op_definition
class SharedBaseOp(SourceOp):
    """mov.u32 dst, <kernel>_smem: the address of the kernel's shared memory."""

    name = "ptx.shared_base"
    result = result_def(RegType)

    def text(self, r):
        kernel = self.parent_op()
        while kernel.name != "ptx.kernel":
            kernel = kernel.parent_op()
        return f"mov.u32 {r(self.result)}, {kernel.sym_name.data}_smem;"

    def execute(self, cta):
        return np.zeros(cta.threads, np.uint32)  # shared addresses are offsets into the block's shared memory


class BinaryOp(PtxOp):
    """<op>.<kind> dst, a, b: both operands and the result of one kind."""

    lhs = operand_def(RegType)
    rhs = operand_def(RegType)
    result = result_def(RegType)
    MNEMONIC: ClassVar[str] = ""

    def verify_(self):
        if not (self.lhs.type == self.result.type == self.rhs.type or self.MNEMONIC in ("shl", "shr")):
            raise VerifyException(f"{self.name} needs operands and result of one type")

    def text(self, r):
        k = kind_of(self.result)
        m = {"mul": "mul.lo" if k not in ("f32",) else "mul", "div": "div.rn" if k == "f32" else "div"}.get(self.MNEMONIC, self.MNEMONIC)
        if m in ("and", "or", "xor", "shl"):
            k = {"u32": "b32", "s32": "b32", "u64": "b64"}.get(k, k)
        elif m == "shr" and k.startswith("b"):
            k = "u" + k[1:]
        return f"{m}.{k} {r(self.result)}, {r(self.lhs)}, {r(self.rhs)};"

    def execute(self, cta, a, b):
        fn = np.divide if self.MNEMONIC == "div" and a.dtype == np.float32 else _BIN[self.MNEMONIC]  # div.rn.f32: IEEE division
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            out = fn(a, b.astype(a.dtype) if self.MNEMONIC in ("shl", "shr") else b)
        return out.astype(a.dtype)


_BIN = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "and": np.bitwise_and, "or": np.bitwise_or,
        "xor": np.bitwise_xor, "shl": np.left_shift, "shr": np.right_shift, "min": np.minimum, "max": np.maximum,
        "div": np.floor_divide, "rem": np.remainder}


def _binary(mnemonic: str):
    return irdl_op_definition(type(mnemonic.title() + "Op", (BinaryOp,), {
        "name": f"ptx.{mnemonic}", "MNEMONIC": mnemonic, "__doc__": f"{mnemonic}.<kind> dst, a, b.", "__module__": __name__,
        "__annotations__": {"MNEMONIC": ClassVar[str]},
    }))


AddOp, SubOp, MulOp, AndOp, OrOp, XorOp, ShlOp, ShrOp, MinOp, MaxOp, DivOp, RemOp = (
    _binary(m) for m in ("add", "sub", "mul", "and", "or", "xor", "shl", "shr", "min", "max", "div", "rem"))


@irdl_op_definition
class MadOp(PtxOp):
    """mad.lo.<kind> dst, a, b, c: a * b + c of integers; of f32, fma.rn.f32 (a u32 operand holds f32 bits)."""

    name = "ptx.mad"
    a = operand_def(RegType)
    b = operand_def(RegType)
    c = operand_def(RegType)
    result = result_def(RegType)

    def text(self, r):
        k = kind_of(self.result)
        op = "fma.rn" if k == "f32" else "mad.lo"
        return f"{op}.{k} {r(self.result)}, {r(self.a)}, {r(self.b)}, {r(self.c)};"

    def execute(self, cta, a, b, c):
        if kind_of(self.result) == "f32":  # the product is exact in float64; the sum rounds there, then to f32 (a double
            # rounding: it can differ from the fused result by one ulp where the float64 sum lands on an f32 halfway point)
            a, b, c = (x if x.dtype == np.float32 else x.astype(np.uint32).view(np.float32) for x in (a, b, c))
            return (a.astype(np.float64) * b + c).astype(np.float32)
        with np.errstate(over="ignore"):
            return (a * b + c).astype(a.dtype)


@irdl_op_definition
class CvtOp(PtxOp):
    """cvt[.rn].<dst kind>.<src kind> dst, src: integer widening and narrowing, and integer to f32 (rounding to nearest)."""

    name = "ptx.cvt"
    x = operand_def(RegType)
    result = result_def(RegType)

    def text(self, r):
        to_float = kind_of(self.result) == "f32" and kind_of(self.x) != "f32"  # integer to float rounds: .rn
        return f"cvt{'.rn' if to_float else ''}.{kind_of(self.result)}.{kind_of(self.x)} {r(self.result)}, {r(self.x)};"

    def execute(self, cta, x):
        return x.astype(KINDS[kind_of(self.result)])


@irdl_op_definition
class SetpOp(PtxOp):
    """setp.<cmp>.<kind> p, a, b."""

    name = "ptx.setp"
    lhs = operand_def(RegType)
    rhs = operand_def(RegType)
    result = result_def(RegType)
    cmp = prop_def(StringAttr)
    CMPS: ClassVar[dict] = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal}

    def verify_(self):
        if self.cmp.data not in self.CMPS or kind_of(self.result) != "pred":
            raise VerifyException(f"setp compares with one of {', '.join(self.CMPS)} into a pred")

    def text(self, r):
        return f"setp.{self.cmp.data}.{kind_of(self.lhs)} {r(self.result)}, {r(self.lhs)}, {r(self.rhs)};"

    def execute(self, cta, a, b):
        return self.CMPS[self.cmp.data](a, b)


@irdl_op_definition
class AndPredOp(PtxOp):
    """and.pred p, a, b."""

    name = "ptx.and_pred"
    lhs = operand_def(RegType)
    rhs = operand_def(RegType)
    result = result_def(RegType)

    def text(self, r):
        return f"and.pred {r(self.result)}, {r(self.lhs)}, {r(self.rhs)};"

    def execute(self, cta, a, b):
        return a & b


@irdl_op_definition
class SelpOp(PtxOp):
    """selp.<kind> dst, a, b, p: p ? a : b."""

    name = "ptx.selp"
    a = operand_def(RegType)
    b = operand_def(RegType)
    pred = operand_def(RegType)
    result = result_def(RegType)

    def text(self, r):
        return f"selp.{kind_of(self.result)} {r(self.result)}, {r(self.a)}, {r(self.b)}, {r(self.pred)};"

    def execute(self, cta, a, b, p):
        return np.where(p, a, b)
