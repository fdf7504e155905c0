"""Copies of a block's tiles from global to shared memory: per-thread addresses and bounds set up once, a guarded cp.async per k-tile."""

from __future__ import annotations

from dialects.tile import (
    SharedTile,
)
from ir.packing import CODE_TILE_ROWS
from lowering.ptx_builder import PtxBuilder


def divmod_by(b: PtxBuilder, x, d: int):
    """(x / d, x % d) for a constant d (shifts when d is a power of two)."""
    if d & (d - 1) == 0:
        return b.shr(x, d.bit_length() - 1), b.and_(x, d - 1)
    return b.div(x, d), b.rem(x, d)


class TileCopy:
    """Copies of one operand's k-tiles from global into its shared tile: copy i of a tile (row
    i / copies_per_row, copy i % copies_per_row of that row) is thread i % threads's, zeros
    outside the matrix; threads past the tile's copies issue none.

    `k_in_rows` says whether K runs along the tile's rows (B stored [K, N], scales) or its columns;
    `k0` of `issue` counts in that axis's units (rows, or elements). With `row_tiles` (C bytes) the
    source is packed codes stored in tiles of 16 rows (ir.packing.code_tiles): byte c of row r
    lies at (r - r % 16) * stride + (c - c % C) * 16 + (r % 16) * C + c % C where N is a multiple of
    16 and rows are whole chunks (else at r * stride + c: rows as they are)."""

    def __init__(self, b: PtxBuilder, tid, tile: SharedTile, threads: int, ptr, row_stride, row0, row_limit,
                 col0, col_limit, k_in_rows: bool, row_tiles: int = 0):
        self.tile, self.k_in_rows, self.row_limit, self.col_limit, self.row_stride = tile, k_in_rows, row_limit, col_limit, row_stride
        per_row = tile.cols // tile.elems
        total = tile.rows * per_row
        self.copy_bytes = tile.elem_bytes * tile.elems
        if row_tiles and (k_in_rows or self.copy_bytes != 16 or row_tiles & (row_tiles - 1)):
            raise ValueError("row tiles are copied 16 bytes at a time along K, in chunks of a power of two bytes")
        self.row_tiles = row_tiles
        # a k-tile of whole chunks moves every row's address by its bytes times the tiles' height
        self.linear = bool(row_tiles) and (tile.cols * tile.elem_bytes) % row_tiles == 0
        self.col_bytes = []  # with row_tiles: each pass's column, in bytes
        if row_tiles:  # tiles of 16 rows where N is a multiple of 16 and rows are whole chunks; else rows as they are
            self.tiled = b.and_pred(b.setp("eq", b.and_(row_limit, CODE_TILE_ROWS - 1), 0),
                                    b.setp("eq", b.and_(b.cvt(row_stride, "u32"), row_tiles - 1), 0))
            self.height = b.selp(CODE_TILE_ROWS, 1, self.tiled)
        self.passes = []  # (tile row, tile col, matrix row, matrix col, global address at k = 0, guard)
        first_col = None
        for i in range(-(-total // threads)):
            idx = tid if i == 0 else b.add(tid, i * threads)
            tile_row, within = divmod_by(b, idx, per_row)
            if first_col is None or threads % per_row:
                first_col = b.mul(within, tile.elems) if tile.elems > 1 else within
            tile_col = first_col  # (every pass copies the same columns when the threads cover whole rows)
            row, col = b.add(row0, tile_row), b.add(col0, tile_col)
            col_bytes = b.mul(col, tile.elem_bytes) if tile.elem_bytes > 1 else col
            if row_tiles:  # the row's tile's first row, and where the row's first byte lies in the tile
                first_row = b.selp(b.and_(row, -CODE_TILE_ROWS & 0xFFFFFFFF), row, self.tiled)
                start = b.add(ptr, b.add(b.mul(b.cvt(first_row, "u64"), row_stride), b.cvt(b.mul(b.sub(row, first_row), row_tiles), "u64")))
                gaddr = b.add(start, b.cvt(self._chunked(b, col_bytes, self.height), "u64")) if self.linear else start
                self.col_bytes.append(col_bytes)
            else:
                gaddr = b.add(ptr, b.add(b.mul(b.cvt(row, "u64"), row_stride), b.cvt(col_bytes, "u64")))
            guard = b.setp("lt", idx, total) if (i + 1) * threads > total else None
            if guard is not None and tile.elems == 1:
                raise ValueError("element-by-element copies need every thread")  # GemmConfig rules this out
            self.passes.append((tile_row, tile_col, row, col, gaddr, guard))
        # the bound that does not move with k
        self.fixed = [b.setp("lt", col, col_limit) if k_in_rows else b.setp("lt", row, row_limit) for _, _, row, col, _, _ in self.passes]

    def _chunked(self, b: PtxBuilder, byte, height):
        """Where byte `byte` of a row lies in its tile, from the row's first byte: chunk by chunk of
        the tile's rows (ir.packing.code_tiles)."""
        log = self.row_tiles.bit_length() - 1
        return b.add(b.mul(b.shr(byte, log), b.shl(height, log)), b.and_(byte, self.row_tiles - 1))

    def issue(self, bb: PtxBuilder, k0, buf, stage) -> None:
        moving = {}  # one bound check per distinct row (or column)
        if self.k_in_rows:
            shift = bb.mul(bb.cvt(k0, "u64"), self.row_stride)
        else:
            k_bytes = bb.mul(k0, self.tile.elem_bytes) if self.tile.elem_bytes > 1 else k0
            within_chunks = self.row_tiles and not self.linear  # k-tiles smaller than a chunk: each row's address computed
            shift = None if within_chunks else bb.cvt(bb.mul(k_bytes, self.height) if self.linear else k_bytes, "u64")
        for i, ((tile_row, tile_col, row, col, gaddr, guard), fixed) in enumerate(zip(self.passes, self.fixed)):
            along = row if self.k_in_rows else col
            if along not in moving:
                moving[along] = bb.setp("lt", bb.add(along, k0), self.row_limit if self.k_in_rows else self.col_limit)
            inside = bb.and_pred(fixed, moving[along])
            if shift is None:
                src = bb.add(gaddr, bb.cvt(self._chunked(bb, bb.add(self.col_bytes[i], k_bytes), self.height), "u64"))
            else:
                src = bb.add(gaddr, shift)
            if self.tile.elems > 1:
                bb.tile_cp_async(buf, stage, tile_row, tile_col, src, bb.selp(self.copy_bytes, 0, inside), self.copy_bytes, pred=guard)
            else:  # rows only 2-byte aligned: a predicated load and a shared store
                value = bb.selp(bb.ld("global", src, "b16", pred=inside), bb.imm(0, "b16"), inside)
                bb.tile_store(buf, stage, tile_row, tile_col, [value])
