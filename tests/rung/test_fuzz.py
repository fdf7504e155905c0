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
