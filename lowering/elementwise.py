"""Elementwise graph ops fused into row programs: a producer-consumer chain is one kernel.

A chain of elementwise ops on f16/bf16 tensors of one shape [..., N] (add, sub, mul, div, maximum,
pow by 1 to 4, neg, exp, rsqrt, relu, sigmoid, silu, tanh, erf, gelu), in which every inner value has one use, becomes one
tile.launch of a row program (`#tile.rows`): the chain's inputs are loaded once, every op is a
tile.map on registers, and only the chain's result is stored, so the intermediate tensors never
reach memory (Welder's memory fusion, for the elementwise case). An input may also be a row
broadcast over the leading dimensions ([N], [1, N], ...), read once; a tensor broadcast over some
of them ([1, 1, S, N] under [B, H, S, N]), each block reading its row through tile.source_row; or a
one-element constant, which folds into the tile.map as its `constant`. The fused kernel's program shows the chain.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern

from dialects import graph as g
from dialects import tile as t
from ir.dtypes import compute_view
from lowering.row_programs import ROW_DTYPES, RowProgram, broadcast_strides, launch_rows, reshaped


def _sigmoid(p: RowProgram, x):
    return p.map("rcp", p.map("add", p.map("exp", p.map("neg", x)), constant=1.0))


def _tanh(p: RowProgram, x):  # 1 - 2 / (e^2x + 1): exact at both ends, where e^2x is 0 or inf
    return p.map("add", p.map("mul", p.map("rcp", p.map("add", p.map("exp", p.map("mul", x, constant=2.0)), constant=1.0)),
                              constant=-2.0), constant=1.0)


def _erf(p: RowProgram, z):
    """erf by Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7): 1 - poly(t) e^(-z^2), t = 1 / (1 + 0.3275911 |z|),
    odd: the sign is z / max(|z|, 1e-30), exact but at z = 0, where the value is 0 either way."""
    size = p.map("max", z, p.map("neg", z))
    t_ = p.map("rcp", p.map("add", p.map("mul", size, constant=0.3275911), constant=1.0))
    poly = p.map("mul", t_, constant=1.061405429)
    for a in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly = p.map("mul", p.map("add", poly, constant=a), t_)
    tail = p.map("mul", poly, p.map("exp", p.map("neg", p.map("mul", size, size))))
    sign = p.map("mul", z, p.map("rcp", p.map("max", size, constant=1e-30)))
    return p.map("mul", p.map("add", p.map("neg", tail), constant=1.0), sign)


def _gelu(p: RowProgram, x, approximate: str):
    """x * Phi(x): 0.5 x (1 + erf(x / sqrt 2)), or with approximate = "tanh" 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    if approximate == "tanh":
        cube = p.map("mul", p.map("mul", x, x), x)
        inner = p.map("mul", p.map("add", x, p.map("mul", cube, constant=0.044715)), constant=math.sqrt(2 / math.pi))
        phi2 = p.map("add", _tanh(p, inner), constant=1.0)
    else:
        phi2 = p.map("add", _erf(p, p.map("mul", x, constant=1 / math.sqrt(2))), constant=1.0)
    return p.map("mul", p.map("mul", x, phi2), constant=0.5)


UNARY = {
    g.NegOp: lambda p, x: p.map("neg", x),
    g.ExpOp: lambda p, x: p.map("exp", x),
    g.RsqrtOp: lambda p, x: p.map("rsqrt", x),
    g.ReluOp: lambda p, x: p.map("max", x, constant=0.0),
    g.SigmoidOp: _sigmoid,
    g.SiluOp: lambda p, x: p.map("mul", x, _sigmoid(p, x)),
    g.TanhOp: _tanh,
    g.ErfOp: _erf,
}
BINARY = {g.AddOp: "add", g.SubOp: "sub", g.MulOp: "mul", g.DivOp: "div", g.MaximumOp: "max", g.PowOp: "pow"}
POWERS = (1.0, 2.0, 3.0, 4.0)  # x ** n as n - 1 multiplies


def _binary(p: RowProgram, fn: str, a, b):
    """fn(a, b) where either may be a Python float (a folded constant), the other a row."""
    if fn == "pow":  # a small whole exponent (fusible checks): a product
        out = a
        for _ in range(int(b) - 1):
            out = p.map("mul", out, a)
        return out
    if isinstance(b, float):
        if fn == "div":
            return p.map("mul", a, constant=1.0 / b)
        return p.map("add", a, constant=-b) if fn == "sub" else p.map(fn, a, constant=b)
    if isinstance(a, float):
        if fn == "sub":
            return p.map("add", p.map("neg", b), constant=a)
        if fn == "div":
            return p.map("mul", p.map("rcp", b), constant=a)
        return p.map(fn, b, constant=a)
    return p.map("mul", a, p.map("rcp", b)) if fn == "div" else p.map(fn, a, b)


def fusible(op: Operation) -> bool:
    """An elementwise op this lowering can take, on f16/bf16 operands of its result's element type."""
    if type(op) not in UNARY and type(op) not in BINARY and not isinstance(op, g.GeluOp):
        return False
    elem = op.results[0].type.element_type
    if isinstance(op, g.PowOp) and splat_value(op.operands[1]) not in POWERS:
        return False
    return str(elem) in ROW_DTYPES and all(v.type.element_type == elem for v in op.operands)


def absorbed(op: Operation) -> bool:
    """Whether `op` is an inner op of a chain: fusible, its one use a fusible op of the same shape."""
    uses = list(op.results[0].uses)
    return (fusible(op) and len(uses) == 1 and fusible(uses[0].operation)
            and uses[0].operation.results[0].type.get_shape() == op.results[0].type.get_shape())


def splat_value(v: SSAValue) -> float | None:
    """The value of a one-element graph.constant, else None."""
    if isinstance(v.owner, g.ConstantOp) and math.prod(v.type.get_shape()) == 1:
        return float(compute_view(np.asarray(v.owner.execute())).reshape(-1)[0])
    return None


class _Chain:
    """The fused program of a chain ending at `root`: its inputs (tensors to load) in order."""

    def __init__(self, root: Operation):
        self.shape = root.results[0].type.get_shape()
        self.cols = self.shape[-1] if self.shape else 1
        self.elem = root.results[0].type.element_type
        self.inputs: list[SSAValue] = []
        self.ops: list[Operation] = []
        self.constants: set[Operation] = set()  # folded into the program; erased once nothing else uses them
        self._collect(root)

    def _collect(self, op: Operation) -> None:
        for v in op.operands:
            if isinstance(v.owner, Operation) and absorbed(v.owner) and v.owner not in self.ops:
                self._collect(v.owner)
            elif splat_value(v) is not None:
                self.constants.add(v.owner)
            elif v not in self.inputs:
                self.inputs.append(v)
        self.ops.append(op)

    def broadcast(self, v: SSAValue) -> bool:
        """An input read as one row for every row: [N] or [1, ..., 1, N] under a result of more rows."""
        shape = v.type.get_shape()
        return shape != self.shape and len(shape) >= 1 and shape[-1] == self.cols and math.prod(shape[:-1]) == 1

    def source_strides(self, v: SSAValue) -> list[int] | None:
        return broadcast_strides(v.type.get_shape(), self.shape)

    def kind(self, v: SSAValue) -> str:
        """How the program reads input v: 'rows' (one per result row), 'row' (one for all) or 'broadcast'."""
        return "rows" if v.type.get_shape() == self.shape else "row" if self.broadcast(v) else "broadcast"

    def supported(self) -> bool:
        return bool(self.shape) and all(self.kind(v) != "broadcast" or self.source_strides(v) is not None for v in self.inputs)

    def program(self) -> tuple[t.KernelOp, list[str]]:
        dtype = str(self.elem)
        kinds = [self.kind(v) for v in self.inputs]
        p = RowProgram("", self.cols, [t.generic_tensor(self.elem, 1 if k == "row" else 2) for k in kinds] + [t.generic_tensor(self.elem)])
        rows = {v: p.load(arg, per_row=False) if k == "row" else
                p.load(arg, row=p.source_row(self.shape[:-1], self.source_strides(v))) if k == "broadcast" else p.load(arg)
                for v, arg, k in zip(self.inputs, p.block.args, kinds)}
        values = {}

        def value(v: SSAValue):
            return values[v] if v in values else rows[v] if v in rows else splat_value(v)

        for op in self.ops:
            args = [value(v) for v in op.operands]
            if isinstance(op, g.GeluOp):
                values[op.results[0]] = _gelu(p, *args, op.attr("approximate"))
            else:
                values[op.results[0]] = UNARY[type(op)](p, *args) if type(op) in UNARY else _binary(p, BINARY[type(op)], *args)
        kernel = p.store(values[self.ops[-1].results[0]])
        body = "".join(str(o) for o in kernel.body.block.ops)  # the program names its kernel: one kernel per distinct chain
        names = "_".join(o.name.split(".")[-1] for o in self.ops)[:40]
        kernel.properties["sym_name"] = StringAttr(f"rung_ew_{names}_{dtype}_n{self.cols}_{hashlib.sha1(body.encode()).hexdigest()[:8]}")
        return kernel, kinds


class ElementwiseToTile(RewritePattern):
    """The last op of a fusible chain -> tile.launch of the chain's row program (inner ops go with it)."""

    def match_and_rewrite(self, op, rewriter: PatternRewriter):
        if not fusible(op) or absorbed(op):
            return
        chain = _Chain(op)
        if not chain.supported():
            return
        kernel, kinds = chain.program()
        vectors = [v if k == "rows" else reshaped(rewriter, v, [chain.cols] if k == "row" else [math.prod(v.type.get_shape()[:-1]), chain.cols])
                   for v, k in zip(chain.inputs, kinds)]
        launch_rows(rewriter, op, kernel, vectors)
        for inner in reversed(chain.ops[:-1]):
            rewriter.erase_op(inner)
        for constant in chain.constants:
            if not constant.results[0].uses:
                rewriter.erase_op(constant)

