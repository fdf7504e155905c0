"""graph-to-tile, tile-expand, tile-to-warp, smem-swizzle and warp-to-ptx keep the program's meaning, level by level."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialects import graph as g
from dialects.ptx import KernelOp, LaunchOp
from dialects.tile import KernelOp as TileKernel
from dialects.tile import MatmulOp
from rung.cli import random_inputs
from rung.context import make_context, parse_ir, print_ir
from ir.dtypes import EIGHT_BIT_TYPES, eight_bit_format, storage_dtype
from ir.errors import RungError
from ir.interpreter import run
from rung.passes import LOWER_TO_PTX, run_pipeline

SCHEDULES = ["", "{bm=32 bn=32 bk=32 warps_m=1 warps_n=1 stages=2}", "{bm=64 bn=32 bk=64 warps_m=2 warps_n=1 stages=3}"]


def linear_ir(shape, n, dtype, bias):
    k = shape[-1]
    xt, wt, bt = f"tensor<{'x'.join(map(str, shape))}x{dtype}>", f"tensor<{n}x{k}x{dtype}>", f"tensor<{n}x{dtype}>"
    yt = f"tensor<{'x'.join(map(str, (*shape[:-1], n)))}x{dtype}>"
    args, ops, types = (f"%x: {xt}, %w: {wt}, %b: {bt}", "%x, %w, %b", f"{xt}, {wt}, {bt}") if bias else (f"%x: {xt}, %w: {wt}", "%x, %w", f"{xt}, {wt}")
    return (f"func.func @main({args}) -> {yt} {{\n  %y = graph.linear {ops} : ({types}) -> {yt}\n"
            f"  func.return %y : {yt}\n}}\n")


@settings(max_examples=max(8, settings().max_examples // 12))  # (each example lowers and interprets every level: some 5 s)
@given(st.lists(st.integers(1, 70), min_size=1, max_size=2), st.integers(1, 150), st.integers(1, 80),
       st.sampled_from(["f16", "bf16"]), st.sampled_from(SCHEDULES), st.integers(0, 2**31))
def test_each_level_computes_the_same_linear(lead, n, k, dtype, schedule, seed):
    text = linear_ir((*lead, k), n, dtype, bias=False)
    module = parse_ir(text)
    types = [a.type for a in module.ops.first.body.block.args]
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-3, 4, t.get_shape()).astype(np.float32) for t in types]  # exact in f32 accumulation
    ctx = make_context()
    expected = run(module, inputs)[0]
    run_pipeline(module, f"graph-to-tile{schedule}", ctx)
    assert any(isinstance(op, MatmulOp) for op in module.walk())
    assert np.array_equal(run(module, inputs)[0], expected)
    run_pipeline(module, "tile-expand", ctx)
    assert any(isinstance(op, TileKernel) for op in module.ops) and not any(isinstance(op, MatmulOp) for op in module.walk())
    assert np.array_equal(run(module, inputs)[0], expected)  # the block program, block by block
    run_pipeline(module, "tile-to-warp,smem-swizzle,warp-to-ptx", ctx)
    assert any(isinstance(op, LaunchOp) for op in module.walk()) and not any(isinstance(op, TileKernel) for op in module.walk())
    assert np.array_equal(run(module, inputs)[0], expected)
    assert print_ir(parse_ir(print_ir(module))) == print_ir(module)  # every level parses back


def test_sm_90a_linears_lower_to_wgmma_level_by_level():
    from dialects.ptx import WgmmaOp

    module = parse_ir(linear_ir((130, 72), 40, "bf16", bias=True))
    rng = np.random.default_rng(4)
    inputs = [rng.integers(-3, 4, a.type.get_shape()).astype(np.float32) for a in module.ops.first.body.block.args]
    expected = run(module, inputs)[0]
    ctx = make_context()
    run_pipeline(module, "graph-to-tile{target=sm_90a}", ctx)
    assert next(op for op in module.walk() if isinstance(op, MatmulOp)).config.wgmma
    run_pipeline(module, "tile-expand", ctx)
    assert np.array_equal(run(module, inputs)[0], expected)
    run_pipeline(module, "tile-to-warp,smem-swizzle,warp-to-ptx", ctx)
    assert any(isinstance(op, WgmmaOp) for op in module.walk())
    assert np.array_equal(run(module, inputs)[0], expected)
    assert print_ir(parse_ir(print_ir(module))) == print_ir(module)


def test_unknown_targets_are_refused():
    from ir.errors import RungError

    with pytest.raises(RungError, match="graph-to-tile: unknown target sm_70"):
        run_pipeline(parse_ir(linear_ir((4, 64), 8, "f16", False)), "graph-to-tile{target=sm_70}", make_context())


@pytest.mark.parametrize("activation", [None, "relu", "silu"])
@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_bias_and_activation_fuse_into_one_kernel(activation, lead):
    text = linear_ir((*lead, 64), 24, "f16", bias=True)
    if activation:
        yt = f"tensor<{'x'.join(map(str, (*lead, 24)))}xf16>"
        text = text.replace("  func.return %y", f"  %a = graph.{activation} %y : ({yt}) -> {yt}\n  func.return %a")
    module = parse_ir(text)
    inputs = [v * 0.2 for v in random_inputs([a.type for a in module.ops.first.body.block.args], 0, 8)]
    expected = run(module, inputs)[0].astype(np.float32)
    run_pipeline(module, LOWER_TO_PTX, make_context())
    names = [op.name for op in module.ops.first.body.block.ops if op.name != "graph.reshape"]
    assert names == ["ptx.launch", "func.return"]
    np.testing.assert_allclose(run(module, inputs)[0].astype(np.float32), expected, rtol=4e-3, atol=4e-3)


def residual_ir(m: int, n: int, k: int, dtype: str, activation: str, combine: str, quantized: bool = False) -> str:
    """x @ w^T (+ bias), an activation, then combined (add, mul) with r, a tensor of the result's shape defined first."""
    xt, rt, bt = f"tensor<{m}x{k}x{dtype}>", f"tensor<{m}x{n}x{dtype}>", f"tensor<{n}x{dtype}>"
    if quantized:  # int4, groups of 32: Ladder's packed weight (small M: the weight is the mma's A, C stored transposed)
        qt, st_ = f"tensor<{n}x{k}xsi4>", f"tensor<{n}x{k // 32}x{dtype}>"
        args, linear = (f"%r: {rt}, %x: {xt}, %q: {qt}, %s: {st_}",
                        f"%y = graph.qlinear %x, %q, %s {{format = #lp.quant<si4, group 32, scale {dtype}>}} : ({xt}, {qt}, {st_}) -> {rt}")
    else:
        wt = f"tensor<{n}x{k}x{dtype}>"
        args, linear = f"%r: {rt}, %x: {xt}, %w: {wt}, %b: {bt}", f"%y = graph.linear %x, %w, %b : ({xt}, {wt}, {bt}) -> {rt}"
    act = f"  %a = graph.{activation} %y : ({rt}) -> {rt}\n" if activation else ""
    return (f"func.func @main({args}) -> {rt} {{\n  {linear}\n{act}"
            f"  %z = graph.{combine} %r, {'%a' if activation else '%y'} : ({rt}, {rt}) -> {rt}\n  func.return %z : {rt}\n}}\n")


@pytest.mark.parametrize("combine", ["add", "mul"])
@pytest.mark.parametrize("m, n, k, dtype, activation, quantized, pipeline", [
    (5, 24, 64, "f16", "silu", False, "graph-to-tile"),  # 16-row tiles
    (37, 26, 96, "bf16", "", False, "graph-to-tile{split_k=3}"),  # the reduction applies the epilogue
    (130, 40, 72, "bf16", "relu", False, "graph-to-tile{target=sm_90a}"),  # wgmma
    (3, 64, 128, "f16", "", True, "graph-to-tile"),  # 8-row tiles, the packed weight as A: C stored transposed
])
def test_a_residual_add_or_product_fuses_into_the_gemm_epilogue(combine, m, n, k, dtype, activation, quantized, pipeline):
    """LLaMA's residual adds and SwiGLU's silu(gate) * up: the GEMM reads the other tensor as it stores, one launch, at every level."""
    module = parse_ir(residual_ir(m, n, k, dtype, activation, combine, quantized))
    inputs = [v * 0.25 if v.dtype.kind == "f" else v for v in random_inputs([a.type for a in module.ops.first.body.block.args], m * n, 6)]
    expected = run(module, inputs)[0].astype(np.float32)
    tol = (2e-2 if dtype == "bf16" else 4e-3) * max(1.0, float(np.abs(expected).max()))
    ctx = make_context()
    run_pipeline(module, pipeline, ctx)
    mm = next(op for op in module.walk() if isinstance(op, MatmulOp))
    assert mm.config.residual == combine and mm.config.activation == (activation or "none") and mm.residual is not None
    assert not any(isinstance(op, (g.AddOp, g.MulOp, g.ReluOp, g.SiluOp)) for op in module.walk())
    _lower_the_rest_within(module, inputs, expected, tol, ctx)


def _lower_the_rest_within(module, inputs, expected, tol: float, ctx) -> None:
    """A module past graph-to-tile computes `expected` within `tol` there and after tile-expand and the warp and ptx
    levels, and each level's text parses back."""
    for stage in ("", "tile-expand", "tile-to-warp,smem-swizzle,warp-to-ptx"):
        if stage:
            run_pipeline(module, stage, ctx)
        got = run(module, inputs)[0].astype(np.float32)
        assert np.abs(got - expected).max() <= tol, (stage, np.abs(got - expected).max())
    assert print_ir(parse_ir(print_ir(module))) == print_ir(module)


@pytest.mark.skipif(__import__("shutil").which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_residual_epilogues_assemble_without_spills(target, tmp_path):
    """A residual add in the store of 128 x 256 wgmma tiles (sm_90a), a split-K product and a packed weight's transposed store."""
    from backend.ptx_text import module_text
    from machine_code import assert_assembles_without_spills

    for text, options in ((residual_ir(4096, 4096, 1024, "f16", "", "add"), ""), (residual_ir(16, 4096, 4096, "bf16", "silu", "mul"), "{split_k=4}"),
                          (residual_ir(1, 4096, 4096, "f16", "", "add", quantized=True), "")):
        module = parse_ir(text)
        run_pipeline(module, f"graph-to-tile{options[:-1] + ' ' if options else '{'}target={target}}}," + LOWER_TO_PTX.split(",", 1)[1], make_context())
        assert_assembles_without_spills(module_text(module, target), target, tmp_path)


def test_a_residual_of_odd_width_stays_an_add():
    """Epilogues read the residual's pairs as 32-bit words, which rows of odd length do not align."""
    module = parse_ir(residual_ir(4, 15, 32, "f16", "", "add"))
    run_pipeline(module, "graph-to-tile", make_context())
    assert next(op for op in module.walk() if isinstance(op, MatmulOp)).residual is None
    assert "@rung_ew_" in print_ir(module)


def test_a_residual_defined_after_the_gemm_stays_an_add():
    """The GEMM runs where the linear was: a tensor made later cannot be read in its epilogue."""
    text = residual_ir(4, 16, 32, "f16", "", "add").replace("%r: tensor<4x16xf16>, ", "")
    text = text.replace("  %z = graph.add %r,", "  %r = graph.neg %x2 : (tensor<4x16xf16>) -> tensor<4x16xf16>\n  %z = graph.add %r,")
    text = text.replace("-> tensor<4x16xf16> {\n", "-> tensor<4x16xf16> {\n", 1).replace("%x: tensor<4x32xf16>,", "%x: tensor<4x32xf16>, %x2: tensor<4x16xf16>,")
    module = parse_ir(text)
    run_pipeline(module, "graph-to-tile", make_context())
    assert next(op for op in module.walk() if isinstance(op, MatmulOp)).residual is None
    assert "@rung_ew_" in print_ir(module)  # the add runs after it, fused with the neg into a row kernel


@pytest.mark.parametrize("text", [linear_ir((4, 64), 8, "f32", False)])
def test_linears_the_tensor_cores_cannot_take_stay(text):
    module = parse_ir(text)
    run_pipeline(module, LOWER_TO_PTX, make_context())
    assert any(isinstance(op, g.LinearOp) for op in module.walk())
    assert not any(isinstance(op, KernelOp) for op in module.walk())


def test_one_kernel_per_schedule():
    text = linear_ir((100, 64), 32, "f16", False).replace(
        "  func.return %y", "  %z = graph.linear %y, %v : (tensor<100x32xf16>, tensor<16x32xf16>) -> tensor<100x16xf16>\n  func.return %z"
    ).replace("%w: tensor<32x64xf16>)", "%w: tensor<32x64xf16>, %v: tensor<16x32xf16>)").replace("-> tensor<100x32xf16> {", "-> tensor<100x16xf16> {").replace(
        "func.return %z : tensor<100x32xf16>", "func.return %z : tensor<100x16xf16>")
    module = parse_ir(text)
    run_pipeline(module, LOWER_TO_PTX, make_context())
    assert len([op for op in module.ops if isinstance(op, KernelOp)]) == 1
    assert len([op for op in module.walk() if isinstance(op, LaunchOp)]) == 2


def test_bad_schedule_options_are_clear_errors():
    from ir.errors import RungError

    module = parse_ir(linear_ir((4, 64), 8, "f16", False))
    with pytest.raises(RungError, match="graph-to-tile: warp tile 24x64 must be a multiple of 16x16"):
        run_pipeline(module, "graph-to-tile{bm=48 warps_m=2 warps_n=2}", make_context())


@settings(max_examples=max(8, settings().max_examples // 4))
@given(st.integers(1, 90), st.integers(1, 150), st.integers(1, 80), st.sampled_from(["f16", "bf16"]), st.integers(0, 2**31))
def test_matmul_lowers_with_b_as_k_by_n(m, n, k, dtype, seed):
    at, bt, ct = f"tensor<{m}x{k}x{dtype}>", f"tensor<{k}x{n}x{dtype}>", f"tensor<{m}x{n}x{dtype}>"
    module = parse_ir(f"func.func @main(%a: {at}, %b: {bt}) -> {ct} {{\n  %c = graph.matmul %a, %b : ({at}, {bt}) -> {ct}\n"
                      f"  func.return %c : {ct}\n}}\n")
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-3, 4, s).astype(np.float32) for s in ((m, k), (k, n))]
    expected = run(module, inputs)[0]
    ctx = make_context()
    run_pipeline(module, "graph-to-tile", ctx)
    (mm,) = [op for op in module.walk() if isinstance(op, MatmulOp)]
    assert mm.config.b_kn
    assert np.array_equal(run(module, inputs)[0], expected)
    run_pipeline(module, "tile-expand", ctx)
    assert np.array_equal(run(module, inputs)[0], expected)
    run_pipeline(module, "tile-to-warp,smem-swizzle,warp-to-ptx", ctx)
    assert np.array_equal(run(module, inputs)[0], expected)


@given(st.integers(1, 16), st.integers(1, 64).map(lambda x: 128 * x), st.integers(1, 64).map(lambda x: 512 * x),
       st.sampled_from([("int4", 128), ("int2", 64), ("int1", 128), ("nf4", 64), ("e4m3", 128)]), st.sampled_from([108, 132]))
def test_small_m_splits_keep_their_partial_sums_in_budget(m, n, k, fmt, sms):
    """choose_config's K split at M <= 16: 4 k-tiles a split or more, at most 16 splits, and once every
    multiprocessor has a block, f32 partial sums within a quarter of the weight's bytes (half for
    the decode-bound formats: 1-2 bits)."""
    from lowering.graph_to_tile import choose_config

    weight, group = fmt
    cfg = choose_config(m, n, k, "f16", weight=weight, group=group, sms=sms)
    split, k_tiles, blocks = cfg.split_k, -(-k // cfg.bk), math.prod(cfg.grid(m, n)[:2])
    assert 1 <= split <= 16 and (split == 1 or k_tiles // split >= 4)
    if split > -(-sms // blocks):
        share = 0.5 if weight in ("int2", "int1") else 0.25
        assert split * 8 * m <= share * k * cfg.weight_bits / 8


def test_table_formats_look_their_pairs_up_in_shared_memory_at_small_m():
    """nf4's small-M schedules decode by the shared table; other formats, and larger M, by registers."""
    from lowering.graph_to_tile import choose_config

    for m in (1, 8, 9, 16):
        assert choose_config(m, 4096, 4096, "f16", weight="nf4", group=64).shared_table
        assert not choose_config(m, 4096, 4096, "f16", weight="int4", group=128).shared_table
    assert not choose_config(64, 4096, 4096, "f16", weight="nf4", group=64).shared_table


def test_small_m_register_prefetch_goes_to_the_formats_it_was_measured_to_help():
    """The prefetch at M <= 16: integers of 4 bits or more in both tile heights, 2-bit integers in
    8-row tiles only (M <= 8), minifloats in 16-row ones only, never 1-bit codes or table lookups."""
    from lowering.graph_to_tile import choose_config

    want = {("int4", 128): (True, True), ("uint8", 128): (True, True), ("int2", 64): (True, False), ("int1", 128): (False, False),
            ("e2m1", 32): (False, True), ("e4m3", 128): (False, True), ("nf4", 64): (False, False)}
    for (weight, group), (rows8, rows16) in want.items():
        got = tuple(choose_config(m, 4096, 4096, "f16", weight=weight, group=group).prefetch for m in (1, 16))
        assert got == (rows8, rows16), (weight, got)


def index_copy_ir(shape: tuple, dim: int, count: int, dtype: str, index: str, extra_use: bool = False) -> str:
    x = f"tensor<{'x'.join(map(str, shape))}x{dtype}>"
    src_shape = list(shape)
    src_shape[dim] = count
    src, p = f"tensor<{'x'.join(map(str, src_shape))}x{dtype}>", f"tensor<{count}x{index}>"
    also = f"  %n = graph.neg %x : ({x}) -> {x}\n" if extra_use else ""
    results, types = ("%y, %n", f"{x}, {x}") if extra_use else ("%y", x)
    return (f"func.func @main(%x: {x}, %p: {p}, %s: {src}) -> ({types}) {{\n{also}"
            f"  %y = graph.index_copy %x, %p, %s {{dim = {dim} : i64}} : ({x}, {p}, {src}) -> {x}\n"
            f"  func.return {results} : {types}\n}}\n")


@settings(max_examples=max(5, settings().max_examples // 5), deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.data(), st.sampled_from(["f16", "bf16", "f32"]), st.sampled_from(["i32", "i64"]))
def test_a_donated_cache_is_written_in_place_at_every_level(shape, data, dtype, index):
    """graph.index_copy of an argument nothing else reads -> tile.write_rows -> a ptx.launch in place of it: every
    slab width (16-, 8-, 4- and 2-byte chunks), positions in any order."""
    dim = data.draw(st.integers(0, len(shape) - 1))
    count = data.draw(st.integers(1, shape[dim]))
    module = parse_ir(index_copy_ir(tuple(shape), dim, count, dtype, index))
    x, _, src = random_inputs([a.type for a in module.ops.first.body.block.args], data.draw(st.integers(0, 2**31)), 4)
    positions = np.array(data.draw(st.permutations(range(shape[dim])))[:count], index.replace("i", "int"))
    want = run(module, [x, positions, src])[0]
    for stage, kind in (("graph-to-tile", "tile.write_rows"), ("tile-expand,tile-to-warp,smem-swizzle,warp-to-ptx", "in_place = 0")):
        run_pipeline(module, stage, make_context())
        assert kind in print_ir(module)
        assert np.array_equal(run(module, [x, positions, src])[0], want)


def test_a_cache_read_elsewhere_stays_an_index_copy_and_lower_to_ptx_says_why():
    module = parse_ir(index_copy_ir((2, 8, 4), 1, 1, "f16", "i64", extra_use=True))
    with pytest.raises(RungError, match="'graph.index_copy' \\(%y\\) in @main has no GPU kernel yet: the kernel updates a cache in place"):
        run_pipeline(module, "lower-to-ptx", make_context())


def test_a_position_past_the_cache_traps_in_the_kernel():
    module = parse_ir(index_copy_ir((1, 8, 16), 1, 2, "f16", "i64"))
    run_pipeline(module, LOWER_TO_PTX, make_context())
    args = random_inputs([a.type for a in module.ops.first.body.block.args], 0, 4)
    with pytest.raises(RungError, match="a position at or past the cache's length"):
        run(module, [args[0], np.array([3, 8]), args[2]])


def qlinear8_ir(m: int, n: int, k: int, dtype: str, element: str, residual: bool) -> str:
    w8 = EIGHT_BIT_TYPES[element]
    xt, wt, st_, yt = f"tensor<{m}x{k}x{dtype}>", f"tensor<{n}x{k}x{w8}>", f"tensor<{n}xf32>", f"tensor<{m}x{n}x{dtype}>"
    body = f"  %y = graph.qlinear8 %x, %w, %s : ({xt}, {wt}, {st_}) -> {yt}\n"
    if residual:
        body += f"  %z = graph.add %r, %y : ({yt}, {yt}) -> {yt}\n"
    args = f"%x: {xt}, %w: {wt}, %s: {st_}" + (f", %r: {yt}" if residual else "")
    return f"func.func @main({args}) -> {yt} {{\n{body}  func.return {'%z' if residual else '%y'} : {yt}\n}}\n"


def qlinear8_inputs(m: int, n: int, k: int, dtype: str, element: str, residual: bool, rng) -> list:
    from ir.numerics import QuantFormat

    q, s, _ = QuantFormat(element, None, "f32").quantize(rng.standard_normal((n, k)))  # an 8-bit weight, a scale per channel
    x = (rng.standard_normal((m, k)) * rng.choice([0.01, 1, 30], (m, 1))).astype(np.float32)  # rows of different ranges
    q = q.astype(storage_dtype(EIGHT_BIT_TYPES[element]))
    return [x, q, (s[:, 0] / 8).astype(np.float32)] + ([rng.standard_normal((m, n)).astype(np.float32)] if residual else [])


@settings(max_examples=max(6, settings().max_examples // 8), deadline=None)
@given(st.integers(1, 140), st.integers(1, 20).map(lambda h: 2 * h), st.integers(1, 6).map(lambda u: 16 * u), st.sampled_from(["f16", "bf16"]),
       st.sampled_from([("int8", "sm_80"), ("int8", "sm_90a"), ("e4m3", "sm_90a")]), st.booleans(), st.integers(0, 2**31))
def test_eight_bit_activations_are_quantized_per_row_and_multiplied_eight_bit(m, n, k, dtype, target, residual, seed):
    """W8A8 and FP8: two row programs (each row's scale, the row quantized by it) and an 8-bit tile.matmul with the residual
    in its epilogue keep graph.qlinear8's meaning at every level, on mma.sync and wgmma tiles."""
    element, target = target
    module = parse_ir(qlinear8_ir(m, n, k, dtype, element, residual))
    inputs = qlinear8_inputs(m, n, k, dtype, element, residual, np.random.default_rng(seed))
    expected = run(module, inputs)[0].astype(np.float32)
    tol = (8e-3 if dtype == "bf16" else 2e-3) * max(1.0, float(np.abs(expected).max()))
    ctx = make_context()
    run_pipeline(module, f"graph-to-tile{{target={target}}}", ctx)
    mm = next(op for op in module.walk() if isinstance(op, MatmulOp))
    assert mm.config.a8 == eight_bit_format(EIGHT_BIT_TYPES[element]).a8 and (mm.residual is not None) == residual
    assert sum(isinstance(op, TileKernel) for op in module.ops) == 2  # the row programs
    _lower_the_rest_within(module, inputs, expected, tol, ctx)


@pytest.mark.parametrize("text, target, message", [
    (qlinear8_ir(4, 8, 32, "f16", "e4m3", False), "sm_80", "FP8 tensor cores need sm_89 or later: compile for sm_90a"),
    (qlinear8_ir(4, 8, 24, "f16", "int8", False), "sm_90a", "8-bit rows are read 16 bytes at a time: K must be a multiple of 16, got 24"),
])
def test_eight_bit_linears_without_a_kernel_say_why(text, target, message):
    import rung

    module = parse_ir(text)
    run_pipeline(module, f"graph-to-tile{{target={target}}}", make_context())
    assert any(isinstance(op, g.QLinear8Op) for op in module.walk())  # stays a graph op
    with pytest.raises(RungError, match=message):
        rung.compile(text, target)


@pytest.mark.skipif(__import__("shutil").which("ptxas") is None, reason="ptxas is not installed")
def test_eight_bit_linears_assemble_without_spills(tmp_path):
    """The row programs' 8-bit stores and the 8-bit GEMMs with a residual, decoding (M = 1) and prefill-sized."""
    from backend.ptx_text import module_text
    from machine_code import assert_assembles_without_spills

    for element, target, m in (("int8", "sm_80", 1), ("int8", "sm_80", 512), ("int8", "sm_90a", 512), ("e4m3", "sm_90a", 1), ("e4m3", "sm_90a", 512)):
        module = parse_ir(qlinear8_ir(m, 4096, 4096, "f16", element, True))
        run_pipeline(module, f"graph-to-tile{{target={target}}}," + LOWER_TO_PTX.split(",", 1)[1], make_context())
        assert_assembles_without_spills(module_text(module, target), target, tmp_path)


def test_eight_bit_linears_on_one_x_share_its_quantized_rows():
    """q, k and v (or gate and up) under W8A8: one launch of each row program for all of them, and the same result."""
    m, n, k = 5, 32, 64
    xt, wt, st_, yt = f"tensor<{m}x{k}xf16>", f"tensor<{n}x{k}xi8>", f"tensor<{n}xf32>", f"tensor<{m}x{n}xf16>"
    module = parse_ir(f"func.func @main(%x: {xt}, %w1: {wt}, %s1: {st_}, %w2: {wt}, %s2: {st_}) -> {yt} {{\n"
                      f"  %a = graph.qlinear8 %x, %w1, %s1 : ({xt}, {wt}, {st_}) -> {yt}\n"
                      f"  %b = graph.qlinear8 %x, %w2, %s2 : ({xt}, {wt}, {st_}) -> {yt}\n"
                      f"  %c = graph.mul %a, %b : ({yt}, {yt}) -> {yt}\n  func.return %c : {yt}\n}}\n")
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((m, k)).astype(np.float32), *[a for _ in range(2) for a in
              (rng.integers(-127, 128, (n, k)).astype(np.int8), rng.random(n).astype(np.float32))]]
    expected = run(module, inputs)[0]
    run_pipeline(module, "graph-to-tile", make_context())
    from dialects.tile import LaunchOp as TileLaunch

    assert sum(isinstance(op, TileLaunch) for op in module.walk()) == 2 and sum(isinstance(op, MatmulOp) for op in module.walk()) == 2
    assert np.array_equal(run(module, inputs)[0], expected)


def test_a_sparse_schedule_takes_the_weights_tiles_and_rounds_its_bound_to_slots():
    """The block's BN x BK is the weight's tile; its slots the fullest tile's count rounded up to the tile's rows and
    the block's threads; stages as shared memory allows; K split for a decode."""
    from dialects.lp import SparseAttr
    from ir.errors import RungError
    from lowering.graph_to_tile import sparse_schedule

    decode = sparse_schedule(1, 4096, 4096, "f16", SparseAttr(128, 64, 1700), {})
    assert (decode.bm, decode.bn, decode.bk, decode.threads, decode.sparse, decode.stages) == (16, 128, 64, 128, 1792, 4)
    assert decode.split_k > 1 and decode.name.endswith("_csl1792")
    full = sparse_schedule(200, 512, 1024, "bf16", SparseAttr(128, 64, 8192), {"split_k": 1})
    assert (full.bm, full.threads, full.sparse, full.split_k) == (64, 256, 8192, 1) and full.stages < 4
    with pytest.raises(RungError, match="bn and bk cannot change"):
        sparse_schedule(1, 4096, 4096, "f16", SparseAttr(128, 64, 1700), {"bn": 64})


def test_a_sparse_linear_computes_the_same_at_each_level():
    """graph.sparse_linear -> tile.pack_sparse and the sparse tile.matmul -> its block program -> its kernel: the same
    result at every level (the interpreter, then the lane simulator), and every level parses back."""
    import torch

    from frontend.torch2ir import torch_to_ir
    from frontend.transforms import sparsify_linears

    torch.manual_seed(0)
    model = torch.nn.Linear(96, 200, bias=False).half().eval()
    x = torch.randint(-3, 4, (5, 96)).half()
    module, weights, names = torch_to_ir(model, (x,))
    names, weights, _ = sparsify_linears(module, names, weights, 0.8)
    weights = {n: np.round(w * 4) / 4 if w.dtype == np.float16 else w for n, w in weights.items()}  # exact sums in f32
    inputs = [weights[n] if n in weights else x.numpy() for n in names]
    expected, ctx = run(module, inputs)[0], make_context()
    for passes in ("graph-to-tile", "tile-expand", "tile-to-warp,smem-swizzle,warp-to-ptx"):
        run_pipeline(module, passes, ctx)
        assert np.array_equal(run(module, inputs)[0], expected), passes
        assert print_ir(parse_ir(print_ir(module))) == print_ir(module)
    assert any(op.name == "tile.pack_sparse" for op in module.walk())
