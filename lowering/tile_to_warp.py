"""tile-to-warp: each tile.kernel (a block program, lowering.tile_expand) becomes a ptx.kernel,
lowered op by op; tile.launch and tile.sum_splits become ptx.launch.

Per lane: ptx ops for arithmetic, cp.async groups, barriers and mma.sync, and warp ops that
address the shared tiles by (stage, row, column); `smem-swizzle` then picks the tiles' layouts
and `warp-to-ptx` turns coordinates into addresses. What each tile op becomes:
- tile.block_origin, tile.k_range: the block's tile from ctaid (banded by `raster`), its k-tiles;
- tile.shared_buffer: a warp.alloc_shared tile; tile.copy: per-thread addresses and bounds set up
  once, a guarded cp.async per k-tile (a load and a shared store when rows are 2-byte aligned);
- tile.pipeline: `stages - 1` k-tiles issued ahead, then a loop that waits, passes one barrier,
  issues the next k-tile and computes this one in units of k16 steps (with `prefetch`, the next
  unit's fragments load while this one computes);
- tile.fragment: ldmatrix (x4, .trans for bt) or shared loads of code words and scale pairs;
  tile.decode: lowering.ladder's register decoder (or, `shared_table`, lookups in a table of
  pairs the block fills first), then q * s + z by fma; tile.mma: mma.sync;
- tile.epilogue with tile.store: scales, bias and activation applied to each pair of
  accumulators as it is stored (f32 pairs into a split's workspace slice).

A [M, K], B ([N, K], or [K, N] with `b_kn`) and C [M, N] are row-major f16 or bf16;
accumulation is f32 (mma.sync.m16n8k16). One thread block computes a BM x BN tile of C with
warps_m x warps_n warps; K advances in BK steps through a `stages`-deep cp.async pipeline in
shared memory; a [K, N] B is read with ldmatrix.trans. Fragments follow
`ir.layout.MMA_M16N8K16_*`. A low-precision B (`weight`) arrives as ir.packing stores it:
its codes, scales and zero terms are copied like any tile and decoded in registers before mma.
With 8-row tiles (GemmConfig.weight_is_a) the decoded weight is the mma's A operand and A's
rows its B operand: the accumulators hold C transposed and are stored element by element.
With wgmma tiles (GemmConfig.wgmma, sm_90a) the fragments are shared-memory descriptors
(`warp.smem_desc`) and each warpgroup's wgmmas run asynchronously, one k-tile in flight; a
packed weight is decoded into wgmma's A registers instead, A's rows its B in shared memory, and
the accumulators hold C transposed, as with 8-row tiles.

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
from xdsl.dialects.builtin import IntegerType, ModuleOp, Signedness
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects import tile
from dialects.ptx import KernelOp, LaunchOp
from dialects.tile import REDUCE_THREADS, TABLE_BYTES, TABLE_ROWS, GemmConfig, SharedTile, reduce_grid, reduce_param_kinds
from ir.errors import RungError
from ir.layout import Swizzle
from dialects.warp import WGMMA_SWIZZLE, SmemType
from ir.packing import CODE_TILE_ROWS, decoder
from lowering.ladder import emit_decode, looked_up
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
            tile_row, within = _divmod(b, idx, per_row)
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


def gemm_kernel(cfg: GemmConfig, programmatic: bool = False) -> KernelOp:
    """The kernel of schedule `cfg`: its block program (lowering.tile_expand) lowered; parameters
    `cfg.param_names`, grid `cfg.grid(m, n)`. `programmatic` (sm_90): with a split K, the kernel
    lets the reduction launched after it programmatically start as it starts."""
    from lowering.tile_expand import block_program

    return lower_kernel(block_program(cfg), programmatic)


def lower_kernel(program: tile.KernelOp, programmatic: bool = False) -> KernelOp:
    """The ptx.kernel of a block program, its ops lowered in order (`programmatic`: gemm_kernel)."""
    return _BlockLowering(program, programmatic).kernel


class _BlockLowering:
    """Lowers a tile.kernel op by op. `values` maps each tile value to what stands for it in the
    kernel: registers, a shared tile, or (inside the pipeline) a copy or fragment load set up
    once and issued per k-tile."""

    def __init__(self, program: tile.KernelOp, programmatic: bool = False):
        cfg = self.cfg = program.config
        self.kernel = KernelOp.get(program.sym_name.data, list(cfg.param_kinds), cfg.threads, cfg.shared_bytes)
        b = self.b = PtxBuilder(self.kernel.body.block)
        if programmatic and cfg.split_k > 1:  # the reduction's blocks get ready while these run; they wait for all of them
            b.griddep_launch()
        params = self.kernel.body.block.args
        self.p = dict(zip(cfg.param_names, params))
        self.values = dict(zip(program.body.block.args, params))
        self.param_of = dict(zip(program.body.block.args, cfg.param_names))
        self.shared: dict = {}  # buffer value -> its SharedTile
        self.source: dict = {}  # buffer value -> the kernel argument copied into it
        self.m, self.n, self.k = self.p["m"], self.p["n"], self.p["k"]
        self.wm, self.wn = cfg.bm // cfg.warps_m, cfg.bn // cfg.warps_n
        self.mi_count, self.ni_count = max(1, self.wm // 16), self.wn // 8
        # accumulators per lane: 4 per m16n8 tile, or (weight_is_a) 4 per 16 columns of C transposed
        self.acc_count = 2 * self.ni_count if cfg.weight_is_a else 4 * self.mi_count * self.ni_count
        tid = self.tid = b.sreg("tid.x")
        self.lane, warp = b.and_(tid, 31), b.shr(tid, 5)
        self.warp_m, self.warp_n = b.shr(warp, (cfg.warps_n).bit_length() - 1), b.and_(warp, cfg.warps_n - 1)
        self.shared_offset = 0
        for op in program.body.block.ops:
            getattr(self, "_" + op.name.split(".")[1])(op)

    def _yield(self, op) -> None:
        pass

    def _block_origin(self, op: tile.BlockOriginOp) -> None:
        b, cfg = self.b, self.cfg
        tile_m, tile_n = _block_tile(b, cfg)
        self.values[op.row], self.values[op.col] = b.mul(tile_m, cfg.bm), b.mul(tile_n, cfg.bn)
        self.zero = b.imm(0)

    def _k_range(self, op: tile.KRangeOp) -> None:
        """This block's k-tiles, K counted in 16-bit units (8-bit operands pair up); copies stop at
        the split's end (`k_end`), zero-filling past it."""
        b, cfg, k = self.b, self.cfg, self.k
        bk = cfg.bk_units
        self.kq = b.shr(k, 1) if cfg.a8 else k
        k_tiles = b.shr(b.add(self.kq, bk - 1), bk.bit_length() - 1)
        if cfg.split_k > 1:
            per_split = b.div(b.add(k_tiles, cfg.split_k - 1), cfg.split_k)
            kt0 = b.mul(b.sreg("ctaid.z"), per_split)
            kt_end = b.min(k_tiles, b.add(kt0, per_split))
            count = b.sub(b.max(kt_end, kt0), kt0)
            self.k_end = b.min(self.kq, b.mul(kt_end, bk))
        else:
            kt0, count, self.k_end = self.zero, k_tiles, self.kq
        self.values[op.first], self.values[op.count] = kt0, count

    def _shared_buffer(self, op: tile.SharedBufferOp) -> None:
        """The schedule's next shared tile (in cfg.copied_tiles order, as tile.kernel verifies)."""
        cfg = self.cfg
        shared = cfg.copied_tiles[len(self.shared)]
        elem = E8M0 if shared.elem_bytes == 1 else IntegerType(16) if cfg.a8 else _element(cfg.dtype)  # 8-bit operands: pairs of bytes
        # wgmma reads its shared operands (A's rows, and B's unless B is a packed weight) in this layout: no choice left
        by_descriptor = cfg.wgmma and len(self.shared) < (1 if cfg.weight else 2)
        swizzle = WGMMA_SWIZZLE if by_descriptor else None
        self.values[op.result] = self.b.alloc_shared(SmemType.get(cfg.stages, shared.rows, shared.cols, elem, swizzle), self.shared_offset)
        self.shared[op.result] = shared
        self.shared_offset += cfg.stages * shared.bytes

    def _zeros(self, op: tile.ZerosOp) -> None:
        self.values[op.result] = None  # the pipeline sets the accumulator's registers to zero where its loop starts

    def _copy(self, op: tile.CopyOp) -> tuple[_TileCopy, int | None]:
        """The copy's per-thread addresses and bounds, set up once, by what it copies; and its
        k-tile step in 16-bit units (None: the scale row of the k-tile's group)."""
        b, cfg, p = self.b, self.cfg, self.p
        name, fixed, shared = self.param_of[op.src], self.values[op.fixed], self.shared[op.buffer]
        self.source[op.buffer] = name
        halves = lambda x: b.cvt(b.shl(x, 1), "u64")  # noqa: E731 (bytes of a row of halves)

        def copy(ptr, row_stride, row0, row_limit, col0, col_limit, k_in_rows):
            return _TileCopy(b, self.tid, shared, cfg.threads, ptr, row_stride, row0, row_limit, col0, col_limit, k_in_rows,
                             op.row_tiles.value.data if op.row_tiles is not None else 0)

        if name == "a":
            return copy(p["a"], halves(self.kq), fixed, self.m, self.zero, self.k_end, False), cfg.bk_units
        if name == "b" and cfg.weight:  # rows of K * bits / 16 halves of codes in mma order (in 16-row tiles: op.row_tiles)
            bits = cfg.weight_bits
            return copy(p["b"], halves(b.shr(b.mul(self.k, bits), 4)), fixed, self.n, self.zero, b.shr(b.mul(self.k_end, bits), 4), False), shared.cols
        if name == "b" and cfg.b_kn:
            return copy(p["b"], halves(self.n), self.zero, self.k_end, fixed, self.n, True), cfg.bk_units
        if name == "b":
            return copy(p["b"], halves(self.kq), fixed, self.n, self.zero, self.k_end, False), cfg.bk_units
        if not hasattr(self, "groups"):  # scales and zero terms [K / group, N16]
            self.groups = b.shr(self.k, cfg.group.bit_length() - 1) if cfg.group else b.imm(1)
            self.n16 = b.and_(b.add(self.n, 15), ~15 & 0xFFFFFFFF)
        return copy(p[name], b.cvt(b.mul(self.n16, shared.elem_bytes), "u64"), self.zero, self.groups, fixed, self.n, True), None

    def _fragment_loader(self, op: tile.FragmentOp, lane_coords):
        """A function (builder, stage, unit) -> the registers this lane loads of the fragment's
        part for that unit (a unit: the k16 steps one weight word covers; one step otherwise)."""
        b, cfg, layout = self.b, self.cfg, op.result.type.layout.data
        buf = self.values[op.buffer]
        lane16, lane8, lane_hi, lane_mat = lane_coords
        steps, bk = self.steps, cfg.bk_units
        if layout == "a" and cfg.weight_is_a:  # the mma's B operand: k16 steps of rows m = lane % 8 (ldmatrix.x2)
            at = [(lane8, b.shl(b.add(lane_mat, 2 * kk), 3)) for kk in range(bk // 16)]
            return lambda bb, stage, u: [r for step in range(steps) for r in bb.tile_ldmatrix(buf, stage, *at[u * steps + step], n=2)]
        if layout == "a":
            at = [[(b.add(b.mul(self.warp_m, self.wm), b.add(lane16, 16 * mi)), b.shl(b.add(lane_hi, 2 * kk), 3))
                   for mi in range(self.mi_count)] for kk in range(bk // 16)]
            return lambda bb, stage, u: [r for step in range(steps) for mi in range(self.mi_count)
                                         for r in bb.tile_ldmatrix(buf, stage, *at[u * steps + step][mi])]
        if layout == "bt":  # B tile is [BK, BN]: rows are k, read transposed
            at = [[(b.add(b.shl(lane_mat, 3), b.add(lane8, 16 * kk)), b.add(b.mul(self.warp_n, self.wn), b.add(b.shl(lane_hi, 3), 16 * nj)))
                   for nj in range(self.ni_count // 2)] for kk in range(bk // 16)]
        elif layout == "b":  # B tile is [BN, BK]: rows are n
            at = [[(b.add(b.mul(self.warp_n, self.wn), b.add(b.add(b.shl(lane_hi, 3), lane8), 16 * nj)), b.shl(b.add(lane_mat, 2 * kk), 3))
                   for nj in range(self.ni_count // 2)] for kk in range(bk // 16)]
        elif layout == "packed":
            self.weights = _WeightFragments(b, cfg, self.tid, self.lane, self.warp_n)
            return lambda bb, stage, u: self.weights.load_codes(bb, buf, stage, u)
        elif layout == "group_acc":
            return lambda bb, stage, u: self.weights.load_acc_scales(bb, buf, stage, u)
        else:  # group rows: scales, then zero terms
            is_scale = self.source[op.buffer] == "scales"
            return lambda bb, stage, u: self.weights.load_group(bb, buf, stage, u, is_scale)
        return lambda bb, stage, u: [r for nj in range(self.ni_count // 2) for r in bb.tile_ldmatrix(buf, stage, *at[u][nj], trans=layout == "bt")]

    def _pipeline(self, op: tile.PipelineOp) -> None:
        b, cfg = self.b, self.cfg
        if not isinstance(op.init.owner, tile.ZerosOp):  # the loop below starts its accumulators at zero
            raise RungError("tile-to-warp: a tile.pipeline's accumulator must start from tile.zeros")
        copy_ops = [o for o in op.copy.block.ops if isinstance(o, tile.CopyOp)]
        copies = [(self._copy(c), self.values[c.buffer]) for c in copy_ops]

        def issue(bb: PtxBuilder, k_tile, stage):
            """Copy k-tile `k_tile` into pipeline stage `stage`."""
            for ((copy, per_tile), buf) in copies:
                k0 = bb.mul(k_tile, per_tile) if per_tile else _scale_row(bb, cfg, k_tile)
                copy.issue(bb, k0, buf, stage)
            bb.commit()

        if cfg.wgmma:
            return self._wgmma_pipeline(op, issue)
        # fragment loads: each lane's ldmatrix rows and columns (or words and scale pairs) are set up once
        lane = self.lane
        lane_coords = (b.and_(lane, 15), b.and_(lane, 7), b.shr(lane, 4), b.and_(b.shr(lane, 3), 1))  # lane_mat: which of a pair of 8x8 matrices
        compute_ops = [o for o in op.compute.block.ops if not isinstance(o, tile.YieldOp)]
        decodes = [o for o in compute_ops if isinstance(o, tile.DecodeOp)]
        self.weights = None  # set up by the packed fragment's loader (after A's address setup)
        self.steps = decoder(cfg.weight).per_word // 4 if decodes else 1
        fragments = [o for o in compute_ops if isinstance(o, tile.FragmentOp)]
        loaders = [self._fragment_loader(f, lane_coords) for f in fragments]
        units = cfg.bk_units // 16 // self.steps
        acc_arg = op.compute.block.args[1]

        unit_sizes = {}  # unit -> registers each fragment loads for it (a unit's scale rows may differ)

        def load_unit(bb: PtxBuilder, stage, u) -> list:
            """Unit u's fragment registers from shared memory, fragment after fragment."""
            parts = [load(bb, stage, u) for load in loaders]
            unit_sizes[u] = [len(part) for part in parts]
            return [r for part in parts for r in part]

        partial = []  # scale_partials: the f32 partial sums of the group being accumulated (within one k-tile)

        def compute_unit(bb: PtxBuilder, raw: list, acc: list, u) -> list:
            regs, at = {}, 0
            for f, load_count in zip(fragments, unit_sizes[u]):
                regs[f.result], at = raw[at:at + load_count], at + load_count
            regs[acc_arg] = list(acc)
            for o in compute_ops:
                if isinstance(o, tile.DecodeOp):
                    scales, zeros = (regs[v] if v is not None else None for v in (o.scales, o.zeros))
                    regs[o.result] = self.weights.decode(bb, regs[o.codes], scales, zeros, u)
                elif isinstance(o, tile.MmaOp) and o.scales is not None:
                    regs[o.result] = self._scaled_mma(bb, regs[o.a], regs[o.b], regs[o.acc], regs[o.scales], u, partial)
                elif isinstance(o, tile.MmaOp):
                    b_regs = regs[o.b]
                    if isinstance(o.b.owner, tile.FragmentOp):  # ldmatrix'ed: a register pair per n8 tile
                        b_regs = [[tuple(b_regs[2 * i:2 * i + 2]) for i in range(self.ni_count)]]
                    regs[o.result] = self._mma(bb, regs[o.a], b_regs, regs[o.acc])
            return regs[op.compute.block.last_op.values[0]]

        kt0, count, acc_inits = self._prologue(op, issue, cfg.stages - 1)

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
                    following = _next_stage(body, read_stage, cfg.stages)
                    raw_next = load_unit(body, following, 0)
                else:
                    raw_next = load_unit(body, read_stage, u + 1)
                acc = compute_unit(body, raw, acc, u)
                raw = raw_next
            body.yield_([*acc, *raw, following, _next_stage(body, write_stage, cfg.stages)])
        else:
            loop, body, kt, carried = b.for_(0, count, 1, acc_inits + [b.imm(0), b.imm(cfg.stages - 1)])
            acc, read_stage, write_stage = carried[:-2], carried[-2], carried[-1]
            body.wait(cfg.stages - 2)
            body.barrier()
            issue(body, body.add(body.add(kt0, kt), cfg.stages - 1), write_stage)
            for u in range(units):
                raw = load_unit(body, read_stage, u)
                acc = compute_unit(body, raw, acc, u)
            body.yield_([*acc, _next_stage(body, read_stage, cfg.stages), _next_stage(body, write_stage, cfg.stages)])
        b.wait(0)
        acc = list(loop.results)[:len(acc_inits)]
        if self.weights and self.weights.acc_rescale != 1:  # exact: a power of two
            acc = [b.mul(a, b.fimm(self.weights.acc_rescale)) for a in acc]
        self.values[op.result] = acc

    def _prologue(self, op: tile.PipelineOp, issue, ahead: int) -> tuple:
        """(first k-tile, k-tile count, zeroed accumulators), the first `ahead` k-tiles issued."""
        b = self.b
        kt0, count = self.values[op.first], self.values[op.count]
        for s in range(ahead):
            issue(b, b.add(kt0, s), b.imm(s))
        zero = b.imm(0, "s32") if self.cfg.mma[2] == "s32" else b.fimm(0.0)
        return kt0, count, [zero] * self.acc_count

    def _wgmma_pipeline(self, op: tile.PipelineOp, issue) -> None:
        """Each warpgroup's 64 rows of the block tile by wgmma, its B operand in shared memory. A
        k-tile's wgmmas stay in flight while the loop goes on to the next (wgmma.wait_group 1), so
        the stage they read is refilled two k-tiles later, past the barrier every warpgroup reaches
        after retiring them; copies run stages - 2 k-tiles ahead. cp.async writes through the
        generic proxy: each thread fences its landed copies for the async proxy before the barrier.

        A packed weight is decoded into wgmma's A registers (_decoded_k_tile), which stay read while
        the k-tile's group is in flight: the loop body runs DECODED_UNROLL k-tiles, each decoding
        into registers of its own, so none writes registers the one before it still reads, and its
        last retires every group. (With a group still in flight at the loop's exit, ptxas 13.0
        moved the epilogue's reads of the accumulators above the final wait_group of such kernels:
        wrong results on the GPU; tests/lowering/test_tile_to_warp.py checks the SASS for it.)"""
        b, cfg = self.b, self.cfg
        accumulate = b.setp("eq", self.zero, self.zero)  # scale-d: the accumulators start at zero
        k_tile = (self._decoded_k_tile if cfg.weight else self._shared_k_tile)(op, accumulate)
        ahead = cfg.stages - 2
        kt0, count, acc_inits = self._prologue(op, issue, ahead)

        def step(bb: PtxBuilder, kt, acc, read_stage, write_stage, pending: int = 1):
            bb.wait(ahead - 1)
            bb.fence_proxy_async()
            bb.barrier()
            issue(bb, bb.add(bb.add(kt0, kt), ahead), write_stage)
            acc = k_tile(bb, read_stage, acc)
            bb.wgmma_wait(pending)
            return [*acc, _next_stage(bb, read_stage, cfg.stages), _next_stage(bb, write_stage, cfg.stages)]

        carried = acc_inits + [b.imm(0), b.imm(ahead)]
        if not cfg.weight:
            loop, body, kt, state = b.for_(0, count, 1, carried)
            body.yield_(step(body, kt, state[:-2], *state[-2:]))
        else:  # k-tiles past the count (up to a multiple of DECODED_UNROLL) are past the split's end: zeros, adding nothing
            u = DECODED_UNROLL
            loop, body, it, state = b.for_(0, b.shr(b.add(count, u - 1), u.bit_length() - 1), 1, carried)
            for i in range(u):
                state = step(body, body.add(body.shl(it, u.bit_length() - 1), i), state[:-2], *state[-2:], pending=int(i < u - 1))
            body.yield_(state)
        results = list(loop.results)
        b.wait(0)
        self.values[op.result] = list(b.wgmma_wait(0, results[:self.acc_count]))

    def _shared_k_tile(self, op: tile.PipelineOp, accumulate):
        """A k-tile's wgmmas on A and B tiles in shared memory, each warpgroup its 64 rows of A."""
        b, cfg = self.b, self.cfg
        fragments = [o for o in op.compute.block.ops if isinstance(o, tile.FragmentOp)]
        if [f.result.type.layout.data for f in fragments] != ["a", "b"]:
            raise RungError("tile-to-warp: wgmma tiles multiply an A and a B fragment of shared tiles, or decode a packed weight")
        a_buf, b_buf = (self.values[f.buffer] for f in fragments)
        first_row = b.shl(b.shr(self.warp_m, 2), 6)  # of the warpgroup's 64 rows of A

        def k_tile(bb: PtxBuilder, stage, acc):
            bb.wgmma_fence()
            for step in range(cfg.bk_units // 16):  # 32 bytes of each row a step
                col = bb.imm(16 * step)
                acc = bb.wgmma([bb.tile_desc(a_buf, stage, first_row, col)], bb.tile_desc(b_buf, stage, self.zero, col), accumulate,
                               acc, cfg.mma[0])
            bb.wgmma_commit()
            return acc
        return k_tile

    def _decoded_k_tile(self, op: tile.PipelineOp, accumulate):
        """A k-tile's wgmmas with the weight decoded into A registers: each warp decodes its 16 rows
        (lowering.ladder, the mma.sync A fragment's layout) and each warpgroup multiplies its 64 by
        the activations' tile in shared memory (the block's A rows as wgmma's B): C transposed."""
        b, cfg = self.b, self.cfg
        decode = next(o for o in op.compute.block.ops if isinstance(o, tile.DecodeOp))
        act = next(o for o in op.compute.block.ops if isinstance(o, tile.FragmentOp) and o.result.type.layout.data == "a")
        act_buf = self.values[act.buffer]
        codes, scales, zeros = (self.values[v.owner.buffer] if v is not None else None for v in (decode.codes, decode.scales, decode.zeros))
        weights = _WeightFragments(b, cfg, self.tid, self.lane, self.warp_n)

        def k_tile(bb: PtxBuilder, stage, acc):
            a_regs = []
            for blk in range(cfg.bk // (16 * weights.steps)):
                words = weights.load_codes(bb, codes, stage, blk)
                group = [weights.load_group(bb, buf, stage, blk, is_scale) if buf is not None else None
                         for buf, is_scale in ((scales, True), (zeros, False))]
                for (w0, w1), (w2, w3) in weights.decode(bb, words, *group, blk):  # rows g and g + 8 of the warp's 16
                    a_regs.append([w0, w2, w1, w3])
            bb.wgmma_fence()
            for step, regs in enumerate(a_regs):
                acc = bb.wgmma(regs, bb.tile_desc(act_buf, stage, self.zero, bb.imm(16 * step)), accumulate, acc, cfg.dtype)
            bb.wgmma_commit()
            return acc
        return k_tile

    def _mma(self, bb: PtxBuilder, a_regs: list, b_frags: list, acc: list) -> list:
        """acc + a @ b over the unit's k16 steps: b_frags[step][n8 tile] are the B register pairs.
        With weight_is_a, acc^T + b^T a^T: n8 tiles 2j and 2j + 1 are rows 0-7 and 8-15 of A."""
        mma_type, mma_shape, acc_type = self.cfg.mma
        acc = list(acc)
        for step in range(len(b_frags)):
            if self.cfg.weight_is_a:
                act = a_regs[2 * step: 2 * step + 2]
                for j in range(self.ni_count // 2):
                    (w0, w1), (w2, w3) = b_frags[step][2 * j], b_frags[step][2 * j + 1]
                    acc[4 * j:4 * j + 4] = bb.mma([w0, w2, w1, w3], act, acc[4 * j:4 * j + 4], mma_type, mma_shape, acc_type)
                continue
            for mi in range(self.mi_count):
                a = a_regs[4 * (step * self.mi_count + mi): 4 * (step * self.mi_count + mi) + 4]
                for ni in range(self.ni_count):
                    i = (mi * self.ni_count + ni) * 4
                    acc[i:i + 4] = bb.mma(a, b_frags[step][ni], acc[i:i + 4], mma_type, mma_shape, acc_type)
        return acc

    def _scaled_mma(self, bb: PtxBuilder, a_regs: list, b_frags: list, acc: list, scales: list, u: int, partial: list) -> list:
        """acc + the unit's k16 steps, each group's partial sums (`partial`, carried from unit to unit
        of a k-tile) started at zero and added to acc times their columns' f32 scales where the group ends."""
        w, per_step = self.weights, 2 if self.cfg.weight_is_a else 4 * self.mi_count
        acc, used = list(acc), 0
        for step in range(len(b_frags)):
            k16 = u * len(b_frags) + step  # the step within the k-tile
            if k16 % w.group_steps == 0:
                partial[:] = [bb.fimm(0.0)] * len(acc)
            partial[:] = self._mma(bb, a_regs[per_step * step: per_step * (step + 1)], [b_frags[step]], partial)
            if (k16 + 1) % w.group_steps == 0:
                col_scales = w.column_scales(bb, scales[used:used + w.scale_regs])
                used += w.scale_regs
                for i, p in enumerate(partial):
                    acc[i] = bb.mad(p, col_scales[self._acc_column(i)], acc[i])
        return acc

    def _acc_column(self, i: int) -> int:
        """Which of the lane's accumulator columns (_WeightFragments.acc_cols order) accumulator i is in:
        of n8 tile (i // 4) % ni_count, column 2t + i % 2; or (weight_is_a) column g + 8 * (i % 4 // 2) of 16 columns i // 4."""
        return 2 * (i // 4) + i % 4 // 2 if self.cfg.weight_is_a else 2 * ((i // 4) % self.ni_count) + i % 2

    def _epilogue(self, op: tile.EpilogueOp) -> None:
        self.values[op.result] = op  # applied pair by pair as tile.store writes them

    def _store(self, op: tile.StoreOp) -> None:
        """Each lane stores rows g and g + 8, columns 2t and 2t + 1 of each mma tile, through the epilogue."""
        b, cfg = self.b, self.cfg
        epilogue: tile.EpilogueOp = self.values[op.value]
        acc = self.values[epilogue.acc]
        if cfg.c_transposed:
            return self._store_transposed(op, epilogue, acc)
        m, n, mi_count, ni_count = self.m, self.n, self.mi_count, self.ni_count
        lane = self.lane
        group, tig = b.shr(lane, 2), b.and_(lane, 3)
        row0 = b.add(b.add(self.values[epilogue.row], b.mul(self.warp_m, self.wm)), group)
        col0 = b.add(b.add(self.values[epilogue.col], b.mul(self.warp_n, self.wn)), b.shl(tig, 1))
        if epilogue.row_scales is not None:  # 8-bit products: acc * a_scale[row] * scale[col], in f32
            acc = _scaled(b, acc, cfg.mma[2], self.values[epilogue.row_scales], self.values[epilogue.col_scales], row0, col0, m, n,
                          mi_count, ni_count)
        rows = [b.add(row0, mi * 16 + half * 8) for mi in range(mi_count) for half in range(2)]  # row r: half r % 2 of m16 tile r // 2
        row_in = [b.setp("lt", row, m) for row in rows]
        cols = [b.add(col0, ni * 8) for ni in range(ni_count)]
        pairs = [(r, ni, (r // 2 * ni_count + ni) * 4 + 2 * (r % 2)) for r in range(len(rows)) for ni in range(ni_count)]  # (row, column, lo)
        if len(op.out.type.get_shape()) == 3:  # f32 partial sums into this split's slice of the workspace
            row_addr = self._workspace_rows(op.out, rows)
            for r, ni, i in pairs:
                inside = b.and_pred(row_in[r], b.setp("lt", cols[ni], n))
                b.st("global", b.add(row_addr[r], b.cvt(b.shl(cols[ni], 2), "u64")), acc[i:i + 2], pred=inside)
            return
        out = self._c_epilogue(epilogue, op.out, cols)
        for r, ni, i in pairs:
            out.store(rows[r], row_in[r], ni, *acc[i:i + 2])

    def _store_transposed(self, op: tile.StoreOp, epilogue: tile.EpilogueOp, acc: list) -> None:
        """The weight was the A operand, so the accumulators hold C transposed: lane (g, t) holds
        C[rows[R], cols[C]] as accumulator i, (R, C) = place(i). Each is stored alone, through the
        bias and activation or into the workspace."""
        b, cfg, m, n = self.b, self.cfg, self.m, self.n
        group, tig = b.shr(self.lane, 2), b.and_(self.lane, 3)
        row0 = b.add(self.values[epilogue.row], b.shl(tig, 1))
        col0 = b.add(b.add(self.values[epilogue.col], b.mul(self.warp_n, self.wn)), group)
        if cfg.weight_is_a:  # 8 rows: accumulator 4j + 2h + r is C[2t + r, 16j + g + 8h] (a few bytes)
            rows = [row0, b.add(row0, 1)]
            cols = [b.add(col0, 16 * j + 8 * h) for j in range(self.ni_count // 2) for h in range(2)]
            place = lambda i: (i % 2, i // 2)  # noqa: E731
        else:  # wgmma: accumulator 4j + 2h + r is C[8j + 2t + r, 16 warp + g + 8h]
            rows = [b.add(row0, 8 * j + r) for j in range(cfg.bm // 8) for r in range(2)]
            cols = [col0, b.add(col0, 8)]
            place = lambda i: (2 * (i // 4) + i % 2, i // 2 % 2)  # noqa: E731
        row_in = [b.setp("lt", r, m) for r in rows]
        if len(op.out.type.get_shape()) == 3:  # f32 partial sums into this split's slice of the workspace
            col_in = [b.setp("lt", c, n) for c in cols]
            row_addr = self._workspace_rows(op.out, rows)
            for i, v in enumerate(acc):
                r, c = place(i)
                b.st("global", b.add(row_addr[r], b.cvt(b.shl(cols[c], 2), "u64")), [v], pred=b.and_pred(row_in[r], col_in[c]))
            return
        out = self._c_epilogue(epilogue, op.out, cols, width=1)
        for i, v in enumerate(acc):
            r, c = place(i)
            out.store_one(rows[r], row_in[r], c, v)

    def _workspace_rows(self, workspace, rows: list) -> list:
        """Per row, the address of its column 0 in this split's slice (ctaid.z) of the f32 workspace
        [split_k, M, N rounded up to even]."""
        b = self.b
        npad = b.add(self.n, b.and_(self.n, 1))
        slice_row0 = b.mul(b.sreg("ctaid.z"), self.m)
        return [b.add(self.values[workspace], b.cvt(b.shl(b.mul(b.add(slice_row0, row), npad), 2), "u64")) for row in rows]

    def _c_epilogue(self, epilogue: tile.EpilogueOp, out, cols: list, width: int = 2) -> "_Epilogue":
        """The epilogue's bias and activation, storing into `out` at `cols`."""
        bias = self.values[epilogue.bias] if epilogue.bias is not None else None
        activation = epilogue.activation.data if epilogue.activation else "none"
        return _Epilogue(self.b, self.cfg.dtype, activation, self.values[out], self.n, bias, cols, width)


DECODED_UNROLL = 4  # k-tiles per loop trip of the decoded-weight wgmma pipeline (_wgmma_pipeline): it drains once a trip


def _next_stage(b: PtxBuilder, s, stages: int):
    nxt = b.add(s, 1)
    return b.selp(0, nxt, b.setp("eq", nxt, stages))


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
    """Bias, activation and the rounded store of C at `width` (2: (row, col), (row, col + 1) pairs;
    1: single elements) per column: bias loaded once per column, a pair stored as one 32-bit word
    when N is even, half by half when odd."""

    def __init__(self, b: PtxBuilder, dtype: str, activation: str, c_ptr, n, bias_ptr, cols, width: int = 2):
        self.b, self.dtype, self.activation, self.c_ptr, self.n, self.cols = b, dtype, activation, c_ptr, n, cols
        if width == 2:
            self.n_even, self.n_odd = b.setp("eq", b.and_(n, 1), 0), b.setp("ne", b.and_(n, 1), 0)
        else:
            self.col_in = [b.setp("lt", col, n) for col in cols]
        self.biases = [_load_biases(b, bias_ptr, col, n, dtype, width) for col in cols] if bias_ptr is not None else None
        self.row_bytes = b.cvt(b.shl(n, 1), "u64")
        self._rows = {}

    def _address(self, row, col):
        if row not in self._rows:
            self._rows[row] = self.b.add(self.c_ptr, self.b.mul(self.b.cvt(row, "u64"), self.row_bytes))
        return self.b.add(self._rows[row], self.b.cvt(self.b.shl(col, 1), "u64"))

    def _finish(self, v, i: int, j: int):
        """Value j of column i with its bias and activation."""
        return _activation(self.b, self.b.add(v, self.biases[i][j]) if self.biases else v, self.activation)

    def store_one(self, row, row_in, i, v) -> None:
        """C[row, cols[i]] (width 1)."""
        b = self.b
        b.st("global", self._address(row, self.cols[i]), [b.cvt_half(self._finish(v, i, 0), self.dtype)],
             pred=b.and_pred(row_in, self.col_in[i]))

    def store(self, row, row_in, i, lo, hi) -> None:
        b, dtype, col = self.b, self.dtype, self.cols[i]
        pair = b.cvt_pack(self._finish(hi, i, 1), self._finish(lo, i, 0), dtype)
        addr = self._address(row, col)
        both = b.and_pred(row_in, b.setp("lt", b.add(col, 1), self.n))
        b.st("global", addr, [pair], pred=b.and_pred(both, self.n_even))
        # odd N: rows are only 2-byte aligned, so store the halves one by one (split from the pair: the
        # accumulators are read once, which wgmma kernels need to keep their wgmmas asynchronous)
        first = b.and_pred(b.and_pred(row_in, b.setp("lt", col, self.n)), self.n_odd)
        lo_half, hi_half = b.unpack_halves(pair)
        b.st("global", addr, [lo_half], pred=first)
        b.st("global", addr, [hi_half], offset=2, pred=b.and_pred(both, self.n_odd))


def sum_splits_name(split_k: int, dtype: str, bias: bool, activation: str) -> str:
    return f"rung_sum_splits_{dtype}_s{split_k}" + ("_bias" if bias else "") + ("" if activation == "none" else f"_{activation}")


def sum_splits_kernel(split_k: int, dtype: str, bias: bool, activation: str, programmatic: bool = False) -> KernelOp:
    """Sums split_k partial results of a workspace [split_k, M, N rounded up to even], then
    applies the epilogue: one (row, column pair) per thread. Parameters (workspace, [bias,] c, m, n).
    `programmatic` (sm_90): launched programmatically after the GEMM, it waits for the GEMM's
    grid (griddepcontrol.wait) before reading the workspace."""
    kernel = KernelOp.get(sum_splits_name(split_k, dtype, bias, activation), list(reduce_param_kinds(bias)), REDUCE_THREADS)
    b = PtxBuilder(kernel.body.block)
    if programmatic:
        b.griddep_wait()
    ws, *bias_ptr, c_ptr, m, n = kernel.body.block.args
    pairs_per_row = b.shr(b.add(n, 1), 1)
    idx = b.add(b.mul(b.sreg("ctaid.x"), REDUCE_THREADS), b.sreg("tid.x"))
    row = b.div(idx, pairs_per_row)
    col = b.shl(b.sub(idx, b.mul(row, pairs_per_row)), 1)
    row_in = b.setp("lt", row, m)
    npad = b.shl(pairs_per_row, 1)
    lo = hi = None
    for z in range(split_k):
        addr = b.add(ws, b.cvt(b.shl(b.add(b.mul(b.add(b.mul(m, z), row), npad), col), 2), "u64"))
        plo, phi = b.ld("global", addr, "f32", n=2, pred=row_in)
        lo, hi = (plo, phi) if z == 0 else (b.add(lo, plo), b.add(hi, phi))
    _Epilogue(b, dtype, activation, c_ptr, n, bias_ptr[0] if bias_ptr else None, [col]).store(row, row_in, 0, lo, hi)
    return kernel


class _WeightFragments:
    """B fragments decoded in registers from codes in mma order (ir.packing) and scaled per
    group: lane (g, t) reads one 32-bit word per n8 tile and k-block of its row, and the scale
    (and zero term) of that row for each k16 step from the shared scale tile. With a shared
    table (GemmConfig.shared_table), the block fills it first (ahead of the pipeline's first barrier)."""

    def __init__(self, b: PtxBuilder, cfg: GemmConfig, tid, lane, warp_n):
        self.cfg, self.dec = cfg, decoder(cfg.weight)
        self.steps = self.dec.per_word // 4  # k16 steps per word
        wn = cfg.bn // cfg.warps_n
        group_id, tig = b.shr(lane, 2), b.and_(lane, 3)
        self.rows = [b.add(b.mul(warp_n, wn), b.add(group_id, 8 * ni)) for ni in range(wn // 8)]  # tile rows
        blocks = cfg.bk // (16 * self.steps)
        self.cols = [b.shl(b.add(tig, 4 * blk), 1) for blk in range(blocks)]  # word t of block blk, in halves
        self.scale_rows = [b.imm(r) for r in range(cfg.scale_rows)]
        self.minus_zero = b.imm(0x80008000, "b32")  # x * s + (-0) is x * s, signed zeros included
        self.group_steps = cfg.scale_span // 16  # k16 steps a row of scales covers in a k-tile
        if cfg.weight_is_a:  # columns g and g + 8 of each 16
            self.acc_cols = [b.add(b.mul(warp_n, wn), b.add(group_id, 8 * h)) for h in range(wn // 8)]
        else:
            self.acc_cols = [b.add(b.mul(warp_n, wn), b.add(b.shl(tig, 1), 8 * ni)) for ni in range(wn // 8)]  # columns 2t (and 2t + 1)
            if cfg.scale == "e8m0":  # a byte per column
                self.acc_cols = [c for col in self.acc_cols for c in (col, b.add(col, 1))]
        self.scale_regs = len(self.acc_cols)  # registers a group's accumulator scales take (a pair of halves in one)
        # scaled partial sums take minifloats as placed where the decoder leaves its exponent rescale to them (acc_rescale)
        self.acc_rescale = self.dec.partials_rescale(cfg.dtype) if cfg.scale_partials else 1.0
        self.lookup = self._shared_table(b, tid, lane) if cfg.shared_table else None

    def _shared_table(self, b: PtxBuilder, tid, lane):
        """Fills the table of pairs: row c holds the pair of byte c of codes (decoded by prmt) in 32
        copies, one per bank, so a warp's 32 lookups never conflict. Thread t writes rows t,
        t + threads, ... 16 bytes at a time from chunk t % 8 on (8 lanes of a store: 8 distinct
        chunks, all 32 banks). Returns the lookup: lane l reads copy l of a row."""
        cfg, zero = self.cfg, b.imm(0)
        # laid out as it is: the identity swizzle (no bits) is a layout smem-swizzle leaves alone
        tile = SmemType.get(1, TABLE_ROWS, TABLE_BYTES // TABLE_ROWS // 2, IntegerType(16), Swizzle(0, 0, 0))
        table = b.alloc_shared(tile, cfg.table_offset)
        chunks = [b.shl(b.and_(b.add(lane, i), 7), 3) for i in range(8)]  # in halves
        for first in range(0, TABLE_ROWS, cfg.threads):
            row = b.add(tid, first) if first else tid
            pair = emit_decode(self.dec, b, row, cfg.dtype)[0]
            for chunk in chunks:
                b.tile_store(table, zero, row, chunk, [pair] * 4)
        copy = b.shl(lane, 1)
        return lambda bb, code: bb.tile_load(table, zero, code, copy)

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

    def _srow(self, blk, step) -> int:
        """The scale row (group within the k-tile) of k16 step `step` of k-block blk."""
        cfg = self.cfg
        return (16 * (blk * self.steps + step)) // cfg.scale_span

    def load_acc_scales(self, body: PtxBuilder, buf, stage, blk) -> list:
        """The scales of this lane's accumulator columns (`acc_cols`: a pair of halves per register, or
        one half with weight_is_a; `scale_regs` registers), for each group whose last k16 step is in k-block blk."""
        cfg = self.cfg
        steps = range(blk * self.steps, (blk + 1) * self.steps)
        ending = [(s + 1) // self.group_steps - 1 for s in steps if (s + 1) % self.group_steps == 0]
        out = []
        for g in ending:
            srow = self.scale_rows[g]  # (a group per row of the k-tile, or one row for all of it)
            for col in self.acc_cols:
                kind = "u32" if cfg.scale == "e8m0" else "b16" if cfg.weight_is_a else "b32"
                out.append(body.tile_load(buf, stage, srow, col, kind=kind, byte=cfg.scale == "e8m0"))
        return out

    def column_scales(self, body: PtxBuilder, regs: list) -> list:
        """A group's loaded scales as f32, one per accumulator column (_BlockLowering._acc_column)."""
        if self.cfg.scale == "e8m0":  # 2^(e - 127) as f32 bits; code 0 is the subnormal 2^-127
            return [body.max(body.shl(e, 23), 0x00400000) for e in regs]
        if self.cfg.weight_is_a:
            return [body.cvt_widen(h, self.cfg.dtype) for h in regs]
        return [body.cvt_widen(h, self.cfg.dtype) for pair in regs for h in body.unpack_halves(pair)]

    def load_codes(self, body: PtxBuilder, codes, stage, blk) -> list:
        """k-block blk's code words: one per n8 tile."""
        return [body.tile_load(codes, stage, row, self.cols[blk]) for row in self.rows]

    def load_group(self, body: PtxBuilder, buf, stage, blk, is_scale: bool) -> list:
        """Per scale row the steps of k-block blk use, and per n8 tile, the scale (or zero term) pair."""
        srows = sorted({self._srow(blk, step) for step in range(self.steps)})
        return [self._pair(body, buf, stage, self.scale_rows[srow], row, is_scale) for srow in srows for row in self.rows]

    def decode(self, body: PtxBuilder, words: list, scales: list | None, zeros: list | None, blk) -> list[list[tuple]]:
        """[k16 step of the block][n8 tile] -> the two B registers: codes decoded, times the scale, plus
        the zero term (without scales: the codes' values)."""
        cfg = self.cfg
        srows = sorted({self._srow(blk, step) for step in range(self.steps)})
        out = [[None] * len(self.rows) for _ in range(self.steps)]
        for ni, word in enumerate(words):
            if self.lookup:
                regs = looked_up(body, word, self.lookup)
            else:
                regs = emit_decode(self.dec, body, word, cfg.dtype, rescaled=self.acc_rescale == 1)
            for step in range(self.steps):
                if scales is None:
                    out[step][ni] = (regs[2 * step], regs[2 * step + 1])
                    continue
                at = srows.index(self._srow(blk, step)) * len(self.rows) + ni
                s2, z2 = scales[at], zeros[at] if zeros else self.minus_zero
                out[step][ni] = (body.fma2(regs[2 * step], s2, z2, cfg.dtype), body.fma2(regs[2 * step + 1], s2, z2, cfg.dtype))
        return out


def _load_biases(b: PtxBuilder, bias_ptr, col, n, dtype: str, count: int) -> list:
    """bias[col], ..., bias[col + count - 1] as f32 (0 past N)."""
    addr = b.add(bias_ptr, b.cvt(b.shl(col, 1), "u64"))
    out = []
    for i in range(count):
        inside = b.setp("lt", b.add(col, i), n)
        raw = b.ld("global", addr, "b16", offset=2 * i, pred=inside)
        out.append(b.selp(b.cvt_widen(raw, dtype), b.fimm(0.0), inside))
    return out


LOG2E = 1.4426950408889634


def _activation(b: PtxBuilder, v, activation: str):
    if activation == "relu":
        return b.max(v, b.fimm(0.0))
    if activation == "silu":  # v * sigmoid(v) = v / (1 + 2^(-v log2 e))
        return b.mul(v, b.rcp(b.add(b.ex2(b.mul(v, b.fimm(-LOG2E))), b.fimm(1.0))))
    return v


@dataclass(frozen=True)
class TileToWarp(ModulePass):
    """Lower each tile.kernel (block program) to a ptx.kernel, and tile.launch and tile.sum_splits to ptx.launch."""

    name = "tile-to-warp"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if any(isinstance(o, tile.MatmulOp) for o in op.walk()):
            raise RungError("tile-to-warp lowers block programs: expand tile.matmul first (-p tile-expand)")
        kernels = {k.sym_name.data for k in op.ops if isinstance(k, KernelOp)}
        for launch in [o for o in op.walk() if isinstance(o, tile.LaunchOp)]:
            cfg = launch.definition().config
            (m, k), w = launch.inputs[0].type.get_shape(), launch.inputs[1].type.get_shape()
            n = w[1] if cfg.b_kn else w[0]
            Rewriter.replace_op(launch, LaunchOp.get(launch.kernel.root_reference.data, list(launch.inputs), launch.result.type, cfg.grid(m, n), [m, n, k]))
        for total in [o for o in op.walk() if isinstance(o, tile.SumSplitsOp)]:
            (m, n), dtype = total.result.type.get_shape(), str(total.result.type.element_type)
            activation = total.activation.data if total.activation else "none"
            name = sum_splits_name(total.split_k, dtype, total.bias is not None, activation)
            if name not in kernels:
                op.body.block.add_op(sum_splits_kernel(total.split_k, dtype, total.bias is not None, activation))
                kernels.add(name)
            inputs = [total.partial] + ([total.bias] if total.bias else [])
            Rewriter.replace_op(total, LaunchOp.get(name, inputs, total.result.type, reduce_grid(m, n), [m, n]))
        for program in [o for o in op.walk() if isinstance(o, tile.KernelOp)]:
            Rewriter.replace_op(program, lower_kernel(program))
