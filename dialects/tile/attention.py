"""Attention programs: one thread block per BM query rows of one head, FlashAttention's order.

    tile.kernel @rung_attention_f16_d128_m64_n64_causal {schedule = #tile.attention<head_dim = 128, block_m = 64, block_n = 64>} {
    ^0(%q: tensor<?x?x?xf16>, %k: tensor<?x?x?xf16>, %v: tensor<?x?x?xf16>, %o: tensor<?x?x?xf16>):
      tile.attention %q, %k, %v, %o {causal, scale = 0.0884 : f32, group = 4 : i64} : ...
      tile.yield
    }

q and o are [heads, L, D], k and v [kv heads, S, D] (batch and heads flattened); query head h reads
kv head h / group (grouped-query attention). Block (x, h) computes o[h, x BM : (x + 1) BM] =
softmax(q k^T * scale, causal: key j <= query i) v over BN keys at a time: S = Q K^T on tensor cores,
the running row max and sum rescale what was accumulated (online softmax), P (rounded to the
operands' type) times V accumulates in f32, one division at the end. L and S are the launch's
dims, so one kernel serves every sequence length. tile-to-warp lowers it
(lowering.tile_to_warp.attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, TensorType, UnitAttr
from xdsl.ir import Data
from xdsl.irdl import IRDLOperation, ParsePropInAttrDict, irdl_attr_definition, irdl_op_definition, operand_def, opt_prop_def, prop_def
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from dialects.tile.types import parse_schedule_fields, print_schedule_fields
from ir.targets import MAX_SHARED_BYTES

HEAD_DIMS = tuple(range(16, 129, 16))  # a multiple of the mma's k, at most what the registers hold (o: D / 2 f32 a thread)


@dataclass(frozen=True)
class AttentionConfig:
    """`block_m` query rows a block (16 a warp), keys `block_n` at a time through a two-stage copy."""

    head_dim: int
    block_m: int = 64
    block_n: int = 64

    def __post_init__(self):
        if self.head_dim not in HEAD_DIMS:
            raise ValueError(f"head_dim must be a multiple of 16 from 16 to 128, got {self.head_dim}")
        if self.block_m not in (16, 32, 64, 128):
            raise ValueError(f"block_m must be 16, 32, 64 or 128 (16 rows a warp), got {self.block_m}")
        if self.block_n not in (16, 32, 64, 128):
            raise ValueError(f"block_n must be 16, 32, 64 or 128, got {self.block_n}")
        if self.shared_bytes > MAX_SHARED_BYTES:
            raise ValueError(f"the tiles take {self.shared_bytes} bytes of shared memory, more than {MAX_SHARED_BYTES}")

    @property
    def warps(self) -> int:
        return self.block_m // 16

    @property
    def threads(self) -> int:
        return 32 * self.warps

    @property
    def shared_bytes(self) -> int:
        """Q's tile, and two stages of K's and V's."""
        return 2 * self.head_dim * (self.block_m + 4 * self.block_n)


_FIELDS = ("head_dim", "block_m", "block_n")


@irdl_attr_definition
class AttentionSchedule(Data[AttentionConfig]):
    """#tile.attention<head_dim = D, block_m = BM, block_n = BN>."""

    name = "tile.attention"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> AttentionConfig:
        return parse_schedule_fields(parser, AttentionConfig, _FIELDS, "attention")

    def print_parameter(self, printer: Printer) -> None:
        print_schedule_fields(printer, self.data, _FIELDS)

    @property
    def threads(self) -> int:
        return self.data.threads

    def launch_grid(self, shapes: list[tuple[int, ...]]) -> tuple[int, int, int]:
        """A block per BM query rows of each head (q: the first of `shapes`)."""
        heads, rows, _ = shapes[0]
        return (-(-rows // self.data.block_m), heads, 1)

    def launch_dims(self, shapes: list[tuple[int, ...]]) -> list[int]:
        """The kernel's 32-bit parameters: L (query rows) and S (keys)."""
        return [shapes[0][1], shapes[1][1]]


def attention_reference(q, k, v, scale: float, causal: bool) -> np.ndarray:
    """softmax(q k^T * scale) v in f32 for q [L, D], k and v [S, D] (causal: key j <= query i)."""
    s = q.astype(np.float32) @ k.astype(np.float32).T * np.float32(scale)
    if causal:
        s = np.where(np.tril(np.ones(s.shape, bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p @ v.astype(np.float32)) / p.sum(axis=-1, keepdims=True)


@irdl_op_definition
class AttentionOp(IRDLOperation):
    """o[h, rows of this block] = softmax(q[h] k[h / group]^T * scale) v[h / group] (module docstring)."""

    name = "tile.attention"
    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    o = operand_def(TensorType)
    scale = prop_def(FloatAttr)
    group = prop_def(IntegerAttr)
    causal = opt_prop_def(UnitAttr)
    assembly_format = "$q `,` $k `,` $v `,` $o attr-dict `:` type($q) `,` type($k) `,` type($v) `,` type($o)"
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self):
        if any(len(x.type.get_shape()) != 3 for x in (self.q, self.k, self.v, self.o)):
            raise VerifyException("tile.attention takes q, k, v and o of rank 3: [heads, rows, head_dim]")
        if self.group.value.data < 1:
            raise VerifyException("tile.attention's group (query heads per kv head) must be positive")

    def run(self, ids, q, k, v, o):
        bm, head = ids.cfg.block_m, ids.y
        rows = slice(ids.x * bm, min(q.shape[1], (ids.x + 1) * bm))
        kv = head // self.group.value.data
        # a causal block's rows attend to keys up to their own index: the whole softmax over k[:L] masked
        o[head, rows] = attention_reference(q[head], k[kv], v[kv], self.scale.value.data, self.causal is not None)[rows]
        return ()


def attention_kernel_name(dtype: str, cfg: AttentionConfig, causal: bool, scale: float, group: int) -> str:
    """The kernel's name says all it bakes in: the schedule, causality, the scale (unless 1/sqrt(D)) and the group."""
    name = f"rung_attention_{dtype}_d{cfg.head_dim}_m{cfg.block_m}_n{cfg.block_n}" + ("_causal" if causal else "")
    if not math.isclose(scale, 1 / math.sqrt(cfg.head_dim), rel_tol=1e-6):
        name += f"_s{int(np.float32(scale).view(np.uint32)):08x}"
    return name + (f"_g{group}" if group > 1 else "")


ATTENTION_ATTRIBUTES = [AttentionSchedule]
ATTENTION_OPS = (AttentionOp,)
