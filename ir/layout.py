"""Layouts: CuTe's shape:stride algebra, the one abstraction every level uses for indexing.

A layout maps a 1-D index (or a coordinate) to an offset. Shapes and strides are nested
tuples of ints (`IntTuple`); a 1-D index is split into coordinates colexicographically
(the leftmost mode varies fastest) over the flattened shape. The algebra:

- `composition(A, B)`: the layout i -> A(B(i)), keeping B's mode structure;
- `complement(A, M)`: the layout of the offsets in [0, M) that A does not reach;
- `logical_divide(A, B)`: A split into B-shaped tiles (mode 0: inside a tile, mode 1: across);
- `logical_product(A, B)`: A repeated in the pattern of B;
- `right_inverse(A)`: R with A(R(i)) = i over the contiguous image of A;
- `Swizzle(b, m, s)`: offset ^ ((offset >> s) & (2^b - 1) << m), a bijection that breaks
  shared-memory bank conflicts; `ComposedLayout(swizzle, layout)` applies it after a layout.

Thread-value layouts (`MMA_M16N8K16_*`, `MMA_M16N8K8_*`, `MMA_M16N8K32_*`) map (lane, value) to a fragment
element's position in the PTX ISA's mma operand tiles; `MMA_SHAPES` computes with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

IntTuple = "int | tuple[IntTuple, ...]"


class LayoutError(ValueError):
    """An operation the algebra does not define for these layouts (e.g. non-divisible strides)."""


def flatten(t) -> tuple[int, ...]:
    return (t,) if isinstance(t, int) else tuple(x for e in t for x in flatten(e))


def product(t) -> int:
    return math.prod(flatten(t))


def _congruent(a, b) -> bool:
    if isinstance(a, int) or isinstance(b, int):
        return isinstance(a, int) and isinstance(b, int)
    return len(a) == len(b) and all(_congruent(x, y) for x, y in zip(a, b))


def _unflatten(flat: list, like):
    """`flat` values arranged in the nesting of `like`."""
    if isinstance(like, int):
        return flat.pop(0)
    return tuple(_unflatten(flat, e) for e in like)


@dataclass(frozen=True)
class Layout:
    shape: object
    stride: object

    def __post_init__(self):
        if not _congruent(self.shape, self.stride):
            raise LayoutError(f"shape {self.shape} and stride {self.stride} are not congruent")
        if any(s <= 0 for s in flatten(self.shape)):
            raise LayoutError(f"shape {self.shape} has a non-positive extent")

    @staticmethod
    def column_major(shape) -> "Layout":
        """The compact layout with the leftmost mode fastest."""
        flat, strides, acc = flatten(shape), [], 1
        for s in flat:
            strides.append(acc)
            acc *= s
        return Layout(shape, _unflatten(strides, shape))

    @staticmethod
    def row_major(shape) -> "Layout":
        """The compact layout with the rightmost mode fastest."""
        flat, strides, acc = flatten(shape), [], 1
        for s in reversed(flat):
            strides.append(acc)
            acc *= s
        return Layout(shape, _unflatten(list(reversed(strides)), shape))

    @property
    def rank(self) -> int:
        return 1 if isinstance(self.shape, int) else len(self.shape)

    @property
    def size(self) -> int:
        return product(self.shape)

    @property
    def cosize(self) -> int:
        """One past the largest offset."""
        return int(self.offsets().max()) + 1 if self.size else 0

    def modes(self) -> list["Layout"]:
        if isinstance(self.shape, int):
            return [self]
        return [Layout(s, d) for s, d in zip(self.shape, self.stride)]

    def __getitem__(self, i: int) -> "Layout":
        return self.modes()[i]

    def flat_modes(self) -> list[tuple[int, int]]:
        return list(zip(flatten(self.shape), flatten(self.stride)))

    def __call__(self, *coord):
        """Offset of a 1-D index, or of a coordinate with one entry per top-level mode (ints or numpy arrays)."""
        if len(coord) == 1:
            idx, out = coord[0], 0
            for s, d in self.flat_modes():
                out = out + (idx % s) * d
                idx = idx // s
            return out
        if len(coord) != self.rank:
            raise LayoutError(f"coordinate of {len(coord)} entries for a layout of rank {self.rank}")
        return sum(mode(c) for mode, c in zip(self.modes(), coord))

    def offsets(self) -> np.ndarray:
        """All offsets, in index order."""
        return np.asarray(self(np.arange(self.size)), dtype=np.int64)

    def __str__(self) -> str:
        return f"{self.shape}:{self.stride}"


def make_layout(*layouts: Layout) -> Layout:
    """The layout whose modes are `layouts`."""
    return Layout(tuple(l.shape for l in layouts), tuple(l.stride for l in layouts))


def coalesce(a: Layout) -> Layout:
    """The same function with the fewest flat modes (size-1 modes dropped, contiguous ones merged)."""
    shape, stride = [], []
    for s, d in a.flat_modes():
        if s == 1:
            continue
        if shape and stride[-1] * shape[-1] == d:
            shape[-1] *= s
        else:
            shape.append(s)
            stride.append(d)
    if not shape:
        return Layout(1, 0)
    return Layout(shape[0], stride[0]) if len(shape) == 1 else Layout(tuple(shape), tuple(stride))


def _compose_flat(a: Layout, s: int, d: int) -> list[tuple[int, int]]:
    """Flat modes of a ∘ (s:d)."""
    if d == 0:
        return [(s, 0)]
    modes = coalesce(a).flat_modes()
    out: list[tuple[int, int]] = []
    rest_shape, rest_stride = s, d
    for curr_shape, curr_stride in modes[:-1]:
        if rest_shape == 1:
            break
        if rest_stride >= curr_shape:
            if rest_stride % curr_shape:
                raise LayoutError(f"stride {d} is not divisible along {a}")
            rest_stride //= curr_shape
            continue
        if curr_shape % rest_stride:
            raise LayoutError(f"stride {d} does not divide the mode {curr_shape} of {a}")
        avail = curr_shape // rest_stride
        take = min(avail, rest_shape)
        if rest_shape > avail and rest_shape % avail:
            raise LayoutError(f"shape {s} does not divide along {a}")
        out.append((take, rest_stride * curr_stride))
        rest_shape //= take
        rest_stride = 1
    if rest_shape > 1:
        out.append((rest_shape, rest_stride * modes[-1][1]))
    return out or [(1, 0)]


def composition(a: Layout, b: Layout) -> Layout:
    """a ∘ b: i -> a(b(i)), with b's mode structure."""

    def compose(shape, stride):
        if isinstance(shape, int):
            modes = _compose_flat(a, shape, stride)
            return (modes[0] if len(modes) == 1 else (tuple(m[0] for m in modes), tuple(m[1] for m in modes)))
        parts = [compose(s, d) for s, d in zip(shape, stride)]
        return tuple(p[0] for p in parts), tuple(p[1] for p in parts)

    shape, stride = compose(b.shape, b.stride)
    return Layout(shape, stride)


def complement(a: Layout, m: int) -> Layout:
    """The layout, ordered by stride, of the offsets in [0, m) that `a` leaves out."""
    modes = sorted((d, s) for s, d in coalesce(a).flat_modes() if s > 1 and d > 0)
    shape, stride, current = [], [], 1
    for d, s in modes:
        if d % current:
            raise LayoutError(f"{a} is not injective with divisible strides: no complement")
        shape.append(d // current)
        stride.append(current)
        current = s * d
    shape.append(max(1, math.ceil(m / current)))
    stride.append(current)
    return coalesce(Layout(tuple(shape), tuple(stride)))


def logical_divide(a: Layout, b: Layout) -> Layout:
    """a split into tiles of b: mode 0 indexes inside a tile, mode 1 across tiles."""
    return composition(a, make_layout(b, complement(b, a.size)))


def logical_product(a: Layout, b: Layout) -> Layout:
    """a repeated in the pattern of b: mode 0 is a, mode 1 the repetitions."""
    return make_layout(a, composition(complement(a, a.size * b.cosize), b))


def right_inverse(a: Layout) -> Layout:
    """r with a(r(i)) == i for i below the size of a's contiguous image from 0."""
    flat = coalesce(a).flat_modes()
    positions, acc = [], 1
    for s, _ in flat:
        positions.append(acc)
        acc *= s
    shape, stride, current = [], [], 1
    for d, s, pos in sorted((d, s, p) for (s, d), p in zip(flat, positions)):
        if d != current:
            break
        shape.append(s)
        stride.append(pos)
        current *= s
    if not shape:
        return Layout(1, 0)
    return coalesce(Layout(tuple(shape), tuple(stride)))


@dataclass(frozen=True)
class Swizzle:
    """offset -> offset ^ (((offset >> shift) & ((1 << bits) - 1) << base)), with shift = base + s."""

    bits: int
    base: int
    shift: int

    def __call__(self, offset):
        mask = ((1 << self.bits) - 1) << (self.base + self.shift)
        return offset ^ ((offset & mask) >> self.shift)


@dataclass(frozen=True)
class ComposedLayout:
    """swizzle ∘ layout."""

    swizzle: Swizzle
    layout: Layout

    @property
    def size(self) -> int:
        return self.layout.size

    def __call__(self, *coord):
        return self.swizzle(self.layout(*coord))

    def offsets(self) -> np.ndarray:
        return np.asarray(self.swizzle(self.layout.offsets()), dtype=np.int64)


# --- tensor-core fragment layouts (PTX ISA: mma.sync.m16n8k{16,8} with 16-bit A/B, m16n8k32 with 8-bit A/B)
# Each maps (lane, value) -> the element's column-major index in its operand tile:
# A is M x K (m + 16 k), B is N x K (n + 8 k), C/D is M x N = 16 x 8 (m + 16 n).
# lane = (lane % 4, lane // 4) = (threadID_in_group, groupID); a register holds 2 (16-bit) or 4 (8-bit) values.

MMA_M16N8K16_A = Layout(((4, 8), (2, 2, 2)), ((32, 1), (16, 8, 128)))
MMA_M16N8K16_B = Layout(((4, 8), (2, 2)), ((16, 1), (8, 64)))
MMA_M16N8K16_C = Layout(((4, 8), (2, 2)), ((32, 1), (16, 8)))
MMA_M16N8K8_A = Layout(((4, 8), (2, 2)), ((32, 1), (16, 8)))
MMA_M16N8K8_B = Layout(((4, 8), 2), ((16, 1), 8))
MMA_M16N8K32_A = Layout(((4, 8), (4, 2, 2)), ((64, 1), (16, 8, 256)))
MMA_M16N8K32_B = Layout(((4, 8), (4, 2)), ((32, 1), (8, 128)))


@dataclass(frozen=True)
class TVLayout:
    """A thread-value layout over a column-major tile of `tile` shape."""

    layout: Layout
    tile: tuple[int, int]

    @cached_property
    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) arrays of shape [threads, values]."""
        threads, values = self.layout[0].size, self.layout[1].size
        idx = np.array([[self.layout(t, v) for v in range(values)] for t in range(threads)])
        return idx % self.tile[0], idx // self.tile[0]


@dataclass(frozen=True)
class MmaShape:
    """One mma.sync shape: the fragment layouts of A, B and C/D."""

    name: str
    k: int
    a: TVLayout
    b: TVLayout
    c: TVLayout

    def __call__(self, a_frag: np.ndarray, b_frag: np.ndarray, c_frag: np.ndarray) -> np.ndarray:
        """What one warp's mma.sync computes, fragment in, fragment out ([32, values] each)."""
        a, b, c = np.zeros((16, self.k)), np.zeros((8, self.k)), np.zeros((16, 8))
        a[self.a.coords] = a_frag
        b[self.b.coords] = b_frag
        c[self.c.coords] = c_frag
        return (a @ b.T + c)[self.c.coords]


MMA_C = TVLayout(MMA_M16N8K16_C, (16, 8))
MMA_SHAPES = {
    "m16n8k16": MmaShape("m16n8k16", 16, TVLayout(MMA_M16N8K16_A, (16, 16)), TVLayout(MMA_M16N8K16_B, (8, 16)), MMA_C),
    "m16n8k8": MmaShape("m16n8k8", 8, TVLayout(MMA_M16N8K8_A, (16, 8)), TVLayout(MMA_M16N8K8_B, (8, 8)), MMA_C),
    "m16n8k32": MmaShape("m16n8k32", 32, TVLayout(MMA_M16N8K32_A, (16, 32)), TVLayout(MMA_M16N8K32_B, (8, 32)), MMA_C),
}
MMA_A, MMA_B = MMA_SHAPES["m16n8k16"].a, MMA_SHAPES["m16n8k16"].b


@lru_cache(maxsize=None)
def wgmma_a() -> TVLayout:
    """wgmma.m64nNk16's A from registers (64 x 16, m + 64 k): each warp's 16 rows as mma.sync's
    m16n8k16 A fragment, thread (lane % 4, lane // 4, warp) holding rows 16 warp + g (and + 8),
    k 2 t, 2 t + 1 (and + 8)."""
    return TVLayout(Layout(((4, 8, 4), (2, 2, 2)), ((128, 1, 16), (64, 8, 512))), (64, 16))


@lru_cache(maxsize=None)
def wgmma_accumulators(n: int) -> TVLayout:
    """wgmma.m64nNk16's D over a warpgroup (64 x n, m + 64 n): thread (lane % 4, lane // 4, warp)
    holds, per 8 columns j, rows 16 warp + g (and + 8), columns 8 j + 2 t (and + 1): each warp's
    16 rows laid out as mma.sync's C tiles side by side."""
    return TVLayout(Layout(((4, 8, 4), (2, 2, n // 8)), ((128, 1, 16), (64, 8, 512))), (64, n))
