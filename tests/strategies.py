"""Hypothesis strategies shared by the tests: random graph-dialect programs and their inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    Float4E2M1FNType,
    Float8E4M3FNType,
    Float8E8M0FNUType,
    IntegerType,
    ModuleOp,
    Signedness,
    TensorType,
    bf16,
    f16,
    f32,
)
from xdsl.ir import Block, Region

from dialects import graph as g
from dialects.lp import NF4Type, QuantAttr

si4, ui4 = IntegerType(4, Signedness.SIGNED), IntegerType(4, Signedness.UNSIGNED)
QUANT_ATTRS = [
    QuantAttr(si4, 8, f16), QuantAttr(ui4, 4, bf16, "quantized"), QuantAttr(ui4, None, f32, "original"),
    QuantAttr(ui4, 8, f16, "rescale"), QuantAttr(NF4Type(), 8, f32), QuantAttr(Float4E2M1FNType(), 8, Float8E8M0FNUType()),
    QuantAttr(Float8E4M3FNType(), None, f16), QuantAttr(IntegerType(8, Signedness.SIGNED), None, f32),
]

UNARY = [g.NegOp, g.AbsOp, g.ExpOp, g.SinOp, g.CosOp, g.TanhOp, g.ErfOp, g.SigmoidOp, g.ReluOp, g.SiluOp]
BINARY = [g.AddOp, g.SubOp, g.MulOp, g.MaximumOp, g.MinimumOp]


class ProgramBuilder:
    """Grows one function: new arguments on demand, ops appended with inferred types."""

    def __init__(self, draw):
        self.draw = draw
        self.block = Block()
        self.values = []

    def arg(self, shape, elem=f32):
        v = self.block.insert_arg(TensorType(elem, shape), len(self.block.args))
        return v

    def emit(self, cls, *operands, result_type=None, **attrs):
        op = cls.make(*operands, result_type=result_type, **attrs)
        self.block.add_op(op)
        return op.results[0]

    def pick(self, rank_min=0):
        vals = [v for v in self.values if len(v.type.get_shape()) >= rank_min]
        return self.draw(st.sampled_from(vals)) if vals else None

    def step(self):
        d = self.draw
        x = self.pick()
        shape = list(x.type.get_shape())
        kind = d(st.sampled_from(["unary", "binary", "bcast", "linear", "qlinear", "softmax", "norm", "reduce", "permute",
                                  "reshape", "slice", "cat", "matmul", "gelu", "where", "cast", "sdpa", "rope"]))
        if kind == "unary":
            return self.emit(d(st.sampled_from(UNARY)), x)
        if kind == "binary":
            return self.emit(d(st.sampled_from(BINARY)), x, self.arg(shape))
        if kind == "bcast" and shape:
            return self.emit(d(st.sampled_from(BINARY)), x, self.arg([1] * (len(shape) - 1) + [shape[-1]]))
        if kind == "linear" and shape:
            n = d(st.integers(1, 6))
            bias = self.arg([n]) if d(st.booleans()) else None
            return self.emit(g.LinearOp, x, self.arg([n, shape[-1]]), bias)
        if kind == "qlinear" and shape:
            q = d(st.sampled_from(QUANT_ATTRS))
            k = shape[-1] * 8
            xk = self.emit(g.ReshapeOp, self.emit(g.BroadcastOp, self.emit(g.ReshapeOp, x, result_type=TensorType(f32, [*shape, 1])),
                                                  result_type=TensorType(f32, [*shape, 8])), result_type=TensorType(f32, [*shape[:-1], k]))
            n = d(st.integers(1, 4))
            pshape = q.format.param_shape((n, k))
            zeros = None
            if q.zero.data != "none":
                zeros = self.arg(pshape, q.element if q.zero.data == "quantized" else q.scale)
            return self.emit(g.QLinearOp, xk, self.arg([n, k], q.element), self.arg(pshape, q.scale), zeros, format=q)
        if kind == "softmax" and shape:
            return self.emit(g.SoftmaxOp, x, dim=d(st.integers(-len(shape), len(shape) - 1)))
        if kind == "norm" and shape:
            if d(st.booleans()):
                return self.emit(g.RmsNormOp, x, self.arg(shape[-1:]), eps=1e-5)
            return self.emit(g.LayerNormOp, x, self.arg(shape[-1:]), self.arg(shape[-1:]), eps=1e-5)
        if kind == "reduce" and shape:
            dims = d(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True))
            return self.emit(g.ReduceOp, x, kind=d(st.sampled_from(["sum", "mean", "max", "min"])), dims=dims, keepdim=d(st.booleans()))
        if kind == "permute" and shape:
            return self.emit(g.PermuteOp, x, dims=d(st.permutations(range(len(shape)))))
        if kind == "reshape":
            return self.emit(g.ReshapeOp, x, result_type=TensorType(f32, [int(np.prod(shape))]))
        if kind == "slice" and shape:
            dim = d(st.integers(0, len(shape) - 1))
            return self.emit(g.SliceOp, x, dim=dim, start=d(st.integers(0, shape[dim])), step=d(st.integers(1, 2)))
        if kind == "cat" and shape:
            return self.emit(g.CatOp, x, x, dim=d(st.integers(0, len(shape) - 1)))
        if kind == "matmul" and len(shape) >= 2:
            return self.emit(g.MatmulOp, x, self.arg([shape[-1], d(st.integers(1, 5))]))
        if kind == "gelu":
            return self.emit(g.GeluOp, x, approximate=d(st.sampled_from(["none", "tanh"])))
        if kind == "where":
            cond = self.emit(g.CompareOp, x, self.arg(shape), predicate=d(st.sampled_from(["lt", "ge", "eq", "ne"])))
            return self.emit(g.WhereOp, cond, x, self.emit(g.NegOp, x))
        if kind == "cast":
            elem = d(st.sampled_from([f16, bf16, Float8E4M3FNType(), Float4E2M1FNType(), NF4Type()]))
            narrow = self.emit(g.CastOp, x, result_type=TensorType(elem, shape))
            return self.emit(g.CastOp, narrow, result_type=TensorType(f32, shape))
        if kind == "sdpa" and len(shape) >= 2:
            s = d(st.integers(1, 4))
            k = self.arg([*shape[:-2], s, shape[-1]])
            v = self.arg([*shape[:-2], s, d(st.integers(1, 4))])
            return self.emit(g.SdpaOp, x, k, v, causal=d(st.booleans()) and s == shape[-2])
        if kind == "rope" and shape and shape[-1] % 2 == 0:
            return self.emit(g.RopeOp, x, self.arg(shape[-1:]), self.arg(shape[-1:]))
        return None


@st.composite
def graph_programs(draw, max_ops: int = 6) -> ModuleOp:
    """A module with one function @main of random graph ops over f32 tensors (small shapes)."""
    b = ProgramBuilder(draw)
    for _ in range(draw(st.integers(1, 2))):
        b.values.append(b.arg(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, max_ops))):
        v = b.step()
        if v is not None and 0 < int(np.prod(v.type.get_shape())) <= 4096:
            b.values.append(v)
    out = b.values[-1]
    b.block.add_op(func.ReturnOp(out))
    fn = func.FuncOp("main", ([a.type for a in b.block.args], [out.type]), Region(b.block))
    return ModuleOp([fn])


def inputs_for(module: ModuleOp, seed: int) -> list[np.ndarray]:
    """Random inputs of @main's argument types (low-precision ones drawn in range)."""
    from rung.cli import random_inputs

    fn = module.ops.first
    return random_inputs([a.type for a in fn.body.block.args], seed, int_high=4)
