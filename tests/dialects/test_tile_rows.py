"""Row programs (dialects.tile.rows): printing and parsing, verifiers, and their meaning block by block."""

import numpy as np
import pytest

from ir.errors import RungError
from ir.interpreter import run
from rung.context import make_context, parse_ir, print_ir
from rung.passes import run_pipeline

NORM = """func.func @main(%x: tensor<6x70xf16>, %w: tensor<70xf16>) -> tensor<6x70xf16> {
  %y = graph.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<6x70xf16>, tensor<70xf16>) -> tensor<6x70xf16>
  func.return %y : tensor<6x70xf16>
}
"""


def _program() -> str:
    module = parse_ir(NORM)
    run_pipeline(module, "graph-to-tile", make_context())
    return print_ir(module)


def test_a_row_program_prints_parses_and_runs_as_its_graph_op():
    text = _program()
    assert "#tile.rows<cols = 70, threads = 32, rows = 8>" in text and 'tile.reduce_row "sum"' in text
    again = parse_ir(text)
    assert print_ir(again) == text
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((6, 70)).astype(np.float16), rng.standard_normal(70).astype(np.float16)
    want = run(parse_ir(NORM), [x, w])[0].astype(np.float32)
    got = run(again, [x, w])[0].astype(np.float32)
    assert np.abs(got - want).max() <= 4e-3 * np.abs(want).max()


@pytest.mark.parametrize("old, new, message", [
    ('tile.map "rsqrt"', 'tile.map "sqrt"', "tile.map applies one of add, sub, mul, div, max, exp, rsqrt, rcp, neg, not 'sqrt'"),
    ('tile.map "rsqrt"', 'tile.map "add"', "'add' takes 2 operands \\(a constant counts\\), got 1"),
    ('tile.reduce_row "sum"', 'tile.reduce_row "prod"', "reduces by sum or max, not 'prod'"),
    ("threads = 32,", "threads = 48,", "bad row schedule: threads must be a multiple of 32"),
    ("rows = 8>", "rows = 40>", "bad row schedule: a block takes one row, or up to 32 rows of one warp each, not 40 rows of 32 threads"),
    ("cols = 70,", "cols = 72,", "has a !tile.row<70>, the schedule's rows have 72 elements"),
    ("tile.row_id\n", "tile.row_id\n    %z, %z2 = tile.block_origin\n", "a row program holds row ops .*, not 'tile.block_origin'"),
])
def test_bad_row_programs_are_one_located_error(old, new, message):
    text = _program()
    assert old in text
    with pytest.raises(RungError, match=rf"t.mlir:\d+:\d+: .*{message}"):
        parse_ir(text.replace(old, new, 1), "t.mlir")
