"""A GEMM's schedule (GemmConfig): tiles, warps, pipeline depth, split K, and what follows from them; as
IR, the attribute #tile.gemm<...> (GemmSchedule)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from xdsl.ir import Attribute, Data
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer

from ir.dtypes import storage_dtype
from ir.layout import Swizzle
from ir.targets import MAX_SHARED_BYTES

TABLE_ROWS = 256  # GemmConfig.shared_table: a pair per byte of codes,
TABLE_BYTES = TABLE_ROWS * 32 * 4  # each row 32 copies of it, one per bank
REDUCE_THREADS = 256  # threads per block of the split-K reduction
EIGHT_BIT_OPERANDS = {"s8": ("s8", "m16n8k32", "s32"), "e4m3": ("e4m3", "m16n8k32", "f32")}  # mma input, shape, accumulator


def reduce_grid(m: int, n: int) -> tuple[int, int, int]:
    """Blocks of the split-K reduction over an M x N result: a column pair per thread."""
    pairs = m * ((n + 1) // 2)
    return ((pairs + REDUCE_THREADS - 1) // REDUCE_THREADS, 1, 1)


def reduce_param_kinds(bias: bool, residual: bool = False) -> tuple[str, ...]:
    """The split-K reduction's parameters: workspace, [bias,] [residual,] c addresses, then m, n."""
    return ("u64",) * (2 + bias + residual) + ("u32",) * 2


RESIDUALS = {"add": np.add, "mul": np.multiply}  # how an epilogue combines its result with a tensor of the result's shape


def combine_residual(how: str, y: np.ndarray, residual, element: Attribute) -> np.ndarray:
    """y rounded to the output's `element` type, as the graph rounds the linear's output before the add or mul
    that the epilogue took in (kernels combine pairs in 16-bit arithmetic), then combined with the residual."""
    return RESIDUALS[how](y.astype(storage_dtype(element)).astype(np.float32), np.asarray(residual, np.float32))


def copy_elems(k: int) -> int:
    """The widest copy that rows of K halves keep aligned: 16 bytes, 4 bytes or one element."""
    return 8 if k % 8 == 0 else 2 if k % 2 == 0 else 1


ACTIVATIONS = {"none": lambda y: y, "relu": lambda y: np.maximum(y, 0), "silu": lambda y: y / (1 + np.exp(-y))}


def swizzle_for(row_bytes: int) -> Swizzle:
    """The swizzle of a row-major shared tile with rows of `row_bytes` (64 or more): the 16-byte
    chunk index XOR-ed with row bits so that 8 consecutive rows' same chunk hit distinct banks."""
    chunks = min(row_bytes, 128) // 16
    return Swizzle(chunks.bit_length() - 1, 4, max(3, row_bytes.bit_length() - 1 - 4))


def dense_tile_banks(bn: int, bk: int) -> np.ndarray:
    """The shared-memory bank of each position (row * bk + column) of a sparse kernel's dense BN x BK tile of 16-bit
    values, swizzled as smem-swizzle lays it out (the order ir.sparse.kernel_tiles gives the slots comes from it)."""
    position = np.arange(bn * bk)
    return swizzle_for(2 * bk)(position // bk * 2 * bk + position % bk * 2) // 4 % 32


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
    residual: str = ""  # epilogue: "" or "add" / "mul": the result, rounded, combined with a tensor of its shape [M, N] (N even),
    # after the activation
    sparse: int = 0  # B an unstructured-sparse weight (ir.sparse.kernel_tiles): `sparse` 32-bit (value, position) slots per
    # BN x BK tile, copied into shared memory and scattered into a dense tile there for the mma (Flash-LLM's load-as-sparse)
    early_weights: bool = False  # sm_90, B (and scales, zeros) a model's weight: the block lets the next kernel launch as it
    # starts, issues its first k-tiles' weight copies, then waits for the kernel before it (griddepcontrol) and copies A

    def __post_init__(self):
        sizes = {"bm": self.bm, "bn": self.bn, "bk": self.bk, "warps_m": self.warps_m, "warps_n": self.warps_n,
                 "split_k": self.split_k, "raster": self.raster}
        if any(not isinstance(v, int) or v < 1 for v in sizes.values()):
            raise ValueError(f"block sizes, warps, split_k and raster are positive integers, got "
                             f"{', '.join(f'{k} = {v}' for k, v in sizes.items() if not isinstance(v, int) or v < 1)}")
        if self.warps_m * self.warps_n > 32:
            raise ValueError(f"a block has at most 32 warps, got {self.warps_m}x{self.warps_n}")
        for e in (self.copy_elems, self.b_copy_elems):  # (a packed weight's rows copy 8, 4 or 2 halves: b_tile)
            if e not in (8, 2, 1):
                raise ValueError(f"elements per copy must be 8, 2 or 1, got {e}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation}")
        if self.residual not in ("", *RESIDUALS):
            raise ValueError(f"residual must be '', {' or '.join(RESIDUALS)}, got {self.residual}")
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
        if self.sparse:
            self._check_sparse()
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
        from ir.packing import IntDecode, LutDecode, block_elems, decoder

        try:
            d = decoder(self.weight)
        except FormatError as e:
            raise ValueError(str(e)) from None
        if self.shared_table and (not isinstance(d, LutDecode) or TABLE_ROWS % self.threads):
            raise ValueError(f"a shared table holds the pairs of a table-decoded weight (nf4), filled by at most {TABLE_ROWS} "
                             f"threads: not {self.weight} with {self.threads} threads")
        if self.dtype == "bf16" and isinstance(d, IntDecode) and d.own_bits > 7:
            raise ValueError("8-bit integer weights decode into f16 only: bf16's mantissa cannot hold 8-bit codes")
        block = block_elems(d.bits)
        if self.b_kn or self.bk % block:
            raise ValueError(f"{self.weight} weights need B as [N, K] and BK a multiple of {block}")
        if self.group and (self.group % 16 or self.group & (self.group - 1)):
            raise ValueError(f"group {self.group} must be a power of two and a multiple of 16")
        if self.scale not in ("", "e8m0"):
            raise ValueError(f"weight scales are in the activation dtype or e8m0, not {self.scale}")

    def _check_sparse(self):
        if self.weight or self.a8 or self.b_kn or self.wgmma or self.prefetch:
            raise ValueError("a sparse B is a [N, K] f16/bf16 weight on mma.sync: no packed weight, 8-bit operands, [K, N] B, "
                             "wgmma or register prefetch")
        if (self.sparse % math.lcm(self.bn, self.threads) or self.bn * self.bk > 1 << 16 or self.bn & (self.bn - 1) or self.bk & (self.bk - 1)
                or self.bn * self.bk // 8 % self.threads):
            raise ValueError(f"a sparse tile's slots lie evenly over its rows and the block's threads, and its positions take "
                             f"16 bits: {self.sparse} slots over {self.bn} rows and {self.threads} threads, a {self.bn}x{self.bk} "
                             "tile (powers of two)")

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
        from ir.packing import decoder

        return decoder(self.weight).bits if self.weight else 8 if self.a8 else 16

    @property
    def b_tile(self) -> SharedTile:
        if self.sparse:  # a tile's slots over its BN rows, one 32-bit word (value, position) each: two halves
            per_row = self.sparse // self.bn
            return SharedTile(self.bn, 2 * per_row, 8 if per_row % 4 == 0 else 2)
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
        b = (1, (self.bk * self.weight_bits // 32, 1)) if self.weight else (1, (self.sparse // self.bn, 1)) if self.sparse else \
            (0 if self.b_kn else 1, (self.bk, 1))
        return ((1, (self.bk, 1)), b) + ((0, (self.bk, self.group)),) * (len(self.copied_tiles) - 2)

    @property
    def table_offset(self) -> int:
        """Where the shared table (`shared_table`) starts: after the pipeline's tiles."""
        return self.stages * sum(t.bytes for t in self.copied_tiles)

    @property
    def shared_bytes(self) -> int:
        """The tiles' bytes, the shared table's, and with wgmma 1 KiB to align them to the swizzle's
        1024-byte period (lowering.warp_to_ptx)."""
        return self.table_offset + (TABLE_BYTES if self.shared_table else 0) + (1024 if self.wgmma else 0) + self.dense_bytes

    @property
    def dense_bytes(self) -> int:
        """With a sparse B: the dense BN x BK tile its slots are scattered into, one stage, after the pipeline's tiles."""
        return 2 * self.bn * self.bk if self.sparse else 0

    @property
    def param_names(self) -> tuple[str, ...]:
        """The kernel's parameters: addresses of a, b, [a_scales,] [scales, [zeros],] [bias,] [residual,] c (the
        f32 workspace when K is split: the bias and residual then go to the reduction), then the sizes m, n, k."""
        scales = ("a_scales", "scales") if self.a8 else ("scales", "zeros")[: 1 + self.zero] if self.weight else ()
        final = self.split_k == 1  # (else the reduction applies the epilogue)
        bias = ("bias",) if self.bias and final else ()
        residual = ("residual",) if self.residual and final else ()
        return ("a", "b", *scales, *bias, *residual, "c", "m", "n", "k")

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
        suffix += f"_res{self.residual}" if self.residual else ""
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
        suffix += f"_csl{self.sparse}" if self.sparse else ""
        suffix += "_early" if self.early_weights else ""
        return f"rung_gemm_{self.dtype}_{self.bm}x{self.bn}x{self.bk}_w{self.warps_m}x{self.warps_n}_s{self.stages}{suffix}"


_SIZES = {"block": ("bm", "bn", "bk"), "warps": ("warps_m", "warps_n")}
_DEFAULTS = {f.name: f.default for f in fields(GemmConfig)}
_ALWAYS = {"dtype", "stages", *(n for names in _SIZES.values() for n in names)}


@irdl_attr_definition
class GemmSchedule(Data[GemmConfig]):
    """A GEMM's whole schedule (GemmConfig) as one attribute, e.g.

        #tile.gemm<f16, block = [16, 128, 128], warps = [1, 4], stages = 3, split_k = 4, weight = int4, group = 128, prefetch>

    the dtype, block, warps and stages, then each other field that differs from its default:
    `name = value`, or the bare name of a flag that is set."""

    name = "tile.gemm"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> GemmConfig:
        with parser.in_angle_brackets():
            start = parser.pos
            values = {"dtype": parser.parse_identifier()}
            while parser.parse_optional_punctuation(","):
                key = parser.parse_identifier()
                if key in _SIZES:
                    parser.parse_punctuation("=")
                    sizes = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_integer)
                    if len(sizes) != len(_SIZES[key]):
                        parser.raise_error(f"{key} takes {len(_SIZES[key])} sizes, got {len(sizes)}")
                    values.update(zip(_SIZES[key], sizes))
                elif key not in _DEFAULTS or key in _ALWAYS - {"stages"}:
                    parser.raise_error(f"unknown GEMM schedule field '{key}' (known: block, warps, "
                                       f"{', '.join(sorted(set(_DEFAULTS) - _ALWAYS | {'stages'}))})")
                elif isinstance(_DEFAULTS[key], bool):
                    values[key] = True
                else:
                    parser.parse_punctuation("=")
                    values[key] = parser.parse_integer(allow_boolean=False) if isinstance(_DEFAULTS[key], int) else parser.parse_identifier()
            try:
                return GemmConfig(**values)
            except ValueError as e:
                parser.raise_error(f"bad GEMM schedule: {e}", start, parser.pos)

    @property
    def threads(self) -> int:
        return self.data.threads

    def launch_grid(self, shapes: list[tuple[int, ...]]) -> tuple[int, int, int]:
        """The grid over the output tiles of A [M, K] (shapes[0]) times B (shapes[1])."""
        m, n, _ = self.launch_dims(shapes)
        return self.data.grid(m, n)

    def launch_dims(self, shapes: list[tuple[int, ...]]) -> list[int]:
        """The kernel's size parameters: M, N, K (a sparse B's rows are N rounded up to its tiles': N is the result's last
        dimension, of [M, N] or, K split, [splits, M, N])."""
        (m, k), b = shapes[0], shapes[1]
        return [m, shapes[-1][-1] if self.data.sparse else b[1] if self.data.b_kn else b[0], k]

    def print_parameter(self, printer: Printer) -> None:
        cfg = self.data
        parts = [cfg.dtype, f"block = [{cfg.bm}, {cfg.bn}, {cfg.bk}]", f"warps = [{cfg.warps_m}, {cfg.warps_n}]", f"stages = {cfg.stages}"]
        for name, default in _DEFAULTS.items():
            value = getattr(cfg, name)
            if name not in _ALWAYS and value != default:
                parts.append(name if value is True else f"{name} = {value}")
        printer.print_string("<" + ", ".join(parts) + ">")
