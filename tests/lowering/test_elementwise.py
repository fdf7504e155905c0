"""Fused elementwise chains through every level: drawn chains of graph elementwise ops -> one row
program -> ptx kernel, each level run on the CPU (interpreter, block program, lane simulator)
against the graph ops, and assembled by ptxas."""

import shutil

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backend.ptx_text import module_text
from machine_code import assert_assembles_without_spills
from dialects.tile import KernelOp
from ir.dtypes import to_storage
from ir.interpreter import run
from rung.context import make_context, parse_ir
from rung.passes import run_pipeline

UNARY = ["neg", "exp", "relu", "sigmoid", "silu", "tanh", "erf", "gelu", "gelu {approximate = \"tanh\"}"]
BINARY = ["add", "sub", "mul", "div", "maximum", "pow"]
STAGES = ["graph-to-tile", "tile-expand", "tile-to-warp", "smem-swizzle", "warp-to-ptx"]


@st.composite
def chains(draw):
    """(IR text, inputs): a chain of 1-6 elementwise ops on [lead..., n], each binary op's other operand a
    fresh input of the full shape, a row broadcast over the leading dimensions, a tensor broadcast over
    some of them, or a constant."""
    lead = draw(st.lists(st.integers(1, 5), min_size=0, max_size=2))
    n, dtype = draw(st.integers(1, 300)), draw(st.sampled_from(["f16", "bf16"]))
    shape = "x".join(map(str, [*lead, n]))
    full = f"tensor<{shape}x{dtype}>"
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    args, inputs, lines = ["%x0: " + full], [rng.uniform(-2, 2, [*lead, n])], []
    value = "%x0"
    for i in range(draw(st.integers(1, 6))):
        fn = draw(st.sampled_from(UNARY + BINARY))
        if fn in UNARY:
            name, _, attrs = fn.partition(" ")
            lines.append(f"  %v{i} = graph.{name} {value} {attrs} : ({full}) -> {full}")
        else:
            kind = "constant" if fn == "pow" else draw(st.sampled_from(["full", "row", "partial", "constant"]))
            partial = [d if draw(st.booleans()) else 1 for d in lead] + [n]  # broadcast over some leading dimensions
            other_shape = {"full": [*lead, n], "row": [n], "partial": partial, "constant": []}[kind]
            other = rng.uniform(0.5, 2, other_shape) if fn == "div" else rng.uniform(-2, 2, other_shape)  # no division near 0
            if fn == "pow":  # a small whole exponent
                other = np.float64(draw(st.sampled_from([2, 3])))
            if kind == "constant":
                name, ty = f"%c{i}", f"tensor<{dtype}>"
                lines.append(f"  {name} = graph.constant {{value = dense<{float(other):.4f}> : {ty}}} : {ty}")
            else:
                name, ty = f"%x{len(args)}", f"tensor<{'x'.join(map(str, other_shape))}x{dtype}>"
                args.append(f"{name}: {ty}")
                inputs.append(other)
            lhs, rhs = (value, name) if fn in ("div", "pow") or draw(st.booleans()) else (name, value)
            lhs_ty, rhs_ty = (full, ty) if lhs == value else (ty, full)
            lines.append(f"  %v{i} = graph.{fn} {lhs}, {rhs} : ({lhs_ty}, {rhs_ty}) -> {full}")
        value = f"%v{i}"
    text = f"func.func @main({', '.join(args)}) -> {full} {{\n" + "\n".join(lines) + f"\n  func.return {value} : {full}\n}}\n"
    return text, dtype, inputs


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(chains())
def test_each_level_computes_the_same_chain(chain):
    text, dtype, inputs = chain
    module = parse_ir(text)
    args = [to_storage(a, v.type) for a, v in zip(inputs, module.ops.first.body.block.args)]
    want = run(module, args)[0].astype(np.float32)
    assume(np.isfinite(want).all() and np.abs(want).max() < 1e4)  # (exp of exp of ... leaves f16's range)
    # the graph rounds every op's result to f16/bf16, the kernel keeps the chain in f32: a few ulps apart
    tol = (3e-2 if dtype == "bf16" else 6e-3) * max(1.0, float(np.abs(want).max()))
    for stage in STAGES:
        run_pipeline(module, stage, make_context())
        if stage == "graph-to-tile":  # the whole chain is one kernel, no graph op left but reshapes
            names = [op.name for op in module.ops.first.body.block.ops]
            assert names.count("tile.launch") == 1 and set(names) <= {"tile.launch", "graph.reshape", "func.return"}, names
            assert sum(isinstance(op, KernelOp) for op in module.ops) == 1
        got = run(module, args)[0].astype(np.float32)
        assert np.isfinite(got).all() and np.abs(got - want).max() <= tol, (stage, np.abs(got - want).max(), text)


def _levels_agree(text: str, seed: int = 0, low: float = -2.0):
    module = parse_ir(text)
    rng = np.random.default_rng(seed)
    args = [to_storage(rng.uniform(low, 2, a.type.get_shape()), a.type) for a in module.ops.first.body.block.args]
    want = run(module, args)[0].astype(np.float32)
    run_pipeline(module, ",".join(STAGES), make_context())
    got = run(module, args)[0].astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=6e-3, atol=6e-3)
    return module


def test_a_constant_or_a_row_divided_by_the_chain():
    module = _levels_agree("""func.func @main(%x: tensor<7x33xf16>, %r: tensor<33xf16>) -> tensor<7x33xf16> {
  %c = graph.constant {value = dense<3.0> : tensor<f16>} : tensor<f16>
  %a = graph.div %c, %x : (tensor<f16>, tensor<7x33xf16>) -> tensor<7x33xf16>
  %b = graph.div %r, %x : (tensor<33xf16>, tensor<7x33xf16>) -> tensor<7x33xf16>
  %y = graph.sub %a, %b : (tensor<7x33xf16>, tensor<7x33xf16>) -> tensor<7x33xf16>
  func.return %y : tensor<7x33xf16>
}
""", low=0.5)
    assert sum(op.name == "ptx.kernel" for op in module.ops) == 1  # one kernel, the constant folded into it


def test_a_value_used_twice_ends_a_chain():
    module = _levels_agree("""func.func @main(%x: tensor<5x40xbf16>) -> tensor<5x40xbf16> {
  %a = graph.exp %x : (tensor<5x40xbf16>) -> tensor<5x40xbf16>
  %b = graph.mul %a, %a : (tensor<5x40xbf16>, tensor<5x40xbf16>) -> tensor<5x40xbf16>
  %y = graph.neg %b : (tensor<5x40xbf16>) -> tensor<5x40xbf16>
  func.return %y : tensor<5x40xbf16>
}
""")
    assert sum(op.name == "ptx.kernel" for op in module.ops) == 2  # exp; then mul and neg


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_a_swiglu_kernel_assembles_without_spills(dtype, target, tmp_path):
    ty = f"tensor<4x11008x{dtype}>"
    module = parse_ir(f"""func.func @main(%g: {ty}, %u: {ty}) -> {ty} {{
  %s = graph.silu %g : ({ty}) -> {ty}
  %y = graph.mul %s, %u : ({ty}, {ty}) -> {ty}
  func.return %y : {ty}
}}
""")
    run_pipeline(module, ",".join(STAGES), make_context())
    assert_assembles_without_spills(module_text(module, target), target, tmp_path)
