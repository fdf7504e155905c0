"""raise-attention: a constant causal mask becomes graph.sdpa's causal flag, repeat_kv's copies become
grouped-query attention on the kv heads; the program computes what it did."""

import numpy as np
import pytest

from ir.errors import RungError
from ir.interpreter import run
from rung.context import make_context, parse_ir, print_ir
from rung.passes import run_pipeline

Q, KV, WIDE, S = "tensor<1x4x8x16xf16>", "tensor<1x2x8x16xf16>", "tensor<1x2x2x8x16xf16>", "tensor<1x2x1x8x16xf16>"


def program(mask: np.ndarray | None, repeat: bool = True) -> str:
    lines = [f"func.func @main(%q: {Q}, %k: {KV if repeat else Q}, %v: {KV if repeat else Q}) -> {Q} {{"]
    for x in ("k", "v"):
        if repeat:
            lines += [f"  %{x}1 = graph.reshape %{x} : ({KV}) -> {S}",
                      f"  %{x}2 = graph.broadcast %{x}1 : ({S}) -> {WIDE}",
                      f"  %{x}4 = graph.reshape %{x}2 : ({WIDE}) -> {Q}"]
    k, v = ("%k4", "%v4") if repeat else ("%k", "%v")
    if mask is None:
        lines.append(f"  %y = graph.sdpa %q, {k}, {v} {{scale = 0.25 : f64}} : ({Q}, {Q}, {Q}) -> {Q}")
    else:
        value = str(mask.tolist()).replace("True", "true").replace("False", "false")
        lines.append(f"  %m = graph.constant {{value = dense<{value}> : tensor<1x1x8x8xi1>}} : tensor<1x1x8x8xi1>")
        lines.append(f"  %y = graph.sdpa %q, {k}, {v}, %m {{scale = 0.25 : f64}} : ({Q}, {Q}, {Q}, tensor<1x1x8x8xi1>) -> {Q}")
    return "\n".join(lines + [f"  func.return %y : {Q}", "}", ""])


def _inputs(module, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(a.type.get_shape()).astype(np.float16) for a in module.ops.first.body.block.args]


def _raised(text: str):
    module = parse_ir(text)
    args = _inputs(module)
    before = run(module, args)[0]
    run_pipeline(module, "raise-attention", make_context())
    np.testing.assert_array_equal(run(module, args)[0], before)
    return module


def test_a_causal_mask_and_repeated_kv_become_a_causal_grouped_query_attention():
    module = _raised(program(np.tril(np.ones((1, 1, 8, 8), bool))))
    text = print_ir(module)
    assert "graph.sdpa %q, %k, %v {scale = 2.500000e-01 : f64, causal}" in text
    assert "graph.broadcast" not in text and "graph.constant" not in text and "graph.reshape" not in text


def test_an_all_true_mask_goes_and_kv_of_as_many_heads_stay():
    text = print_ir(_raised(program(np.ones((1, 1, 8, 8), bool), repeat=False)))
    assert "graph.sdpa %q, %k, %v {scale = 2.500000e-01 : f64}" in text and "causal" not in text


def test_another_mask_stays_and_lower_to_ptx_says_why():
    mask = np.tril(np.ones((1, 1, 8, 8), bool))
    mask[..., 5, 0] = False  # a padded key: not causal alone
    module = _raised(program(mask))
    assert "%m {scale" in print_ir(module)
    with pytest.raises(RungError, match="'graph.sdpa' \\(%y\\) in @main has no GPU kernel yet: only causal attention, attention over a KV cache's positions or none"):
        run_pipeline(module, "lower-to-ptx", make_context())


def test_a_causal_mask_computed_from_arange_is_recognised_without_folding_it():
    """transformers build the mask from arange and compare; too big to fold, it is evaluated, not kept."""
    lines = program(None, repeat=False).splitlines()
    mask = ["  %i = graph.arange {start = 0 : i64, step = 1 : i64} : tensor<8xi64>",
            "  %rows = graph.reshape %i : (tensor<8xi64>) -> tensor<8x1xi64>",
            "  %cols = graph.reshape %i : (tensor<8xi64>) -> tensor<1x8xi64>",
            '  %m = graph.compare %rows, %cols {predicate = "ge"} : (tensor<8x1xi64>, tensor<1x8xi64>) -> tensor<8x8xi1>',
            f"  %y = graph.sdpa %q, %k, %v, %m {{scale = 0.25 : f64}} : ({Q}, {Q}, {Q}, tensor<8x8xi1>) -> {Q}"]
    text = "\n".join(lines[:1] + mask + lines[2:])
    raised = print_ir(_raised(text))
    assert "causal" in raised and "graph.arange" not in raised and "graph.compare" not in raised


@pytest.mark.parametrize("predicate, keys_first", [("le", True), ("ge", False)])
def test_a_mask_of_positions_over_a_kv_cache_becomes_sdpa_positions(predicate, keys_first):
    """frontend.causal_lm's mask, arange(S) <= positions[:, None] broadcast over the batch and heads, becomes the
    positions the kernel reads; the grouped heads' repeat_kv copies go too."""
    lines = program(None).splitlines()
    keys, query = "%cols", "%rows"
    mask = ["  %i = graph.arange {start = 0 : i64, step = 1 : i64} : tensor<8xi64>",
            "  %cols = graph.reshape %i : (tensor<8xi64>) -> tensor<1x8xi64>",
            "  %rows = graph.reshape %p : (tensor<8xi64>) -> tensor<8x1xi64>",
            f'  %m = graph.compare {keys if keys_first else query}, {query if keys_first else keys} {{predicate = "{predicate}"}} : '
            f'(tensor<{"1x8" if keys_first else "8x1"}xi64>, tensor<{"8x1" if keys_first else "1x8"}xi64>) -> tensor<8x8xi1>',
            "  %m1 = graph.reshape %m : (tensor<8x8xi1>) -> tensor<1x1x8x8xi1>",
            "  %m2 = graph.broadcast %m1 : (tensor<1x1x8x8xi1>) -> tensor<1x4x8x8xi1>",
            f"  %y = graph.sdpa %q, %k4, %v4, %m2 {{scale = 0.25 : f64}} : ({Q}, {Q}, {Q}, tensor<1x4x8x8xi1>) -> {Q}"]
    text = "\n".join([lines[0].replace(") ->", ", %p: tensor<8xi64>) ->")] + lines[1:7] + mask + lines[8:])
    module = parse_ir(text)
    args = _inputs(module)[:3] + [np.array([3, 4, 5, 6, 7, 0, 2, 1])]
    before = run(module, args)[0]
    run_pipeline(module, "raise-attention", make_context())
    np.testing.assert_array_equal(run(module, args)[0], before)
    raised = print_ir(module)
    assert "graph.sdpa %q, %k, %v, %p {scale = 2.500000e-01 : f64, positions}" in raised
    assert not any(op in raised for op in ("graph.compare", "graph.broadcast", "graph.arange"))


MATMUL_ATTENTION = """func.func @main(%q: tensor<2x4x8x16xf32>, %y: tensor<2x8x4x16xf32>, %v: tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32> {
  %kt = graph.permute %y {dims = array<i64: 0, 2, 3, 1>} : (tensor<2x8x4x16xf32>) -> tensor<2x4x16x8xf32>
  %a = graph.constant {value = dense<5.000000e-01> : tensor<f32>} : tensor<f32>
  %qs = graph.mul %q, %a : (tensor<2x4x8x16xf32>, tensor<f32>) -> tensor<2x4x8x16xf32>
  %b = graph.constant {value = dense<5.000000e-01> : tensor<f32>} : tensor<f32>
  %ks = graph.mul %kt, %b : (tensor<2x4x16x8xf32>, tensor<f32>) -> tensor<2x4x16x8xf32>
  %s = graph.matmul %qs, %ks : (tensor<2x4x8x16xf32>, tensor<2x4x16x8xf32>) -> tensor<2x4x8x8xf32>
  %p = graph.softmax %s {dim = -1 : i64} : (tensor<2x4x8x8xf32>) -> tensor<2x4x8x8xf32>
  %o = graph.matmul %p, %v : (tensor<2x4x8x8xf32>, tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  func.return %o : tensor<2x4x8x16xf32>
}
"""


def test_attention_written_as_matmuls_and_softmax_becomes_sdpa():
    """ONNX's attention, q * a and k^T * b (k^T a permute of the heads' input) through MatMul, Softmax, MatMul, is
    graph.sdpa(q, k, v) with scale a * b and k the same permute with its last two dimensions swapped back."""
    module = parse_ir(MATMUL_ATTENTION)
    rng = np.random.default_rng(2)
    args = [rng.standard_normal(a.type.get_shape()).astype(np.float32) for a in module.ops.first.body.block.args]
    before = run(module, args)[0]
    run_pipeline(module, "raise-attention", make_context())
    text = print_ir(module)
    assert "graph.matmul" not in text and "graph.softmax" not in text and "graph.mul" not in text
    assert "graph.permute %y {dims = array<i64: 0, 2, 1, 3>}" in text and "scale = 2.500000e-01 : f64" in text
    np.testing.assert_allclose(run(module, args)[0], before, rtol=1e-5, atol=1e-6)
    broadcast = MATMUL_ATTENTION.replace("%v: tensor<2x4x8x16xf32>", "%v: tensor<1x4x8x16xf32>").replace(
        "(tensor<2x4x8x8xf32>, tensor<2x4x8x16xf32>)", "(tensor<2x4x8x8xf32>, tensor<1x4x8x16xf32>)")
    module = parse_ir(broadcast)  # a v broadcast over the batch: no sdpa takes it, left as it is
    run_pipeline(module, "raise-attention", make_context())
    assert "graph.sdpa" not in print_ir(module)
