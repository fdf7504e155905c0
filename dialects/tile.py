"""The `tile` dialect: whole-tensor ops with their thread-block schedule made explicit.

    %y = tile.matmul %x, %w {block = array<i64: 128, 128, 32>, warps = array<i64: 2, 2>, stages = 3 : i64}
           : tensor<MxKxf16>, tensor<NxKxf16> -> tensor<MxNxf16>

computes y = x @ w^T as the kernel will: one thread block per BM x BN tile of y, K in BK steps
through a `stages`-deep shared-memory pipeline, f32 accumulation, one rounding to the output
type. Its interpreter runs exactly that blocked order, so the schedule is checked on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    DenseArrayBase,
    IndexType,
    IntAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, ParametrizedAttribute, Region, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    VarConstraint,
    base,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    opt_result_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.traits import IsTerminator, Pure, SymbolOpInterface
from xdsl.utils.exceptions import VerifyException

from dialects.lp import QuantAttr
from ir.layout import Swizzle


TABLE_ROWS = 256  # GemmConfig.shared_table: a pair per byte of codes,
TABLE_BYTES = TABLE_ROWS * 32 * 4  # each row 32 copies of it, one per bank
MAX_SHARED_BYTES = 227 * 1024  # per block on sm_90 (sm_80: 163 KiB; the launcher checks the device's)
REDUCE_THREADS = 256  # threads per block of the split-K reduction
EIGHT_BIT_OPERANDS = {"s8": ("s8", "m16n8k32", "s32"), "e4m3": ("e4m3", "m16n8k32", "f32")}  # mma input, shape, accumulator


def reduce_grid(m: int, n: int) -> tuple[int, int, int]:
    """Blocks of the split-K reduction over an M x N result: a column pair per thread."""
    pairs = m * ((n + 1) // 2)
    return ((pairs + REDUCE_THREADS - 1) // REDUCE_THREADS, 1, 1)


def reduce_param_kinds(bias: bool) -> tuple[str, ...]:
    """The split-K reduction's parameters: workspace, [bias,] c addresses, then m, n."""
    return ("u64",) * (2 + bias) + ("u32",) * 2


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
    as ir.packing stores it (codes in mma order, scales and zero terms [K / group, N])."""

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
    weight: str = ""  # "" (B in dtype) or an element format with a register decoder (ir.packing.decoder)
    group: int = 0  # with `weight`: K elements per scale (0: one scale per output channel)
    scale: str = ""  # with `weight`: "" (scales in dtype) or "e8m0" (MX power-of-two scales)
    zero: bool = False  # with `weight`: a zero term per group, w = q * s + z
    split_k: int = 1  # K split over grid z: partial sums in an f32 workspace, summed by a second kernel
    raster: int = 1  # blocks run in bands of `raster` M-tiles, so a band's B tiles are reused from L2
    prefetch: bool = False  # load the next k16 steps' fragments into registers while the current ones compute
    a8: str = ""  # "" (A and B in dtype) or "s8" / "e4m3": 8-bit A [M, K] and B [N, K] with f32 scales per row of A
    # and of B, multiplied by mma.m16n8k32; dtype is then the output's type
    scale_partials: bool = False  # with `weight` (no zero terms): mma the unscaled codes' values and scale each group's
    # f32 partial sums by its column's scale, instead of scaling every decoded weight (fewer ops where M-tiles are 16 rows)
    shared_table: bool = False  # with a table-decoded weight (nf4): each byte of codes looked up as a pair in a table of
    # all 256 in shared memory, one copy per bank (TABLE_BYTES), instead of picked by prmt from registers (fewer ALU ops)
    wgmma: bool = False  # sm_90a: each warpgroup (4 warps, 64 rows) multiplies by wgmma.m64nNk16 A and B in shared memory,
    # or with `weight` its 64 rows of the weight decoded into registers and the block's rows of A in shared memory

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
        if self.bm == 8 and (not self.weight or self.warps_m != 1):
            raise ValueError("8-row tiles put a packed weight in the mma's A operand: they need `weight` and one warp along M")
        if self.bm % self.warps_m or self.bn % self.warps_n or (wm % 16 and not self.weight_is_a) or wn % 16:
            raise ValueError(f"warp tile {wm}x{wn} must be a multiple of 16x16 (or 8x16 for a packed weight)")
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
        elif self.group or self.scale or self.zero or self.scale_partials or self.shared_table:
            raise ValueError("group, scale, zero, scale_partials and shared_table describe a low-precision weight: set `weight` too")
        if self.scale_partials and self.zero:
            raise ValueError("scale_partials scales partial sums: a weight with zero terms scales each value")
        if self.a8:
            if self.a8 not in EIGHT_BIT_OPERANDS or self.weight or self.b_kn or self.copy_elems != 8:
                raise ValueError(f"8-bit operands (a8) are s8 or e4m3, with A [M, K] and B [N, K] rows 16-byte aligned, not {self.a8}")
            if self.bk < 64:
                raise ValueError("8-bit operands take BK 64 or 128 (32 bytes per mma step)")
        if self.wgmma:
            self._check_wgmma()
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
        from ir.packing import LutDecode, block_elems, decoder

        try:
            d = decoder(self.weight)
        except FormatError as e:
            raise ValueError(str(e)) from None
        if self.shared_table and (not isinstance(d, LutDecode) or TABLE_ROWS % self.threads):
            raise ValueError(f"a shared table holds the pairs of a table-decoded weight (nf4), filled by at most {TABLE_ROWS} "
                             f"threads: not {self.weight} with {self.threads} threads")
        if self.dtype == "bf16" and d.bits == 8 and self.weight.startswith(("int", "uint")):
            raise ValueError("8-bit integer weights decode into f16 only: bf16's mantissa cannot hold 8-bit codes")
        block = block_elems(d.bits)
        if self.b_kn or self.bk % block:
            raise ValueError(f"{self.weight} weights need B as [N, K] and BK a multiple of {block}")
        if self.group and (self.group % 16 or self.group & (self.group - 1)):
            raise ValueError(f"group {self.group} must be a power of two and a multiple of 16")
        if self.scale not in ("", "e8m0"):
            raise ValueError(f"weight scales are in the activation dtype or e8m0, not {self.scale}")

    def _check_wgmma(self):
        if self.b_kn or self.prefetch or self.scale_partials:
            raise ValueError("wgmma tiles read A [M, K] and B [N, K] (or a packed weight): no [K, N] B, register prefetch or scale_partials")
        if self.bk_units != 64 or self.copy_elems != 8:
            raise ValueError("wgmma tiles take k-tiles of 128 bytes a row (BK 64, or 128 for 8-bit operands: the 128-byte "
                             "swizzle) and rows copied 16 bytes at a time")
        if self.stages < 3:
            raise ValueError("wgmma tiles need 3 stages or more: one k-tile's wgmmas stay in flight while the next loads")
        if self.weight:  # the decoded weight is wgmma's A from registers, the activation rows its B (N = BM)
            if self.warps_m != 1 or self.warps_n % 4 or self.bn != 16 * self.warps_n or self.bm > 256 or self.bm % 16:
                raise ValueError(f"wgmma tiles with a packed weight give each warpgroup 64 of its rows (warps_n = BN / 16 in fours, "
                                 f"warps_m = 1) and take BM <= 256 activation rows, got {self.bm}x{self.bn} with "
                                 f"{self.warps_m}x{self.warps_n} warps")
            return
        if self.warps_n != 1 or self.warps_m % 4 or self.bm != 16 * self.warps_m or self.bn > 256:
            raise ValueError(f"wgmma tiles give each warpgroup 64 rows (warps_m = BM / 16 in fours, warps_n = 1) and BN <= 256, "
                             f"got {self.bm}x{self.bn} with {self.warps_m}x{self.warps_n} warps")

    @property
    def weight_is_a(self) -> bool:
        """8-row tiles (M <= 8, decoding): the decoded weight is mma.m16n8k16's A operand (16 output
        channels) and the activations its B (8 rows of A), so one mma covers twice the weight a
        16-row tile's does; the accumulators hold C transposed."""
        return self.bm == 8

    @property
    def c_transposed(self) -> bool:
        """The decoded weight is the A operand (8-row tiles, or wgmma's registers), so the accumulators hold C transposed."""
        return self.weight_is_a or (self.wgmma and bool(self.weight))

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
    def scale_span(self) -> int:
        """K elements of a k-tile one row of scales covers: a group, or the whole k-tile."""
        return self.group if 0 < self.group < self.bk else self.bk

    @property
    def scale_rows(self) -> int:
        """Rows of scales (groups) one k-tile spans."""
        return self.bk // self.scale_span

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
    def copy_k_steps(self) -> tuple[tuple[int, tuple[int, int]], ...]:
        """Per copied tile (copied_tiles order): the source dimension K runs along, and (num, den)
        placing k-tile t at t * num // den along it (rows or columns of the source)."""
        b = (1, (self.bk * self.weight_bits // 32, 1)) if self.weight else (0 if self.b_kn else 1, (self.bk, 1))
        return ((1, (self.bk, 1)), b) + ((0, (self.bk, self.group)),) * (len(self.copied_tiles) - 2)

    @property
    def table_offset(self) -> int:
        """Where the shared table (`shared_table`) starts: after the pipeline's tiles."""
        return self.stages * sum(t.bytes for t in self.copied_tiles)

    @property
    def shared_bytes(self) -> int:
        """The tiles' bytes, the shared table's, and with wgmma 1 KiB to align them to the swizzle's
        1024-byte period (lowering.warp_to_ptx)."""
        return self.table_offset + (TABLE_BYTES if self.shared_table else 0) + (1024 if self.wgmma else 0)

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
        suffix += "_sp" if self.scale_partials else ""
        suffix += "_lut" if self.shared_table else ""
        suffix += "_wg" if self.wgmma else ""
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
    fragments in registers; `scale_partials` scales each group's f32 partial sums (w = q * s
    unrounded) instead of each decoded weight (w = q * s + z rounded to the activation type);
    `shared_table` decodes a table format's codes (nf4) by lookups in shared memory; `wgmma`
    multiplies by warpgroups on sm_90a. dialects.tile.GemmConfig is the schedule these
    properties spell out."""

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
    scale_partials = opt_prop_def(UnitAttr)
    shared_table = opt_prop_def(UnitAttr)
    wgmma = opt_prop_def(UnitAttr)
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
        if cfg.scale_partials:
            props["scale_partials"] = UnitAttr()
        if cfg.shared_table:
            props["shared_table"] = UnitAttr()
        if cfg.wgmma:
            props["wgmma"] = UnitAttr()
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
                          prefetch=self.prefetch is not None, a8=a8, scale_partials=self.scale_partials is not None,
                          shared_table=self.shared_table is not None, wgmma=self.wgmma is not None, **weight)

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
        from ir.packing import PackedWeight, unpack_weight

        cfg = self.config
        packed = PackedWeight(np.asarray(w).view(np.uint32), _bits(scales, cfg.dtype), _bits(zeros, cfg.dtype) if zeros is not None else None)
        return unpack_weight(packed, cfg.weight, cfg.group, cfg.scale == "e8m0", cfg.dtype, self.x.type.get_shape()[1])

    def execute(self, x, w, *rest):
        cfg = self.config
        rest = list(rest)
        x_scales = rest.pop(0) if self.x_scales is not None else None
        scales = rest.pop(0) if self.scales is not None else None
        zeros = rest.pop(0) if self.zeros is not None else None
        bias = rest.pop(0) if self.bias is not None else None
        if cfg.scale_partials:  # the codes' values, and each group's partial sums scaled (as the kernel does)
            from ir.packing import code_chunk_bytes, code_rows, decode_values, group_scales

            k = x.shape[1]
            s = group_scales(_bits(scales, cfg.dtype)[:, :w.shape[0]], cfg.scale == "e8m0", cfg.dtype, rounded=False)
            w = decode_values(code_rows(np.asarray(w).view(np.uint32), code_chunk_bytes(cfg.weight_bits)), cfg.weight, cfg.dtype, k)
        else:
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
                        if cfg.scale_partials:
                            rows = s[k0 // cfg.group:][:cfg.scale_rows] if cfg.group else s[:1]
                            acc = add_scaled_partials(acc, a, b, rows[:, n0:n0 + cfg.bn], cfg.scale_span)
                        else:
                            acc += a @ b.T
                    y[m0:m0 + cfg.bm, n0:n0 + cfg.bn] += acc
        if bias is not None:
            y += bias.astype(np.float32)
        return ACTIVATIONS[cfg.activation](y)


def _bits(x, dtype: str) -> np.ndarray:
    """A packed scale tensor's raw bits (its values arrive widened to f32): 16-bit patterns of
    `dtype`, or e8m0 codes as they are."""
    x = np.asarray(x)
    if x.dtype.itemsize == 2:
        return x.view(np.uint16)
    if x.dtype.kind == "f":
        return x.astype(np.float16 if dtype == "f16" else ml_dtypes.bfloat16).view(np.uint16)
    return x.astype(np.uint8)


def packed_types(fmt, dtype: str, n: int, k: int) -> list:
    """The tensor types of a weight [N, K] of format `fmt` packed for `dtype` activations:
    codes, scales, zeros (None when the format has none)."""
    from xdsl.dialects.builtin import IntegerType, Signedness, bf16, f16, i32

    from ir.numerics import element_format
    from ir.packing import N_ALIGN

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
    codes in mma order stored in 16-row tiles, and scales and zero terms [K / group, N16]
    (ir.packing.pack_weight). It depends on the weight alone, so it runs once per weight, not per call."""

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
        from ir.packing import pack_weight

        packed = pack_weight(qweight, scales, zeros, self.format.format, self.dtype.data)
        out = [packed.codes.view(np.int32), packed.scales.view(storage_dtype(self.packed_scales.type.element_type))]
        if packed.zeros is not None:
            out.append(packed.zeros.view(storage_dtype(self.packed_zeros.type.element_type)))
        return tuple(out)


# --- The block program: what one thread block of a scheduled GEMM does, op by op -----------------
#
# tile-expand turns a tile.matmul into a tile.kernel (one thread block's program over
# shape-generic tensors) and a tile.launch of it over the grid of output tiles. Inside it, tiles
# live in shared memory (!tile.shared: one tile per pipeline stage) and in registers (!tile.frag:
# spread over the block's lanes as its named mma fragment layout says). Every op means something
# on numpy for one block, which tile.launch runs block by block; tile-to-warp lowers it op by op.


class _TileShapeType(ParametrizedAttribute, TypeAttribute):
    """A shape and an element type, printed <d0x...xelement[, extra]>."""

    shape: ArrayAttr[IntAttr]
    element: Attribute

    def get_shape(self) -> tuple[int, ...]:
        return tuple(d.data for d in self.shape.data)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string("<" + "x".join(str(d) for d in self.get_shape()) + "x")
        printer.print_attribute(self.element)
        for extra in self.parameters[2:]:
            printer.print_string(f", {extra.data}")
        printer.print_string(">")

    @staticmethod
    def _parse_shape(parser: AttrParser, dims: int, what: str):
        shape, element = parser.parse_ranked_shape()
        if len(shape) != dims:
            parser.raise_error(f"a {what} has {dims} dimensions")
        return ArrayAttr([IntAttr(d) for d in shape]), element


@irdl_attr_definition
class SharedType(_TileShapeType):
    """A shared-memory buffer of stages x rows x cols elements: one tile per pipeline stage."""

    name = "tile.shared"

    @staticmethod
    def get(stages: int, rows: int, cols: int, element: Attribute) -> "SharedType":
        return SharedType(ArrayAttr([IntAttr(stages), IntAttr(rows), IntAttr(cols)]), element)

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            return cls._parse_shape(parser, 3, "shared buffer (stages x rows x cols)")


FRAGMENT_LAYOUTS = {
    "a": "mma A operand [M, K] (ldmatrix x4)",
    "b": "mma B operand stored [N, K] (ldmatrix)",
    "bt": "mma B operand stored [K, N] (ldmatrix.trans)",
    "packed": "low-precision B codes [N, K * bits / 32] in mma order: one 32-bit word per lane, n8 tile and k-block",
    "group": "scale or zero rows [groups, N]: each lane holds the columns of its B fragments",
    "group_acc": "scale rows [groups, N]: each lane holds the columns of its accumulators",
    "acc": "mma accumulator [M, N]: lane (g, t) holds rows g and g + 8, columns 2t and 2t + 1 of each 16 x 8 tile",
}


@irdl_attr_definition
class FragType(_TileShapeType):
    """A tile in registers, spread over the block's warps (the kernel's warp grid) and their
    lanes by `layout` (FRAGMENT_LAYOUTS)."""

    name = "tile.frag"
    layout: StringAttr

    @staticmethod
    def get(rows: int, cols: int, element: Attribute, layout: str) -> "FragType":
        return FragType(ArrayAttr([IntAttr(rows), IntAttr(cols)]), element, StringAttr(layout))

    @classmethod
    def parse_parameters(cls, parser: AttrParser):
        with parser.in_angle_brackets():
            shape, element = cls._parse_shape(parser, 2, "fragment (rows x cols)")
            parser.parse_punctuation(",")
            return shape, element, StringAttr(parser.parse_identifier())

    def verify(self) -> None:
        if self.layout.data not in FRAGMENT_LAYOUTS:
            raise VerifyException(f"fragment layout must be one of {', '.join(FRAGMENT_LAYOUTS)}, got {self.layout.data}")


@dataclass(frozen=True)
class BlockIds:
    """The block being interpreted: its (x, y, z) in `grid`, and the kernel's schedule."""

    x: int
    y: int
    z: int
    grid: tuple[int, int, int]
    cfg: GemmConfig


def _print_region(printer: Printer, keyword: str, region: Region) -> None:
    """` keyword (%arg: type, ...) {ops}`."""
    printer.print_string(f" {keyword} (" if keyword else " (")
    printer.print_list(region.block.args, printer.print_block_argument)
    printer.print_string(") ")
    printer.print_region(region, print_entry_block_args=False)


def _parse_region(parser: Parser, keyword: str) -> Region:
    if keyword:
        parser.parse_keyword(keyword)
    args = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_argument)
    return parser.parse_region(args)


def _run_block(block: Block, env: dict, ids: BlockIds) -> list:
    """Run a block program's ops in order (nested regions see `env`); returns what tile.yield passes on."""
    for op in block.ops:
        vals = [env[v] for v in op.operands]
        if isinstance(op, YieldOp):
            return vals
        outs = op.run_regions(ids, env, *vals) if isinstance(op, PipelineOp) else op.run(ids, *vals)
        env.update(zip(op.results, outs if isinstance(outs, tuple) else (outs,)))
    return []


def _window(x: np.ndarray, r0: int, c0: int, rows: int, cols: int) -> np.ndarray:
    """x[r0:r0 + rows, c0:c0 + cols], zeros outside x."""
    out = np.zeros((rows, cols), x.dtype)
    part = x[r0:r0 + rows, c0:c0 + cols]
    out[:part.shape[0], :part.shape[1]] = part
    return out


_INDEX = IndexType()
_A8_ELEMENTS = {"i8": "s8", "f8E4M3FN": "e4m3"}


def generic_tensor(element: Attribute, rank: int = 2) -> TensorType:
    """A tensor of any shape of that rank: what a kernel's arguments are."""
    return TensorType(element, [DYNAMIC_INDEX] * rank)


@irdl_op_definition
class KernelOp(IRDLOperation):
    """One thread block's program, a symbol that tile.launch runs over a grid. Its arguments are
    the launch's operands as shape-generic tensors, then the output it writes with tile.store.
    `block` = [BM, BN, BK] and `warps` = [WM, WN] (how warps split the block tile); `stages` deep
    copy pipeline; with `split_k`, grid z splits each tile's K; `raster` bands M-tiles;
    `prefetch` loads the next k16 step's fragments while the current one computes; `wgmma`
    multiplies by warpgroups (sm_90a)."""

    name = "tile.kernel"
    sym_name = prop_def(StringAttr)
    block = prop_def(DenseArrayBase)
    warps = prop_def(DenseArrayBase)
    stages = prop_def(IntegerAttr)
    split_k = opt_prop_def(IntegerAttr)
    raster = opt_prop_def(IntegerAttr)
    prefetch = opt_prop_def(UnitAttr)
    wgmma = opt_prop_def(UnitAttr)
    body = region_def("single_block")
    traits = traits_def(SymbolOpInterface())

    def print(self, printer: Printer) -> None:
        printer.print_string(f" @{self.sym_name.data}")
        printer.print_op_attributes({k: v for k, v in self.properties.items() if k != "sym_name"})
        _print_region(printer, "", self.body)

    @classmethod
    def parse(cls, parser: Parser) -> "KernelOp":
        name = parser.parse_symbol_name()
        props = parser.parse_optional_attr_dict()
        return cls.create(properties={"sym_name": name, **props}, regions=[_parse_region(parser, "")])

    def ops_of(self, cls) -> list:
        return [o for o in self.body.walk() if isinstance(o, cls)]

    @property
    def config(self) -> GemmConfig:
        """The schedule the program carries out. With a split K the output is f32 partial sums, and
        bias and activation belong to tile.sum_splits (so to the reduction's schedule, not this)."""
        bm, bn, bk = self.block.get_values()
        wm, wn = self.warps.get_values()
        a_copy, b_copy = self.ops_of(CopyOp)[:2]
        x, out = self.body.block.args[0].type, self.body.block.args[-1].type
        a8 = _A8_ELEMENTS.get(str(x.element_type), "")
        if str(out.element_type) in ("f16", "bf16"):
            dtype = str(out.element_type)
        else:  # f32 partial sums; 8-bit operands: the reduction rounds to its own type
            dtype = "f16" if a8 else str(x.element_type)
        epilogue, decode = self.ops_of(EpilogueOp)[0], self.ops_of(DecodeOp)
        weight = {}
        if decode:  # the scales go with the decode, or with the mma (scale_partials)
            scaled = decode[0] if decode[0].scales is not None else self.ops_of(MmaOp)[0]
            if scaled.scales is None:
                raise ValueError("a decoded weight's scales go to tile.decode or to the tile.mma that takes it: neither has them")
            if scaled.group is None:
                raise ValueError(f"{scaled.name}'s scales come with their group size")
            weight = dict(weight=decode[0].element.data, group=scaled.group.value.data,
                          scale="e8m0" if _is_e8m0(scaled.scales) else "", zero=decode[0].zeros is not None,
                          scale_partials=scaled is not decode[0], shared_table=decode[0].shared_table is not None)
        b_kn = b_copy.k_dim.value.data == 0
        return GemmConfig(dtype, bm, bn, bk, wm, wn, self.stages.value.data, epilogue.bias is not None,
                          epilogue.activation.data if epilogue.activation else "none", a_copy.elems, b_kn,
                          b_copy.elems if b_kn else 8, split_k=self.split_k.value.data if self.split_k else 1,
                          raster=self.raster.value.data if self.raster else 1, prefetch=self.prefetch is not None, a8=a8,
                          wgmma=self.wgmma is not None, **weight)

    def verify_(self):
        if not isinstance(self.body.block.last_op, YieldOp):
            raise VerifyException("tile.kernel ends in tile.yield")
        k_dims = {c.buffer: c.k_dim.value.data for c in self.ops_of(CopyOp)}
        for f in self.ops_of(FragmentOp):
            if f.result.type.layout.data in ("b", "bt") and (f.result.type.layout.data == "bt") != (k_dims.get(f.buffer) == 0):
                raise VerifyException("a bt fragment reads a B tile copied with K along its rows (k_dim = 0), a b fragment one with K along its columns")
        for cls in (BlockOriginOp, KRangeOp, PipelineOp, EpilogueOp, StoreOp):
            if len(self.ops_of(cls)) != 1:
                raise VerifyException(f"a GEMM block program has one {cls.name}")
        if len(self.ops_of(CopyOp)) < 2:
            raise VerifyException("a GEMM block program copies A and B")
        try:
            cfg = self.config
        except ValueError as e:
            raise VerifyException(str(e)) from None
        buffers = [op.result.type for op in self.ops_of(SharedBufferOp)]
        for t, tile in zip(buffers, cfg.copied_tiles, strict=True):
            stages, rows, cols = t.get_shape()
            if (stages, rows, cols * element_bits(t.element) // 8) != (cfg.stages, tile.rows, tile.bytes // tile.rows):
                raise VerifyException(f"shared buffer {t} does not hold the schedule's {tile.rows}x{tile.bytes // tile.rows}-byte tiles")
        for copy, (k_dim, k_step) in zip(self.ops_of(CopyOp), cfg.copy_k_steps, strict=True):
            if (copy.k_dim.value.data, tuple(copy.k_step.get_values())) != (k_dim, k_step):
                raise VerifyException(f"tile.copy into {copy.buffer.type} places k-tiles by k_dim = {k_dim}, k_step = {list(k_step)} in this schedule")

    def interpret(self, operands: list, out: np.ndarray) -> np.ndarray:
        """Run every block of the grid, one after another, into `out`."""
        cfg = self.config
        m, n = operands[0].shape[0], operands[1].shape[1 if cfg.b_kn else 0]
        grid = cfg.grid(m, n)
        for z in range(grid[2]):
            for y in range(grid[1]):
                for x in range(grid[0]):
                    _run_block(self.body.block, dict(zip(self.body.block.args, [*operands, out])), BlockIds(x, y, z, grid, cfg))
        return out


def element_bits(t: Attribute) -> int:
    """Bits of an element of a tile: integers' widths, 16-bit and 8-bit floats."""
    from dialects.lp import format_name
    from ir.numerics import element_format

    if isinstance(t, IntegerType):
        return t.width.data
    name = format_name(t)
    return element_format(name).bits if name else {"f16": 16, "bf16": 16, "f32": 32}[str(t)]


@irdl_op_definition
class LaunchOp(IRDLOperation):
    """Run the tile.kernel `kernel` on the operands over the grid of the result's BM x BN tiles
    (z: the K splits of the kernel's schedule); the kernel writes the result."""

    name = "tile.launch"
    kernel = prop_def(SymbolRefAttr)
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = "$kernel `(` $inputs `)` attr-dict `:` functional-type($inputs, results)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(kernel: str, inputs: list, result_type) -> "LaunchOp":
        return LaunchOp.build(operands=[inputs], result_types=[result_type], properties={"kernel": SymbolRefAttr(kernel)})

    def definition(self) -> KernelOp:
        top = self
        while top.parent_op() is not None:
            top = top.parent_op()
        for op in top.walk():
            if isinstance(op, KernelOp) and op.sym_name.data == self.kernel.root_reference.data:
                return op
        raise VerifyException(f"tile.launch: no tile.kernel @{self.kernel.root_reference.data} in the module")

    def execute(self, *inputs):
        out = np.full(self.result.type.get_shape(), np.nan, np.float32)  # poisoned: the kernel writes all of it
        return self.definition().interpret(list(inputs), out)


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Ends a block program or a pipeline region, passing `values` on."""

    name = "tile.yield"
    values = var_operand_def()
    assembly_format = "($values^ `:` type($values))? attr-dict"
    traits = traits_def(IsTerminator())


@irdl_op_definition
class BlockOriginOp(IRDLOperation):
    """(row, column) of this block's output tile: grid x runs over N-tiles inside bands of the
    kernel's `raster` M-tiles, so the B tiles a band reads stay in L2."""

    name = "tile.block_origin"
    row = result_def(_INDEX)
    col = result_def(_INDEX)
    assembly_format = "attr-dict"

    def run(self, ids: BlockIds):
        cfg, (tiles_n, tiles_m, _) = ids.cfg, ids.grid
        pid, band = ids.y * tiles_n + ids.x, tiles_n * cfg.raster
        first = pid // band * cfg.raster
        within = pid % band
        rows = min(tiles_m - first, cfg.raster)  # the last band may be short
        return (first + within % rows) * cfg.bm, within // rows * cfg.bn


@irdl_op_definition
class KRangeOp(IRDLOperation):
    """(first, count) of the BK-wide k-tiles of x's K this block accumulates: all of them, or
    its split's share (grid z of the kernel's split_k)."""

    name = "tile.k_range"
    x = operand_def(TensorType)
    first = result_def(_INDEX)
    count = result_def(_INDEX)
    assembly_format = "$x attr-dict `:` type($x)"

    def run(self, ids: BlockIds, x):
        cfg = ids.cfg
        k_tiles = -(-x.shape[1] // cfg.bk)
        per_split = -(-k_tiles // cfg.split_k)
        first = ids.z * per_split
        return first, max(0, min(k_tiles, first + per_split) - first)


@irdl_op_definition
class SharedBufferOp(IRDLOperation):
    """A buffer in shared memory, one tile per pipeline stage."""

    name = "tile.shared_buffer"
    result = result_def(SharedType)
    assembly_format = "attr-dict `:` type($result)"

    def run(self, ids: BlockIds):
        from ir.dtypes import storage_dtype

        return np.zeros(self.result.type.get_shape(), storage_dtype(self.result.type.element))


@irdl_op_definition
class ZerosOp(IRDLOperation):
    """A register tile of zeros (the accumulator's start)."""

    name = "tile.zeros"
    result = result_def(FragType)
    assembly_format = "attr-dict `:` type($result)"

    def run(self, ids: BlockIds):
        t = self.result.type
        return np.zeros(t.get_shape(), np.int32 if isinstance(t.element, IntegerType) else np.float32)


@irdl_op_definition
class PipelineOp(IRDLOperation):
    """Accumulate over `count` k-tiles from `first`: the `copy` region (k-tile, stage) fills
    pipeline stage `stage` with k-tile's tiles, the `compute` region (stage, acc) reads that stage
    and yields the new accumulator. The kernel's `stages` stages let copies run that many k-tiles
    ahead of compute; in meaning each k-tile is copied, then computed."""

    name = "tile.pipeline"
    first = operand_def(_INDEX)
    count = operand_def(_INDEX)
    init = operand_def(FragType)
    result = result_def(FragType)
    copy = region_def("single_block")
    compute = region_def("single_block")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operands(self.operands)
        printer.print_string(" : ")
        printer.print_attribute(self.init.type)
        _print_region(printer, "copy", self.copy)
        _print_region(printer, "compute", self.compute)

    @classmethod
    def parse(cls, parser: Parser) -> "PipelineOp":
        operands = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_unresolved_operand)
        parser.parse_punctuation(":")
        acc = parser.parse_type()
        operands = parser.resolve_operands(operands, [_INDEX, _INDEX, acc], parser.pos)
        copy, compute = _parse_region(parser, "copy"), _parse_region(parser, "compute")
        return cls.create(operands=operands, result_types=[acc], regions=[copy, compute])

    @staticmethod
    def get(first: SSAValue, count: SSAValue, init: SSAValue) -> "PipelineOp":
        return PipelineOp.build(operands=[first, count, init], result_types=[init.type],
                                regions=[Region(Block(arg_types=[_INDEX, _INDEX])), Region(Block(arg_types=[_INDEX, init.type]))])

    def verify_(self):
        term = self.compute.block.last_op
        if not isinstance(term, YieldOp) or [v.type for v in term.values] != [self.init.type]:
            raise VerifyException("tile.pipeline's compute region yields the accumulator")
        if not isinstance(self.copy.block.last_op, YieldOp) or any(not isinstance(o, (CopyOp, YieldOp)) for o in self.copy.block.ops):
            raise VerifyException("tile.pipeline's copy region holds tile.copy ops")

    def run_regions(self, ids: BlockIds, env: dict, first: int, count: int, acc):
        for i in range(count):
            stage = i % ids.cfg.stages
            env.update(zip(self.copy.block.args, (first + i, stage)))
            _run_block(self.copy.block, env, ids)
            env.update(zip(self.compute.block.args, (stage, acc)))
            (acc,) = _run_block(self.compute.block, env, ids)
        return acc


COPY_BYTES = (16, 8, 4, 2)  # cp.async sizes; 2: a load and a shared store per element


@irdl_op_definition
class CopyOp(IRDLOperation):
    """buffer[stage] = the buffer tile's window of `src` (zeros outside it) at `fixed` along the
    dimension other than `k_dim`, and k-tile `k_tile` along `k_dim`: from k_tile * k_step[0] //
    k_step[1] (k_step: k-tile to rows or columns of src). `bytes` per copy instruction. With
    `row_tiles` (C), src is packed codes stored in tiles of 16 rows, C bytes of each row at a time
    (ir.packing.code_tiles)."""

    name = "tile.copy"
    src = operand_def(TensorType)
    fixed = operand_def(_INDEX)
    k_tile = operand_def(_INDEX)
    buffer = operand_def(SharedType)
    stage = operand_def(_INDEX)
    k_dim = prop_def(IntegerAttr)
    k_step = prop_def(DenseArrayBase)
    bytes = prop_def(IntegerAttr)
    row_tiles = opt_prop_def(IntegerAttr)
    assembly_format = "$src `[` $fixed `,` $k_tile `]` `->` $buffer `[` $stage `]` attr-dict `:` type($src) `,` type($buffer)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(src, fixed, k_tile, buffer, stage, k_dim: int, k_step: tuple[int, int], nbytes: int, row_tiles: int = 0) -> "CopyOp":
        props = {"k_dim": IntegerAttr(k_dim, i64), "k_step": DenseArrayBase.from_list(i64, list(k_step)), "bytes": IntegerAttr(nbytes, i64)}
        if row_tiles:
            props["row_tiles"] = IntegerAttr(row_tiles, i64)
        return CopyOp.build(operands=[src, fixed, k_tile, buffer, stage], properties=props)

    @property
    def elems(self) -> int:
        """16-bit units per copy (GemmConfig's copy_elems)."""
        return self.bytes.value.data // 2

    def verify_(self):
        if self.k_dim.value.data not in (0, 1) or len(self.k_step.get_values()) != 2 or self.bytes.value.data not in COPY_BYTES:
            raise VerifyException(f"tile.copy: k_dim is 0 or 1, k_step [num, den], bytes one of {COPY_BYTES}")
        if self.src.type.element_type != self.buffer.type.element:
            raise VerifyException(f"tile.copy keeps the element type: {self.src.type.element_type} into {self.buffer.type.element}")
        chunk = self.row_tiles.value.data if self.row_tiles is not None else 16
        if self.row_tiles is not None and (self.k_dim.value.data != 1 or self.bytes.value.data != 16 or chunk < 16 or chunk & (chunk - 1)):
            raise VerifyException("tile.copy from 16-row tiles copies along the rows (k_dim 1), 16 bytes at a time, from chunks of "
                                  "a power of two bytes, 16 or more")

    def run(self, ids: BlockIds, src, fixed, k_tile, buffer, stage):
        num, den = self.k_step.get_values()
        k0 = k_tile * num // den if den else 0
        _, rows, cols = buffer.shape
        r0, c0 = (fixed, k0) if self.k_dim.value.data == 1 else (k0, fixed)
        if self.row_tiles is not None:  # the window's rows, back in row order
            from ir.packing import code_rows

            src, r0 = code_rows(src.view(np.uint32), self.row_tiles.value.data, range(r0, r0 + rows)).view(src.dtype), 0
        buffer[stage] = _window(src, r0, c0, rows, cols)
        return ()


@irdl_op_definition
class FragmentOp(IRDLOperation):
    """The tile of buffer[stage] in registers, laid out as the result type says."""

    name = "tile.fragment"
    buffer = operand_def(SharedType)
    stage = operand_def(_INDEX)
    result = result_def(FragType)
    assembly_format = "$buffer `[` $stage `]` attr-dict `:` type($buffer) `->` type($result)"

    def verify_(self):
        b, f = self.buffer.type, self.result.type
        if b.get_shape()[1:] != f.get_shape() or b.element != f.element:
            raise VerifyException(f"a fragment of {b} is {b.get_shape()[1]}x{b.get_shape()[2]}x{b.element}, got {f}")

    def run(self, ids: BlockIds, buffer, stage):
        return buffer[stage].copy()


@irdl_op_definition
class DecodeOp(IRDLOperation):
    """B [BN, BK] in the activation type from a k-tile of `element` codes. With the scale rows
    (and zero terms) of its `group`s (0: one per output channel; ui8 scales are e8m0 codes):
    w = q * s + z, rounded once, as lowering.ladder's register decoders compute it; without
    them, the codes' values q (which tile.mma then scales per group). `shared_table`: the kernel
    looks each byte of codes up as a pair in shared memory (GemmConfig.shared_table), same values."""

    name = "tile.decode"
    codes = operand_def(FragType)
    scales = opt_operand_def(FragType)
    zeros = opt_operand_def(FragType)
    result = result_def(FragType)
    element = prop_def(StringAttr)
    group = opt_prop_def(IntegerAttr)
    shared_table = opt_prop_def(UnitAttr)
    assembly_format = ("$codes (`scales` $scales^)? (`zeros` $zeros^)? attr-dict `:` type($codes) (`scales` type($scales)^)? "
                       "(`zeros` type($zeros)^)? `->` type($result)")
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())

    def verify_(self):
        layouts = [self.codes.type.layout.data, self.result.type.layout.data]
        extra = [v.type.layout.data for v in (self.scales, self.zeros) if v is not None]
        if layouts != ["packed", "b"] or any(x != "group" for x in extra):
            raise VerifyException("tile.decode takes packed codes (and group scales and zeros) to a b fragment")
        if self.zeros is not None and self.scales is None:
            raise VerifyException("tile.decode's zero terms come with scales")
        if (self.scales is None) != (self.group is None):
            raise VerifyException("tile.decode's scales come with their group size, and only with them")

    def run(self, ids: BlockIds, codes, scales=None, zeros=None):
        from ir.packing import apply_scales, decode_values

        bk, dtype = self.result.type.get_shape()[1], str(self.result.type.element)
        q = decode_values(codes.view(np.uint32), self.element.data, dtype, bk)  # a k-tile's rows, as shared memory holds them
        if scales is None:
            return q.astype(np.float32)
        group = self.group.value.data
        return apply_scales(q, _bits(scales, dtype), _bits(zeros, dtype) if zeros is not None else None, group if 0 < group < bk else 0,
                            _is_e8m0(self.scales), dtype)


def _is_e8m0(scales: SSAValue | None) -> bool:
    """Whether a scale operand holds e8m0 codes (ui8) rather than the activation type's values."""
    return scales is not None and isinstance(scales.type.element, IntegerType)


def add_scaled_partials(acc: np.ndarray, a: np.ndarray, b: np.ndarray, scales: np.ndarray, per: int) -> np.ndarray:
    """acc + a @ b^T taken `per` K elements (a group) at a time: each group's f32 partial sum
    times its row of `scales` (one value per column of b's rows), added to acc as fma does."""
    for g in range(-(-a.shape[1] // per)):
        part = a[:, g * per:(g + 1) * per].astype(np.float32) @ b[:, g * per:(g + 1) * per].T.astype(np.float32)
        acc = (acc.astype(np.float64) + part.astype(np.float64) * scales[g][None]).astype(np.float32)
    return acc


@irdl_op_definition
class MmaOp(IRDLOperation):
    """acc + a @ b^T (a [BM, BK]; b [BN, BK], or [BK, BN] with layout bt: acc + a @ b) on tensor
    cores, accumulating in f32 (s32 for s8 operands). With `scales` (rows of `group` K elements,
    0: one row for the k-tile; ui8: e8m0 codes): each group's f32 partial sum a_g @ b_g^T is
    multiplied by its row of scales, column by column, as it is added to acc."""

    name = "tile.mma"
    T: ClassVar = VarConstraint("T", base(FragType))
    a = operand_def(FragType)
    b = operand_def(FragType)
    acc = operand_def(T)
    scales = opt_operand_def(FragType)
    result = result_def(T)
    group = opt_prop_def(IntegerAttr)
    assembly_format = "$a `,` $b `,` $acc (`scales` $scales^)? attr-dict `:` type($a) `,` type($b) (`scales` type($scales)^)? `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self):
        a, b, acc = self.a.type, self.b.type, self.acc.type
        if a.layout.data != "a" or b.layout.data not in ("b", "bt") or acc.layout.data != "acc" or self.result.type != acc:
            raise VerifyException("tile.mma takes a, b (or bt) and acc fragments and gives acc's type")
        (m, k), (n, kb) = a.get_shape(), b.get_shape()[::-1] if b.layout.data == "bt" else b.get_shape()
        if k != kb or acc.get_shape() != (m, n):
            raise VerifyException(f"tile.mma shapes: {a}, {b} -> {acc}")
        if (self.scales is None) != (self.group is None):
            raise VerifyException("tile.mma's scales come with their group size, and only with them")
        if self.scales is not None:
            s, group = self.scales.type, self.group.value.data
            rows = k // group if 0 < group < k else 1
            if s.layout.data != "group_acc" or s.get_shape() != (rows, n) or group % 16 or str(acc.element) != "f32":
                raise VerifyException(f"tile.mma scales f32 partial sums by group_acc rows [{rows}, {n}] of a group that is a multiple of 16, "
                                      f"got {s} for group {group}")

    def run(self, ids: BlockIds, a, b, acc, scales=None):
        b = b.T if self.b.type.layout.data == "bt" else b
        if acc.dtype == np.int32:
            return (a.astype(np.int64) @ b.T.astype(np.int64) + acc).astype(np.int32)
        if scales is None:
            return acc + a.astype(np.float32) @ b.T.astype(np.float32)
        from ir.packing import group_scales

        k, group, dtype = a.shape[1], self.group.value.data, str(self.a.type.element)
        s = group_scales(_bits(scales, dtype), _is_e8m0(self.scales), dtype, rounded=False)
        return add_scaled_partials(acc, a, b, s, group if 0 < group < k else k)


@irdl_op_definition
class EpilogueOp(IRDLOperation):
    """The accumulator tile at (row, col) of the output as f32, times row_scales[row] and
    col_scales[col] (8-bit operands), plus bias[col], through `activation` (none, relu, silu);
    scales and bias past the output's edge read as zero."""

    name = "tile.epilogue"
    acc = operand_def(FragType)
    row = operand_def(_INDEX)
    col = operand_def(_INDEX)
    row_scales = opt_operand_def(TensorType)
    col_scales = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(FragType)
    activation = opt_prop_def(StringAttr)
    assembly_format = ("$acc `at` $row `,` $col (`row_scales` $row_scales^)? (`col_scales` $col_scales^)? (`bias` $bias^)? attr-dict `:` "
                       "type($acc) (`row_scales` type($row_scales)^)? (`col_scales` type($col_scales)^)? (`bias` type($bias)^)? `->` type($result)")
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())

    def verify_(self):
        if (self.row_scales is None) != (self.col_scales is None):
            raise VerifyException("tile.epilogue scales by rows and columns together")
        if isinstance(self.acc.type.element, IntegerType) and self.row_scales is None:
            raise VerifyException("an s32 accumulator is scaled to f32 by row_scales and col_scales")
        if self.activation is not None and self.activation.data not in ACTIVATIONS:
            raise VerifyException(f"activation must be one of {', '.join(ACTIVATIONS)}")

    def run(self, ids: BlockIds, acc, row, col, *vectors):
        rows, cols = acc.shape
        along = lambda v, at, n: _window(np.asarray(v, np.float32)[None], 0, at, 1, n)[0]  # noqa: E731
        vectors = list(vectors)
        y = acc.astype(np.float32)
        if self.row_scales is not None:
            y = y * along(vectors.pop(0), row, rows)[:, None] * along(vectors.pop(0), col, cols)[None]
        if self.bias is not None:
            y = y + along(vectors.pop(0), col, cols)[None]
        return ACTIVATIONS[self.activation.data if self.activation else "none"](y)


@irdl_op_definition
class StoreOp(IRDLOperation):
    """out[row:, col:] = value, inside out's bounds, rounded to out's type; a 3-D out (f32 partial
    sums) takes slice z, the block's K split."""

    name = "tile.store"
    value = operand_def(FragType)
    out = operand_def(TensorType)
    row = operand_def(_INDEX)
    col = operand_def(_INDEX)
    assembly_format = "$value `,` $out `[` $row `,` $col `]` attr-dict `:` type($value) `,` type($out)"

    def run(self, ids: BlockIds, value, out, row, col):
        target = out[ids.z] if out.ndim == 3 else out
        part = target[row:row + value.shape[0], col:col + value.shape[1]]
        part[...] = value[:part.shape[0], :part.shape[1]]
        return ()


@irdl_op_definition
class SumSplitsOp(IRDLOperation):
    """y = act(sum over z of partial[z, :, :N] + bias): the reduction after a split-K launch."""

    name = "tile.sum_splits"
    partial = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    activation = opt_prop_def(StringAttr)
    assembly_format = "$partial (`bias` $bias^)? attr-dict `:` type($partial) (`bias` type($bias)^)? `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    @property
    def split_k(self) -> int:
        return self.partial.type.get_shape()[0]

    def verify_(self):
        (_, m, npad), (m2, n) = self.partial.type.get_shape(), self.result.type.get_shape()
        if str(self.partial.type.element_type) != "f32" or m != m2 or npad != n + (n & 1):
            raise VerifyException(f"tile.sum_splits takes f32 partial sums [splits, M, N rounded up to even], got {self.partial.type}")

    def execute(self, partial, bias=None):
        n = self.result.type.get_shape()[1]
        y = np.zeros(partial.shape[1:2] + (n,), np.float32)
        for z in range(partial.shape[0]):
            y += partial[z, :, :n]
        if bias is not None:
            y += bias.astype(np.float32)
        return ACTIVATIONS[self.activation.data if self.activation else "none"](y)


TILE = Dialect("tile", [MatmulOp, PackWeightOp, KernelOp, LaunchOp, YieldOp, BlockOriginOp, KRangeOp, SharedBufferOp, ZerosOp,
                        PipelineOp, CopyOp, FragmentOp, DecodeOp, MmaOp, EpilogueOp, StoreOp, SumSplitsOp], [SharedType, FragType])
