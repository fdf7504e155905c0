"""smem-swizzle and warp-to-ptx: layouts chosen by a pass, addresses computed outside the K loop."""

from dialects import ptx, warp
from dialects.tile import GemmConfig
from ir.context import make_context, verify
from ir.passes import run_pipeline
from lowering.tile_to_warp import gemm_kernel
from xdsl.dialects.builtin import ModuleOp


def lowered(cfg, passes):
    module = ModuleOp([gemm_kernel(cfg)])
    run_pipeline(module, passes, make_context())
    verify(module)
    return module


def test_smem_swizzle_gives_every_tile_its_swizzle():
    module = lowered(GemmConfig(b_kn=True), "smem-swizzle")
    tiles = [op.result.type for op in module.walk() if isinstance(op, warp.AllocSharedOp)]
    assert [t.layout_swizzle is not None for t in tiles] == [True, True]
    assert tiles[0].layout_swizzle.shift == 3 and tiles[1].layout_swizzle.shift == 4  # 64-byte and 256-byte rows


def test_warp_to_ptx_leaves_only_ptx_and_keeps_address_math_out_of_the_loop():
    module = lowered(GemmConfig(), "smem-swizzle,warp-to-ptx")
    assert not any(op.name.startswith("warp.") for op in module.walk())
    (loop,) = [op for op in module.walk() if isinstance(op, ptx.ForOp)]
    in_loop = [op for op in loop.body.walk()]
    assert any(isinstance(op, ptx.LdmatrixOp) for op in in_loop)
    assert not any(isinstance(op, ptx.XorOp) for op in in_loop)  # swizzles are loop-invariant: computed before it
