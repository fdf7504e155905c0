"""tile-expand: the block program of a schedule computes what tile.matmul computes, block by block."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, bf16, f16
from xdsl.ir import Block, Region

from dialects import graph as g
from dialects import tile
from dialects.lp import QuantAttr
from dialects.tile import GemmConfig
from rung.context import make_context, parse_ir, print_ir
from ir.dtypes import storage_dtype
from ir.errors import RungError
from ir.interpreter import run
from ir.format_text import load_format_file
from ir.numerics import ElementFormat, quant_format
from rung.passes import run_pipeline
from lowering.tile_expand import block_program
from tests.lowering.test_graph_to_tile import linear_ir

SCHEDULES = [
    GemmConfig("f16", bm=32, bn=32, bk=32, warps_m=1, warps_n=1, stages=2),
    GemmConfig("bf16", bm=16, bn=64, bk=64, warps_m=1, warps_n=2, stages=3, split_k=3, bias=True, activation="relu"),
    GemmConfig("f16", bm=32, bn=64, bk=32, warps_m=2, warps_n=2, stages=4, raster=2, prefetch=True, bias=True, activation="silu"),
    GemmConfig("f16", bm=16, bn=32, bk=64, warps_m=1, warps_n=2, stages=2, b_kn=True, split_k=2),
    GemmConfig("f16", bm=16, bn=64, bk=64, warps_m=1, warps_n=2, stages=2, a8="s8"),
    GemmConfig("bf16", bm=16, bn=64, bk=128, warps_m=1, warps_n=2, stages=2, a8="e4m3", split_k=2),
]


def _matmul_module(cfg: GemmConfig, m: int, n: int, k: int):
    """@main(x, w[, x_scales, scales][, bias]) = tile.matmul of schedule cfg (B [K, N] with b_kn)."""
    from xdsl.dialects.builtin import Float8E4M3FNType, f32, i8

    act = f16 if cfg.dtype == "f16" else bf16
    elem = {"s8": i8, "e4m3": Float8E4M3FNType()}.get(cfg.a8, act)
    types = [TensorType(elem, [m, k]), TensorType(elem, [k, n] if cfg.b_kn else [n, k])]
    types += [TensorType(f32, [m]), TensorType(f32, [n])] if cfg.a8 else []
    types += [TensorType(act, [n])] if cfg.bias else []
    block = Block(arg_types=types)
    x, w, *rest = block.args
    x_scales, scales = (rest[0], rest[1]) if cfg.a8 else (None, None)
    mm = tile.MatmulOp.get(x, w, rest[-1] if cfg.bias else None, cfg, scales, x_scales=x_scales, result_element=act)
    block.add_ops([mm, func.ReturnOp(mm.result)])
    return ModuleOp([func.FuncOp("main", (types, [mm.result.type]), Region(block))]), types


@settings(max_examples=max(10, settings().max_examples // 3))
@given(st.sampled_from(SCHEDULES), st.integers(1, 70), st.integers(1, 100), st.integers(1, 6), st.integers(0, 2**31))
def test_block_program_computes_what_the_matmul_computes(cfg, m, n, k16, seed):
    k = 16 * k16  # 8-bit operands take K in whole 16-byte rows
    cfg = dataclasses.replace(cfg, copy_elems=8, b_copy_elems=8 if n % 8 == 0 else 2 if n % 2 == 0 else 1)
    module, types = _matmul_module(cfg, m, n, k)
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-4, 5, t.get_shape()).astype(storage_dtype(t.element_type)) for t in types]  # exact in f32 (and in s8, e4m3)
    if cfg.a8:
        inputs[2:4] = [2.0 ** rng.integers(-3, 3, t.get_shape()) for t in types[2:4]]  # powers of two: every product exact
    expected = run(module, inputs)[0]
    run_pipeline(module, "tile-expand", make_context())
    assert not any(isinstance(op, tile.MatmulOp) for op in module.walk())
    assert [op.name for op in module.ops.first.body.block.ops][-2] == ("tile.sum_splits" if cfg.split_k > 1 else "tile.launch")
    assert np.array_equal(run(module, inputs)[0], expected)
    text = print_ir(module)
    assert print_ir(parse_ir(text)) == text  # the block program reads back


WEIGHT_SCHEDULES = [  # packed weights: scales with the decode or with the mma, zero terms, a shared table
    GemmConfig("f16", bm=8, bn=64, bk=64, warps_m=1, warps_n=2, stages=3, weight="nf4", group=64, scale_partials=True, shared_table=True),
    GemmConfig("bf16", bm=16, bn=64, bk=64, warps_m=1, warps_n=2, stages=3, weight="uint4", group=32, zero=True, split_k=2),
]


@pytest.mark.parametrize("cfg", SCHEDULES + WEIGHT_SCHEDULES, ids=lambda c: c.name)
def test_the_program_carries_its_schedule(cfg):
    program = block_program(cfg)
    program.verify()
    got = program.config
    if cfg.split_k > 1:  # the bias and activation follow the reduction (tile.sum_splits)
        want = dataclasses.replace(cfg, bias=False, activation="none", dtype=cfg.dtype if not cfg.a8 else "f16")
    else:
        want = cfg
    assert got == want and program.sym_name.data == cfg.name


FORMATS = [quant_format("int4", group=32), quant_format("uint4", group=64, zero="rescale"), quant_format("int2", group=64),
           quant_format("int1", group=128), quant_format("nf4", group=64), quant_format("e2m1", group=32),
           quant_format("mxfp4"), quant_format("e4m3", group=None), quant_format("int8", group=None), quant_format("mxfp6"),
           *(quant_format(d.name) for d in load_format_file(Path(__file__).parents[2] / "examples" / "formats" / "custom.fmt")
             if not isinstance(d.format, ElementFormat))]


def _qlinear_module(fmt, m: int, n: int, k: int, dtype):
    """@main(x, qweight, scales[, zeros]) = graph.qlinear, with quantized inputs of a random weight."""
    rng = np.random.default_rng(n * k)
    values, scales, zeros = fmt.quantize(rng.standard_normal((n, k)))
    attr = QuantAttr.from_format(fmt)
    arrays = [rng.standard_normal((m, k)).astype(np.float32), values.astype(storage_dtype(attr.element)), scales]
    types = [TensorType(dtype, [m, k]), TensorType(attr.element, [n, k]), TensorType(attr.scale, scales.shape)]
    if zeros is not None:
        arrays.append(zeros)
        types.append(TensorType(attr.scale, zeros.shape))
    block = Block(arg_types=types)
    op = g.QLinearOp.make(*block.args, format=attr)
    block.add_ops([op, func.ReturnOp(op.results[0])])
    return ModuleOp([func.FuncOp("main", (types, [op.results[0].type]), Region(block))]), arrays


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("schedule", ["{bm=16 bn=64 bk=128 warps_m=1 warps_n=2 stages=2}", "{bm=32 bn=32 bk=128 warps_m=2 warps_n=1 split_k=2}",
                                      "{bm=8 bn=32 bk=128 warps_m=1 warps_n=1 stages=2}"])
def test_packed_weights_decode_in_the_block_program(fmt, schedule):
    dtype = bf16 if fmt.element == "nf4" else f16
    if fmt.element == "int8":
        dtype = f16  # 8-bit integer codes decode into f16 only
    module, arrays = _qlinear_module(fmt, 9, 40, 256, dtype)
    graph_level = run(module, arrays)[0].astype(np.float32)
    ctx = make_context()
    run_pipeline(module, "graph-to-tile" + schedule, ctx)
    assert any(isinstance(op, tile.MatmulOp) for op in module.walk())
    matmul_level = run(module, arrays)[0]
    tol = 2e-2 if dtype == bf16 else 4e-3
    np.testing.assert_allclose(matmul_level.astype(np.float32), graph_level, rtol=tol, atol=tol * np.abs(graph_level).max())
    run_pipeline(module, "tile-expand", ctx)
    assert any(isinstance(op, tile.DecodeOp) for op in module.walk())
    assert np.array_equal(run(module, arrays)[0], matmul_level)


@pytest.mark.parametrize("fmt", [quant_format("int4", group=64), quant_format("uint4", group=64, zero="rescale")], ids=str)
def test_sm_90a_qlinears_decode_into_wgmma_registers_level_by_level(fmt):
    """On sm_90a a qlinear at M > 64 takes wgmma tiles with the weight decoded into A registers:
    the graph, the block program and the lowered kernel agree to rounding."""
    from dialects.ptx import WgmmaOp

    module, arrays = _qlinear_module(fmt, 70, 40, 256, f16)
    graph_level = run(module, arrays)[0].astype(np.float32)
    ctx = make_context()
    run_pipeline(module, "graph-to-tile{target=sm_90a},tile-expand", ctx)
    assert next(op for op in module.walk() if isinstance(op, tile.KernelOp)).config.wgmma
    block_level = run(module, arrays)[0]
    np.testing.assert_allclose(block_level.astype(np.float32), graph_level, rtol=4e-3, atol=4e-3 * np.abs(graph_level).max())
    run_pipeline(module, "tile-to-warp,smem-swizzle,warp-to-ptx", ctx)
    assert any(isinstance(op, WgmmaOp) and op.a_in_registers for op in module.walk())
    # (the block program sums a k-tile's products at once, the wgmmas k16 step by k16 step: f16 roundings may differ)
    np.testing.assert_allclose(run(module, arrays)[0].astype(np.float32), block_level.astype(np.float32), rtol=1e-3, atol=1e-3)


def _expanded(cfg=SCHEDULES[0]) -> str:
    module, _ = _matmul_module(cfg, 20, 24, 32)
    run_pipeline(module, "tile-expand", make_context())
    return print_ir(module)


@pytest.mark.parametrize("old, new, message", [
    ("!tile.frag<32x32xf16, b>", "!tile.frag<32x32xf16, bt>", "a bt fragment reads a B tile copied with K along its rows"),
    ("!tile.shared<2x32x32xf16>", "!tile.shared<2x32x16xf16>", "does not hold the schedule's|a fragment of"),
    ("!tile.frag<32x32xf16, b>", "!tile.frag<32x32xf16, acc>", "tile.mma takes a, b"),
    ("!tile.frag<32x32xf16, b>", "!tile.frag<32x32xf16, swizzled>", "fragment layout must be one of"),
    ("bytes = 16 : i64", "bytes = 12 : i64", "bytes one of|elements per copy must be"),
    ("stages = 2>", "stages = 3>", "does not hold the schedule's"),
    ("stages = 2>", "stages = 2, bias>", "the program does not carry out its schedule: its ops have bias: False"),
    ("k_step = array<i64: 32, 1>", "k_step = array<i64: 16, 1>", "places k-tiles by k_dim = 1, k_step = \\[32, 1\\]"),
    ("    tile.store", "    tile.store %9, %2[%3, %4] : !tile.frag<32x32xf32, acc>, tensor<?x?xf16>\n    tile.store", "one tile.store"),
])
def test_bad_block_programs_are_rejected(old, new, message):
    text = _expanded()
    parse_ir(text)  # as expanded, it verifies
    assert old in text
    with pytest.raises(RungError, match=message):
        parse_ir(text.replace(old, new))


def test_tile_to_warp_asks_for_expanded_matmuls():
    module = parse_ir(linear_ir((4, 64), 8, "f16", False))
    run_pipeline(module, "graph-to-tile", make_context())
    with pytest.raises(RungError, match="expand tile.matmul first"):
        run_pipeline(module, "tile-to-warp", make_context())


@pytest.mark.parametrize("old, new, message", [
    ("{group = 128 : i64}", "", "tile.mma.s scales come with their group size"),
    ("{group = 128 : i64}", "{group = 24 : i64}", "multiple of 16"),
    ("1x128xf16, group_acc", "1x128xf16, group", "group_acc rows"),
    ('{element = "int4"}', '{element = "int4", group = 128 : i64}', "tile.decode's scales come with their group size"),
])
def test_scaled_partial_sums_are_checked(old, new, message):
    """scale_partials: tile.decode gives the codes' values and tile.mma scales each group's partial sums."""
    text = _partials_program()
    parse_ir(text)
    assert old in text
    with pytest.raises(RungError, match=message):
        parse_ir(text.replace(old, new))


def _partials_program() -> str:
    cfg = GemmConfig("f16", bm=16, bn=128, bk=128, warps_m=1, warps_n=4, stages=3, weight="int4", group=128, scale_partials=True)
    return print_ir(ModuleOp([block_program(cfg)]))


def test_a_decoded_weight_needs_its_scales_somewhere():
    text = _partials_program().replace(" scales %19 {group = 128 : i64}", "").replace(" scales !tile.frag<1x128xf16, group_acc>", "")
    with pytest.raises(RungError, match="neither has them"):
        parse_ir(text)


def test_tile_to_warp_names_an_op_it_cannot_lower_in_a_block_program():
    """Lowerings dispatch by op class: a row op inside a GEMM's block program is a diagnostic, not a crash."""
    text = _expanded().replace("= tile.block_origin\n", "= tile.block_origin\n    %r = tile.row_id\n", 1)
    module = parse_ir(text)
    with pytest.raises(RungError, match="tile-to-warp: @rung_gemm_.*: no lowering for 'tile.row_id' in a GEMM block program"):
        run_pipeline(module, "tile-to-warp", make_context())
