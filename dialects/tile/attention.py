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
from xdsl.irdl import (
    IRDLOperation, ParsePropInAttrDict, irdl_attr_definition, irdl_op_definition, operand_def, opt_operand_def, opt_prop_def, prop_def,
    result_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from dialects.tile.types import parse_schedule_fields, print_schedule_fields
from ir.targets import MAX_SHARED_BYTES

HEAD_DIMS = tuple(range(16, 129, 16))  # a multiple of the mma's k, at most what the registers hold (o: D / 2 f32 a thread)


@dataclass(frozen=True)
class AttentionConfig:
    """`block_m` query rows a block (16 a warp), keys `block_n` at a time through a two-stage copy; with
    `splits` > 1 the key tiles are split among that many blocks (grid z) that write partial results, which
    tile.merge_splits combines (FlashDecoding: a few query rows against a long KV fill the GPU)."""

    head_dim: int
    block_m: int = 64
    block_n: int = 64
    splits: int = 1

    def __post_init__(self):
        if self.head_dim not in HEAD_DIMS:
            raise ValueError(f"head_dim must be a multiple of 16 from 16 to 128, got {self.head_dim}")
        if self.block_m not in (16, 32, 64, 128):
            raise ValueError(f"block_m must be 16, 32, 64 or 128 (16 rows a warp), got {self.block_m}")
        if self.block_n not in (16, 32, 64, 128):
            raise ValueError(f"block_n must be 16, 32, 64 or 128, got {self.block_n}")
        if not 1 <= self.splits <= 64:
            raise ValueError(f"splits must be from 1 to 64, got {self.splits}")
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


_FIELDS = ("head_dim", "block_m", "block_n", "splits")


@irdl_attr_definition
class AttentionSchedule(Data[AttentionConfig]):
    """#tile.attention<head_dim = D, block_m = BM, block_n = BN, splits = Z>."""

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
        """A block per BM query rows of each head and split of the keys (q: the first of `shapes`)."""
        heads, rows, _ = shapes[0]
        return (-(-rows // self.data.block_m), heads, self.data.splits)

    def launch_dims(self, shapes: list[tuple[int, ...]]) -> list[int]:
        """The kernel's 32-bit parameters: L (query rows) and S (keys), and with positions (q, k, v, positions, o)
        their count."""
        return [shapes[0][1], shapes[1][1]] + ([shapes[3][0]] if len(shapes) == 5 else [])


def attention_reference(q, k, v, scale: float, causal: bool, positions=None) -> np.ndarray:
    """softmax(q k^T * scale) v in f32 for q [L, D], k and v [S, D] (causal: key j <= query i; with `positions`
    [L]: key j <= positions[i])."""
    s = q.astype(np.float32) @ k.astype(np.float32).T * np.float32(scale)
    if causal:
        s = np.where(np.tril(np.ones(s.shape, bool)), s, -np.inf)
    if positions is not None:
        s = np.where(np.arange(s.shape[1])[None, :] <= np.asarray(positions)[:, None], s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p @ v.astype(np.float32)) / p.sum(axis=-1, keepdims=True)


@irdl_op_definition
class AttentionOp(IRDLOperation):
    """o[h, rows of this block] = softmax(q[h] k[h / group]^T * scale) v[h / group] (module docstring). With
    `positions` [P] (integers), row r attends to the keys up to positions[r % P] (P query tokens, their rows
    repeated for the query heads that share a kv head): a step over a KV cache. With `o_heads`
    H (no splits), o is [heads / H, rows, H * head_dim]: head b H + h's rows at columns h D of batch b, the layout
    [B, S, H, D] that the heads' transpose after attention would make, written directly."""

    name = "tile.attention"
    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    positions = opt_operand_def(TensorType)
    o = operand_def(TensorType)
    scale = prop_def(FloatAttr)
    group = prop_def(IntegerAttr)
    causal = opt_prop_def(UnitAttr)
    o_heads = opt_prop_def(IntegerAttr)
    assembly_format = ("$q `,` $k `,` $v (`positions` $positions^)? `,` $o attr-dict `:` type($q) `,` type($k) `,` type($v) "
                       "(`positions` type($positions)^)? `,` type($o)")
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self):
        if any(len(x.type.get_shape()) != 3 for x in (self.q, self.k, self.v, self.o)):
            raise VerifyException("tile.attention takes q, k, v and o of rank 3: [heads, rows, head_dim] "
                                  "(o, with splits: [splits * heads, rows, head_dim + 2] f32 partial results)")
        if self.group.value.data < 1:
            raise VerifyException("tile.attention's group (query heads per kv head) must be positive")
        if self.positions is not None and (len(self.positions.type.get_shape()) != 1 or
                                           str(self.positions.type.element_type) not in ("i32", "i64") or self.causal is not None):
            raise VerifyException(f"tile.attention's positions are 1-D i32 or i64 (without `causal`), got {self.positions.type}")
        if self.o_heads is not None:
            h = self.o_heads.value.data
            heads, rows, dim = self.q.type.get_shape()
            if h < 1 or heads % h or self.o.type.get_shape() != (heads // h, rows, h * dim):
                raise VerifyException(f"tile.attention with o_heads = {h} writes o [{heads} / {h}, {rows}, {h} * {dim}], got {self.o.type}")

    def run(self, ids, q, k, v, *rest):
        *positions, o = rest
        cfg, head = ids.cfg, ids.y
        rows = slice(ids.x * cfg.block_m, min(q.shape[1], (ids.x + 1) * cfg.block_m))
        kv, causal = head // self.group.value.data, self.causal is not None
        at = np.asarray(positions[0], np.int64)[np.arange(q.shape[1]) % len(positions[0])] if positions else None  # each row's position
        if cfg.splits == 1:  # a causal block's rows attend to keys up to their own index: the whole softmax over k[:L] masked
            out = attention_reference(q[head], k[kv], v[kv], self.scale.value.data, causal, at)[rows]
            if self.o_heads is None:
                o[head, rows] = out
            else:
                batch, h = divmod(head, self.o_heads.value.data)
                o[batch, rows, h * q.shape[2]:(h + 1) * q.shape[2]] = out
            return ()
        # split z's share of the block's key tiles (up to its last row, or its rows' last position): row maxima m and
        # sums l in log2 units, O = P V unnormalised
        keys = min(k.shape[1], rows.stop) if causal else min(k.shape[1], int(at[rows].max()) + 1) if at is not None else k.shape[1]
        tiles = -(-keys // cfg.block_n)
        per = -(-tiles // cfg.splits)
        lo = min(ids.z * per, tiles) * cfg.block_n
        hi = min((min(ids.z * per, tiles) + per) * cfg.block_n, keys)
        s = q[head, rows].astype(np.float32) @ k[kv, lo:hi].astype(np.float32).T * np.float32(self.scale.value.data * math.log2(math.e))
        if causal or at is not None:
            last = np.arange(rows.start, rows.stop) if causal else at[rows]
            s = np.where(np.arange(lo, max(lo, hi))[None, :] <= last[:, None], s, -np.inf)
        m = s.max(axis=-1, initial=-np.inf)
        p = np.where(np.isfinite(m)[:, None], np.exp2(s - np.where(np.isfinite(m), m, 0)[:, None]), 0)
        out = o[ids.z * q.shape[0] + head, rows]
        out[:, :-2], out[:, -2], out[:, -1] = p @ v[kv, lo:hi].astype(np.float32), m, p.sum(axis=-1)
        return ()


@irdl_op_definition
class MergeSplitsOp(IRDLOperation):
    """o = the attention of split partial results [splits * heads, rows, D + 2] (O unnormalised, then the row
    max m and sum l, log2 units): sum_z 2^(m_z - M) O_z / sum_z 2^(m_z - M) l_z, M the largest m_z."""

    name = "tile.merge_splits"
    partial = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = "$partial attr-dict `:` type($partial) `->` type($result)"

    @property
    def splits(self) -> int:
        return self.partial.type.get_shape()[0] // self.result.type.get_shape()[0]

    def verify_(self):
        (hz, rows, width), (heads, rows2, dim) = self.partial.type.get_shape(), self.result.type.get_shape()
        if str(self.partial.type.element_type) != "f32" or hz % heads or rows != rows2 or width != dim + 2:
            raise VerifyException(f"tile.merge_splits takes f32 partial results [splits * heads, rows, D + 2], got {self.partial.type}")

    def execute(self, partial):
        heads = self.result.type.get_shape()[0]
        parts = partial.reshape(self.splits, heads, *partial.shape[1:])
        m = parts[..., -2:-1]
        top = m.max(axis=0)
        weight = np.where(np.isfinite(m), np.exp2(m - np.where(np.isfinite(top), top, 0)), 0)
        return (weight * parts[..., :-2]).sum(axis=0) / (weight * parts[..., -1:]).sum(axis=0)


ATTENTION_ATTRIBUTES = [AttentionSchedule]
ATTENTION_OPS = (AttentionOp, MergeSplitsOp)
