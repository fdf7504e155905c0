"""The interpreter's entry point: argument checks, calls, errors."""

import numpy as np
import pytest

from rung.context import parse_ir
from ir.errors import RungError
from ir.interpreter import run

MODULE = """
func.func @double(%x: tensor<3xf32>) -> tensor<3xf32> {
  %y = graph.add %x, %x : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
  func.return %y : tensor<3xf32>
}
func.func @main(%x: tensor<3xf32>, %i: tensor<2xi64>) -> (tensor<3xf32>, tensor<2x3xf32>) {
  %y = func.call @double(%x) : (tensor<3xf32>) -> tensor<3xf32>
  %w = graph.reshape %y : (tensor<3xf32>) -> tensor<1x3xf32>
  %e = graph.embedding %w, %i : (tensor<1x3xf32>, tensor<2xi64>) -> tensor<2x3xf32>
  func.return %y, %e : tensor<3xf32>, tensor<2x3xf32>
}
"""


def test_calls_and_multiple_results():
    m = parse_ir(MODULE)
    y, e = run(m, [np.array([1, 2, 3], np.float32), np.array([0, 0])])
    assert y.tolist() == [2, 4, 6] and e.tolist() == [[2, 4, 6], [2, 4, 6]]


@pytest.mark.parametrize("inputs, message", [
    ([np.zeros(4, np.float32), np.zeros(2, np.int64)], r"argument 0: expected shape \[3\]"),
    ([np.zeros(3, np.float32)], "@main takes 2 arguments, got 1"),
    ([np.zeros(3, np.float32), np.zeros(2, np.float32)], "argument 1: expected i64 elements, got numpy float32"),
    ([np.zeros(3, np.float32), np.array([0, 5])], "'graph.embedding' failed at run time: embedding index out of range"),
])
def test_bad_inputs_are_clear_errors(inputs, message):
    with pytest.raises(RungError, match=message):
        run(parse_ir(MODULE), inputs)


def test_unknown_function():
    with pytest.raises(RungError, match="no function @nope in the module \\(functions: @double, @main\\)"):
        run(parse_ir(MODULE), [], name="nope")
