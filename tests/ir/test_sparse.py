"""Magnitude pruning and Tiled-CSL (ir.sparse): exact counts, a round trip for any shape, tiling and sparsity (empty rows,
tiles and weights too), and one clear error for each kind of bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ir.errors import RungError
from ir.numerics import FormatError
from ir.sparse import SparseFormat, decode, encode, kernel_tiles, prune, sparsify

shapes = st.tuples(st.integers(1, 70), st.integers(1, 90))
tiles = st.builds(SparseFormat, st.integers(1, 40), st.integers(1, 40))


@given(shapes.flatmap(lambda s: hnp.arrays(np.float64, s, elements=st.floats(-4, 4, width=32))), st.floats(0, 0.999),
       st.sampled_from(["row", "tensor"]))
def test_pruning_keeps_the_largest_magnitudes(w, sparsity, per):
    pruned = prune(w, sparsity, per)
    flat, kept = (w.reshape(1, -1), pruned.reshape(1, -1)) if per == "tensor" else (w, pruned)
    dropped = int(round(sparsity * flat.shape[1]))
    for row, out in zip(flat, kept):
        zeroed = out != row
        assert np.all(out[~zeroed] == row[~zeroed]) and np.all(out[zeroed] == 0)
        order = np.argsort(np.abs(row), kind="stable")
        assert np.all(out[order[:dropped]] == 0) and np.array_equal(out[order[dropped:]], row[order[dropped:]])


@given(shapes.flatmap(lambda s: hnp.arrays(np.float64, s, elements=st.one_of(st.just(0.0), st.floats(-4, 4, width=32)))), tiles)
def test_tiled_csl_round_trips_any_weight(w, fmt):
    """Zero-heavy draws give empty rows and tiles (and whole empty weights); edge tiles may be partial."""
    csl = encode(w, fmt)
    tiles_n, tiles_k = fmt.tiles(w.shape)
    assert csl.offsets.shape == (tiles_n * tiles_k + 1,) and csl.offsets[-1] == np.count_nonzero(w) == len(csl.values)
    assert np.all(np.diff(csl.offsets) >= 0) and csl.positions.dtype == np.uint16
    for t in range(tiles_n * tiles_k):  # each tile's nonzeros in position order
        assert np.all(np.diff(csl.positions[csl.offsets[t]:csl.offsets[t + 1]].astype(int)) > 0)
    assert np.array_equal(decode(csl.values, csl.positions, csl.offsets, w.shape, fmt), w)


@pytest.mark.parametrize("call, message", [
    (lambda: prune(np.ones((2, 2)), 1.0), r"sparsity is a fraction in \[0, 1\), got 1.0"),
    (lambda: prune(np.ones((2, 2)), -0.1), r"sparsity is a fraction in \[0, 1\)"),
    (lambda: prune(np.ones((2, 2)), 0.5, "column"), "pruning is per row or per tensor, not 'column'"),
    (lambda: prune(np.array([[1.0, np.nan]]), 0.5), "cannot prune a weight holding inf or NaN"),
    (lambda: prune(np.ones(4), 0.5), r"a weight to prune is \[N, K\], got shape \[4\]"),
    (lambda: SparseFormat(512, 256), "holds more positions than 16 bits number"),
    (lambda: SparseFormat(0, 8), "tile_n must be a positive integer"),
    (lambda: decode([1.0], [0], [0, 1], (4, 4), SparseFormat(2, 2)), "has 4 tiles: offsets must have 5 entries"),
    (lambda: decode([1.0], [9], [0, 1], (2, 2), SparseFormat(2, 2)), "a position lies outside its tile"),
    (lambda: decode([1.0], [3], [0, 1], (1, 1), SparseFormat(2, 2)), "outside its tile or the 1x1 weight"),
    (lambda: decode([1.0, 2.0], [0, 1], [0, 1], (2, 2), SparseFormat(2, 2)), "offsets must rise from 0 to the 2 nonzeros"),
])
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(FormatError, match=message):
        call()


def test_rung_sparsify_takes_torch_tensors_and_says_what_is_wrong():
    import torch

    w = torch.randn(96, 80)
    csl = sparsify(w, 0.75)
    assert csl.density == pytest.approx(0.25) and np.array_equal(decode(csl.values, csl.positions, csl.offsets, (96, 80)),
                                                                  prune(w.double().numpy(), 0.75))
    with pytest.raises(RungError, match=r"sparsify: sparsity is a fraction in \[0, 1\), got 1.5"):
        sparsify(w, 1.5)


@settings(max_examples=max(10, settings().max_examples // 4))  # (each example walks every tile in Python)
@given(shapes.flatmap(lambda s: hnp.arrays(np.float64, s, elements=st.one_of(st.just(0.0), st.integers(-4, 4).map(float)))),
       st.sampled_from([(16, 16, 32), (32, 16, 64), (8, 32, 128)]), st.sampled_from(["f16", "bf16"]), st.booleans())
def test_kernel_tiles_scatter_back_into_the_weight(w, tile, dtype, by_bank):
    """Every tile's slots, scattered into a zeroed tile (padding included: zeros at positions of their own, none
    twice), give the tile back, in position order or ordered by banks; slots are the fullest tile's count rounded up
    to the tile's rows and the threads."""
    import math

    import ml_dtypes

    tile_n, tile_k, threads = tile
    banks = np.arange(tile_n * tile_k) // 2 % 32 if by_bank else None
    packed = kernel_tiles(w, tile_n, tile_k, dtype, threads, banks=banks)
    tiles_n, tiles_k = SparseFormat(tile_n, tile_k).tiles(w.shape)
    slots = packed.shape[1] // tiles_k * tile_n
    assert packed.shape == (tiles_n * tile_n, tiles_k * slots // tile_n) and slots % math.lcm(tile_n, threads) == 0
    padded = np.zeros((tiles_n * tile_n, tiles_k * tile_k))
    padded[:w.shape[0], :w.shape[1]] = w
    fullest = max(np.count_nonzero(padded[r:r + tile_n, c:c + tile_k]) for r in range(0, len(padded), tile_n)
                  for c in range(0, padded.shape[1], tile_k))
    assert slots == max(1, -(-fullest // math.lcm(tile_n, threads))) * math.lcm(tile_n, threads)
    as_float = np.float16 if dtype == "f16" else ml_dtypes.bfloat16
    for r in range(tiles_n):
        for c in range(tiles_k):
            words = packed[r * tile_n:(r + 1) * tile_n, c * slots // tile_n:(c + 1) * slots // tile_n].reshape(-1)
            positions = words >> 16
            assert len(set(positions.tolist())) == slots
            dense = np.zeros(tile_n * tile_k)
            dense[positions] = (words & 0xFFFF).astype(np.uint16).view(as_float).astype(np.float64)
            assert np.array_equal(dense.reshape(tile_n, tile_k), padded[r * tile_n:(r + 1) * tile_n, c * tile_k:(c + 1) * tile_k])


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.95])
def test_slots_ordered_by_bank_give_each_warp_store_distinct_banks(sparsity):
    """A random 128x64 tile's slots in the sparse kernel's dense tile (swizzled): ordered by bank, a tile's warp stores
    take one pass of the banks each but where its nonzeros crowd one bank more than the others (no order does better
    than that bank's count); in position order about three passes each."""
    from dialects.tile.schedule import dense_tile_banks

    rng = np.random.default_rng(int(sparsity * 100))
    w = rng.standard_normal((512, 256)) * (rng.random((512, 256)) >= sparsity)
    banks = dense_tile_banks(128, 64)

    def passes(packed):  # per tile and warp store (32 slots): the most of its slots in one bank
        slots = packed.reshape(4, 128, 4, -1).transpose(0, 2, 1, 3).reshape(16, -1)
        groups = banks[(slots >> 16).astype(np.int64)].reshape(16, -1, 32)
        return np.array([[np.bincount(g, minlength=32).max() for g in tile] for tile in groups]), groups

    (ordered, groups), (plain, _) = passes(kernel_tiles(w, 128, 64, banks=banks)), passes(kernel_tiles(w, 128, 64))
    crowded = np.array([np.bincount(tile.reshape(-1), minlength=32).max() for tile in groups])  # the fullest bank's slots
    assert np.all(ordered.sum(axis=1) <= np.maximum(crowded, ordered.shape[1]) + 2)
    assert ordered.mean() < 1.5 and plain.mean() > 2.5
