"""The tile dialect: tile.matmul's verifier and its blocked meaning."""

import numpy as np
import pytest

from ir.context import parse_ir
from ir.errors import RungError
from ir.interpreter import run

OP = ("func.func @main(%x: tensor<{m}x{k}xf16>, %w: tensor<{n}x{k}xf16>) -> tensor<{m}x{n}xf16> {{\n"
      "  %y = tile.matmul %x, %w {{block = array<i64: {block}>, warps = array<i64: 2, 2>, stages = 3 : i64}}"
      " : tensor<{m}x{k}xf16>, tensor<{n}x{k}xf16> -> tensor<{m}x{n}xf16>\n  func.return %y : tensor<{m}x{n}xf16>\n}}\n")


def test_blocked_matmul_is_a_matmul():
    module = parse_ir(OP.format(m=130, n=70, k=96, block="128, 64, 32"))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((130, 96)).astype(np.float16), rng.standard_normal((70, 96)).astype(np.float16)
    y = run(module, [x, w])[0]
    np.testing.assert_allclose(y.astype(np.float32), (x.astype(np.float32) @ w.astype(np.float32).T), rtol=2e-3, atol=2e-2)


@pytest.mark.parametrize("m, n, k, block, message", [
    (4, 8, 60, "48, 128, 32", "warp tile 24x64 must be a multiple of 16x16"),
    (4, 8, 64, "128, 128, 48", "BK must be 32, 64 or 128"),
    (4, 8, 64, "128, 128", "block is \\[BM, BN, BK\\]"),
])
def test_bad_tile_matmuls(m, n, k, block, message):
    with pytest.raises(RungError, match=rf"t.mlir:2:3: 'tile.matmul' op .*{message}"):
        parse_ir(OP.format(m=m, n=n, k=k, block=block), "t.mlir")
