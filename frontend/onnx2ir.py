"""ONNX models to Rung graph IR, through the same converter as torch2ir.

    python -m frontend.onnx2ir model.onnx [-o model.mlir] [--check] [--shape input_ids=1x128] [--summary]
    rung-run model.onnx --gpu [--dtype f16|bf16] [--shape ...]      (compiled whole, against onnxruntime)

The ONNX graph (opsets 13-21, loaded by the `onnx` package) runs as a PyTorch module (`OnnxModule`): each node
one or a few torch calls (`OPS`), its initializers the module's buffers, so torch.export traces it into the ATen
graph that torch2ir converts: one path into `graph` IR for both frontends. Shapes are static: a symbolic input
dimension is bound by `--shape NAME=DxDx...`. What shapes and indices compute (Shape, Gather on a shape,
Concat, Reshape's target, Slice's bounds, ...) is evaluated while tracing by onnx's reference evaluator, so it
reaches the IR as constants. `--check` runs the IR on the interpreter and onnxruntime on the same random inputs
and prints the max relative error; `rung-run model.onnx --gpu` (rung.models.run_onnx) compiles it whole. An operator with no conversion names
the node, its op type and the model's opset.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.fx.traceback
import torch.nn.functional as F

from ir.errors import RungError, run_tool

SMALL = 1 << 10  # float initializers up to this many elements stay constants (scales, eps); larger ones are weights


def load(path: str | Path):
    """The ModelProto of an ONNX file, its external data included; a bad file is one RungError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise RungError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except FileNotFoundError as e:
        raise RungError(f"{path}: its external data file is missing: {e.filename or e}") from None
    except Exception as e:  # (protobuf's DecodeError, onnx's ValidationError)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RungError(f"{path}: not a valid ONNX model ({type(e).__name__}: {message})") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not 13 <= opset <= 21:
        raise RungError(f"{path}: opset {opset}; Rung reads opsets 13 to 21 (onnx.version_converter can move a model there)")
    return model


def input_shapes(model, bound: dict[str, list[int]], where: str) -> dict[str, tuple[list[int], np.dtype]]:
    """Each graph input's static shape (symbolic dims bound by `bound`) and numpy dtype."""
    from onnx import helper

    initializers = {i.name for i in model.graph.initializer}
    out = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in t.shape.dim]
        shape = bound.get(value.name, dims)
        if len(shape) != len(dims) or any(isinstance(d, str) for d in shape):
            raise RungError(f"{where}: input '{value.name}' has shape [{', '.join(map(str, dims))}]: give its static shape with "
                            f"--shape {value.name}={'x'.join(str(d) if isinstance(d, int) else 'N' for d in dims)}")
        out[value.name] = (list(shape), np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)))
    unknown = set(bound) - set(out)
    if unknown:
        raise RungError(f"{where}: --shape names no input of the model: {', '.join(sorted(unknown))} (inputs: {', '.join(out)})")
    return out


def example_inputs(shapes: dict, seed: int = 0, int_high: int = 8) -> list[np.ndarray]:
    """Random inputs of the given shapes: floats ~ N(0, 1), integers in [0, int_high), booleans fair coins."""
    rng = np.random.default_rng(seed)
    out = []
    for shape, dtype in shapes.values():
        if dtype.kind == "f":
            out.append(rng.standard_normal(shape).astype(dtype))
        elif dtype.kind == "b":
            out.append(rng.random(shape) < 0.5)
        else:
            out.append(rng.integers(0, int_high, shape).astype(dtype))
    return out


def is_weight(init) -> bool:
    """A float initializer of more than SMALL elements: a weight of the program (the others stay constants)."""
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(init.data_type).kind == "f" and int(np.prod(init.dims)) > SMALL


def matmul_weights(model) -> set[str]:
    """The 2-D weights that only MatMul nodes multiply by: kept as [N, K] and applied as linears (graph.linear: the
    GEMM kernels' weight path, and what quantize and sparsify take)."""
    uses = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, set()).add((node.op_type, i))
    return {i.name for i in model.graph.initializer if is_weight(i) and len(i.dims) == 2 and uses.get(i.name) == {("MatMul", 1)}}


class OnnxModule(torch.nn.Module):
    """An ONNX graph run node by node with torch ops: large float initializers are buffers (the program's
    weights), the rest numpy constants; a node whose inputs are all constants is evaluated by onnx's
    reference evaluator (shape arithmetic), the others by OPS."""

    def __init__(self, model, where: str):
        super().__init__()
        from onnx import numpy_helper

        self.graph, self.where = model.graph, where
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        self.constants, self.weights = {}, {}
        self.transposed = matmul_weights(model)
        for init in model.graph.initializer:
            value = numpy_helper.to_array(init)
            if is_weight(init):
                name = re.sub(r"\W", "_", init.name)
                value = value.T if init.name in self.transposed else value
                self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value)))
                self.weights[init.name] = name
            else:
                self.constants[init.name] = value
        self.inputs = [v.name for v in model.graph.input if v.name not in self.constants and v.name not in self.weights]

    def forward(self, *inputs):
        env = dict(self.constants)
        env.update({name: getattr(self, buffer) for name, buffer in self.weights.items()})
        env.update(zip(self.inputs, inputs))
        for node in self.graph.node:
            args = [env[i] if i else None for i in node.input]
            outs = self._run(node, args)
            env.update(zip(node.output, outs if isinstance(outs, (tuple, list)) else (outs,)))
        return tuple(env[o.name] if isinstance(env[o.name], torch.Tensor) else torch.as_tensor(env[o.name]) for o in self.graph.output)

    def _run(self, node, args):
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        where = f"{self.where}: node '{node.name or node.output[0]}' ({node.op_type}, opset {self.opset})"
        if node.domain not in ("", "ai.onnx"):
            raise RungError(f"{where}: operators of domain '{node.domain}' have no conversion")
        if all(a is None or isinstance(a, np.ndarray) for a in args) and node.op_type not in ("RandomNormal", "RandomUniform"):
            return _evaluate(node, args, attrs, self.opset)
        if node.op_type not in OPS:
            raise RungError(f"{where}: no conversion for this operator (docs/torch2ir.md lists the ONNX operators Rung reads)")
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        try:
            outputs = {"_outputs": len(node.output)} if len(node.output) > 1 else {}  # (ops with optional outputs)
            with torch.fx.traceback.annotate({"rung_source": where}):  # (torch2ir names the node in its errors)
                if node.op_type == "MatMul" and node.input[1] in self.transposed:
                    return F.linear(args[0], args[1])
                return OPS[node.op_type](*args, **attrs, **outputs)
        except Exception as e:  # (OPS' own RungErrors too: this names the node)
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RungError(f"{where}: cannot convert: {message}") from None



def _evaluate(node, args, attrs: dict, opset):
    """A node of constant inputs (and its attributes) evaluated by onnx's reference implementation (numpy), or by
    numpy itself where that implementation fails on shapes exported models use (NUMPY)."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    if node.op_type in NUMPY:
        return NUMPY[node.op_type](*args, **attrs)
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
    inner = helper.make_node(node.op_type, names, [f"out{i}" for i in range(len(node.output))], **attrs)
    graph = helper.make_graph([inner], "node", [helper.make_tensor_value_info(n, 0, None) for n in names if n],
                              [helper.make_tensor_value_info(o, 0, None) for o in inner.output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, {n: a for n, a in zip(names, args) if n})


NUMPY = {"GatherElements": lambda data, indices, axis=0: [np.take_along_axis(data, indices.astype(np.int64) % data.shape[axis], axis)]}


def _t(x, like=None):
    """A torch tensor of x (numpy constants become constants of the trace, in `like`'s dtype for floats)."""
    if isinstance(x, torch.Tensor):
        return x
    if like is not None and like.is_floating_point() and np.asarray(x).dtype.kind == "f":  # made in like's type: no cast op
        return torch.tensor(np.asarray(x).tolist(), dtype=like.dtype)
    return torch.as_tensor(np.ascontiguousarray(x))


def _ints(x) -> list[int]:
    """A constant's integers (shapes, axes, bounds): they must be known while tracing."""
    if not isinstance(x, np.ndarray):
        raise RungError("this operand (a shape, axes or bounds) must be a constant: Rung compiles static shapes")
    return [int(v) for v in x.reshape(-1)]


def _binary(fn):
    def convert(a, b, **_):
        like = a if isinstance(a, torch.Tensor) else b
        return fn(_operand(a, like), _operand(b, like))
    return convert


def _operand(x, like):
    """An elementwise operand: a one-element constant beside a tensor of at least one dimension as a Python number
    (a constant of the program, which the elementwise kernels fold), else a tensor."""
    if isinstance(x, np.ndarray) and x.size == 1 and like.dim() >= x.ndim and x.dtype.kind in "fiu":
        return x.item()
    return _t(x, like)


def _ops() -> dict:
    def gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
        a, b = _t(a), _t(b, a)
        if transB and not transA and alpha == beta == 1.0 and (c is None or np.ndim(c) <= 1):  # an exported nn.Linear
            return F.linear(a, b, None if c is None else _t(c, a))
        y = (a.T if transA else a) @ (b.T if transB else b)
        y = y * alpha if alpha != 1.0 else y
        return y if c is None else y + _t(c, a) * beta if beta != 1.0 else y + _t(c, a)

    def conv(x, w, b=None, pads=None, strides=None, dilations=None, group=1, auto_pad="NOTSET", **_):
        if auto_pad not in ("NOTSET", "VALID"):
            raise RungError(f"auto_pad {auto_pad} (give the pads explicitly)")
        dims = x.dim() - 2
        pads = pads or [0] * 2 * dims
        if pads[:dims] != pads[dims:]:
            x, pads = _pad(x, pads, 0.0), [0] * 2 * dims
        conv_fn = {1: F.conv1d, 2: F.conv2d}[dims]
        return conv_fn(x, _t(w, x), None if b is None else _t(b, x), strides or 1, pads[:dims], dilations or 1, group)

    def pool(kind):
        def convert(x, kernel_shape, pads=None, strides=None, ceil_mode=0, count_include_pad=0, dilations=None, auto_pad="NOTSET", **_):
            dims = len(kernel_shape)
            pads, strides = pads or [0] * 2 * dims, strides or [1] * dims  # (ONNX's default stride is 1)
            if auto_pad not in ("NOTSET", "VALID"):
                raise RungError(f"auto_pad {auto_pad} (give the pads explicitly)")
            if kind == "max":
                if pads[:dims] != pads[dims:] or any(p > k // 2 for p, k in zip(pads, kernel_shape * 2)):
                    x, pads = _pad(x, pads, float("-inf")), [0] * 2 * dims
                return F.max_pool2d(x, kernel_shape, strides, pads[:dims], dilations or 1, bool(ceil_mode))
            if pads[:dims] != pads[dims:]:
                raise RungError("asymmetric average pooling pads")
            return F.avg_pool2d(x, kernel_shape, strides, pads[:dims], bool(ceil_mode), bool(count_include_pad) or not any(pads))
        return convert

    def axes_of(axes, attr):
        return _ints(axes) if axes is not None else list(attr) if attr is not None else None

    def reduce(fn):
        def convert(x, axes=None, keepdims=1, noop_with_empty_axes=0, **attrs):
            dims = axes_of(axes, attrs.get("axes"))
            if not dims:
                if noop_with_empty_axes:
                    return x
                dims = list(range(x.dim()))
            return fn(x, dims, bool(keepdims))
        return convert

    def reshape(x, shape, allowzero=0):
        target = _ints(shape)
        target = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
        return x.reshape(target)

    def slice_(x, starts, ends, axes=None, steps=None):
        starts, ends = _ints(starts), _ints(ends)
        axes = _ints(axes) if axes is not None else list(range(len(starts)))
        steps = _ints(steps) if steps is not None else [1] * len(starts)
        index = [slice(None)] * x.dim()
        for s, e, a, st in zip(starts, ends, axes, steps):
            if st < 0:
                raise RungError("Slice with a negative step")
            n = x.shape[a]
            index[a] = slice(max(0, min(n, s + n if s < 0 else s)), max(0, min(n, e + n if e < 0 else e)), st)
        return x[tuple(index)]

    def gather(x, indices, axis=0):
        if isinstance(indices, np.ndarray) and indices.ndim == 0:
            return x.select(axis, int(indices) % x.shape[axis])
        idx = _t(indices).long()
        if axis == 0 and x.dim() == 2:
            return F.embedding(idx, x)
        flat = torch.index_select(x, axis, idx.reshape(-1))
        return flat.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1:])

    def softmax(fn):
        return lambda x, axis=-1: fn(x, axis)

    def layer_norm(x, scale, bias=None, axis=-1, epsilon=1e-5, _outputs=1, **_):
        axis = axis % x.dim()
        y = F.layer_norm(x, x.shape[axis:], _t(scale, x), None if bias is None else _t(bias, x), epsilon)
        if _outputs == 1:
            return y
        dims = tuple(range(axis, x.dim()))  # the optional outputs: the mean and 1 / standard deviation
        mean = x.mean(dims, keepdim=True)
        return y, mean, ((x - mean) * (x - mean)).mean(dims, keepdim=True).add(epsilon).rsqrt()

    def batch_norm(x, scale, bias, mean, var, epsilon=1e-5, **_):
        return F.batch_norm(x, _t(mean, x), _t(var, x), _t(scale, x), _t(bias, x), False, 0.0, epsilon)

    def cast(x, to, **_):
        from onnx import helper

        return x.to(torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(to))).dtype)


    def split(x, split=None, axis=0, num_outputs=None, **attrs):
        sizes = _ints(split) if split is not None else attrs.get("split")
        if sizes is None:
            parts = num_outputs or 2
            sizes = [-(-x.shape[axis] // parts)] * (parts - 1) + [x.shape[axis] - -(-x.shape[axis] // parts) * (parts - 1)]
        return torch.split(x, list(sizes), axis)

    def where(c, a, b):
        like = a if isinstance(a, torch.Tensor) else b
        return torch.where(_t(c).bool(), _t(a, like), _t(b, like))

    def clip(x, lo=None, hi=None, **_):
        x = torch.maximum(x, _t(lo, x)) if lo is not None else x
        return torch.minimum(x, _t(hi, x)) if hi is not None else x

    def trilu(x, k=None, upper=1):
        shift = _ints(k)[0] if k is not None else 0
        return torch.triu(x, shift) if upper else torch.tril(x, shift)

    def gelu(x, approximate="none"):
        return F.gelu(x, approximate=approximate)

    def expand(x, shape):
        target = _ints(shape)
        return _t(x).expand(torch.broadcast_shapes(tuple(_t(x).shape), tuple(target)))

    return {
        "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _binary(torch.div),
        "Pow": _binary(torch.pow), "Max": _binary(torch.maximum), "Min": _binary(torch.minimum),
        "Equal": _binary(torch.eq), "Less": _binary(torch.lt), "Greater": _binary(torch.gt),
        "LessOrEqual": _binary(torch.le), "GreaterOrEqual": _binary(torch.ge), "And": _binary(torch.logical_and),
        "Or": _binary(torch.logical_or), "Not": lambda x: torch.logical_not(x), "Where": where,
        "MatMul": _binary(torch.matmul), "Gemm": gemm, "Conv": conv, "MaxPool": pool("max"), "AveragePool": pool("avg"),
        "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
        "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf, "Exp": torch.exp, "Log": torch.log,
        "Sqrt": torch.sqrt, "Reciprocal": lambda x: torch.ones_like(x) / x, "Neg": torch.neg, "Abs": torch.abs, "Sin": torch.sin,
        "Cos": torch.cos, "Gelu": gelu, "LeakyRelu": lambda x, alpha=0.01: torch.where(x >= 0, x, x * alpha),
        "Softmax": softmax(torch.softmax), "LogSoftmax": softmax(_log_softmax),
        "LayerNormalization": layer_norm, "BatchNormalization": batch_norm,
        "ReduceMean": reduce(lambda x, d, k: x.mean(d, keepdim=k)), "ReduceSum": reduce(lambda x, d, k: x.sum(d, keepdim=k)),
        "ReduceMax": reduce(lambda x, d, k: x.amax(d, keepdim=k)), "ReduceMin": reduce(lambda x, d, k: x.amin(d, keepdim=k)),
        "Reshape": reshape, "Flatten": lambda x, axis=1: x.reshape(int(np.prod(x.shape[:axis])), -1),
        "Transpose": lambda x, perm=None: x.permute(*(perm or reversed(range(x.dim())))),
        "Unsqueeze": lambda x, axes=None, **a: _unsqueeze(x, axes_of(axes, a.get("axes"))),
        "Squeeze": lambda x, axes=None, **a: x.squeeze(tuple(axes_of(axes, a.get("axes")))) if axes_of(axes, a.get("axes")) else x.squeeze(),
        "Concat": lambda *xs, axis: torch.cat([_t(x, next(t for t in xs if isinstance(t, torch.Tensor))) for x in xs], axis),
        "Slice": slice_, "Gather": gather, "GatherElements": lambda x, i, axis=0: torch.gather(x, axis, _t(i).long() % x.shape[axis]), "Split": split, "Expand": expand, "Cast": cast, "Clip": clip, "Trilu": trilu,
        "Identity": lambda x: x, "Dropout": lambda x, *_, **__: x,
        "Shape": lambda x, start=0, end=None: np.array(x.shape[start:end], dtype=np.int64),
        "Size": lambda x: np.array(x.numel(), dtype=np.int64),
        "CumSum": lambda x, axis, exclusive=0, reverse=0: _cumsum(x, int(_ints(axis)[0]), exclusive, reverse),
    }


def _pad(x, pads: list[int], value: float):
    """x padded with `value` by ONNX pads (begin of each trailing dim, then end of each), as concatenations."""
    dims = len(pads) // 2
    for i in range(dims):
        axis = x.dim() - dims + i
        shape = list(x.shape)
        parts = []
        for width, after in ((pads[i], False), (pads[i + dims], True)):
            shape[axis] = width
            if width:
                parts.append((after, torch.full(shape, value, dtype=x.dtype)))
        x = torch.cat([p for a, p in parts if not a] + [x] + [p for a, p in parts if a], axis)
    return x


def _log_softmax(x, axis):
    shifted = x - x.amax(axis, keepdim=True)
    return shifted - shifted.exp().sum(axis, keepdim=True).log()


def _unsqueeze(x, axes):
    for a in sorted(a % (x.dim() + len(axes)) for a in axes):
        x = x.unsqueeze(a)
    return x


def _cumsum(x, axis, exclusive, reverse):
    if exclusive or reverse:
        raise RungError("CumSum with exclusive or reverse")
    return x.cumsum(axis)


OPS = _ops()  # ONNX op type -> function(*inputs, **attributes) of torch tensors (and numpy constants)


def onnx_to_ir(path: str | Path, shapes: dict[str, list[int]] | None = None, progress=lambda msg: None, dtype: str | None = None):
    """(module, weights, argument names, the model's inputs (name -> (shape, dtype)), the ModelProto) of an ONNX
    file, traced on random inputs of its static shapes; with `dtype` (f16, bf16), its floating-point weights, inputs
    and constants in that type (what the GPU kernels take)."""
    from frontend.loading import cast_model
    from frontend.torch2ir import torch_to_ir
    from ir.syntax import ssa_name

    model = load(path)
    bound = input_shapes(model, shapes or {}, str(path))
    module = OnnxModule(model, str(path)).eval()
    inputs = tuple(torch.from_numpy(a) for a in example_inputs(bound))
    if dtype:
        module, inputs, _ = cast_model(module, inputs, {}, dtype)
    progress(f"{len(model.graph.node)} ONNX nodes, opset {module.opset}")
    with torch.fx.traceback.preserve_node_meta():  # (keeps the node annotations through torch.export)
        ir, weights, names = torch_to_ir(module, inputs, {}, progress)
    rename, user = {buffer: name for name, buffer in module.weights.items()}, iter(bound)
    names = [rename.get(n, n) if n in weights else next(user) for n in names]  # (the graph's own names for @main's arguments)
    for arg, name in zip(ir.ops.first.body.block.args, names):
        arg.name_hint = ssa_name(name)
    return ir, {rename.get(k, k): v for k, v in weights.items()}, names, bound, model


def onnxruntime_outputs(model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def relative_error(got, want) -> float:
    """Max over outputs of max |got - want| / max |want| (at least 1e-30)."""
    return max(float(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)).max(initial=0.0))
               / max(float(np.abs(np.asarray(w, np.float64)).max(initial=0.0)), 1e-30) for g, w in zip(got, want))


def shape_option(text: str) -> tuple[str, list[int]]:
    """--shape NAME=DxDx... (argparse type)."""
    name, _, dims = text.rpartition("=")
    try:
        return name, [int(d) for d in dims.split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape takes NAME=DxDx..., e.g. input_ids=1x128, not {text!r}") from None


def main(argv=None) -> int:
    from frontend.torch2ir import emit
    from frontend.transforms import dense_weights, transform_weights
    from ir.syntax import verify

    p = argparse.ArgumentParser(prog="python -m frontend.onnx2ir", description="Convert an ONNX model to Rung graph IR.")
    p.add_argument("model", help="an .onnx file (external data beside it)")
    p.add_argument("-o", "--output", help="write the IR here (and the weights beside it as .npz)")
    p.add_argument("--shape", type=shape_option, action="append", default=[], metavar="NAME=DxD",
                   help="an input's static shape (binds its symbolic dimensions); may be given more than once")
    p.add_argument("--check", action="store_true", help="run the IR on the interpreter and onnxruntime on the same random inputs; print "
                   "the max relative error (compiled for the GPU: rung-run model.onnx --gpu)")
    p.add_argument("--tol", type=float, default=1e-4, help="largest relative error --check accepts (default %(default)g)")
    p.add_argument("--summary", action="store_true", help="print a summary of the IR instead of the IR")
    p.add_argument("--quantize", metavar="FORMAT", help="linears' weights quantized to FORMAT (as torch2ir --quantize)")
    p.add_argument("--group", type=int, help="with --quantize: elements of K per scale (0: per output channel)")
    p.add_argument("--sparsify", type=float, metavar="S", help="linears' weights pruned by magnitude to sparsity S (as torch2ir --sparsify)")
    p.add_argument("--sparsify-per", choices=("row", "tensor"), default="row", help="with --sparsify: per output row (default) or tensor")
    p.add_argument("--keep", metavar="PATTERNS", help="with --quantize or --sparsify: weights left as they are (fnmatch patterns)")
    args = p.parse_args(argv)

    def progress(msg):
        print(f"onnx2ir: {msg}", file=sys.stderr, flush=True)

    def work() -> int:
        module, weights, names, bound, model = onnx_to_ir(args.model, dict(args.shape), progress)
        names, weights, _ = transform_weights(module, names, weights, args.quantize, args.group, args.sparsify, args.sparsify_per,
                                              progress, tuple(args.keep.split(",")) if args.keep else ())
        verify(module, filename="onnx2ir output")
        emit(module, weights, args.output, args.summary, progress)
        if not args.check:
            return 0
        if args.quantize or args.sparsify is not None:  # against the model with the same weights, and its own error beside
            ok = _check(module, names, weights, bound, with_weights(model, dense_weights(module, names, weights)), args)
            _check(module, names, weights, bound, model, args, "the float model (the transform's own error)")
            return ok
        return _check(module, names, weights, bound, model, args)

    return run_tool("onnx2ir", work)


def _check(module, names, weights, bound, model, args, against: str = "") -> int:
    from ir.interpreter import run

    inputs = dict(zip(bound, example_inputs(bound, seed=1)))
    err = relative_error(run(module, [weights[n] if n in weights else inputs[n] for n in names]), onnxruntime_outputs(model, inputs))
    if against:
        print(f"check: max relative error vs onnxruntime on {against} {err:.2e}")
        return 0
    print(f"check: max relative error vs onnxruntime {err:.2e} ({'within' if err <= args.tol else 'ABOVE'} {args.tol:g}; interpreter)")
    return 0 if err <= args.tol else 1


def with_weights(model, dense: dict[str, np.ndarray]):
    """A copy of the ModelProto whose initializers named in `dense` hold those [N, K] weights (dequantized, pruned), in
    the layout the graph reads them (MatMul's weights [K, N])."""
    import copy

    from onnx import numpy_helper

    out, transposed = copy.deepcopy(model), matmul_weights(model)
    for init in out.graph.initializer:
        if init.name in dense:
            old = numpy_helper.to_array(init)
            value = dense[init.name].T if init.name in transposed else dense[init.name]
            init.CopyFrom(numpy_helper.from_array(np.asarray(value, old.dtype), init.name))
    return out


if __name__ == "__main__":
    sys.exit(main())
