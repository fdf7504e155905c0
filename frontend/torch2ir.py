"""torch2ir: a PyTorch model to Rung `graph` IR, through torch.export.

    python -m frontend.torch2ir model.py [-o model.mlir] [--check] [--summary]

model.py defines `model()` returning an nn.Module and `example_inputs()` returning a tuple
of tensors (and optionally `example_kwargs()` returning a dict). The model is exported with
torch.export, decomposed to core ATen except for the ops Rung keeps whole (linear, sdpa,
layer_norm, softmax, conv2d, ...), and converted op by op. The IR function @main takes the
model's parameters, buffers and constants first (named after them), then the user inputs;
the weights are written beside the IR as an .npz file. A buffer the model does not save (registered
with persistent=False: what its own code computes, such as a rotary embedding's inverse
frequencies) of up to INLINE_ELEMENTS elements is a graph.constant instead, so what is built from
it folds at compile time.

Models from `transformers` are exported with `use_cache=False` when their forward takes
`use_cache` and the example kwargs do not set it: a traced program has no cache object to
return.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

if __name__ == "__main__" and Path.cwd() != Path(__file__).parents[1]:
    # `python -m` puts the current directory first on sys.path: a file there (an ml_dtypes.py) must not
    # shadow an installed module (unless the current directory is this checkout, which holds Rung itself)
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]

import numpy as np  # noqa: E402
from xdsl.dialects import func  # noqa: E402
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, TensorType  # noqa: E402
from xdsl.ir import Block, Region, SSAValue  # noqa: E402

from dialects import graph as g  # noqa: E402
from frontend.loading import DTYPES, cast_model, export, load_model_file  # noqa: E402
from frontend.transforms import dense_weights, fold_batch_norms, transform_weights  # noqa: E402
from ir.errors import RungError, run_tool, writing  # noqa: E402
from ir.format_text import FORMATS_OPTION_HELP, load_format_files  # noqa: E402
from ir.numerics import EightBitFormat  # noqa: E402
from ir.syntax import ssa_name  # noqa: E402
from lowering.fold_constants import constant_op  # noqa: E402

# --- types -----------------------------------------------------------------------------------------


def element_type(dtype):
    import torch
    from xdsl.dialects.builtin import Float8E4M3FNType, Float8E5M2Type, IntegerType, Signedness, bf16, f16, f32, f64, i1, i32, i64

    table = {
        torch.float32: f32, torch.float16: f16, torch.bfloat16: bf16, torch.float64: f64,
        torch.int64: i64, torch.int32: i32, torch.int16: IntegerType(16), torch.int8: IntegerType(8),
        torch.uint8: IntegerType(8, Signedness.UNSIGNED), torch.bool: i1,
        torch.float8_e4m3fn: Float8E4M3FNType(), torch.float8_e5m2: Float8E5M2Type(),
    }
    if dtype not in table:
        raise RungError(f"dtype {dtype} has no Rung element type")
    return table[dtype]


def _static_shape(shape, where: str) -> list[int]:
    try:
        return [int(d) for d in shape]
    except (TypeError, ValueError):
        raise RungError(f"{where}: dynamic shape {list(shape)} (Rung compiles static shapes)") from None


def _np(t) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


# --- conversion ----------------------------------------------------------------------------------


def _source_line(node) -> str:
    """`file:line (code)` of the innermost model source frame that made `node`, or the source a frontend annotated
    its ops with (`rung_source`: onnx2ir's node names)."""
    annotated = (node.meta.get("custom") or {}).get("rung_source")
    if annotated:
        return annotated
    frames = re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)', node.meta.get("stack_trace") or "")
    if not frames:
        return "<unknown source>"
    f, line, code = frames[-1]
    return f"{f}:{line} ({code.strip()})"


class Converter:
    """Walks an exported FX graph and emits graph ops into one function block."""

    def __init__(self, ep):
        self.ep = ep
        self.block: Block | None = None
        self.env: dict = {}

    # helpers --------------------------------------------------------------------------------
    def type_of(self, node) -> TensorType:
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise RungError(f"{_source_line(node)}: {node.target} does not produce a tensor")
        return TensorType(element_type(val.dtype), _static_shape(val.shape, _source_line(node)))

    def emit(self, cls, *operands, result_type=None, **attrs) -> SSAValue:
        op = cls.make(*operands, result_type=result_type, **attrs)
        self.block.add_op(op)
        return op.results[0]

    def const(self, value, elem) -> SSAValue:
        t = TensorType(elem, [])
        v = bool(value) if str(elem) == "i1" else value
        return self.emit(g.ConstantOp, result_type=t, value=DenseIntOrFPElementsAttr.from_list(t, [v]))

    def cast(self, v: SSAValue, elem) -> SSAValue:
        if v.type.element_type == elem:
            return v
        return self.emit(g.CastOp, v, result_type=TensorType(elem, v.type.get_shape()))

    def operand(self, arg, elem) -> SSAValue:
        """An argument (node or Python number) as a value of element type `elem`."""
        import torch.fx

        if isinstance(arg, torch.fx.Node):
            return self.cast(self.env[arg], elem)
        if isinstance(arg, (bool, int, float)):
            return self.const(arg, elem)
        raise RungError(f"cannot use {arg!r} as a tensor operand")

    def promoted(self, a, b):
        """torch's result element type of elementwise `a` op `b` (nodes or Python numbers)."""
        import torch
        import torch.fx

        def probe(x):
            if isinstance(x, torch.fx.Node):
                v = x.meta["val"]
                return torch.empty((1,) if v.dim() else (), dtype=v.dtype)  # rank 0 promotes differently
            return x

        return element_type(torch.result_type(probe(a), probe(b)))

    # the walk ----------------------------------------------------------------------------------
    def convert(self) -> tuple[ModuleOp, dict[str, np.ndarray], list[str]]:
        import torch.fx
        from torch.export.graph_signature import InputKind

        sig = self.ep.graph_signature
        placeholders = [n for n in self.ep.graph.nodes if n.op == "placeholder"]
        weights: dict[str, np.ndarray] = {}
        names, types = [], []
        tokens = {node for spec, node in zip(sig.input_specs, placeholders) if spec.kind == InputKind.TOKEN}
        inline = {}  # placeholder -> the value of a buffer the model computes itself (module docstring)
        mutated = set(sig.buffers_to_mutate.values())  # updated in place (a KV cache): an argument, never a constant
        for spec, node in zip(sig.input_specs, placeholders):
            if node in tokens:  # threads a side effect through the program: the op that has it is refused below
                continue
            if (spec.kind == InputKind.BUFFER and not spec.persistent and spec.target not in mutated
                    and self.ep.constants[spec.target].numel() <= INLINE_ELEMENTS):
                inline[node] = _np(self.ep.constants[spec.target])
                continue
            if spec.kind == InputKind.USER_INPUT:
                if not hasattr(node.meta.get("val"), "shape"):
                    if node.users:
                        raise RungError(f"input '{node.name}' is not a tensor; Rung takes tensor inputs only")
                    continue  # a Python constant that torch.export specialized away (e.g. use_cache)
                names.append(node.name)
            else:
                tensor = self.ep.state_dict.get(spec.target) if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER) else None
                if tensor is None:
                    tensor = self.ep.constants[spec.target]
                weights[spec.target] = _np(tensor)
                names.append(spec.target)
            types.append(self.type_of(node))
        self.block = Block(arg_types=types)
        for node, value in inline.items():
            self.block.add_op(constant := constant_op(value, self.type_of(node)))
            self.env[node] = constant.results[0]
            constant.results[0].name_hint = ssa_name(node.name)
        tensors = [n for n in placeholders if hasattr(n.meta.get("val"), "shape") and n not in tokens and n not in inline]
        for arg, node, name in zip(self.block.args, tensors, names):
            arg.name_hint = ssa_name(name)
            self.env[node] = arg
        results = []
        for node in self.ep.graph.nodes:
            if node.op == "call_function":
                self.env[node] = self.call(node)
                if isinstance(self.env[node], SSAValue) and self.env[node].name_hint is None:
                    self.env[node].name_hint = node.name
            elif node.op == "output":
                outs = [o for o in torch.fx.node.map_arg(node.args[0], lambda n: n) if o is not None]
                results = [self.env[o] for o in outs if isinstance(o, torch.fx.Node)]
        if not results:
            raise RungError("the model's forward returns no tensor (None, or only Python values): there is nothing to compile or check")
        self.block.add_op(func.ReturnOp(*results))
        fn = func.FuncOp("main", ([a.type for a in self.block.args], [r.type for r in results]), Region(self.block))
        return ModuleOp([fn]), weights, names

    def call(self, node):
        import operator

        if node.target is operator.getitem:
            return self.env[node.args[0]][node.args[1]]
        name = getattr(node.target, "__name__", str(node.target))  # e.g. "linear.default"
        if name in _IGNORED:
            return None
        handler = _HANDLERS.get(name)
        if handler is None:
            raise RungError(f"{_source_line(node)}: unsupported op aten.{name} (docs/reference.md lists the supported ops)")
        try:
            return handler(self, node, *node.args, **node.kwargs)
        except RungError:
            raise
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RungError(f"{_source_line(node)}: cannot convert aten.{name}: {msg}") from None


# --- op handlers: aten overload name -> function(converter, node, *args, **kwargs) ----------------

_HANDLERS: dict = {}
INLINE_ELEMENTS = 1 << 16  # the largest unsaved buffer that becomes a graph.constant (module docstring)
_IGNORED = {"_assert_tensor_metadata.default", "_assert_scalar.default", "sym_constrain_range_for_size.default"}


def handles(*names):
    def register(fn):
        for n in names:
            _HANDLERS[n] = fn
        return fn

    return register


def _unary(cls):
    def convert(c: Converter, node, x, *rest, **kw):
        return c.emit(cls, c.operand(x, c.type_of(node).element_type))

    return convert


for _name, _cls in {
    "neg": g.NegOp, "abs": g.AbsOp, "exp": g.ExpOp, "log": g.LogOp, "sqrt": g.SqrtOp, "rsqrt": g.RsqrtOp,
    "sin": g.SinOp, "cos": g.CosOp, "tanh": g.TanhOp, "erf": g.ErfOp, "sigmoid": g.SigmoidOp, "relu": g.ReluOp,
    "silu": g.SiluOp,
}.items():
    _HANDLERS[f"{_name}.default"] = _unary(_cls)


@handles("gelu.default")
def _gelu(c, node, x, approximate="none"):
    return c.emit(g.GeluOp, c.env[x], approximate=approximate)


def _binary(cls, compare: str | None = None):
    def convert(c: Converter, node, a, b, alpha=1, **kw):
        elem = c.promoted(a, b)
        va, vb = c.operand(a, elem), c.operand(b, elem)
        if alpha != 1:
            vb = c.emit(g.MulOp, vb, c.const(alpha, elem))
        if compare:
            return c.emit(g.CompareOp, va, vb, predicate=compare)
        return c.cast(c.emit(cls, va, vb), c.type_of(node).element_type)

    return convert


for _name, _cls in {"add": g.AddOp, "sub": g.SubOp, "mul": g.MulOp, "div": g.DivOp, "maximum": g.MaximumOp,
                    "minimum": g.MinimumOp, "remainder": g.RemOp}.items():
    for _ov in ("Tensor", "Scalar", "default"):
        _HANDLERS[f"{_name}.{_ov}"] = _binary(_cls)
for _pred in ("eq", "ne", "lt", "le", "gt", "ge"):
    for _ov in ("Tensor", "Scalar"):
        _HANDLERS[f"{_pred}.{_ov}"] = _binary(None, compare=_pred)


@handles("rsub.Scalar", "rsub.Tensor")
def _rsub(c, node, a, b, alpha=1):
    return _binary(g.SubOp)(c, node, b, a, alpha)


@handles("pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar")
def _pow(c, node, a, b):
    elem = c.type_of(node).element_type
    return c.emit(g.PowOp, c.operand(a, elem), c.operand(b, elem))


@handles("bitwise_and.Tensor", "logical_and.default", "bitwise_or.Tensor", "logical_or.default")
def _logical(c, node, a, b):
    from xdsl.dialects.builtin import i1

    if c.type_of(node).element_type != i1:
        raise RungError(f"{_source_line(node)}: bitwise ops on integers are not supported (only on bool tensors)")
    cls = g.LogicalAndOp if "and" in node.target.__name__ else g.LogicalOrOp
    return c.emit(cls, c.operand(a, i1), c.operand(b, i1))


@handles("bitwise_not.default", "logical_not.default")
def _not(c, node, x):
    from xdsl.dialects.builtin import i1

    return c.emit(g.LogicalNotOp, c.operand(x, i1))


@handles("where.self")
def _where(c, node, cond, a, b):
    from xdsl.dialects.builtin import i1

    elem = c.type_of(node).element_type
    return c.emit(g.WhereOp, c.operand(cond, i1), c.operand(a, elem), c.operand(b, elem))


@handles("masked_fill.Scalar", "masked_fill.Tensor")
def _masked_fill(c, node, x, mask, value):
    from xdsl.dialects.builtin import i1

    elem = c.type_of(node).element_type
    return c.emit(g.WhereOp, c.operand(mask, i1), c.operand(value, elem), c.operand(x, elem))


@handles("clamp.default")
def _clamp(c, node, x, lo=None, hi=None):
    elem = c.type_of(node).element_type
    v = c.operand(x, elem)
    if lo is not None:
        v = c.emit(g.MaximumOp, v, c.operand(lo, elem))
    if hi is not None:
        v = c.emit(g.MinimumOp, v, c.operand(hi, elem))
    return v


@handles("_to_copy.default", "to.dtype", "to.dtype_layout", "type_as.default")
def _to(c, node, x, *args, **kw):
    return c.cast(c.env[x], c.type_of(node).element_type)


@handles("clone.default", "alias.default", "contiguous.default", "detach.default", "lift_fresh_copy.default", "dropout.default")
def _identity(c, node, x, *args, **kw):
    return c.env[x]


@handles("view.default", "reshape.default", "_unsafe_view.default", "unsqueeze.default", "squeeze.dim", "squeeze.dims",
         "squeeze.default", "flatten.using_ints")
def _reshape(c, node, x, *args):
    t = c.type_of(node)
    return c.env[x] if c.env[x].type == t else c.emit(g.ReshapeOp, c.env[x], result_type=t)


@handles("expand.default", "broadcast_to.default")
def _expand(c, node, x, *args):
    t = c.type_of(node)
    return c.env[x] if c.env[x].type == t else c.emit(g.BroadcastOp, c.env[x], result_type=t)


@handles("permute.default")
def _permute(c, node, x, dims):
    rank = len(c.env[x].type.get_shape())
    return c.emit(g.PermuteOp, c.env[x], dims=[d % rank for d in dims])


@handles("transpose.int")
def _transpose(c, node, x, d0, d1):
    rank = len(c.env[x].type.get_shape())
    dims = list(range(rank))
    dims[d0 % rank], dims[d1 % rank] = dims[d1 % rank], dims[d0 % rank]
    return c.emit(g.PermuteOp, c.env[x], dims=dims)


@handles("t.default", "numpy_T.default")
def _t(c, node, x):
    rank = len(c.env[x].type.get_shape())
    return c.env[x] if rank < 2 else c.emit(g.PermuteOp, c.env[x], dims=list(reversed(range(rank))))


@handles("slice.Tensor")
def _slice(c, node, x, dim=0, start=None, end=None, step=1):
    v = c.env[x]
    if v.type == c.type_of(node):
        return v
    return c.emit(g.SliceOp, v, dim=dim, start=start or 0, end=min(end, 2**62) if end is not None else None, step=step)


@handles("select.int")
def _select(c, node, x, dim, index):
    v = c.env[x]
    n = v.type.get_shape()[dim]
    index %= n
    s = c.emit(g.SliceOp, v, dim=dim, start=index, end=index + 1)
    return c.emit(g.ReshapeOp, s, result_type=c.type_of(node))


@handles("split_with_sizes.default", "split.Tensor")
def _split(c, node, x, sizes, dim=0):
    v = c.env[x]
    n = v.type.get_shape()[dim]
    if isinstance(sizes, int):
        sizes = [min(sizes, n - i) for i in range(0, n, sizes)]
    outs, start = [], 0
    for s in sizes:
        outs.append(c.emit(g.SliceOp, v, dim=dim, start=start, end=start + s))
        start += s
    return tuple(outs)


@handles("cat.default")
def _cat(c, node, tensors, dim=0):
    elem = c.type_of(node).element_type
    vals = [c.operand(t, elem) for t in tensors if math.prod(t.meta["val"].shape) or len(tensors) == 1]
    return c.emit(g.CatOp, *vals, dim=dim)


@handles("arange.default", "arange.start", "arange.start_step")
def _arange(c, node, *args, **kw):
    start, step = (0, 1) if len(args) == 1 else (args[0], args[2] if len(args) > 2 else 1)
    return c.emit(g.ArangeOp, result_type=c.type_of(node), start=start, step=step)


@handles("full.default", "new_full.default", "full_like.default", "scalar_tensor.default")
def _full(c, node, *args, **kw):
    value = args[0] if "scalar_tensor" in str(node.target) else args[1]
    return c.emit(g.FullOp, result_type=c.type_of(node), value=value)


@handles("zeros.default", "new_zeros.default", "zeros_like.default", "ones.default", "new_ones.default", "ones_like.default")
def _fill(c, node, *args, **kw):
    value = 1 if "ones" in str(node.target) else 0
    return c.emit(g.FullOp, result_type=c.type_of(node), value=value)


@handles("cumsum.default")
def _cumsum(c, node, x, dim, dtype=None):
    return c.emit(g.CumsumOp, c.operand(x, c.type_of(node).element_type), dim=dim)


@handles("index.Tensor")
def _index(c, node, x, indices):
    present = [i for i, t in enumerate(indices) if t is not None]
    if len(present) == 1 and len(indices) == present[0] + 1:
        return c.emit(g.IndexSelectOp, c.env[x], c.env[indices[present[0]]], dim=present[0])
    if len(present) != len(indices):
        raise RungError(f"{_source_line(node)}: indexing with None between index tensors is not supported")
    return c.emit(g.IndexOp, c.env[x], *(c.env[t] for t in indices))


@handles("index_put.default")
def _index_put(c, node, x, indices, values, accumulate=False):
    """x[..., index, ...] = values with one 1-D index tensor (a KV cache's index_copy_ at the token positions)."""
    present = [i for i, t in enumerate(indices) if t is not None]
    if accumulate or len(present) != 1 or len(indices) != present[0] + 1:
        raise RungError(f"{_source_line(node)}: index_put is supported as an index_copy (one index tensor, no accumulate)")
    return _index_copy(c, node, x, present[0], indices[present[0]], values)


@handles("index_copy.default")
def _index_copy(c, node, x, dim, index, source):
    elem = c.type_of(node).element_type
    return c.emit(g.IndexCopyOp, c.env[x], c.env[index], c.operand(source, elem), dim=dim)


@handles("index_select.default")
def _index_select(c, node, x, dim, index):
    return c.emit(g.IndexSelectOp, c.env[x], c.env[index], dim=dim)


@handles("gather.default")
def _gather(c, node, x, dim, index):
    return c.emit(g.GatherOp, c.env[x], c.env[index], dim=dim)


def _reduce(kind):
    def convert(c, node, x, dims=None, keepdim=False, **kw):
        rank = len(c.env[x].type.get_shape())
        dims = list(range(rank)) if not dims else [dims] if isinstance(dims, int) else list(dims)
        elem = c.type_of(node).element_type
        return c.emit(g.ReduceOp, c.operand(x, elem), kind=kind, dims=dims, keepdim=keepdim)

    return convert


_HANDLERS.update({"mean.dim": _reduce("mean"), "sum.dim_IntList": _reduce("sum"), "amax.default": _reduce("max"),
                  "amin.default": _reduce("min"), "mean.default": _reduce("mean"), "sum.default": _reduce("sum")})


@handles("linear.default")
def _linear(c, node, x, w, b=None):
    return c.emit(g.LinearOp, c.env[x], c.env[w], c.env[b] if b is not None else None)


@handles("addmm.default")
def _addmm(c, node, bias, a, b, beta=1, alpha=1):
    elem = c.type_of(node).element_type
    mm = c.emit(g.MatmulOp, c.env[a], c.env[b])
    if alpha != 1:
        mm = c.emit(g.MulOp, mm, c.const(alpha, elem))
    vb = c.env[bias] if beta == 1 else c.emit(g.MulOp, c.env[bias], c.const(beta, elem))
    return c.emit(g.AddOp, mm, vb)


@handles("mm.default", "bmm.default", "matmul.default")
def _matmul(c, node, a, b):
    va, vb = c.env[a], c.env[b]
    if len(va.type.get_shape()) < 2 or len(vb.type.get_shape()) < 2:
        raise RungError(f"{_source_line(node)}: matmul of a 1-D tensor is not supported; reshape it to 2-D")
    return c.emit(g.MatmulOp, va, vb)


@handles("scaled_dot_product_attention.default")
def _sdpa(c, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    vq, vk, vv = c.env[q], c.env[k], c.env[v]
    if enable_gqa:
        heads = vq.type.get_shape()[-3]
        vk, vv = (_repeat_heads(c, t, heads) for t in (vk, vv))
    mask = c.env[attn_mask] if attn_mask is not None else None
    return c.emit(g.SdpaOp, vq, vk, vv, mask, causal=bool(is_causal), scale=scale)


def _repeat_heads(c, t: SSAValue, heads: int) -> SSAValue:
    *b, h, s, e = t.type.get_shape()
    elem = t.type.element_type
    if h == heads:
        return t
    t = c.emit(g.ReshapeOp, t, result_type=TensorType(elem, [*b, h, 1, s, e]))
    t = c.emit(g.BroadcastOp, t, result_type=TensorType(elem, [*b, h, heads // h, s, e]))
    return c.emit(g.ReshapeOp, t, result_type=TensorType(elem, [*b, heads, s, e]))


@handles("embedding.default")
def _embedding(c, node, w, idx, *args):
    return c.emit(g.EmbeddingOp, c.env[w], c.env[idx])


def _ones_or(c, arg, n: int, elem, fill: float) -> SSAValue:
    return c.env[arg] if arg is not None else c.emit(g.FullOp, result_type=TensorType(elem, [n]), value=fill)


@handles("layer_norm.default")
def _layer_norm(c, node, x, shape, w=None, b=None, eps=1e-5, *args):
    if len(shape) != 1:
        raise RungError(f"{_source_line(node)}: layer_norm over {len(shape)} dims is not supported (only the last dim)")
    elem = c.type_of(node).element_type
    return c.emit(g.LayerNormOp, c.env[x], _ones_or(c, w, shape[0], elem, 1.0), _ones_or(c, b, shape[0], elem, 0.0), eps=eps)


@handles("rms_norm.default")
def _rms_norm(c, node, x, shape, w=None, eps=None):
    if len(shape) != 1:
        raise RungError(f"{_source_line(node)}: rms_norm over {len(shape)} dims is not supported (only the last dim)")
    elem = c.type_of(node).element_type
    if eps is None:
        import torch

        eps = torch.finfo(node.meta["val"].dtype).eps
    return c.emit(g.RmsNormOp, c.env[x], _ones_or(c, w, shape[0], elem, 1.0), eps=eps)


@handles("softmax.int", "_softmax.default")
def _softmax(c, node, x, dim, *args):
    return c.emit(g.SoftmaxOp, c.operand(x, c.type_of(node).element_type), dim=dim)


@handles("conv2d.default")
def _conv2d(c, node, x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    if isinstance(padding, str):
        raise RungError(f"{_source_line(node)}: conv2d padding='{padding}' is not supported; give the padding in pixels")
    return c.emit(g.Conv2dOp, c.env[x], c.env[w], c.env[b] if b is not None else None,
                  stride=list(stride), padding=list(padding), dilation=list(dilation), groups=groups)


@handles("_native_batch_norm_legit_no_training.default")
def _batch_norm(c, node, x, w, b, mean, var, momentum, eps):
    n = c.env[x].type.get_shape()[1]
    elem = c.env[x].type.element_type
    out = c.emit(g.BatchNormOp, c.env[x], c.env[mean], c.env[var], _ones_or(c, w, n, elem, 1.0), _ones_or(c, b, n, elem, 0.0), eps=eps)
    return (out, None, None)


@handles("max_pool2d_with_indices.default", "max_pool2d.default")
def _max_pool(c, node, x, kernel, stride=(), padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    if any(d != 1 for d in dilation) or ceil_mode:
        raise RungError(f"{_source_line(node)}: max_pool2d with dilation or ceil_mode is not supported")
    out = c.emit(g.MaxPool2dOp, c.env[x], kernel=list(kernel), stride=list(stride) or None, padding=list(padding))
    return (out, None) if "indices" in str(node.target) else out


@handles("avg_pool2d.default")
def _avg_pool(c, node, x, kernel, stride=(), padding=(0, 0), ceil_mode=False, count_include_pad=True, divisor_override=None):
    if ceil_mode or not count_include_pad or divisor_override:
        raise RungError(f"{_source_line(node)}: avg_pool2d with ceil_mode, count_include_pad=False or divisor_override is not supported")
    return c.emit(g.AvgPool2dOp, c.env[x], kernel=list(kernel), stride=list(stride) or None, padding=list(padding))


@handles("adaptive_avg_pool2d.default", "_adaptive_avg_pool2d.default")
def _adaptive_avg_pool(c, node, x, size):
    h, w = c.env[x].type.get_shape()[2:]
    oh, ow = (size, size) if isinstance(size, int) else size
    if h % oh or w % ow:
        raise RungError(f"{_source_line(node)}: adaptive_avg_pool2d from {[h, w]} to {[oh, ow]} needs sizes that divide")
    return c.emit(g.AvgPool2dOp, c.env[x], kernel=[h // oh, w // ow])


# --- the command ---------------------------------------------------------------------------------------


def torch_to_ir(model, args, kwargs=None, progress=lambda msg: None):
    """(module, weights, argument names) of a torch model on example inputs; a batch norm after a convolution
    is folded into it (frontend.transforms.fold_batch_norms)."""
    t0 = time.perf_counter()
    progress("exporting with torch.export ...")
    ep = export(model, args, kwargs or {})
    progress(f"exported in {time.perf_counter() - t0:.1f} s; converting {len(ep.graph.nodes)} FX nodes ...")
    module, weights, names = Converter(ep).convert()
    names, weights = fold_batch_norms(module, names, weights)
    return module, weights, names


def located(error: RungError, model, args, kwargs=None) -> RungError:
    """`error` (about an op of the program torch_to_ir made) with the model's source line in front where it names
    the op's result (`(%name)`, the traced node's name): the model is traced again to find that node."""
    named = re.search(r"\(%([\w.$-]+)\)", str(error))
    if named is None:
        return error
    nodes = [n for n in export(model, args, kwargs or {}).graph.nodes if ssa_name(n.name) == named.group(1)]
    return RungError(f"{_source_line(nodes[0])}: {error}") if nodes else error


def inputs_for(names, weights, args, kwargs=None) -> list[np.ndarray]:
    """The interpreter's inputs of @main: weights by name, then the user inputs in order."""
    import torch

    import torch.utils._pytree as pytree

    user = iter(a for a in pytree.tree_leaves((args, kwargs or {})) if isinstance(a, torch.Tensor))
    return [weights[n] if n in weights else _np(next(user)) for n in names]


def summary(module: ModuleOp, weights: dict[str, np.ndarray]) -> str:
    fn = module.ops.first
    counts = Counter(op.name for op in fn.walk() if op.name.startswith("graph."))
    n_params = sum(w.size for w in weights.values())
    lines = [f"@main: {len(fn.body.block.args)} arguments ({len(weights)} weights, {n_params:,} parameters), "
             f"{sum(counts.values())} graph ops, {len(fn.function_type.outputs)} results"]
    lines += [f"  {n:24} {k}" for n, k in counts.most_common()]
    return "\n".join(lines)


def torch_outputs(model, args, kwargs) -> list:
    """The tensors a forward of `model` returns, in the order @main returns them (a model output's tensor leaves)."""
    import torch
    import torch.utils._pytree as pytree

    with torch.no_grad():
        return [t for t in pytree.tree_leaves(model(*args, **kwargs)) if isinstance(t, torch.Tensor)]


def check(module, names, weights, model, args, kwargs) -> float:
    """Max relative error (max |rung - torch| / max |torch|) over the outputs."""
    from ir.interpreter import run

    return output_error(run(module, inputs_for(names, weights, args, kwargs)), torch_outputs(model, args, kwargs))


def output_error(got, want: list) -> float:
    """The largest relative error over a program's outputs (`got`: an array or tensor, or a sequence of them)
    against PyTorch's (`want`, torch_outputs)."""
    got = got if isinstance(got, (tuple, list)) else (got,)
    if len(got) != len(want):
        raise RungError(f"the program returns {len(got)} results, PyTorch {len(want)}")
    return max((relative_error(_np(a) if hasattr(a, "detach") else a, _np(b)) for a, b in zip(got, want)), default=0.0)


TOLERANCE = {"f32": 1e-4, "f16": 1e-2, "bf16": 5e-2}  # the largest relative error a check accepts, by the model's type
EIGHT_BIT_TOLERANCE = 5e-2  # W8A8 and FP8: the activations' rounding per token, which the reference model leaves out


def relative_error(got, want) -> float:
    """max |got - want| / max |want| (0 for empty tensors): the error torch2ir --check and rung-run report."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)) if want.size else 0.0


def with_weights(model, dense: dict[str, np.ndarray]):
    """A copy of `model` holding `dense` weights by name (frontend.transforms.dense_weights: what a quantized or
    sparse program computes with): what --check compares such a program with (W8A8 and FP8: their weights alone,
    the activations' rounding left to the tolerance)."""
    import copy

    import torch

    model = copy.deepcopy(model)
    state = model.state_dict()
    for name, values in dense.items():
        state[name].copy_(torch.from_numpy(np.asarray(values, np.float32)))
    return model


def emit(module: ModuleOp, weights: dict, output: str | None, show_summary: bool, progress) -> None:
    """The IR into `output` with its weights beside it as .npz (both files whole, or neither) and its summary on
    stdout; without `output`, the IR (or, `show_summary`, its summary) on stdout."""
    from ir.syntax import print_ir

    text = print_ir(module)
    if output:
        out, npz = Path(output), Path(output).with_suffix(".npz")
        with writing(out):
            out.with_name(out.name + ".tmp").write_text(text)
            with open(npz.with_name(npz.name + ".tmp"), "wb") as f:
                np.savez(f, **weights)
            os.replace(out.with_name(out.name + ".tmp"), out)
            os.replace(npz.with_name(npz.name + ".tmp"), npz)
        progress(f"wrote {out} and {npz}")
    if show_summary or output:
        print(summary(module, weights))
    else:
        sys.stdout.write(text)


def main(argv=None) -> int:
    from ir.syntax import verify

    p = argparse.ArgumentParser(prog="python -m frontend.torch2ir", description="Convert a PyTorch model to Rung graph IR.")
    p.add_argument("model", help="model.py defining model() and example_inputs()")
    p.add_argument("-o", "--output", help="write the IR here (and the weights beside it as .npz)")
    p.add_argument("--check", action="store_true", help="run the IR on the interpreter and compare with PyTorch")
    p.add_argument("--dtype", choices=DTYPES, help="convert the model's floating-point weights and inputs to this type first "
                   "(f16 or bf16 is what the GPU kernels take; default: as the model is)")
    p.add_argument("--tol", type=float, help="largest relative error --check accepts (default 1e-4, with --dtype f16 1e-2, bf16 "
                   "5e-2; with --quantize, against the model with the same quantization done in PyTorch; w8a8 and fp8 at least 5e-2)")
    p.add_argument("--summary", action="store_true", help="print a summary of the IR instead of the IR")
    p.add_argument("--quantize", metavar="FORMAT", help="turn linears into graph.qlinear on weights quantized to FORMAT "
                   "(a preset such as int4, uint4, nf4, mxfp4, or an element format such as int2, e4m3; w8a8 and fp8 become "
                   "graph.qlinear8, which quantizes the activations per token too)")
    p.add_argument("--group", type=int, help="with --quantize: elements of K per scale (0: one per output channel; default: the "
                   "format's own, 128 for int4, 32 for MX formats)")
    p.add_argument("--sparsify", type=float, metavar="S", help="prune linears' weights by magnitude to sparsity S in [0, 1) "
                   "into graph.sparse_linear (Tiled-CSL); with --quantize, the kept values quantized too")
    p.add_argument("--keep", metavar="PATTERNS", help="with --quantize or --sparsify: weights left as they are, comma-separated "
                   "fnmatch patterns of their names (e.g. '*lm_head*')")
    p.add_argument("--sparsify-per", choices=("row", "tensor"), default="row", help="with --sparsify: prune each output row "
                   "(the default) or the whole tensor to S")
    p.add_argument("--format-file", metavar="FILE", action="append", default=[], dest="format_files", help=FORMATS_OPTION_HELP + " (--quantize may name them)")
    args = p.parse_args(argv)

    def progress(msg):
        print(f"torch2ir: {msg}", file=sys.stderr, flush=True)

    def work() -> int:
        load_format_files(args.format_files)
        progress(f"loading {args.model}")
        model, inputs, kwargs = load_model_file(args.model)
        if args.dtype:
            model, inputs, kwargs = cast_model(model, inputs, kwargs, args.dtype)
        module, weights, names = torch_to_ir(model, inputs, kwargs, progress)
        names, weights, fmt = transform_weights(module, names, weights, args.quantize, args.group, args.sparsify, args.sparsify_per, progress,
                                                tuple(args.keep.split(",")) if args.keep else ())
        transformed = bool(args.quantize or args.sparsify is not None)
        verify(module, filename="torch2ir output")
        emit(module, weights, args.output, args.summary, progress)
        if args.check:
            progress("running the IR on the interpreter ...")
            t0 = time.perf_counter()
            reference = with_weights(model, dense_weights(module, names, weights)) if transformed else model
            err = check(module, names, weights, reference, inputs, kwargs)
            tol = args.tol if args.tol is not None else max(TOLERANCE[args.dtype or "f32"],
                                                            EIGHT_BIT_TOLERANCE if isinstance(fmt, EightBitFormat) else 0)
            ok = err <= tol
            against = "PyTorch with the same weights (dequantized, pruned)" if transformed else "PyTorch"
            print(f"check: max relative error vs {against} {err:.2e} ({'within' if ok else 'ABOVE'} {tol:g}; "
                  f"interpreted in {time.perf_counter() - t0:.1f} s)")
            if transformed:
                print(f"check: max relative error vs the float model {check(module, names, weights, model, inputs, kwargs):.2e} "
                      "(the transform's own error)")
            if not ok:
                return 1
        return 0

    return run_tool("torch2ir", work)


if __name__ == "__main__":
    sys.exit(main())
