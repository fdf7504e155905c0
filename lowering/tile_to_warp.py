"""tile-to-warp: each tile.matmul becomes a ptx.launch of a generated kernel (one per schedule).

The kernel computes C = act(A @ B^T + bias) per lane: ptx ops for arithmetic, cp.async groups,
barriers and mma.sync, and warp ops that address the shared tiles by (stage, row, column);
`smem-swizzle` then picks the tiles' layouts and `warp-to-ptx` turns coordinates into addresses.

A [M, K], B ([N, K], or [K, N] with `b_kn`) and C [M, N] are row-major f16 or bf16;
accumulation is f32 (mma.sync.m16n8k16). One thread block computes a BM x BN tile of C with
warps_m x warps_n warps; K advances in BK steps through a `stages`-deep cp.async pipeline in
shared memory; a [K, N] B is read with ldmatrix.trans. Fragments follow
`ir.layout.MMA_M16N8K16_*`.

Rows and columns beyond M, N and K are zero-filled on load and masked on store. Global rows
are copied 8, 2 or 1 halves at a time (16-byte cp.async when the row length is a multiple of
8, 4-byte when it is even, single elements when it is odd); A, B and C must be 16-byte aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects.ptx import KernelOp, LaunchOp
from dialects.tile import GemmConfig, MatmulOp, SharedTile
from dialects.warp import SmemType
from lowering.ladder import IntDecode, emit_decode
from lowering.ptx_builder import PtxBuilder


class _TileCopy:
    """Copies of one operand's k-tiles from global into its shared tile: thread t moves copy
    t % (cols / elems) of tile rows t / (cols / elems) + i * rows_per_pass, zeros outside the matrix.

    `k_in_rows` says whether K runs along the tile's rows (B stored [K, N]) or its columns."""

    def __init__(self, b: PtxBuilder, tid, tile: SharedTile, threads: int, ptr, row_bytes_global, row0, row_limit,
                 col0, col_limit, k_in_rows: bool):
        self.tile, self.k_in_rows, self.row_limit, self.col_limit = tile, k_in_rows, row_limit, col_limit
        per_row = tile.cols // tile.elems
        self.copy_bytes = 2 * tile.elems
        copy_row, copy_col = b.shr(tid, per_row.bit_length() - 1), b.mul(b.and_(tid, per_row - 1), tile.elems)
        rows_per_pass = threads // per_row
        self.col = b.add(col0, copy_col)  # the matrix column this thread copies (at k = 0 if K runs along columns)
        self.tile_col = copy_col
        self.passes = []  # (matrix row, global address at k = 0, tile row)
        for i in range(tile.rows // rows_per_pass):
            tile_row = b.add(copy_row, i * rows_per_pass)
            row = b.add(row0, tile_row)
            gaddr = b.add(ptr, b.add(b.mul(b.cvt(row, "u64"), row_bytes_global), b.cvt(b.shl(self.col, 1), "u64")))
            self.passes.append((row, gaddr, tile_row))
        self.row_bytes_global = row_bytes_global
        # the bound that does not move with k
        self.fixed = [b.setp("lt", self.col, col_limit)] * len(self.passes) if k_in_rows else \
            [b.setp("lt", row, row_limit) for row, _, _ in self.passes]

    def issue(self, bb: PtxBuilder, k0, buf, stage) -> None:
        if self.k_in_rows:
            shift = bb.mul(bb.cvt(k0, "u64"), self.row_bytes_global)
            moving = [bb.setp("lt", bb.add(row, k0), self.row_limit) for row, _, _ in self.passes]
        else:
            shift = bb.cvt(bb.shl(k0, 1), "u64")
            moving = [bb.setp("lt", bb.add(self.col, k0), self.col_limit)] * len(self.passes)
        for (_, gaddr, tile_row), fixed, moves in zip(self.passes, self.fixed, moving):
            inside = bb.and_pred(fixed, moves)
            src = bb.add(gaddr, shift)
            if self.tile.elems > 1:
                bb.tile_cp_async(buf, stage, tile_row, self.tile_col, src, bb.selp(self.copy_bytes, 0, inside), self.copy_bytes)
            else:  # rows only 2-byte aligned: a predicated load and a shared store
                value = bb.selp(bb.ld("global", src, "b16", pred=inside), bb.imm(0, "b16"), inside)
                bb.tile_store(buf, stage, tile_row, self.tile_col, value)


def gemm_kernel(cfg: GemmConfig) -> KernelOp:
    """The kernel; parameters (a, b, [bias,] c: u64 addresses; m, n, k: u32). Grid: (ceil(N/BN), ceil(M/BM))."""
    kernel = KernelOp.get(cfg.name, list(cfg.param_kinds), cfg.threads, cfg.shared_bytes)
    b = PtxBuilder(kernel.body.block)
    a_ptr, b_ptr, *extra, c_ptr, m, n, k = kernel.body.block.args
    scales_ptr = extra[0] if cfg.weight else None
    bias_ptr = extra[-1:] if cfg.bias else []
    at, bt = cfg.a_tile, cfg.b_tile
    wm, wn = cfg.bm // cfg.warps_m, cfg.bn // cfg.warps_n
    mi_count, ni_count = wm // 16, wn // 8

    tid = b.sreg("tid.x")
    lane, warp = b.and_(tid, 31), b.shr(tid, 5)
    warp_m, warp_n = b.shr(warp, (cfg.warps_n).bit_length() - 1), b.and_(warp, cfg.warps_n - 1)
    m0 = b.mul(b.sreg("ctaid.y"), cfg.bm)
    n0 = b.mul(b.sreg("ctaid.x"), cfg.bn)
    elem = _element(cfg.dtype)
    a_buf = b.alloc_shared(SmemType.get(cfg.stages, at.rows, at.cols, elem), 0)
    b_buf = b.alloc_shared(SmemType.get(cfg.stages, bt.rows, bt.cols, elem), cfg.stages * at.bytes)
    zero = b.imm(0)

    a_copy = _TileCopy(b, tid, at, cfg.threads, a_ptr, b.cvt(b.shl(k, 1), "u64"), m0, m, zero, k, k_in_rows=False)
    if cfg.weight:  # rows of K * bits / 16 halves of codes in mma order
        k_halves = b.shr(b.mul(k, cfg.weight_bits), 4)
        b_copy = _TileCopy(b, tid, bt, cfg.threads, b_ptr, b.cvt(b.shl(k_halves, 1), "u64"), n0, n, zero, k_halves, k_in_rows=False)
    elif cfg.b_kn:
        b_copy = _TileCopy(b, tid, bt, cfg.threads, b_ptr, b.cvt(b.shl(n, 1), "u64"), zero, k, n0, n, k_in_rows=True)
    else:
        b_copy = _TileCopy(b, tid, bt, cfg.threads, b_ptr, b.cvt(b.shl(k, 1), "u64"), n0, n, zero, k, k_in_rows=False)

    def issue(bb: PtxBuilder, tile, stage):
        """Copy k-tile `tile` into pipeline stage `stage`."""
        a_copy.issue(bb, bb.mul(tile, cfg.bk), a_buf, stage)
        b_copy.issue(bb, bb.mul(tile, bt.cols if cfg.weight else cfg.bk), b_buf, stage)
        bb.commit()

    # --- the (row, col) of the tile each lane gives ldmatrix, per k16 step and fragment
    lane16, lane8, lane_hi = b.and_(lane, 15), b.and_(lane, 7), b.shr(lane, 4)
    lane_mat = b.and_(b.shr(lane, 3), 1)  # which of a pair of 8x8 matrices this lane addresses
    a_ld = [[(b.add(b.mul(warp_m, wm), b.add(lane16, 16 * mi)), b.shl(b.add(lane_hi, 2 * kk), 3))
             for mi in range(mi_count)] for kk in range(cfg.bk // 16)]
    if cfg.b_kn:  # B tile is [BK, BN]: rows are k, read transposed
        b_ld = [[(b.add(b.shl(lane_mat, 3), b.add(lane8, 16 * kk)), b.add(b.mul(warp_n, wn), b.add(b.shl(lane_hi, 3), 16 * nj)))
                 for nj in range(ni_count // 2)] for kk in range(cfg.bk // 16)]
    else:  # B tile is [BN, BK]: rows are n
        b_ld = [[(b.add(b.mul(warp_n, wn), b.add(b.add(b.shl(lane_hi, 3), lane8), 16 * nj)), b.shl(b.add(lane_mat, 2 * kk), 3))
                 for nj in range(ni_count // 2)] for kk in range(cfg.bk // 16)]

    weights = _WeightFragments(b, cfg, lane, warp_n, n0, n, k, scales_ptr) if cfg.weight else None

    # --- prologue: the first stages - 1 tiles in flight
    for s in range(cfg.stages - 1):
        issue(b, b.imm(s), b.imm(s))

    # --- main loop over k-tiles; carried: accumulators, read stage, write stage (as stage indices)
    tiles = b.shr(b.add(k, cfg.bk - 1), cfg.bk.bit_length() - 1)
    inits = [b.fimm(0.0)] * (mi_count * ni_count * 4) + [b.imm(0), b.imm(cfg.stages - 1)]
    loop, body, kt, carried = b.for_(0, tiles, 1, inits)
    acc, read_stage, write_stage = carried[:-2], carried[-2], carried[-1]

    body.wait(cfg.stages - 2)
    body.barrier()
    issue(body, body.add(kt, cfg.stages - 1), write_stage)
    acc = list(acc)
    decoded = weights.fragments(body, b_buf, read_stage, kt) if weights else None
    for kk in range(cfg.bk // 16):
        a_frags = [body.tile_ldmatrix(a_buf, read_stage, *a_ld[kk][mi]) for mi in range(mi_count)]
        b_frags = decoded[kk] if decoded else []
        for nj in range(0 if decoded else ni_count // 2):
            r0, r1, r2, r3 = body.tile_ldmatrix(b_buf, read_stage, *b_ld[kk][nj], trans=cfg.b_kn)
            b_frags += [(r0, r1), (r2, r3)]
        for mi in range(mi_count):
            for ni in range(ni_count):
                i = (mi * ni_count + ni) * 4
                acc[i:i + 4] = body.mma(a_frags[mi], b_frags[ni], acc[i:i + 4], cfg.dtype)

    def next_stage(s):
        nxt = body.add(s, 1)
        return body.selp(0, nxt, body.setp("eq", nxt, cfg.stages))

    body.yield_([*acc, next_stage(read_stage), next_stage(write_stage)])
    b.wait(0)
    acc = list(loop.results)[:-2]

    # --- epilogue: bias and activation in f32, round to the output type, store inside M x N
    group, tig = b.shr(lane, 2), b.and_(lane, 3)
    n_even, n_odd = b.setp("eq", b.and_(n, 1), 0), b.setp("ne", b.and_(n, 1), 0)
    row0 = b.add(b.add(m0, b.mul(warp_m, wm)), group)
    col0 = b.add(b.add(n0, b.mul(warp_n, wn)), b.shl(tig, 1))
    biases = [_load_bias_pair(b, bias_ptr[0], b.add(col0, ni * 8), n, cfg.dtype) for ni in range(ni_count)] if bias_ptr else None
    for mi in range(mi_count):
        for half in range(2):
            row = b.add(row0, mi * 16 + half * 8)
            row_in = b.setp("lt", row, m)
            row_addr = b.add(c_ptr, b.mul(b.cvt(row, "u64"), b.cvt(b.shl(n, 1), "u64")))
            for ni in range(ni_count):
                col = b.add(col0, ni * 8)
                lo, hi = acc[(mi * ni_count + ni) * 4 + 2 * half: (mi * ni_count + ni) * 4 + 2 * half + 2]
                if biases:
                    lo, hi = b.add(lo, biases[ni][0]), b.add(hi, biases[ni][1])
                lo, hi = _activation(b, lo, cfg.activation), _activation(b, hi, cfg.activation)
                addr = b.add(row_addr, b.cvt(b.shl(col, 1), "u64"))
                both = b.and_pred(row_in, b.setp("lt", b.add(col, 1), n))
                b.st("global", addr, [b.cvt_pack(hi, lo, cfg.dtype)], pred=b.and_pred(both, n_even))
                # odd N: rows are only 2-byte aligned, so store the halves one by one
                first = b.and_pred(b.and_pred(row_in, b.setp("lt", col, n)), n_odd)
                b.st("global", addr, [b.cvt_half(lo, cfg.dtype)], pred=first)
                b.st("global", addr, [b.cvt_half(hi, cfg.dtype)], offset=2, pred=b.and_pred(both, n_odd))
    return kernel


class _WeightFragments:
    """B fragments decoded in registers from integer codes in mma order (lowering.ladder) and
    scaled per group: lane (g, t) reads one 32-bit word per n8 tile and k-block of its row."""

    def __init__(self, b: PtxBuilder, cfg: GemmConfig, lane, warp_n, n0, n, k, scales_ptr):
        self.cfg, self.code = cfg, IntDecode.of(cfg.weight)
        self.steps = self.code.per_word // 4  # k16 steps per word
        wn = cfg.bn // cfg.warps_n
        group_id, tig = b.shr(lane, 2), b.and_(lane, 3)
        self.rows = [b.add(b.mul(warp_n, wn), b.add(group_id, 8 * ni)) for ni in range(wn // 8)]  # tile rows
        blocks = cfg.bk // (16 * self.steps)
        self.cols = [b.shl(b.add(tig, 4 * blk), 1) for blk in range(blocks)]  # word t of block blk, in halves
        self.n_rows = [b.add(n0, r) for r in self.rows]
        self.inside = [b.setp("lt", r, n) for r in self.n_rows]
        self.scales_ptr, self.k = scales_ptr, k
        shift = (cfg.group or 1).bit_length() - 1
        self.groups_per_row = b.shr(k, shift) if cfg.group else b.imm(1)

    def fragments(self, body: PtxBuilder, buf, stage, kt) -> list[list[tuple]]:
        """[k16 step][n8 tile] -> the two B registers, for k-tile kt."""
        cfg = self.cfg
        group = body.shr(body.mul(kt, cfg.bk), cfg.group.bit_length() - 1) if cfg.group else body.imm(0)  # this k-tile's
        scales = []
        for n_row, inside in zip(self.n_rows, self.inside):
            addr = body.add(self.scales_ptr, body.cvt(body.shl(body.add(body.mul(n_row, self.groups_per_row), group), 1), "u64"))
            s = body.selp(body.cvt_widen(body.ld("global", addr, "b16", pred=inside), cfg.dtype), body.fimm(0.0), inside)
            scales.append(body.cvt_pack(s, s, cfg.dtype))
        zero = body.imm(0, "b32")
        out = [[None] * len(self.rows) for _ in range(cfg.bk // 16)]
        for blk, col in enumerate(self.cols):
            for ni, (row, s2) in enumerate(zip(self.rows, scales)):
                regs = [body.fma2(r, s2, zero, cfg.dtype) for r in emit_decode(body, body.tile_load(buf, stage, row, col), self.code, cfg.dtype)]
                for step in range(self.steps):
                    out[blk * self.steps + step][ni] = (regs[2 * step], regs[2 * step + 1])
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


def _element(dtype: str):
    from xdsl.dialects.builtin import bf16, f16

    return f16 if dtype == "f16" else bf16


@dataclass(frozen=True)
class TileToWarp(ModulePass):
    """Generate the warp-level kernel of each tile.matmul schedule and launch it in place of the op."""

    name = "tile-to-warp"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        kernels = {k.sym_name.data for k in op.ops if isinstance(k, KernelOp)}
        for mm in [o for o in op.walk() if isinstance(o, MatmulOp)]:
            cfg = mm.config
            if cfg.name not in kernels:
                op.body.block.add_op(gemm_kernel(cfg))
                kernels.add(cfg.name)
            (m, k), n = mm.x.type.get_shape(), mm.result.type.get_shape()[1]
            Rewriter.replace_op(mm, LaunchOp.get(cfg.name, list(mm.operands), mm.result.type, cfg.grid(m, n), [m, n, k]))
