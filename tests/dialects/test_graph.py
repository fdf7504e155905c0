"""The graph dialect: printing/parsing, verifiers, and each op's meaning against PyTorch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerType, ModuleOp, Signedness, TensorType, f16, f32, i1, i64
from xdsl.ir import Block, Region
from xdsl.utils.exceptions import VerifyException

from dialects import graph as g
from dialects.lp import QuantAttr
from rung.context import parse_ir, print_ir
from ir.dtypes import storage_dtype
from ir.errors import RungError
from ir.interpreter import run
from ir.numerics import QuantFormat
from strategies import graph_programs


@given(graph_programs())
def test_print_parse_print_is_stable(module):
    text = print_ir(module)
    assert print_ir(parse_ir(text)) == text


def element_type_of(dtype):
    """The IR element type of a numpy dtype (the ones these tests use)."""
    from xdsl.dialects.builtin import Float16Type, Float32Type, Float64Type

    kinds = {np.dtype(np.float32): Float32Type(), np.dtype(np.float64): Float64Type(), np.dtype(np.float16): Float16Type(),
             np.dtype(np.bool_): i1, np.dtype(np.int64): i64}
    return kinds[np.dtype(dtype)]


def run_op(cls, *arrays, result_type=None, **attrs):
    """Execute one graph op on numpy arrays through the interpreter."""
    block = Block(arg_types=[TensorType(element_type_of(a.dtype), a.shape) for a in arrays])
    op = cls.make(*block.args, result_type=result_type, **attrs)
    block.add_ops([op, func.ReturnOp(op.results[0])])
    fn = func.FuncOp("main", ([a.type for a in block.args], [op.results[0].type]), Region(block))
    module = ModuleOp([fn])
    module.verify()
    return run(module, arrays)[0]


rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(a, b, tol=2e-5):
    b = b.numpy() if isinstance(b, torch.Tensor) else b
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


T = torch.from_numpy


@pytest.mark.parametrize("cls, ref", [
    (g.NegOp, torch.neg), (g.AbsOp, torch.abs), (g.ExpOp, torch.exp), (g.SinOp, torch.sin), (g.CosOp, torch.cos),
    (g.TanhOp, torch.tanh), (g.ErfOp, torch.erf), (g.SigmoidOp, torch.sigmoid), (g.ReluOp, torch.relu), (g.SiluOp, F.silu),
])
def test_unary_ops_match_torch(cls, ref):
    x = randn(3, 5) * 3
    close(run_op(cls, x), ref(T(x)))


def test_log_sqrt_rsqrt_match_torch():
    x = np.abs(randn(7)) + 0.1
    for cls, ref in ((g.LogOp, torch.log), (g.SqrtOp, torch.sqrt), (g.RsqrtOp, torch.rsqrt)):
        close(run_op(cls, x), ref(T(x)))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate):
    x = randn(64) * 4
    close(run_op(g.GeluOp, x, approximate=approximate), F.gelu(T(x), approximate=approximate))


@pytest.mark.parametrize("cls, ref", [
    (g.AddOp, torch.add), (g.SubOp, torch.sub), (g.MulOp, torch.mul), (g.DivOp, torch.div),
    (g.MaximumOp, torch.maximum), (g.MinimumOp, torch.minimum),
])
def test_binary_ops_broadcast_like_torch(cls, ref):
    a, b = randn(2, 1, 4), randn(3, 1) + 5
    close(run_op(cls, a, b), ref(T(a), T(b)))


def test_integer_division_and_remainder_follow_torch():
    a = np.array([7, -7, 7, -7, 0], np.int64)
    b = np.array([2, 2, -2, -2, 3], np.int64)
    assert np.array_equal(run_op(g.DivOp, a, b), torch.div(T(a), T(b), rounding_mode="trunc").numpy())
    assert np.array_equal(run_op(g.RemOp, a, b), torch.remainder(T(a), T(b)).numpy())


@pytest.mark.parametrize("pred, ref", [("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le), ("gt", torch.gt), ("ge", torch.ge)])
def test_compare(pred, ref):
    a, b = rng.integers(0, 3, (4, 4)), rng.integers(0, 3, (4,))
    out = run_op(g.CompareOp, a, b, predicate=pred)
    assert out.dtype == np.bool_ and np.array_equal(out, ref(T(a), T(b)).numpy())


def test_logical_ops_and_where():
    a, b = rng.random((3, 3)) < 0.5, rng.random((3,)) < 0.5
    assert np.array_equal(run_op(g.LogicalAndOp, a, b), a & b)
    assert np.array_equal(run_op(g.LogicalOrOp, a, b), a | b)
    assert np.array_equal(run_op(g.LogicalNotOp, a), ~a)
    x, y = randn(3, 3), randn(1, 3)
    close(run_op(g.WhereOp, a, x, y), np.where(a, x, y))


def test_matmul_and_linear():
    a, b = randn(2, 1, 3, 4), randn(5, 4, 6)
    close(run_op(g.MatmulOp, a, b), torch.matmul(T(a), T(b)), 1e-5)
    x, w, bias = randn(2, 3, 8), randn(5, 8), randn(5)
    close(run_op(g.LinearOp, x, w, bias), F.linear(T(x), T(w), T(bias)), 1e-5)
    close(run_op(g.LinearOp, x, w), F.linear(T(x), T(w)), 1e-5)


@pytest.mark.parametrize("q", [QuantFormat("int4", 32, "f16"), QuantFormat("uint4", 32, "bf16", "quantized"),
                               QuantFormat("uint4", None, "f32", "rescale"), QuantFormat("e2m1", 32, "e8m0")], ids=str)
def test_qlinear_is_linear_on_the_dequantized_weight(q):
    from xdsl.dialects.builtin import BFloat16Type, Float4E2M1FNType, Float8E8M0FNUType, Float16Type, Float32Type

    x, w = randn(3, 64), randn(6, 64)
    values, scales, zeros = q.quantize(w)
    elem = {"int4": IntegerType(4, Signedness.SIGNED), "uint4": IntegerType(4, Signedness.UNSIGNED), "e2m1": Float4E2M1FNType()}[q.element]
    scale = {"f16": Float16Type(), "bf16": BFloat16Type(), "f32": Float32Type(), "e8m0": Float8E8M0FNUType()}[q.scale]
    attr = QuantAttr(elem, q.group, scale, q.zero)
    arrays = [x, values.astype(storage_dtype(elem)), scales]
    if zeros is not None:
        arrays.append(zeros.astype(storage_dtype(elem)) if q.zero == "quantized" else zeros)
    block = Block(arg_types=[TensorType(f32, x.shape), TensorType(elem, w.shape), TensorType(scale, scales.shape)]
                  + ([] if zeros is None else [TensorType(elem if q.zero == "quantized" else scale, zeros.shape)]))
    op = g.QLinearOp.make(*block.args, format=attr)
    block.add_ops([op, func.ReturnOp(op.results[0])])
    module = ModuleOp([func.FuncOp("main", ([a.type for a in block.args], [op.results[0].type]), Region(block))])
    module.verify()
    expected = x.astype(np.float64) @ q.dequantize(values, scales, zeros).T.astype(np.float64)
    close(run(module, arrays)[0], expected, 1e-4)


def _sparse_linear_module(x_shape, n: int, csl, fmt=None, scales=None, dtype=f32):
    """@main(x, values, positions, offsets[, scales]) -> graph.sparse_linear."""
    from xdsl.dialects.builtin import i32

    from dialects.lp import SparseAttr

    value_type = QuantAttr.from_format(fmt).element if fmt else dtype
    types = [TensorType(dtype, x_shape), TensorType(value_type, [len(csl.values)]), TensorType(IntegerType(16, Signedness.UNSIGNED),
             [len(csl.positions)]), TensorType(i32, [len(csl.offsets)])]
    if scales is not None:
        types.append(TensorType(QuantAttr.from_format(fmt).scale, scales.shape))
    block = Block(arg_types=types)
    op = g.SparseLinearOp.make(*block.args, sparse=SparseAttr.from_format(csl.format), n=n, format=QuantAttr.from_format(fmt) if fmt else None)
    block.add_ops([op, func.ReturnOp(op.results[0])])
    return ModuleOp([func.FuncOp("main", ([a.type for a in block.args], [op.results[0].type]), Region(block))])


@pytest.mark.parametrize("quantized", [False, True])
def test_sparse_linear_is_linear_on_the_pruned_weight(quantized):
    from ir.sparse import SparseFormat, encode, prune

    x, w = randn(3, 5, 72), prune(randn(40, 72), 0.8)
    fmt, scales = (QuantFormat("int4", 24, "f16"), None) if quantized else (None, None)
    if quantized:
        w, scales, _ = fmt.quantize(w)
    csl = encode(w, SparseFormat(16, 32))  # partial tiles on both edges
    module = _sparse_linear_module(x.shape, 40, csl, fmt, scales)
    module.verify()
    assert print_ir(parse_ir(print_ir(module))) == print_ir(module)
    arrays = [x, csl.values.astype(storage_dtype(IntegerType(4, Signedness.SIGNED)) if quantized else np.float32), csl.positions,
              csl.offsets] + ([scales] if quantized else [])
    dense = fmt.dequantize(w, scales) if quantized else w
    close(run(module, arrays)[0], x.astype(np.float64) @ dense.T.astype(np.float64), 1e-4)


def test_sparse_linear_operands_are_checked():
    from ir.sparse import SparseFormat, encode

    csl = encode(np.eye(8), SparseFormat(4, 4))
    with pytest.raises(VerifyException, match=r"offsets must be tensor<5xi32> \(a 8x8 weight in 4x4 tiles has 4\)"):
        _sparse_linear_module((2, 8), 8, type(csl)(csl.values, csl.positions, csl.offsets[:-1], csl.shape, csl.format)).verify()
    with pytest.raises(VerifyException, match="quantized sparse values take no zero point"):
        fmt = QuantFormat("uint4", 8, "f16", "quantized")
        _sparse_linear_module((2, 8), 8, csl, fmt, np.ones((8, 1), np.float32)).verify()


def test_softmax_norms():
    x = randn(2, 3, 8)
    close(run_op(g.SoftmaxOp, x, dim=1), torch.softmax(T(x), 1))
    w, b = randn(8), randn(8)
    close(run_op(g.LayerNormOp, x, w, b, eps=1e-5), F.layer_norm(T(x), (8,), T(w), T(b), 1e-5))
    close(run_op(g.RmsNormOp, x, w, eps=1e-6), F.rms_norm(T(x), (8,), T(w), 1e-6))
    x4, mean, var = randn(2, 3, 4, 4), randn(3), np.abs(randn(3)) + 0.5
    close(run_op(g.BatchNormOp, x4, mean, var, w[:3], b[:3], eps=1e-5),
          F.batch_norm(T(x4), T(mean), T(var), T(w[:3]), T(b[:3]), False, 0.0, 1e-5))


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_torch(causal):
    q, k, v = randn(2, 3, 5, 8), randn(2, 3, 5, 8), randn(2, 3, 5, 4)
    close(run_op(g.SdpaOp, q, k, v, causal=causal), F.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=causal))
    mask = rng.random((5, 5)) < 0.7
    mask[:, 0] = True
    close(run_op(g.SdpaOp, q, k, v, mask, scale=0.3), F.scaled_dot_product_attention(T(q), T(k), T(v), T(mask), scale=0.3))
    fmask = randn(1, 1, 5, 5)
    close(run_op(g.SdpaOp, q, k, v, fmask), F.scaled_dot_product_attention(T(q), T(k), T(v), T(fmask)))


def test_sdpa_at_positions_attends_up_to_each_rows_position():
    q, k, v, positions = randn(2, 3, 4, 8), randn(2, 3, 9, 8), randn(2, 3, 9, 4), np.array([5, 6, 2, 8])
    mask = T(np.arange(9)[None, :] <= positions[:, None])
    close(run_op(g.SdpaOp, q, k, v, positions, positions=True), F.scaled_dot_product_attention(T(q), T(k), T(v), mask))
    with pytest.raises(VerifyException, match="positions as an integer tensor \\[4\\]"):
        run_op(g.SdpaOp, q, k, v, positions[:3], positions=True)


def test_sdpa_with_fewer_kv_heads_is_grouped_query_attention():
    q, k, v = randn(2, 6, 5, 8), randn(2, 2, 7, 8), randn(2, 2, 7, 8)
    close(run_op(g.SdpaOp, q, k, v, causal=True), F.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=True, enable_gqa=True))
    with pytest.raises(VerifyException, match="do not broadcast together"):
        run_op(g.SdpaOp, q, randn(2, 4, 7, 8), randn(2, 4, 7, 8))  # 4 kv heads do not divide 6


def test_rope_rotates_halves():
    x, cos, sin = randn(1, 2, 4, 8), randn(4, 8), randn(4, 8)
    rot = torch.cat([-T(x)[..., 4:], T(x)[..., :4]], -1)
    close(run_op(g.RopeOp, x, cos, sin), T(x) * T(cos) + rot * T(sin))


def test_embedding_gather_index():
    w, idx = randn(10, 4), rng.integers(0, 10, (2, 3))
    close(run_op(g.EmbeddingOp, w, idx), F.embedding(T(idx), T(w)))
    x, gi = randn(3, 4), rng.integers(0, 3, (2, 4))
    close(run_op(g.GatherOp, x, gi, dim=0), torch.gather(T(x), 0, T(gi)))
    i0, i1 = rng.integers(0, 3, (2, 1)), rng.integers(-4, 4, (1, 5))
    close(run_op(g.IndexOp, x, i0, i1), T(x)[T(i0), T(i1)])
    sel = np.array([[0, 1], [3, -1]])
    close(run_op(g.IndexSelectOp, x, sel, dim=1), T(x)[:, T(sel)])


@pytest.mark.parametrize("dim", [0, 2, -1])
def test_index_copy_writes_slices_at_positions_as_torch(dim):
    cache = randn(3, 4, 5)
    positions = rng.permutation(cache.shape[dim])[:2]
    shape = [3, 4, 5]
    shape[dim] = 2
    source = randn(*shape)
    close(run_op(g.IndexCopyOp, cache, positions, source, dim=dim), T(cache).index_copy(dim, T(positions), T(source)))
    with pytest.raises(RungError, match="a position outside"):
        run_op(g.IndexCopyOp, cache, np.array([0, 7]), source, dim=dim)


def test_shape_ops():
    x = randn(2, 3, 4)
    close(run_op(g.PermuteOp, x, dims=[2, 0, 1]), T(x).permute(2, 0, 1))
    close(run_op(g.ReshapeOp, x, result_type=TensorType(f32, [6, 4])), x.reshape(6, 4))
    close(run_op(g.BroadcastOp, randn(3, 1), result_type=TensorType(f32, [2, 3, 5])).shape, (2, 3, 5))
    close(run_op(g.SliceOp, x, dim=-1, start=1, end=100, step=2), x[..., 1::2])
    close(run_op(g.CatOp, x, x[:, :1], dim=1), np.concatenate([x, x[:, :1]], 1))
    for kind in ("sum", "mean", "max", "min", "prod"):
        close(run_op(g.ReduceOp, x, kind=kind, dims=[0, -1], keepdim=True), getattr(np, kind)(x, axis=(0, 2), keepdims=True), 1e-5)
    ints = rng.integers(0, 5, (3, 4))
    assert np.array_equal(run_op(g.CumsumOp, ints, dim=1), np.cumsum(ints, 1))


@pytest.mark.parametrize("stride, padding, dilation, groups", [((1, 1), (0, 0), (1, 1), 1), ((2, 1), (1, 2), (1, 1), 2), ((1, 1), (1, 1), (2, 2), 4)])
def test_conv2d_matches_torch(stride, padding, dilation, groups):
    x, w, b = randn(2, 8, 9, 7), randn(4, 8 // groups, 3, 3), randn(4)
    ours = run_op(g.Conv2dOp, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    close(ours, F.conv2d(T(x), T(w), T(b), stride, padding, dilation, groups), 1e-4)


def test_pools_match_torch():
    x = randn(2, 3, 9, 8)
    close(run_op(g.MaxPool2dOp, x, kernel=[3, 3], stride=[2, 2], padding=[1, 1]), F.max_pool2d(T(x), 3, 2, 1))
    close(run_op(g.AvgPool2dOp, x, kernel=[2, 2], padding=[1, 1]), F.avg_pool2d(T(x), 2, 2, 1))


def test_sources_and_casts():
    from xdsl.dialects.builtin import Float8E4M3FNType

    close(run_op(g.ArangeOp, result_type=TensorType(f32, [5]), start=1.5, step=0.5), np.arange(5) * 0.5 + 1.5)
    assert np.array_equal(run_op(g.FullOp, result_type=TensorType(i1, [2]), value=True), [True, True])
    x = randn(100) * 100
    fp8 = run_op(g.CastOp, x, result_type=TensorType(Float8E4M3FNType(), [100]))
    close(fp8, T(x).to(torch.float8_e4m3fn).float())
    assert run_op(g.CastOp, x, result_type=TensorType(f16, [100])).dtype == np.float16
    si4 = run_op(g.CastOp, np.array([-9.0, -2.5, 0.5, 1.5, 7.6], np.float32), result_type=TensorType(IntegerType(4, Signedness.SIGNED), [5]))
    assert si4.tolist() == [-8, -2, 0, 2, 7]  # round half to even, saturate
    assert run_op(g.CastOp, np.array([2.7, -2.7], np.float32), result_type=TensorType(i64, [2])).tolist() == [2, -2]


def _fn(body: str, args: str = "%x: tensor<2x3xf32>") -> str:
    return f"func.func @main({args}) {{\n{body}\n  func.return\n}}\n"


@pytest.mark.parametrize("body, args, message", [
    ("  %y = graph.add %x, %x : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<3x3xf32>", None, "result type must be tensor<2x3xf32>, got tensor<3x3xf32>"),
    ("  %y = graph.add %x, %z : (tensor<2x3xf32>, tensor<4xf32>) -> tensor<2x3xf32>", "%x: tensor<2x3xf32>, %z: tensor<4xf32>", "do not broadcast"),
    ("  %y = graph.add %x, %z : (tensor<2x3xf32>, tensor<2x3xf16>) -> tensor<2x3xf32>", "%x: tensor<2x3xf32>, %z: tensor<2x3xf16>", "one element type"),
    ("  %y = graph.matmul %x, %x : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>", None, "inner dims 3 and 2 differ"),
    ("  %y = graph.softmax %x {dim = 2 : i64} : (tensor<2x3xf32>) -> tensor<2x3xf32>", None, "dim 2 is out of range for a tensor of rank 2"),
    ("  %y = graph.softmax %x : (tensor<2x3xf32>) -> tensor<2x3xf32>", None, "property 'dim' expected"),
    ("  %y = graph.permute %x {dims = array<i64: 0, 0>} : (tensor<2x3xf32>) -> tensor<2x2xf32>", None, "not a permutation"),
    ("  %y = graph.reshape %x : (tensor<2x3xf32>) -> tensor<5xf32>", None, "cannot reshape"),
    ("  %y = graph.exp %x : (tensor<2x3xi64>) -> tensor<2x3xi64>", "%x: tensor<2x3xi64>", "needs a floating-point tensor"),
    ("  %y = graph.linear %x, %x : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x2xf32>", None, None),
    ("  %y = graph.linear %x, %w : (tensor<2x3xf32>, tensor<4x5xf32>) -> tensor<2x4xf32>", "%x: tensor<2x3xf32>, %w: tensor<4x5xf32>", "linear needs x \\[..., K\\] and weight \\[N, K\\]"),
    ("  %y = graph.compare %x, %x {predicate = \"lq\"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xi1>", None, "predicate must be one of"),
    ("  %y = graph.reduce %x {kind = \"median\", dims = array<i64: 0>} : (tensor<2x3xf32>) -> tensor<3xf32>", None, "kind must be one of"),
    ("  %y = graph.conv2d %x, %x : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>", None, "conv2d needs x \\[N, C, H, W\\]"),
    ("  %y = graph.index_copy %x, %i, %x {dim = 1 : i64} : (tensor<2x3xf32>, tensor<1x1xi64>, tensor<2x3xf32>) -> tensor<2x3xf32>",
     "%x: tensor<2x3xf32>, %i: tensor<1x1xi64>", "index_copy needs a 1-D integer index"),
    ("  %y = graph.index_copy %x, %i, %x {dim = 1 : i64} : (tensor<2x3xf32>, tensor<1xi64>, tensor<2x3xf32>) -> tensor<2x3xf32>",
     "%x: tensor<2x3xf32>, %i: tensor<1xi64>", "index_copy's source must be f32 \\[2, 1\\]"),
])
def test_verifier_errors_name_the_problem_and_position(body, args, message):
    text = _fn(body, args or "%x: tensor<2x3xf32>")
    if message is None:  # a valid op: no error
        parse_ir(text)
        return
    with pytest.raises(RungError, match=rf"^m.mlir:2:3: '[a-z_.0-9]+' op .*{message}"):
        parse_ir(text, "m.mlir")


@pytest.mark.parametrize("body, message", [
    ("  %y = graph.frobnicate %x : (tensor<2x3xf32>) -> tensor<2x3xf32>", "m.mlir:2:\\d+: .*graph.frobnicate is not registered"),
    ("  %y = graph.add %x, %x : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf99>", "m.mlir:2:\\d+: "),
    ("  %y = graph.add %x, %q : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>", "m.mlir:2:22: values used but not defined: \\[%q\\]"),
    ("  %y = graph.add %x : (tensor<2x3xf32>) -> tensor<2x3xf32>", "m.mlir:2:\\d+: "),
    ("  %y = graph.add %x, %x : tensor<2x3xf32> tensor<2x3xf32>", "m.mlir:2:\\d+: "),
])
def test_parse_errors_name_the_position(body, message):
    with pytest.raises(RungError, match=message):
        parse_ir(_fn(body), "m.mlir")
