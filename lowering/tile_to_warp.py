"""tile-to-warp: each tile.matmul becomes ptx.launch of generated kernels (one per schedule).

The kernel computes C = act(A @ B^T + bias) per lane: ptx ops for arithmetic, cp.async groups,
barriers and mma.sync, and warp ops that address the shared tiles by (stage, row, column);
`smem-swizzle` then picks the tiles' layouts and `warp-to-ptx` turns coordinates into addresses.

A [M, K], B ([N, K], or [K, N] with `b_kn`) and C [M, N] are row-major f16 or bf16;
accumulation is f32 (mma.sync.m16n8k16). One thread block computes a BM x BN tile of C with
warps_m x warps_n warps; K advances in BK steps through a `stages`-deep cp.async pipeline in
shared memory; a [K, N] B is read with ldmatrix.trans. Fragments follow
`ir.layout.MMA_M16N8K16_*`. A low-precision B (`weight`) arrives as lowering.ladder stores it:
its codes, scales and zero terms are copied like any tile and decoded in registers before mma.

Blocks run in bands of `raster` M-tiles (the grid's x sweeps N inside a band), so the B tiles
a band reads stay in L2 while its blocks use them. With `split_k`, grid z splits the k-tiles
and each block writes f32 partial sums to a workspace; a second kernel sums them and applies
the epilogue.

Rows and columns beyond M, N and K are zero-filled on load and masked on store. Global rows
are copied 8, 2 or 1 halves at a time (16-byte cp.async when the row length is a multiple of
8, 4-byte when it is even, single elements when it is odd); A, B and C must be 16-byte aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerType, ModuleOp, Signedness, TensorType, f32
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects.ptx import KernelOp, LaunchOp
from dialects.tile import REDUCE_THREADS, GemmConfig, MatmulOp, SharedTile
from dialects.warp import SmemType
from lowering.ladder import decoder
from lowering.ptx_builder import PtxBuilder


def _divmod(b: PtxBuilder, x, d: int):
    """(x / d, x % d) for a constant d (shifts when d is a power of two)."""
    if d & (d - 1) == 0:
        return b.shr(x, d.bit_length() - 1), b.and_(x, d - 1)
    return b.div(x, d), b.rem(x, d)


class _TileCopy:
    """Copies of one operand's k-tiles from global into its shared tile: copy i of a tile (row
    i / copies_per_row, copy i % copies_per_row of that row) is thread i % threads's, zeros
    outside the matrix; threads past the tile's copies issue none.

    `k_in_rows` says whether K runs along the tile's rows (B stored [K, N], scales) or its columns;
    `k0` of `issue` counts in that axis's units (rows, or elements)."""

    def __init__(self, b: PtxBuilder, tid, tile: SharedTile, threads: int, ptr, row_stride, row0, row_limit,
                 col0, col_limit, k_in_rows: bool):
        self.tile, self.k_in_rows, self.row_limit, self.col_limit, self.row_stride = tile, k_in_rows, row_limit, col_limit, row_stride
        per_row = tile.cols // tile.elems
        total = tile.rows * per_row
        self.copy_bytes = tile.elem_bytes * tile.elems
        self.passes = []  # (tile row, tile col, matrix row, matrix col, global address at k = 0, guard)
        first_col = None
        for i in range(-(-total // threads)):
            idx = tid if i == 0 else b.add(tid, i * threads)
            tile_row, within = _divmod(b, idx, per_row)
            if first_col is None or threads % per_row:
                first_col = b.mul(within, tile.elems) if tile.elems > 1 else within
            tile_col = first_col  # (every pass copies the same columns when the threads cover whole rows)
            row, col = b.add(row0, tile_row), b.add(col0, tile_col)
            col_bytes = b.mul(col, tile.elem_bytes) if tile.elem_bytes > 1 else col
            gaddr = b.add(ptr, b.add(b.mul(b.cvt(row, "u64"), row_stride), b.cvt(col_bytes, "u64")))
            guard = b.setp("lt", idx, total) if (i + 1) * threads > total else None
            if guard is not None and tile.elems == 1:
                raise ValueError("element-by-element copies need every thread")  # GemmConfig rules this out
            self.passes.append((tile_row, tile_col, row, col, gaddr, guard))
        # the bound that does not move with k
        self.fixed = [b.setp("lt", col, col_limit) if k_in_rows else b.setp("lt", row, row_limit) for _, _, row, col, _, _ in self.passes]

    def issue(self, bb: PtxBuilder, k0, buf, stage) -> None:
        moving = {}  # one bound check per distinct row (or column)
        if self.k_in_rows:
            shift = bb.mul(bb.cvt(k0, "u64"), self.row_stride)
        else:
            shift = bb.cvt(bb.mul(k0, self.tile.elem_bytes) if self.tile.elem_bytes > 1 else k0, "u64")
        for (tile_row, tile_col, row, col, gaddr, guard), fixed in zip(self.passes, self.fixed):
            along = row if self.k_in_rows else col
            if along not in moving:
                moving[along] = bb.setp("lt", bb.add(along, k0), self.row_limit if self.k_in_rows else self.col_limit)
            inside = bb.and_pred(fixed, moving[along])
            src = bb.add(gaddr, shift)
            if self.tile.elems > 1:
                bb.tile_cp_async(buf, stage, tile_row, tile_col, src, bb.selp(self.copy_bytes, 0, inside), self.copy_bytes, pred=guard)
            else:  # rows only 2-byte aligned: a predicated load and a shared store
                value = bb.selp(bb.ld("global", src, "b16", pred=inside), bb.imm(0, "b16"), inside)
                bb.tile_store(buf, stage, tile_row, tile_col, value)


def _block_tile(b: PtxBuilder, cfg: GemmConfig):
    """(M-tile, N-tile) of this block: the grid's x runs over N-tiles inside bands of `raster` M-tiles."""
    if cfg.raster == 1:
        return b.sreg("ctaid.y"), b.sreg("ctaid.x")
    tiles_n, tiles_m = b.sreg("nctaid.x"), b.sreg("nctaid.y")
    pid = b.add(b.mul(b.sreg("ctaid.y"), tiles_n), b.sreg("ctaid.x"))
    band = b.mul(tiles_n, cfg.raster)
    first = b.mul(b.div(pid, band), cfg.raster)
    rows = b.min(b.sub(tiles_m, first), cfg.raster)  # the last band may be short
    within = b.rem(pid, band)
    return b.add(first, b.rem(within, rows)), b.div(within, rows)


def _element(dtype: str):
    from xdsl.dialects.builtin import bf16, f16

    return f16 if dtype == "f16" else bf16


E8M0 = IntegerType(8, Signedness.UNSIGNED)  # MX scales in shared memory: their raw codes


def gemm_kernel(cfg: GemmConfig) -> KernelOp:
    """The kernel; parameters `cfg.param_names`; grid `cfg.grid(m, n)`."""
    kernel = KernelOp.get(cfg.name, list(cfg.param_kinds), cfg.threads, cfg.shared_bytes)
    b = PtxBuilder(kernel.body.block)
    p = dict(zip(cfg.param_names, kernel.body.block.args))
    m, n, k = p["m"], p["n"], p["k"]
    wm, wn = cfg.bm // cfg.warps_m, cfg.bn // cfg.warps_n
    mi_count, ni_count = wm // 16, wn // 8

    tid = b.sreg("tid.x")
    lane, warp = b.and_(tid, 31), b.shr(tid, 5)
    warp_m, warp_n = b.shr(warp, (cfg.warps_n).bit_length() - 1), b.and_(warp, cfg.warps_n - 1)
    tile_m, tile_n = _block_tile(b, cfg)
    m0, n0 = b.mul(tile_m, cfg.bm), b.mul(tile_n, cfg.bn)
    zero = b.imm(0)

    # --- this block's k-tiles: all of them, or split z's share (K counted in 16-bit units: 8-bit operands pair up)
    bk, kq = cfg.bk_units, (b.shr(k, 1) if cfg.a8 else k)
    k_tiles = b.shr(b.add(kq, bk - 1), bk.bit_length() - 1)
    if cfg.split_k > 1:
        per_split = b.div(b.add(k_tiles, cfg.split_k - 1), cfg.split_k)
        kt0 = b.mul(b.sreg("ctaid.z"), per_split)
        kt_end = b.min(k_tiles, b.add(kt0, per_split))
        count = b.sub(b.max(kt_end, kt0), kt0)
        k_end = b.min(kq, b.mul(kt_end, bk))  # copies stop at the split's end, zero-filling past it
    else:
        kt0, count, k_end = zero, k_tiles, kq

    # --- shared tiles and the copies that fill them, in cfg.copied_tiles order
    elem = IntegerType(16) if cfg.a8 else _element(cfg.dtype)  # 8-bit operands: raw pairs of bytes
    offset, bufs = 0, []
    for tile in cfg.copied_tiles:
        bufs.append(b.alloc_shared(SmemType.get(cfg.stages, tile.rows, tile.cols, E8M0 if tile.elem_bytes == 1 else elem), offset))
        offset += cfg.stages * tile.bytes
    a_buf, b_buf, *weight_bufs = bufs
    at, bt = cfg.a_tile, cfg.b_tile
    halves = lambda x: b.cvt(b.shl(x, 1), "u64")  # noqa: E731 (bytes of a row of halves)

    copies = [(_TileCopy(b, tid, at, cfg.threads, p["a"], halves(kq), m0, m, zero, k_end, k_in_rows=False), bk)]
    if cfg.weight:  # rows of K * bits / 16 halves of codes in mma order, then scales (and zeros) [K / group, N16]
        per_tile = bt.cols
        codes = _TileCopy(b, tid, bt, cfg.threads, p["b"], halves(b.shr(b.mul(k, cfg.weight_bits), 4)), n0, n, zero,
                          b.shr(b.mul(k_end, cfg.weight_bits), 4), k_in_rows=False)
        copies.append((codes, per_tile))
        st = cfg.scale_tile
        groups = b.shr(k, cfg.group.bit_length() - 1) if cfg.group else b.imm(1)
        n16 = b.and_(b.add(n, 15), ~15 & 0xFFFFFFFF)
        for name in ("scales", "zeros")[: 1 + cfg.zero]:
            rows_copy = _TileCopy(b, tid, st, cfg.threads, p[name], b.cvt(b.mul(n16, st.elem_bytes), "u64"), zero, groups, n0, n,
                                  k_in_rows=True)
            copies.append((rows_copy, None))
    elif cfg.b_kn:
        copies.append((_TileCopy(b, tid, bt, cfg.threads, p["b"], halves(n), zero, k_end, n0, n, k_in_rows=True), bk))
    else:
        copies.append((_TileCopy(b, tid, bt, cfg.threads, p["b"], halves(kq), n0, n, zero, k_end, k_in_rows=False), bk))

    def issue(bb: PtxBuilder, tile, stage):
        """Copy k-tile `tile` into pipeline stage `stage`."""
        for (copy, per_tile), buf in zip(copies, bufs):
            k0 = bb.mul(tile, per_tile) if per_tile else _scale_row(bb, cfg, tile)
            copy.issue(bb, k0, buf, stage)
        bb.commit()

    # --- the (row, col) of the tile each lane gives ldmatrix, per k16 step and fragment
    lane16, lane8, lane_hi = b.and_(lane, 15), b.and_(lane, 7), b.shr(lane, 4)
    lane_mat = b.and_(b.shr(lane, 3), 1)  # which of a pair of 8x8 matrices this lane addresses
    a_ld = [[(b.add(b.mul(warp_m, wm), b.add(lane16, 16 * mi)), b.shl(b.add(lane_hi, 2 * kk), 3))
             for mi in range(mi_count)] for kk in range(bk // 16)]
    if cfg.b_kn:  # B tile is [BK, BN]: rows are k, read transposed
        b_ld = [[(b.add(b.shl(lane_mat, 3), b.add(lane8, 16 * kk)), b.add(b.mul(warp_n, wn), b.add(b.shl(lane_hi, 3), 16 * nj)))
                 for nj in range(ni_count // 2)] for kk in range(bk // 16)]
    else:  # B tile is [BN, BK]: rows are n
        b_ld = [[(b.add(b.mul(warp_n, wn), b.add(b.add(b.shl(lane_hi, 3), lane8), 16 * nj)), b.shl(b.add(lane_mat, 2 * kk), 3))
                 for nj in range(ni_count // 2)] for kk in range(bk // 16)]

    weights = _WeightFragments(b, cfg, lane, warp_n) if cfg.weight else None

    # --- a k-tile is done in units: the k16 steps one weight word covers (one step for an f16 B)
    steps = weights.steps if weights else 1
    units = bk // 16 // steps
    mma_type, mma_shape, acc_type = cfg.mma

    def load_unit(bb: PtxBuilder, stage, u) -> list:
        """Unit u's registers from shared memory: A fragments, then B fragments (or code words and scale pairs)."""
        regs = [r for step in range(steps) for mi in range(mi_count) for r in bb.tile_ldmatrix(a_buf, stage, *a_ld[u * steps + step][mi])]
        if weights:
            return regs + weights.load(bb, b_buf, weight_bufs, stage, u)
        return regs + [r for nj in range(ni_count // 2) for r in bb.tile_ldmatrix(b_buf, stage, *b_ld[u][nj], trans=cfg.b_kn)]

    def compute_unit(bb: PtxBuilder, raw: list, acc: list, u) -> list:
        a_regs, b_raw = raw[:4 * mi_count * steps], raw[4 * mi_count * steps:]
        b_frags = weights.decode(bb, b_raw, u) if weights else [[tuple(b_raw[2 * i:2 * i + 2]) for i in range(ni_count)]]
        acc = list(acc)
        for step in range(steps):
            for mi in range(mi_count):
                a = a_regs[4 * (step * mi_count + mi): 4 * (step * mi_count + mi) + 4]
                for ni in range(ni_count):
                    i = (mi * ni_count + ni) * 4
                    acc[i:i + 4] = bb.mma(a, b_frags[step][ni], acc[i:i + 4], mma_type, mma_shape, acc_type)
        return acc

    def next_stage(bb: PtxBuilder, s):
        nxt = bb.add(s, 1)
        return bb.selp(0, nxt, bb.setp("eq", nxt, cfg.stages))

    # --- prologue: the first stages - 1 tiles in flight
    for s in range(cfg.stages - 1):
        issue(b, b.add(kt0, s), b.imm(s))
    acc_inits = [b.imm(0, "s32") if acc_type == "s32" else b.fimm(0.0)] * (mi_count * ni_count * 4)

    if cfg.prefetch:
        # Registers double-buffered: while unit u computes, unit u + 1 loads; the last unit waits for
        # the next k-tile, passes the tile's one barrier and loads that tile's first unit.
        b.wait(cfg.stages - 2)
        b.barrier()
        first = load_unit(b, b.imm(0), 0)
        loop, body, kt, carried = b.for_(0, count, 1, acc_inits + first + [b.imm(0), b.imm(cfg.stages - 1)])
        acc, raw, read_stage, write_stage = carried[:len(acc_inits)], carried[len(acc_inits):-2], carried[-2], carried[-1]
        following = read_stage
        for u in range(units):
            if u == 0:  # the stage read in the previous k-tile is free (every warp passed its barrier); issuing
                # before the wait below keeps one committed group per k-tile ahead of it, whatever `units` is
                issue(body, body.add(body.add(kt0, kt), cfg.stages - 1), write_stage)
            if u == units - 1:
                body.wait(cfg.stages - 2)
                body.barrier()
                following = next_stage(body, read_stage)
                raw_next = load_unit(body, following, 0)
            else:
                raw_next = load_unit(body, read_stage, u + 1)
            acc = compute_unit(body, raw, acc, u)
            raw = raw_next
        body.yield_([*acc, *raw, following, next_stage(body, write_stage)])
    else:
        loop, body, kt, carried = b.for_(0, count, 1, acc_inits + [b.imm(0), b.imm(cfg.stages - 1)])
        acc, read_stage, write_stage = carried[:-2], carried[-2], carried[-1]
        body.wait(cfg.stages - 2)
        body.barrier()
        issue(body, body.add(body.add(kt0, kt), cfg.stages - 1), write_stage)
        for u in range(units):
            acc = compute_unit(body, load_unit(body, read_stage, u), acc, u)
        body.yield_([*acc, next_stage(body, read_stage), next_stage(body, write_stage)])
    b.wait(0)
    acc = list(loop.results)[:len(acc_inits)]

    # --- epilogue: each lane holds rows group and group + 8, columns 2 tig and 2 tig + 1 of each mma tile
    group, tig = b.shr(lane, 2), b.and_(lane, 3)
    row0 = b.add(b.add(m0, b.mul(warp_m, wm)), group)
    col0 = b.add(b.add(n0, b.mul(warp_n, wn)), b.shl(tig, 1))
    if cfg.a8:  # 8-bit products: acc * a_scale[row] * scale[col], in f32
        acc = _scaled(b, acc, acc_type, p["a_scales"], p["scales"], row0, col0, m, n, mi_count, ni_count)
    if cfg.split_k > 1:  # f32 partial sums into this split's slice of the workspace
        npad = b.add(n, b.and_(n, 1))
        split_row0 = b.add(b.mul(b.sreg("ctaid.z"), m), row0)
        for mi in range(mi_count):
            for half in range(2):
                row = b.add(row0, mi * 16 + half * 8)
                row_in = b.setp("lt", row, m)
                row_addr = b.add(p["c"], b.cvt(b.shl(b.mul(b.add(split_row0, mi * 16 + half * 8), npad), 2), "u64"))
                for ni in range(ni_count):
                    col = b.add(col0, ni * 8)
                    lo, hi = acc[(mi * ni_count + ni) * 4 + 2 * half: (mi * ni_count + ni) * 4 + 2 * half + 2]
                    inside = b.and_pred(row_in, b.setp("lt", col, n))
                    b.st("global", b.add(row_addr, b.cvt(b.shl(col, 2), "u64")), [lo, hi], pred=inside)
        return kernel
    epilogue = _Epilogue(b, cfg, p["c"], n, p.get("bias"), [b.add(col0, ni * 8) for ni in range(ni_count)])
    for mi in range(mi_count):
        for half in range(2):
            row = b.add(row0, mi * 16 + half * 8)
            row_in = b.setp("lt", row, m)
            for ni in range(ni_count):
                lo, hi = acc[(mi * ni_count + ni) * 4 + 2 * half: (mi * ni_count + ni) * 4 + 2 * half + 2]
                epilogue.store(row, row_in, ni, lo, hi)
    return kernel


def _scaled(b: PtxBuilder, acc: list, acc_type: str, a_scales, scales, row0, col0, m, n, mi_count: int, ni_count: int) -> list:
    """Accumulators times their row's and column's f32 scales (0 past M or N), as f32."""
    def scale_at(ptr, index, limit):
        inside = b.setp("lt", index, limit)
        return b.selp(b.ld("global", b.add(ptr, b.cvt(b.shl(index, 2), "u64")), "f32", pred=inside), b.fimm(0.0), inside)

    rows = [scale_at(a_scales, b.add(row0, mi * 16 + half * 8), m) for mi in range(mi_count) for half in range(2)]
    cols = [scale_at(scales, b.add(col0, ni * 8 + j), n) for ni in range(ni_count) for j in range(2)]
    out = []
    for i, v in enumerate(acc):
        mi, ni, slot = i // (4 * ni_count), (i // 4) % ni_count, i % 4  # slot: (row half, column) of the mma tile
        v = b.cvt(v, "f32") if acc_type == "s32" else v
        out.append(b.mul(b.mul(v, rows[2 * mi + slot // 2]), cols[2 * ni + slot % 2]))
    return out


def _scale_row(b: PtxBuilder, cfg: GemmConfig, tile):
    """The first row of scales (group index) k-tile `tile` reads."""
    if not cfg.group:
        return b.imm(0)
    if cfg.group < cfg.bk:
        return b.mul(tile, cfg.bk // cfg.group)
    return b.shr(tile, (cfg.group // cfg.bk).bit_length() - 1)


class _Epilogue:
    """Bias, activation and the rounded store of (row, col), (row, col + 1) pairs of C: bias loaded
    once per column, the pair stored as one 32-bit word when N is even, half by half when odd."""

    def __init__(self, b: PtxBuilder, cfg: GemmConfig, c_ptr, n, bias_ptr, cols):
        self.b, self.cfg, self.c_ptr, self.n, self.cols = b, cfg, c_ptr, n, cols
        self.n_even, self.n_odd = b.setp("eq", b.and_(n, 1), 0), b.setp("ne", b.and_(n, 1), 0)
        self.biases = [_load_bias_pair(b, bias_ptr, col, n, cfg.dtype) for col in cols] if bias_ptr is not None else None
        self.row_bytes = b.cvt(b.shl(n, 1), "u64")
        self._rows = {}

    def store(self, row, row_in, i, lo, hi) -> None:
        b, cfg, col = self.b, self.cfg, self.cols[i]
        if row not in self._rows:
            self._rows[row] = b.add(self.c_ptr, b.mul(b.cvt(row, "u64"), self.row_bytes))
        if self.biases:
            lo, hi = b.add(lo, self.biases[i][0]), b.add(hi, self.biases[i][1])
        lo, hi = _activation(b, lo, cfg.activation), _activation(b, hi, cfg.activation)
        addr = b.add(self._rows[row], b.cvt(b.shl(col, 1), "u64"))
        both = b.and_pred(row_in, b.setp("lt", b.add(col, 1), self.n))
        b.st("global", addr, [b.cvt_pack(hi, lo, cfg.dtype)], pred=b.and_pred(both, self.n_even))
        # odd N: rows are only 2-byte aligned, so store the halves one by one
        first = b.and_pred(b.and_pred(row_in, b.setp("lt", col, self.n)), self.n_odd)
        b.st("global", addr, [b.cvt_half(lo, cfg.dtype)], pred=first)
        b.st("global", addr, [b.cvt_half(hi, cfg.dtype)], offset=2, pred=b.and_pred(both, self.n_odd))


def splitk_reduce_kernel(cfg: GemmConfig) -> KernelOp:
    """Sums the split_k partial results of a workspace [split_k, M, N rounded up to even], then
    applies the epilogue: one (row, column pair) per thread. Parameters (workspace, [bias,] c, m, n)."""
    kernel = KernelOp.get(cfg.name + "_reduce", list(cfg.reduce_param_kinds), REDUCE_THREADS)
    b = PtxBuilder(kernel.body.block)
    ws, *bias, c_ptr, m, n = kernel.body.block.args
    pairs_per_row = b.shr(b.add(n, 1), 1)
    idx = b.add(b.mul(b.sreg("ctaid.x"), REDUCE_THREADS), b.sreg("tid.x"))
    row = b.div(idx, pairs_per_row)
    col = b.shl(b.sub(idx, b.mul(row, pairs_per_row)), 1)
    row_in = b.setp("lt", row, m)
    npad = b.shl(pairs_per_row, 1)
    lo = hi = None
    for z in range(cfg.split_k):
        addr = b.add(ws, b.cvt(b.shl(b.add(b.mul(b.add(b.mul(m, z), row), npad), col), 2), "u64"))
        plo, phi = b.ld("global", addr, "f32", n=2, pred=row_in)
        lo, hi = (plo, phi) if z == 0 else (b.add(lo, plo), b.add(hi, phi))
    _Epilogue(b, cfg, c_ptr, n, bias[0] if bias else None, [col]).store(row, row_in, 0, lo, hi)
    return kernel


class _WeightFragments:
    """B fragments decoded in registers from codes in mma order (lowering.ladder) and scaled per
    group: lane (g, t) reads one 32-bit word per n8 tile and k-block of its row, and the scale
    (and zero term) of that row for each k16 step from the shared scale tile."""

    def __init__(self, b: PtxBuilder, cfg: GemmConfig, lane, warp_n):
        self.cfg, self.dec = cfg, decoder(cfg.weight)
        self.steps = self.dec.per_word // 4  # k16 steps per word
        wn = cfg.bn // cfg.warps_n
        group_id, tig = b.shr(lane, 2), b.and_(lane, 3)
        self.rows = [b.add(b.mul(warp_n, wn), b.add(group_id, 8 * ni)) for ni in range(wn // 8)]  # tile rows
        blocks = cfg.bk // (16 * self.steps)
        self.cols = [b.shl(b.add(tig, 4 * blk), 1) for blk in range(blocks)]  # word t of block blk, in halves
        self.scale_rows = [b.imm(r) for r in range(cfg.scale_rows)]
        self.minus_zero = b.imm(0x80008000, "b32")  # x * s + (-0) is x * s, signed zeros included

    def _pair(self, body: PtxBuilder, buf, stage, srow, row, is_scale: bool):
        """A row's scale (or zero term) as a dtype x2 pair."""
        cfg = self.cfg
        if is_scale and cfg.scale == "e8m0":  # 2^(e - 127)
            e = body.tile_load(buf, stage, srow, row, kind="u32", byte=True)
            if cfg.dtype == "bf16":  # the exponent field itself; code 0 is bf16's subnormal 2^-127 (0x0040)
                return body.max(body.mul(e, 0x00800080), 0x00400040)
            h = body.cvt_half(body.shl(e, 23), "f16")  # through f32, which rounds to f16's range
            return body.pack_halves(h, h)
        h = body.tile_load(buf, stage, srow, row, kind="b16")
        return body.pack_halves(h, h)

    def _srows(self, blk) -> list[int]:
        """The scale rows (groups within the k-tile) the steps of k-block blk use."""
        cfg = self.cfg
        rows = [(16 * (blk * self.steps + step)) // cfg.group if 0 < cfg.group < cfg.bk else 0 for step in range(self.steps)]
        return sorted(set(rows))

    def load(self, body: PtxBuilder, codes, weight_bufs, stage, blk) -> list:
        """k-block blk's registers: a code word per n8 tile, then per scale row its steps use and n8
        tile the scale pair (and zero pair)."""
        regs = [body.tile_load(codes, stage, row, self.cols[blk]) for row in self.rows]
        for srow in self._srows(blk):
            for row in self.rows:
                regs.append(self._pair(body, weight_bufs[0], stage, self.scale_rows[srow], row, True))
                if self.cfg.zero:
                    regs.append(self._pair(body, weight_bufs[1], stage, self.scale_rows[srow], row, False))
        return regs

    def decode(self, body: PtxBuilder, raw: list, blk) -> list[list[tuple]]:
        """[k16 step of the block][n8 tile] -> the two B registers, from `load`'s registers."""
        cfg = self.cfg
        words, pairs = raw[:len(self.rows)], raw[len(self.rows):]
        per = 2 if cfg.zero else 1
        at = {(srow, ni): pairs[per * (i * len(self.rows) + ni): per * (i * len(self.rows) + ni) + per]
              for i, srow in enumerate(self._srows(blk)) for ni in range(len(self.rows))}
        out = [[None] * len(self.rows) for _ in range(self.steps)]
        for ni, word in enumerate(words):
            regs = self.dec.emit(body, word, cfg.dtype)
            for step in range(self.steps):
                srow = (16 * (blk * self.steps + step)) // cfg.group if 0 < cfg.group < cfg.bk else 0
                s2, *z = at[(srow, ni)]
                z2 = z[0] if z else self.minus_zero
                out[step][ni] = (body.fma2(regs[2 * step], s2, z2, cfg.dtype), body.fma2(regs[2 * step + 1], s2, z2, cfg.dtype))
        return out


def _load_bias_pair(b: PtxBuilder, bias_ptr, col, n, dtype: str):
    """bias[col] and bias[col + 1] as f32 (0 past N)."""
    addr = b.add(bias_ptr, b.cvt(b.shl(col, 1), "u64"))
    pair = []
    for i in range(2):
        inside = b.setp("lt", b.add(col, i), n)
        raw = b.ld("global", addr, "b16", offset=2 * i, pred=inside)
        pair.append(b.selp(b.cvt_widen(raw, dtype), b.fimm(0.0), inside))
    return pair


LOG2E = 1.4426950408889634


def _activation(b: PtxBuilder, v, activation: str):
    if activation == "relu":
        return b.max(v, b.fimm(0.0))
    if activation == "silu":  # v * sigmoid(v) = v / (1 + 2^(-v log2 e))
        return b.mul(v, b.rcp(b.add(b.ex2(b.mul(v, b.fimm(-LOG2E))), b.fimm(1.0))))
    return v


@dataclass(frozen=True)
class TileToWarp(ModulePass):
    """Generate the warp-level kernels of each tile.matmul schedule and launch them in place of the op."""

    name = "tile-to-warp"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        kernels = {k.sym_name.data for k in op.ops if isinstance(k, KernelOp)}

        def define(kernel_of, name):
            if name not in kernels:
                op.body.block.add_op(kernel_of())
                kernels.add(name)

        for mm in [o for o in op.walk() if isinstance(o, MatmulOp)]:
            cfg = mm.config
            define(lambda: gemm_kernel(cfg), cfg.name)
            (m, k), n = mm.x.type.get_shape(), mm.result.type.get_shape()[1]
            inputs = [v for name, v in zip(mm.operand_names, mm.operands) if name != "bias"]  # the kernel's order (param_names)
            if cfg.split_k == 1:
                launches = [LaunchOp.get(cfg.name, inputs + ([mm.bias] if mm.bias else []), mm.result.type, cfg.grid(m, n), [m, n, k])]
            else:
                define(lambda: splitk_reduce_kernel(cfg), cfg.name + "_reduce")
                partial = LaunchOp.get(cfg.name, inputs, TensorType(f32, cfg.workspace_shape(m, n)), cfg.grid(m, n), [m, n, k])
                launches = [partial, LaunchOp.get(cfg.name + "_reduce", [partial.result] + ([mm.bias] if mm.bias else []),
                                                  mm.result.type, cfg.reduce_grid(m, n), [m, n])]
            Rewriter.replace_op(mm, launches)
