"""The epilogue of a GEMM: scales, bias and activation applied to pairs of accumulators as they are stored, and the split-K reduction kernel."""

from __future__ import annotations

from dialects.ptx import KernelOp
from dialects.tile import (
    REDUCE_THREADS,
    GemmConfig,
    reduce_param_kinds,
)
from lowering.ptx_builder import PtxBuilder


def scaled_accumulators(b: PtxBuilder, acc: list, acc_type: str, a_scales, scales, row0, col0, m, n, mi_count: int, ni_count: int) -> list:
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


def scale_row(b: PtxBuilder, cfg: GemmConfig, tile):
    """The first row of scales (group index) k-tile `tile` reads."""
    if not cfg.group:
        return b.imm(0)
    if cfg.group < cfg.bk:
        return b.mul(tile, cfg.bk // cfg.group)
    return b.shr(tile, (cfg.group // cfg.bk).bit_length() - 1)


class Epilogue:
    """Bias, activation, residual and the rounded store of C at `width` (2: (row, col), (row, col + 1) pairs;
    1: single elements) per column: bias loaded once per column, where first used, a pair stored as one 32-bit word
    when N is even, half by half when odd; a residual tensor of C's shape (`residual` add or mul, after the
    activation) combined with the rounded result, as the graph rounds the linear's output before it."""

    def __init__(self, b: PtxBuilder, dtype: str, activation: str, c_ptr, n, bias_ptr, cols, width: int = 2,
                 residual_ptr=None, residual: str = ""):
        self.b, self.dtype, self.activation, self.c_ptr, self.n, self.cols = b, dtype, activation, c_ptr, n, cols
        self.residual_ptr, self.residual = residual_ptr, residual
        if width == 2:
            self.n_even, self.n_odd = b.setp("eq", b.and_(n, 1), 0), b.setp("ne", b.and_(n, 1), 0)
        else:
            self.col_in = [b.setp("lt", col, n) for col in cols]
        self.bias_ptr, self.width, self._biases = bias_ptr, width, {}
        self.row_bytes = b.cvt(b.shl(n, 1), "u64")
        self._rows = {}

    def _address(self, row, col, base=None):
        base = self.c_ptr if base is None else base
        if (base, row) not in self._rows:
            self._rows[base, row] = self.b.add(base, self.b.mul(self.b.cvt(row, "u64"), self.row_bytes))
        return self.b.add(self._rows[base, row], self.b.cvt(self.b.shl(col, 1), "u64"))

    def _finish(self, v, i: int, j: int):
        """Value j of column i with its bias and activation."""
        return _activation(self.b, self.b.add(v, self._bias(i)[j]) if self.bias_ptr is not None else v, self.activation)

    def _bias(self, i: int) -> list:
        """Column i's biases as f32, loaded where first used (loaded for all columns up front, they spilled 128 x 256
        wgmma tiles); a pair as one 32-bit word where a residual makes N even (two 16-bit loads spill there)."""
        if i not in self._biases:
            b, col = self.b, self.cols[i]
            if self.residual and self.width == 2:
                word = b.ld("global", b.add(self.bias_ptr, b.cvt(b.shl(col, 1), "u64")), "b32", pred=b.setp("lt", b.add(col, 1), self.n))
                self._biases[i] = [b.cvt_widen(half, self.dtype) for half in b.unpack_halves(word)]
            else:
                self._biases[i] = _load_biases(b, self.bias_ptr, col, self.n, self.dtype, self.width)
        return self._biases[i]

    def _with_residual(self, v, row, col, inside):
        """v rounded and combined with the residual element at (row, col), in f32 (exact for a mul; an add
        rounds once more when stored)."""
        b = self.b
        r = b.cvt_widen(b.ld("global", self._address(row, col, self.residual_ptr), "b16", pred=inside), self.dtype)
        v = b.cvt_widen(b.cvt_half(v, self.dtype), self.dtype)
        return b.add(v, r) if self.residual == "add" else b.mul(v, r)

    def _with_residual_pair(self, pair, row, col, both):
        """The rounded pair combined with the residual's pair at (row, col), loaded as one 32-bit word (a residual
        epilogue takes even N only), in 16-bit arithmetic. Combined in f32 from two 16-bit loads, the pairs
        held twice the registers and spilled 128 x 256 wgmma tiles."""
        b = self.b
        word = b.ld("global", self._address(row, col, self.residual_ptr), "b32", pred=both)
        one, minus_zero = (0x3C003C00 if self.dtype == "f16" else 0x3F803F80), 0x80008000  # per half: 1.0 and -0.0
        return b.fma2(pair, one, word, self.dtype) if self.residual == "add" else b.fma2(pair, word, minus_zero, self.dtype)

    def store_one(self, row, row_in, i, v) -> None:
        """C[row, cols[i]] (width 1)."""
        b = self.b
        if not self.residual:
            b.st("global", self._address(row, self.cols[i]), [b.cvt_half(self._finish(v, i, 0), self.dtype)],
                 pred=b.and_pred(row_in, self.col_in[i]))
            return
        inside = b.and_pred(row_in, self.col_in[i])
        v = self._with_residual(self._finish(v, i, 0), row, self.cols[i], inside)
        b.st("global", self._address(row, self.cols[i]), [b.cvt_half(v, self.dtype)], pred=inside)

    def store(self, row, row_in, i, lo, hi) -> None:
        b, dtype, col = self.b, self.dtype, self.cols[i]
        pair = b.cvt_pack(self._finish(hi, i, 1), self._finish(lo, i, 0), dtype)
        addr = self._address(row, col)
        both = b.and_pred(row_in, b.setp("lt", b.add(col, 1), self.n))
        if self.residual:
            pair = self._with_residual_pair(pair, row, col, both)
        b.st("global", addr, [pair], pred=b.and_pred(both, self.n_even))
        # odd N: rows are only 2-byte aligned, so store the halves one by one (split from the pair: the
        # accumulators are read once, which wgmma kernels need to keep their wgmmas asynchronous)
        first = b.and_pred(b.and_pred(row_in, b.setp("lt", col, self.n)), self.n_odd)
        lo_half, hi_half = b.unpack_halves(pair)
        b.st("global", addr, [lo_half], pred=first)
        b.st("global", addr, [hi_half], offset=2, pred=b.and_pred(both, self.n_odd))


def sum_splits_name(split_k: int, dtype: str, bias: bool, activation: str, residual: str = "") -> str:
    return (f"rung_sum_splits_{dtype}_s{split_k}" + ("_bias" if bias else "") + ("" if activation == "none" else f"_{activation}")
            + (f"_res{residual}" if residual else ""))


def sum_splits_kernel(split_k: int, dtype: str, bias: bool, activation: str, residual: str = "", programmatic: bool = False) -> KernelOp:
    """Sums split_k partial results of a workspace [split_k, M, N rounded up to even], then
    applies the epilogue: one (row, column pair) per thread. Parameters (workspace, [bias,] [residual,] c, m, n).
    `programmatic` (sm_90): launched programmatically after the GEMM, it waits for the GEMM's
    grid (griddepcontrol.wait) before reading the workspace."""
    kernel = KernelOp.get(sum_splits_name(split_k, dtype, bias, activation, residual), list(reduce_param_kinds(bias, bool(residual))),
                          REDUCE_THREADS)
    b = PtxBuilder(kernel.body.block)
    if programmatic:
        b.griddep_wait()
    params = list(kernel.body.block.args)
    ws, m, n, c_ptr = params[0], params[-2], params[-1], params[-3]
    bias_ptr = params[1] if bias else None
    residual_ptr = params[1 + bias] if residual else None
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
    Epilogue(b, dtype, activation, c_ptr, n, bias_ptr, [col], residual_ptr=residual_ptr, residual=residual).store(row, row_in, 0, lo, hi)
    return kernel


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
