"""Unstructured sparsity: magnitude pruning, and Tiled-CSL, the sparse weight format of Flash-LLM.

A weight [N, K] is cut into tiles of tile_n x tile_k (those on the right and bottom edges may be
smaller); tiles are numbered row-major. A tile's nonzeros are stored one after another, each as
its value and its position inside the tile (row * tile_k + column, row-major), in position order;
`offsets[t]` is where tile t's nonzeros start and `offsets[-1]` their total. Values are f16/bf16
numbers, or the element values of a quantization format with scales over the dense shape
(ir.numerics.QuantFormat: pruned zeros stay exact zeros, and only the kept values are stored).
The order a kernel scatters them in (free of shared-memory bank conflicts) is its own packing,
made from this canonical form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ir.numerics import FormatError

MAX_TILE_ELEMS = 1 << 16  # positions are 16-bit
PRUNE_MODES = ("row", "tensor")


@dataclass(frozen=True)
class SparseFormat:
    """Tiled-CSL's tile: tile_n rows (output channels) by tile_k columns (along the reduction)."""

    tile_n: int = 128
    tile_k: int = 64

    def __post_init__(self):
        for name in ("tile_n", "tile_k"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise FormatError(f"{name} must be a positive integer, got {value!r}")
        if self.tile_n * self.tile_k > MAX_TILE_ELEMS:
            raise FormatError(f"a tile of {self.tile_n}x{self.tile_k} holds more positions than 16 bits number ({MAX_TILE_ELEMS})")

    def tiles(self, shape) -> tuple[int, int]:
        """Tiles along N and along K of a weight of `shape` [N, K]."""
        n, k = shape
        return -(-n // self.tile_n), -(-k // self.tile_k)


@dataclass
class TiledCSL:
    """A weight's nonzeros in Tiled-CSL: `values` [nnz] (float64: f16/bf16 numbers or a format's element values),
    `positions` [nnz] uint16 inside their tiles, `offsets` [tiles + 1] int32, of a [N, K] weight `shape`."""

    values: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    shape: tuple[int, int]
    format: SparseFormat

    @property
    def density(self) -> float:
        return len(self.values) / max(1, math.prod(self.shape))


def prune(weight, sparsity: float, per: str = "row") -> np.ndarray:
    """`weight` [N, K] with its smallest-magnitude values set to zero: round(sparsity * K) of each row (`per` row), or
    round(sparsity * N * K) of the whole tensor (`per` tensor); ties go to the earlier position."""
    w = np.array(weight, dtype=np.float64)
    if w.ndim != 2:
        raise FormatError(f"a weight to prune is [N, K], got shape {list(w.shape)}")
    if not (isinstance(sparsity, (int, float, np.floating)) and 0 <= sparsity < 1):
        raise FormatError(f"sparsity is a fraction in [0, 1), got {sparsity!r}")
    if per not in PRUNE_MODES:
        raise FormatError(f"pruning is per {' or per '.join(PRUNE_MODES)}, not {per!r}")
    if not np.isfinite(w).all():
        raise FormatError("cannot prune a weight holding inf or NaN")
    flat = w.reshape(1, -1) if per == "tensor" else w
    drop = int(round(sparsity * flat.shape[1]))
    order = np.argsort(np.abs(flat), axis=1, kind="stable")[:, :drop]
    np.put_along_axis(flat, order, 0.0, axis=1)
    return flat.reshape(w.shape)


def encode(weight, fmt: SparseFormat = SparseFormat()) -> TiledCSL:
    """The nonzeros of `weight` [N, K] in Tiled-CSL (a tile's in position order)."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 2:
        raise FormatError(f"a sparse weight is [N, K], got shape {list(w.shape)}")
    if not np.isfinite(w).all():
        raise FormatError("cannot encode a weight holding inf or NaN")
    (n, k), (tn, tk) = w.shape, (fmt.tile_n, fmt.tile_k)
    rows, cols = np.nonzero(w)
    tile = (rows // tn) * fmt.tiles(w.shape)[1] + cols // tk
    position = (rows % tn) * tk + cols % tk
    order = np.lexsort((position, tile))
    counts = np.bincount(tile, minlength=math.prod(fmt.tiles(w.shape)))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return TiledCSL(w[rows, cols][order], position[order].astype(np.uint16), offsets, (n, k), fmt)


def decode(values, positions, offsets, shape, fmt: SparseFormat = SparseFormat()) -> np.ndarray:
    """The dense [N, K] weight (float64) that Tiled-CSL arrays stand for; arrays that do not describe one are a
    FormatError saying what is wrong."""
    values, positions, offsets = np.asarray(values, np.float64), np.asarray(positions), np.asarray(offsets)
    n, k = shape
    tiles_n, tiles_k = fmt.tiles(shape)
    if offsets.shape != (tiles_n * tiles_k + 1,):
        raise FormatError(f"a {n}x{k} weight in {fmt.tile_n}x{fmt.tile_k} tiles has {tiles_n * tiles_k} tiles: offsets must "
                          f"have {tiles_n * tiles_k + 1} entries, got {list(offsets.shape)}")
    if values.shape != positions.shape or values.ndim != 1 or offsets[0] != 0 or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0):
        raise FormatError(f"offsets must rise from 0 to the {len(values)} nonzeros, and values and positions hold one each "
                          f"(got {list(values.shape)} values, {list(positions.shape)} positions)")
    tile = np.repeat(np.arange(tiles_n * tiles_k), np.diff(offsets))
    rows = (tile // tiles_k) * fmt.tile_n + positions.astype(np.int64) // fmt.tile_k
    cols = (tile % tiles_k) * fmt.tile_k + positions.astype(np.int64) % fmt.tile_k
    if np.any(positions.astype(np.int64) >= fmt.tile_n * fmt.tile_k) or np.any(rows >= n) or np.any(cols >= k):
        raise FormatError(f"a position lies outside its tile or the {n}x{k} weight")
    dense = np.zeros((n, k))
    dense[rows, cols] = values
    return dense


def sparsify(weight, sparsity: float, per: str = "row", fmt: SparseFormat = SparseFormat()) -> TiledCSL:
    """`rung.sparsify`: a weight [N, K] (numpy, or a torch tensor on any device) pruned by magnitude to `sparsity`
    (per row or per tensor) and stored in Tiled-CSL; bad input is a RungError saying what is wrong."""
    from ir.errors import RungError

    if hasattr(weight, "detach"):  # a torch tensor
        weight = weight.detach().double().cpu().numpy()
    try:
        return encode(prune(weight, sparsity, per), fmt)
    except FormatError as e:
        raise RungError(f"sparsify: {e}") from None


def kernel_slots(fullest: int, tile_n: int, threads: int) -> int:
    """The slots every tile of a sparse kernel gets (GemmConfig.sparse): the fullest tile's nonzeros (at least one)
    rounded up to a multiple of the tile's rows and of the block's threads."""
    multiple = math.lcm(tile_n, threads)
    return -(-max(fullest, 1) // multiple) * multiple


def kernel_tiles(weight, tile_n: int, tile_k: int, dtype: str = "f16", threads: int = 128, slots: int = 0,
                 banks: np.ndarray | None = None) -> np.ndarray:
    """A pruned weight [N, K] as a sparse GEMM kernel reads it (GemmConfig.sparse): per tile_n x tile_k tile the same
    number of 32-bit slots, each a nonzero's value (`dtype` bits, low half) and its position in the tile
    (row * tile_k + column, high half), padded to kernel_slots (the fullest tile's count rounded up to a multiple of
    tile_n and of the block's `threads`: each takes as many). A padding slot writes zero where the tile holds zero, at a position of
    its own, so the scatter into a zeroed tile neither races nor changes it. A tile's slots lie over its tile_n rows,
    slots / tile_n a row, so the weight keeps a dense one's shape of rows: uint32 [N rounded up to tile_n,
    k-tiles * slots / tile_n], copied k-tile by k-tile as a dense weight is. `slots` (a multiple of that): pad to that
    many (a kernel made for them); a tile holding more is a FormatError. `banks` (the shared-memory bank each position
    of the kernel's dense tile lies in): the slots ordered so that each 32 of them (a warp's stores) fall in distinct
    banks where the tile's nonzeros allow (round robin over the banks, padding placed in the banks with fewest
    nonzeros); without it, in position order."""
    from ir.packing import half_bits

    w = np.asarray(weight, dtype=np.float64)
    fmt = SparseFormat(tile_n, tile_k)
    tiles_n, tiles_k = fmt.tiles(w.shape)
    padded = np.zeros((tiles_n * tile_n, tiles_k * tile_k))
    padded[:w.shape[0], :w.shape[1]] = w
    tiles = padded.reshape(tiles_n, tile_n, tiles_k, tile_k).transpose(0, 2, 1, 3).reshape(tiles_n * tiles_k, tile_n * tile_k)
    nonzero = tiles != 0
    fullest, multiple = int(nonzero.sum(axis=1).max(initial=0)), math.lcm(tile_n, threads)
    if slots and (slots % multiple or fullest > slots):
        raise FormatError(f"a kernel's {slots} slots a tile (a multiple of {multiple}) cannot hold a tile of {fullest} nonzeros")
    slots = slots or kernel_slots(fullest, tile_n, threads)
    if slots > tile_n * tile_k:
        raise FormatError(f"{slots} slots do not fit a tile of {tile_n * tile_k} positions")
    order = _slot_order(nonzero, slots, banks)
    bits = half_bits(np.take_along_axis(tiles, order, axis=1), dtype)
    words = (bits.astype(np.uint32) | (order.astype(np.uint32) << 16)).reshape(tiles_n, tiles_k, tile_n, slots // tile_n)
    return words.transpose(0, 2, 1, 3).reshape(tiles_n * tile_n, tiles_k * slots // tile_n)


def _slot_order(nonzero: np.ndarray, slots: int, banks: np.ndarray | None) -> np.ndarray:
    """Per tile (a row of `nonzero`), the positions its slots write: every nonzero one and zero ones for padding."""
    if banks is None:  # nonzeros first, in position order: a stable sort on "is zero"
        return np.argsort(~nonzero, axis=1, kind="stable")[:, :slots]
    tiles, size = nonzero.shape
    count = len(np.unique(banks))
    by_bank = np.argsort(banks, kind="stable")  # positions grouped by bank (as many in each)
    grouped = nonzero[:, by_bank].reshape(tiles, count, size // count)
    # a position's round: its rank among its bank's nonzeros, or, a zero one, the bank's nonzeros plus its rank among the
    # zeros (padding goes to the emptiest banks first). (round, bank) numbers each tile's positions 0 .. size - 1
    small = np.int32  # (positions and ranks of a tile fit: narrow temporaries keep a large weight's packing fast)
    upto = np.cumsum(grouped, axis=2, dtype=small)  # nonzeros up to each position of its bank (zeros up to it: index + 1 - that)
    index = np.arange(size // count, dtype=small)
    rounds = np.where(grouped, upto - 1, upto[:, :, -1:] + index - upto)
    key = (rounds * count + banks[by_bank].reshape(count, -1).astype(small)).reshape(tiles, size)
    order = np.empty_like(key)
    np.put_along_axis(order, key, np.broadcast_to(np.arange(size, dtype=small), key.shape), axis=1)  # (round, bank) order: no sort
    kept = np.take_along_axis(grouped.reshape(tiles, size), order, axis=1)
    kept |= np.cumsum(~kept, axis=1, dtype=small) <= (slots - nonzero.sum(axis=1))[:, None]  # and the first zeros, for padding
    return by_bank[order[kept].reshape(tiles, slots)]


def kernel_dense(packed, n: int, k: int, tile_n: int, tile_k: int, dtype: str = "f16") -> np.ndarray:
    """The dense weight [N, K] (float64) that kernel_tiles' words stand for."""
    from ir.packing import half_values

    words = np.asarray(packed).view(np.uint32)
    tiles_n, tiles_k = SparseFormat(tile_n, tile_k).tiles((n, k))
    per_row = words.shape[1] // tiles_k
    tiles = words.reshape(tiles_n, tile_n, tiles_k, per_row).transpose(0, 2, 1, 3).reshape(tiles_n * tiles_k, tile_n * per_row)
    values = half_values((tiles & 0xFFFF).astype(np.uint16), dtype)
    dense = np.zeros((tiles_n * tiles_k, tile_n * tile_k))
    np.put_along_axis(dense, (tiles >> 16).astype(np.int64), values, axis=1)
    return dense.reshape(tiles_n, tiles_k, tile_n, tile_k).transpose(0, 2, 1, 3).reshape(tiles_n * tile_n, tiles_k * tile_k)[:n, :k]
