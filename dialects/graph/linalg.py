"""Linear algebra, normalizations and activations over a dimension, and the transformer ops (embedding, rope, attention)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    FloatAttr,
    IntegerAttr,
    TensorType,
    UnitAttr,
)
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
)

from dialects.graph.base import (
    GraphOp,
    _fail,
    _norm_dim,
    _same_element_type,
    broadcast_shapes,
    shape_of,
)
from dialects.lp import QuantAttr, SparseAttr
from ir.dtypes import EIGHT_BIT_TYPES, eight_bit_format, is_float, is_integer
from ir.numerics import FormatError

# --- linear algebra -----------------------------------------------------------------------------


def _check_float(*types: TensorType, what: str = "operands"):
    for t in types:
        if not is_float(t.element_type):
            _fail(f"{what} must be floating-point, got {t}")


@irdl_op_definition
class MatmulOp(GraphOp):
    """a @ b over the last two dims, broadcasting the leading (batch) dims."""

    name = "graph.matmul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)

    def infer(self):
        a, b = shape_of(self.lhs.type), shape_of(self.rhs.type)
        elem = _same_element_type([self.lhs.type, self.rhs.type])
        if len(a) < 2 or len(b) < 2:
            _fail(f"matmul needs operands of rank >= 2, got {list(a)} and {list(b)}")
        if a[-1] != b[-2]:
            _fail(f"matmul contracts {list(a)} with {list(b)}: inner dims {a[-1]} and {b[-2]} differ")
        return TensorType(elem, (*broadcast_shapes(a[:-2], b[:-2]), a[-2], b[-1]))

    def execute(self, a, b):
        return np.matmul(a, b)


@irdl_op_definition
class LinearOp(GraphOp):
    """x @ weight^T (+ bias): x [..., K], weight [N, K], bias [N] -> [..., N]."""

    name = "graph.linear"
    x = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)

    def infer(self):
        x, w = shape_of(self.x.type), shape_of(self.weight.type)
        types = [o.type for o in self.operands]
        elem = _same_element_type(types)
        _check_float(*types)
        if len(w) != 2 or not x or x[-1] != w[1]:
            _fail(f"linear needs x [..., K] and weight [N, K], got {list(x)} and {list(w)}")
        if self.bias is not None and shape_of(self.bias.type) != (w[0],):
            _fail(f"bias must have shape [{w[0]}], got {list(shape_of(self.bias.type))}")
        return TensorType(elem, (*x[:-1], w[0]))

    def execute(self, x, w, b=None):
        y = x @ w.T
        return y if b is None else y + b


@irdl_op_definition
class QLinearOp(GraphOp):
    """x @ dequantize(qweight, scales, zeros)^T: qweight [N, K] holds element values of the
    format's low-precision type; scales and zeros [N, K / group] (see ir.numerics.QuantFormat)."""

    name = "graph.qlinear"
    x = operand_def(TensorType)
    qweight = operand_def(TensorType)
    scales = operand_def(TensorType)
    zeros = opt_operand_def(TensorType)
    result = result_def(TensorType)
    format = prop_def(QuantAttr)
    ATTRS: ClassVar[dict[str, object]] = {"format": None}

    def infer(self):
        q: QuantAttr = self.properties["format"]
        x, w = shape_of(self.x.type), shape_of(self.qweight.type)
        _check_float(self.x.type, what="x")
        if self.qweight.type.element_type != q.element:
            _fail(f"qweight must hold {q.element} (the format's element type), got {self.qweight.type.element_type}")
        if self.scales.type.element_type != q.scale:
            _fail(f"scales must hold {q.scale}, got {self.scales.type.element_type}")
        if len(w) != 2 or not x or x[-1] != w[1]:
            _fail(f"qlinear needs x [..., K] and qweight [N, K], got {list(x)} and {list(w)}")
        try:
            q.format.check_params(w, shape_of(self.scales.type), None if self.zeros is None else shape_of(self.zeros.type))
        except FormatError as e:
            _fail(str(e))
        return TensorType(self.x.type.element_type, (*x[:-1], w[0]))

    def dense_weight(self, q, s, z=None) -> np.ndarray:
        """The [N, K] weight the operands after x stand for."""
        return self.properties["format"].format.dequantize(q, s, z)

    def execute(self, x, q, s, z=None):
        return x @ self.dense_weight(q, s, z).T


@irdl_op_definition
class QLinear8Op(GraphOp):
    """W8A8 and FP8 (ir.numerics.EightBitFormat): each row of x [..., K] quantized to the 8-bit type of qweight
    [N, K] (i8 or f8E4M3FN) by its absolute maximum (ir.numerics.quantize_rows), times qweight, then times the
    row's scale and the f32 weight scales [N] (one per output channel); the result in x's type."""

    name = "graph.qlinear8"
    x = operand_def(TensorType)
    qweight = operand_def(TensorType)
    scales = operand_def(TensorType)
    result = result_def(TensorType)

    def infer(self):
        x, w = shape_of(self.x.type), shape_of(self.qweight.type)
        _check_float(self.x.type, what="x")
        if eight_bit_format(self.qweight.type.element_type) is None:
            _fail(f"qweight must hold {' or '.join(map(str, EIGHT_BIT_TYPES.values()))}, got {self.qweight.type.element_type}")
        if len(w) != 2 or not x or x[-1] != w[1]:
            _fail(f"qlinear8 needs x [..., K] and qweight [N, K], got {list(x)} and {list(w)}")
        if str(self.scales.type.element_type) != "f32" or shape_of(self.scales.type) != (w[0],):
            _fail(f"scales must be tensor<{w[0]}xf32> (one per output channel), got {self.scales.type}")
        return TensorType(self.x.type.element_type, (*x[:-1], w[0]))

    @property
    def element(self) -> str:
        return eight_bit_format(self.qweight.type.element_type).element

    def dense_weight(self, q, s) -> np.ndarray:
        """The [N, K] weight the operands after x stand for."""
        return np.asarray(q, np.float64) * np.asarray(s, np.float64)[:, None]

    def execute(self, x, q, s):
        from ir.numerics import quantize_rows

        xq, xs = quantize_rows(x, self.element)
        return ((xq @ np.asarray(q, np.float64).T) * xs[..., None] * np.asarray(s, np.float64)).astype(np.float32)


@irdl_op_definition
class SparseLinearOp(GraphOp):
    """x @ W^T with W [n, K] unstructured-sparse in Tiled-CSL (ir.sparse; its tiling `sparse`): values [nnz] (the kept
    values in x's type, or with `format` that quantization's element values, its scales [n, K / group] beside),
    positions [nnz] (ui16) inside their tiles, offsets [tiles + 1] (i32) where each tile's nonzeros start."""

    name = "graph.sparse_linear"
    x = operand_def(TensorType)
    values = operand_def(TensorType)
    positions = operand_def(TensorType)
    offsets = operand_def(TensorType)
    scales = opt_operand_def(TensorType)
    result = result_def(TensorType)
    sparse = prop_def(SparseAttr)
    n = prop_def(IntegerAttr)
    format = opt_prop_def(QuantAttr)
    ATTRS: ClassVar[dict[str, object]] = {"sparse": None, "n": None, "format": None}

    def infer(self):
        x, n = shape_of(self.x.type), self.attr("n")
        _check_float(self.x.type, what="x")
        if not x or n <= 0:
            _fail(f"sparse_linear needs x [..., K] and n > 0 output channels, got {list(x)} and n = {n}")
        tiles = math.prod(self.sparse.format.tiles((n, x[-1])))
        nnz = shape_of(self.positions.type)
        if str(self.positions.type.element_type) != "ui16" or len(nnz) != 1:
            _fail(f"positions must be a tensor of ui16 (one per nonzero), got {self.positions.type}")
        if str(self.offsets.type.element_type) != "i32" or shape_of(self.offsets.type) != (tiles + 1,):
            _fail(f"offsets must be tensor<{tiles + 1}xi32> (a {n}x{x[-1]} weight in {self.sparse.tile_n.data}x{self.sparse.tile_k.data} "
                  f"tiles has {tiles}), got {self.offsets.type}")
        want = self.format.element if self.format is not None else self.x.type.element_type
        if shape_of(self.values.type) != nnz or self.values.type.element_type != want:
            _fail(f"values must be tensor<{nnz[0]}x{want}> (one per position), got {self.values.type}")
        if self.format is None:
            if self.scales is not None:
                _fail("scales belong to quantized values: set `format`")
        else:
            fmt = self.format.format
            if fmt.zero != "none":
                _fail(f"quantized sparse values take no zero point (a pruned zero must stay zero), got zero mode {fmt.zero}")
            try:
                fmt.check_params((n, x[-1]), shape_of(self.scales.type) if self.scales is not None else (), None)
            except FormatError as e:
                _fail(str(e))
            if self.scales.type.element_type != self.format.scale:
                _fail(f"scales must hold {self.format.scale}, got {self.scales.type.element_type}")
        return TensorType(self.x.type.element_type, (*x[:-1], n))

    def dense_weight(self, values, positions, offsets, scales=None) -> np.ndarray:
        """The [n, K] weight the operands after x stand for."""
        from ir.sparse import decode

        dense = decode(values, positions, offsets, (self.attr("n"), self.x.type.get_shape()[-1]), self.sparse.format)
        return dense if self.format is None else self.format.format.dequantize(dense, scales)

    def execute(self, x, values, positions, offsets, scales=None):
        return x @ self.dense_weight(values, positions, offsets, scales).T


# --- normalization and activations over a dim --------------------------------------------------------


class DimOp(GraphOp):
    """An op over one dim of one tensor, keeping its type."""

    x = operand_def(TensorType)
    result = result_def(TensorType)
    dim = prop_def(IntegerAttr)
    ATTRS: ClassVar[dict[str, object]] = {"dim": None}

    def infer(self):
        _norm_dim(self.attr("dim"), len(shape_of(self.x.type)))
        return self.x.type


@irdl_op_definition
class SoftmaxOp(DimOp):
    """softmax along `dim`."""

    name = "graph.softmax"

    def infer(self):
        _check_float(self.x.type)
        return super().infer()

    def execute(self, x):
        e = np.exp(x - np.max(x, axis=self.attr("dim"), keepdims=True))
        return e / e.sum(axis=self.attr("dim"), keepdims=True)


@irdl_op_definition
class CumsumOp(DimOp):
    """Inclusive prefix sum along `dim`."""

    name = "graph.cumsum"

    def execute(self, x):
        return np.cumsum(x, axis=self.attr("dim"), dtype=x.dtype)


@irdl_op_definition
class RmsNormOp(GraphOp):
    """x / sqrt(mean(x^2, last dim) + eps) * (weight + offset); Gemma's norms scale by 1 + weight (offset 1)."""

    name = "graph.rms_norm"
    x = operand_def(TensorType)
    weight = operand_def(TensorType)
    result = result_def(TensorType)
    eps = prop_def(FloatAttr)
    offset = opt_prop_def(FloatAttr)
    ATTRS: ClassVar[dict[str, object]] = {"eps": None, "offset": 0.0}

    def infer(self):
        _check_float(self.x.type, self.weight.type)
        if shape_of(self.weight.type) != shape_of(self.x.type)[-1:]:
            _fail(f"weight must have shape [{shape_of(self.x.type)[-1]}], got {list(shape_of(self.weight.type))}")
        return self.x.type

    def execute(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.attr("eps")) * (w + np.float32(self.attr("offset")))


@irdl_op_definition
class LayerNormOp(GraphOp):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim."""

    name = "graph.layer_norm"
    x = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = operand_def(TensorType)
    result = result_def(TensorType)
    eps = prop_def(FloatAttr)
    ATTRS: ClassVar[dict[str, object]] = {"eps": None}

    def infer(self):
        _check_float(self.x.type, self.weight.type, self.bias.type)
        last = shape_of(self.x.type)[-1:]
        for name, o in (("weight", self.weight), ("bias", self.bias)):
            if shape_of(o.type) != last:
                _fail(f"{name} must have shape {list(last)}, got {list(shape_of(o.type))}")
        return self.x.type

    def execute(self, x, w, b):
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.attr("eps")) * w + b


@irdl_op_definition
class BatchNormOp(GraphOp):
    """Inference batch norm over channel dim 1: (x - mean) / sqrt(var + eps) * weight + bias."""

    name = "graph.batch_norm"
    x = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = operand_def(TensorType)
    result = result_def(TensorType)
    eps = prop_def(FloatAttr)
    ATTRS: ClassVar[dict[str, object]] = {"eps": None}

    def infer(self):
        x = shape_of(self.x.type)
        if len(x) < 2:
            _fail(f"batch_norm needs x of rank >= 2, got {list(x)}")
        for o in self.operands[1:]:
            if shape_of(o.type) != (x[1],):
                _fail(f"batch_norm parameters must have shape [{x[1]}], got {list(shape_of(o.type))}")
        return self.x.type

    def execute(self, x, mean, var, w, b):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        inv = w / np.sqrt(var + self.attr("eps"))
        return (x - mean.reshape(shape)) * inv.reshape(shape) + b.reshape(shape)


# --- transformer ops ------------------------------------------------------------------------------


@irdl_op_definition
class EmbeddingOp(GraphOp):
    """weight[indices]: weight [V, D], integer indices [...] -> [..., D]."""

    name = "graph.embedding"
    weight = operand_def(TensorType)
    indices = operand_def(TensorType)
    result = result_def(TensorType)

    def infer(self):
        w = shape_of(self.weight.type)
        if len(w) != 2:
            _fail(f"embedding weight must be [V, D], got {list(w)}")
        if not is_integer(self.indices.type.element_type):
            _fail(f"indices must be integers, got {self.indices.type}")
        return TensorType(self.weight.type.element_type, (*shape_of(self.indices.type), w[1]))

    def execute(self, w, idx):
        if idx.size and (idx.min() < 0 or idx.max() >= w.shape[0]):
            raise IndexError(f"embedding index out of range [0, {w.shape[0]})")
        return w[idx]


@irdl_op_definition
class RopeOp(GraphOp):
    """Rotary position embedding: x * cos + rotate_half(x) * sin, rotate_half(x) =
    cat(-x2, x1) over the halves of the last dim; cos and sin broadcast against x."""

    name = "graph.rope"
    x = operand_def(TensorType)
    cos = operand_def(TensorType)
    sin = operand_def(TensorType)
    result = result_def(TensorType)

    def infer(self):
        _check_float(self.x.type, self.cos.type, self.sin.type)
        x = shape_of(self.x.type)
        if not x or x[-1] % 2:
            _fail(f"rope needs an even last dim, got {list(x)}")
        if broadcast_shapes(x, shape_of(self.cos.type), shape_of(self.sin.type)) != x:
            _fail(f"cos and sin must broadcast to x's shape {list(x)}")
        return self.x.type

    def execute(self, x, cos, sin):
        half = x.shape[-1] // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin


@irdl_op_definition
class SdpaOp(GraphOp):
    """Scaled dot-product attention: softmax(q k^T * scale + mask) v. q [..., L, E], k [..., S, E],
    v [..., S, Ev]; optional mask (i1: true attends; float: added; with `positions`, the query rows'
    positions [L] instead, integers: key j attends to query i where j <= positions[i], as over a KV
    cache); `causal` masks j > i;
    `scale` defaults to 1/sqrt(E). With fewer heads in k and v than in q (dimension -3, dividing
    q's: grouped-query attention), query head h reads kv head h / (q's heads / kv heads)."""

    name = "graph.sdpa"
    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    result = result_def(TensorType)
    causal = opt_prop_def(UnitAttr)
    positions = opt_prop_def(UnitAttr)
    scale = opt_prop_def(FloatAttr)
    ATTRS: ClassVar[dict[str, object]] = {"causal": False, "positions": False, "scale": 0.0}

    def infer(self):
        q, k, v = (shape_of(o.type) for o in (self.q, self.k, self.v))
        elem = _same_element_type([self.q.type, self.k.type, self.v.type])
        _check_float(self.q.type)
        if min(len(q), len(k), len(v)) < 2 or q[-1] != k[-1] or k[-2] != v[-2]:
            _fail(f"sdpa needs q [..., L, E], k [..., S, E], v [..., S, Ev], got {list(q)}, {list(k)}, {list(v)}")
        group = self.group()
        batch = broadcast_shapes(q[:-2], *(tuple(x[:-3]) + (x[-3] * group,) if group > 1 else x[:-2] for x in (k, v)))
        if self.attr("positions"):
            if self.mask is None or not is_integer(self.mask.type.element_type) or shape_of(self.mask.type) != (q[-2],):
                _fail(f"sdpa with positions takes the query rows' positions as an integer tensor [{q[-2]}], got "
                      f"{self.mask.type if self.mask is not None else 'none'}")
        elif self.mask is not None:
            broadcast_shapes(shape_of(self.mask.type), (*batch, q[-2], k[-2]))
        return TensorType(elem, (*batch, q[-2], v[-1]))

    def group(self) -> int:
        """Query heads per kv head: 1, or q's heads / k's heads where k and v have as many heads, fewer than q."""
        q, k, v = (shape_of(o.type) for o in (self.q, self.k, self.v))
        if min(len(q), len(k), len(v)) >= 3 and k[-3] == v[-3] and 0 < k[-3] < q[-3] and q[-3] % k[-3] == 0:
            return q[-3] // k[-3]
        return 1

    def execute(self, q, k, v, mask=None):
        scale = self.attr("scale") or 1.0 / math.sqrt(q.shape[-1])
        if (group := self.group()) > 1:
            k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
        s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
        if self.attr("causal"):
            s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
        if self.attr("positions"):
            mask = np.arange(k.shape[-2])[None, :] <= mask[:, None]
        if mask is not None:
            s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask
        e = np.exp(s - np.max(s, axis=-1, keepdims=True))
        return np.matmul(e / e.sum(axis=-1, keepdims=True), v)
