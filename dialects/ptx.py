"""The `ptx` dialect: one op per PTX instruction, over typed virtual registers.

Values are `!ptx.reg<kind>` (kind: pred, b16, b32, u32, s32, f32, b64, u64). A kernel is a
`ptx.kernel` whose entry block arguments are its parameters; `ptx.for` is a uniform counted
loop with loop-carried registers (printed as a branch back, with moves for the carried values).
`backend.ptx_text` prints a module; each op's `execute` gives its meaning for all threads of a
thread block at once (numpy arrays over threads), which the lane simulator (ir.simulator) drives.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    SymbolNameConstraint,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.ir import Block, Dialect, ParametrizedAttribute, Region, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    irdl_attr_definition,
    ParsePropInAttrDict,
    irdl_op_definition,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
    operand_def,
    result_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.traits import IsTerminator, NoTerminator
from xdsl.utils.exceptions import VerifyException

from ir.dtypes import storage_dtype
from ir.errors import RungError
from ir.simulator import DeviceMemory, run_grid, run_ops

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

    def execute(self, cta):
        k = kind_of(self.result)
        v = self.value.value.data
        if k == "f32":
            return np.full(cta.threads, v & 0xFFFFFFFF, np.uint32).view(np.float32)
        return np.full(cta.threads, v, KINDS[k])


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
        while not isinstance(kernel, KernelOp):
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
        m = {"mul": "mul.lo" if k not in ("f32",) else "mul", "shl": "shl", "shr": "shr"}.get(self.MNEMONIC, self.MNEMONIC)
        if m in ("and", "or", "xor", "shl"):
            k = {"u32": "b32", "s32": "b32", "u64": "b64"}.get(k, k)
        elif m == "shr" and k.startswith("b"):
            k = "u" + k[1:]
        return f"{m}.{k} {r(self.result)}, {r(self.lhs)}, {r(self.rhs)};"

    def execute(self, cta, a, b):
        with np.errstate(over="ignore"):
            out = _BIN[self.MNEMONIC](a, b.astype(a.dtype) if self.MNEMONIC in ("shl", "shr") else b)
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


# --- memory -----------------------------------------------------------------------------------------------


def _guard(pred, r) -> str:
    return f"@{r(pred)} " if pred is not None else ""


@irdl_op_definition
class LoadOp(PtxOp):
    """[@p] ld.<space>[.v2/.v4].<kind> {dst...}, [addr + offset]: global (u64 address) or shared (u32).
    With `byte`, ld.<space>.u8 into a 32-bit register, zero-extended."""

    name = "ptx.ld"
    addr = operand_def(RegType)
    pred = opt_operand_def(RegType)
    results_ = var_result_def(RegType)
    space = prop_def(StringAttr)
    offset = opt_prop_def(IntegerAttr)
    byte = opt_prop_def(UnitAttr)

    def verify_(self):
        if self.byte and (len(self.results_) != 1 or kind_of(self.results_[0]) not in ("b32", "u32")):
            raise VerifyException("a byte load fills one 32-bit register")

    def text(self, r):
        k = "u8" if self.byte else kind_of(self.results_[0])
        vec = f".v{len(self.results_)}" if len(self.results_) > 1 else ""
        dst = ", ".join(r(v) for v in self.results_)
        dst = f"{{{dst}}}" if vec else dst
        off = self.offset.value.data if self.offset else 0
        return f"{_guard(self.pred, r)}ld.{self.space.data}{vec}.{k} {dst}, [{r(self.addr)}+{off}];"

    def execute(self, cta, addr, pred=None):
        k = kind_of(self.results_[0])
        off = self.offset.value.data if self.offset else 0
        if self.byte:
            data = cta.load(self.space.data, addr.astype(np.int64) + off, 1, pred)
            return data.reshape(-1).astype(np.uint32)
        width = np.dtype(KINDS[k]).itemsize
        data = cta.load(self.space.data, addr.astype(np.int64) + off, width * len(self.results_), pred)
        vals = data.view(KINDS[k]).reshape(cta.threads, len(self.results_))
        return tuple(vals[:, i].copy() for i in range(len(self.results_)))


@irdl_op_definition
class StoreOp(SinkOp):
    """[@p] st.<space>[.v2/.v4].<kind> [addr + offset], {values...}."""

    name = "ptx.st"
    addr = operand_def(RegType)
    values = var_operand_def(RegType)
    space = prop_def(StringAttr)
    offset = opt_prop_def(IntegerAttr)
    guarded = opt_prop_def(UnitAttr)

    def _split(self):
        vals = list(self.values)
        pred = vals.pop() if self.guarded else None
        return vals, pred

    def text(self, r):
        vals, pred = self._split()
        k = kind_of(vals[0])
        vec = f".v{len(vals)}" if len(vals) > 1 else ""
        src = ", ".join(r(v) for v in vals)
        src = f"{{{src}}}" if vec else src
        off = self.offset.value.data if self.offset else 0
        return f"{_guard(pred, r)}st.{self.space.data}{vec}.{k} [{r(self.addr)}+{off}], {src};"

    def execute(self, cta, addr, *values):
        pred = values[-1] if self.guarded else None
        vals = values[:-1] if self.guarded else values
        data = np.stack([np.ascontiguousarray(v) for v in vals], axis=1)
        off = self.offset.value.data if self.offset else 0
        cta.store(self.space.data, addr.astype(np.int64) + off, data.view(np.uint8).reshape(cta.threads, -1), pred)
        return ()


@irdl_op_definition
class CpAsyncOp(SinkOp):
    """[@p] cp.async.{cg,ca}.shared.global [dst], [src], size, src_size: copies src_size of `size`
    (4, 8 or 16) bytes asynchronously and zero-fills the rest (16 bytes bypass L1: .cg); a thread
    whose guard `p` is off issues nothing."""

    name = "ptx.cp_async"
    dst = operand_def(RegType)
    src = operand_def(RegType)
    src_size = operand_def(RegType)
    pred = opt_operand_def(RegType)
    size = prop_def(IntegerAttr)

    def verify_(self):
        if self.size.value.data not in (4, 8, 16):
            raise VerifyException(f"cp.async copies 4, 8 or 16 bytes, not {self.size.value.data}")

    def text(self, r):
        n = self.size.value.data
        return (f"{_guard(self.pred, r)}cp.async.{'cg' if n == 16 else 'ca'}.shared.global [{r(self.dst)}], [{r(self.src)}], "
                f"{n}, {r(self.src_size)};")

    def execute(self, cta, dst, src, size, pred=None):
        cp_async_lanes(cta, dst, src, size, self.size.value.data, pred)
        return ()


def cp_async_lanes(cta, dst: np.ndarray, src: np.ndarray, src_size: np.ndarray, nbytes: int, pred=None) -> None:
    """cp.async for every thread whose guard is on: src_size bytes of `nbytes` copied, the rest zero-filled."""
    data = cta.load("global", src.astype(np.int64), nbytes, pred, valid_bytes=src_size)
    cta.store("shared", dst.astype(np.int64), data, pred, asynchronous=True)


@irdl_op_definition
class CpAsyncCommitOp(MarkerOp):
    """cp.async.commit_group: the copies issued since the last commit form a group."""

    name = "ptx.cp_async_commit"

    def text(self, r):
        return "cp.async.commit_group;"

    def execute(self, cta):
        cta.shared.commit()
        return ()


@irdl_op_definition
class CpAsyncWaitOp(MarkerOp):
    """cp.async.wait_group n: wait until at most the n newest committed groups are in flight."""

    name = "ptx.cp_async_wait"
    pending = prop_def(IntegerAttr)

    def text(self, r):
        return f"cp.async.wait_group {self.pending.value.data};"

    def execute(self, cta):
        cta.shared.wait(self.pending.value.data)
        return ()


@irdl_op_definition
class BarSyncOp(MarkerOp):
    """bar.sync 0: every thread of the block arrives before any goes on."""

    name = "ptx.bar_sync"

    def text(self, r):
        return "bar.sync 0;"

    def execute(self, cta):
        cta.shared.barrier()
        return ()


@irdl_op_definition
class GridDepLaunchOp(MarkerOp):
    """griddepcontrol.launch_dependents (sm_90): the kernel launched after this grid with
    programmatic stream serialization may start now; it waits in griddepcontrol.wait."""

    name = "ptx.griddep_launch"

    def text(self, r):
        return "griddepcontrol.launch_dependents;"

    def execute(self, cta):
        return ()  # the interpreter runs kernels one after another


@irdl_op_definition
class GridDepWaitOp(MarkerOp):
    """griddepcontrol.wait (sm_90): wait until the grids this one depends on (the kernel before
    it in the stream, when launched programmatically) have completed and their writes are visible."""

    name = "ptx.griddep_wait"

    def text(self, r):
        return "griddepcontrol.wait;"

    def execute(self, cta):
        return ()


# --- tensor cores -------------------------------------------------------------------------------------------


@irdl_op_definition
class LdmatrixOp(PtxOp):
    """ldmatrix.sync.aligned.m8n8.x<n>[.trans].shared.b16: lanes 8i..8i+7 give the row addresses of
    matrix i; lane l receives, of each matrix, row l/4's halves 2(l%4) and 2(l%4)+1 (columns if trans)."""

    name = "ptx.ldmatrix"
    addr = operand_def(RegType)
    results_ = var_result_def(RegType)
    trans = opt_prop_def(UnitAttr)

    def verify_(self):
        if len(self.results_) not in (1, 2, 4):
            raise VerifyException("ldmatrix loads 1, 2 or 4 matrices")

    def text(self, r):
        n = len(self.results_)
        t = ".trans" if self.trans else ""
        return f"ldmatrix.sync.aligned.m8n8.x{n}{t}.shared.b16 {{{', '.join(r(v) for v in self.results_)}}}, [{r(self.addr)}];"

    def execute(self, cta, addr):
        return ldmatrix_lanes(cta, addr, len(self.results_), bool(self.trans))


def ldmatrix_lanes(cta, addr: np.ndarray, count: int, trans: bool) -> tuple[np.ndarray, ...]:
    """ldmatrix for every warp of the block: `count` b32 registers per lane."""
    warps = addr.astype(np.int64).reshape(-1, 32)
    out = []
    lane = np.arange(32)
    for i in range(count):
        rows = warps[:, 8 * i: 8 * i + 8]  # [warps, 8] row addresses
        readers = cta.tids.reshape(-1, 32)[:, 8 * i: 8 * i + 8]  # the lanes that give the row addresses
        idx = rows[..., None] + np.arange(16)
        mats = cta.shared.read(idx, np.broadcast_to(readers[..., None], idx.shape)).view(np.uint16).reshape(-1, 8, 8)
        if trans:
            mats = mats.transpose(0, 2, 1)
        pairs = mats[:, lane // 4, :].reshape(-1, 32, 8)
        lo = pairs[:, np.arange(32), 2 * (lane % 4)]
        hi = pairs[:, np.arange(32), 2 * (lane % 4) + 1]
        out.append((lo.astype(np.uint32) | (hi.astype(np.uint32) << 16)).reshape(-1))
    return tuple(out)


EIGHT_BIT = {"s8": np.int8, "e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2"}  # 8-bit mma input types, by numpy (or ml_dtypes) type


@irdl_op_definition
class MmaOp(PtxOp):
    """mma.sync.aligned.<shape>.row.col.<acc>.<t>.<t>.<acc> {d}, {a}, {b}, {c}: t = f16 or bf16
    (two per b32 register, the lower index in the low half) with shape m16n8k16 or m16n8k8 and
    acc = f32 (one per register) or f16 (two per register; f16 inputs only); or t = s8 (acc
    s32) or e4m3/e5m2 (acc f32, sm_89 and later) with shape m16n8k32, four per register, the
    lowest index in the lowest byte. Fragments: ir.layout."""

    name = "ptx.mma"
    a = var_operand_def(RegType)
    results_ = var_result_def(RegType)
    dtype = prop_def(StringAttr)
    shape = opt_prop_def(StringAttr)
    acc = opt_prop_def(StringAttr)

    def _shape(self) -> str:
        return self.shape.data if self.shape else "m16n8k16"

    def _acc(self) -> str:
        return self.acc.data if self.acc else "f32"

    def _counts(self) -> tuple[int, int, int]:
        """Registers of A, B and C/D."""
        k8 = self._shape() == "m16n8k8"
        return (2 if k8 else 4), (1 if k8 else 2), (2 if self._acc() == "f16" else 4)

    def verify_(self):
        t, shape, acc = self.dtype.data, self._shape(), self._acc()
        if t in EIGHT_BIT:
            if shape != "m16n8k32" or acc != ("s32" if t == "s8" else "f32"):
                raise VerifyException("8-bit mma is m16n8k32 with s32 accumulators for s8 and f32 for e4m3/e5m2")
        elif shape not in ("m16n8k16", "m16n8k8") or acc not in ("f32", "f16") or t not in ("f16", "bf16"):
            raise VerifyException("mma takes shape m16n8k16 or m16n8k8, f16 or bf16 inputs, f32 or f16 accumulators")
        if acc == "f16" and t != "f16":
            raise VerifyException("f16 accumulators need f16 inputs")
        na, nb, nc = self._counts()
        if len(self.a) != na + nb + nc or len(self.results_) != nc:
            raise VerifyException(f"{shape} with {acc} accumulators takes {na} A, {nb} B and {nc} C registers and gives {nc}")

    def text(self, r):
        regs = [r(v) for v in self.a]
        na, nb, _ = self._counts()
        t, acc = self.dtype.data, self._acc()
        return (f"mma.sync.aligned.{self._shape()}.row.col.{acc}.{t}.{t}.{acc} {{{', '.join(r(v) for v in self.results_)}}}, "
                f"{{{', '.join(regs[:na])}}}, {{{', '.join(regs[na:na + nb])}}}, {{{', '.join(regs[na + nb:])}}};")

    def execute(self, cta, *regs):
        from ir.layout import MMA_SHAPES

        def values(words, dtype):
            """[warps, 32, values] of the registers' packed elements, in order."""
            v = packed_values(words, dtype)
            return v.reshape(-1, 32, v.shape[1])

        na, nb, nc = self._counts()
        a, b = values(regs[:na], self.dtype.data), values(regs[na:na + nb], self.dtype.data)
        acc = self._acc()
        if acc == "f16":
            c = values(regs[na + nb:], "f16")
        else:
            c = np.stack(regs[na + nb:], axis=1).reshape(-1, 32, 4).astype(np.float64)
        mma = MMA_SHAPES[self._shape()]
        d = np.stack([mma(a[w], b[w], c[w]) for w in range(a.shape[0])]).reshape(-1, 4)
        if acc == "f16":  # round each element to f16 and pack pairs, the lower index in the low half
            bits = d.astype(np.float16).view(np.uint16).astype(np.uint32)
            return bits[:, 0] | (bits[:, 1] << 16), bits[:, 2] | (bits[:, 3] << 16)
        d = d.astype(np.int64).astype(np.int32) if acc == "s32" else d.astype(np.float32)  # s32: exact, wrapping as the GPU does
        return tuple(d[:, i].copy() for i in range(4))


# --- warpgroup mma (sm_90a) --------------------------------------------------------------------------------

SWIZZLE_128B = 1  # a wgmma descriptor's swizzle mode for tiles of 128-byte rows, 16-byte chunks XOR-ed with row % 8


def smem_descriptor(addr, stride_bytes: int):
    """The wgmma matrix descriptor of a K-major operand at shared address `addr` with the 128-byte
    swizzle: 8-row groups `stride_bytes` apart (the leading offset is unused in this mode)."""
    return ((addr & 0x3FFFF) >> 4) | (1 << 16) | ((stride_bytes >> 4) << 32) | (SWIZZLE_128B << 62)


def wgmma_operand(cta, desc: int, rows: int, dtype: str) -> np.ndarray:
    """The rows x 32 bytes (16 halves or 32 8-bit values a row) a descriptor names (K-major,
    128-byte swizzle), read through the async proxy, as float64 values."""
    start, stride, mode = (desc & 0x3FFF) << 4, ((desc >> 32) & 0x3FFF) << 4, desc >> 62
    if mode != SWIZZLE_128B:
        raise RungError(f"wgmma operands are K-major with the 128-byte swizzle (descriptor mode 1), not mode {mode}")
    if (start >> 7) & 7:
        raise RungError(f"a wgmma operand at shared offset {start}: its 8-row swizzle pattern must start on 1024 bytes")
    r, k = np.arange(rows)[:, None], np.arange(16)[None, :]
    logical = start + (r // 8) * stride + (r % 8) * 128 + 2 * k
    physical = logical ^ (((logical >> 7) & 7) << 4)  # the swizzle acts on the address's bits
    data = np.ascontiguousarray(cta.shared.read_async(physical[..., None] + np.arange(2))).reshape(rows, 32)
    return eight_bit_values(data, dtype) if dtype in EIGHT_BIT else unpack_halves(data.view(np.uint16), dtype)


def packed_values(words, dtype: str) -> np.ndarray:
    """[threads, values]: the elements of dtype packed in each thread's b32 registers `words`, in
    order (the lower half or byte first)."""
    w = np.stack(words, axis=1).astype(np.uint32)
    if dtype in EIGHT_BIT:
        return eight_bit_values(np.ascontiguousarray(w).astype("<u4").view(np.uint8), dtype).reshape(w.shape[0], -1)
    return unpack_halves(np.stack([w & 0xFFFF, w >> 16], axis=-1).astype(np.uint16), dtype).reshape(w.shape[0], -1)


def eight_bit_values(data: np.ndarray, dtype: str) -> np.ndarray:
    """Bytes as the float64 values of 8-bit type `dtype` (EIGHT_BIT)."""
    import ml_dtypes

    t = EIGHT_BIT[dtype]
    return data.view(getattr(ml_dtypes, t) if isinstance(t, str) else t).astype(np.float64)


@irdl_op_definition
class WgmmaOp(PtxOp):
    """wgmma.mma_async.sync.aligned.m64n<n>k<k>.<acc>.<t>.<t> {d}, a, b-desc, scale-d[, ...]: a
    warpgroup's D (64 x n, ir.layout.wgmma_accumulators) = A B^T + (scale-d ? D : 0) with B (n x k)
    K-major in shared memory (`smem_descriptor`) and A (64 x k) either K-major in shared memory too
    (one descriptor) or in registers (four b32 per thread, 16-bit types only: ir.layout.wgmma_a).
    t = f16 or bf16 (k 16, f32 D), e4m3 (k 32, f32 D) or s8 (k 32, s32 D). Asynchronous: its
    shared reads, and the registers of A, last until wgmma.wait_group retires its group, and D,
    updated in place (its accumulator operands and results share registers), is read only after that."""

    name = "ptx.wgmma"
    a = var_operand_def(RegType)
    desc_b = operand_def(RegType)
    scale_d = operand_def(RegType)
    acc = var_operand_def(RegType)
    results_ = var_result_def(RegType)
    dtype = prop_def(StringAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = ("`(` $a `)` `,` $desc_b `,` $scale_d `,` `(` $acc `)` attr-dict `:` `(` type($a) `)` `,` type($desc_b) `,` "
                       "type($scale_d) `,` `(` type($acc) `)` `->` type($results_)")

    def verify_(self):
        n = 2 * len(self.acc)
        if n % 8 or not 8 <= n <= 256 or len(self.results_) != len(self.acc):
            raise VerifyException(f"wgmma m64nNk16 takes N/2 f32 accumulators for N a multiple of 8 up to 256, got {len(self.acc)}")
        if self.dtype.data not in ("f16", "bf16", "e4m3", "s8") or kind_of(self.scale_d) != "pred":
            raise VerifyException("wgmma takes f16, bf16, e4m3 or s8 operands and a predicate scale-d")
        if [kind_of(v) for v in self.a] not in (["u64"], ["b32"] * 4) or (len(self.a) == 4 and self.dtype.data in EIGHT_BIT):
            raise VerifyException("wgmma's A is a u64 descriptor, or (f16, bf16) four b32 registers")
        if any(kind_of(v) != self._acc() for v in [*self.acc, *self.results_]):
            raise VerifyException(f"{self.dtype.data} wgmma accumulates in {self._acc()}")
        if any(not v.has_one_use() for v in self.acc):
            raise VerifyException("a wgmma's accumulators are updated in place: they can have no other use")

    def tied(self):
        return list(zip(self.results_, self.acc))

    @property
    def a_in_registers(self) -> bool:
        return len(self.a) == 4

    def _acc(self) -> str:
        return "s32" if self.dtype.data == "s8" else "f32"

    def text(self, r):
        t, n = self.dtype.data, 2 * len(self.acc)
        k = 32 if t in EIGHT_BIT else 16
        # immediates: A and B unnegated (not for integers), and K-major (16-bit types only; no A layout for registers)
        imms = {"s8": "", "e4m3": ", 1, 1"}.get(t, ", 1, 1, 0" if self.a_in_registers else ", 1, 1, 0, 0")
        a = f"{{{', '.join(r(v) for v in self.a)}}}" if self.a_in_registers else r(self.a[0])
        return (f"wgmma.mma_async.sync.aligned.m64n{n}k{k}.{self._acc()}.{t}.{t} {{{', '.join(r(v) for v in self.acc)}}}, "
                f"{a}, {r(self.desc_b)}, {r(self.scale_d)}{imms};")

    def execute(self, cta, *args):
        from ir.layout import wgmma_a, wgmma_accumulators

        if cta.threads % 128:
            raise RungError(f"wgmma runs on warpgroups of 128 threads; the block has {cta.threads}")
        na = len(self.a)
        a_regs, desc_b, scale_d, acc = args[:na], args[na], args[na + 1], args[na + 2:]
        n = 2 * len(acc)
        coords = wgmma_accumulators(n).coords
        acc = np.stack(acc, axis=1).astype(np.float64)
        if self.a_in_registers:
            cta.read_registers_async(self.a)
            a_values = packed_values(a_regs, self.dtype.data)
        out = np.empty_like(acc)
        for g in range(cta.threads // 128):
            group = slice(128 * g, 128 * g + 128)
            uniform = [desc_b[group], scale_d[group]] + ([] if self.a_in_registers else [a_regs[0][group]])
            if any((v != v[0]).any() for v in uniform):
                raise RungError(f"warpgroup {g}'s threads give a wgmma different descriptors or scale-d")
            if self.a_in_registers:
                a = np.zeros((64, 16))
                a[wgmma_a().coords] = a_values[group]
            else:
                a = wgmma_operand(cta, int(a_regs[0][group][0]), 64, self.dtype.data)
            b = wgmma_operand(cta, int(desc_b[group][0]), n, self.dtype.data)
            c = np.zeros((64, n))
            if scale_d[group][0]:
                c[coords] = acc[group]
            out[group] = (a @ b.T + c)[coords]
        out = out.astype(np.int64).astype(np.int32) if self._acc() == "s32" else out.astype(np.float32)  # s32: wraps as the GPU does
        return tuple(out[:, i].copy() for i in range(out.shape[1]))


@irdl_op_definition
class WgmmaFenceOp(MarkerOp):
    """wgmma.fence.sync.aligned: registers written before it (the accumulators) are ready for the wgmmas after it."""

    name = "ptx.wgmma_fence"

    def text(self, r):
        return "wgmma.fence.sync.aligned;"

    def execute(self, cta):
        return ()


@irdl_op_definition
class WgmmaCommitOp(MarkerOp):
    """wgmma.commit_group.sync.aligned: the wgmmas issued since the last commit form a group."""

    name = "ptx.wgmma_commit"

    def text(self, r):
        return "wgmma.commit_group.sync.aligned;"

    def execute(self, cta):
        cta.commit_wgmma()
        return ()


@irdl_op_definition
class WgmmaWaitOp(PtxOp):
    """wgmma.wait_group.sync.aligned n: wait until at most the n newest groups are in flight. Its
    operands are accumulators that are safe to read after it: its results, in the same registers."""

    name = "ptx.wgmma_wait"
    values = var_operand_def(RegType)
    results_ = var_result_def(RegType)
    pending = prop_def(IntegerAttr)

    def verify_(self):
        if [v.type for v in self.values] != [v.type for v in self.results_]:
            raise VerifyException("ptx.wgmma_wait gives back its operands")

    def tied(self):
        return list(zip(self.results_, self.values))

    def text(self, r):
        return f"wgmma.wait_group.sync.aligned {self.pending.value.data};"

    def execute(self, cta, *values):
        cta.retire_wgmma(self.pending.value.data)
        return tuple(values)


@irdl_op_definition
class FenceProxyAsyncOp(MarkerOp):
    """fence.proxy.async.shared::cta: this thread's shared-memory writes become visible to the async proxy (wgmma)."""

    name = "ptx.fence_proxy_async"

    def text(self, r):
        return "fence.proxy.async.shared::cta;"

    def execute(self, cta):
        cta.shared.fence_async()
        return ()


def unpack_halves(bits: np.ndarray, dtype: str) -> np.ndarray:
    import ml_dtypes

    return bits.view(np.float16 if dtype == "f16" else ml_dtypes.bfloat16).astype(np.float64)


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


# --- structure ----------------------------------------------------------------------------------------------


@irdl_op_definition
class YieldOp(SinkOp):
    """The values a ptx.for iteration carries to the next."""

    name = "ptx.yield"
    values = var_operand_def(RegType)
    traits = traits_def(IsTerminator())


@irdl_op_definition
class ForOp(PtxOp):
    """for (iv = lb; iv < ub; iv += step) with loop-carried registers; lb, ub, step are u32 and uniform."""

    name = "ptx.for"
    assembly_format = None  # a region: the generic form
    lb = operand_def(RegType)
    ub = operand_def(RegType)
    step = operand_def(RegType)
    inits = var_operand_def(RegType)
    results_ = var_result_def(RegType)
    body = region_def("single_block")

    @staticmethod
    def get(lb, ub, step, inits) -> "ForOp":
        block = Block(arg_types=[reg("u32")] + [v.type for v in inits])
        return ForOp.create(operands=[lb, ub, step, *inits], result_types=[v.type for v in inits], regions=[Region(block)])

    def verify_(self):
        term = self.body.block.last_op
        if not isinstance(term, YieldOp) or [v.type for v in term.values] != [v.type for v in self.inits]:
            raise VerifyException("ptx.for must end in a ptx.yield of its carried types")

    def simulate(self, cta, env: dict) -> None:
        lb, ub, step, *values = (env[v] for v in self.operands)
        if any((a != a[0]).any() for a in (lb, ub, step)):
            raise RungError("ptx.for bounds differ between threads (the loop must be uniform)")
        iv, *carried = self.body.block.args
        for i in range(int(lb[0]), int(ub[0]), int(step[0])):
            env[iv] = np.full(cta.threads, i, np.uint32)
            cta.check_writes(carried)
            env.update(zip(carried, values))
            run_ops(self.body.block, env, cta)
            values = [env[v] for v in self.body.block.last_op.values]
        env.update(zip(self.results, values))


STATIC_SHARED_LIMIT = 48 * 1024  # above this a kernel's shared memory is dynamic, opted into at launch


def dynamic_shared(shared_bytes: int) -> int:
    """Bytes of dynamic shared memory to request at launch for a kernel needing `shared_bytes` (0: static)."""
    return shared_bytes if shared_bytes > STATIC_SHARED_LIMIT else 0


@irdl_op_definition
class KernelOp(IRDLOperation):
    """A kernel entry: parameters are the entry block's arguments (u64 pointers or 32-bit values);
    `shared_bytes` of shared memory, static up to 48 KiB and dynamic above."""

    name = "ptx.kernel"
    sym_name = prop_def(SymbolNameConstraint())
    threads = prop_def(IntegerAttr)
    shared_bytes = prop_def(IntegerAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    @property
    def dynamic_shared_bytes(self) -> int:
        """Bytes to request at launch (0 when the shared memory is static)."""
        return dynamic_shared(self.shared_bytes.value.data)

    @staticmethod
    def get(name: str, param_kinds: list[str], threads: int, shared_bytes: int = 0) -> "KernelOp":
        return KernelOp.create(
            properties={"sym_name": StringAttr(name), "threads": IntegerAttr(threads, i64), "shared_bytes": IntegerAttr(shared_bytes, i64)},
            regions=[Region(Block(arg_types=[reg(k) for k in param_kinds]))])


@irdl_op_definition
class LaunchOp(IRDLOperation):
    """A kernel launch on tensors: the kernel's pointer parameters are the operands then the
    result; its 32-bit parameters are `dims`; `grid` thread blocks of the kernel's threads."""

    name = "ptx.launch"
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    kernel = prop_def(SymbolRefAttr)
    grid = prop_def(DenseArrayBase)
    dims = prop_def(DenseArrayBase)
    assembly_format = "$kernel `(` $inputs `)` attr-dict `:` functional-type($inputs, results)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(kernel: str, inputs, result_type, grid, dims) -> "LaunchOp":
        return LaunchOp.create(operands=list(inputs), result_types=[result_type], properties={
            "kernel": SymbolRefAttr(kernel), "grid": DenseArrayBase.from_list(i64, list(grid)),
            "dims": DenseArrayBase.from_list(i64, list(dims))})

    def kernel_op(self) -> "KernelOp":
        module = self.parent_op()
        while module is not None and not isinstance(module, ModuleOp):
            module = module.parent_op()
        name = self.kernel.root_reference.data
        for op in module.ops if module is not None else ():
            if isinstance(op, KernelOp) and op.sym_name.data == name:
                return op
        raise VerifyException(f"no ptx.kernel @{name} in the module")

    def verify_(self):
        kernel = self.kernel_op()
        kinds = [kind_of(a) for a in kernel.body.block.args]
        want = ["u64"] * (len(self.inputs) + 1) + ["u32"] * len(self.dims.get_values())
        if kinds != want:
            raise VerifyException(f"@{kernel.sym_name.data} takes parameters {kinds}, the launch gives {want}")

    def execute(self, *inputs):
        mem = DeviceMemory()
        ptrs = [mem.alloc(np.asarray(v).astype(storage_dtype(o.type.element_type))) for v, o in zip(inputs, self.inputs)]
        out_type = self.result.type
        out = np.full(out_type.get_shape(), np.nan, storage_dtype(out_type.element_type))  # poisoned
        ptrs.append(mem.alloc(out))
        run_kernel(self.kernel_op(), tuple(self.grid.get_values()), ptrs + list(self.dims.get_values()), mem)
        return mem.read(ptrs[-1], out)


def run_kernel(kernel: KernelOp, grid: tuple[int, ...], params: list, memory: DeviceMemory) -> None:
    """Simulate a ptx.kernel over `grid` thread blocks; `params` are ints (addresses from `memory`)."""
    args = kernel.body.block.args
    if len(params) != len(args):
        raise RungError(f"kernel @{kernel.sym_name.data} takes {len(args)} parameters, got {len(params)}")
    typed = {a: KINDS[kind_of(a)](p) for a, p in zip(args, params)}
    run_grid(kernel.body.block, kernel.threads.value.data, kernel.shared_bytes.value.data, grid, typed, memory)


PTX = Dialect("ptx", [
    ImmOp, SpecialRegOp, SharedBaseOp, AddOp, SubOp, MulOp, AndOp, OrOp, XorOp, ShlOp, ShrOp, MinOp, MaxOp, DivOp, RemOp, MadOp,
    CvtOp, SetpOp, AndPredOp, SelpOp, LoadOp, StoreOp, CpAsyncOp, CpAsyncCommitOp, CpAsyncWaitOp, BarSyncOp, GridDepLaunchOp,
    GridDepWaitOp, LdmatrixOp, MmaOp,
    CvtPackOp, CvtHalfOp, CvtWidenOp, Ex2Op, RcpOp, Lop3Op, PrmtOp, PackHalvesOp, UnpackHalvesOp, Fma2Op, YieldOp, ForOp, KernelOp, LaunchOp,
    WgmmaOp, WgmmaFenceOp, WgmmaCommitOp, WgmmaWaitOp, FenceProxyAsyncOp,
], [RegType])
