"""Loads, stores, cp.async and its groups, barriers and grid dependency control."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    IntegerAttr,
    StringAttr,
    UnitAttr,
)
from xdsl.irdl import (
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_operand_def,
    var_result_def,
)
from xdsl.utils.exceptions import VerifyException

from dialects.ptx.base import KINDS, MarkerOp, PtxOp, RegType, SinkOp, kind_of
from ir.errors import RungError

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
    """[@p] st.<space>[.v2/.v4].<kind> [addr + offset], {values...}. With `byte`, st.<space>.b8 of one
    16-bit register's low byte."""

    name = "ptx.st"
    addr = operand_def(RegType)
    values = var_operand_def(RegType)
    space = prop_def(StringAttr)
    offset = opt_prop_def(IntegerAttr)
    guarded = opt_prop_def(UnitAttr)
    byte = opt_prop_def(UnitAttr)

    def verify_(self):
        if self.byte and (len(self._split()[0]) != 1 or kind_of(self.values[0]) != "b16"):
            raise VerifyException("a byte store takes one 16-bit register")

    def _split(self):
        vals = list(self.values)
        pred = vals.pop() if self.guarded else None
        return vals, pred

    def text(self, r):
        vals, pred = self._split()
        k = "b8" if self.byte else kind_of(vals[0])
        vec = f".v{len(vals)}" if len(vals) > 1 else ""
        src = ", ".join(r(v) for v in vals)
        src = f"{{{src}}}" if vec else src
        off = self.offset.value.data if self.offset else 0
        return f"{_guard(pred, r)}st.{self.space.data}{vec}.{k} [{r(self.addr)}+{off}], {src};"

    def execute(self, cta, addr, *values):
        pred = values[-1] if self.guarded else None
        vals = values[:-1] if self.guarded else values
        data = np.stack([np.ascontiguousarray(v.astype(np.uint8) if self.byte else v) for v in vals], axis=1)
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
class TrapOp(PtxOp):
    """@p trap: a thread whose predicate holds aborts the kernel (the launch fails, as a device-side assert
    does); on the simulator, an error saying `reason`."""

    name = "ptx.trap"
    pred = operand_def(RegType)
    reason = prop_def(StringAttr)
    assembly_format = "$pred attr-dict `:` type($pred)"
    irdl_options = (ParsePropInAttrDict(),)

    def text(self, r):
        return f"@{r(self.pred)} trap;"

    def execute(self, cta, pred):
        if np.any(pred):
            raise RungError(f"the kernel trapped: {self.reason.data}")
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


@irdl_op_definition
class ShflBflyOp(PtxOp):
    """shfl.sync.bfly.b32 d, x, lanes, 0x1f, 0xffffffff: each lane of a warp gets x of the lane whose
    index differs from its own in the bits of `lanes` (all 32 lanes take part)."""

    name = "ptx.shfl_bfly"
    x = operand_def(RegType)
    result = result_def(RegType)
    lanes = prop_def(IntegerAttr)

    def verify_(self):
        if not 0 < self.lanes.value.data < 32 or kind_of(self.x) not in ("b32", "u32", "s32", "f32") or self.x.type != self.result.type:
            raise VerifyException("ptx.shfl_bfly exchanges a 32-bit register between lanes 1 to 31 apart (by xor)")

    def text(self, r):
        return f"shfl.sync.bfly.b32 {r(self.result)}, {r(self.x)}, {self.lanes.value.data}, 0x1f, 0xffffffff;"

    def execute(self, cta, x):
        return x[np.arange(cta.threads) ^ self.lanes.value.data]
