"""A GEMM's block program lowered op by op into a ptx.kernel: copies, pipeline, fragments, mma.sync or wgmma, epilogue and store."""

from __future__ import annotations

from xdsl.dialects.builtin import IntegerType, Signedness

from dialects import tile
from dialects.ptx import KernelOp
from dialects.tile import (
    GemmConfig,
)
from dialects.warp import WGMMA_SWIZZLE, SmemType
from ir.errors import RungError
from ir.packing import decoder
from lowering.ptx_builder import PtxBuilder
from lowering.tile_to_warp.copies import TileCopy, divmod_by
from lowering.tile_to_warp.dispatch import lower_each
from lowering.tile_to_warp.epilogue import Epilogue, scale_row, scaled_accumulators
from lowering.tile_to_warp.weights import WeightFragments


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
WEIGHT_PARAMS = {"b", "scales", "zeros"}  # a GEMM's parameters that hold its weight (with early_weights, copied before the wait)


def gemm_kernel(cfg: GemmConfig, programmatic: bool = False) -> KernelOp:
    """The kernel of schedule `cfg`: its block program (lowering.tile_expand) lowered; parameters
    `cfg.param_names`, grid `cfg.grid(m, n)`. `programmatic` (sm_90): with a split K, the kernel
    lets the reduction launched after it programmatically start as it starts."""
    from lowering.tile_expand import block_program

    return lower_kernel(block_program(cfg), programmatic)


def lower_kernel(program: tile.KernelOp, programmatic: bool = False) -> KernelOp:
    """The ptx.kernel of a block program, its ops lowered in order (`programmatic`: gemm_kernel)."""
    return _BlockLowering(program, programmatic).kernel


PROGRAM_OPS = (tile.BlockOriginOp, tile.KRangeOp, tile.SharedBufferOp, tile.ZerosOp, tile.PipelineOp, tile.EpilogueOp, tile.StoreOp,
               tile.YieldOp)  # the ops of a GEMM block program's body


class _BlockLowering:
    """Lowers a tile.kernel op by op. `values` maps each tile value to what stands for it in the
    kernel: registers, a shared tile, or (inside the pipeline) a copy or fragment load set up
    once and issued per k-tile."""

    def __init__(self, program: tile.KernelOp, programmatic: bool = False):
        cfg = self.cfg = program.config
        self.kernel = KernelOp.get(program.sym_name.data, list(cfg.param_kinds), cfg.threads, cfg.shared_bytes)
        b = self.b = PtxBuilder(self.kernel.body.block)
        if cfg.early_weights or (programmatic and cfg.split_k > 1):  # the next kernel's blocks get ready while these run
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
        lower_each(self, program.body.block.ops, PROGRAM_OPS, program, "GEMM")

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
        k_tiles = self.k_tiles = b.shr(b.add(self.kq, bk - 1), bk.bit_length() - 1)
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

    def _copy(self, op: tile.CopyOp) -> tuple[TileCopy, int | None]:
        """The copy's per-thread addresses and bounds, set up once, by what it copies; and its
        k-tile step in 16-bit units (None: the scale row of the k-tile's group)."""
        b, cfg, p = self.b, self.cfg, self.p
        name, fixed, shared = self.param_of[op.src], self.values[op.fixed], self.shared[op.buffer]
        self.source[op.buffer] = name
        halves = lambda x: b.cvt(b.shl(x, 1), "u64")  # noqa: E731 (bytes of a row of halves)

        def copy(ptr, row_stride, row0, row_limit, col0, col_limit, k_in_rows):
            return TileCopy(b, self.tid, shared, cfg.threads, ptr, row_stride, row0, row_limit, col0, col_limit, k_in_rows,
                             op.row_tiles.value.data if op.row_tiles is not None else 0)

        if name == "a":
            return copy(p["a"], halves(self.kq), fixed, self.m, self.zero, self.k_end, False), cfg.bk_units
        if name == "b" and cfg.weight:  # rows of K * bits / 16 halves of codes in mma order (in 16-row tiles: op.row_tiles)
            bits = cfg.weight_bits
            return copy(p["b"], halves(b.shr(b.mul(self.k, bits), 4)), fixed, self.n, self.zero, b.shr(b.mul(self.k_end, bits), 4), False), shared.cols
        if name == "b" and cfg.sparse:  # a tile's slots over its BN rows, k-tile after k-tile (ir.sparse.kernel_tiles); rows past N
            # (to the tiles' end) hold slots too
            slot_halves = b.mul(self.k_tiles, shared.cols)
            rows = b.and_(b.add(self.n, cfg.bn - 1), -cfg.bn & 0xFFFFFFFF)
            return copy(p["b"], halves(slot_halves), fixed, rows, self.zero, slot_halves, False), shared.cols
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
            at = self._b_rows(lane_coords)
        elif layout == "sparse":
            return self._scatter(buf, lane_coords)
        elif layout == "packed":
            self.weights = WeightFragments(b, cfg, self.tid, self.lane, self.warp_n)
            return lambda bb, stage, u: self.weights.load_codes(bb, buf, stage, u)
        elif layout == "group_acc":
            return lambda bb, stage, u: self.weights.load_acc_scales(bb, buf, stage, u)
        else:  # group rows: scales, then zero terms
            is_scale = self.source[op.buffer] == "scales"
            return lambda bb, stage, u: self.weights.load_group(bb, buf, stage, u, is_scale)
        return lambda bb, stage, u: [r for nj in range(self.ni_count // 2) for r in bb.tile_ldmatrix(buf, stage, *at[u][nj], trans=layout == "bt")]

    def _b_rows(self, lane_coords) -> list:
        """Per k16 step, per pair of n8 tiles: the (row, column) this lane's ldmatrix reads of a B tile [BN, BK]."""
        b, (_, lane8, lane_hi, lane_mat) = self.b, lane_coords
        return [[(b.add(b.mul(self.warp_n, self.wn), b.add(b.add(b.shl(lane_hi, 3), lane8), 16 * nj)), b.shl(b.add(lane_mat, 2 * kk), 3))
                 for nj in range(self.ni_count // 2)] for kk in range(self.cfg.bk_units // 16)]

    def _scatter(self, staging, lane_coords):
        """A sparse B's loader (tile.scatter): at a k-tile's first unit the block zeroes the dense BN x BK tile (after the
        pipeline's tiles), passes a barrier, writes each of its slots' value at its position, passes another; the
        mma's B fragments are then read from the dense tile as from a dense B's (self.dense_rows)."""
        b, cfg = self.b, self.cfg
        dense = self.dense = b.alloc_shared(SmemType.get(1, cfg.bn, cfg.bk, _element(cfg.dtype)), cfg.table_offset)
        self.dense_rows = self._b_rows(lane_coords)
        chunks = cfg.bn * cfg.bk // 8  # of 16 bytes
        zero = b.imm(0, "b32")

        def scatter(bb: PtxBuilder, stage, u) -> list:
            if u:
                return []
            # (coordinates computed where they are used: held across the loop they cost a register pair a slot)
            for i in range(chunks // cfg.threads):
                row, chunk = divmod_by(bb, bb.add(self.tid, i * cfg.threads), cfg.bk // 8)
                bb.tile_store(dense, self.zero, row, bb.shl(chunk, 3), [zero] * 4)
            bb.barrier()
            for i in range(cfg.sparse // cfg.threads):
                row, slot = divmod_by(bb, bb.add(self.tid, i * cfg.threads), cfg.sparse // cfg.bn)
                word = bb.tile_load(staging, stage, row, bb.shl(slot, 1), "u32")  # (u32: the position is address math)
                pos = bb.shr(word, 16)
                bb.tile_store(dense, self.zero, bb.shr(pos, cfg.bk.bit_length() - 1), bb.and_(pos, cfg.bk - 1), [bb.unpack_halves(word)[0]])
            bb.barrier()
            return []
        return scatter

    def _pipeline(self, op: tile.PipelineOp) -> None:
        b, cfg = self.b, self.cfg
        if not isinstance(op.init.owner, tile.ZerosOp):  # the loop below starts its accumulators at zero
            raise RungError("tile-to-warp: a tile.pipeline's accumulator must start from tile.zeros")
        copy_ops = [o for o in op.copy.block.ops if isinstance(o, tile.CopyOp)]
        copies = [(self._copy(c), self.values[c.buffer], self.param_of[c.src]) for c in copy_ops]

        def issue(bb: PtxBuilder, k_tile, stage, sources=None):
            """Copy k-tile `k_tile` into pipeline stage `stage` (only the operands `sources` names, then without a commit)."""
            for (copy, per_tile), buf, source in copies:
                if sources is None or source in sources:
                    k0 = bb.mul(k_tile, per_tile) if per_tile else scale_row(bb, cfg, k_tile)
                    copy.issue(bb, k0, buf, stage)
            if sources is None:
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
                elif isinstance(o, tile.ScatterOp):
                    regs[o.result] = [r for nj in range(self.ni_count // 2) for r in bb.tile_ldmatrix(self.dense, self.zero, *self.dense_rows[u][nj])]
                elif isinstance(o, tile.MmaOp) and o.scales is not None:
                    regs[o.result] = self._scaled_mma(bb, regs[o.a], regs[o.b], regs[o.acc], regs[o.scales], u, partial)
                elif isinstance(o, tile.MmaOp):
                    b_regs = regs[o.b]
                    if isinstance(o.b.owner, (tile.FragmentOp, tile.ScatterOp)):  # ldmatrix'ed: a register pair per n8 tile
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
        """(first k-tile, k-tile count, zeroed accumulators), the first `ahead` k-tiles issued. With early_weights the
        weight's copies of those k-tiles go first, before the wait for the kernel ahead (which may still be writing A):
        the first commit group holds them all, so each stage's data still lies in a group no later than its own."""
        b = self.b
        kt0, count = self.values[op.first], self.values[op.count]
        if self.cfg.early_weights:
            for s in range(ahead):
                issue(b, b.add(kt0, s), b.imm(s), WEIGHT_PARAMS)
            b.griddep_wait()
            for s in range(ahead):
                issue(b, b.add(kt0, s), b.imm(s), set(self.cfg.param_names) - WEIGHT_PARAMS)
                b.commit()
        else:
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
        weights = WeightFragments(b, cfg, self.tid, self.lane, self.warp_n)

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
        With weight_is_a, acc^T + b^T a^T: n8 tiles 2j and 2j + 1 are rows 0-7 and 8-15 of A. FP8 (e4m3) products
        start each mma from zero and are added to acc in f32 registers: an H100's FP8 tensor cores keep fewer bits than
        f32 in a chain of accumulations, so errors grew with K (docs/gpu.md)."""
        mma_type, mma_shape, acc_type = self.cfg.mma
        if self.cfg.a8 == "e4m3":
            zero = bb.fimm(0.0)
            promoted = lambda a, b, c, *kind: [bb.add(x, y) for x, y in zip(c, bb.mma(a, b, [zero] * 4, *kind))]  # noqa: E731
        else:
            promoted = bb.mma
        acc = list(acc)
        for step in range(len(b_frags)):
            if self.cfg.weight_is_a:
                act = a_regs[2 * step: 2 * step + 2]
                for j in range(self.ni_count // 2):
                    (w0, w1), (w2, w3) = b_frags[step][2 * j], b_frags[step][2 * j + 1]
                    acc[4 * j:4 * j + 4] = promoted([w0, w2, w1, w3], act, acc[4 * j:4 * j + 4], mma_type, mma_shape, acc_type)
                continue
            for mi in range(self.mi_count):
                a = a_regs[4 * (step * self.mi_count + mi): 4 * (step * self.mi_count + mi) + 4]
                for ni in range(self.ni_count):
                    i = (mi * self.ni_count + ni) * 4
                    acc[i:i + 4] = promoted(a, b_frags[step][ni], acc[i:i + 4], mma_type, mma_shape, acc_type)
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
        """Which of the lane's accumulator columns (WeightFragments.acc_cols order) accumulator i is in:
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
            acc = scaled_accumulators(b, acc, cfg.mma[2], self.values[epilogue.row_scales], self.values[epilogue.col_scales], row0, col0, m, n,
                          mi_count, ni_count)
        rows = [b.add(row0, mi * 16 + half * 8) for mi in range(mi_count) for half in range(2)]  # row r: half r % 2 of m16 tile r // 2
        row_in = [b.setp("lt", row, m) for row in rows]
        cols = [b.add(col0, ni * 8) for ni in range(ni_count)]
        pairs = [(r, ni, (r // 2 * ni_count + ni) * 4 + 2 * (r % 2)) for ni in range(ni_count) for r in range(len(rows))]
        # (row, column, lo), column by column: a column's bias dies after its rows (row by row, 128 x 256 wgmma tiles spilled)
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

    def _c_epilogue(self, epilogue: tile.EpilogueOp, out, cols: list, width: int = 2) -> "Epilogue":
        """The epilogue's bias, activation and residual, storing into `out` at `cols`."""
        bias = self.values[epilogue.bias] if epilogue.bias is not None else None
        activation = epilogue.activation.data if epilogue.activation else "none"
        residual = self.values[epilogue.residual_tensor] if epilogue.residual_tensor is not None else None
        return Epilogue(self.b, self.cfg.dtype, activation, self.values[out], self.n, bias, cols, width,
                        residual_ptr=residual, residual=epilogue.residual.data if epilogue.residual else "")


DECODED_UNROLL = 4  # k-tiles per loop trip of the decoded-weight wgmma pipeline (_wgmma_pipeline): it drains once a trip


def _next_stage(b: PtxBuilder, s, stages: int):
    nxt = b.add(s, 1)
    return b.selp(0, nxt, b.setp("eq", nxt, stages))
