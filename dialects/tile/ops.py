"""Whole-tensor ops with their schedule explicit: tile.matmul, Ladder's offline weight transform tile.pack_weight, and
tile.write_rows (a KV cache's update in place)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import (
    IntegerAttr,
    StringAttr,
    TensorType,
    i32,
    i64,
)
from xdsl.ir import (
    SSAValue,
)
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    opt_result_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from dialects.lp import QuantAttr, SparseAttr
from ir.errors import RungError
from dialects.tile.schedule import ACTIVATIONS, GemmConfig, GemmSchedule, combine_residual, copy_elems, dense_tile_banks


@irdl_op_definition
class MatmulOp(IRDLOperation):
    """y = act(x @ w^T + bias) on tensor cores: x [M, K], w [N, K] (or, with `b_kn`, y = act(x @ w
    + bias) with w [K, N]), optional bias [N], f16 or bf16, f32 accumulation and epilogue, one
    rounding at the end; `activation` is none, relu or silu. With `weight`, w is a low-precision
    weight of that format as tile.pack_weight lays it out: codes [N, K * bits / 32] (i32),
    scales and zeros [K / group, N16]. With `a8` (s8 or e4m3), x [M, K] and w [N, K] are 8-bit
    with f32 x_scales [M] and scales [N], and the result is f16 or bf16. With `sparse`, w is an unstructured-sparse
    weight as tile.pack_sparse lays it out (ir.sparse.kernel_tiles: i32 [N rounded up to BN, k-tiles * slots / BN]),
    and N is the result's. `split_k` > 1 splits K into
    partial sums; `raster` orders the blocks in bands of M-tiles; `prefetch` double-buffers
    fragments in registers; `scale_partials` scales each group's f32 partial sums (w = q * s
    unrounded) instead of each decoded weight (w = q * s + z rounded to the activation type);
    `shared_table` decodes a table format's codes (nf4) by lookups in shared memory; `wgmma`
    multiplies by warpgroups on sm_90a. dialects.tile.GemmConfig is the schedule these
    properties spell out."""

    name = "tile.matmul"
    x = operand_def(TensorType)
    w = operand_def(TensorType)
    x_scales = opt_operand_def(TensorType)
    scales = opt_operand_def(TensorType)
    zeros = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    residual = opt_operand_def(TensorType)
    result = result_def(TensorType)
    schedule = prop_def(GemmSchedule)
    weight = opt_prop_def(QuantAttr)
    traits = traits_def(Pure())
    assembly_format = ("$x `,` $w (`x_scales` $x_scales^)? (`scales` $scales^)? (`zeros` $zeros^)? (`bias` $bias^)? (`residual` $residual^)? "
                       "attr-dict `:` type($x) `,` type($w) (`x_scales` type($x_scales)^)? (`scales` type($scales)^)? (`zeros` type($zeros)^)? "
                       "(`bias` type($bias)^)? (`residual` type($residual)^)? `->` type($result)")
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())

    @staticmethod
    def get(x: SSAValue, w: SSAValue, bias: SSAValue | None, cfg: GemmConfig, scales: SSAValue | None = None,
            zeros: SSAValue | None = None, weight: QuantAttr | None = None, x_scales: SSAValue | None = None,
            result_element=None, residual: SSAValue | None = None, n: int | None = None) -> "MatmulOp":
        """`result_element`: the output's element type when x is 8-bit (cfg.a8); `residual`: the [M, N] tensor the
        epilogue adds or multiplies by (cfg.residual); `n`: N where w's rows do not say it (cfg.sparse)."""
        m, n = x.type.get_shape()[0], n or w.type.get_shape()[1 if cfg.b_kn else 0]
        props = {"schedule": GemmSchedule(cfg), **({"weight": weight} if weight is not None else {})}
        operands = [x, w, [x_scales] if x_scales else [], [scales] if scales else [], [zeros] if zeros else [], [bias] if bias else [],
                    [residual] if residual else []]
        out = TensorType(result_element or x.type.element_type, [m, n])
        return MatmulOp.build(operands=operands, result_types=[out], properties=props)

    @property
    def operand_names(self) -> list[str]:
        """The kernel parameter (GemmConfig.param_names, and "bias") each operand becomes, in order."""
        named = (("a", self.x), ("b", self.w), ("a_scales", self.x_scales), ("scales", self.scales), ("zeros", self.zeros), ("bias", self.bias),
                 ("residual", self.residual))
        return [name for name, v in named if v is not None]

    @property
    def config(self) -> GemmConfig:
        return self.schedule.data

    def verify_(self):
        x, w, cfg = self.x.type, self.w.type, self.config
        if cfg.a8:
            n = self._verify_eight_bit()
        elif str(x.element_type) not in ("f16", "bf16") or len(x.get_shape()) != 2:
            raise VerifyException(f"tile.matmul takes x [M, K] of f16 or bf16, got {x}")
        elif self.weight is not None:
            n = self._verify_packed_weight()
        elif cfg.sparse:
            n = self.result.type.get_shape()[1]
            k_tiles = -(-x.get_shape()[1] // cfg.bk)
            want = TensorType(i32, [-(-n // cfg.bn) * cfg.bn, k_tiles * cfg.sparse // cfg.bn])
            if w != want or x.element_type != self.result.type.element_type:
                raise VerifyException(f"a sparse weight of {cfg.sparse} slots a {cfg.bn}x{cfg.bk} tile is {want} (tile.pack_sparse), got {w}")
        else:
            k_dim = 0 if cfg.b_kn else 1
            if x.element_type != w.element_type or len(w.get_shape()) != 2 or x.get_shape()[1] != w.get_shape()[k_dim]:
                raise VerifyException(f"tile.matmul needs w {'[K, N]' if cfg.b_kn else '[N, K]'} of x's type, got {x} and {w}")
            if self.scales is not None or self.zeros is not None:
                raise VerifyException("scales and zeros belong to a low-precision weight: set `weight`")
            n = w.get_shape()[1 - k_dim]
        out = self.result.type.element_type
        want = TensorType(out, [x.get_shape()[0], n])
        if self.x_scales is not None and not cfg.a8:
            raise VerifyException("x_scales belong to 8-bit operands: set the schedule's `a8`")
        if self.bias is not None and self.bias.type != TensorType(out, [n]):
            raise VerifyException(f"bias must be tensor<{n}x{out}>, got {self.bias.type}")
        if self.result.type != want:
            raise VerifyException(f"result type must be {want}, got {self.result.type}")
        if (self.residual is not None) != bool(cfg.residual) or (self.residual is not None and self.residual.type != want):
            raise VerifyException(f"a schedule's residual ({cfg.residual or 'none'}) takes a {want} operand, got "
                                  f"{self.residual.type if self.residual is not None else 'none'}")
        if cfg.residual and n % 2:
            raise VerifyException(f"a residual epilogue reads its tensor's pairs as 32-bit words: N must be even, got {n}")
        k = x.get_shape()[1]
        weight = GemmConfig.weight_fields(self.weight.format) if self.weight is not None else {"weight": ""}
        want = {"dtype": str(out), "bias": self.bias is not None, "copy_elems": 8 if cfg.a8 else copy_elems(k),
                "b_copy_elems": copy_elems(n) if cfg.b_kn else 8, **weight}
        for name, value in want.items():
            if getattr(cfg, name) != value:
                raise VerifyException(f"the schedule's {name} is {getattr(cfg, name)!r}, the operands need {value!r}")

    def _verify_eight_bit(self) -> int:
        """x [M, K] and w [N, K] of the 8-bit type, x_scales [M] and scales [N] of f32, K a multiple of 16."""
        from xdsl.dialects.builtin import Float8E4M3FNType, f32, i8

        x, w = self.x.type, self.w.type
        a8 = self.config.a8
        elem = {"s8": i8, "e4m3": Float8E4M3FNType()}.get(a8)
        if elem is None or x.element_type != elem or w.element_type != elem or len(x.get_shape()) != 2 or len(w.get_shape()) != 2:
            raise VerifyException(f"8-bit operands {a8} need x [M, K] and w [N, K] of {elem}, got {x} and {w}")
        (m, k), (n, k2) = x.get_shape(), w.get_shape()
        if k != k2 or k % 16:
            raise VerifyException(f"x and w must share K, a multiple of 16 (16-byte rows), got {k} and {k2}")
        if self.x_scales is None or self.scales is None or self.x_scales.type != TensorType(f32, [m]) or self.scales.type != TensorType(f32, [n]):
            raise VerifyException(f"8-bit operands need x_scales tensor<{m}xf32> and scales tensor<{n}xf32>")
        if str(self.result.type.element_type) not in ("f16", "bf16"):
            raise VerifyException(f"the result of 8-bit operands is f16 or bf16, got {self.result.type.element_type}")
        return n

    def _verify_packed_weight(self) -> int:
        fmt = self.weight.format
        x = self.x.type
        n, k = self.w.type.get_shape()[0], x.get_shape()[1]
        want = packed_types(fmt, str(x.element_type), n, k)
        got = [self.w.type, self.scales.type if self.scales else None, self.zeros.type if self.zeros else None]
        for what, t, g in zip(("codes", "scales", "zeros"), want, got):
            if t != g:
                raise VerifyException(f"a {fmt.element} weight's packed {what} must be {t or 'absent'}, got {g or 'none'}")
        return n

    def _dense_weight(self, w, scales, zeros):
        """w as [N, K] values of the activation dtype (a packed weight decoded as the kernel decodes it;
        8-bit operands times their per-row scale)."""
        if self.config.a8:
            return np.asarray(w, np.float64) * np.asarray(scales, np.float64)[:, None]
        if self.config.sparse:
            from ir.sparse import kernel_dense

            cfg = self.config
            return kernel_dense(w, self.result.type.get_shape()[1], self.x.type.get_shape()[1], cfg.bn, cfg.bk, cfg.dtype)
        if self.weight is None:
            return w.T if self.config.b_kn else w
        from ir.packing import PackedWeight, unpack_weight

        cfg = self.config
        packed = PackedWeight(np.asarray(w).view(np.uint32), scale_bits(scales, cfg.dtype), scale_bits(zeros, cfg.dtype) if zeros is not None else None)
        return unpack_weight(packed, cfg.weight, cfg.group, cfg.scale == "e8m0", cfg.dtype, self.x.type.get_shape()[1])

    def execute(self, x, w, *rest):
        cfg = self.config
        rest = list(rest)
        x_scales = rest.pop(0) if self.x_scales is not None else None
        scales = rest.pop(0) if self.scales is not None else None
        zeros = rest.pop(0) if self.zeros is not None else None
        bias = rest.pop(0) if self.bias is not None else None
        residual = rest.pop(0) if self.residual is not None else None
        if cfg.scale_partials:  # the codes' values, and each group's partial sums scaled (as the kernel does)
            from ir.packing import (
                code_chunk_bytes,
                code_rows,
                decode_values,
                group_scales,
            )

            k = x.shape[1]
            s = group_scales(scale_bits(scales, cfg.dtype)[:, :w.shape[0]], cfg.scale == "e8m0", cfg.dtype, rounded=False)
            w = decode_values(code_rows(np.asarray(w).view(np.uint32), code_chunk_bytes(cfg.weight_bits)), cfg.weight, cfg.dtype, k)
        else:
            w = self._dense_weight(w, scales, zeros)  # [N, K]
        if x_scales is not None:
            x = np.asarray(x, np.float64) * np.asarray(x_scales, np.float64)[:, None]
        m, k = x.shape
        n = w.shape[0]
        per_split = -(-k // cfg.bk // cfg.split_k) * cfg.bk
        y = np.zeros((m, n), np.float32)
        for m0 in range(0, m, cfg.bm):  # one thread block per output tile and K split, K in BK steps
            for n0 in range(0, n, cfg.bn):
                for s0 in range(0, k, per_split):
                    acc = np.zeros((min(cfg.bm, m - m0), min(cfg.bn, n - n0)), np.float32)
                    for k0 in range(s0, min(k, s0 + per_split), cfg.bk):
                        a = x[m0:m0 + cfg.bm, k0:k0 + cfg.bk].astype(np.float32)
                        b = w[n0:n0 + cfg.bn, k0:k0 + cfg.bk].astype(np.float32)
                        if cfg.scale_partials:
                            rows = s[k0 // cfg.group:][:cfg.scale_rows] if cfg.group else s[:1]
                            acc = add_scaled_partials(acc, a, b, rows[:, n0:n0 + cfg.bn], cfg.scale_span)
                        else:
                            acc += a @ b.T
                    y[m0:m0 + cfg.bm, n0:n0 + cfg.bn] += acc
        if bias is not None:
            y += bias.astype(np.float32)
        y = ACTIVATIONS[cfg.activation](y)
        return y if residual is None else combine_residual(cfg.residual, y, residual, self.result.type.element_type)


def scale_bits(x, dtype: str) -> np.ndarray:
    """A packed scale tensor's raw bits (its values arrive widened to f32): 16-bit patterns of
    `dtype`, or e8m0 codes as they are."""
    x = np.asarray(x)
    if x.dtype.itemsize == 2:
        return x.view(np.uint16)
    if x.dtype.kind == "f":
        return x.astype(np.float16 if dtype == "f16" else ml_dtypes.bfloat16).view(np.uint16)
    return x.astype(np.uint8)


def packed_types(fmt, dtype: str, n: int, k: int) -> list:
    """The tensor types of a weight [N, K] of format `fmt` packed for `dtype` activations:
    codes, scales, zeros (None when the format has none)."""
    from xdsl.dialects.builtin import IntegerType, Signedness, bf16, f16, i32

    from ir.packing import N_ALIGN, decoder

    act = f16 if dtype == "f16" else bf16
    groups = k // (fmt.group or k)
    n16 = -(-n // N_ALIGN) * N_ALIGN
    scale = IntegerType(8, Signedness.UNSIGNED) if fmt.scale == "e8m0" else act
    codes = TensorType(i32, [n, k * decoder(fmt.element).bits // 32])
    return [codes, TensorType(scale, [groups, n16]), TensorType(act, [groups, n16]) if fmt.zero != "none" else None]


@irdl_op_definition
class PackWeightOp(IRDLOperation):
    """Ladder's offline transform of a quantized weight (its element values, scales and zeros as
    graph.qlinear holds them) into what a tensor-core kernel with `dtype` activations reads:
    codes in mma order stored in 16-row tiles, and scales and zero terms [K / group, N16]
    (ir.packing.pack_weight). It depends on the weight alone, so it runs once per weight, not per call."""

    name = "tile.pack_weight"
    qweight = operand_def(TensorType)
    scales = operand_def(TensorType)
    zeros = opt_operand_def(TensorType)
    codes = result_def(TensorType)
    packed_scales = result_def(TensorType)
    packed_zeros = opt_result_def(TensorType)
    format = prop_def(QuantAttr)
    dtype = prop_def(StringAttr)
    traits = traits_def(Pure())
    assembly_format = ("$qweight `,` $scales (`zeros` $zeros^)? attr-dict `:` type($qweight) `,` type($scales) "
                       "(`zeros` type($zeros)^)? `->` type($codes) `,` type($packed_scales) (`,` type($packed_zeros)^)?")
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(qweight: SSAValue, scales: SSAValue, zeros: SSAValue | None, fmt: QuantAttr, dtype: str) -> "PackWeightOp":
        n, k = qweight.type.get_shape()
        types = packed_types(fmt.format, dtype, n, k)
        return PackWeightOp.build(operands=[qweight, scales, [zeros] if zeros else []], result_types=[types[0], types[1], types[2:] if types[2] else []],
                                  properties={"format": fmt, "dtype": StringAttr(dtype)})

    def verify_(self):
        if self.dtype.data not in ("f16", "bf16"):
            raise VerifyException(f"weights are packed for f16 or bf16 activations, not {self.dtype.data}")
        fmt = self.format.format
        n, k = self.qweight.type.get_shape()
        want = packed_types(fmt, self.dtype.data, n, k)
        got = [self.codes.type, self.packed_scales.type, self.packed_zeros.type if self.packed_zeros else None]
        if want != got:
            raise VerifyException(f"packing a {n}x{k} {fmt.element} weight gives {', '.join(str(t) for t in want if t)}")

    @property
    def packing(self) -> tuple:
        """What the transform depends on beside the weight (a packed copy's cache key)."""
        return self.name, self.format, self.dtype.data

    def execute(self, qweight, scales, zeros=None):
        from ir.dtypes import storage_dtype
        from ir.packing import pack_weight

        packed = pack_weight(qweight, scales, zeros, self.format.format, self.dtype.data)
        out = [packed.codes.view(np.int32), packed.scales.view(storage_dtype(self.packed_scales.type.element_type))]
        if packed.zeros is not None:
            out.append(packed.zeros.view(storage_dtype(self.packed_zeros.type.element_type)))
        return tuple(out)


@irdl_op_definition
class PackSparseOp(IRDLOperation):
    """A Tiled-CSL weight (graph.sparse_linear's values, positions and offsets, its tiling `sparse`, N x K) laid out
    for the sparse GEMM of `schedule` (ir.sparse.kernel_tiles: each BN x BK tile's nonzeros as the schedule's slots of
    (value, position)); a weight with a tile fuller than the slots is an error. It depends on the weight alone, so it
    runs once per weight, not per call."""

    name = "tile.pack_sparse"
    values = operand_def(TensorType)
    positions = operand_def(TensorType)
    offsets = operand_def(TensorType)
    packed = result_def(TensorType)
    sparse = prop_def(SparseAttr)
    n = prop_def(IntegerAttr)
    schedule = prop_def(GemmSchedule)
    traits = traits_def(Pure())
    assembly_format = "$values `,` $positions `,` $offsets attr-dict `:` type($values) `,` type($positions) `,` type($offsets) `->` type($packed)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(values: SSAValue, positions: SSAValue, offsets: SSAValue, sparse: SparseAttr, n: int, k: int, cfg: GemmConfig) -> "PackSparseOp":
        packed = TensorType(i32, [-(-n // cfg.bn) * cfg.bn, -(-k // cfg.bk) * cfg.sparse // cfg.bn])
        return PackSparseOp.build(operands=[values, positions, offsets], result_types=[packed],
                                  properties={"sparse": sparse, "n": IntegerAttr(n, i64), "schedule": GemmSchedule(cfg)})

    def verify_(self):
        cfg, fmt = self.schedule.data, self.sparse.format
        if not cfg.sparse or (fmt.tile_n, fmt.tile_k) != (cfg.bn, cfg.bk):
            raise VerifyException(f"a sparse weight in {fmt.tile_n}x{fmt.tile_k} tiles is packed for a sparse schedule of those tiles")

    @property
    def packing(self) -> tuple:
        """What the transform depends on beside the weight (a packed copy's cache key)."""
        return self.name, self.schedule.data, self.n.value.data

    def execute(self, values, positions, offsets):
        from ir.numerics import FormatError
        from ir.sparse import decode, kernel_tiles

        cfg, fmt = self.schedule.data, self.sparse.format
        rows, cols = self.packed.type.get_shape()
        k = cols * cfg.bn // cfg.sparse * cfg.bk  # (K rounded up to the tiles: decode checks positions against the real K below)
        n = self.n.value.data
        try:
            dense = decode(values, np.asarray(positions).astype(np.int64), np.asarray(offsets).astype(np.int64), (n, k), fmt)
            return kernel_tiles(dense, cfg.bn, cfg.bk, cfg.dtype, cfg.threads, cfg.sparse, dense_tile_banks(cfg.bn, cfg.bk)).view(np.int32)
        except FormatError as e:  # (weights that do not keep to the program's format)
            raise RungError(f"tile.pack_sparse of a {n}-row weight ({self.sparse}): {e}") from None


def add_scaled_partials(acc: np.ndarray, a: np.ndarray, b: np.ndarray, scales: np.ndarray, per: int) -> np.ndarray:
    """acc + a @ b^T taken `per` K elements (a group) at a time: each group's f32 partial sum
    times its row of `scales` (one value per column of b's rows), added to acc as fma does."""
    for g in range(-(-a.shape[1] // per)):
        part = a[:, g * per:(g + 1) * per].astype(np.float32) @ b[:, g * per:(g + 1) * per].T.astype(np.float32)
        acc = (acc.astype(np.float64) + part.astype(np.float64) * scales[g][None]).astype(np.float32)
    return acc


@irdl_op_definition
class WriteRowsOp(IRDLOperation):
    """x with slices of `source` written at `positions`, in place (graph.index_copy of a donated argument): x viewed
    as [outer, S, R] and source as [outer, P, R] (R elements after the indexed dimension), source[o, p] goes to
    x[o, positions[p]]; a position outside [0, S) is an error (on the GPU the kernel traps)."""

    name = "tile.write_rows"
    x = operand_def(TensorType)
    positions = operand_def(TensorType)
    source = operand_def(TensorType)
    result = result_def(TensorType)
    dim = prop_def(IntegerAttr)
    assembly_format = "$source `into` $x `at` $positions attr-dict `:` type($source) `,` type($x) `,` type($positions) `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    def shape(self) -> tuple[int, int, int, int]:
        """(outer, S, P, R)."""
        x, d = self.x.type.get_shape(), self.dim.value.data
        return int(np.prod(x[:d], dtype=np.int64)), x[d], self.positions.type.get_shape()[0], int(np.prod(x[d + 1:], dtype=np.int64))

    def verify_(self):
        x, src, d = self.x.type.get_shape(), self.source.type.get_shape(), self.dim.value.data
        if self.result.type != self.x.type or not 0 <= d < len(x) or len(self.positions.type.get_shape()) != 1 \
                or src != (*x[:d], self.positions.type.get_shape()[0], *x[d + 1:]) or self.source.type.element_type != self.x.type.element_type:
            raise VerifyException(f"tile.write_rows writes source [..., P, ...] of x's type into x along dim {d} at P positions, got "
                                  f"{self.source.type} into {self.x.type} at {self.positions.type}")

    def execute(self, x, positions, source):
        outer, keys, count, rest = self.shape()
        positions = np.asarray(positions).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= keys):
            raise RungError(f"tile.write_rows: a position outside [0, {keys})")
        out = np.array(x, copy=True).reshape(outer, keys, rest)
        out[:, positions] = np.asarray(source).reshape(outer, count, rest)
        return out.reshape(self.x.type.get_shape())
