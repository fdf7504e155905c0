"""Ladder's weight layout (ir.packing): code tiles and clear errors for weights a format cannot hold."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ir.numerics import FormatError
from ir.packing import CODE_TILE_ROWS, code_rows, code_tiles, decoder, mma_b_words


@given(st.integers(1, 70) | st.integers(1, 5).map(lambda t: 16 * t), st.integers(1, 24), st.sampled_from([16, 32, 64]), st.integers(0, 2**31))
def test_code_tiles_keep_a_chunk_of_16_rows_together(n, columns, chunk, seed):
    """Stored codes: tile after tile of 16 rows, in each the rows' `chunk` bytes one row after
    another, chunk after chunk of K; codes whose N is not a multiple of 16 or whose rows are not
    whole chunks stay as they are. code_rows gives the rows back."""
    words = np.random.default_rng(seed).integers(0, 2**32, (n, 4 * columns), dtype=np.uint64).astype(np.uint32)
    image = code_tiles(words, chunk)
    assert image.shape == words.shape and np.array_equal(code_rows(image, chunk), words)
    r0 = CODE_TILE_ROWS * (n // CODE_TILE_ROWS // 2)  # a window of whole tiles, as a block's copies read it
    assert np.array_equal(code_rows(image, chunk, range(r0, r0 + 2 * CODE_TILE_ROWS)), words[r0:r0 + 2 * CODE_TILE_ROWS])
    per = chunk // 4
    if words.shape[1] % per or n % CODE_TILE_ROWS:
        assert np.array_equal(image, words)
        return
    flat = image.reshape(-1)
    for r0 in range(0, n, CODE_TILE_ROWS):
        for c in range(words.shape[1] // per):
            at = r0 * words.shape[1] + c * per * CODE_TILE_ROWS  # chunk c of the tile: 16 rows of `per` words, contiguous
            assert np.array_equal(flat[at:at + per * CODE_TILE_ROWS].reshape(CODE_TILE_ROWS, per), words[r0:r0 + CODE_TILE_ROWS, per * c:per * (c + 1)])


def test_code_rows_windows_are_whole_tiles():
    image = code_tiles(np.arange(32 * 16, dtype=np.uint32).reshape(32, 16), 64)
    with pytest.raises(ValueError, match="rows 8..24 are not whole tiles of 16"):
        code_rows(image, 64, range(8, 24))


def test_bad_weights_are_clear_errors():
    with pytest.raises(FormatError, match="do not fit 4 bits"):
        decoder("int4").codes(np.array([8]))
    with pytest.raises(FormatError, match="0.3 is not a value of e2m1"):
        decoder("e2m1").codes(np.array([0.5, 0.3]))
    with pytest.raises(FormatError, match="K = 24 must be a multiple of 32"):
        mma_b_words(np.zeros((2, 24), int), decoder("int4"))
    with pytest.raises(FormatError, match="no register decoder for e8m0"):
        decoder("e8m0")  # (unsigned, no subnormals: a scale format)
