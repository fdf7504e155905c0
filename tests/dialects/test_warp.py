"""The warp dialect: shared tile types, their layouts, and bank conflicts of ldmatrix on them."""

import numpy as np
import pytest
from xdsl.dialects.builtin import f16

from dialects.tile import swizzle_for
from dialects.warp import SmemType
from rung.context import parse_ir, print_ir
from ir.errors import RungError


def ldmatrix_phase_banks(tile: SmemType, rows, cols) -> list[int]:
    """Distinct banks each 8-lane phase of one ldmatrix touches (32 = conflict-free)."""
    addrs = tile.offset(0, np.asarray(rows), np.asarray(cols))
    return [len({(int(a) + j) // 4 % 32 for a in addrs[8 * i: 8 * i + 8] for j in range(0, 16, 4)}) for i in range(4)]


LANE = np.arange(32)
# the lanes' (row, col) for an x4 ldmatrix of A (rows m, cols k) and of a [K, N] B read transposed
A_READ = (LANE % 16, (LANE // 16) * 8)
B_KN_READ = (((LANE // 8) % 2) * 8 + LANE % 8, (LANE // 16) * 8)


@pytest.mark.parametrize("rows, cols, read", [(128, 32, A_READ), (128, 64, A_READ), (32, 128, B_KN_READ), (64, 256, B_KN_READ)])
def test_swizzle_makes_ldmatrix_conflict_free(rows, cols, read):
    plain = SmemType.get(2, rows, cols, f16)
    swizzled = SmemType.get(2, rows, cols, f16, swizzle_for(2 * cols))
    assert min(ldmatrix_phase_banks(plain, *read)) < 32  # rows 128 B apart share banks
    assert ldmatrix_phase_banks(swizzled, *read) == [32] * 4


@pytest.mark.parametrize("cols", [32, 64, 128, 256])
def test_tile_layout_is_a_bijection(cols):
    t = SmemType.get(3, 64, cols, f16, swizzle_for(2 * cols))
    s, r, c = np.meshgrid(np.arange(3), np.arange(64), np.arange(0, cols, 8), indexing="ij")
    offsets = t.offset(s, r, c).ravel()
    assert sorted(offsets.tolist()) == list(range(0, t.bytes, 16))  # every 16-byte chunk exactly once


def test_smem_type_prints_and_parses():
    text = ("func.func @f() attributes {t = !warp.smem<3x128x32xf16, swizzle 2 4 3>, u = !warp.smem<2x64x64xbf16>} {\n"
            "  func.return\n}\n")
    assert "!warp.smem<3x128x32xf16, swizzle 2 4 3>" in print_ir(parse_ir(text))
    with pytest.raises(RungError, match="not a whole number of swizzle periods"):
        parse_ir(text.replace("3x128x32xf16, swizzle 2 4 3", "3x2x32xf16, swizzle 2 4 3"))


@pytest.mark.parametrize("swizzled", [True, False])
def test_wgmma_descriptors_need_the_128_byte_swizzle(swizzled):
    from xdsl.utils.exceptions import VerifyException

    from dialects.ptx import KernelOp
    from dialects.warp import WGMMA_SWIZZLE
    from lowering.ptx_builder import PtxBuilder

    assert swizzle_for(128) == WGMMA_SWIZZLE  # tiles of 64 halves a row get the instruction's own layout
    b = PtxBuilder(KernelOp.get("k", [], 128, 16384).body.block)
    tile = b.alloc_shared(SmemType.get(2, 64, 64, f16, WGMMA_SWIZZLE if swizzled else None), 0)
    zero = b.imm(0)
    desc = b.tile_desc(tile, zero, zero, zero).owner
    if swizzled:
        desc.verify()
    else:
        with pytest.raises(VerifyException, match="128-byte rows with the 128-byte swizzle"):
            desc.verify()


@pytest.mark.parametrize("kinds, ok", [(["b32"] * 4, True), (["b16"] * 2, True), (["b32"], True), (["b32"] * 3, False),
                                        (["b32", "b16"], False), (["u32"], False)])
def test_shared_stores_take_one_two_or_four_registers_of_one_width(kinds, ok):
    from xdsl.utils.exceptions import VerifyException

    from dialects.ptx import KernelOp
    from lowering.ptx_builder import PtxBuilder

    b = PtxBuilder(KernelOp.get("k", [], 32, 4096).body.block)
    tile = b.alloc_shared(SmemType.get(1, 8, 256, f16), 0)
    zero = b.imm(0)
    b.tile_store(tile, zero, zero, zero, [b.imm(i, kind) for i, kind in enumerate(kinds)])
    store = b.block.last_op
    if ok:
        store.verify()
    else:
        with pytest.raises(VerifyException, match="stores 1, 2 or 4 registers, all b32 or all b16"):
            store.verify()

