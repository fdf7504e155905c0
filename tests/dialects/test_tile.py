"""The tile dialect: tile.matmul's verifier and its blocked meaning."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rung.context import parse_ir
from ir.errors import RungError
from ir.interpreter import run

OP = ("func.func @main(%x: tensor<{m}x{k}xf16>, %w: tensor<{n}x{k}xf16>) -> tensor<{m}x{n}xf16> {{\n"
      "  %y = tile.matmul %x, %w {{schedule = #tile.gemm<f16, block = [{block}], warps = [2, 2], stages = 3{extra}>}}"
      " : tensor<{m}x{k}xf16>, tensor<{n}x{k}xf16> -> tensor<{m}x{n}xf16>\n  func.return %y : tensor<{m}x{n}xf16>\n}}\n")


def test_blocked_matmul_is_a_matmul():
    module = parse_ir(OP.format(m=130, n=70, k=96, block="128, 64, 32", extra=""))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((130, 96)).astype(np.float16), rng.standard_normal((70, 96)).astype(np.float16)
    y = run(module, [x, w])[0]
    np.testing.assert_allclose(y.astype(np.float32), (x.astype(np.float32) @ w.astype(np.float32).T), rtol=2e-3, atol=2e-2)


@pytest.mark.parametrize("m, n, k, block, extra, message", [
    (4, 8, 64, "48, 128, 32", "", "t.mlir:2:50: bad GEMM schedule: warp tile 24x64 must be a multiple of 16x16"),
    (4, 8, 64, "128, 128, 48", "", "t.mlir:2:50: bad GEMM schedule: BK must be 32, 64 or 128"),
    (4, 8, 64, "128, 128", "", "t.mlir:2:.*: block takes 3 sizes, got 2"),
    (4, 8, 64, "128, 128, 32", ", tiles = 3", "t.mlir:2:.*: unknown GEMM schedule field 'tiles' \\(known: block, warps, .*stages"),
    (4, 8, 64, "128, 128, 32", ", bias", "t.mlir:2:3: 'tile.matmul' op the schedule's bias is True, the operands need False"),
    (4, 8, 64, "0, 128, 32", "", "t.mlir:2:50: bad GEMM schedule: block sizes, warps, split_k and raster are positive integers, got bm = 0"),
    (4, 8, 64, "128, 128, 32", ", split_k = 0", "t.mlir:2:50: bad GEMM schedule: .* got split_k = 0"),
    (4, 8, 60, "128, 128, 32", "", "t.mlir:2:3: 'tile.matmul' op the schedule's copy_elems is 8, the operands need 2"),
])
def test_bad_tile_matmuls(m, n, k, block, extra, message):
    with pytest.raises(RungError, match=message):
        parse_ir(OP.format(m=m, n=n, k=k, block=block, extra=extra), "t.mlir")


@pytest.mark.parametrize("weight, warps, message", [
    ("int4", "1, 4", "a shared table holds the pairs of a table-decoded weight \\(nf4\\), filled by at most 256 threads: not int4"),
    ("nf4", "2, 8", "at most 256 threads: not nf4 with 512"),
    ("", "1, 4", "shared_table describe a low-precision weight"),
])
def test_a_shared_table_needs_a_table_format(weight, warps, message):
    """GemmConfig.shared_table: only a table format's pairs, filled by at most one thread a row."""
    from dialects.tile import GemmConfig

    fields = {"weight": weight, "group": 64} if weight else {}
    wm, wn = map(int, warps.split(", "))
    with pytest.raises(ValueError, match=message):
        GemmConfig("f16", bm=16 * wm, bn=16 * wn, bk=128, warps_m=wm, warps_n=wn, shared_table=True, **fields)


@settings(max_examples=max(10, settings().max_examples))
@given(st.sampled_from(["f16", "bf16"]), st.sampled_from([(16, 128, 1, 4), (64, 128, 2, 2), (128, 128, 2, 2), (128, 256, 2, 4)]),
       st.sampled_from([32, 64, 128]), st.integers(2, 4), st.integers(1, 4), st.sampled_from([1, 8]), st.booleans(),
       st.sampled_from(["", "int4 128", "uint4 64 zero", "e2m1 32 e8m0", "nf4 64", "int2 64", "a8 s8", "a8 e4m3"]),
       st.sampled_from(["none", "silu"]), st.booleans())
def test_tile_matmul_carries_its_whole_schedule(dtype, tiles, bk, stages, split_k, raster, prefetch, weight, activation, shared_table):
    """tile.matmul's properties are its GemmConfig: through get, printing and parsing, nothing is lost."""
    from xdsl.dialects import func
    from xdsl.dialects.builtin import Float8E4M3FNType, ModuleOp, TensorType, bf16, f16, f32, i8

    from dialects.lp import QuantAttr
    from dialects.tile import GemmConfig, MatmulOp, packed_types
    from rung.context import make_context
    from ir.numerics import QuantFormat

    bm, bn, wm, wn = tiles
    element, group, *rest = weight.split() or ["", "0"]
    a8 = group if element == "a8" else ""
    fmt = None
    if element and not a8:
        fmt = QuantFormat(element, int(group), "e8m0" if "e8m0" in rest else "f16", "original" if "zero" in rest else "none")
    try:
        cfg = GemmConfig(dtype, bm, bn, bk, wm, wn, stages, activation=activation, split_k=split_k, raster=raster, prefetch=prefetch, a8=a8,
                         shared_table=shared_table,
                         **({"weight": element, "group": int(group), "scale": "e8m0" if "e8m0" in rest else "", "zero": "zero" in rest} if fmt else {}))
    except ValueError:  # not a valid schedule
        assume(False)
    m, n, k = 40, 72, 512
    act = f16 if dtype == "f16" else bf16
    if a8:
        eight = {"s8": i8, "e4m3": Float8E4M3FNType()}[a8]
        types = [TensorType(eight, [m, k]), TensorType(eight, [n, k]), TensorType(f32, [m]), TensorType(f32, [n])]
    else:
        types = [TensorType(act, [m, k])] + ([t for t in packed_types(fmt, dtype, n, k) if t] if fmt else [TensorType(act, [n, k])])
    f = func.FuncOp("main", (types, [TensorType(act, [m, n])]))
    args = f.body.block.args
    if a8:
        mm = MatmulOp.get(args[0], args[1], None, cfg, args[3], x_scales=args[2], result_element=act)
    else:
        scales, zeros = (args[2], args[3] if len(args) > 3 else None) if fmt else (None, None)
        mm = MatmulOp.get(args[0], args[1], None, cfg, scales, zeros, QuantAttr.from_format(fmt) if fmt else None)
    f.body.block.add_ops([mm, func.ReturnOp(mm.result)])
    assert mm.config == cfg
    reparsed = parse_ir(str(ModuleOp([f])), ctx=make_context())
    (again,) = [op for op in reparsed.walk() if isinstance(op, MatmulOp)]
    assert again.config == cfg


def test_eight_bit_tile_matmul_is_the_scaled_product():
    text = ("func.func @main(%x: tensor<20x64xi8>, %w: tensor<24x64xi8>, %xs: tensor<20xf32>, %ws: tensor<24xf32>) -> tensor<20x24xf16> {\n"
            "  %y = tile.matmul %x, %w x_scales %xs scales %ws {schedule = #tile.gemm<f16, block = [16, 32, 64], warps = [1, 2], stages = 2, "
            "a8 = s8>} : tensor<20x64xi8>, tensor<24x64xi8> x_scales tensor<20xf32> scales tensor<24xf32> -> tensor<20x24xf16>\n"
            "  func.return %y : tensor<20x24xf16>\n}\n")
    rng = np.random.default_rng(1)
    x, w = rng.integers(-127, 128, (20, 64)).astype(np.int8), rng.integers(-127, 128, (24, 64)).astype(np.int8)
    xs, ws = rng.random(20).astype(np.float32) * 0.01, rng.random(24).astype(np.float32) * 0.01
    y = run(parse_ir(text), [x, w, xs, ws])[0]
    ref = (x * xs[:, None].astype(np.float64)) @ (w * ws[:, None].astype(np.float64)).T
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
    with pytest.raises(RungError, match="x and w must share K, a multiple of 16"):
        parse_ir(text.replace("64xi8", "40xi8"), "t.mlir")
