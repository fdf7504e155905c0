"""tile-to-ptx: each tile.matmul becomes a ptx.launch of a generated ptx.kernel (one per schedule)."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects.ptx import KernelOp, LaunchOp
from dialects.tile import MatmulOp
from lowering.matmul_to_ptx import gemm_kernel


@dataclass(frozen=True)
class TileToPtx(ModulePass):
    """Generate the PTX kernel of each tile.matmul schedule and launch it in place of the op."""

    name = "tile-to-ptx"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        kernels = {k.sym_name.data for k in op.ops if isinstance(k, KernelOp)}
        for mm in [o for o in op.walk() if isinstance(o, MatmulOp)]:
            cfg = mm.config
            if cfg.name not in kernels:
                op.body.block.add_op(gemm_kernel(cfg))
                kernels.add(cfg.name)
            (m, k), n = mm.x.type.get_shape(), mm.result.type.get_shape()[1]
            grid = ((n + cfg.bn - 1) // cfg.bn, (m + cfg.bm - 1) // cfg.bm, 1)
            launch = LaunchOp.get(cfg.name, list(mm.operands), mm.result.type, grid, [m, n, k])
            Rewriter.replace_op(mm, launch)
