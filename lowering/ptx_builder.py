"""A small builder that appends ptx ops to a block, so kernel generators read like the kernel."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import IntegerAttr, StringAttr, UnitAttr, i64
from xdsl.ir import Block, Operation, SSAValue

from dialects import ptx, warp
from dialects.ptx import reg


class PtxBuilder:
    """Appends ptx and warp ops to `block` (or inserts them before `before`)."""

    def __init__(self, block: Block, before: Operation | None = None):
        self.block, self.before = block, before
        self._imms: dict[tuple[int, str], SSAValue] = {}

    def _put(self, op) -> None:
        if self.before is None:
            self.block.add_op(op)
        else:
            self.block.insert_op_before(op, self.before)

    def _add(self, op):
        self._put(op)
        return op.results[0] if len(op.results) == 1 else tuple(op.results)

    def imm(self, value: int, kind: str = "u32") -> SSAValue:
        key = (value, kind)
        if key not in self._imms:
            self._imms[key] = self._add(ptx.ImmOp.get(value, kind))
        return self._imms[key]

    def fimm(self, value: float) -> SSAValue:
        """An f32 constant (moved in by its bit pattern, so it is exact)."""
        return self.imm(int(np.float32(value).view(np.uint32)), "f32")

    def _v(self, x, kind):
        return self.imm(x, kind) if isinstance(x, int) else x

    def sreg(self, name: str) -> SSAValue:
        return self._add(ptx.SpecialRegOp.create(result_types=[reg("u32")], properties={"reg": StringAttr(name)}))

    def shared_base(self) -> SSAValue:
        return self._add(ptx.SharedBaseOp.create(result_types=[reg("u32")]))

    def binary(self, cls, a, b) -> SSAValue:
        kind = ptx.kind_of(a) if not isinstance(a, int) else ptx.kind_of(b)
        a, b = self._v(a, kind), self._v(b, kind if cls not in (ptx.ShlOp, ptx.ShrOp) else "u32")  # shift amounts are u32
        return self._add(cls.create(operands=[a, b], result_types=[reg(kind)]))

    def add(self, a, b):
        return self.binary(ptx.AddOp, a, b)

    def sub(self, a, b):
        return self.binary(ptx.SubOp, a, b)

    def mul(self, a, b):
        return self.binary(ptx.MulOp, a, b)

    def and_(self, a, b):
        return self.binary(ptx.AndOp, a, b)

    def xor(self, a, b):
        return self.binary(ptx.XorOp, a, b)

    def shl(self, a, b):
        return self.binary(ptx.ShlOp, a, b)

    def shr(self, a, b):
        return self.binary(ptx.ShrOp, a, b)

    def div(self, a, b):
        return self.binary(ptx.DivOp, a, b)

    def rem(self, a, b):
        return self.binary(ptx.RemOp, a, b)

    def min(self, a, b):
        return self.binary(ptx.MinOp, a, b)

    def max(self, a, b):
        return self.binary(ptx.MaxOp, a, b)

    def cvt(self, x, kind: str) -> SSAValue:
        return self._add(ptx.CvtOp.create(operands=[x], result_types=[reg(kind)]))

    def setp(self, cmp: str, a, b) -> SSAValue:
        kind = ptx.kind_of(a)
        return self._add(ptx.SetpOp.create(operands=[a, self._v(b, kind)], result_types=[reg("pred")],
                                           properties={"cmp": StringAttr(cmp)}))

    def and_pred(self, a, b) -> SSAValue:
        return self._add(ptx.AndPredOp.create(operands=[a, b], result_types=[reg("pred")]))

    def selp(self, a, b, p, kind: str = "u32") -> SSAValue:
        kind = ptx.kind_of(a) if not isinstance(a, int) else ptx.kind_of(b) if not isinstance(b, int) else kind
        return self._add(ptx.SelpOp.create(operands=[self._v(a, kind), self._v(b, kind), p], result_types=[reg(kind)]))

    def ld(self, space: str, addr, kind: str, n: int = 1, offset: int = 0, pred=None, byte: bool = False):
        props = {"space": StringAttr(space)}
        if offset:
            props["offset"] = IntegerAttr(offset, i64)
        if byte:
            props["byte"] = UnitAttr()
        return self._add(ptx.LoadOp.create(operands=[addr] + ([pred] if pred is not None else []),
                                           result_types=[reg(kind)] * n, properties=props))

    def st(self, space: str, addr, values, offset: int = 0, pred=None, byte: bool = False) -> None:
        """st of `values` (with `byte`, the low byte of one b16 register)."""
        props = {"space": StringAttr(space)}
        if offset:
            props["offset"] = IntegerAttr(offset, i64)
        if pred is not None:
            props["guarded"] = UnitAttr()
        if byte:
            props["byte"] = UnitAttr()
        self._put(ptx.StoreOp.create(operands=[addr, *values] + ([pred] if pred is not None else []), properties=props))

    def cp_async(self, dst, src, src_size, size: int = 16) -> None:
        self._put(ptx.CpAsyncOp.create(operands=[dst, src, src_size], properties={"size": IntegerAttr(size, i64)}))

    def commit(self) -> None:
        self._put(ptx.CpAsyncCommitOp.create())

    def wait(self, pending: int) -> None:
        self._put(ptx.CpAsyncWaitOp.create(properties={"pending": IntegerAttr(pending, i64)}))

    def barrier(self) -> None:
        self._put(ptx.BarSyncOp.create())

    def trap(self, pred, reason: str) -> None:
        self._put(ptx.TrapOp.create(operands=[pred], properties={"reason": StringAttr(reason)}))

    def griddep_launch(self) -> None:
        self._put(ptx.GridDepLaunchOp.create())

    def griddep_wait(self) -> None:
        self._put(ptx.GridDepWaitOp.create())

    def ldmatrix(self, addr, n: int = 4, trans: bool = False):
        props = {"trans": UnitAttr()} if trans else {}
        out = self._add(ptx.LdmatrixOp.create(operands=[addr], result_types=[reg("b32")] * n, properties=props))
        return out if isinstance(out, tuple) else (out,)

    def mma(self, a, b, c, dtype: str, shape: str = "m16n8k16", acc: str = "f32"):
        props = {"dtype": StringAttr(dtype)}
        if shape != "m16n8k16":
            props["shape"] = StringAttr(shape)
        if acc != "f32":
            props["acc"] = StringAttr(acc)
        results = [reg("b32")] * 2 if acc == "f16" else [reg(acc)] * 4  # f16 pairs, or one f32/s32 per register
        out = self._add(ptx.MmaOp.create(operands=[*a, *b, *c], result_types=results, properties=props))
        return out if isinstance(out, tuple) else (out,)

    def wgmma(self, a: list, desc_b, scale_d, acc, dtype: str) -> tuple:
        """A warpgroup's acc (64 x N / 128 threads = N / 2 f32 or s32 each) updated by A B^T: B in shared
        memory, A there too (`a`: [its descriptor]) or in registers (`a`: four b32)."""
        return self._add(ptx.WgmmaOp.build(operands=[list(a), desc_b, scale_d, list(acc)], result_types=[[acc[0].type] * len(acc)],
                                           properties={"dtype": StringAttr(dtype)}))

    def wgmma_fence(self) -> None:
        self._put(ptx.WgmmaFenceOp.create())

    def wgmma_commit(self) -> None:
        self._put(ptx.WgmmaCommitOp.create())

    def wgmma_wait(self, pending: int, values=()) -> tuple:
        """wgmma.wait_group `pending`; `values` (accumulators) come back safe to read."""
        op = ptx.WgmmaWaitOp.create(operands=list(values), result_types=[v.type for v in values],
                                    properties={"pending": IntegerAttr(pending, i64)})
        self._put(op)
        return tuple(op.results)

    def fence_proxy_async(self) -> None:
        self._put(ptx.FenceProxyAsyncOp.create())

    def cvt_pack(self, hi, lo, dtype: str) -> SSAValue:
        return self._add(ptx.CvtPackOp.create(operands=[hi, lo], result_types=[reg("b32")], properties={"dtype": StringAttr(dtype)}))

    def cvt_half(self, x, dtype: str) -> SSAValue:
        return self._add(ptx.CvtHalfOp.create(operands=[x], result_types=[reg("b16")], properties={"dtype": StringAttr(dtype)}))

    def cvt_eight_bit(self, x, dtype: str) -> SSAValue:
        return self._add(ptx.CvtEightBitOp.create(operands=[x], result_types=[reg("b16")], properties={"dtype": StringAttr(dtype)}))

    def cvt_widen(self, x, dtype: str) -> SSAValue:
        return self._add(ptx.CvtWidenOp.create(operands=[x], result_types=[reg("f32")], properties={"dtype": StringAttr(dtype)}))

    def ex2(self, x) -> SSAValue:
        return self._add(ptx.Ex2Op.create(operands=[x], result_types=[reg("f32")]))

    def rsqrt(self, x) -> SSAValue:
        return self._add(ptx.RsqrtOp.create(operands=[x], result_types=[reg("f32")]))

    def shfl_bfly(self, x, lanes: int) -> SSAValue:
        return self._add(ptx.ShflBflyOp.create(operands=[x], result_types=[x.type], properties={"lanes": IntegerAttr(lanes, i64)}))

    def rcp(self, x) -> SSAValue:
        return self._add(ptx.RcpOp.create(operands=[x], result_types=[reg("f32")]))

    # --- warp-level shared tiles
    def alloc_shared(self, tile, offset: int) -> SSAValue:
        return self._add(warp.AllocSharedOp.get(tile, offset))

    def tile_ldmatrix(self, tile, stage, row, col, n: int = 4, trans: bool = False):
        props = {"trans": UnitAttr()} if trans else {}
        out = self._add(warp.LdmatrixOp.create(operands=[tile, stage, row, col], result_types=[reg("b32")] * n, properties=props))
        return out if isinstance(out, tuple) else (out,)

    def tile_cp_async(self, tile, stage, row, col, src, src_size, size: int, pred=None) -> None:
        guard = [pred] if pred is not None else []
        self._put(warp.CpAsyncOp.create(operands=[tile, stage, row, col, src, src_size, *guard], properties={"size": IntegerAttr(size, i64)}))

    def tile_load(self, tile, stage, row, col, kind: str = "b32", byte: bool = False) -> SSAValue:
        """ld.shared of a b32 or b16 at a tile's (stage, row, col); `byte`: one byte into a b32."""
        props = {"byte": UnitAttr()} if byte else {}
        return self._add(warp.LoadOp.create(operands=[tile, stage, row, col], result_types=[reg(kind)], properties=props))

    def tile_desc(self, tile, stage, row, col) -> SSAValue:
        """The wgmma descriptor of a tile's rows from (stage, row, col) on."""
        return self._add(warp.SmemDescOp.create(operands=[tile, stage, row, col], result_types=[reg("u64")]))

    def tile_store(self, tile, stage, row, col, values: list) -> None:
        """st.shared of 1, 2 or 4 registers side by side from a tile's (stage, row, col) on."""
        self._put(warp.StoreOp.create(operands=[tile, stage, row, col, *values]))

    def lop3(self, a, b, c, lut: int) -> SSAValue:
        a, b, c = (self._v(v, "b32") for v in (a, b, c))
        return self._add(ptx.Lop3Op.create(operands=[a, b, c], result_types=[reg("b32")], properties={"lut": IntegerAttr(lut, i64)}))

    def prmt(self, a, b, c, kind: str = "b32") -> SSAValue:
        """prmt.b32 into a register of `kind` (u32 for a result that is an index)."""
        a, b, c = (self._v(v, "b32") for v in (a, b, c))
        return self._add(ptx.PrmtOp.create(operands=[a, b, c], result_types=[reg(kind)]))

    def pack_halves(self, lo, hi) -> SSAValue:
        return self._add(ptx.PackHalvesOp.create(operands=[lo, hi], result_types=[reg("b32")]))

    def unpack_halves(self, x) -> tuple[SSAValue, SSAValue]:
        """(low, high) 16-bit halves of a 32-bit register."""
        return self._add(ptx.UnpackHalvesOp.create(operands=[x], result_types=[reg("b16")] * 2))

    def mad(self, a, b, c) -> SSAValue:
        """a * b + c in a's kind (f32: fused, rounded once)."""
        kind = ptx.kind_of(a)
        b, c = self._v(b, kind), self._v(c, kind)
        return self._add(ptx.MadOp.create(operands=[a, b, c], result_types=[reg(kind)]))

    def fma2(self, a, b, c, dtype: str) -> SSAValue:
        a, b, c = (self._v(v, "b32") for v in (a, b, c))
        return self._add(ptx.Fma2Op.create(operands=[a, b, c], result_types=[reg("b32")], properties={"dtype": StringAttr(dtype)}))

    def for_(self, lb, ub, step, inits):
        """A ptx.for; returns (op, builder of its body, induction variable, carried values)."""
        op = ptx.ForOp.get(self._v(lb, "u32"), self._v(ub, "u32"), self._v(step, "u32"), inits)
        self._put(op)
        body = PtxBuilder(op.body.block)
        body._imms = dict(self._imms)  # constants defined before the loop dominate its body
        iv, *carried = op.body.block.args
        return op, body, iv, carried

    def yield_(self, values) -> None:
        self._put(ptx.YieldOp.create(operands=list(values)))
