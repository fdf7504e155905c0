"""Convolution and pooling, and the ops that make tensors (constants, arange, full)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    IntegerAttr,
    TensorType,
)
from xdsl.ir import Attribute
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
)

from dialects.graph.base import GivenResultOp, GraphOp, _fail, shape_of
from dialects.graph.linalg import _check_float

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


@irdl_op_definition
class Im2colOp(GraphOp):
    """A convolution's windows as rows: x [N, C, H, W] -> [N * OH * OW, count * KH * KW], row (n, oh, ow) holding
    channels `channels` = [first, count] of the window at (oh, ow), channel-major then (kh, kw), zeros in the
    padding. A conv2d of one channel group is this times the group's weight [O, count * KH * KW] transposed."""

    name = "graph.im2col"
    x = operand_def(TensorType)
    result = result_def(TensorType)
    kernel = prop_def(DenseArrayBase)
    stride = opt_prop_def(DenseArrayBase)
    padding = opt_prop_def(DenseArrayBase)
    dilation = opt_prop_def(DenseArrayBase)
    channels = prop_def(DenseArrayBase)
    ATTRS: ClassVar[dict[str, object]] = {"kernel": None, "stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "channels": None}

    def window(self) -> tuple:
        """(kernel, stride, padding, dilation), each an (h, w) pair."""
        return tuple(_pair(self.attr(a)) for a in ("kernel", "stride", "padding", "dilation"))

    def out_size(self) -> tuple[int, int]:
        """(OH, OW): the windows along each spatial dimension."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.window()
        x = shape_of(self.x.type)
        return _window_out(x[2], kh, sh, ph, dh), _window_out(x[3], kw, sw, pw, dw)

    def infer(self):
        x = shape_of(self.x.type)
        first, count = self.attr("channels")
        if len(x) != 4 or not (0 <= first and count >= 1 and first + count <= x[1]):
            _fail(f"im2col needs x [N, C, H, W] and channels [first, count] inside C, got {list(x)} and {[first, count]}")
        (kh, kw), _, _, _ = self.window()
        oh, ow = self.out_size()
        if oh <= 0 or ow <= 0:
            _fail(f"im2col window {[kh, kw]} does not fit the input {list(x[2:])}")
        return TensorType(self.x.type.element_type, (x[0] * oh * ow, count * kh * kw))

    def execute(self, x):
        first, count = self.attr("channels")
        kernel, stride, padding, dilation = self.window()
        win = _windows(x[:, first:first + count], kernel, stride, padding, dilation)  # [N, count, OH, OW, KH, KW]
        n, c, oh, ow, kh, kw = win.shape
        return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


class Pool2dOp(GraphOp):
    x = operand_def(TensorType)
    result = result_def(TensorType)
    kernel = prop_def(DenseArrayBase)
    stride = opt_prop_def(DenseArrayBase)
    padding = opt_prop_def(DenseArrayBase)
    ATTRS: ClassVar[dict[str, object]] = {"kernel": None, "stride": (), "padding": (0, 0)}

    def window(self) -> tuple:
        """(kernel, stride, padding), each an (h, w) pair."""
        k = _pair(self.attr("kernel"))
        return k, _pair(self.attr("stride") or k), _pair(self.attr("padding"))

    def infer(self):
        x = shape_of(self.x.type)
        if len(x) != 4:
            _fail(f"{self.name} needs x [N, C, H, W], got {list(x)}")
        (kh, kw), (sh, sw), (ph, pw) = self.window()
        oh, ow = _window_out(x[2], kh, sh, ph), _window_out(x[3], kw, sw, pw)
        if oh <= 0 or ow <= 0 or 2 * ph > kh or 2 * pw > kw:
            _fail(f"{self.name} window {[kh, kw]} with padding {[ph, pw]} does not fit the input {list(x[2:])}")
        return TensorType(self.x.type.element_type, (*x[:2], oh, ow))


@irdl_op_definition
class MaxPool2dOp(Pool2dOp):
    """Max over windows (padding counts as -inf)."""

    name = "graph.max_pool2d"

    def execute(self, x):
        return _windows(x, *self.window(), fill=-np.inf).max(axis=(-2, -1))


@irdl_op_definition
class AvgPool2dOp(Pool2dOp):
    """Mean over windows (padding counts as zeros in the mean, torch's count_include_pad)."""

    name = "graph.avg_pool2d"

    def execute(self, x):
        return _windows(x, *self.window()).mean(axis=(-2, -1))


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
