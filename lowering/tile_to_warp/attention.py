"""An attention program (dialects.tile.attention) lowered into a ptx.kernel: FlashAttention-2's forward pass.

Warp w of block (x, h) owns query rows x BM + 16 w ... + 15. Q's tile is copied once and held as
mma.sync A fragments; K and V stream through two shared stages, tile j + 1 copied while tile j
computes. Per key tile: S = Q K^T (K's rows are B's columns: ldmatrix), the row max taken across
the quad of lanes that shares a row (two shuffles) and kept in log2 units (m), the running sums
and O rescaled by 2^(m_old - m_new), P = 2^(S scale log2(e) - m_new) (one fma and one ex2 a score)
packed to 16 bits straight from the accumulator registers into the next mma's A fragment (C's and
A's layouts agree pairwise), and O += P V (V's rows are B's k: ldmatrix.trans). Rows sum per lane
until the end, one quad reduction, one reciprocal. Tiles that need no mask (wholly below the
diagonal and inside S) run in a first loop without compares; the rest (the diagonal's, the last
partial one) in a second. With splits, block z takes its share of the key tiles and stores O
unnormalised with m and the row sum (f32); merge_splits_kernel combines them. Shared tiles are
addressed by (stage, row, column): smem-swizzle picks their layout. With positions (a step over a KV
cache), row r attends to the keys up to positions[r % P]: each thread reads its rows' positions, and
the block's largest and smallest (warp shuffles, then shared memory across the warps) bound its key
tiles and its unmasked ones.
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import BFloat16Type, Float16Type

from dialects import tile
from dialects.ptx import KernelOp
from dialects.tile.attention import AttentionConfig, AttentionOp
from dialects.warp import SmemType
from ir.errors import RungError
from lowering.ptx_builder import PtxBuilder
from lowering.tile_to_warp.copies import divmod_by

LOG2E = math.log2(math.e)


def lower_attention_program(program: tile.KernelOp) -> KernelOp:
    cfg: AttentionConfig = program.schedule.data
    op = program.body.block.first_op
    if not isinstance(op, AttentionOp):
        raise RungError(f"tile-to-warp: @{program.sym_name.data}: an attention program is one tile.attention")
    dtype = str(op.q.type.element_type)
    if dtype not in ("f16", "bf16"):
        raise RungError(f"tile-to-warp: @{program.sym_name.data}: attention reads f16 or bf16, not {dtype}")
    positions = op.positions is not None
    # registers budgeted for eight warps a multiprocessor: the O, S and Q fragments fit (ptxas alone may aim for more and spill)
    kernel = KernelOp.get(program.sym_name.data, ["u64"] * (4 + positions) + ["u32"] * (2 + positions), cfg.threads,
                          cfg.shared_bytes + 8 * cfg.warps * positions, min_blocks=max(1, 256 // cfg.threads))
    _Attention(kernel, cfg, dtype, op.scale.value.data, op.causal is not None, op.group.value.data,
               op.o_heads.value.data if op.o_heads is not None else 0,
               op.positions.type.element_type.width.data // 8 if positions else 0)
    return kernel


class _Attention:
    def __init__(self, kernel: KernelOp, cfg: AttentionConfig, dtype: str, scale: float, causal: bool, group: int, o_heads: int = 0,
                 position_bytes: int = 0):
        self.b = b = PtxBuilder(kernel.body.block)
        self.cfg, self.dtype, self.causal, self.o_heads, self.position_bytes = cfg, dtype, causal, o_heads, position_bytes
        if position_bytes:
            q_ptr, k_ptr, v_ptr, self.positions, o_ptr, self.rows, self.keys, self.count = kernel.body.block.args
        else:
            q_ptr, k_ptr, v_ptr, o_ptr, self.rows, self.keys = kernel.body.block.args
        d, bm, bn = cfg.head_dim, cfg.block_m, cfg.block_n
        tid = b.sreg("tid.x")
        lane, warp = b.and_(tid, 31), b.shr(tid, 5)
        self.lane, self.warp = lane, warp
        head = b.sreg("ctaid.y")
        kv_head = divmod_by(b, head, group)[0] if group > 1 else head
        self.row0 = b.mul(b.sreg("ctaid.x"), bm)
        row_bytes = b.imm(2 * d, "u64")

        def start(ptr, index, count):  # the first row of head `index` of `count` rows each
            return b.add(ptr, b.mul(b.cvt(b.mul(index, count), "u64"), row_bytes))

        element = BFloat16Type() if dtype == "bf16" else Float16Type()
        q_tile = b.alloc_shared(SmemType.get(1, bm, d, element), 0)
        self.k_tile = b.alloc_shared(SmemType.get(2, bn, d, element), 2 * bm * d)
        self.v_tile = b.alloc_shared(SmemType.get(2, bn, d, element), 2 * (bm + 2 * bn) * d)
        zero = b.imm(0)
        first, full, last = self.key_tiles(b)
        _RowsCopy(b, tid, bm, d, cfg.threads, start(q_ptr, head, self.rows)).issue(b, self.row0, self.rows, q_tile, zero)
        self.kv_copies = [(_RowsCopy(b, tid, bn, d, cfg.threads, start(ptr, kv_head, self.keys)), t) for ptr, t in ((k_ptr, self.k_tile), (v_ptr, self.v_tile))]
        self.issue(b, first, b.and_(first, 1))
        b.wait(0)
        b.barrier()
        # lane coordinates of ldmatrix's four 8x8 matrices, and of the accumulators (row g, columns 2t, 2t + 1)
        lane16, lane8, lane_hi, lane_mat = b.and_(lane, 15), b.and_(lane, 7), b.shr(lane, 4), b.and_(b.shr(lane, 3), 1)
        q_row = b.add(b.shl(warp, 4), lane16)
        self.q_frags = [b.tile_ldmatrix(q_tile, zero, q_row, b.shl(b.add(lane_hi, 2 * kk), 3)) for kk in range(d // 16)]
        # (rows 16 apart share a swizzled offset: warp-to-ptx adds the constant)
        k_row = b.add(b.shl(lane_hi, 3), lane8)
        self.k_at = [[(b.add(k_row, 16 * nj) if nj else k_row, b.shl(b.add(lane_mat, 2 * kk), 3)) for nj in range(bn // 16)] for kk in range(d // 16)]
        v_row = b.add(b.shl(lane_mat, 3), lane8)
        self.v_at = [[(b.add(v_row, 16 * kk) if kk else v_row, b.add(b.shl(lane_hi, 3), 16 * nj)) for nj in range(d // 16)] for kk in range(bn // 16)]
        self.my_rows = [b.add(b.add(self.row0, b.shl(warp, 4)), b.add(b.shr(lane, 2), 8 * half)) for half in (0, 1)]
        self.my_col = b.shl(b.and_(lane, 3), 1)
        self.log2_scale = b.fimm(scale * LOG2E)
        if position_bytes:
            self.row_positions = [self.position(b, row) for row in self.my_rows]

        state = [b.fimm(-math.inf)] * 2 + [b.fimm(0.0)] * (2 + 4 * (d // 8))  # row max, row sum (per lane), O
        for lb, ub, masked in ((first, full, False), (full, last, True)):
            loop, body, j, carried = b.for_(lb, ub, 1, state)
            body.yield_(self.key_tile(body, j, carried, masked))
            state = list(loop.results)
        b.wait(0)  # (the last iteration's copy of a tile past the end)
        if cfg.splits == 1:
            self.store(b, o_ptr, head, state)
        else:
            self.store_partial(b, o_ptr, head, state)

    def key_tiles(self, b: PtxBuilder) -> tuple:
        """(first, first needing a mask, end) of this block's key tiles: all of S's, or (causal) up to its last
        row, or this split's share of those; the tiles wholly below the diagonal and inside S need no mask."""
        cfg, bm, bn = self.cfg, self.cfg.block_m, self.cfg.block_n
        log_bn = bn.bit_length() - 1
        tiles = b.shr(b.add(self.keys, bn - 1), log_bn)
        full = b.shr(self.keys, log_bn)
        if self.causal:
            tiles = b.min(tiles, b.shr(b.add(b.min(self.rows, b.add(self.row0, bm)), bn - 1), log_bn))
            full = b.min(full, b.shr(b.add(self.row0, 1), log_bn))
        if self.position_bytes:  # up to the largest position of the block's rows; no mask up to the smallest
            largest, smallest = self.block_positions(b)
            tiles = b.min(tiles, b.shr(b.add(largest, bn), log_bn))
            full = b.min(full, b.shr(b.add(smallest, 1), log_bn))
        if cfg.splits == 1:
            return b.imm(0), full, tiles
        per = divmod_by(b, b.add(tiles, cfg.splits - 1), cfg.splits)[0]
        first = b.min(b.mul(b.sreg("ctaid.z"), per), tiles)
        last = b.min(b.add(first, per), tiles)
        return first, b.max(first, b.min(full, last)), last

    def position(self, b: PtxBuilder, row):
        """positions[row % P] (row clamped to L - 1: rows past L are computed, not stored), its low 32 bits."""
        index = b.rem(b.min(row, b.sub(self.rows, 1)), self.count)
        return b.ld("global", b.add(self.positions, b.cvt(b.mul(index, self.position_bytes), "u64")), "u32")

    def block_positions(self, b: PtxBuilder) -> tuple:
        """(largest, smallest) position of the block's rows: each warp's over its 16 rows by shuffles, then every
        warp's through shared memory (past the tiles)."""
        mine = self.position(b, b.add(b.add(self.row0, b.shl(self.warp, 4)), b.and_(self.lane, 15)))
        largest, smallest = mine, mine
        for lanes in (1, 2, 4, 8):
            largest, smallest = b.max(largest, b.shfl_bfly(largest, lanes)), b.min(smallest, b.shfl_bfly(smallest, lanes))
        scratch = b.add(b.shared_base(), self.cfg.shared_bytes)
        b.st("shared", b.add(scratch, b.shl(self.warp, 3)), [largest, smallest], pred=b.setp("eq", self.lane, 0))
        b.barrier()
        for w in range(self.cfg.warps):
            other_largest, other_smallest = b.ld("shared", scratch, "u32", n=2, offset=8 * w)
            largest, smallest = b.max(largest, other_largest), b.min(smallest, other_smallest)
        return largest, smallest

    def issue(self, bb: PtxBuilder, tile_index, stage) -> None:
        """Copy key tile `tile_index` of K and V into `stage` (rows past S zero-filled), one cp.async group."""
        first_row = bb.mul(tile_index, self.cfg.block_n)
        for c, t in self.kv_copies:
            c.issue(bb, first_row, self.keys, t, stage)
        bb.commit()

    def key_tile(self, bb: PtxBuilder, j, carried, masked: bool) -> list:
        cfg, dtype = self.cfg, self.dtype
        d, bn = cfg.head_dim, cfg.block_n
        maxes, sums, o = list(carried[:2]), list(carried[2:4]), [list(carried[4 + 4 * n: 8 + 4 * n]) for n in range(d // 8)]
        bb.wait(0)
        bb.barrier()  # tile j has landed everywhere, and every warp is done with the stage tile j + 1 goes to
        stage = bb.and_(j, 1)
        self.issue(bb, bb.add(j, 1), bb.xor(stage, 1))
        zero = bb.fimm(0.0)
        s = [[zero] * 4 for _ in range(bn // 8)]
        for kk in range(d // 16):
            for nj in range(bn // 16):
                frag = bb.tile_ldmatrix(self.k_tile, stage, *self.k_at[kk][nj])
                for i in (0, 1):
                    s[2 * nj + i] = list(bb.mma(self.q_frags[kk], frag[2 * i: 2 * i + 2], s[2 * nj + i], dtype))
        if masked:
            first_col = bb.add(bb.mul(j, bn), self.my_col)
            for n, acc in enumerate(s):
                for e in range(4):
                    col = bb.add(first_col, 8 * n + (e & 1))
                    keep = bb.setp("lt", col, self.keys)
                    if self.causal:
                        keep = bb.and_pred(keep, bb.setp("le", col, self.my_rows[e >> 1]))
                    if self.position_bytes:
                        keep = bb.and_pred(keep, bb.setp("le", col, self.row_positions[e >> 1]))
                    acc[e] = bb.selp(acc[e], bb.fimm(-math.inf), keep)
        # maxima in log2 units (the scale is positive): the max of the raw scores, scaled once per row
        new_maxes, scales, offsets = [], [], []
        for half in (0, 1):  # rows g and g + 8: registers 0, 1 and 2, 3 of each accumulator
            m = s[0][2 * half]
            for acc in s:
                m = bb.max(m, bb.max(acc[2 * half], acc[2 * half + 1]))
            for lanes in (1, 2):
                m = bb.max(m, bb.shfl_bfly(m, lanes))
            m = bb.max(maxes[half], bb.mul(m, self.log2_scale))
            new_maxes.append(m)
            if masked and self.position_bytes:  # a row whose keys so far are all past its position (a later split): 2^(-inf + inf) is NaN
                m = bb.selp(bb.fimm(0.0), m, bb.setp("eq", m, bb.fimm(-math.inf)))
            scales.append(bb.ex2(bb.sub(maxes[half], m)))
            offsets.append(bb.sub(bb.fimm(0.0), m))
        p = [[bb.ex2(bb.mad(x, self.log2_scale, offsets[e >> 1])) for e, x in enumerate(acc)] for acc in s]  # one fma and ex2 each
        for half in (0, 1):
            total = bb.mul(sums[half], scales[half])
            for acc in p:
                total = bb.add(total, bb.add(acc[2 * half], acc[2 * half + 1]))
            sums[half] = total
        o = [[bb.mul(x, scales[e >> 1]) for e, x in enumerate(acc)] for acc in o]
        for kk in range(bn // 16):  # P's k16 step kk: accumulators 2 kk and 2 kk + 1 are A's halves
            lo, hi = p[2 * kk], p[2 * kk + 1]
            a = [bb.cvt_pack(lo[1], lo[0], dtype), bb.cvt_pack(lo[3], lo[2], dtype), bb.cvt_pack(hi[1], hi[0], dtype), bb.cvt_pack(hi[3], hi[2], dtype)]
            for nj in range(d // 16):
                frag = bb.tile_ldmatrix(self.v_tile, stage, *self.v_at[kk][nj], trans=True)
                for i in (0, 1):
                    o[2 * nj + i] = list(bb.mma(a, frag[2 * i: 2 * i + 2], o[2 * nj + i], dtype))
        return [*new_maxes, *sums, *(x for acc in o for x in acc)]

    @staticmethod
    def row_sums(b: PtxBuilder, state) -> list:
        """The rows' sums: each lane's part summed over the quad of lanes that shares the row."""
        sums = []
        for total in state[2:4]:
            for lanes in (1, 2):
                total = b.add(total, b.shfl_bfly(total, lanes))
            sums.append(total)
        return sums

    def store_partial(self, b: PtxBuilder, o_ptr, head, state) -> None:
        """This split's O (unnormalised, f32 pairs), then the row max and sum, into row (z heads + head, row) of
        the partial results [splits * heads, L, D + 2]; rows past L are not stored."""
        d = self.cfg.head_dim
        sums, o = self.row_sums(b, state), state[4:]
        part_head = b.add(b.mul(b.sreg("ctaid.z"), b.sreg("nctaid.y")), head)
        first_of_quad = b.setp("eq", b.and_(b.sreg("tid.x"), 3), 0)
        for half in (0, 1):
            row = self.my_rows[half]
            inside = b.setp("lt", row, self.rows)
            start = b.add(o_ptr, b.mul(b.cvt(b.add(b.mul(part_head, self.rows), row), "u64"), b.imm(4 * (d + 2), "u64")))
            address = b.add(start, b.cvt(b.shl(self.my_col, 2), "u64"))
            for n in range(d // 8):
                b.st("global", address, [o[4 * n + 2 * half], o[4 * n + 2 * half + 1]], offset=32 * n, pred=inside)
            b.st("global", start, [state[half], sums[half]], offset=4 * d, pred=b.and_pred(inside, first_of_quad))

    def store(self, b: PtxBuilder, o_ptr, head, state) -> None:
        """O / row sum, rounded, two columns a store; rows past L are not stored (with o_heads, rows H D elements apart)."""
        d = self.cfg.head_dim
        o = state[4:]
        inverse = [b.rcp(total) for total in self.row_sums(b, state)]
        if self.o_heads:  # o [B, rows, H D]: head b H + h's row r at ((b rows + r) H + h) D
            batch, h = divmod_by(b, head, self.o_heads)
        for half in (0, 1):
            row = self.my_rows[half]
            inside = b.setp("lt", row, self.rows)
            if self.o_heads:
                index = b.add(b.mul(b.add(b.mul(batch, self.rows), row), self.o_heads), h)
                first = b.mul(b.cvt(index, "u64"), b.imm(2 * d, "u64"))
            else:
                first = b.mul(b.cvt(b.add(b.mul(head, self.rows), row), "u64"), b.imm(2 * d, "u64"))
            address = b.add(o_ptr, b.add(first, b.cvt(b.shl(self.my_col, 1), "u64")))
            for n in range(d // 8):
                lo, hi = (b.mul(o[4 * n + 2 * half + i], inverse[half]) for i in (0, 1))
                b.st("global", address, [b.cvt_pack(hi, lo, self.dtype)], offset=16 * n, pred=inside)


class _RowsCopy:
    """Copies of a [rows, D] tile of 16-bit elements from global memory, 16 bytes a cp.async, rows at or past
    a limit zero-filled. Thread t copies column (t % (D / 8)) * 8 of rows t / (D / 8) + i * step: one global
    address and one shared offset are held (across the key loop), the passes adding constants to them."""

    def __init__(self, b: PtxBuilder, tid, rows: int, d: int, threads: int, start):
        per_row = d // 8
        self.step = threads // per_row
        self.passes = -(-rows // self.step)
        self.row_bytes = 2 * d
        self.row, col = divmod_by(b, tid, per_row)
        self.col = b.shl(col, 3)
        self.first = b.add(start, b.add(b.mul(b.cvt(self.row, "u64"), b.imm(self.row_bytes, "u64")), b.cvt(b.shl(self.col, 1), "u64")))
        # threads past a pass's rows (D / 8 not dividing the threads, or few rows) copy nothing
        self.rows = rows
        self.guard = b.setp("lt", self.row, min(self.step, rows)) if threads % per_row or self.step > rows else None

    def issue(self, bb: PtxBuilder, row0, limit, tile, stage) -> None:
        """Rows row0 ... of the source into `tile`'s `stage`."""
        base = bb.add(self.first, bb.mul(bb.cvt(row0, "u64"), bb.imm(self.row_bytes, "u64")))
        for i in range(self.passes):
            row = bb.add(self.row, i * self.step) if i else self.row
            inside = bb.setp("lt", bb.add(row0, row), limit)
            src = bb.add(base, bb.imm(i * self.step * self.row_bytes, "u64")) if i else base
            guard = self.guard
            if (i + 1) * self.step > self.rows:  # the last pass, past the tile's end for some threads
                guard = bb.setp("lt", row, self.rows) if guard is None else bb.and_pred(guard, bb.setp("lt", row, self.rows))
            bb.tile_cp_async(tile, stage, row, self.col, src, bb.selp(16, 0, inside), 16, pred=guard)


MERGE_THREADS = 128


def merge_splits_name(splits: int, dim: int, dtype: str) -> str:
    return f"rung_attention_merge_{dtype}_d{dim}_z{splits}"


def merge_splits_kernel(splits: int, dim: int, dtype: str) -> KernelOp:
    """tile.merge_splits: one thread per output column pair of a row; it reads every split's row max and sum
    (m, l) and its O pair, and writes sum 2^(m - M) O / sum 2^(m - M) l. Parameters (partial, out, rows)."""
    kernel = KernelOp.get(merge_splits_name(splits, dim, dtype), ["u64", "u64", "u32"], MERGE_THREADS)
    b = PtxBuilder(kernel.body.block)
    partial, out, rows = kernel.body.block.args
    row, pair = divmod_by(b, b.add(b.mul(b.sreg("ctaid.x"), MERGE_THREADS), b.sreg("tid.x")), dim // 2)
    col = b.shl(pair, 1)
    inside = b.setp("lt", row, rows)
    width = b.imm(4 * (dim + 2), "u64")
    starts = [b.add(partial, b.mul(b.cvt(b.add(b.mul(rows, z), row), "u64"), width)) for z in range(splits)]
    stats = [b.ld("global", start, "f32", n=2, offset=4 * dim, pred=inside) for start in starts]
    top = b.fimm(-math.inf)
    for m, _ in stats:
        top = b.max(top, m)
    total, acc = b.fimm(0.0), [b.fimm(0.0)] * 2
    for start, (m, l) in zip(starts, stats):
        weight = b.ex2(b.sub(m, top))
        total = b.mad(weight, l, total)
        pair_values = b.ld("global", b.add(start, b.cvt(b.shl(col, 2), "u64")), "f32", n=2, pred=inside)
        acc = [b.mad(weight, v, a) for v, a in zip(pair_values, acc)]
    inverse = b.rcp(total)
    address = b.add(out, b.cvt(b.shl(b.add(b.mul(row, dim), col), 1), "u64"))
    b.st("global", address, [b.cvt_pack(b.mul(acc[1], inverse), b.mul(acc[0], inverse), dtype)], pred=inside)
    return kernel
