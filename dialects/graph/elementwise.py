"""Elementwise ops: activations, arithmetic, comparisons, logic, where and casts, with numpy's broadcasting."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    StringAttr,
    TensorType,
    i1,
)
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
)

from dialects.graph.base import (
    BinaryOp,
    GivenResultOp,
    GraphOp,
    UnaryOp,
    _binary,
    _fail,
    _same_element_type,
    _unary,
    broadcast_shapes,
    shape_of,
)
from ir.dtypes import is_bool


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
