"""Shape ops: reshape, broadcast, permute, slice, cat, reductions, gathers and indexing."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    IntegerAttr,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_operand_def,
)

from dialects.graph.base import (
    GivenResultOp,
    GraphOp,
    _fail,
    _norm_dim,
    _same_element_type,
    broadcast_shapes,
    shape_of,
)
from ir.dtypes import is_integer

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

    def reduced_dims(self) -> tuple[int, ...]:
        """The dimensions reduced, non-negative and sorted."""
        rank = len(shape_of(self.x.type))
        return tuple(sorted({_norm_dim(d, rank) for d in self.attr("dims")}))

    def infer(self):
        if self.attr("kind") not in _REDUCE:
            _fail(f"kind must be one of {', '.join(_REDUCE)}, got \"{self.attr('kind')}\"")
        x, dims = shape_of(self.x.type), self.reduced_dims()
        out = [1 if i in dims else n for i, n in enumerate(x)] if self.attr("keepdim") else [n for i, n in enumerate(x) if i not in dims]
        return TensorType(self.x.type.element_type, out)

    def execute(self, x):
        return _REDUCE[self.attr("kind")](x, axis=self.reduced_dims(), keepdims=bool(self.attr("keepdim")))


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


@irdl_op_definition
class IndexCopyOp(GraphOp):
    """torch.index_copy: x with the slices of `source` along `dim` written at the positions `index` (1-D) holds:
    a KV cache updated at the token positions. Where x is a function argument and this op its only use, a
    compiled program writes into x's buffer in place (the argument is donated: the op's result is that buffer)."""

    name = "graph.index_copy"
    x = operand_def(TensorType)
    index = operand_def(TensorType)
    source = operand_def(TensorType)
    result = result_def(TensorType)
    dim = prop_def(IntegerAttr)
    ATTRS: ClassVar[dict[str, object]] = {"dim": None}

    def infer(self):
        x, idx, src = shape_of(self.x.type), shape_of(self.index.type), shape_of(self.source.type)
        d = _norm_dim(self.attr("dim"), len(x))
        if not is_integer(self.index.type.element_type) or len(idx) != 1:
            _fail(f"index_copy needs a 1-D integer index, got {self.index.type}")
        if self.source.type.element_type != self.x.type.element_type or src != (*x[:d], idx[0], *x[d + 1:]):
            _fail(f"index_copy's source must be {self.x.type.element_type} [{', '.join(map(str, (*x[:d], idx[0], *x[d + 1:])))}], "
                  f"got {self.source.type}")
        return self.x.type

    def execute(self, x, idx, src):
        d = self.attr("dim") % x.ndim
        if idx.size and (idx.min() < 0 or idx.max() >= x.shape[d]):
            raise IndexError(f"index_copy: a position outside [0, {x.shape[d]}) along dim {d}")
        out = np.array(x, copy=True)
        out[(slice(None),) * d + (idx,)] = src
        return out
