"""The `tile` dialect: whole-tensor ops with their thread-block schedule made explicit.

    %y = tile.matmul %x, %w {block = array<i64: 128, 128, 32>, warps = array<i64: 2, 2>, stages = 3 : i64}
           : tensor<MxKxf16>, tensor<NxKxf16> -> tensor<MxNxf16>

computes y = x @ w^T as the kernel will: one thread block per BM x BN tile of y, K in BK steps
through a `stages`-deep shared-memory pipeline, f32 accumulation, one rounding to the output
type. Its interpreter runs exactly that blocked order, so the schedule is checked on the CPU.
"""

from dialects.tile.schedule import (  # noqa: F401
    TABLE_ROWS, TABLE_BYTES, MAX_SHARED_BYTES, REDUCE_THREADS, EIGHT_BIT_OPERANDS, reduce_grid, reduce_param_kinds,
    copy_elems, ACTIVATIONS, RESIDUALS, swizzle_for, SharedTile, GemmConfig, GemmSchedule
)
from dialects.tile.ops import (  # noqa: F401
    MatmulOp, scale_bits, packed_types, PackWeightOp, PackSparseOp, add_scaled_partials, WriteRowsOp
)
from dialects.tile.types import (  # noqa: F401
    SharedType, FRAGMENT_LAYOUTS, FragType
)
from dialects.tile.program import (  # noqa: F401
    BlockIds, generic_tensor, KernelOp, element_bits, LaunchOp, YieldOp, BlockOriginOp, KRangeOp, SharedBufferOp,
    ZerosOp, PipelineOp, COPY_BYTES, CopyOp, FragmentOp, DecodeOp, ScatterOp, MmaOp, EpilogueOp, StoreOp, SumSplitsOp
)

from xdsl.ir import Dialect

from dialects.tile.attention import (  # noqa: F401
    ATTENTION_ATTRIBUTES, ATTENTION_OPS, AttentionConfig, AttentionOp, AttentionSchedule, MergeSplitsOp
)
from dialects.tile.rows import (  # noqa: F401
    ROW_ATTRIBUTES, ROW_OPS, GatherRowOp, LoadIndexOp, LoadRowOp, SourceRowOp, MapOp, ReduceRowOp, RowConfig, RowIdOp, RowSchedule, RowType, StoreRowOp
)


TILE = Dialect("tile", [MatmulOp, PackWeightOp, PackSparseOp, WriteRowsOp, KernelOp, LaunchOp, YieldOp, BlockOriginOp, KRangeOp, SharedBufferOp, ZerosOp,
                        PipelineOp, CopyOp, FragmentOp, DecodeOp, ScatterOp, MmaOp, EpilogueOp, StoreOp, SumSplitsOp, *ROW_OPS, *ATTENTION_OPS],
               [SharedType, FragType, GemmSchedule, *ROW_ATTRIBUTES, *ATTENTION_ATTRIBUTES])
