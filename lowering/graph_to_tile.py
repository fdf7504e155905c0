"""graph-to-tile: schedule graph.linear, graph.qlinear and 2-D graph.matmul on tensor cores as tile.matmul,
and row-wise ops (lowering.row_programs: rms_norm) as launches of row programs.

A linear with f16/bf16 operands becomes tile.matmul (x flattened to 2-D and the result reshaped
back), with its bias, with a following relu or silu (the linear's only use), and then with an add or
mul by a tensor of the result's shape made before the linear (a residual add, SwiGLU's product), fused
into the epilogue. A qlinear whose format has a register decoder (lowering.ladder) becomes the same
tile.matmul reading the weight through tile.pack_weight, Ladder's offline layout transform.
Tile sizes follow the shape (`choose_config`) unless the pass options set them. A graph.index_copy
of a @main argument that nothing else reads (a KV cache's update) becomes tile.write_rows, in place.
Other ops are left as they are.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.ir import Block, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from dialects import graph as g
from dialects.tile import GemmConfig, LaunchOp, MatmulOp, PackSparseOp, PackWeightOp, WriteRowsOp, copy_elems
from ir.dtypes import eight_bit_format
from ir.errors import RungError
from ir.numerics import FormatError
from ir.sparse import kernel_slots
from ir.targets import SMS, check_target, programmatic_launch
from lowering.attention import SdpaToTile
from lowering.elementwise import ElementwiseToTile, absorbed
from lowering.row_programs import FusedRopeToTile, RowOpToTile, add_kernel_once, eight_bit_rows_program, reshaped



@lru_cache(maxsize=4096)  # on the launch path: shapes repeat
def choose_config(m: int, n: int, k: int, dtype: str, b_kn: bool = False, weight: str = "", group: int = 0, scale: str = "",
                  zero: bool = False, sms: int = SMS, a8: str = "", target: str = "") -> GemmConfig:
    """Tile sizes from the shape, the weight's format and the target.

    M <= 16 (decoding): the weight streams through 8-row tiles (M <= 8: the weight is the mma's A
    operand, GemmConfig.weight_is_a) or 16-row ones, 4 warps side by side along N;
    weights without zero terms scale partial sums (scale_partials) where that takes fewer fmas than
    scaling each decoded pair (groups of 64 or more, or per channel; 32 in 8-row tiles or for
    minifloats in f16, whose exponent rescale then moves to the f32 sums);
    decode-bound formats (1-2 bits) skip the register prefetch, fill two waves and may split K
    further (partial sums up to half the weight's bytes); table formats (nf4) look their pairs up
    in shared memory (GemmConfig.shared_table), without the prefetch; minifloats in 8-row tiles
    skip it too.
    8-bit A and B (`a8`) take the same tiles with k-tiles of twice the elements.
    M <= 64: 64-row tiles. Larger M: 128 x 128 tiles, run in bands of 8 M-tiles for L2 reuse; on
    sm_90a, wgmma tiles (GemmConfig.wgmma) instead for B [N, K]: 128 x 256 in f16/bf16 (128 x 128 where those fill fewer than
    half the multiprocessors), 128 x 128
    for int8 operands (wider ones spill in the scaled epilogue; FP8 stays on mma.sync, whose sums round as f32's), and for packed weights whose
    words span at most 64 k (2 bits or more) 128 weight rows decoded into wgmma's A registers by
    2 warpgroups, times 256 activation rows (128 up to M = 128).
    K is split where the tiles alone leave multiprocessors idle (`_split`). Rows that are not
    16-byte aligned (K, or N for a [K, N] B, not a multiple of 8) copy in narrow pieces and
    take 64x64 tiles."""
    copies = {"copy_elems": copy_elems(k), "b_kn": b_kn, "b_copy_elems": copy_elems(n) if b_kn else 8}
    packed = {"weight": weight, "group": group, "scale": scale, "zero": zero}
    block = 16
    if weight:
        from ir.packing import FloatDecode, LutDecode, block_elems, decoder

        block = block_elems(decoder(weight).bits)
    if a8:  # 8-bit A and B: k-tiles of 64 or 128 bytes hold what 32 or 64 halves hold
        if m <= 16:
            cfg = GemmConfig(dtype, bm=16, bn=128, bk=128, warps_m=1, warps_n=4, stages=4, a8=a8)
        elif m <= 64:
            cfg = GemmConfig(dtype, bm=64, bn=128, bk=64, warps_m=2, warps_n=2, stages=4, a8=a8)
        elif target == "sm_90a" and a8 == "s8":
            # not e4m3: Hopper's FP8 wgmma keeps fewer bits in its accumulator, its error growing with K (measured on an H100
            # at M = 300, N = 1024: K = 2048 max error 1.74 of 623, K = 8192 8.79 of 1315, against 0.25 and 0.49 on
            # mma.sync, which rounds as f32 does); it waits for partial sums promoted to f32 registers every k-tile
            cfg = GemmConfig(dtype, bm=128, bn=128, bk=128, warps_m=8, warps_n=1, stages=4, raster=8, a8=a8, wgmma=True)
        else:  # FP8's mma.sync takes 8 warps of 32 x 64: in 4 of 64 x 64 it spilled on sm_90a (254 registers, 40-byte stack)
            warps = (4, 2) if a8 == "e4m3" else (2, 2)
            cfg = GemmConfig(dtype, bm=128, bn=128, bk=64, warps_m=warps[0], warps_n=warps[1], stages=3, raster=8, a8=a8)
        return dataclasses.replace(cfg, split_k=_split(cfg, m, n, k, sms))
    if min(copies["copy_elems"], copies["b_copy_elems"]) < 8:
        return GemmConfig(dtype, bm=64, bn=64, bk=32, warps_m=2, warps_n=2, stages=3, **copies)
    if m <= 16 and weight:  # k-tiles of 8 KiB of codes; the next unit's words load while this one decodes (measured 1.3x)
        d = decoder(weight)
        bk = max(min(128, 512 // d.bits), block)
        # decode-bound formats (1 and 2 bits; nf4 by prmt before its shared table): two waves of blocks balance better than one, and
        # 1-bit words (2-bit ones too with 16-row tiles) decode into too many registers to prefetch
        # (measured at M = 1 on 28672 x 8192: int2 45.9 -> 38.6 us, int1 39.4 -> 34.6, nf4 79.8 -> 71.9);
        # their DRAM is far from busy, so partial sums may take up to half the weight's bytes (9 of the 11
        # schedules this changed ran faster, e.g. int1 at M = 16 on 28672 x 8192 39.8 -> 36.6 us; 238 -> 222 us in all)
        decode_bound = d.bits <= 2
        # M <= 8: 8-row tiles put the weight in the mma's A operand, half the mma and partial-sum work and a third
        # fewer registers (measured at M = 1 on 28672 x 8192: int1 34.5 -> 28.4 us, int2 38.4 -> 33.5, nf4 71.0 -> 61.5)
        bm = 8 if m <= 8 else 16
        # scale_partials: one f32 fma per accumulator (bm a lane: 8 in 8-row tiles, 16 in 16-row ones) and group instead
        # of one per decoded pair (group / 2), and for minifloats in f16 the exponent rescale each pair then skips
        # (measured at M = 1 on 28672 x 8192: fp4 g32 55.2 -> 53.1 us, mxfp4 53.7 -> 51.3; at M = 16 fp4 60.8 -> 58.5);
        # but not for e8m0 scales in 16-row tiles, a byte per column, whose registers push the kernel past 128 a
        # thread (mxfp4 at M = 16: 60.5 -> 71.6 us)
        pair_ops = (group or k) // 2 * (2 if d.partials_rescale(dtype) != 1 else 1)
        partials = not zero and bm < pair_ops and not (scale == "e8m0" and bm == 16)
        # shared_table: a lookup per pair instead of 8 prmt and 3 logic ops per 4 values, which kept nf4's ALU pipe busy;
        # no longer decode-bound, nf4 then takes int4's split: measured, each at its best split, at M = 1 on 28672 x 8192
        # 61.0 -> 48.7 us, at M = 16 73.9 -> 54.7, on 8192 x 28672 59.7 -> 47.4 and 71.6 -> 50.6; this split is within
        # 2 us of the best of 1-16 on every benchmark shape at M = 1, 4 and 16. Its many independent lookups need no
        # register prefetch (without it: M = 16 on 28672 x 8192 54.9 -> 52.7 us, the other three within 0.4 us)
        table = isinstance(d, LutDecode)
        # 1-bit weights in 16-row tiles keep a fourth k-tile in flight (measured at M = 16: 36.4 -> 34.5 us on 28672 x 8192,
        # 0.6-1.9 us less at splits 4-16 on 8192 x 28672; no gain at M = 1 or for 2 bits)
        stages = 4 if d.bits == 1 and bm == 16 else 3
        # minifloats in 8-row tiles, their codes placed for one-shift decoding, gain nothing from the prefetch either
        # (measured at M = 1 on both large shapes: fp4, mxfp4, fp8 and mxfp8 within 0.3 us without it; with it ptxas
        # kept fp4 and mxfp4 to 96 registers and spilled, 48.5 -> 49.4 us for fp4 on 28672 x 8192)
        prefetch = d.bits > (1 if bm == 8 else 2) and not table and not (bm == 8 and isinstance(d, FloatDecode))
        cfg = GemmConfig(dtype, bm=bm, bn=128, bk=bk, warps_m=1, warps_n=4, stages=stages, prefetch=prefetch,
                         scale_partials=partials, shared_table=table, **copies, **packed)
        spread = {"waves": 2, "partial_share": 0.5} if decode_bound else {}
        return dataclasses.replace(cfg, split_k=_split(cfg, m, n, k, sms, **spread))
    elif m <= 16:
        cfg = GemmConfig(dtype, bm=16, bn=128, bk=64, warps_m=1, warps_n=4, stages=4, **copies)
    elif m <= 64:
        cfg = GemmConfig(dtype, bm=64, bn=128, bk=max(32, block), warps_m=2, warps_n=2, stages=4, **copies, **packed)
    elif target == "sm_90a" and weight and 64 % block == 0:  # the weight decoded into wgmma's A registers, 64 rows a warpgroup
        bm = 128 if m <= 128 else 256  # activation rows: wgmma's N
        cfg = GemmConfig(dtype, bm=bm, bn=128, bk=64, warps_m=1, warps_n=8, stages=4, raster=8, wgmma=True, **copies, **packed)
    elif target == "sm_90a" and not weight and not b_kn:
        # 128 x 256 tiles, or 128 x 128 ones where the wide tiles fill fewer than half the multiprocessors (a prompt's M on a
        # narrow N), split less: measured at M = 512 on an H100, 2048 x 2048 17.5 -> 14.7 us, 256 x 2048 9.2 -> 7.4 (split 4),
        # 4096 x 4096 37.7 -> 35.4; 5632 x 2048, 88 wide tiles, keeps them (29.3 us against 35.7)
        bn = 128 if -(-m // 128) * -(-n // 256) < sms // 2 else 256
        cfg = GemmConfig(dtype, bm=128, bn=bn, bk=64, warps_m=8, warps_n=1, stages=4, raster=8, wgmma=True, **copies)
    else:  # words of 4 or 8 k16 steps (2- and 1-bit weights) decode into many registers: narrower warp tiles
        warps_n = 4 if block > 32 else 2
        cfg = GemmConfig(dtype, bm=128, bn=128, bk=max(32, block), warps_m=2, warps_n=warps_n, stages=3, raster=8, **copies, **packed)
    return dataclasses.replace(cfg, split_k=_split(cfg, m, n, k, sms))


def resident_blocks(cfg: GemmConfig) -> int:
    """Blocks of a schedule one multiprocessor holds at once: by shared memory (228 KiB, 1 KiB
    reserved per block), threads (2048) and registers (64 Ki, at an estimated 128 a thread)."""
    return max(1, min((228 * 1024) // (cfg.shared_bytes + 1024), 2048 // cfg.threads, 65536 // (128 * cfg.threads), 32))


def _split(cfg: GemmConfig, m: int, n: int, k: int, sms: int, waves: int = 1, partial_share: float = 0.25) -> int:
    """K splits that fill the GPU in `waves` waves of resident blocks (a partial second wave would
    leave most multiprocessors idle at the end), with at least 4 k-tiles a split. Once there is
    a block per multiprocessor, further splits must keep the f32 partial sums (written and read
    back) under `partial_share` of the weight's bytes."""
    blocks = math.prod(cfg.grid(m, n)[:2])
    k_tiles = -(-k // cfg.bk)
    full = max(1, waves * resident_blocks(cfg) * sms // blocks)
    filled = -(-sms // blocks)  # splits for one block per multiprocessor
    budget = int(partial_share * k * cfg.weight_bits / 8 / (8 * m))
    return max(1, min(full, max(filled, budget), k_tiles // 4, 16))


def _schedule(m: int, n: int, k: int, dtype: str, override: dict, b_kn: bool = False, weight: dict | None = None,
              target: str = "", a8: str = "", **epilogue) -> GemmConfig:
    """choose_config's schedule with the epilogue and the pass options applied; a bad option is a RungError."""
    if not m * n * k:
        raise RungError(f"graph-to-tile: a GEMM with an empty dimension (M, N, K = {m}, {n}, {k}) has nothing for a kernel to do")
    if override.get("split_k", 1) > -(-k // 16):
        raise RungError(f"graph-to-tile: split_k = {override['split_k']} is more than K = {k} has 16-element steps to split")
    try:
        chosen = choose_config(m, n, k, dtype, b_kn, **(weight or {}), a8=a8, target=target)
        return GemmConfig(**{**chosen.__dict__, **epilogue, **override})
    except (ValueError, FormatError) as e:
        raise RungError(f"graph-to-tile: {e}") from None


def sparse_schedule(m: int, n: int, k: int, dtype: str, sparse, override: dict, **epilogue) -> GemmConfig:
    """The sparse GEMM's schedule (GemmConfig.sparse) for a weight in Tiled-CSL `sparse` (an lp.SparseAttr stating its
    fullest tile): the block's BN x BK is the weight's tile, its slots that bound rounded up to the tile's rows and the
    block's threads; 16, 32 or 64 rows of x a block, warps 32 columns wide; as many stages (4 down to 2) as shared
    memory holds; K split as a dense weight's is. A bad tiling or option is a RungError."""
    fmt, bound = sparse.format, sparse.max_nnz.data
    if fmt.tile_n not in (16, 32, 64, 128, 256) or fmt.tile_k not in (32, 64, 128):
        raise RungError(f"graph-to-tile: a sparse weight's tiles are its blocks' BN x BK: BN a power of two from 16 to 256 and BK "
                        f"32, 64 or 128, got {fmt.tile_n}x{fmt.tile_k}")
    bm = 16 if m <= 16 else 32 if m <= 32 else 64
    warps_m, warps_n = max(1, bm // 32), max(1, fmt.tile_n // 32)
    slots = kernel_slots(bound, fmt.tile_n, 32 * warps_m * warps_n)
    try:
        for stages in (4, 3, 2):
            cfg = GemmConfig(dtype, bm=bm, bn=fmt.tile_n, bk=fmt.tile_k, warps_m=warps_m, warps_n=warps_n, stages=stages, sparse=slots,
                             copy_elems=copy_elems(k), **epilogue)
            if resident_blocks(cfg) >= 2 or stages == 2:  # (two blocks a multiprocessor where they fit)
                break
        cfg = GemmConfig(**{**cfg.__dict__, "split_k": _split(cfg, m, n, k, SMS), **override})
    except ValueError as e:
        raise RungError(f"graph-to-tile: a sparse weight in {fmt.tile_n}x{fmt.tile_k} tiles: {e}") from None
    if (cfg.bn, cfg.bk) != (fmt.tile_n, fmt.tile_k):
        raise RungError(f"graph-to-tile: a sparse weight's {fmt.tile_n}x{fmt.tile_k} tiles are its blocks' BN x BK: bn and bk cannot change")
    return cfg


FUSABLE = {g.ReluOp: "relu", g.SiluOp: "silu"}
RESIDUAL = {g.AddOp: "add", g.MulOp: "mul"}


def _only_user(v: SSAValue):
    users = [use.operation for use in v.uses]
    return users[0] if len(users) == 1 else None


def _residual_of(combine, y: SSAValue, before) -> SSAValue | None:
    """The other operand of `combine` (an add or mul of y) if it has y's type and is defined before `before` (the
    GEMM, which reads it in its epilogue), else None; also None where it is an inner value of an elementwise chain that
    `combine` ends (Gemma's gelu(gate) * up: the chain stays one row kernel, its root is not taken from it)."""
    if type(combine) not in RESIDUAL or combine.operands[0] is combine.operands[1]:
        return None
    other = combine.operands[1] if combine.operands[0] is y else combine.operands[0]
    owner = other.owner
    if isinstance(owner, Block):
        return other if other.type == y.type else None
    defined = owner.parent_block() is before.parent_block() and owner.is_before_in_block(before) and not absorbed(owner)
    return other if other.type == y.type and defined else None


def _rewrite_as_matmul(op, rewriter: PatternRewriter, x: SSAValue, n: int, k: int, schedule, make) -> None:
    """Replace a linear-like op (x [..., K] -> [..., N]) by a tile.matmul on x flattened to 2-D:
    `schedule(m, epilogue)` gives its config, `make(x2d, cfg, residual2d)` builds it; a following relu or
    silu that is the op's only use is fused, then an add or mul with a tensor of the result's shape (a
    residual, or the other half of SwiGLU's product) that is the only use of what came before, and the
    result is reshaped back."""
    shape = x.type.get_shape()
    m = math.prod(shape[:-1])
    fused = _only_user(op.results[0])
    fused = fused if type(fused) in FUSABLE else None
    last = (fused or op).results[0]
    combine = _only_user(last)
    residual = _residual_of(combine, last, op) if combine is not None and n % 2 == 0 else None  # epilogues read residual pairs as words
    epilogue = {"activation": FUSABLE[type(fused)] if fused else "none", **({"residual": RESIDUAL[type(combine)]} if residual else {})}
    cfg = schedule(m, epilogue)
    mm = make(reshaped(rewriter, x, [m, k]), cfg, reshaped(rewriter, residual, [m, n]) if residual else None)
    rewriter.insert(mm)
    y = reshaped(rewriter, mm.results[0], [*shape[:-1], n])
    done = [o for o in (combine if residual else None, fused) if o is not None]
    if done:
        rewriter.replace(done[0], [], [y])
        for inner in done[1:] + [op]:
            rewriter.erase(inner)
    else:
        rewriter.replace(op, [], [y])


def early_weights(target: str, *weights: SSAValue | None) -> dict:
    """The schedule option that copies a GEMM's first weight tiles before waiting for the kernel ahead (for a `target`
    that launches programmatically, sm_90; "": none), where
    every weight operand is a model's weight: an argument of the function that no kernel writes (not a donated
    cache) or a constant, so nothing before the GEMM in the program can still be writing it."""
    def constant(v: SSAValue) -> bool:
        if isinstance(v.owner, Block):
            return not any(isinstance(use.operation, g.IndexCopyOp) for use in v.uses)
        return isinstance(v.owner, g.ConstantOp)

    return {"early_weights": True} if target and programmatic_launch(target) and all(constant(w) for w in weights if w is not None) else {}


def tensor_core_linear(op: g.LinearOp) -> bool:
    x = op.x.type
    return str(x.element_type) in ("f16", "bf16") and len(x.get_shape()) >= 1


@dataclass
class LinearToTile(RewritePattern):
    override: dict
    target: str
    programmatic: bool = True  # early_weights where the target launches programmatically

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.LinearOp, rewriter: PatternRewriter):
        if not tensor_core_linear(op):
            return
        k, n = op.x.type.get_shape()[-1], op.weight.type.get_shape()[0]
        dtype = str(op.x.type.element_type)
        _rewrite_as_matmul(op, rewriter, op.x, n, k,
                           lambda m, epi: _schedule(m, n, k, dtype, self.override, target=self.target, bias=op.bias is not None, **epi,
                                                    **early_weights(self.target if self.programmatic else "", op.weight)),
                           lambda x, cfg, residual: MatmulOp.get(x, op.weight, op.bias, cfg, residual=residual))


@dataclass
class QLinearToTile(RewritePattern):
    """graph.qlinear -> tile.pack_weight (once per weight) and tile.matmul on the packed weight."""

    override: dict
    target: str
    programmatic: bool = True

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.QLinearOp, rewriter: PatternRewriter):
        from ir.packing import decoder

        dtype = str(op.x.type.element_type)
        fmt = op.format.format
        try:
            decoder(fmt.element)
        except FormatError:
            return  # no register decoder: stays a graph.qlinear
        if dtype not in ("f16", "bf16"):
            return
        n, k = op.qweight.type.get_shape()
        weight = GemmConfig.weight_fields(fmt)
        pack = PackWeightOp.get(op.qweight, op.scales, op.zeros, op.format, dtype)
        rewriter.insert(pack)
        _rewrite_as_matmul(op, rewriter, op.x, n, k,
                           lambda m, epi: _schedule(m, n, k, dtype, self.override, weight=weight, target=self.target, **epi,
                                                    **early_weights(self.target if self.programmatic else "", op.qweight, op.scales, op.zeros)),
                           lambda x, cfg, residual: MatmulOp.get(x, pack.codes, None, cfg, pack.packed_scales, pack.packed_zeros, op.format,
                                                                 residual=residual))


@dataclass
class QLinear8ToTile(RewritePattern):
    """graph.qlinear8 -> two row programs on x (its per-row scales, and its rows quantized by them) and tile.matmul
    of 8-bit operands with the scales of both applied in the epilogue. Linears on one x (q, k and v; gate and up)
    share its quantized rows."""

    override: dict
    target: str
    programmatic: bool = True
    quantized_rows: dict = field(default_factory=dict)  # (x, element) -> (the launches' x_scales [M], x8 [M, K])

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.QLinear8Op, rewriter: PatternRewriter):
        x_type = op.x.type.element_type
        n, k = op.qweight.type.get_shape()
        a8 = eight_bit_format(op.qweight.type.element_type).a8
        if str(x_type) not in ("f16", "bf16") or k % 16 or (a8 == "e4m3" and self.target == "sm_80"):
            return  # (8-bit rows are whole 16-byte copies; FP8 mma needs sm_89 or later)

        def make(x, cfg, residual):
            m = x.type.get_shape()[0]
            shared = self.quantized_rows.get((op.x, op.element))
            if shared is None or not shared[1].owner.is_before_in_block(op):
                rows = []
                for values, out in ((False, TensorType(f32, [m, 1])), (True, TensorType(op.qweight.type.element_type, [m, k]))):
                    kernel = eight_bit_rows_program(op.element, x_type, k, values)
                    add_kernel_once(op, kernel)
                    rewriter.insert(launch := LaunchOp.get(kernel.sym_name.data, [x], out))
                    rows.append(launch.result)
                shared = self.quantized_rows[op.x, op.element] = (reshaped(rewriter, rows[0], [m]), rows[1])
            return MatmulOp.get(shared[1], op.qweight, None, cfg, op.scales, x_scales=shared[0], result_element=x_type, residual=residual)

        _rewrite_as_matmul(op, rewriter, op.x, n, k,
                           lambda m, epi: _schedule(m, n, k, str(x_type), self.override, target=self.target, a8=a8, **epi,
                                                    **early_weights(self.target if self.programmatic else "", op.qweight, op.scales)), make)


@dataclass
class SparseLinearToTile(RewritePattern):
    """graph.sparse_linear with f16/bf16 values and a stated fullest tile -> tile.pack_sparse (once per weight) and
    tile.matmul of the sparse schedule (sparse_schedule) on the packed weight."""

    override: dict
    target: str

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.SparseLinearOp, rewriter: PatternRewriter):
        dtype = str(op.x.type.element_type)
        if op.format is not None or dtype not in ("f16", "bf16") or not op.sparse.max_nnz.data:
            return  # (why_not_lowered says why)
        k, n = op.x.type.get_shape()[-1], op.n.value.data

        def make(x, cfg, residual):
            pack = PackSparseOp.get(op.values, op.positions, op.offsets, op.sparse, n, k, cfg)
            rewriter.insert(pack)
            return MatmulOp.get(x, pack.packed, None, cfg, residual=residual, n=n)

        _rewrite_as_matmul(op, rewriter, op.x, n, k, lambda m, epi: sparse_schedule(m, n, k, dtype, op.sparse, self.override, **epi), make)


@dataclass
class MatmulToTile(RewritePattern):
    """A 2-D f16/bf16 graph.matmul becomes tile.matmul with B read as [K, N]."""

    override: dict
    target: str

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MatmulOp, rewriter: PatternRewriter):
        a, b = op.lhs.type, op.rhs.type
        if str(a.element_type) not in ("f16", "bf16") or len(a.get_shape()) != 2 or len(b.get_shape()) != 2:
            return
        (m, k), n = a.get_shape(), b.get_shape()[1]
        cfg = _schedule(m, n, k, str(a.element_type), self.override, b_kn=True, target=self.target)
        rewriter.replace(op, MatmulOp.get(op.lhs, op.rhs, None, cfg))


def why_not_in_place(op: g.IndexCopyOp) -> str | None:
    """Why graph.index_copy `op` does not become tile.write_rows (None: it does)."""
    if not isinstance(op.x.owner, Block) or len(list(op.x.uses)) != 1:
        return "the kernel updates a cache in place: x must be an argument of the function that nothing else reads (donated)"
    if str(op.index.type.element_type) not in ("i32", "i64", "ui32", "ui64"):
        return f"the kernel reads positions of 32 or 64 bits, not {op.index.type.element_type}"
    return None


class IndexCopyToTile(RewritePattern):
    """graph.index_copy of a donated @main argument -> tile.write_rows (in place)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.IndexCopyOp, rewriter: PatternRewriter):
        if why_not_in_place(op) is None:
            rewriter.replace_op(op, WriteRowsOp.build(operands=[op.x, op.index, op.source], result_types=[op.result.type],
                                                      properties={"dim": op.properties["dim"]}))


@dataclass(frozen=True)
class GraphToTile(ModulePass):
    """Schedule f16/bf16 graph.linear, graph.qlinear and 2-D graph.matmul as tile.matmul for `target`
    (sm_90a: wgmma tiles where they apply; otherwise mma.sync), and row-wise ops (rms_norm) as launches
    of row programs; the other options override the GEMMs' schedules."""

    name = "graph-to-tile"
    target: str = ""
    bm: int = 0
    bn: int = 0
    bk: int = 0
    warps_m: int = 0
    warps_n: int = 0
    stages: int = 0
    split_k: int = 0
    raster: int = 0
    programmatic: bool = True  # GEMMs on a model's weights copy their first weight tiles before waiting (early_weights; sm_90)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.target:
            check_target(self.target, "graph-to-tile")
        override = {f.name: v for f in dataclasses.fields(self) if f.name not in ("target", "programmatic") and (v := getattr(self, f.name))}
        PatternRewriteWalker(FusedRopeToTile(), apply_recursively=False).rewrite_module(op)  # before their permutes become copies
        weights = [cls(override, self.target, self.programmatic) for cls in (LinearToTile, QLinearToTile, QLinear8ToTile)]
        patterns = GreedyRewritePatternApplier([*weights, MatmulToTile(override, self.target), SparseLinearToTile(override, self.target),
                                                RowOpToTile(), SdpaToTile(), ElementwiseToTile(), IndexCopyToTile()])
        PatternRewriteWalker(patterns, apply_recursively=False).rewrite_module(op)
