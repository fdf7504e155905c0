"""Conversions between f32 and 16-bit floats, approximate math, and the bit operations decoders use (lop3, prmt, fma on pairs)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    IntegerAttr,
    StringAttr,
)
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
)

from xdsl.utils.exceptions import VerifyException

from dialects.ptx.base import PtxOp, RegType, unpack_halves


@irdl_op_definition
class CvtPackOp(PtxOp):
    """cvt.rn.<t>x2.f32 d, hi, lo: two f32 rounded to f16 or bf16, `lo` in the low half."""

    name = "ptx.cvt_pack"
    hi = operand_def(RegType)
    lo = operand_def(RegType)
    result = result_def(RegType)
    dtype = prop_def(StringAttr)

    def text(self, r):
        return f"cvt.rn.{self.dtype.data}x2.f32 {r(self.result)}, {r(self.hi)}, {r(self.lo)};"

    def execute(self, cta, hi, lo):
        import ml_dtypes

        t = np.float16 if self.dtype.data == "f16" else ml_dtypes.bfloat16
        return lo.astype(t).view(np.uint16).astype(np.uint32) | (hi.astype(t).view(np.uint16).astype(np.uint32) << 16)


@irdl_op_definition
class CvtHalfOp(PtxOp):
    """cvt.rn.<t>.f32 d, x: one f32 rounded to f16 or bf16 (in a b16 register)."""

    name = "ptx.cvt_half"
    x = operand_def(RegType)
    result = result_def(RegType)
    dtype = prop_def(StringAttr)

    def text(self, r):
        return f"cvt.rn.{self.dtype.data}.f32 {r(self.result)}, {r(self.x)};"

    def execute(self, cta, x):
        import ml_dtypes

        x = x if x.dtype == np.float32 else x.astype(np.uint32).view(np.float32)  # a b32 register holds f32 bits
        return x.astype(np.float16 if self.dtype.data == "f16" else ml_dtypes.bfloat16).view(np.uint16)


@irdl_op_definition
class CvtEightBitOp(PtxOp):
    """One f32 rounded to nearest even and saturated to an 8-bit type, in the low byte of a b16 register:
    cvt.rni.sat.s8.f32 (s8: [-128, 127]) or cvt.rn.satfinite.e4m3x2.f32 with a zero high half (e4m3: +-448)."""

    name = "ptx.cvt_eight_bit"
    x = operand_def(RegType)
    result = result_def(RegType)
    dtype = prop_def(StringAttr)

    def verify_(self):
        if self.dtype.data not in ("s8", "e4m3"):
            raise VerifyException(f"8-bit conversions make s8 or e4m3, not {self.dtype.data}")

    def text(self, r):
        if self.dtype.data == "s8":
            return f"cvt.rni.sat.s8.f32 {r(self.result)}, {r(self.x)};"
        return f"cvt.rn.satfinite.e4m3x2.f32 {r(self.result)}, 0f00000000, {r(self.x)};"

    def execute(self, cta, x):
        import ml_dtypes

        x = x.astype(np.float32)
        if self.dtype.data == "s8":
            return np.clip(np.nan_to_num(np.rint(x)), -128, 127).astype(np.int8).view(np.uint8).astype(np.uint16)
        return np.clip(x, -448, 448).astype(ml_dtypes.float8_e4m3fn).view(np.uint8).astype(np.uint16)


@irdl_op_definition
class CvtWidenOp(PtxOp):
    """cvt.f32.<t> d, h: an f16 or bf16 (in a b16 register) widened to f32, exactly."""

    name = "ptx.cvt_widen"
    x = operand_def(RegType)
    result = result_def(RegType)
    dtype = prop_def(StringAttr)

    def text(self, r):
        return f"cvt.f32.{self.dtype.data} {r(self.result)}, {r(self.x)};"

    def execute(self, cta, x):
        return unpack_halves(x.astype(np.uint16), self.dtype.data).astype(np.float32)


class ApproxOp(PtxOp):
    """<fn>.approx.ftz.f32 d, x: the special-function unit's approximation."""

    x = operand_def(RegType)
    result = result_def(RegType)
    FN: ClassVar[str] = ""

    def text(self, r):
        return f"{self.FN}.approx.ftz.f32 {r(self.result)}, {r(self.x)};"


@irdl_op_definition
class Ex2Op(ApproxOp):
    """ex2.approx.ftz.f32 d, x: 2^x (max relative error 2^-22 on the GPU)."""

    name = "ptx.ex2"
    FN: ClassVar[str] = "ex2"

    def execute(self, cta, x):
        return np.exp2(x).astype(np.float32)


@irdl_op_definition
class RcpOp(ApproxOp):
    """rcp.approx.ftz.f32 d, x: 1 / x (max relative error 2^-23 on the GPU)."""

    name = "ptx.rcp"
    FN: ClassVar[str] = "rcp"

    def execute(self, cta, x):
        return (np.float32(1) / x).astype(np.float32)


@irdl_op_definition
class RsqrtOp(ApproxOp):
    """rsqrt.approx.ftz.f32 d, x: 1 / sqrt(x) (max relative error 2^-22.9 on the GPU)."""

    name = "ptx.rsqrt"
    FN: ClassVar[str] = "rsqrt"

    def execute(self, cta, x):
        with np.errstate(all="ignore"):
            return (np.float32(1) / np.sqrt(x)).astype(np.float32)


@irdl_op_definition
class Lop3Op(PtxOp):
    """lop3.b32 d, a, b, c, lut: any 3-input bitwise function, `lut` its truth table
    (bit (a<<2 | b<<1 | c) of lut is the output for those input bits; e.g. (a & b) | c is 0xEA)."""

    name = "ptx.lop3"
    a = operand_def(RegType)
    b = operand_def(RegType)
    c = operand_def(RegType)
    result = result_def(RegType)
    lut = prop_def(IntegerAttr)

    def text(self, r):
        return f"lop3.b32 {r(self.result)}, {r(self.a)}, {r(self.b)}, {r(self.c)}, {self.lut.value.data:#04x};"

    def execute(self, cta, a, b, c):
        a, b, c = (np.asarray(v).astype(np.uint32) for v in (a, b, c))
        out = np.zeros_like(a)
        for minterm in range(8):
            if self.lut.value.data >> minterm & 1:
                ta = a if minterm & 4 else ~a
                tb = b if minterm & 2 else ~b
                tc = c if minterm & 1 else ~c
                out |= ta & tb & tc
        return out


@irdl_op_definition
class PrmtOp(PtxOp):
    """prmt.b32 d, a, b, c: byte i of d is byte (c >> 4i) & 7 of the 8 bytes {b, a} (a's are 0-3),
    or, when bit 3 of that selector is set, that byte's sign bit replicated."""

    name = "ptx.prmt"
    a = operand_def(RegType)
    b = operand_def(RegType)
    c = operand_def(RegType)
    result = result_def(RegType)

    def text(self, r):
        return f"prmt.b32 {r(self.result)}, {r(self.a)}, {r(self.b)}, {r(self.c)};"

    def execute(self, cta, a, b, c):
        src = ((np.asarray(b).astype(np.uint64) << 32) | np.asarray(a).astype(np.uint64)).astype("<u8")
        src_bytes = src.view(np.uint8).reshape(-1, 8)
        c = np.asarray(c).astype(np.uint32)
        out = np.zeros(src_bytes.shape[0], np.uint32)
        rows = np.arange(src_bytes.shape[0])
        for i in range(4):
            sel = (c >> (4 * i)) & 0xF
            byte = src_bytes[rows, sel & 7].astype(np.uint32)
            byte = np.where(sel & 8, np.where(byte & 0x80, 0xFF, 0), byte)
            out |= byte.astype(np.uint32) << (8 * i)
        return out


@irdl_op_definition
class PackHalvesOp(PtxOp):
    """mov.b32 d, {lo, hi}: two 16-bit registers as one 32-bit register, `lo` in the low half."""

    name = "ptx.pack_halves"
    lo = operand_def(RegType)
    hi = operand_def(RegType)
    result = result_def(RegType)

    def text(self, r):
        return f"mov.b32 {r(self.result)}, {{{r(self.lo)}, {r(self.hi)}}};"

    def execute(self, cta, lo, hi):
        return np.asarray(lo).astype(np.uint32) | (np.asarray(hi).astype(np.uint32) << 16)


@irdl_op_definition
class UnpackHalvesOp(PtxOp):
    """mov.b32 {lo, hi}, x: a 32-bit register's halves as two 16-bit registers."""

    name = "ptx.unpack_halves"
    x = operand_def(RegType)
    lo = result_def(RegType)
    hi = result_def(RegType)

    def text(self, r):
        return f"mov.b32 {{{r(self.lo)}, {r(self.hi)}}}, {r(self.x)};"

    def execute(self, cta, x):
        x = np.asarray(x).astype(np.uint32)
        return (x & 0xFFFF).astype(np.uint16), (x >> 16).astype(np.uint16)


@irdl_op_definition
class Fma2Op(PtxOp):
    """fma.rn.<t>x2 d, a, b, c: per 16-bit half, a * b + c rounded once to f16 or bf16."""

    name = "ptx.fma2"
    a = operand_def(RegType)
    b = operand_def(RegType)
    c = operand_def(RegType)
    result = result_def(RegType)
    dtype = prop_def(StringAttr)

    def text(self, r):
        return f"fma.rn.{self.dtype.data}x2 {r(self.result)}, {r(self.a)}, {r(self.b)}, {r(self.c)};"

    def execute(self, cta, a, b, c):
        import ml_dtypes

        def halves(w):
            w = np.asarray(w).astype(np.uint32)
            return unpack_halves(np.stack([w & 0xFFFF, w >> 16], -1).astype(np.uint16), self.dtype.data)

        # float64 holds every f16 product-plus-sum exactly, so one rounding happens (bf16: exact for the
        # magnitudes decoding and scaling meet, where the exponents differ by less than 29)
        exact = halves(a) * halves(b) + halves(c)
        t = np.float16 if self.dtype.data == "f16" else ml_dtypes.bfloat16
        bits = exact.astype(t).view(np.uint16).astype(np.uint32)
        return bits[..., 0] | (bits[..., 1] << 16)
