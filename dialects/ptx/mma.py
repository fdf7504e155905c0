"""Tensor cores: ldmatrix, mma.sync, and the warpgroup mma of sm_90a (wgmma) with its shared-memory descriptors."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    IntegerAttr,
    StringAttr,
    UnitAttr,
)
from xdsl.irdl import (
    AttrSizedOperandSegments,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    var_operand_def,
    var_result_def,
)
from xdsl.utils.exceptions import VerifyException

from dialects.ptx.base import MarkerOp, PtxOp, RegType, kind_of, unpack_halves
from ir.errors import RungError

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
