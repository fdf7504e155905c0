"""Fuzzing the tools: IR texts drawn from the examples and from every lowering level, mutated by
hypothesis, through rung-opt (parse and verify, then the passes) and rung-run. Whatever the input,
a tool answers with its output (exit 0) or one line of error (exit 1): never a crash ("internal
error", a traceback) and never more than 20 s. The default and ci profiles run a quick campaign;

    HYPOTHESIS_PROFILE=fuzz python3 -m pytest tests/rung/test_fuzz.py

runs a long one. A crash it finds becomes a regression case in REGRESSIONS."""

import io
import time
from contextlib import redirect_stderr, redirect_stdout
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rung.cli import opt_main, run_main

ROOT = Path(__file__).parents[2]
LIMIT_S = 20
TOKENS = ["0", "-1", "1", "65536", "9223372036854775808", "1e309", "f64", "i1", "f80", "?", "x", "}", "{", "(", ")", "[", "]",
          "<", ">", ",", ":", "=", "%0", "%x", "@main", "^bb0", "tensor<4xnone>", "tensor<6x?xf32>", "!tile.row<0>",
          '"', "graph.neg", "func.call @main()", "#tile.rows<cols = 0, threads = 0>", "\n"]
REGRESSIONS = [  # (tool, arguments, IR text) of crashes and hangs found, kept once fixed
    ("opt", (), 'func.func @main(%x: tensor<3x40xf16>) -> tensor<3x40xf16> {\n  %y = ptx.launch @k(%x) {grid = array<i664>} : '
                '(tensor<3x40xf16>) -> tensor<3x40xf16>\n  func.return %y : tensor<3x40xf16>\n}\n'),  # xDSL: NotImplementedError
    ("run", (), 'func.func @main(%x: tensor<3x40xf16>) -> tensor<3x40xf16> {\n  fun"cccccccccccccccccccccccccccccc.return %x\n}\n'),
    ("opt", (), 'func.func @main(%x: tensor<3x40xf16>) attributes {s = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx} {\n  func.return\n}\n'),
    ("opt", (), "'// a bad first token\nfunc.func @main() {\n  func.return\n}\n"),
    ("opt", ("-p", "decompose-graph,lower-to-ptx"), 'func.func @main(%x: tensor<4x8xf128>) -> tensor<4x8xf128> {\n  %y = graph.silu %x : (tensor<4x8xf128>) -> tensor<4x8xf128>\n  func.return %y : tensor<4x8xf128>\n}\n'),
    ("opt", ("-p", "lower-to-ptx"), 'func.func @main(%x: tensor<4x8xf16>, %w: tensor<0x8xf16>) -> tensor<4x0xf16> {\n  %y = graph.linear %x, %w : (tensor<4x8xf16>, tensor<0x8xf16>) -> tensor<4x0xf16>\n  func.return %y : tensor<4x0xf16>\n}\n'),
    ("run", (), 'func.func @main(%x: tensor<4x8xi1>) -> tensor<4x8xi1> {\n  %y = graph.neg %x : (tensor<4x8xi1>) -> tensor<4x8xi1>\n  func.return %y : tensor<4x8xi1>\n}\n'),
    ("run", (), 'func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {\n  %z = graph.neg %y : (tensor<4x8xf32>) -> tensor<4x8xf32>\n  %y = graph.neg %x : (tensor<4x8xf32>) -> tensor<4x8xf32>\n  func.return %z : tensor<4x8xf32>\n}\n'),
    ("run", (), 'func.func @main(%x: tensor<4xnone>) -> tensor<4xnone> {\n  func.return %x : tensor<4xnone>\n}\n'),
    ("run", (), 'func.func @main(%x: tensor<6x?xf32>) -> tensor<6x?xf32> {\n  %y = graph.neg %x : (tensor<6x?xf32>) -> tensor<6x?xf32>\n  func.return %y : tensor<6x?xf32>\n}\n'),
    ("run", (), 'func.func private @main(tensor<4xf32>) -> tensor<4xf32>\n'),
    ("run", (), 'func.func @main(%x: tensor<4x8xi1>, %c: tensor<8xi1>) -> tensor<4x8xi1> {\n  %y = graph.rope %x, %c, %c : (tensor<4x8xi1>, tensor<8xi1>, tensor<8xi1>) -> tensor<4x8xi1>\n  func.return %y : tensor<4x8xi1>\n}\n'),
    ("opt", (), 'builtin.module {\n  func.func @main(%x: tensor<16x256xf16>, %w: tensor<512x256xf16>, %b: tensor<512xf16>) -> tensor<16x512xf16> {\n    %z = tile.launch @rung_gemm_f16_16x128x64_w1x4_s4_bias_silu(%x, %w, %b) : (tensor<16x256xf16>, tensor<512x256xf16>, tensor<512xf16>) -> tensor<16x512xf16>\n    func.return %z : tensor<16x512xf16>\n  }\n  tile.kernel @rung_gemm_f16_16x128x64_w1x4_s4_bias_silu {schedule = #tile.gemm<f16, block = [16, 128, 64], warps = [1, 4], stages = 4, bias, activation = silu>} (%0: tensor<?x?xf16>, %1: tensor<?x?xf16>, %2: tensor<?xf16>, %3: tensor<?x?xf16>) {\n    %4, %5 = tile.block_origin\n    %6, %7 = tile.k_range %0 : tensor<?x?xf16>\n    %8 = tile.shared_buffer : !tile.shared<4x16x64xf16>\n    %9 = tile.shared_buffer : !tile.shared<4x128x64xf16>\n    %10 = tile.zeros : !tile.frag<16x128xf32, acc>\n    %11 = tile.pipeline (%6, %7, %10) : !tile.frag<16x128xf32, acc> copy (%12: index, %13: index) {\n      tile.copy %0[%4, %12] -> %8[%13] {k_dim = 1 : i64, k_step = array<i64: 64, 1>,ytes = 16 : i64} : tensor<?x?xf16>, !tile.shared<4x16x64xf16>\n      tile.copy %1[%5, %12] -> %9[%13] {k_dim = 1 : i64, k_step = array<i64: 64, 1>, bytes = 16 : i64} : tensor<?x?xf16>, !tile.shared<4x128x64xf16>\n      tile.yield\n    } compute (%14: index, %15: !tile.frag<16x128xf32, acc>) {\n      %16 = tile.fragment %8[%14] : !tile.shared<4x16x64xf16> -> !tile.frag<16x64xf16, a>\n      %17 = tile.fragment %9[%14] : !tile.shared<4x128x64xf16> -> !tile.frag<128x64xf16, b>\n      %18 = tile.mma %16, %17, %15 : !tile.frag<16x64xf16, a>, !tile.frag<128x64xf16, b> -> !tile.frag<16x128xf32, acc>\n      tile.yield %18 : !tile.frag<16x128xf32, acc>\n    }\n    %19 = tile.epilogue %11 at %4, %5 bias %2 {activation = "silu"} : !tile.frag<16x128xf32, acc> bias tensor<?xf16> -> !tile.frag<16x128xf32, acc>\n    tile.store %19, %3[%4, %5] : !tile.frag<16x128xf32, acc>, tensor<?x?xf16>\n    tile.yield\n  }\n}\n'),  # a block program whose tile.copy lacks `bytes`: the kernel's checks read it first
    ("opt", (), 'builtin.module {\n  func.func @main(%x: tensor<3x40xf16>, %w: tensor<40xf16>) -> tensor<3x40xf16> {\n    %y = ptx.launch @rung_rms_norm_f16_n40_e3727c5ac(%x, %w) {grid = array<i64: 3, 1, 1>, dims = array<i64>} : (tensor<3x40xf16>, tensor<40xf16>) -> tensor<3x40xf16>\n    func.return %y : tensor<3x40xf16>\n  }\n  "ptx.kernel"() <{ym_name = "rung_rms_norm_f16_n40_e3727c5ac", threads = 32 : i64, shared_bytes = 4 : i64}> ({\n  ^bb0(%0: !ptx.reg<u64>, %1: !ptx.reg<u64>, %2: !ptx.reg<u64>):\n    %3 = ptx.sreg {reg = "tid.x"} : !ptx.reg<u32>\n    %4 = ptx.imm {value = 32 : i64} : !ptx.reg<u32>\n    %5 = ptx.add %3, %4 : (!ptx.reg<u32>, !ptx.reg<u32>) -> !ptx.reg<u32>\n    %6 = ptx.imm {value = 40 : i64} : !ptx.reg<u32>\n    %7 = ptx.setp %5, %6 {cmp = "lt"} : (!ptx.reg<u32>, !ptx.reg<u32>) -> !ptx.reg<pred>\n    %8 = ptx.sreg {reg = "ctaid.x"} : !ptx.reg<u32>\n    %9 = ptx.imm {value = 2 : i64} : !ptx.reg<u32>\n    %10 = ptx.mul %3, %9 : (!ptx.reg<u32>, !ptx.reg<u32>) -> !ptx.reg<u32>\n    %11 = ptx.cvt %10 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %12 = ptx.cvt %8 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %13 = ptx.imm {value = 80 : i64} : !ptx.reg<u64>\n    %14 = ptx.mul %12, %13 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %15 = ptx.add %0, %14 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %16 = ptx.add %15, %11 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %17 = ptx.ld %16 {space = "global"} : (!ptx.reg<u64>) -> !ptx.reg<b16>\n    %18 = ptx.cvt_widen %17 {dtype = "f16"} : (!ptx.reg<b16>) -> !ptx.reg<f32>\n    %19 = ptx.mul %5, %9 : (!ptx.reg<u32>, !ptx.reg<u32>) -> !ptx.reg<u32>\n    %20 = ptx.cvt %19 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %21 = ptx.cvt %8 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %22 = ptx.mul %21, %13 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %23 = ptx.add %0, %22 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %24 = ptx.add %23, %20 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %25 = ptx.ld %24, %7 {space = "global"} : (!ptx.reg<u64>, !ptx.reg<pred>) -> !ptx.reg<b16>\n    %26 = ptx.cvt_widen %25 {dtype = "f16"} : (!ptx.reg<b16>) -> !ptx.reg<f32>\n    %27 = ptx.mul %18, %18 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %28 = ptx.mul %26, %26 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %29 = ptx.imm {value = 0 : i64} : !ptx.reg<f32>\n    %30 = ptx.selp %28, %29, %7 : (!ptx.reg<f32>, !ptx.reg<f32>, !ptx.reg<pred>) -> !ptx.reg<f32>\n    %31 = ptx.add %27, %30 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %32 = ptx.shfl_bfly %31 {lanes = 16 : i64} : (!ptx.reg<f32>) -> !ptx.reg<f32>\n    %33 = ptx.add %31, %32 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %34 = ptx.shfl_bfly %33 {lanes = 8 : i64} : (!ptx.reg<f32>) -> !ptx.reg<f32>\n    %35 = ptx.add %33, %34 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %36 = ptx.shfl_bfly %35 {lanes = 4 : i64} : (!ptx.reg<f32>) -> !ptx.reg<f32>\n    %37 = ptx.add %35, %36 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %38 = ptx.shfl_bfly %37 {lanes = 2 : i64} : (!ptx.reg<f32>) -> !ptx.reg<f32>\n    %39 = ptx.add %37, %38 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %40 = ptx.shfl_bfly %39 {lanes = 1 : i64} : (!ptx.reg<f32>) -> !ptx.reg<f32>\n    %41 = ptx.add %39, %40 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %42 = ptx.imm {value = 1020054733 : i64} : !ptx.reg<f32>\n    %43 = ptx.mul %41, %42 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %44 = ptx.imm {value = 925353388 : i64} : !ptx.reg<f32>\n    %45 = ptx.add %43, %44 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %46 = ptx.rsqrt %45 : (!ptx.reg<f32>) -> !ptx.reg<f32>\n    %47 = ptx.mul %18, %46 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %48 = ptx.mul %26, %46 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %49 = ptx.mul %3, %9 : (!ptx.reg<u32>, !ptx.reg<u32>) -> !ptx.reg<u32>\n    %50 = ptx.cvt %49 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %51 = ptx.add %1, %50 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %52 = ptx.ld %51 {space = "global"} : (!ptx.reg<u64>) -> !ptx.reg<b16>\n    %53 = ptx.cvt_widen %52 {dtype = "f16"} : (!ptx.reg<b16>) -> !ptx.reg<f32>\n    %54 = ptx.mul %5, %9 : (!ptx.reg<u32>, !ptx.reg<u32>) -> !ptx.reg<u32>\n    %55 = ptx.cvt %54 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %56 = ptx.add %1, %55 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %57 = ptx.ld %56, %7 {space = "global"} : (!ptx.reg<u64>, !ptx.reg<pred>) -> !ptx.reg<b16>\n    %58 = ptx.cvt_widen %57 {dtype = "f16"} : (!ptx.reg<b16>) -> !ptx.reg<f32>\n    %59 = ptx.mul %47, %53 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %60 = ptx.mul %48, %58 : (!ptx.reg<f32>, !ptx.reg<f32>) -> !ptx.reg<f32>\n    %61 = ptx.mul %3, %9 : (!ptx.reg<u32>, !ptx.reg<u32>) -> !ptx.reg<u32>\n    %62 = ptx.cvt %61 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %63 = ptx.cvt %8 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %64 = ptx.mul %63, %13 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %65 = ptx.add %2, %64 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %66 = ptx.add %65, %62 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %67 = ptx.cvt_half %59 {dtype = "f16"} : (!ptx.reg<f32>) -> !ptx.reg<b16>\n    ptx.st %66, %67 {space = "global"} : !ptx.reg<u64>, !ptx.reg<b16>\n    %68 = ptx.mul %5, %9 : (!ptx.reg<u32>, !ptx.reg<u32>) -> !ptx.reg<u32>\n    %69 = ptx.cvt %68 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %70 = ptx.cvt %8 : (!ptx.reg<u32>) -> !ptx.reg<u64>\n    %71 = ptx.mul %70, %13 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %72 = ptx.add %2, %71 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %73 = ptx.add %72, %69 : (!ptx.reg<u64>, !ptx.reg<u64>) -> !ptx.reg<u64>\n    %74 = ptx.cvt_half %60 {dtype = "f16"} : (!ptx.reg<f32>) -> !ptx.reg<b16>\n    ptx.st %73, %74, %7 {space = "global", guarded} : !ptx.reg<u64>, !ptx.reg<b16>, !ptx.reg<pred>\n  }) : () -> ()\n}\n'),  # a ptx.kernel without sym_name, which the ptx.launch before it looks up
    ("opt", (), 'func.func @main(%x: tensor<4x8xf16>) -> tensor<4x8xf16> {\n  %y = tile.launch @nope(%x) : (tensor<4x8xf16>) -> tensor<4x8xf16>\n  func.return %y : tensor<4x8xf16>\n}\n'),
    ("opt", (), 'builtin.module {\n  tile.kernel @k {schedule = #tile.rows<cols = 4, threads = 32>} (%0: tensor<?x?xf16>) {\n    %1 = tile.shared_buffer : !tile.shared<2x16x16xf64>\n    tile.yield\n  }\n}\n'),
    ("opt", ("-p", "graph-to-tile{split_k=65536}"), 'func.func @main(%x: tensor<4x64xf16>, %w: tensor<8x64xf16>) -> tensor<4x8xf16> {\n  %y = graph.linear %x, %w : (tensor<4x64xf16>, tensor<8x64xf16>) -> tensor<4x8xf16>\n  func.return %y : tensor<4x8xf16>\n}\n'),
]


@lru_cache(maxsize=None)
def seeds() -> tuple[str, ...]:
    """The examples' IR, and the IR of each after the GEMM and row-program pipelines' levels."""
    from rung.context import make_context, parse_ir, print_ir
    from rung.passes import run_pipeline

    texts = [p.read_text() for p in sorted((ROOT / "examples").glob("*.mlir"))]
    texts.append("func.func @main(%x: tensor<3x40xf16>, %w: tensor<40xf16>) -> tensor<3x40xf16> {\n"
                 "  %y = graph.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<3x40xf16>, tensor<40xf16>) -> tensor<3x40xf16>\n"
                 "  func.return %y : tensor<3x40xf16>\n}\n")
    levels = []
    for text in texts:
        module = parse_ir(text)
        for stage in ("graph-to-tile", "tile-expand", "tile-to-warp"):
            try:
                run_pipeline(module, stage, make_context())
            except Exception:  # (an f32 example stays at graph level)
                break
            levels.append(print_ir(module))
    return tuple(texts + levels)


@st.composite
def mutants(draw, graph_only: bool = False) -> str:
    """A seed with one to three spans deleted, repeated, replaced or inserted; `graph_only`: the
    graph-level seeds (programs the interpreter runs in moments)."""
    text = draw(st.sampled_from([t for t in seeds() if not graph_only or ("tile." not in t and "ptx." not in t)]))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        kind = draw(st.sampled_from(["delete", "repeat", "replace", "insert"]))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "repeat":
            text = text[:j] + text[i:j] * draw(st.integers(2, 4)) + text[j:]
        else:
            token = draw(st.sampled_from(TOKENS) | st.text(max_size=4))
            text = text[:i] + token + (text[j:] if kind == "replace" else text[i:])
    return text


def run_tool(tool, argv) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = tool(argv)
    return code, err.getvalue()


def _check(tool, text: str, tmp_path, *args) -> None:
    f = tmp_path / "fuzz.mlir"
    f.write_bytes(text.encode("utf-8", "surrogatepass"))
    start = time.perf_counter()
    code, err = run_tool(tool, [str(f), *args])
    elapsed = time.perf_counter() - start
    assert code in (0, 1) and "internal error" not in err and "Traceback" not in err, (code, err, text)
    assert code == 0 or err.count("\n") == 1, err
    assert elapsed < LIMIT_S, (elapsed, text)


QUICK = settings(max_examples=max(40, settings().max_examples), deadline=None,  # the fuzz profile's 10,000 when chosen
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


@QUICK
@given(mutants())
def test_rung_opt_parses_and_verifies_anything(tmp_path, text):
    _check(opt_main, text, tmp_path)


@QUICK
@given(mutants(graph_only=True), st.sampled_from(["lower-to-ptx", "graph-to-tile,tile-expand", "decompose-graph,cse"]))
def test_rung_opt_runs_passes_on_anything(tmp_path, text, passes):
    _check(opt_main, text, tmp_path, "-p", passes)


@QUICK
@given(mutants(graph_only=True))
def test_rung_run_runs_anything(tmp_path, monkeypatch, text):
    monkeypatch.setenv("RUNG_MAX_ELEMENTS", str(1 << 20))  # programs of any size are refused in moments, not allocated
    _check(run_main, text, tmp_path)


@pytest.mark.parametrize("tool, args, text", REGRESSIONS)
def test_crashes_found_stay_fixed(tool, args, text, tmp_path):
    _check({"opt": opt_main, "run": run_main}[tool], text, tmp_path, *args)
