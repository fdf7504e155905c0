"""A low-precision weight's fragments: codes, scales and zero terms loaded from shared memory and decoded in registers (ir.packing's layout, lowering.ladder's decoders)."""

from __future__ import annotations

from xdsl.dialects.builtin import IntegerType

from dialects.tile import (
    TABLE_BYTES,
    TABLE_ROWS,
    GemmConfig,
)
from dialects.warp import SmemType
from ir.layout import Swizzle
from ir.packing import decoder
from lowering.ladder import emit_decode, looked_up
from lowering.ptx_builder import PtxBuilder


class WeightFragments:
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
