"""Row programs through every level: graph.rms_norm, layer_norm and softmax -> tile row program -> ptx
kernel, each level run on the CPU (interpreter, block program, lane simulator) against the graph op,
and assembled by ptxas."""

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.ptx_text import module_text
from levels import STAGES, assert_each_level_computes, dtype_tolerance
from machine_code import assert_assembles_without_spills
from ir.interpreter import run
from lowering.row_programs import row_threads
from rung.cli import random_inputs
from rung.context import make_context, parse_ir, print_ir
from rung.passes import run_pipeline

OPS = {
    "rms_norm": """func.func @main(%x: tensor<{shape}x{t}>, %w: tensor<{n}x{t}>) -> tensor<{shape}x{t}> {{
  %y = graph.rms_norm %x, %w {{eps = 1.0e-05 : f64}} : (tensor<{shape}x{t}>, tensor<{n}x{t}>) -> tensor<{shape}x{t}>
  func.return %y : tensor<{shape}x{t}>
}}
""",
    "layer_norm": """func.func @main(%x: tensor<{shape}x{t}>, %w: tensor<{n}x{t}>, %b: tensor<{n}x{t}>) -> tensor<{shape}x{t}> {{
  %y = graph.layer_norm %x, %w, %b {{eps = 1.0e-05 : f64}} : (tensor<{shape}x{t}>, tensor<{n}x{t}>, tensor<{n}x{t}>) -> tensor<{shape}x{t}>
  func.return %y : tensor<{shape}x{t}>
}}
""",
    "softmax": """func.func @main(%x: tensor<{shape}x{t}>) -> tensor<{shape}x{t}> {{
  %y = graph.softmax %x {{dim = -1 : i64}} : (tensor<{shape}x{t}>) -> tensor<{shape}x{t}>
  func.return %y : tensor<{shape}x{t}>
}}
""",
}


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.sampled_from(sorted(OPS)), st.lists(st.integers(1, 3), min_size=0, max_size=2), st.integers(1, 700),
       st.sampled_from(["f16", "bf16"]), st.integers(0, 2**31))
def test_each_level_computes_the_same_row_op(op, lead, n, dtype, seed):
    text = OPS[op].format(shape="x".join(map(str, [*lead, n])), n=n, t=dtype)
    module = parse_ir(text)
    args = random_inputs([a.type for a in module.ops.first.body.block.args], seed, 8)
    want = run(module, args)[0].astype(np.float32)
    assert_each_level_computes(module, args, want, dtype_tolerance(dtype, want))


@pytest.mark.parametrize("n, threads", [(1, 32), (100, 32), (256, 32), (257, 64), (4096, 512), (8192, 1024), (20000, 1024)])
def test_a_row_takes_about_eight_elements_a_thread(n, threads):
    assert row_threads(n) == threads


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("n", [100, 4096, 8192])
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_row_kernels_assemble_without_spills(op, n, dtype, target, tmp_path):
    module = parse_ir(OPS[op].format(shape=f"4x{n}", n=n, t=dtype))
    run_pipeline(module, ",".join(STAGES), make_context())
    assert_assembles_without_spills(module_text(module, target), target, tmp_path)


def test_softmax_over_another_dimension_stays_and_lower_to_ptx_says_why():
    from ir.errors import RungError

    module = parse_ir(OPS["softmax"].format(shape="4x8", n=8, t="f16").replace("dim = -1", "dim = 0"))
    run_pipeline(module, "graph-to-tile", make_context())
    assert [op.name for op in module.ops.first.body.block.ops][0] == "graph.softmax"
    with pytest.raises(RungError, match="'graph.softmax' \\(%y\\) in @main has no GPU kernel yet: only softmax over the last dimension"):
        run_pipeline(module, "lower-to-ptx", make_context())


EMBEDDING = """func.func @main(%w: tensor<{v}x{n}x{t}>, %i: tensor<{lead}x{it}>) -> tensor<{lead}x{n}x{t}> {{
  %y = graph.embedding %w, %i : (tensor<{v}x{n}x{t}>, tensor<{lead}x{it}>) -> tensor<{lead}x{n}x{t}>
  func.return %y : tensor<{lead}x{n}x{t}>
}}
"""


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.integers(1, 60), st.lists(st.integers(1, 4), min_size=1, max_size=2), st.integers(1, 300),
       st.sampled_from(["f16", "bf16"]), st.sampled_from(["i32", "i64"]), st.integers(0, 2**31))
def test_each_level_gathers_the_same_embedding_rows(v, lead, n, dtype, index_type, seed):
    module = parse_ir(EMBEDDING.format(v=v, n=n, t=dtype, lead="x".join(map(str, lead)), it=index_type))
    rng = np.random.default_rng(seed)
    args = [random_inputs([module.ops.first.body.block.args[0].type], seed, 8)[0],
            rng.integers(0, v, lead).astype(np.int32 if index_type == "i32" else np.int64)]
    want = run(module, args)[0]
    for stage in STAGES:
        run_pipeline(module, stage, make_context())
        assert np.array_equal(run(module, args)[0], want), stage  # a copy: exact


@pytest.mark.parametrize("bad", [7, -1])
def test_an_embedding_index_out_of_range_is_an_error_at_every_level(bad):
    from ir.errors import RungError

    module = parse_ir(EMBEDDING.format(v=7, n=16, t="f16", lead="3", it="i64"))
    args = [np.ones((7, 16), np.float16), np.array([0, bad, 2], np.int64)]
    for stage in ["", *STAGES]:
        if stage:
            run_pipeline(module, stage, make_context())
        with pytest.raises(RungError, match="out of range|outside \\[0, 7\\)"):
            run(module, args)


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(1, 70), st.sampled_from(["f16", "bf16"]),
       st.randoms(use_true_random=False), st.integers(0, 2**31))
def test_each_level_copies_a_permute(lead, n, dtype, rnd, seed):
    """Of the leading dimensions (row copies), or moving the last one too (gathered rows)."""
    src = [*lead, n]
    perm = list(range(len(src)))
    rnd.shuffle(perm)
    out = [src[a] for a in perm]
    dims = ", ".join(map(str, perm))
    text = (f"func.func @main(%x: tensor<{'x'.join(map(str, src))}x{dtype}>) -> tensor<{'x'.join(map(str, out))}x{dtype}> {{\n"
            f"  %y = graph.permute %x {{dims = array<i64: {dims}>}} : (tensor<{'x'.join(map(str, src))}x{dtype}>) -> "
            f"tensor<{'x'.join(map(str, out))}x{dtype}>\n  func.return %y : tensor<{'x'.join(map(str, out))}x{dtype}>\n}}\n")
    _copies_alike(text, seed)


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.lists(st.integers(1, 6), min_size=0, max_size=2), st.integers(2, 200), st.data(), st.sampled_from(["f16", "bf16"]),
       st.integers(0, 2**31))
def test_each_level_copies_a_slice(lead, n, data, dtype, seed):
    """Of the last dimension (step 1), or of a leading one (any step): the rows it keeps."""
    src = [*lead, n]
    dim = data.draw(st.integers(0, len(lead)))
    start = data.draw(st.integers(0, src[dim] - 1))
    end = data.draw(st.integers(start + 1, src[dim]))
    step = 1 if dim == len(lead) else data.draw(st.integers(1, 3))
    out = list(src)
    out[dim] = len(range(start, end, step))
    src_t, out_t = f"tensor<{'x'.join(map(str, src))}x{dtype}>", f"tensor<{'x'.join(map(str, out))}x{dtype}>"
    text = (f"func.func @main(%x: {src_t}) -> {out_t} {{\n"
            f"  %y = graph.slice %x {{dim = {dim} : i64, start = {start} : i64, end = {end} : i64, step = {step} : i64}} : ({src_t}) -> "
            f"{out_t}\n  func.return %y : {out_t}\n}}\n")
    _copies_alike(text, seed)


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.lists(st.integers(1, 40), min_size=1, max_size=3), st.data(),
       st.sampled_from(["f16", "bf16"]), st.integers(0, 2**31))
def test_each_level_copies_a_concatenation(shape, widths, data, dtype, seed):
    """Along the last dimension (padded row loads) or a leading one (ViT's class token before the patches: gathered rows)."""
    dim = data.draw(st.integers(0, len(shape) - 1))
    parts = [f"tensor<{'x'.join(map(str, shape[:dim] + [w] + shape[dim + 1:]))}x{dtype}>" for w in widths]
    out = f"tensor<{'x'.join(map(str, shape[:dim] + [sum(widths)] + shape[dim + 1:]))}x{dtype}>"
    names = [f"%x{i}" for i in range(len(widths))]
    text = (f"func.func @main({', '.join(f'{n}: {p}' for n, p in zip(names, parts))}) -> {out} {{\n"
            f"  %y = graph.cat {', '.join(names)} {{dim = {dim} : i64}} : ({', '.join(parts)}) -> {out}\n  func.return %y : {out}\n}}\n")
    _copies_alike(text, seed)


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data(), st.sampled_from(["f16", "bf16"]), st.integers(0, 2**31))
def test_each_level_copies_a_broadcast(out, data, dtype, seed):
    """Over leading dimensions (ViT's class token under the batch), or of the last dimension too."""
    src = [1 if data.draw(st.booleans()) else d for d in out][data.draw(st.integers(0, len(out) - 1)):]
    src_t, out_t = f"tensor<{'x'.join(map(str, src))}x{dtype}>", f"tensor<{'x'.join(map(str, out))}x{dtype}>"
    _copies_alike(f"func.func @main(%x: {src_t}) -> {out_t} {{\n  %y = graph.broadcast %x : ({src_t}) -> {out_t}\n"
                  f"  func.return %y : {out_t}\n}}\n", seed)


def _copies_alike(text: str, seed: int, tol: float = 0.0) -> None:
    """Every level computes what the graph op does: exactly for copies (and maxima), within `tol` of the result's
    largest value otherwise."""
    module = parse_ir(text)
    args = random_inputs([a.type for a in module.ops.first.body.block.args], seed, 8)
    want = run(module, args)[0].astype(np.float32)
    run_pipeline(module, "graph-to-tile", make_context())
    assert "graph." not in print_ir(module).replace("graph.reshape", "")
    for stage in STAGES[1:]:
        run_pipeline(module, stage, make_context())
        got = run(module, args)[0].astype(np.float32)
        assert got.shape == want.shape and np.abs(got - want).max() <= tol * max(1.0, float(np.abs(want).max())), stage


def _window_text(op: str, x: list[int], out: list[int], dtype: str, attrs: str) -> str:
    x_t, out_t = (f"tensor<{'x'.join([*map(str, shape), dtype])}>" for shape in (x, out))
    return (f"func.func @main(%x: {x_t}) -> {out_t} {{\n  %y = graph.{op} %x {{{attrs}}} : ({x_t}) -> {out_t}\n"
            f"  func.return %y : {out_t}\n}}\n")


def _out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.data(), st.sampled_from(["f16", "bf16"]),
       st.integers(0, 2**31))
def test_each_level_gathers_a_convolutions_windows(n, c, h, w, data, dtype, seed):
    """graph.im2col with any window, stride, padding, dilation and channel range: a copy, zeros in the padding."""
    kh, kw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    sh, sw, dh, dw = (data.draw(st.integers(1, 3)) for _ in range(4))
    ph, pw = data.draw(st.integers(0, kh)), data.draw(st.integers(0, kw))
    oh, ow = _out(h, kh, sh, ph, dh), _out(w, kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        return
    first = data.draw(st.integers(0, c - 1))
    count = data.draw(st.integers(1, c - first))
    attrs = (f"kernel = array<i64: {kh}, {kw}>, stride = array<i64: {sh}, {sw}>, padding = array<i64: {ph}, {pw}>, "
             f"dilation = array<i64: {dh}, {dw}>, channels = array<i64: {first}, {count}>")
    _copies_alike(_window_text("im2col", [n, c, h, w], [n * oh * ow, count * kh * kw], dtype, attrs), seed)


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.sampled_from(["max_pool2d", "avg_pool2d"]), st.integers(1, 2), st.integers(1, 3), st.integers(1, 12), st.integers(1, 12),
       st.data(), st.sampled_from(["f16", "bf16"]), st.integers(0, 2**31))
def test_each_level_pools_as_the_graph_op(op, n, c, h, w, data, dtype, seed):
    kh, kw = data.draw(st.integers(1, min(h, 4))), data.draw(st.integers(1, min(w, 4)))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    ph, pw = data.draw(st.integers(0, kh // 2)), data.draw(st.integers(0, kw // 2))
    out = [n, c, _out(h, kh, sh, ph), _out(w, kw, sw, pw)]
    attrs = f"kernel = array<i64: {kh}, {kw}>, stride = array<i64: {sh}, {sw}>, padding = array<i64: {ph}, {pw}>"
    _copies_alike(_window_text(op, [n, c, h, w], out, dtype, attrs), seed, 0.0 if op == "max_pool2d" else dtype_tolerance(dtype, 1.0))


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.sampled_from(["sum", "mean", "max"]), st.lists(st.integers(1, 4), min_size=0, max_size=2), st.lists(st.integers(1, 40), min_size=1, max_size=2),
       st.booleans(), st.sampled_from(["f16", "bf16"]), st.integers(0, 2**31))
def test_each_level_reduces_the_trailing_dimensions(kind, lead, reduced, keepdim, dtype, seed):
    x = [*lead, *reduced]
    dims = list(range(len(lead), len(x)))
    out = [*lead, *([1] * len(reduced) if keepdim else [])]
    attrs = f"kind = \"{kind}\", dims = array<i64: {', '.join(map(str, dims))}>{', keepdim' if keepdim else ''}"
    _copies_alike(_window_text("reduce", x, out, dtype, attrs), seed, 0.0 if kind == "max" else dtype_tolerance(dtype, 1.0) * 8)


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_copy_kernels_assemble_without_spills(target, tmp_path):
    """Permutes (keeping the last dimension and moving it), a slice, a convolution's windows, pools and a mean."""
    ty = "tensor<2x16x12x64xf16>"
    module = parse_ir(f"""func.func @main(%x: {ty}) -> tensor<2x12x16x32xf16> {{
  %p = graph.permute %x {{dims = array<i64: 0, 2, 1, 3>}} : ({ty}) -> tensor<2x12x16x64xf16>
  %y = graph.slice %p {{dim = -1 : i64, start = 16 : i64, end = 48 : i64}} : (tensor<2x12x16x64xf16>) -> tensor<2x12x16x32xf16>
  %t = graph.permute %y {{dims = array<i64: 0, 1, 3, 2>}} : (tensor<2x12x16x32xf16>) -> tensor<2x12x32x16xf16>
  %c = graph.im2col %t {{kernel = array<i64: 3, 3>, padding = array<i64: 1, 1>, channels = array<i64: 0, 12>}} : (tensor<2x12x32x16xf16>) -> tensor<1024x108xf16>
  %m = graph.max_pool2d %t {{kernel = array<i64: 3, 3>, stride = array<i64: 2, 2>, padding = array<i64: 1, 1>}} : (tensor<2x12x32x16xf16>) -> tensor<2x12x16x8xf16>
  %a = graph.avg_pool2d %m {{kernel = array<i64: 2, 2>}} : (tensor<2x12x16x8xf16>) -> tensor<2x12x8x4xf16>
  %r = graph.reduce %a {{kind = "mean", dims = array<i64: -1, -2>}} : (tensor<2x12x8x4xf16>) -> tensor<2x12xf16>
  func.return %y, %c, %r : tensor<2x12x16x32xf16>, tensor<1024x108xf16>, tensor<2x12xf16>
}}
""".replace(") -> tensor<2x12x16x32xf16> {", ") -> (tensor<2x12x16x32xf16>, tensor<1024x108xf16>, tensor<2x12xf16>) {"))
    run_pipeline(module, ",".join(STAGES), make_context())
    assert_assembles_without_spills(module_text(module, target), target, tmp_path)


def test_a_permute_that_moves_only_unit_dimensions_is_a_view():
    """A decoding step's [B, H, 1, D] -> [B, 1, H, D]: the same elements in the same order, so no kernel."""
    src, out = "tensor<2x4x1x64xf16>", "tensor<2x1x4x64xf16>"
    module = parse_ir(f"func.func @main(%x: {src}) -> {out} {{\n  %y = graph.permute %x {{dims = array<i64: 0, 2, 1, 3>}} : ({src}) -> {out}\n"
                      f"  func.return %y : {out}\n}}\n")
    args = random_inputs([a.type for a in module.ops.first.body.block.args], 0, 8)
    want = run(module, args)[0]
    run_pipeline(module, "lower-to-ptx", make_context())
    assert [op.name for op in module.ops.first.body.block.ops] == ["graph.reshape", "func.return"]
    assert np.array_equal(run(module, args)[0], want)
