"""The layout algebra's laws, and the mma fragment layouts against the PTX ISA's formulas."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ir.layout import (
    MMA_A,
    MMA_B,
    MMA_C,
    ComposedLayout,
    Layout,
    LayoutError,
    Swizzle,
    coalesce,
    complement,
    composition,
    logical_divide,
    logical_product,
    make_layout,
    MMA_SHAPES,
    right_inverse,
)

extents = st.sampled_from([1, 2, 3, 4, 8])


@st.composite
def layouts(draw, max_modes=3):
    shape = tuple(draw(st.lists(extents, min_size=1, max_size=max_modes)))
    stride = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 16]), min_size=len(shape), max_size=len(shape))))
    return Layout(shape, stride)


@st.composite
def compact_layouts(draw, max_modes=3, sizes=(2, 3, 4)):
    """Injective layouts: a column-major layout with its modes permuted."""
    shape = tuple(draw(st.lists(st.sampled_from(sizes), min_size=1, max_size=max_modes)))
    order = draw(st.permutations(range(len(shape))))
    stride, acc = [0] * len(shape), 1
    for i in order:
        stride[i] = acc
        acc *= shape[i]
    return Layout(shape, tuple(stride))


def same_function(a, b):
    assert a.size == b.size
    assert np.array_equal(a.offsets(), b.offsets()), f"{a} != {b}"


def test_evaluation_is_colexicographic():
    a = Layout((2, (3, 4)), (1, (2, 6)))
    assert a(1) == 1 and a(2) == 2 and a(1, 5) == 1 + 2 * 2 + 6 * 1
    assert Layout.row_major((2, 3)).offsets().tolist() == [0, 3, 1, 4, 2, 5]
    with pytest.raises(LayoutError, match="not congruent"):
        Layout((2, 3), 1)


@given(layouts())
def test_coalesce_keeps_the_function(a):
    same_function(coalesce(a), a)


@given(compact_layouts(), compact_layouts())
def test_composition_is_function_composition(a, b):
    assume(b.cosize <= a.size)
    try:
        c = composition(a, b)
    except LayoutError:
        assume(False)
    assert c.offsets().tolist() == [a(int(i)) for i in b.offsets()]


@st.composite
def permuted(draw, shape):
    """A compact layout over the extents of `shape`, in a drawn order and mode order."""
    shape = draw(st.permutations(shape))
    order = draw(st.permutations(range(len(shape))))
    stride, acc = [0] * len(shape), 1
    for i in order:
        stride[i] = acc
        acc *= shape[i]
    return Layout(tuple(shape), tuple(stride))


@given(st.lists(st.sampled_from([2, 4]), min_size=1, max_size=4).flatmap(lambda s: st.tuples(permuted(s), permuted(s), permuted(s))))
def test_composition_is_associative(abc):
    a, b, c = abc  # power-of-two extents: every composition is defined
    same_function(composition(composition(a, b), c), composition(a, composition(b, c)))


@given(compact_layouts(), st.integers(1, 4))
def test_complement_fills_the_rest(a, k):
    m = a.cosize * k
    c = complement(a, m)
    both = make_layout(a, c).offsets()
    assert len(set(both.tolist())) == len(both)  # a and its complement never collide
    assert a.size * c.size >= m and set(range(m)) <= set(both.tolist())


@given(compact_layouts())
def test_right_inverse_undoes_the_layout(a):
    r = right_inverse(a)
    assert [a(int(r(i))) for i in range(r.size)] == list(range(r.size))
    assert r.size == a.size  # compact layouts invert fully


@given(compact_layouts(sizes=(2, 4, 8)), st.sampled_from([1, 2, 4, 8]))
def test_division_then_its_inverse_gives_the_layout_back(a, tile):
    assume(a.size % tile == 0)
    b = Layout(tile, 1)
    divided = logical_divide(a, b)
    permutation = make_layout(b, complement(b, a.size))
    same_function(composition(divided, right_inverse(permutation)), a)
    assert sorted(divided.offsets().tolist()) == sorted(a.offsets().tolist())


@given(compact_layouts(max_modes=2), st.sampled_from([1, 2, 3]))
def test_product_repeats_the_layout(a, reps):
    p = logical_product(a, Layout(reps, 1))
    offs = p.offsets().reshape(reps, a.size)
    for r in range(reps):  # repetition r is `a` shifted past the previous ones
        assert np.array_equal(offs[r] - offs[r].min(), a.offsets() - a.offsets().min())
    assert len(set(p.offsets().tolist())) == p.size


@given(st.integers(1, 3), st.integers(0, 4), st.integers(1, 4), st.integers(1, 4))
def test_swizzle_is_a_bijection(bits, base, s, k):
    assume(s >= bits)
    sw = Swizzle(bits, base, s)
    n = (1 << (bits + base + s)) * k
    assert sorted(sw(np.arange(n)).tolist()) == list(range(n))
    comp = ComposedLayout(sw, Layout.row_major((n // 8, 8)) if n % 8 == 0 else Layout(n, 1))
    assert sorted(comp.offsets().tolist()) == list(range(n))


def test_swizzle_spreads_ldmatrix_rows_over_banks():
    # 8 rows of 64 halves (128 B): row r's first 16-byte chunk lands in chunk r ^ 0 .. distinct banks.
    sw = ComposedLayout(Swizzle(3, 3, 3), Layout.row_major((8, 64)))
    chunks = [(sw(r, 0) * 2 // 16) % 8 for r in range(8)]
    assert sorted(chunks) == list(range(8))


def test_mma_layouts_follow_the_ptx_isa():
    lane = np.arange(32)[:, None]
    group, tig = lane // 4, lane % 4
    i = np.arange(8)[None, :]
    rows, cols = MMA_A.coords
    assert np.array_equal(rows, np.broadcast_to(group + 8 * ((i // 2) % 2), rows.shape))
    assert np.array_equal(cols, np.broadcast_to(tig * 2 + (i % 2) + 8 * (i // 4), cols.shape))
    j = np.arange(4)[None, :]
    n, k = MMA_B.coords
    assert np.array_equal(k, np.broadcast_to(tig * 2 + (j % 2) + 8 * (j // 2), k.shape))
    assert np.array_equal(n, np.broadcast_to(group, n.shape))
    m, nn = MMA_C.coords
    assert np.array_equal(m, np.broadcast_to(group + 8 * (j // 2), m.shape))
    assert np.array_equal(nn, np.broadcast_to(tig * 2 + (j % 2), nn.shape))
    # every element of each operand tile is owned by exactly one (lane, value)
    for tv in (MMA_A, MMA_B, MMA_C):
        assert sorted(tv.layout.offsets().tolist()) == list(range(tv.layout.size))


def test_m16n8k8_layouts_follow_the_ptx_isa():
    shape = MMA_SHAPES["m16n8k8"]
    lane = np.arange(32)[:, None]
    group, tig = lane // 4, lane % 4
    i = np.arange(4)[None, :]
    rows, cols = shape.a.coords  # a0, a1: row g; a2, a3: row g + 8; column 2t + (i % 2)
    assert np.array_equal(rows, np.broadcast_to(group + 8 * (i // 2), rows.shape))
    assert np.array_equal(cols, np.broadcast_to(tig * 2 + i % 2, cols.shape))
    n, k = shape.b.coords  # b0, b1: k = 2t + i, n = g
    j = np.arange(2)[None, :]
    assert np.array_equal(k, np.broadcast_to(tig * 2 + j, k.shape)) and np.array_equal(n, np.broadcast_to(group, n.shape))
    for tv in (shape.a, shape.b):
        assert sorted(tv.layout.offsets().tolist()) == list(range(tv.layout.size))


def test_m16n8k32_8bit_layouts_follow_the_ptx_isa():
    """A: a_i with i < 4 or 8 <= i < 12 in row g, else g + 8; column 4t + (i % 4), + 16 for i >= 8.
    B: b_i at k = 4t + (i % 4), + 16 for i >= 4, n = g."""
    shape = MMA_SHAPES["m16n8k32"]
    lane = np.arange(32)[:, None]
    group, tig = lane // 4, lane % 4
    i = np.arange(16)[None, :]
    rows, cols = shape.a.coords
    assert np.array_equal(rows, np.broadcast_to(group + 8 * ((i // 4) % 2), rows.shape))
    assert np.array_equal(cols, np.broadcast_to(tig * 4 + i % 4 + 16 * (i // 8), cols.shape))
    j = np.arange(8)[None, :]
    n, k = shape.b.coords
    assert np.array_equal(k, np.broadcast_to(tig * 4 + j % 4 + 16 * (j // 4), k.shape)) and np.array_equal(n, np.broadcast_to(group, n.shape))
    for tv in (shape.a, shape.b):
        assert sorted(tv.layout.offsets().tolist()) == list(range(tv.layout.size))


@pytest.mark.parametrize("name", MMA_SHAPES)
def test_mma_emulation_is_a_matmul(name):
    shape = MMA_SHAPES[name]
    rng = np.random.default_rng(0)
    a, b, c = rng.standard_normal((16, shape.k)), rng.standard_normal((8, shape.k)), rng.standard_normal((16, 8))
    d = shape(a[shape.a.coords], b[shape.b.coords], c[shape.c.coords])
    np.testing.assert_allclose(d, (a @ b.T + c)[shape.c.coords])
