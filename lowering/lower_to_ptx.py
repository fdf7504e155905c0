"""lower-to-ptx: graph to ptx in one pass, as a full conversion.

It runs graph-to-tile (for `target`), tile-expand, tile-to-warp, smem-swizzle and warp-to-ptx (and
programmatic-launch for sm_90 and later), then checks that every function keeps only what runs: ptx.launch (a
kernel), tile.pack_weight and tile.pack_sparse (a weight's offline transforms, once per weight) and graph.reshape
(a view). Any other op left is
an error that names it and says why it has no kernel, instead of IR that silently stays high.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from dialects import graph as g
from dialects import ptx
from dialects import tile as t
from ir.errors import RungError
from ir.numerics import FormatError
from ir.targets import programmatic_launch
from lowering.conv_to_gemm import ConvToGemmPass
from lowering.fold_constants import FoldConstants
from lowering.graph_to_tile import GraphToTile
from lowering.raise_attention import RaiseAttentionPass
from lowering.raise_norms import RaiseNorms
from lowering.programmatic_launch import ProgrammaticLaunch
from lowering.raise_rope import RaiseRopePass
from lowering.row_programs import ROW_DTYPES, ROW_PROGRAMS
from lowering.smem_swizzle import SmemSwizzle
from lowering.tile_expand import TileExpand
from lowering.tile_to_warp import TileToWarp
from lowering.warp_to_ptx import WarpToPtx

# the graph-level passes before graph-to-tile, in order (rung.compile runs the same ones)
GRAPH_PASSES = (FoldConstants, RaiseNorms, RaiseRopePass, RaiseAttentionPass, ConvToGemmPass)
PACK_OPS = (t.PackWeightOp, t.PackSparseOp)  # a weight's offline transforms, run once per weight on the host
KEPT = (ptx.LaunchOp, *PACK_OPS, g.ReshapeOp, g.ConstantOp, func.ReturnOp)
KERNEL_OPS = "f16/bf16 graph.linear (with its bias, a following relu or silu, and an add or mul with a tensor of its shape), graph.qlinear of formats with a register " \
             "decoder, graph.qlinear8 (W8A8; FP8 on sm_90a), graph.sparse_linear (f16/bf16 values), 2-D graph.matmul, over the last dimension graph.rms_norm, graph.layer_norm and graph.softmax, graph.embedding, graph.permute, graph.slice (of a leading dimension, or of the last one by step 1), graph.cat, graph.broadcast, graph.rope, causal, unmasked or KV-cache-position graph.sdpa (head dims 16 to 128, grouped-query too), graph.index_copy of a donated argument (in place), graph.conv2d (im2col and a GEMM), graph.max_pool2d and graph.avg_pool2d, graph.reduce (sum, mean, max) over trailing dimensions, and " \
             "chains of elementwise add, sub, mul, div, maximum, pow by 1 to 4, neg, exp, rsqrt, relu, sigmoid, silu, tanh, erf and gelu (operands of the " \
             "result's shape, rows broadcast over the leading dimensions, one-element constants)"


def why_not_lowered(op) -> str:
    """Why graph-to-tile left `op` as it is."""
    elements = {str(v.type.element_type) for v in op.operands if hasattr(v.type, "element_type")}
    if isinstance(op, (g.LinearOp, g.MatmulOp, g.QLinearOp, *ROW_PROGRAMS)):
        if isinstance(op, g.QLinearOp):
            from ir.packing import decoder

            try:
                decoder(op.format.format.element)
            except FormatError as e:
                return str(e)
        activations = {str(op.operands[0].type.element_type)}
        if not activations <= set(ROW_DTYPES):
            return (f"its operands are {', '.join(sorted(activations))}: Rung's kernels take f16 or bf16 (cast the program, "
                    "e.g. torch2ir --dtype f16)")
        if isinstance(op, g.MatmulOp):
            return "only 2-D matmuls have a kernel yet"
        if isinstance(op, g.SoftmaxOp):
            return "only softmax over the last dimension has a kernel yet"
    if isinstance(op, g.QLinear8Op):
        k = op.qweight.type.get_shape()[1]
        return (f"its x is {op.x.type.element_type}: Rung's kernels take f16 or bf16" if str(op.x.type.element_type) not in ROW_DTYPES else
                f"8-bit rows are read 16 bytes at a time: K must be a multiple of 16, got {k}" if k % 16 else
                "FP8 tensor cores need sm_89 or later: compile for sm_90a")
    if isinstance(op, g.SparseLinearOp):
        if op.format is not None:
            return "sparse weights with quantized values have no kernel yet (f16 and bf16 values do)"
        if str(op.x.type.element_type) not in ROW_DTYPES:
            return f"its x is {op.x.type.element_type}: Rung's kernels take f16 or bf16"
        return (f"its format {op.sparse} states no bound on a tile's nonzeros (`max`), which the kernel's slots are made for: "
                "sparsify the weight with Rung (frontend.transforms.sparsify_linears states it)")
    if isinstance(op, g.IndexCopyOp):
        from lowering.graph_to_tile import why_not_in_place

        return why_not_in_place(op) or "graph-to-tile did not take it"
    if isinstance(op, g.SdpaOp) and str(op.result.type.element_type) in ROW_DTYPES:
        from lowering.attention import why_no_attention_kernel

        return why_no_attention_kernel(op) or "the attention kernel did not take it"
    return f"no kernel yet for this op{' on ' + ', '.join(sorted(elements)) if elements else ''} (so far: {KERNEL_OPS})"


def check_lowered(module: ModuleOp, who: str = "lower-to-ptx") -> None:
    """A RungError naming the first op of a function that is not a launch, a weight packing, a reshape or a constant
    (and its result's name, which torch2ir takes from the model's traced node)."""
    for fn in module.ops:
        if isinstance(fn, func.FuncOp) and fn.body.blocks:  # (a declaration has nothing to lower)
            for op in fn.body.block.ops:
                if not isinstance(op, KEPT):
                    named = f" (%{op.results[0].name_hint})" if op.results and op.results[0].name_hint else ""
                    raise RungError(f"{who}: '{op.name}'{named} in @{fn.sym_name.data} has no GPU kernel yet: {why_not_lowered(op)}")


@dataclass(frozen=True)
class LowerToPtx(ModulePass):
    """Lower graph to ptx for `target` (fold-constants, raise-norms, raise-rope, raise-attention, conv-to-gemm, graph-to-tile, tile-expand,
    tile-to-warp, smem-swizzle, warp-to-ptx, and programmatic-launch for sm_90 and later); an op left without a kernel is an error naming it and why."""

    name = "lower-to-ptx"
    target: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for lower in (*(p() for p in GRAPH_PASSES), GraphToTile(target=self.target), TileExpand(), TileToWarp(), SmemSwizzle(), WarpToPtx(),
                      *([ProgrammaticLaunch()] if self.target and programmatic_launch(self.target) else [])):
            lower.apply(ctx, op)
        check_lowered(op)
