"""The `tile` dialect: whole-tensor ops with their thread-block schedule made explicit.

    %y = tile.matmul %x, %w {block = array<i64: 128, 128, 32>, warps = array<i64: 2, 2>, stages = 3 : i64}
           : (tensor<MxKxf16>, tensor<NxKxf16>) -> tensor<MxNxf16>

computes y = x @ w^T as the kernel will: one thread block per BM x BN tile of y, K in BK steps
through a `stages`-deep shared-memory pipeline, f32 accumulation, one rounding to the output
type. Its interpreter runs exactly that blocked order, so the schedule is checked on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, StringAttr, TensorType, UnitAttr, i64
from xdsl.ir import Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from ir.layout import Swizzle


MAX_SHARED_BYTES = 227 * 1024  # per block on sm_90 (sm_80: 163 KiB; the launcher checks the device's)


def copy_elems(k: int) -> int:
    """The widest copy that rows of K halves keep aligned: 16 bytes, 4 bytes or one element."""
    return 8 if k % 8 == 0 else 2 if k % 2 == 0 else 1


ACTIVATIONS = {"none": lambda y: y, "relu": lambda y: np.maximum(y, 0), "silu": lambda y: y / (1 + np.exp(-y))}


def swizzle_for(row_bytes: int) -> Swizzle:
    """The swizzle of a row-major shared tile with rows of `row_bytes` (64 or more): the 16-byte
    chunk index XOR-ed with row bits so that 8 consecutive rows' same chunk hit distinct banks."""
    chunks = min(row_bytes, 128) // 16
    return Swizzle(chunks.bit_length() - 1, 4, max(3, row_bytes.bit_length() - 1 - 4))


@dataclass(frozen=True)
class SharedTile:
    """One operand's tile in shared memory: `rows` x `cols` halves, row-major and swizzled,
    filled from global memory `elems` halves per copy."""

    rows: int
    cols: int
    elems: int

    @property
    def row_bytes(self) -> int:
        return 2 * self.cols

    @property
    def bytes(self) -> int:
        return self.rows * self.row_bytes

    @property
    def swizzle(self) -> Swizzle:
        return swizzle_for(self.row_bytes)


@dataclass(frozen=True)
class GemmConfig:
    """A tensor-core GEMM schedule: C = act(A @ B^T + bias) with A [M, K]; B is [N, K] (a linear's
    weight) or, with `b_kn`, [K, N] (a matmul's right operand)."""

    dtype: str = "f16"  # f16 or bf16
    bm: int = 128
    bn: int = 128
    bk: int = 32
    warps_m: int = 2
    warps_n: int = 2
    stages: int = 3
    bias: bool = False  # epilogue: + bias[n]
    activation: str = "none"  # epilogue: none, relu or silu, after the bias
    copy_elems: int = 8  # halves per copy of A's rows (and of B's when B is [N, K]): 8 (16 B), 2 (4 B) or 1
    b_kn: bool = False  # B stored [K, N]: its rows run along N
    b_copy_elems: int = 8  # halves per copy of B's rows when B is [K, N] (they follow N's alignment)
    weight: str = ""  # "" (B in dtype) or an integer format of 1-8 bits: B is codes in mma order (lowering.ladder)
    group: int = 0  # with `weight`: K elements per scale (0: one scale per output channel)

    def __post_init__(self):
        for e in (self.copy_elems, self.b_copy_elems):  # (a packed weight's rows copy 8, 4 or 2 halves: b_tile)
            if e not in (8, 2, 1):
                raise ValueError(f"elements per copy must be 8, 2 or 1, got {e}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation}")
        if self.dtype not in ("f16", "bf16"):
            raise ValueError(f"mma.sync GEMM takes f16 or bf16, not {self.dtype}")
        if self.bk not in (32, 64):
            raise ValueError(f"BK must be 32 or 64, got {self.bk}")
        wm, wn = self.bm // self.warps_m, self.bn // self.warps_n
        if self.bm % self.warps_m or self.bn % self.warps_n or wm % 16 or wn % 16:
            raise ValueError(f"warp tile {wm}x{wn} must be a multiple of 16x16")
        if self.warps_m & (self.warps_m - 1) or self.warps_n & (self.warps_n - 1):
            raise ValueError(f"warps per dim must be powers of two, got {self.warps_m}x{self.warps_n}")
        if self.stages < 2:
            raise ValueError("the pipeline needs at least 2 stages")
        if self.shared_bytes > MAX_SHARED_BYTES:
            raise ValueError(f"{self.shared_bytes} bytes of shared memory exceed the {MAX_SHARED_BYTES // 1024} KiB a block can have")
        if self.weight:
            from lowering.ladder import IntDecode

            d = IntDecode.of(self.weight)
            if self.dtype == "bf16" and d.bits == 8:
                raise ValueError("8-bit weights decode into f16 only: bf16's mantissa cannot hold 8-bit codes")
            block = 16 * d.per_word // 4
            if self.b_kn or self.bk % block:
                raise ValueError(f"{self.weight} weights need B as [N, K] and BK a multiple of {block}")
            if self.group and (self.group % self.bk or self.group & (self.group - 1)):
                raise ValueError(f"group {self.group} must be a power of two and a multiple of BK = {self.bk}")
        for tile in (self.a_tile, self.b_tile):
            copies_per_row = tile.cols // tile.elems
            if copies_per_row > self.threads or (tile.rows * copies_per_row) % self.threads:
                raise ValueError(f"a {tile.rows}x{tile.cols} tile does not split evenly over {self.threads} threads")

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n

    @property
    def a_tile(self) -> SharedTile:
        return SharedTile(self.bm, self.bk, self.copy_elems)

    @property
    def weight_bits(self) -> int:
        from ir.numerics import element_format

        return element_format(self.weight).bits if self.weight else 16

    @property
    def b_tile(self) -> SharedTile:
        if self.weight:  # packed codes: BK * bits / 16 halves a row, copied 16, 8 or 4 bytes at a time
            cols = self.bk * self.weight_bits // 16
            return SharedTile(self.bn, cols, min(8, cols))
        return SharedTile(self.bk, self.bn, self.b_copy_elems) if self.b_kn else SharedTile(self.bn, self.bk, self.copy_elems)

    @property
    def shared_bytes(self) -> int:
        return self.stages * (self.a_tile.bytes + self.b_tile.bytes)

    @property
    def param_kinds(self) -> tuple[str, ...]:
        """The kernel's parameters: a, b, [scales,] [bias,] c addresses, then m, n, k."""
        return ("u64",) * (3 + bool(self.weight) + self.bias) + ("u32",) * 3

    def grid(self, m: int, n: int) -> tuple[int, int, int]:
        """Thread blocks covering an M x N result."""
        return ((n + self.bn - 1) // self.bn, (m + self.bm - 1) // self.bm, 1)

    @property
    def name(self) -> str:
        suffix = "_kn" if self.b_kn else ""
        suffix += ("_bias" if self.bias else "") + ("" if self.activation == "none" else f"_{self.activation}")
        suffix += "" if self.copy_elems == 8 else f"_c{self.copy_elems}"
        suffix += f"_bc{self.b_copy_elems}" if self.b_kn and self.b_copy_elems != 8 else ""
        suffix += f"_w{self.weight}g{self.group}" if self.weight else ""
        return f"rung_gemm_{self.dtype}_{self.bm}x{self.bn}x{self.bk}_w{self.warps_m}x{self.warps_n}_s{self.stages}{suffix}"


@irdl_op_definition
class MatmulOp(IRDLOperation):
    """y = act(x @ w^T + bias) on tensor cores: x [M, K], w [N, K] (or, with `b_kn`, y = act(x @ w
    + bias) with w [K, N]), optional bias [N], f16 or bf16, f32 accumulation and epilogue, one
    rounding at the end; `activation` is none, relu or silu."""

    name = "tile.matmul"
    x = operand_def(TensorType)
    w = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    block = prop_def(DenseArrayBase)
    warps = prop_def(DenseArrayBase)
    stages = prop_def(IntegerAttr)
    activation = opt_prop_def(StringAttr)
    b_kn = opt_prop_def(UnitAttr)
    traits = traits_def(Pure())
    assembly_format = "$x `,` $w (`,` $bias^)? attr-dict `:` `(` type($x) `,` type($w) (`,` type($bias)^)? `)` `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(x: SSAValue, w: SSAValue, bias: SSAValue | None, cfg: GemmConfig) -> "MatmulOp":
        m, n = x.type.get_shape()[0], w.type.get_shape()[1 if cfg.b_kn else 0]
        props = {"block": DenseArrayBase.from_list(i64, [cfg.bm, cfg.bn, cfg.bk]),
                 "warps": DenseArrayBase.from_list(i64, [cfg.warps_m, cfg.warps_n]),
                 "stages": IntegerAttr(cfg.stages, i64)}
        if cfg.activation != "none":
            props["activation"] = StringAttr(cfg.activation)
        if cfg.b_kn:
            props["b_kn"] = UnitAttr()
        return MatmulOp.create(operands=[x, w] + ([bias] if bias is not None else []),
                               result_types=[TensorType(x.type.element_type, [m, n])], properties=props)

    @property
    def config(self) -> GemmConfig:
        bm, bn, bk = self.block.get_values()
        wm, wn = self.warps.get_values()
        act = self.activation.data if self.activation else "none"
        n = self.result.type.get_shape()[1]
        return GemmConfig(str(self.x.type.element_type), bm, bn, bk, wm, wn, self.stages.value.data, self.bias is not None, act,
                          copy_elems(self.x.type.get_shape()[1]), self.b_kn is not None, copy_elems(n) if self.b_kn else 8)

    def verify_(self):
        x, w = self.x.type, self.w.type
        if str(x.element_type) not in ("f16", "bf16") or x.element_type != w.element_type:
            raise VerifyException(f"tile.matmul takes f16 or bf16 operands of one type, got {x} and {w}")
        k_dim = 0 if self.b_kn else 1
        if len(x.get_shape()) != 2 or len(w.get_shape()) != 2 or x.get_shape()[1] != w.get_shape()[k_dim]:
            raise VerifyException(f"tile.matmul needs x [M, K] and w {'[K, N]' if self.b_kn else '[N, K]'}, got {x} and {w}")
        n = w.get_shape()[1 - k_dim]
        want = TensorType(x.element_type, [x.get_shape()[0], n])
        if self.bias is not None and self.bias.type != TensorType(x.element_type, [n]):
            raise VerifyException(f"bias must be tensor<{n}x{x.element_type}>, got {self.bias.type}")
        if self.result.type != want:
            raise VerifyException(f"result type must be {want}, got {self.result.type}")
        if len(self.block.get_values()) != 3 or len(self.warps.get_values()) != 2:
            raise VerifyException("block is [BM, BN, BK] and warps is [WM, WN]")
        try:
            self.config
        except ValueError as e:
            raise VerifyException(str(e)) from None

    def execute(self, x, w, bias=None):
        cfg = self.config
        w = w.T if self.b_kn else w  # [N, K] from here on
        m, k = x.shape
        n = w.shape[0]
        y = np.zeros((m, n), np.float32)
        for m0 in range(0, m, cfg.bm):  # one thread block per output tile, K in BK steps
            for n0 in range(0, n, cfg.bn):
                acc = np.zeros((min(cfg.bm, m - m0), min(cfg.bn, n - n0)), np.float32)
                for k0 in range(0, k, cfg.bk):
                    a = x[m0:m0 + cfg.bm, k0:k0 + cfg.bk].astype(np.float32)
                    b = w[n0:n0 + cfg.bn, k0:k0 + cfg.bk].astype(np.float32)
                    acc += a @ b.T
                y[m0:m0 + cfg.bm, n0:n0 + cfg.bn] = acc
        if bias is not None:
            y += bias.astype(np.float32)
        return ACTIVATIONS[cfg.activation](y)


TILE = Dialect("tile", [MatmulOp], [])
