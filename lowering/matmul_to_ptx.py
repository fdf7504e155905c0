"""matmul-to-ptx: the tensor-core GEMM kernel C = act(A[M, K] @ B[N, K]^T + bias) in the ptx dialect.

A, B and C are row-major f16 or bf16; accumulation is f32 (mma.sync.m16n8k16). One thread block
computes a BM x BN tile of C with warps_m x warps_n warps; K advances in BK steps through a
`stages`-deep cp.async pipeline in shared memory. Shared tiles are row-major and swizzled
(`Swizzle(log2(BK/8), 4, 3)` on byte offsets: each 16-byte chunk of a row XOR-ed with row bits)
so that the 8 rows one ldmatrix reads fall into 8 distinct bank groups. Fragments follow
`ir.layout.MMA_M16N8K16_*`.

Rows and columns beyond M, N and K are zero-filled on load and masked on store. Global rows
are copied `copy_elems` halves at a time (16-byte cp.async for K % 8 == 0, 4-byte for even K,
single elements for odd K); A, B and C must be 16-byte aligned.
"""

from __future__ import annotations

from dialects.ptx import KernelOp
from dialects.tile import GemmConfig
from ir.layout import Swizzle
from lowering.ptx_builder import PtxBuilder


def _swizzled(b: PtxBuilder, sw: Swizzle, offset):
    """sw(offset) on a register: offset ^ ((offset >> shift) & (mask << base))."""
    mask = ((1 << sw.bits) - 1) << sw.base
    return b.xor(offset, b.and_(b.shr(offset, sw.shift), mask))


def gemm_kernel(cfg: GemmConfig) -> KernelOp:
    """The kernel; parameters (a, b, [bias,] c: u64 addresses; m, n, k: u32). Grid: (ceil(N/BN), ceil(M/BM))."""
    pointers = 4 if cfg.bias else 3
    kernel = KernelOp.get(cfg.name, ["u64"] * pointers + ["u32"] * 3, cfg.threads, cfg.shared_bytes)
    b = PtxBuilder(kernel.body.block)
    a_ptr, b_ptr, *bias_ptr, c_ptr, m, n, k = kernel.body.block.args
    sw, rb = cfg.swizzle, cfg.row_bytes
    elems, chunk_bytes = cfg.copy_elems, 2 * cfg.copy_elems
    cpr = cfg.bk // elems  # copies per row of a tile
    wm, wn = cfg.bm // cfg.warps_m, cfg.bn // cfg.warps_n
    mi_count, ni_count = wm // 16, wn // 8

    tid = b.sreg("tid.x")
    lane, warp = b.and_(tid, 31), b.shr(tid, 5)
    warp_m, warp_n = b.shr(warp, (cfg.warps_n).bit_length() - 1), b.and_(warp, cfg.warps_n - 1)
    m0 = b.mul(b.sreg("ctaid.y"), cfg.bm)
    n0 = b.mul(b.sreg("ctaid.x"), cfg.bn)
    smem = b.shared_base()
    a_smem, b_smem = smem, b.add(smem, cfg.stages * cfg.a_stage_bytes)
    k2 = b.cvt(b.shl(k, 1), "u64")  # bytes per row of A and B

    # --- copies: thread t moves chunk t % cpr (of `elems` halves) of rows t / cpr + i * (threads / cpr)
    copy_row, copy_chunk = b.shr(tid, cpr.bit_length() - 1), b.and_(tid, cpr - 1)
    copy_col_bytes = b.mul(copy_chunk, chunk_bytes)
    rows_per_pass = cfg.threads // cpr

    def copy_plan(rows: int, origin, limit, base_ptr):
        """Per pass: (global address of k = 0, in-bounds predicate, swizzled shared offset)."""
        plan = []
        for i in range(rows // rows_per_pass):
            tile_row = b.add(copy_row, i * rows_per_pass)
            row = b.add(origin, tile_row)
            gaddr = b.add(base_ptr, b.add(b.mul(b.cvt(row, "u64"), k2), b.cvt(copy_col_bytes, "u64")))
            plan.append((gaddr, b.setp("lt", row, limit), _swizzled(b, sw, b.add(b.mul(tile_row, rb), copy_col_bytes))))
        return plan

    a_plan = copy_plan(cfg.bm, m0, m, a_ptr)
    b_plan = copy_plan(cfg.bn, n0, n, b_ptr)
    copy_k = b.mul(copy_chunk, elems)  # first k of this thread's chunk within a tile

    def issue(bb: PtxBuilder, tile, stage):
        """Copy k-tile `tile` into pipeline stage `stage`, zeros outside M, N, K: cp.async of 16 or
        4 bytes, or (odd K: rows only 2-byte aligned) a predicated load and a shared store."""
        k0 = bb.mul(tile, cfg.bk)
        k_in = bb.setp("lt", bb.add(k0, copy_k), k)
        k_bytes = bb.cvt(bb.shl(k0, 1), "u64")
        for plan, base, stage_bytes in ((a_plan, a_smem, cfg.a_stage_bytes), (b_plan, b_smem, cfg.b_stage_bytes)):
            stage_base = bb.add(base, bb.mul(stage, stage_bytes))
            for gaddr, row_in, soff in plan:
                inside = bb.and_pred(row_in, k_in)
                dst, src = bb.add(stage_base, soff), bb.add(gaddr, k_bytes)
                if elems > 1:
                    bb.cp_async(dst, src, bb.selp(chunk_bytes, 0, inside), chunk_bytes)
                else:
                    value = bb.selp(bb.ld("global", src, "b16", pred=inside), bb.imm(0, "b16"), inside)
                    bb.st("shared", dst, [value])
        bb.commit()

    # --- ldmatrix addresses per k16 step (the swizzle depends on the chunk, so one per step)
    lane16, lane8 = b.and_(lane, 15), b.and_(lane, 7)
    a_row = b.add(b.mul(warp_m, wm), lane16)
    b_row = b.add(b.add(b.mul(warp_n, wn), b.shl(b.shr(lane, 4), 3)), lane8)
    a_ld, b_ld = [], []
    for kk in range(cfg.bk // 16):
        a_chunk = b.add(b.shr(lane, 4), 2 * kk)
        b_chunk = b.add(b.and_(b.shr(lane, 3), 1), 2 * kk)
        a_ld.append(_swizzled(b, sw, b.add(b.mul(a_row, rb), b.shl(a_chunk, 4))))
        b_ld.append(_swizzled(b, sw, b.add(b.mul(b_row, rb), b.shl(b_chunk, 4))))

    # --- prologue: the first stages - 1 tiles in flight
    for s in range(cfg.stages - 1):
        issue(b, b.imm(s), b.imm(s))

    # --- main loop over k-tiles; carried: accumulators, read stage, write stage (as stage indices)
    tiles = b.shr(b.add(k, cfg.bk - 1), cfg.bk.bit_length() - 1)
    zero = b.imm(0, "f32")
    inits = [zero] * (mi_count * ni_count * 4) + [b.imm(0), b.imm(cfg.stages - 1)]
    loop, body, kt, carried = b.for_(0, tiles, 1, inits)
    acc, read_stage, write_stage = carried[:-2], carried[-2], carried[-1]

    body.wait(cfg.stages - 2)
    body.barrier()
    issue(body, body.add(kt, cfg.stages - 1), write_stage)
    a_stage_off = body.mul(read_stage, cfg.a_stage_bytes)
    b_stage_off = body.mul(read_stage, cfg.b_stage_bytes)
    acc = list(acc)
    for kk in range(cfg.bk // 16):
        a_base = body.add(body.add(a_smem, a_stage_off), a_ld[kk])
        b_base = body.add(body.add(b_smem, b_stage_off), b_ld[kk])
        a_frags = [body.ldmatrix(body.add(a_base, mi * 16 * rb)) for mi in range(mi_count)]
        b_frags = []
        for nj in range(ni_count // 2):
            r0, r1, r2, r3 = body.ldmatrix(body.add(b_base, nj * 16 * rb))
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
    n_even = b.setp("eq", b.and_(n, 1), 0)
    row0 = b.add(b.add(m0, b.mul(warp_m, wm)), group)
    col0 = b.add(b.add(n0, b.mul(warp_n, wn)), b.shl(tig, 1))
    biases = [_load_bias_pair(b, bias_ptr[0], b.add(col0, ni * 8), n, cfg.dtype) for ni in range(ni_count)] if cfg.bias else None
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
                odd = b.setp("ne", b.and_(n, 1), 0)
                first = b.and_pred(b.and_pred(row_in, b.setp("lt", col, n)), odd)
                b.st("global", addr, [b.cvt_half(lo, cfg.dtype)], pred=first)
                b.st("global", addr, [b.cvt_half(hi, cfg.dtype)], offset=2, pred=b.and_pred(both, odd))
    return kernel



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
