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
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, StringAttr, TensorType, i64
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


@dataclass(frozen=True)
class GemmConfig:
    dtype: str = "f16"  # f16 or bf16
    bm: int = 128
    bn: int = 128
    bk: int = 32
    warps_m: int = 2
    warps_n: int = 2
    stages: int = 3
    bias: bool = False  # epilogue: + bias[n]
    activation: str = "none"  # epilogue: none, relu or silu, after the bias
    copy_elems: int = 8  # elements per global->shared copy: 8 (cp.async 16 B, K % 8 == 0), 2 (cp.async 4 B, even K), 1

    def __post_init__(self):
        if self.copy_elems not in (8, 2, 1):
            raise ValueError(f"copy_elems must be 8, 2 or 1, got {self.copy_elems}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation}")
        if self.dtype not in ("f16", "bf16"):
            raise ValueError(f"mma.sync GEMM takes f16 or bf16, not {self.dtype}")
        if self.bk not in (32, 64):
            raise ValueError(f"BK must be 32 or 64, got {self.bk}")
        wm, wn = self.bm // self.warps_m, self.bn // self.warps_n
        if self.bm % self.warps_m or self.bn % self.warps_n or wm % 16 or wn % 16:
            raise ValueError(f"warp tile {wm}x{wn} must be a multiple of 16x16")
        if self.stages < 2:
            raise ValueError("the pipeline needs at least 2 stages")
        if self.shared_bytes > MAX_SHARED_BYTES:
            raise ValueError(f"{self.shared_bytes} bytes of shared memory exceed the {MAX_SHARED_BYTES // 1024} KiB a block can have")
        for rows in (self.bm, self.bn):
            if (rows * self.bk // self.copy_elems) % self.threads:
                raise ValueError(f"a {rows}x{self.bk} tile does not split evenly over {self.threads} threads")

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n

    @property
    def row_bytes(self) -> int:
        return self.bk * 2

    @property
    def swizzle(self) -> Swizzle:
        return Swizzle((self.bk // 8).bit_length() - 1, 4, 3)

    @property
    def a_stage_bytes(self) -> int:
        return self.bm * self.row_bytes

    @property
    def b_stage_bytes(self) -> int:
        return self.bn * self.row_bytes

    @property
    def shared_bytes(self) -> int:
        return self.stages * (self.a_stage_bytes + self.b_stage_bytes)

    @property
    def name(self) -> str:
        epilogue = ("_bias" if self.bias else "") + ("" if self.activation == "none" else f"_{self.activation}")
        epilogue += "" if self.copy_elems == 8 else f"_c{self.copy_elems}"
        return f"rung_gemm_{self.dtype}_{self.bm}x{self.bn}x{self.bk}_w{self.warps_m}x{self.warps_n}_s{self.stages}{epilogue}"


@irdl_op_definition
class MatmulOp(IRDLOperation):
    """y = act(x @ w^T + bias) on tensor cores: x [M, K], w [N, K], optional bias [N], f16 or
    bf16, f32 accumulation and epilogue, one rounding at the end; `activation` is none, relu or silu."""

    name = "tile.matmul"
    x = operand_def(TensorType)
    w = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    block = prop_def(DenseArrayBase)
    warps = prop_def(DenseArrayBase)
    stages = prop_def(IntegerAttr)
    activation = opt_prop_def(StringAttr)
    traits = traits_def(Pure())
    assembly_format = "$x `,` $w (`,` $bias^)? attr-dict `:` `(` type($x) `,` type($w) (`,` type($bias)^)? `)` `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(x: SSAValue, w: SSAValue, bias: SSAValue | None, cfg: GemmConfig) -> "MatmulOp":
        (m, _), (n, _) = x.type.get_shape(), w.type.get_shape()
        props = {"block": DenseArrayBase.from_list(i64, [cfg.bm, cfg.bn, cfg.bk]),
                 "warps": DenseArrayBase.from_list(i64, [cfg.warps_m, cfg.warps_n]),
                 "stages": IntegerAttr(cfg.stages, i64)}
        if cfg.activation != "none":
            props["activation"] = StringAttr(cfg.activation)
        return MatmulOp.create(operands=[x, w] + ([bias] if bias is not None else []),
                               result_types=[TensorType(x.type.element_type, [m, n])], properties=props)

    @property
    def config(self) -> GemmConfig:
        bm, bn, bk = self.block.get_values()
        wm, wn = self.warps.get_values()
        act = self.activation.data if self.activation else "none"
        return GemmConfig(str(self.x.type.element_type), bm, bn, bk, wm, wn, self.stages.value.data, self.bias is not None, act,
                          copy_elems(self.x.type.get_shape()[1]))

    def verify_(self):
        x, w = self.x.type, self.w.type
        if str(x.element_type) not in ("f16", "bf16") or x.element_type != w.element_type:
            raise VerifyException(f"tile.matmul takes f16 or bf16 operands of one type, got {x} and {w}")
        if len(x.get_shape()) != 2 or len(w.get_shape()) != 2 or x.get_shape()[1] != w.get_shape()[1]:
            raise VerifyException(f"tile.matmul needs x [M, K] and w [N, K], got {x} and {w}")
        want = TensorType(x.element_type, [x.get_shape()[0], w.get_shape()[0]])
        if self.bias is not None and self.bias.type != TensorType(x.element_type, [w.get_shape()[0]]):
            raise VerifyException(f"bias must be tensor<{w.get_shape()[0]}x{x.element_type}>, got {self.bias.type}")
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
