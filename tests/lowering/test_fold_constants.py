"""fold-constants: what a model computes from constants alone becomes constants, with the same values."""

import numpy as np
import pytest

import rung
from ir.interpreter import run
from rung.context import make_context, parse_ir, print_ir
from rung.passes import run_pipeline

MASK = """func.func @main(%x: tensor<4x4xf16>) -> tensor<4x4xf16> {
  %i = graph.arange : tensor<4xi64>
  %r = graph.reshape %i : (tensor<4xi64>) -> tensor<4x1xi64>
  %c = graph.compare %i, %r {predicate = "le"} : (tensor<4xi64>, tensor<4x1xi64>) -> tensor<4x4xi1>
  %z = graph.full {value = 0.0 : f64} : tensor<4x4xf16>
  %n = graph.full {value = -60000.0 : f64} : tensor<4x4xf16>
  %m = graph.where %c, %z, %n : (tensor<4x4xi1>, tensor<4x4xf16>, tensor<4x4xf16>) -> tensor<4x4xf16>
  %y = graph.add %x, %m : (tensor<4x4xf16>, tensor<4x4xf16>) -> tensor<4x4xf16>
  func.return %y : tensor<4x4xf16>
}
"""


def test_a_causal_mask_built_from_constants_folds_to_one_constant_with_the_same_values():
    module = parse_ir(MASK)
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float16)
    want = run(module, [x])[0]
    run_pipeline(module, "fold-constants", make_context())
    ops = [op.name for op in module.ops.first.body.block.ops]
    assert ops == ["graph.constant", "graph.add", "func.return"], ops
    assert np.array_equal(run(module, [x])[0], want)
    assert np.array_equal(run(parse_ir(print_ir(module)), [x])[0], want)  # the printed constant reads back the same


def test_a_result_over_the_limit_stays_an_op():
    module = parse_ir(MASK)
    run_pipeline(module, "fold-constants{max_elements=8}", make_context())
    assert "graph.full" in print_ir(module) and "graph.arange" not in print_ir(module)  # [4] folds, [4, 4] stays


def test_a_compiled_program_uploads_its_constants():
    fn = rung.compile(MASK, target="sm_80")
    assert {op.name for op in fn.steps} == {"ptx.launch", "graph.constant"}
    x = np.random.default_rng(1).standard_normal((4, 4)).astype(np.float16)
    assert np.array_equal(fn(x), run(parse_ir(MASK), [x])[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_folding_a_transformer_leaves_its_outputs_unchanged(name):
    from pathlib import Path

    from frontend.loading import load_model_file
    from frontend.torch2ir import inputs_for, torch_to_ir

    model, args, kwargs = load_model_file(Path(__file__).parents[2] / "examples" / f"{name}.py")
    module, weights, names = torch_to_ir(model, args, kwargs)
    inputs = inputs_for(names, weights, args, kwargs)
    want = run(module, inputs)
    before = len(list(module.ops.first.body.block.ops))
    run_pipeline(module, "fold-constants", make_context())
    assert len(list(module.ops.first.body.block.ops)) < before - 5  # the masks and positions are constants now
    for got, w in zip(run(module, inputs), want):
        assert np.array_equal(got, w)
