"""raise-norms: RMS norm as transformers decompose it becomes graph.rms_norm; near variants stay as they are."""

from pathlib import Path

import numpy as np
import pytest

from ir.interpreter import run
from rung.context import make_context, parse_ir, print_ir
from rung.passes import run_pipeline

CHAIN = """func.func @main(%x: tensor<3x5x40xf16>, %w: tensor<40xf16>) -> tensor<3x5x40xf16> {{
  %x32 = graph.cast %x : (tensor<3x5x40xf16>) -> tensor<3x5x40xf32>
  %two = graph.constant {{value = dense<{power}> : tensor<f32>}} : tensor<f32>
  %sq = graph.pow %x32, %two : (tensor<3x5x40xf32>, tensor<f32>) -> tensor<3x5x40xf32>
  %mean = graph.reduce %sq {{kind = "{kind}", dims = array<i64: {dim}>, keepdim}} : (tensor<3x5x40xf32>) -> {mean_type}
  %eps = graph.constant {{value = dense<1.0e-06> : tensor<f32>}} : tensor<f32>
  %add = graph.add %mean, %eps : ({mean_type}, tensor<f32>) -> {mean_type}
  %r = graph.rsqrt %add : ({mean_type}) -> {mean_type}
  %n = graph.mul %x32, %r : (tensor<3x5x40xf32>, {mean_type}) -> tensor<3x5x40xf32>
  %n16 = graph.cast %n : (tensor<3x5x40xf32>) -> tensor<3x5x40xf16>
  %y = graph.mul %w, %n16 : (tensor<40xf16>, tensor<3x5x40xf16>) -> tensor<3x5x40xf16>
  func.return %y : tensor<3x5x40xf16>
}}
"""
RMS = dict(power="2.0", kind="mean", dim="-1", mean_type="tensor<3x5x1xf32>")


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, 5, 40)).astype(np.float16), rng.uniform(0.5, 1.5, 40).astype(np.float16)]


def test_the_transformers_chain_becomes_one_rms_norm_within_an_ulp():
    module = parse_ir(CHAIN.format(**RMS))
    want = run(module, _inputs())[0].astype(np.float32)
    run_pipeline(module, "raise-norms", make_context())
    assert [op.name for op in module.ops.first.body.block.ops] == ["graph.rms_norm", "func.return"], print_ir(module)
    assert module.ops.first.body.block.ops.first.attr("eps") == float(np.float32(1e-6))  # the f32 constant's value
    got = run(module, _inputs())[0].astype(np.float32)
    assert np.all(np.abs(got - want) <= 2 * np.spacing(np.abs(want).astype(np.float16)).astype(np.float32))  # f16 ulps


def test_gemmas_chain_becomes_an_rms_norm_with_its_weight_offset():
    """Gemma multiplies by (cast(w, f32) + 1) before casting back: rms_norm with offset 1, rounded as the chain is."""
    text = CHAIN.format(**RMS).replace(
        "  %n16 = graph.cast %n : (tensor<3x5x40xf32>) -> tensor<3x5x40xf16>\n"
        "  %y = graph.mul %w, %n16 : (tensor<40xf16>, tensor<3x5x40xf16>) -> tensor<3x5x40xf16>",
        "  %w32 = graph.cast %w : (tensor<40xf16>) -> tensor<40xf32>\n"
        "  %one = graph.constant {value = dense<1.0> : tensor<f32>} : tensor<f32>\n"
        "  %w1 = graph.add %w32, %one : (tensor<40xf32>, tensor<f32>) -> tensor<40xf32>\n"
        "  %nw = graph.mul %n, %w1 : (tensor<3x5x40xf32>, tensor<40xf32>) -> tensor<3x5x40xf32>\n"
        "  %y = graph.cast %nw : (tensor<3x5x40xf32>) -> tensor<3x5x40xf16>")
    module = parse_ir(text)
    want = run(module, _inputs())[0].astype(np.float32)
    run_pipeline(module, "raise-norms", make_context())
    assert [op.name for op in module.ops.first.body.block.ops] == ["graph.rms_norm", "func.return"], print_ir(module)
    assert module.ops.first.body.block.ops.first.attr("offset") == 1.0
    got = run(module, _inputs())[0].astype(np.float32)
    assert np.all(np.abs(got - want) <= np.spacing(np.abs(want).astype(np.float16)).astype(np.float32))


@pytest.mark.parametrize("change", [dict(power="3.0"), dict(kind="sum"), dict(dim="1", mean_type="tensor<3x1x40xf32>")])
def test_a_different_chain_stays(change):
    text = CHAIN.format(**{**RMS, **change})
    module = parse_ir(text)
    run_pipeline(module, "raise-norms", make_context())
    assert "graph.rms_norm" not in print_ir(module)


def test_a_value_the_chain_computes_used_elsewhere_keeps_it():
    text = CHAIN.format(**RMS).replace("func.return %y : tensor<3x5x40xf16>", "func.return %y, %n16 : tensor<3x5x40xf16>, tensor<3x5x40xf16>") \
        .replace("-> tensor<3x5x40xf16> {", "-> (tensor<3x5x40xf16>, tensor<3x5x40xf16>) {", 1)
    module = parse_ir(text)
    run_pipeline(module, "raise-norms", make_context())
    assert "graph.rms_norm" not in print_ir(module)


@pytest.mark.slow
def test_the_llama_example_keeps_its_outputs():
    from frontend.loading import cast_model, load_model_file
    from frontend.torch2ir import inputs_for, torch_to_ir

    model, args, kwargs = cast_model(*load_model_file(Path(__file__).parents[2] / "examples" / "llama.py"), "f16")
    module, weights, names = torch_to_ir(model, args, kwargs)
    inputs = inputs_for(names, weights, args, kwargs)
    want = run(module, inputs)[0].astype(np.float32)
    run_pipeline(module, "raise-norms", make_context())
    assert print_ir(module).count("graph.rms_norm") == 5 and "graph.pow" not in print_ir(module)
    got = run(module, inputs)[0].astype(np.float32)
    assert np.abs(got - want).max() <= 1e-2 * np.abs(want).max()
