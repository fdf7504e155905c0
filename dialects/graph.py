"""The `graph` dialect: whole-tensor ops, as traced from PyTorch.

Every op prints as `%r = graph.op %a, %b {attrs} : (operand types) -> result type`.
Each op knows its result type (`infer`, which is also its verifier: the result type must be
the inferred one) and its meaning on numpy (`execute`, over values that `ir.dtypes.compute_view`
widened; the interpreter rounds results to their element type). Ops whose result shape is not
a function of the operands (reshape, broadcast, cast, constant, arange, full) take the result
type as given and check it.

Semantics follow PyTorch's ops of the same name unless said otherwise: binary ops broadcast
as numpy does; `dim` attributes may be negative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    UnitAttr,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute, Dialect, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from dialects.lp import QuantAttr
from ir.dtypes import is_bool, is_float, is_integer
from ir.numerics import FormatError

# --- attribute helpers ----------------------------------------------------------------------


def int_attr(v: int) -> IntegerAttr:
    return IntegerAttr(int(v), i64)


def ints_attr(vs: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in vs])


def float_attr(v: float) -> FloatAttr:
    return FloatAttr(float(v), f64)


def make_attr(v) -> Attribute:
    """A Python value as the attribute graph ops use for it."""
    if isinstance(v, Attribute):
        return v
    if isinstance(v, bool):
        return IntegerAttr(int(v), i1)
    if isinstance(v, int):
        return int_attr(v)
    if isinstance(v, float):
        return float_attr(v)
    if isinstance(v, str):
        return StringAttr(v)
    if isinstance(v, (list, tuple)):
        return ints_attr(v)
    raise TypeError(f"no attribute for {v!r}")


def attr_value(a: Attribute | None):
    """The Python value of a graph op attribute (None when absent)."""
    if a is None:
        return None
    if isinstance(a, IntegerAttr):
        return a.value.data
    if isinstance(a, FloatAttr):
        return a.value.data
    if isinstance(a, DenseArrayBase):
        return tuple(a.get_values())
    if isinstance(a, StringAttr):
        return a.data
    if isinstance(a, UnitAttr):
        return True
    return a


def shape_of(t: Attribute) -> tuple[int, ...]:
    return tuple(t.get_shape())


def _fail(msg: str):
    raise VerifyException(msg)


def _norm_dim(dim: int, rank: int, what: str = "dim") -> int:
    if not -rank <= dim < max(rank, 1):
        _fail(f"{what} {dim} is out of range for a tensor of rank {rank}")
    return dim % max(rank, 1)


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        _fail("shapes " + ", ".join(str(list(s)) for s in shapes) + " do not broadcast together")


def _same_element_type(types: Sequence[TensorType]) -> Attribute:
    elems = {t.element_type for t in types}
    if len(elems) > 1:
        _fail("operands must have one element type, got " + ", ".join(str(t.element_type) for t in types))
    return types[0].element_type


# --- base classes -----------------------------------------------------------------------------


class GraphOp(IRDLOperation):
    """Base of graph ops: the result type is inferred (or given and checked), and the op executes on numpy."""

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "operands attr-dict `:` functional-type(operands, results)"
    traits = traits_def(Pure())

    # Names of the attributes the op takes, with their defaults (None: required).
    ATTRS: ClassVar[dict[str, object]] = {}

    def attr(self, name: str):
        v = attr_value(self.properties.get(name))
        if v is None:
            v = self.ATTRS.get(name)
        return v

    @classmethod
    def make(cls, *operands: SSAValue | Operation | None, result_type: Attribute | None = None, **attrs) -> "GraphOp":
        """Build the op, inferring its result type unless given."""
        unknown = set(attrs) - set(cls.ATTRS)
        if unknown:
            raise TypeError(f"{cls.name} takes no attribute {', '.join(sorted(unknown))}")
        props = {
            k: UnitAttr() if cls.ATTRS[k] is False else make_attr(v)
            for k, v in attrs.items()
            if v is not None and not (cls.ATTRS[k] is False and not v)
        }
        ops = [o for o in operands if o is not None]
        op = cls.create(operands=[SSAValue.get(o) for o in ops], result_types=[result_type or TensorType(i1, [])], properties=props)
        if result_type is None:
            inferred = op.infer()
            op.drop_all_references()
            op = cls.create(operands=[SSAValue.get(o) for o in ops], result_types=[inferred], properties=props)
        return op

    def infer(self) -> TensorType:
        """The result type this op must have; raises VerifyException naming what is wrong."""
        raise NotImplementedError

    def verify_(self) -> None:
        for o in self.operands:
            if not isinstance(o.type, TensorType):
                _fail(f"operands must be tensors, got {o.type}")
        want = self.infer()
        got = self.results[0].type
        if want != got:
            _fail(f"result type must be {want}, got {got}")

    def execute(self, *args: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class GivenResultOp(GraphOp):
    """An op whose result type is given; `check` validates it against the operands."""

    def check(self, result: TensorType) -> None:
        pass

    def infer(self) -> TensorType:
        result = self.results[0].type
        if not isinstance(result, TensorType):
            _fail(f"result must be a tensor, got {result}")
        self.check(result)
        return result


class UnaryOp(GraphOp):
    """Elementwise op on one tensor; the result has the operand's type."""

    x = operand_def(TensorType)
    result = result_def(TensorType)
    FLOAT_ONLY: ClassVar[bool] = True

    def infer(self) -> TensorType:
        t = self.x.type
        if self.FLOAT_ONLY and not is_float(t.element_type):
            _fail(f"{self.name} needs a floating-point tensor, got {t}")
        return t


class BinaryOp(GraphOp):
    """Elementwise op on two tensors of one element type, broadcasting as numpy does."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)

    def result_element(self, elem: Attribute) -> Attribute:
        return elem

    def infer(self) -> TensorType:
        elem = _same_element_type([self.lhs.type, self.rhs.type])
        return TensorType(self.result_element(elem), broadcast_shapes(shape_of(self.lhs.type), shape_of(self.rhs.type)))


def _unary(op_name: str, fn, doc: str, float_only: bool = True):
    cls = type(op_name.title().replace("_", "") + "Op", (UnaryOp,), {
        "name": f"graph.{op_name}", "__doc__": doc, "FLOAT_ONLY": float_only,
        "execute": lambda self, x: fn(x), "__module__": __name__, "__annotations__": {"FLOAT_ONLY": ClassVar[bool]},
    })
    return irdl_op_definition(cls)


def _binary(op_name: str, fn, doc: str):
    cls = type(op_name.title().replace("_", "") + "Op", (BinaryOp,), {
        "name": f"graph.{op_name}", "__doc__": doc, "execute": lambda self, a, b: fn(a, b), "__module__": __name__,
    })
    return irdl_op_definition(cls)


def erf(x: np.ndarray) -> np.ndarray:
    """erf to float32 accuracy (Abramowitz-Stegun 7.1.26 refined: max error 1.2e-7), in float64."""
    x = np.asarray(x, np.float64)
    t = 1.0 / (1.0 + 0.5 * np.abs(x))
    # Numerical Recipes' erfc Chebyshev fit, fractional error < 1.2e-7 everywhere.
    poly = -x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    return np.sign(x) * (1.0 - t * np.exp(poly))


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


NegOp = _unary("neg", np.negative, "Negation.", float_only=False)
AbsOp = _unary("abs", np.abs, "Absolute value.", float_only=False)
ExpOp = _unary("exp", np.exp, "e^x.")
LogOp = _unary("log", np.log, "Natural logarithm.")
SqrtOp = _unary("sqrt", np.sqrt, "Square root.")
RsqrtOp = _unary("rsqrt", lambda x: 1.0 / np.sqrt(x), "1 / sqrt(x).")
SinOp = _unary("sin", np.sin, "Sine.")
CosOp = _unary("cos", np.cos, "Cosine.")
TanhOp = _unary("tanh", np.tanh, "Hyperbolic tangent.")
ErfOp = _unary("erf", erf, "Error function.")
SigmoidOp = _unary("sigmoid", _sigmoid, "1 / (1 + e^-x).")
ReluOp = _unary("relu", lambda x: np.maximum(x, 0), "max(x, 0).", float_only=False)
SiluOp = _unary("silu", lambda x: x * _sigmoid(x), "x * sigmoid(x).")


@irdl_op_definition
class GeluOp(UnaryOp):
    """GELU: x * Phi(x) (`approximate = "none"`) or its tanh approximation (`"tanh"`)."""

    name = "graph.gelu"
    approximate = opt_prop_def(StringAttr)
    ATTRS: ClassVar[dict[str, object]] = {"approximate": "none"}

    def infer(self) -> TensorType:
        if self.attr("approximate") not in ("none", "tanh"):
            _fail(f"approximate must be \"none\" or \"tanh\", got \"{self.attr('approximate')}\"")
        return super().infer()

    def execute(self, x):
        if self.attr("approximate") == "tanh":
            return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


@irdl_op_definition
class LogicalNotOp(UnaryOp):
    """Boolean not of an i1 tensor."""

    name = "graph.logical_not"

    def infer(self) -> TensorType:
        if not is_bool(self.x.type.element_type):
            _fail(f"graph.logical_not needs an i1 tensor, got {self.x.type}")
        return self.x.type

    def execute(self, x):
        return np.logical_not(x)


def _div(a, b):
    if a.dtype.kind in "iu":  # integer division rounds toward zero, as torch's trunc mode
        return np.where((a % np.where(b == 0, 1, b) != 0) & ((a < 0) != (b < 0)), a // b + 1, a // b)
    return a / b


AddOp = _binary("add", np.add, "lhs + rhs.")
SubOp = _binary("sub", np.subtract, "lhs - rhs.")
MulOp = _binary("mul", np.multiply, "lhs * rhs.")
DivOp = _binary("div", _div, "lhs / rhs (integers: rounded toward zero).")
PowOp = _binary("pow", np.power, "lhs ** rhs.")
MaximumOp = _binary("maximum", np.maximum, "Elementwise max.")
MinimumOp = _binary("minimum", np.minimum, "Elementwise min.")
RemOp = _binary("rem", np.mod, "lhs mod rhs, with the sign of rhs (Python's and torch.remainder's).")


class LogicalBinaryOp(BinaryOp):
    def infer(self) -> TensorType:
        if not all(is_bool(o.type.element_type) for o in self.operands):
            _fail(f"{self.name} needs i1 tensors")
        return super().infer()


@irdl_op_definition
class LogicalAndOp(LogicalBinaryOp):
    """Boolean and."""

    name = "graph.logical_and"

    def execute(self, a, b):
        return np.logical_and(a, b)


@irdl_op_definition
class LogicalOrOp(LogicalBinaryOp):
    """Boolean or."""

    name = "graph.logical_or"

    def execute(self, a, b):
        return np.logical_or(a, b)


_COMPARE = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal}


@irdl_op_definition
class CompareOp(BinaryOp):
    """Elementwise comparison (`predicate` one of eq, ne, lt, le, gt, ge); the result is i1."""

    name = "graph.compare"
    predicate = prop_def(StringAttr)
    ATTRS: ClassVar[dict[str, object]] = {"predicate": None}

    def result_element(self, elem):
        return i1

    def infer(self):
        if self.attr("predicate") not in _COMPARE:
            _fail(f"predicate must be one of {', '.join(_COMPARE)}, got \"{self.attr('predicate')}\"")
        return super().infer()

    def execute(self, a, b):
        return _COMPARE[self.attr("predicate")](a, b)


@irdl_op_definition
class WhereOp(GraphOp):
    """cond ? a : b, broadcasting all three."""

    name = "graph.where"
    cond = operand_def(TensorType)
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    result = result_def(TensorType)

    def infer(self):
        if not is_bool(self.cond.type.element_type):
            _fail(f"condition must be an i1 tensor, got {self.cond.type}")
        elem = _same_element_type([self.a.type, self.b.type])
        return TensorType(elem, broadcast_shapes(*(shape_of(o.type) for o in self.operands)))

    def execute(self, c, a, b):
        return np.where(c, a, b)


@irdl_op_definition
class CastOp(GivenResultOp):
    """Element type conversion (to low-precision types: round to nearest even, saturating)."""

    name = "graph.cast"
    x = operand_def(TensorType)
    result = result_def(TensorType)

    def check(self, result):
        if shape_of(result) != shape_of(self.x.type):
            _fail(f"cast keeps the shape {list(shape_of(self.x.type))}, got {list(shape_of(result))}")

    def execute(self, x):
        return x


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

    def dequantized_weight(self, q, s, z=None) -> np.ndarray:
        return self.properties["format"].format.dequantize(q, s, z)

    def execute(self, x, q, s, z=None):
        return x @ self.dequantized_weight(q, s, z).T


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
    """x / sqrt(mean(x^2, last dim) + eps) * weight."""

    name = "graph.rms_norm"
    x = operand_def(TensorType)
    weight = operand_def(TensorType)
    result = result_def(TensorType)
    eps = prop_def(FloatAttr)
    ATTRS: ClassVar[dict[str, object]] = {"eps": None}

    def infer(self):
        _check_float(self.x.type, self.weight.type)
        if shape_of(self.weight.type) != shape_of(self.x.type)[-1:]:
            _fail(f"weight must have shape [{shape_of(self.x.type)[-1]}], got {list(shape_of(self.weight.type))}")
        return self.x.type

    def execute(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.attr("eps")) * w


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
    v [..., S, Ev]; optional mask (i1: true attends; float: added); `causal` masks j > i;
    `scale` defaults to 1/sqrt(E)."""

    name = "graph.sdpa"
    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    result = result_def(TensorType)
    causal = opt_prop_def(UnitAttr)
    scale = opt_prop_def(FloatAttr)
    ATTRS: ClassVar[dict[str, object]] = {"causal": False, "scale": 0.0}

    def infer(self):
        q, k, v = (shape_of(o.type) for o in (self.q, self.k, self.v))
        elem = _same_element_type([self.q.type, self.k.type, self.v.type])
        _check_float(self.q.type)
        if min(len(q), len(k), len(v)) < 2 or q[-1] != k[-1] or k[-2] != v[-2]:
            _fail(f"sdpa needs q [..., L, E], k [..., S, E], v [..., S, Ev], got {list(q)}, {list(k)}, {list(v)}")
        batch = broadcast_shapes(q[:-2], k[:-2], v[:-2])
        if self.mask is not None:
            broadcast_shapes(shape_of(self.mask.type), (*batch, q[-2], k[-2]))
        return TensorType(elem, (*batch, q[-2], v[-1]))

    def execute(self, q, k, v, mask=None):
        scale = self.attr("scale") or 1.0 / math.sqrt(q.shape[-1])
        s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
        if self.attr("causal"):
            s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
        if mask is not None:
            s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask
        e = np.exp(s - np.max(s, axis=-1, keepdims=True))
        return np.matmul(e / e.sum(axis=-1, keepdims=True), v)


# --- shape ops --------------------------------------------------------------------------------------


@irdl_op_definition
class ReshapeOp(GivenResultOp):
    """The same elements in row-major order, with the result's shape."""

    name = "graph.reshape"
    x = operand_def(TensorType)
    result = result_def(TensorType)

    def check(self, result):
        a, b = shape_of(self.x.type), shape_of(result)
        if math.prod(a) != math.prod(b) or result.element_type != self.x.type.element_type:
            _fail(f"cannot reshape {self.x.type} to {result}")

    def execute(self, x):
        return x.reshape(shape_of(self.result.type))


@irdl_op_definition
class BroadcastOp(GivenResultOp):
    """x broadcast (numpy rules) to the result's shape."""

    name = "graph.broadcast"
    x = operand_def(TensorType)
    result = result_def(TensorType)

    def check(self, result):
        if broadcast_shapes(shape_of(self.x.type), shape_of(result)) != shape_of(result):
            _fail(f"cannot broadcast {self.x.type} to {result}")
        if result.element_type != self.x.type.element_type:
            _fail("broadcast keeps the element type")

    def execute(self, x):
        return np.broadcast_to(x, shape_of(self.result.type))


@irdl_op_definition
class PermuteOp(GraphOp):
    """Dims reordered: result dim i is x's dim dims[i]."""

    name = "graph.permute"
    x = operand_def(TensorType)
    result = result_def(TensorType)
    dims = prop_def(DenseArrayBase)
    ATTRS: ClassVar[dict[str, object]] = {"dims": None}

    def infer(self):
        x, dims = shape_of(self.x.type), self.attr("dims")
        if sorted(dims) != list(range(len(x))):
            _fail(f"dims {list(dims)} are not a permutation of the {len(x)} dims of {self.x.type}")
        return TensorType(self.x.type.element_type, [x[d] for d in dims])

    def execute(self, x):
        return np.transpose(x, self.attr("dims"))


@irdl_op_definition
class SliceOp(GraphOp):
    """x[start:end:step] along `dim` (start and end clamped as Python does)."""

    name = "graph.slice"
    x = operand_def(TensorType)
    result = result_def(TensorType)
    dim = prop_def(IntegerAttr)
    start = opt_prop_def(IntegerAttr)
    end = opt_prop_def(IntegerAttr)
    step = opt_prop_def(IntegerAttr)
    ATTRS: ClassVar[dict[str, object]] = {"dim": None, "start": 0, "end": 2**62, "step": 1}

    def _slice(self) -> slice:
        return slice(self.attr("start"), self.attr("end"), self.attr("step"))

    def infer(self):
        x = list(shape_of(self.x.type))
        d = _norm_dim(self.attr("dim"), len(x))
        if self.attr("step") <= 0:
            _fail(f"slice step must be positive, got {self.attr('step')}")
        x[d] = len(range(*self._slice().indices(x[d])))
        return TensorType(self.x.type.element_type, x)

    def execute(self, x):
        index = [slice(None)] * x.ndim
        index[self.attr("dim")] = self._slice()
        return x[tuple(index)]


@irdl_op_definition
class CatOp(GraphOp):
    """Concatenation along `dim`."""

    name = "graph.cat"
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    dim = prop_def(IntegerAttr)
    ATTRS: ClassVar[dict[str, object]] = {"dim": None}

    def infer(self):
        types = [o.type for o in self.inputs]
        if not types:
            _fail("cat needs at least one operand")
        elem = _same_element_type(types)
        shapes = [list(shape_of(t)) for t in types]
        d = _norm_dim(self.attr("dim"), len(shapes[0]))
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or s[:d] + s[d + 1:] != shapes[0][:d] + shapes[0][d + 1:]:
                _fail(f"cat along dim {d}: shapes {shapes} differ outside that dim")
        out = list(shapes[0])
        out[d] = sum(s[d] for s in shapes)
        return TensorType(elem, out)

    def execute(self, *xs):
        return np.concatenate(xs, axis=self.attr("dim"))


_REDUCE = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}


@irdl_op_definition
class ReduceOp(GraphOp):
    """Reduction (`kind` sum, mean, max, min, prod) over `dims`, keeping them as size 1 if `keepdim`."""

    name = "graph.reduce"
    x = operand_def(TensorType)
    result = result_def(TensorType)
    kind = prop_def(StringAttr)
    dims = prop_def(DenseArrayBase)
    keepdim = opt_prop_def(UnitAttr)
    ATTRS: ClassVar[dict[str, object]] = {"kind": None, "dims": None, "keepdim": False}

    def _dims(self) -> tuple[int, ...]:
        rank = len(shape_of(self.x.type))
        return tuple(sorted({_norm_dim(d, rank) for d in self.attr("dims")}))

    def infer(self):
        if self.attr("kind") not in _REDUCE:
            _fail(f"kind must be one of {', '.join(_REDUCE)}, got \"{self.attr('kind')}\"")
        x, dims = shape_of(self.x.type), self._dims()
        out = [1 if i in dims else n for i, n in enumerate(x)] if self.attr("keepdim") else [n for i, n in enumerate(x) if i not in dims]
        return TensorType(self.x.type.element_type, out)

    def execute(self, x):
        return _REDUCE[self.attr("kind")](x, axis=self._dims(), keepdims=bool(self.attr("keepdim")))


@irdl_op_definition
class GatherOp(GraphOp):
    """torch.gather: out[i][j] = x[index[i][j]][j] for dim 0 (and so on); the result has index's shape."""

    name = "graph.gather"
    x = operand_def(TensorType)
    index = operand_def(TensorType)
    result = result_def(TensorType)
    dim = prop_def(IntegerAttr)
    ATTRS: ClassVar[dict[str, object]] = {"dim": None}

    def infer(self):
        x, idx = shape_of(self.x.type), shape_of(self.index.type)
        _norm_dim(self.attr("dim"), len(x))
        if not is_integer(self.index.type.element_type) or len(idx) != len(x):
            _fail(f"gather needs an integer index of x's rank {len(x)}, got {self.index.type}")
        return TensorType(self.x.type.element_type, idx)

    def execute(self, x, idx):
        return np.take_along_axis(x, idx, axis=self.attr("dim"))


@irdl_op_definition
class IndexSelectOp(GraphOp):
    """x indexed along `dim` by an integer tensor: that dim becomes index's dims (x[..., index, ...])."""

    name = "graph.index_select"
    x = operand_def(TensorType)
    index = operand_def(TensorType)
    result = result_def(TensorType)
    dim = prop_def(IntegerAttr)
    ATTRS: ClassVar[dict[str, object]] = {"dim": None}

    def infer(self):
        x, idx = shape_of(self.x.type), shape_of(self.index.type)
        d = _norm_dim(self.attr("dim"), len(x))
        if not is_integer(self.index.type.element_type):
            _fail(f"index must hold integers, got {self.index.type}")
        return TensorType(self.x.type.element_type, (*x[:d], *idx, *x[d + 1:]))

    def execute(self, x, idx):
        d = self.attr("dim") % x.ndim
        return np.take(x, np.where(idx < 0, idx + x.shape[d], idx), axis=d)


@irdl_op_definition
class IndexOp(GraphOp):
    """Advanced indexing of x's leading dims: x[i0, i1, ...] with integer index tensors that
    broadcast together; the result is broadcast(index shapes) + x's remaining dims."""

    name = "graph.index"
    x = operand_def(TensorType)
    indices = var_operand_def(TensorType)
    result = result_def(TensorType)

    def infer(self):
        x = shape_of(self.x.type)
        if not 1 <= len(self.indices) <= len(x):
            _fail(f"index takes 1 to {len(x)} index tensors for {self.x.type}, got {len(self.indices)}")
        for o in self.indices:
            if not is_integer(o.type.element_type):
                _fail(f"index tensors must hold integers, got {o.type}")
        lead = broadcast_shapes(*(shape_of(o.type) for o in self.indices))
        return TensorType(self.x.type.element_type, (*lead, *x[len(self.indices):]))

    def execute(self, x, *idx):
        for i, n in zip(idx, x.shape):
            if i.size and (i.min() < -n or i.max() >= n):
                raise IndexError(f"index out of range for a dim of size {n}")
        return x[tuple(idx)]


# --- convolution and pooling ----------------------------------------------------------------------------


def _pair(v) -> tuple[int, int]:
    v = tuple(v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _window_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _windows(x: np.ndarray, kernel, stride, padding, dilation=(1, 1), fill=0.0) -> np.ndarray:
    """[N, C, OH, OW, KH, KW] view of the windows of x [N, C, H, W]."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


@irdl_op_definition
class Conv2dOp(GraphOp):
    """2-D convolution (cross-correlation), NCHW: x [N, C, H, W], weight [O, C/groups, KH, KW], bias [O]."""

    name = "graph.conv2d"
    x = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    stride = opt_prop_def(DenseArrayBase)
    padding = opt_prop_def(DenseArrayBase)
    dilation = opt_prop_def(DenseArrayBase)
    groups = opt_prop_def(IntegerAttr)
    ATTRS: ClassVar[dict[str, object]] = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}

    def infer(self):
        x, w = shape_of(self.x.type), shape_of(self.weight.type)
        _check_float(self.x.type, self.weight.type)
        g = self.attr("groups")
        if len(x) != 4 or len(w) != 4:
            _fail(f"conv2d needs x [N, C, H, W] and weight [O, C/groups, KH, KW], got {list(x)} and {list(w)}")
        if x[1] != w[1] * g or w[0] % g:
            _fail(f"conv2d with {g} groups: x has {x[1]} channels, weight expects {w[1] * g}")
        if self.bias is not None and shape_of(self.bias.type) != (w[0],):
            _fail(f"bias must have shape [{w[0]}], got {list(shape_of(self.bias.type))}")
        (sh, sw), (ph, pw), (dh, dw) = (_pair(self.attr(a)) for a in ("stride", "padding", "dilation"))
        oh, ow = _window_out(x[2], w[2], sh, ph, dh), _window_out(x[3], w[3], sw, pw, dw)
        if oh <= 0 or ow <= 0:
            _fail(f"conv2d window {list(w[2:])} does not fit the input {list(x[2:])}")
        return TensorType(self.x.type.element_type, (x[0], w[0], oh, ow))

    def execute(self, x, w, b=None):
        g = self.attr("groups")
        win = _windows(x, w.shape[2:], *(_pair(self.attr(a)) for a in ("stride", "padding", "dilation")))
        n, c, oh, ow = win.shape[:4]
        win = win.reshape(n, g, c // g, oh, ow, *w.shape[2:])
        wg = w.reshape(g, w.shape[0] // g, *w.shape[1:])
        y = np.einsum("ngchwkl,gockl->ngohw", win, wg, optimize=True).reshape(n, w.shape[0], oh, ow)
        return y if b is None else y + b.reshape(1, -1, 1, 1)


class Pool2dOp(GraphOp):
    x = operand_def(TensorType)
    result = result_def(TensorType)
    kernel = prop_def(DenseArrayBase)
    stride = opt_prop_def(DenseArrayBase)
    padding = opt_prop_def(DenseArrayBase)
    ATTRS: ClassVar[dict[str, object]] = {"kernel": None, "stride": (), "padding": (0, 0)}

    def _params(self):
        k = _pair(self.attr("kernel"))
        return k, _pair(self.attr("stride") or k), _pair(self.attr("padding"))

    def infer(self):
        x = shape_of(self.x.type)
        if len(x) != 4:
            _fail(f"{self.name} needs x [N, C, H, W], got {list(x)}")
        (kh, kw), (sh, sw), (ph, pw) = self._params()
        oh, ow = _window_out(x[2], kh, sh, ph), _window_out(x[3], kw, sw, pw)
        if oh <= 0 or ow <= 0 or 2 * ph > kh or 2 * pw > kw:
            _fail(f"{self.name} window {[kh, kw]} with padding {[ph, pw]} does not fit the input {list(x[2:])}")
        return TensorType(self.x.type.element_type, (*x[:2], oh, ow))


@irdl_op_definition
class MaxPool2dOp(Pool2dOp):
    """Max over windows (padding counts as -inf)."""

    name = "graph.max_pool2d"

    def execute(self, x):
        return _windows(x, *self._params(), fill=-np.inf).max(axis=(-2, -1))


@irdl_op_definition
class AvgPool2dOp(Pool2dOp):
    """Mean over windows (padding counts as zeros in the mean, torch's count_include_pad)."""

    name = "graph.avg_pool2d"

    def execute(self, x):
        return _windows(x, *self._params()).mean(axis=(-2, -1))


# --- sources -------------------------------------------------------------------------------------------


class SourceOp(GivenResultOp):
    """An op without operands: `%r = graph.op {attrs} : type`."""

    assembly_format = "attr-dict `:` type($result)"


@irdl_op_definition
class ConstantOp(SourceOp):
    """A tensor constant; `value` is a dense elements attribute (a splat fills the result)."""

    name = "graph.constant"
    result = result_def(TensorType)
    value = prop_def(DenseIntOrFPElementsAttr)
    ATTRS: ClassVar[dict[str, object]] = {"value": None}

    def check(self, result):
        v = self.properties["value"]
        if v.type.element_type != result.element_type or (
            shape_of(v.type) != shape_of(result) and math.prod(shape_of(v.type)) != 1):
            _fail(f"constant value of type {v.type} does not fit the result {result}")

    def execute(self):
        v = self.properties["value"]
        data = np.array(v.get_values()).reshape(shape_of(v.type))
        return np.broadcast_to(data.reshape(()) if data.size == 1 else data, shape_of(self.result.type))


@irdl_op_definition
class ArangeOp(SourceOp):
    """start, start + step, ... filling the 1-D result."""

    name = "graph.arange"
    result = result_def(TensorType)
    start = opt_prop_def(Attribute)
    step = opt_prop_def(Attribute)
    ATTRS: ClassVar[dict[str, object]] = {"start": 0, "step": 1}

    def check(self, result):
        if len(shape_of(result)) != 1:
            _fail(f"arange makes a 1-D tensor, got {result}")

    def execute(self):
        n = shape_of(self.result.type)[0]
        return self.attr("start") + self.attr("step") * np.arange(n)


@irdl_op_definition
class FullOp(SourceOp):
    """A tensor filled with `value`."""

    name = "graph.full"
    result = result_def(TensorType)
    value = prop_def(Attribute)
    ATTRS: ClassVar[dict[str, object]] = {"value": None}

    def execute(self):
        return np.full(shape_of(self.result.type), self.attr("value"))


GRAPH = Dialect("graph", [
    NegOp, AbsOp, ExpOp, LogOp, SqrtOp, RsqrtOp, SinOp, CosOp, TanhOp, ErfOp, SigmoidOp, ReluOp, SiluOp,
    GeluOp, LogicalNotOp, AddOp, SubOp, MulOp, DivOp, PowOp, MaximumOp, MinimumOp, RemOp,
    LogicalAndOp, LogicalOrOp, CompareOp, WhereOp, CastOp, MatmulOp, LinearOp, QLinearOp,
    SoftmaxOp, CumsumOp, RmsNormOp, LayerNormOp, BatchNormOp, EmbeddingOp, RopeOp, SdpaOp,
    ReshapeOp, BroadcastOp, PermuteOp, SliceOp, CatOp, ReduceOp, GatherOp, IndexSelectOp, IndexOp,
    Conv2dOp, MaxPool2dOp, AvgPool2dOp, ConstantOp, ArangeOp, FullOp,
], [])
