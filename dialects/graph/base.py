"""Attribute helpers and the base classes of graph ops: type inference as verification, execution on numpy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    UnitAttr,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from ir.dtypes import is_bool, is_float, tensor_problem

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
        for v in (*self.operands, *self.results):
            if problem := tensor_problem(v.type):
                _fail(problem)
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
        if is_bool(t.element_type):
            _fail(f"{self.name} needs a numeric tensor, got {t} (booleans take graph.logical_not and graph.where)")
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
