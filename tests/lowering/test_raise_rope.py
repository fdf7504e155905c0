"""raise-rope: rotary embedding as transformers decompose it becomes graph.rope, and graph.rope's row kernel
computes at every level what the op does (drawn shapes, cos and sin broadcast over the leading dimensions)."""

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.ptx_text import module_text
from ir.interpreter import run
from levels import assert_each_level_computes, dtype_tolerance
from machine_code import assert_assembles_without_spills
from rung.cli import random_inputs
from rung.context import make_context, parse_ir, print_ir
from rung.passes import run_pipeline


def decomposed(x: str, table: str, half: int) -> str:
    h = x.replace(f"x{2 * half}x", f"x{half}x")
    return f"""func.func @main(%x: {x}, %cos: {table}, %sin: {table}) -> {x} {{
  %a = graph.mul %x, %cos : ({x}, {table}) -> {x}
  %x1 = graph.slice %x {{dim = 3 : i64, start = 0 : i64, end = {half} : i64, step = 1 : i64}} : ({x}) -> {h}
  %x2 = graph.slice %x {{dim = 3 : i64, start = {half} : i64, end = 4611686018427387904 : i64, step = 1 : i64}} : ({x}) -> {h}
  %n = graph.neg %x2 : ({h}) -> {h}
  %r = graph.cat %n, %x1 {{dim = -1 : i64}} : ({h}, {h}) -> {x}
  %b = graph.mul %r, %sin : ({x}, {table}) -> {x}
  %y = graph.add %a, %b : ({x}, {x}) -> {x}
  func.return %y : {x}
}}
"""


def test_the_transformers_chain_becomes_one_rope_computing_the_same():
    module = parse_ir(decomposed("tensor<1x4x6x16xf16>", "tensor<1x1x6x16xf16>", 8))
    args = random_inputs([a.type for a in module.ops.first.body.block.args], 0, 4)
    want = run(module, args)[0]
    run_pipeline(module, "raise-rope", make_context())
    assert [op.name for op in module.ops.first.body.block.ops] == ["graph.rope", "func.return"], print_ir(module)
    got = run(module, args)[0].astype(np.float32)  # the products are no longer rounded on their own: f16 roundings apart
    assert np.abs(got - want.astype(np.float32)).max() <= 4e-3 * max(1.0, float(np.abs(want).max()))


def test_a_rotation_of_other_halves_stays():
    text = decomposed("tensor<1x4x6x16xf16>", "tensor<1x1x6x16xf16>", 8)
    module = parse_ir(text.replace("%n = graph.neg %x2", "%n = graph.neg %x1").replace("graph.cat %n, %x1", "graph.cat %n, %x2"))
    run_pipeline(module, "raise-rope", make_context())
    assert "graph.rope" not in print_ir(module)


@settings(max_examples=max(6, settings().max_examples // 4), deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 20), st.integers(1, 40), st.booleans(), st.booleans(),
       st.sampled_from(["f16", "bf16"]), st.integers(0, 2**31))
def test_each_level_computes_the_same_rope(batch, heads, rows, half, per_head, transposed, dtype, seed):
    """On x itself, or on x's heads transposed before it (transformers' [B, S, H, D] -> [B, H, S, D]), which the rope
    kernel reads through instead of a copy."""
    x = f"tensor<{batch}x{heads}x{rows}x{2 * half}x{dtype}>"
    table = f"tensor<1x{heads if per_head else 1}x{rows}x{2 * half}x{dtype}>"
    source = f"tensor<{batch}x{rows}x{heads}x{2 * half}x{dtype}>"
    head = (f"%x: {source}, %cos: {table}, %sin: {table}) -> {x} {{\n  %t = graph.permute %x {{dims = array<i64: 0, 2, 1, 3>}} : ({source}) -> {x}\n"
            if transposed else f"%x: {x}, %cos: {table}, %sin: {table}) -> {x} {{\n")
    module = parse_ir(f"""func.func @main({head}  %y = graph.rope {'%t' if transposed else '%x'}, %cos, %sin : ({x}, {table}, {table}) -> {x}
  func.return %y : {x}
}}
""")
    args = random_inputs([a.type for a in module.ops.first.body.block.args], seed, 4)
    want = run(module, args)[0].astype(np.float32)
    assert_each_level_computes(module, args, want, dtype_tolerance(dtype, want))
    assert print_ir(module).count("ptx.launch") == 1  # the transpose is read through, not copied


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_a_rope_kernel_assembles_without_spills(target, tmp_path):
    x, table = "tensor<1x32x512x128xf16>", "tensor<1x1x512x128xf16>"
    module = parse_ir(f"""func.func @main(%x: {x}, %cos: {table}, %sin: {table}) -> {x} {{
  %y = graph.rope %x, %cos, %sin : ({x}, {table}, {table}) -> {x}
  func.return %y : {x}
}}
""")
    run_pipeline(module, "lower-to-ptx", make_context())
    assert_assembles_without_spills(module_text(module, target), target, tmp_path)
