"""The `tile` dialect: whole-tensor ops with their thread-block schedule made explicit.

    %y = tile.matmul %x, %w {block = array<i64: 128, 128, 32>, warps = array<i64: 2, 2>, stages = 3 : i64}
           : tensor<MxKxf16>, tensor<NxKxf16> -> tensor<MxNxf16>

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
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    opt_result_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from dialects.lp import QuantAttr
from ir.layout import Swizzle


MAX_SHARED_BYTES = 227 * 1024  # per block on sm_90 (sm_80: 163 KiB; the launcher checks the device's)
REDUCE_THREADS = 256  # threads per block of the split-K reduction
EIGHT_BIT_OPERANDS = {"s8": ("s8", "m16n8k32", "s32"), "e4m3": ("e4m3", "m16n8k32", "f32")}  # mma input, shape, accumulator


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
    """One operand's tile in shared memory: `rows` x `cols` elements of `elem_bytes` (2, or 1 for
    e8m0 scales), row-major and swizzled, filled from global memory `elems` elements per copy."""

    rows: int
    cols: int
    elems: int
    elem_bytes: int = 2

    @property
    def row_bytes(self) -> int:
        return self.elem_bytes * self.cols

    @property
    def bytes(self) -> int:
        return self.rows * self.row_bytes

    @property
    def swizzle(self) -> Swizzle:
        return swizzle_for(self.row_bytes)


@dataclass(frozen=True)
class GemmConfig:
    """A tensor-core GEMM schedule: C = act(A @ B^T + bias) with A [M, K]; B is [N, K] (a linear's
    weight), with `b_kn` [K, N] (a matmul's right operand), or with `weight` a low-precision weight
    as lowering.ladder stores it (codes in mma order, scales and zero terms [K / group, N])."""

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
    weight: str = ""  # "" (B in dtype) or an element format with a register decoder (lowering.ladder.decoder)
    group: int = 0  # with `weight`: K elements per scale (0: one scale per output channel)
    scale: str = ""  # with `weight`: "" (scales in dtype) or "e8m0" (MX power-of-two scales)
    zero: bool = False  # with `weight`: a zero term per group, w = q * s + z
    split_k: int = 1  # K split over grid z: partial sums in an f32 workspace, summed by a second kernel
    raster: int = 1  # blocks run in bands of `raster` M-tiles, so a band's B tiles are reused from L2
    prefetch: bool = False  # load the next k16 steps' fragments into registers while the current ones compute
    a8: str = ""  # "" (A and B in dtype) or "s8" / "e4m3": 8-bit A [M, K] and B [N, K] with f32 scales per row of A
    # and of B, multiplied by mma.m16n8k32; dtype is then the output's type

    def __post_init__(self):
        for e in (self.copy_elems, self.b_copy_elems):  # (a packed weight's rows copy 8, 4 or 2 halves: b_tile)
            if e not in (8, 2, 1):
                raise ValueError(f"elements per copy must be 8, 2 or 1, got {e}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation}")
        if self.dtype not in ("f16", "bf16"):
            raise ValueError(f"mma.sync GEMM takes f16 or bf16, not {self.dtype}")
        if self.bk not in (32, 64, 128):
            raise ValueError(f"BK must be 32, 64 or 128, got {self.bk}")
        wm, wn = self.bm // self.warps_m, self.bn // self.warps_n
        if self.bm % self.warps_m or self.bn % self.warps_n or wm % 16 or wn % 16:
            raise ValueError(f"warp tile {wm}x{wn} must be a multiple of 16x16")
        if self.warps_m & (self.warps_m - 1) or self.warps_n & (self.warps_n - 1):
            raise ValueError(f"warps per dim must be powers of two, got {self.warps_m}x{self.warps_n}")
        if self.stages < 2:
            raise ValueError("the pipeline needs at least 2 stages")
        if self.split_k < 1 or self.raster < 1:
            raise ValueError(f"split_k and raster must be at least 1, got {self.split_k} and {self.raster}")
        if self.shared_bytes > MAX_SHARED_BYTES:
            raise ValueError(f"{self.shared_bytes} bytes of shared memory exceed the {MAX_SHARED_BYTES // 1024} KiB a block can have")
        if self.weight:
            self._check_weight()
        elif self.group or self.scale or self.zero:
            raise ValueError("group, scale and zero describe a low-precision weight: set `weight` too")
        if self.a8:
            if self.a8 not in EIGHT_BIT_OPERANDS or self.weight or self.b_kn or self.copy_elems != 8:
                raise ValueError(f"8-bit operands (a8) are s8 or e4m3, with A [M, K] and B [N, K] rows 16-byte aligned, not {self.a8}")
            if self.bk < 64:
                raise ValueError("8-bit operands take BK 64 or 128 (32 bytes per mma step)")
        for tile in self.copied_tiles:
            if tile.elems == 1 and (tile.rows * tile.cols) % self.threads:
                raise ValueError(f"a {tile.rows}x{tile.cols} tile copied element by element does not split evenly over {self.threads} threads")

    @staticmethod
    def weight_fields(fmt) -> dict:
        """The schedule's fields for a weight of ir.numerics.QuantFormat `fmt` (kernels read its scales
        in the activation dtype, or as e8m0 codes)."""
        return {"weight": fmt.element, "group": fmt.group or 0, "scale": "e8m0" if fmt.scale == "e8m0" else "", "zero": fmt.zero != "none"}

    def _check_weight(self):
        from ir.numerics import FormatError
        from lowering.ladder import block_elems, decoder

        try:
            d = decoder(self.weight)
        except FormatError as e:
            raise ValueError(str(e)) from None
        if self.dtype == "bf16" and d.bits == 8 and self.weight.startswith(("int", "uint")):
            raise ValueError("8-bit integer weights decode into f16 only: bf16's mantissa cannot hold 8-bit codes")
        block = block_elems(d.bits)
        if self.b_kn or self.bk % block:
            raise ValueError(f"{self.weight} weights need B as [N, K] and BK a multiple of {block}")
        if self.group and (self.group % 16 or self.group & (self.group - 1)):
            raise ValueError(f"group {self.group} must be a power of two and a multiple of 16")
        if self.scale not in ("", "e8m0"):
            raise ValueError(f"weight scales are in the activation dtype or e8m0, not {self.scale}")

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n

    @property
    def k_unit(self) -> int:
        """K elements per 16-bit unit of A's rows: 2 for 8-bit operands (a pair of bytes), else 1."""
        return 2 if self.a8 else 1

    @property
    def bk_units(self) -> int:
        """A k-tile in 16-bit units: the k16 steps of the kernel are k32 steps for 8-bit operands."""
        return self.bk // self.k_unit

    @property
    def mma(self) -> tuple[str, str, str]:
        """(input type, shape, accumulator type) of the kernel's mma.sync."""
        return EIGHT_BIT_OPERANDS[self.a8] if self.a8 else (self.dtype, "m16n8k16", "f32")

    @property
    def a_tile(self) -> SharedTile:
        return SharedTile(self.bm, self.bk_units, self.copy_elems)

    @property
    def weight_bits(self) -> int:
        from ir.numerics import element_format

        return element_format(self.weight).bits if self.weight else 8 if self.a8 else 16

    @property
    def b_tile(self) -> SharedTile:
        if self.weight:  # packed codes: BK * bits / 16 halves a row, copied 16, 8 or 4 bytes at a time
            cols = self.bk * self.weight_bits // 16
            return SharedTile(self.bn, cols, min(8, cols))
        return SharedTile(self.bk, self.bn, self.b_copy_elems) if self.b_kn else SharedTile(self.bn, self.bk_units, self.copy_elems)

    @property
    def scale_rows(self) -> int:
        """Rows of scales (groups) one k-tile spans."""
        return self.bk // self.group if 0 < self.group < self.bk else 1

    @property
    def scale_tile(self) -> SharedTile | None:
        """A k-tile's scales: `scale_rows` x BN, 16 bytes a copy (None without a weight)."""
        if not self.weight:
            return None
        eb = 1 if self.scale == "e8m0" else 2
        return SharedTile(self.scale_rows, self.bn, 16 // eb, eb)

    @property
    def copied_tiles(self) -> tuple[SharedTile, ...]:
        """Every shared tile the pipeline fills, in shared-memory order: A, B, [scales, [zeros]]."""
        extra = (self.scale_tile,) * (1 + self.zero) if self.weight else ()
        return (self.a_tile, self.b_tile, *extra)

    @property
    def shared_bytes(self) -> int:
        return self.stages * sum(t.bytes for t in self.copied_tiles)

    @property
    def param_names(self) -> tuple[str, ...]:
        """The kernel's parameters: addresses of a, b, [a_scales,] [scales, [zeros],] [bias,] c (the
        f32 workspace when K is split: the bias then goes to the reduction), then the sizes m, n, k."""
        scales = ("a_scales", "scales") if self.a8 else ("scales", "zeros")[: 1 + self.zero] if self.weight else ()
        bias = ("bias",) if self.bias and self.split_k == 1 else ()
        return ("a", "b", *scales, *bias, "c", "m", "n", "k")

    @property
    def param_kinds(self) -> tuple[str, ...]:
        return tuple("u32" if p in ("m", "n", "k") else "u64" for p in self.param_names)

    def grid(self, m: int, n: int) -> tuple[int, int, int]:
        """Thread blocks covering an M x N result (z: the K splits)."""
        return ((n + self.bn - 1) // self.bn, (m + self.bm - 1) // self.bm, self.split_k)

    def workspace_shape(self, m: int, n: int) -> tuple[int, int, int]:
        """The f32 partial sums of a split K: [split_k, M, N rounded up to even] (rows of whole pairs)."""
        return (self.split_k, m, n + (n & 1))

    @property
    def reduce_param_kinds(self) -> tuple[str, ...]:
        """The split-K reduction's parameters: workspace, [bias,] c addresses, then m, n."""
        return ("u64",) * (2 + self.bias) + ("u32",) * 2

    def reduce_grid(self, m: int, n: int) -> tuple[int, int, int]:
        pairs = m * ((n + 1) // 2)
        return ((pairs + REDUCE_THREADS - 1) // REDUCE_THREADS, 1, 1)

    @property
    def name(self) -> str:
        suffix = "_kn" if self.b_kn else ""
        suffix += ("_bias" if self.bias else "") + ("" if self.activation == "none" else f"_{self.activation}")
        suffix += "" if self.copy_elems == 8 else f"_c{self.copy_elems}"
        suffix += f"_bc{self.b_copy_elems}" if self.b_kn and self.b_copy_elems != 8 else ""
        suffix += f"_w{self.weight}g{self.group}{self.scale}{'z' if self.zero else ''}" if self.weight else ""
        suffix += f"_split{self.split_k}" if self.split_k > 1 else ""
        suffix += f"_r{self.raster}" if self.raster > 1 else ""
        suffix += "_pf" if self.prefetch else ""
        suffix += f"_x{self.a8}" if self.a8 else ""
        return f"rung_gemm_{self.dtype}_{self.bm}x{self.bn}x{self.bk}_w{self.warps_m}x{self.warps_n}_s{self.stages}{suffix}"


@irdl_op_definition
class MatmulOp(IRDLOperation):
    """y = act(x @ w^T + bias) on tensor cores: x [M, K], w [N, K] (or, with `b_kn`, y = act(x @ w
    + bias) with w [K, N]), optional bias [N], f16 or bf16, f32 accumulation and epilogue, one
    rounding at the end; `activation` is none, relu or silu. With `weight`, w is a low-precision
    weight of that format as tile.pack_weight lays it out: codes [N, K * bits / 32] (i32),
    scales and zeros [K / group, N16]. With `a8` (s8 or e4m3), x [M, K] and w [N, K] are 8-bit
    with f32 x_scales [M] and scales [N], and the result is f16 or bf16. `split_k` > 1 splits K into
    partial sums; `raster` orders the blocks in bands of M-tiles; `prefetch` double-buffers
    fragments in registers.
    dialects.tile.GemmConfig is the schedule these properties spell out."""

    name = "tile.matmul"
    x = operand_def(TensorType)
    w = operand_def(TensorType)
    x_scales = opt_operand_def(TensorType)
    scales = opt_operand_def(TensorType)
    zeros = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    block = prop_def(DenseArrayBase)
    warps = prop_def(DenseArrayBase)
    stages = prop_def(IntegerAttr)
    activation = opt_prop_def(StringAttr)
    b_kn = opt_prop_def(UnitAttr)
    weight = opt_prop_def(QuantAttr)
    split_k = opt_prop_def(IntegerAttr)
    raster = opt_prop_def(IntegerAttr)
    prefetch = opt_prop_def(UnitAttr)
    a8 = opt_prop_def(StringAttr)
    traits = traits_def(Pure())
    assembly_format = ("$x `,` $w (`x_scales` $x_scales^)? (`scales` $scales^)? (`zeros` $zeros^)? (`bias` $bias^)? attr-dict `:` "
                       "type($x) `,` type($w) (`x_scales` type($x_scales)^)? (`scales` type($scales)^)? (`zeros` type($zeros)^)? "
                       "(`bias` type($bias)^)? `->` type($result)")
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())

    @staticmethod
    def get(x: SSAValue, w: SSAValue, bias: SSAValue | None, cfg: GemmConfig, scales: SSAValue | None = None,
            zeros: SSAValue | None = None, weight: QuantAttr | None = None, x_scales: SSAValue | None = None,
            result_element=None) -> "MatmulOp":
        """`result_element`: the output's element type when x is 8-bit (cfg.a8)."""
        m, n = x.type.get_shape()[0], w.type.get_shape()[1 if cfg.b_kn else 0]
        props = {"block": DenseArrayBase.from_list(i64, [cfg.bm, cfg.bn, cfg.bk]),
                 "warps": DenseArrayBase.from_list(i64, [cfg.warps_m, cfg.warps_n]),
                 "stages": IntegerAttr(cfg.stages, i64)}
        if cfg.activation != "none":
            props["activation"] = StringAttr(cfg.activation)
        if cfg.b_kn:
            props["b_kn"] = UnitAttr()
        if cfg.prefetch:
            props["prefetch"] = UnitAttr()
        if cfg.a8:
            props["a8"] = StringAttr(cfg.a8)
        if weight is not None:
            props["weight"] = weight
        for name in ("split_k", "raster"):
            if getattr(cfg, name) > 1:
                props[name] = IntegerAttr(getattr(cfg, name), i64)
        operands = [x, w, [x_scales] if x_scales else [], [scales] if scales else [], [zeros] if zeros else [], [bias] if bias else []]
        out = TensorType(result_element or x.type.element_type, [m, n])
        return MatmulOp.build(operands=operands, result_types=[out], properties=props)

    @property
    def operand_names(self) -> list[str]:
        """The kernel parameter (GemmConfig.param_names, and "bias") each operand becomes, in order."""
        named = (("a", self.x), ("b", self.w), ("a_scales", self.x_scales), ("scales", self.scales), ("zeros", self.zeros), ("bias", self.bias))
        return [name for name, v in named if v is not None]

    @property
    def config(self) -> GemmConfig:
        bm, bn, bk = self.block.get_values()
        wm, wn = self.warps.get_values()
        act = self.activation.data if self.activation else "none"
        n = self.result.type.get_shape()[1]
        weight = GemmConfig.weight_fields(self.weight.format) if self.weight is not None else {}
        a8 = self.a8.data if self.a8 else ""
        k = self.x.type.get_shape()[1]
        return GemmConfig(str(self.result.type.element_type), bm, bn, bk, wm, wn, self.stages.value.data, self.bias is not None, act,
                          8 if a8 else copy_elems(k), self.b_kn is not None, copy_elems(n) if self.b_kn else 8,
                          split_k=self.split_k.value.data if self.split_k else 1, raster=self.raster.value.data if self.raster else 1,
                          prefetch=self.prefetch is not None, a8=a8, **weight)

    def verify_(self):
        x, w = self.x.type, self.w.type
        if self.a8 is not None:
            n = self._verify_eight_bit()
        elif str(x.element_type) not in ("f16", "bf16") or len(x.get_shape()) != 2:
            raise VerifyException(f"tile.matmul takes x [M, K] of f16 or bf16, got {x}")
        elif self.weight is not None:
            n = self._verify_packed_weight()
        else:
            k_dim = 0 if self.b_kn else 1
            if x.element_type != w.element_type or len(w.get_shape()) != 2 or x.get_shape()[1] != w.get_shape()[k_dim]:
                raise VerifyException(f"tile.matmul needs w {'[K, N]' if self.b_kn else '[N, K]'} of x's type, got {x} and {w}")
            if self.scales is not None or self.zeros is not None:
                raise VerifyException("scales and zeros belong to a low-precision weight: set `weight`")
            n = w.get_shape()[1 - k_dim]
        out = self.result.type.element_type
        want = TensorType(out, [x.get_shape()[0], n])
        if self.x_scales is not None and self.a8 is None:
            raise VerifyException("x_scales belong to 8-bit operands: set `a8`")
        if self.bias is not None and self.bias.type != TensorType(out, [n]):
            raise VerifyException(f"bias must be tensor<{n}x{out}>, got {self.bias.type}")
        if self.result.type != want:
            raise VerifyException(f"result type must be {want}, got {self.result.type}")
        if len(self.block.get_values()) != 3 or len(self.warps.get_values()) != 2:
            raise VerifyException("block is [BM, BN, BK] and warps is [WM, WN]")
        try:
            self.config
        except ValueError as e:
            raise VerifyException(str(e)) from None

    def _verify_eight_bit(self) -> int:
        """x [M, K] and w [N, K] of the 8-bit type, x_scales [M] and scales [N] of f32, K a multiple of 16."""
        from xdsl.dialects.builtin import Float8E4M3FNType, f32, i8

        x, w = self.x.type, self.w.type
        elem = {"s8": i8, "e4m3": Float8E4M3FNType()}.get(self.a8.data)
        if elem is None or x.element_type != elem or w.element_type != elem or len(x.get_shape()) != 2 or len(w.get_shape()) != 2:
            raise VerifyException(f"8-bit operands {self.a8.data} need x [M, K] and w [N, K] of {elem}, got {x} and {w}")
        (m, k), (n, k2) = x.get_shape(), w.get_shape()
        if k != k2 or k % 16:
            raise VerifyException(f"x and w must share K, a multiple of 16 (16-byte rows), got {k} and {k2}")
        if self.x_scales is None or self.scales is None or self.x_scales.type != TensorType(f32, [m]) or self.scales.type != TensorType(f32, [n]):
            raise VerifyException(f"8-bit operands need x_scales tensor<{m}xf32> and scales tensor<{n}xf32>")
        if str(self.result.type.element_type) not in ("f16", "bf16"):
            raise VerifyException(f"the result of 8-bit operands is f16 or bf16, got {self.result.type.element_type}")
        return n

    def _verify_packed_weight(self) -> int:
        fmt = self.weight.format
        x = self.x.type
        n, k = self.w.type.get_shape()[0], x.get_shape()[1]
        want = packed_types(fmt, str(x.element_type), n, k)
        got = [self.w.type, self.scales.type if self.scales else None, self.zeros.type if self.zeros else None]
        for what, t, g in zip(("codes", "scales", "zeros"), want, got):
            if t != g:
                raise VerifyException(f"a {fmt.element} weight's packed {what} must be {t or 'absent'}, got {g or 'none'}")
        return n

    def _dense_weight(self, w, scales, zeros):
        """w as [N, K] values of the activation dtype (a packed weight decoded as the kernel decodes it;
        8-bit operands times their per-row scale)."""
        if self.a8 is not None:
            return np.asarray(w, np.float64) * np.asarray(scales, np.float64)[:, None]
        if self.weight is None:
            return w.T if self.b_kn else w
        from lowering.ladder import PackedWeight, unpack_weight

        cfg = self.config
        packed = PackedWeight(np.asarray(w).view(np.uint32), _bits(scales), _bits(zeros) if zeros is not None else None)
        return unpack_weight(packed, cfg.weight, cfg.group, cfg.scale == "e8m0", cfg.dtype, self.x.type.get_shape()[1])

    def execute(self, x, w, *rest):
        cfg = self.config
        rest = list(rest)
        x_scales = rest.pop(0) if self.x_scales is not None else None
        scales = rest.pop(0) if self.scales is not None else None
        zeros = rest.pop(0) if self.zeros is not None else None
        bias = rest.pop(0) if self.bias is not None else None
        w = self._dense_weight(w, scales, zeros)  # [N, K]
        if x_scales is not None:
            x = np.asarray(x, np.float64) * np.asarray(x_scales, np.float64)[:, None]
        m, k = x.shape
        n = w.shape[0]
        per_split = -(-k // cfg.bk // cfg.split_k) * cfg.bk
        y = np.zeros((m, n), np.float32)
        for m0 in range(0, m, cfg.bm):  # one thread block per output tile and K split, K in BK steps
            for n0 in range(0, n, cfg.bn):
                for s0 in range(0, k, per_split):
                    acc = np.zeros((min(cfg.bm, m - m0), min(cfg.bn, n - n0)), np.float32)
                    for k0 in range(s0, min(k, s0 + per_split), cfg.bk):
                        a = x[m0:m0 + cfg.bm, k0:k0 + cfg.bk].astype(np.float32)
                        b = w[n0:n0 + cfg.bn, k0:k0 + cfg.bk].astype(np.float32)
                        acc += a @ b.T
                    y[m0:m0 + cfg.bm, n0:n0 + cfg.bn] += acc
        if bias is not None:
            y += bias.astype(np.float32)
        return ACTIVATIONS[cfg.activation](y)


def _bits(x) -> np.ndarray:
    """A packed scale tensor's raw bits: 16-bit patterns, or e8m0 codes as they are."""
    x = np.asarray(x)
    return x.view(np.uint16) if x.dtype.itemsize == 2 else x.astype(np.uint8)


def packed_types(fmt, dtype: str, n: int, k: int) -> list:
    """The tensor types of a weight [N, K] of format `fmt` packed for `dtype` activations:
    codes, scales, zeros (None when the format has none)."""
    from xdsl.dialects.builtin import IntegerType, Signedness, bf16, f16, i32

    from ir.numerics import element_format
    from lowering.ladder import N_ALIGN

    act = f16 if dtype == "f16" else bf16
    groups = k // (fmt.group or k)
    n16 = -(-n // N_ALIGN) * N_ALIGN
    scale = IntegerType(8, Signedness.UNSIGNED) if fmt.scale == "e8m0" else act
    codes = TensorType(i32, [n, k * element_format(fmt.element).bits // 32])
    return [codes, TensorType(scale, [groups, n16]), TensorType(act, [groups, n16]) if fmt.zero != "none" else None]


@irdl_op_definition
class PackWeightOp(IRDLOperation):
    """Ladder's offline transform of a quantized weight (its element values, scales and zeros as
    graph.qlinear holds them) into what a tensor-core kernel with `dtype` activations reads:
    codes in mma order and scales and zero terms [K / group, N16] (lowering.ladder.pack_weight).
    It depends on the weight alone, so it runs once per weight, not per call."""

    name = "tile.pack_weight"
    qweight = operand_def(TensorType)
    scales = operand_def(TensorType)
    zeros = opt_operand_def(TensorType)
    codes = result_def(TensorType)
    packed_scales = result_def(TensorType)
    packed_zeros = opt_result_def(TensorType)
    format = prop_def(QuantAttr)
    dtype = prop_def(StringAttr)
    traits = traits_def(Pure())
    assembly_format = ("$qweight `,` $scales (`zeros` $zeros^)? attr-dict `:` type($qweight) `,` type($scales) "
                       "(`zeros` type($zeros)^)? `->` type($codes) `,` type($packed_scales) (`,` type($packed_zeros)^)?")
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(qweight: SSAValue, scales: SSAValue, zeros: SSAValue | None, fmt: QuantAttr, dtype: str) -> "PackWeightOp":
        n, k = qweight.type.get_shape()
        types = packed_types(fmt.format, dtype, n, k)
        return PackWeightOp.build(operands=[qweight, scales, [zeros] if zeros else []], result_types=[types[0], types[1], types[2:] if types[2] else []],
                                  properties={"format": fmt, "dtype": StringAttr(dtype)})

    def verify_(self):
        if self.dtype.data not in ("f16", "bf16"):
            raise VerifyException(f"weights are packed for f16 or bf16 activations, not {self.dtype.data}")
        fmt = self.format.format
        n, k = self.qweight.type.get_shape()
        want = packed_types(fmt, self.dtype.data, n, k)
        got = [self.codes.type, self.packed_scales.type, self.packed_zeros.type if self.packed_zeros else None]
        if want != got:
            raise VerifyException(f"packing a {n}x{k} {fmt.element} weight gives {', '.join(str(t) for t in want if t)}")

    def execute(self, qweight, scales, zeros=None):
        from ir.dtypes import storage_dtype
        from lowering.ladder import pack_weight

        packed = pack_weight(qweight, scales, zeros, self.format.format, self.dtype.data)
        out = [packed.codes.view(np.int32), packed.scales.view(storage_dtype(self.packed_scales.type.element_type))]
        if packed.zeros is not None:
            out.append(packed.zeros.view(storage_dtype(self.packed_zeros.type.element_type)))
        return tuple(out)


TILE = Dialect("tile", [MatmulOp, PackWeightOp], [])
