"""conv-to-gemm: graph.conv2d becomes im2col, a linear per channel group and a transpose, computing the same (drawn
shapes, groups, strides, padding, dilation, with or without a bias and a following activation); its kernels compute
the same at every level and assemble."""

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.ptx_text import module_text
from ir.interpreter import run
from levels import STAGES, assert_each_level_computes, dtype_tolerance
from machine_code import assert_assembles_without_spills
from rung.cli import random_inputs
from rung.context import make_context, parse_ir
from rung.passes import run_pipeline


def conv(n, c, h, w, o, kh, kw, groups, stride, padding, dilation, bias: bool, activation: str, dtype: str) -> str:
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    x, wt, b, y = (f"tensor<{'x'.join(map(str, s))}x{dtype}>" for s in ([n, c, h, w], [o, c // groups, kh, kw], [o], [n, o, oh, ow]))
    pair = lambda v: f"array<i64: {v[0]}, {v[1]}>"  # noqa: E731
    attrs = f"stride = {pair(stride)}, padding = {pair(padding)}, dilation = {pair(dilation)}, groups = {groups} : i64"
    lines = [f"  %y = graph.conv2d %x, %w{', %b' if bias else ''} {{{attrs}}} : ({x}, {wt}{', ' + b if bias else ''}) -> {y}"]
    if activation:
        lines.append(f"  %z = graph.{activation} %y : ({y}) -> {y}")
    return (f"func.func @main(%x: {x}, %w: {wt}{', %b: ' + b if bias else ''}) -> {y} {{\n" + "\n".join(lines) +
            f"\n  func.return {'%z' if activation else '%y'} : {y}\n}}\n")


@st.composite
def convolutions(draw, dtype="f32"):
    groups = draw(st.integers(1, 3))
    c, o = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kh, kw = draw(st.integers(1, (h - 1) // dilation[0] + 1)), draw(st.integers(1, (w - 1) // dilation[1] + 1))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    return conv(draw(st.integers(1, 2)), c, h, w, o, kh, kw, groups, stride, padding, dilation, draw(st.booleans()),
                draw(st.sampled_from(["", "relu", "silu"])), dtype)


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(convolutions(), st.integers(0, 2**31))
def test_a_convolution_becomes_gemms_over_its_windows_computing_the_same(text, seed):
    module = parse_ir(text)
    args = random_inputs([a.type for a in module.ops.first.body.block.args], seed, 4)
    want = run(module, args)[0]
    run_pipeline(module, "conv-to-gemm", make_context())
    ops = list(module.ops.first.body.block.ops)
    names = [op.name for op in ops]
    assert "graph.conv2d" not in names and names.count("graph.im2col") == names.count("graph.linear") >= 1
    assert all(op.operands[0].owner.name == "graph.linear" for op in ops if op.name in ("graph.relu", "graph.silu"))  # moved onto them
    np.testing.assert_allclose(run(module, args)[0], want, rtol=1e-5, atol=1e-5)


@settings(max_examples=max(5, settings().max_examples // 5), deadline=None)
@given(convolutions(dtype="f16"), st.integers(0, 2**31))
def test_each_level_computes_a_convolution(text, seed):
    module = parse_ir(text)
    args = random_inputs([a.type for a in module.ops.first.body.block.args], seed, 4)
    want = run(module, args)[0].astype(np.float32)
    run_pipeline(module, "conv-to-gemm", make_context())
    assert_each_level_computes(module, args, want, dtype_tolerance("f16", want))


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_convolution_kernels_assemble_without_spills(target, tmp_path):
    module = parse_ir(conv(2, 16, 14, 14, 32, 3, 3, 2, (1, 1), (1, 1), (1, 1), True, "relu", "bf16"))
    run_pipeline(module, "conv-to-gemm," + ",".join(STAGES), make_context())
    assert_assembles_without_spills(module_text(module, target), target, tmp_path)
