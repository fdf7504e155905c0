"""tile-to-warp: each tile.kernel (a block program, lowering.tile_expand) becomes a ptx.kernel,
lowered op by op; tile.launch, tile.sum_splits, tile.merge_splits and tile.write_rows (in place) become ptx.launch.

Per lane: ptx ops for arithmetic, cp.async groups, barriers and mma.sync, and warp ops that
address the shared tiles by (stage, row, column); `smem-swizzle` then picks the tiles' layouts
and `warp-to-ptx` turns coordinates into addresses. What each tile op becomes:
- tile.block_origin, tile.k_range: the block's tile from ctaid (banded by `raster`), its k-tiles;
- tile.shared_buffer: a warp.alloc_shared tile; tile.copy: per-thread addresses and bounds set up
  once, a guarded cp.async per k-tile (a load and a shared store when rows are 2-byte aligned);
- tile.pipeline: `stages - 1` k-tiles issued ahead, then a loop that waits, passes one barrier,
  issues the next k-tile and computes this one in units of k16 steps (with `prefetch`, the next
  unit's fragments load while this one computes);
- tile.fragment: ldmatrix (x4, .trans for bt) or shared loads of code words and scale pairs;
  tile.decode: lowering.ladder's register decoder (or, `shared_table`, lookups in a table of
  pairs the block fills first), then q * s + z by fma; tile.mma: mma.sync;
- tile.epilogue with tile.store: scales, bias and activation applied to each pair of
  accumulators as it is stored (f32 pairs into a split's workspace slice).

A [M, K], B ([N, K], or [K, N] with `b_kn`) and C [M, N] are row-major f16 or bf16;
accumulation is f32 (mma.sync.m16n8k16). One thread block computes a BM x BN tile of C with
warps_m x warps_n warps; K advances in BK steps through a `stages`-deep cp.async pipeline in
shared memory; a [K, N] B is read with ldmatrix.trans. Fragments follow
`ir.layout.MMA_M16N8K16_*`. A low-precision B (`weight`) arrives as ir.packing stores it:
its codes, scales and zero terms are copied like any tile and decoded in registers before mma.
With 8-row tiles (GemmConfig.weight_is_a) the decoded weight is the mma's A operand and A's
rows its B operand: the accumulators hold C transposed and are stored element by element.
With wgmma tiles (GemmConfig.wgmma, sm_90a) the fragments are shared-memory descriptors
(`warp.smem_desc`) and each warpgroup's wgmmas run asynchronously, one k-tile in flight; a
packed weight is decoded into wgmma's A registers instead, A's rows its B in shared memory, and
the accumulators hold C transposed, as with 8-row tiles.

Blocks run in bands of `raster` M-tiles (the grid's x sweeps N inside a band), so the B tiles
a band reads stay in L2 while its blocks use them. With `split_k`, grid z splits the k-tiles
and each block writes f32 partial sums to a workspace; a second kernel sums them and applies
the epilogue.

Rows and columns beyond M, N and K are zero-filled on load and masked on store. Global rows
are copied 8, 2 or 1 halves at a time (16-byte cp.async when the row length is a multiple of
8, 4-byte when it is even, single elements when it is odd); A, B and C must be 16-byte aligned.
"""


from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects import tile
from dialects.ptx import KernelOp, LaunchOp
from dialects.tile import reduce_grid
from ir.errors import RungError
from lowering.tile_to_warp.attention import MERGE_THREADS, lower_attention_program, merge_splits_kernel, merge_splits_name
from lowering.tile_to_warp.block import DECODED_UNROLL, gemm_kernel, lower_kernel
from lowering.tile_to_warp.epilogue import sum_splits_kernel, sum_splits_name
from lowering.tile_to_warp.write_rows import WRITE_THREADS, write_rows_kernel, write_rows_name, write_rows_shape
from lowering.tile_to_warp.rows import lower_row_program

__all__ = ["DECODED_UNROLL", "PROGRAM_LOWERINGS", "TileToWarp", "gemm_kernel", "lower_kernel", "lower_row_program", "sum_splits_kernel",
           "sum_splits_name"]


@dataclass(frozen=True)
class TileToWarp(ModulePass):
    """Lower each tile.kernel (block program) to a ptx.kernel by the lowering of its kind of schedule, and
    tile.launch and tile.sum_splits to ptx.launch."""

    name = "tile-to-warp"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if any(isinstance(o, tile.MatmulOp) for o in op.walk()):
            raise RungError("tile-to-warp lowers block programs: expand tile.matmul first (-p tile-expand)")
        kernels = {k.sym_name.data for k in op.ops if isinstance(k, KernelOp)}
        for launch in [o for o in op.walk() if isinstance(o, tile.LaunchOp)]:
            schedule = launch.definition().schedule
            shapes = [tuple(v.type.get_shape()) for v in (*launch.inputs, launch.result)]
            Rewriter.replace_op(launch, LaunchOp.get(launch.kernel.root_reference.data, list(launch.inputs), launch.result.type,
                                                     schedule.launch_grid(shapes), schedule.launch_dims(shapes)))
        for total in [o for o in op.walk() if isinstance(o, tile.SumSplitsOp)]:
            (m, n), dtype = total.result.type.get_shape(), str(total.result.type.element_type)
            activation = total.activation.data if total.activation else "none"
            residual = total.residual.data if total.residual else ""
            name = sum_splits_name(total.split_k, dtype, total.bias is not None, activation, residual)
            if name not in kernels:
                op.body.block.add_op(sum_splits_kernel(total.split_k, dtype, total.bias is not None, activation, residual))
                kernels.add(name)
            inputs = [total.partial] + ([total.bias] if total.bias else []) + ([total.residual_tensor] if total.residual_tensor else [])
            Rewriter.replace_op(total, LaunchOp.get(name, inputs, total.result.type, reduce_grid(m, n), [m, n]))
        for write in [o for o in op.walk() if isinstance(o, tile.WriteRowsOp)]:
            chunk, position_bytes, chunks = write_rows_shape(write)
            name = write_rows_name(chunk, position_bytes)
            if name not in kernels:
                op.body.block.add_op(write_rows_kernel(chunk, position_bytes))
                kernels.add(name)
            outer, keys, count, _ = write.shape()
            total = outer * count * chunks
            Rewriter.replace_op(write, LaunchOp.get(name, [write.x, write.positions, write.source], write.result.type,
                                                    (-(-total // WRITE_THREADS), 1, 1), [count, keys, chunks, total], in_place=0))
        for merge in [o for o in op.walk() if isinstance(o, tile.MergeSplitsOp)]:
            (heads, rows, dim), dtype = merge.result.type.get_shape(), str(merge.result.type.element_type)
            name = merge_splits_name(merge.splits, dim, dtype)
            if name not in kernels:
                op.body.block.add_op(merge_splits_kernel(merge.splits, dim, dtype))
                kernels.add(name)
            grid = (-(-heads * rows * dim // 2 // MERGE_THREADS), 1, 1)
            Rewriter.replace_op(merge, LaunchOp.get(name, [merge.partial], merge.result.type, grid, [heads * rows]))
        for program in [o for o in op.walk() if isinstance(o, tile.KernelOp)]:
            Rewriter.replace_op(program, PROGRAM_LOWERINGS[type(program.schedule)](program))


# how each kind of block program (by its schedule attribute) becomes a ptx.kernel
PROGRAM_LOWERINGS = {tile.GemmSchedule: lower_kernel, tile.RowSchedule: lower_row_program, tile.AttentionSchedule: lower_attention_program}
