"""IR text: located errors, and verification that stays linear in the number of functions."""

import pytest
from xdsl.traits import SymbolOpInterface, SymbolTable

from ir.errors import RungError
from ir.interpreter import run
from rung.context import parse_ir


def chain(n: int) -> str:
    """@main calls @f1, which calls @f2, ... @f{n-1}."""
    funcs = []
    for i in range(n):
        call = f"    %y = func.call @f{i + 1}(%x) : (tensor<4xf32>) -> tensor<4xf32>\n    func.return %y : tensor<4xf32>"
        body = call if i < n - 1 else "    func.return %x : tensor<4xf32>"
        funcs.append(f"  func.func @{'main' if i == 0 else f'f{i}'}(%x: tensor<4xf32>) -> tensor<4xf32> {{\n{body}\n  }}")
    return "builtin.module {\n" + "\n".join(funcs) + "\n}\n"


def test_verifying_calls_looks_each_symbol_table_over_once(monkeypatch):
    seen = []
    original = SymbolOpInterface.get_sym_attr_name
    monkeypatch.setattr(SymbolOpInterface, "get_sym_attr_name", lambda self, op: seen.append(op) or original(self, op))
    n = 300
    parse_ir(chain(n))
    assert len(seen) <= 4 * n  # xDSL's own lookup scans the table per call: about n * n / 2 * 2 phases
    assert SymbolTable.lookup_symbol.__name__ == "lookup_symbol"  # xDSL's own again, once verified


def test_calls_still_name_what_they_miss():
    with pytest.raises(RungError, match="x.mlir:7:5: 'func.call' op '@nope' could not be found"):
        parse_ir(chain(3).replace("@f2(%x)", "@nope(%x)"), "x.mlir")


def test_a_long_chain_of_calls_runs():
    import numpy as np

    (y,) = run(parse_ir(chain(200)), [np.arange(4, dtype=np.float32)])
    assert y.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("tile, message", [
    ("1x16x32xi16, swizzle 100000000000000000000 4 3", "swizzle bits, base and shift must each be 0 to 16"),
    ("1x16x32xi16, swizzle 33 4 3", "swizzle bits, base and shift must each be 0 to 16"),
    ("1x100000x320000xi16", "a shared tile of 64000000000 bytes exceeds the 227 KiB"),
    ("0x16x32xi16", "a shared tile.s stages, rows and columns must be positive"),
])
def test_a_type_refused_as_it_is_parsed_is_located_on_its_line(tile, message):
    text = f"""builtin.module {{
  "ptx.kernel"() <{{sym_name = "k", threads = 32 : i64, shared_bytes = 1024 : i64}}> ({{
  ^bb0(%0: !ptx.reg<u64>):
    %1 = "warp.alloc_shared"() {{offset = 0 : i64}} : () -> !warp.smem<{tile}>
  }}) : () -> ()
}}
"""
    with pytest.raises(RungError, match=f"^k.mlir:4:[0-9]+: {message}"):
        parse_ir(text, "k.mlir")
