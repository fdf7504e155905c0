"""smem-swizzle and warp-to-ptx: layouts chosen by a pass, addresses computed outside the K loop."""

from dialects import ptx, warp
from dialects.tile import GemmConfig
from rung.context import make_context, verify
from rung.passes import run_pipeline
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


def test_the_shared_table_keeps_its_layout_and_each_lookup_costs_one_mad():
    """nf4's table of pairs (GemmConfig.shared_table) carries the identity swizzle, which
    smem-swizzle leaves alone and warp-to-ptx emits nothing for; a lookup's row (the code byte)
    is computed in the loop, its column (the lane's copy) outside it, so in the loop each lookup's
    address is one mad onto a base that holds the column."""
    cfg = GemmConfig("f16", bm=8, bn=128, bk=128, warps_m=1, warps_n=4, stages=3, weight="nf4", group=64, scale_partials=True,
                     shared_table=True)
    tiles = [op.result.type for op in lowered(cfg, "smem-swizzle").walk() if isinstance(op, warp.AllocSharedOp)]
    assert tiles[-1].layout_swizzle is not None and tiles[-1].layout_swizzle.bits == 0
    (loop,) = [op for op in lowered(cfg, "smem-swizzle,warp-to-ptx").walk() if isinstance(op, ptx.ForOp)]
    lookups = [op for op in loop.body.walk() if isinstance(op, ptx.LoadOp) and isinstance(op.addr.owner, ptx.AddOp)
               and isinstance(op.addr.owner.lhs.owner, ptx.MadOp)]
    assert len(lookups) == 4 * (cfg.bk // 32) * (cfg.bn // cfg.warps_n // 8)  # 4 pairs a word, a word per k-block and n8 tile
    for load in lookups:
        mad = load.addr.owner.lhs.owner
        assert isinstance(mad.a.owner, ptx.PrmtOp) and mad.c.owner.parent is not loop.body.block  # the column outside the loop
