"""The attention benchmark's programs are checked before device time goes to them: each compiles for sm_90a
(decoding with split keys and a merge), and its kernels assemble without spills."""

import shutil

import pytest

import rung
from machine_code import assert_assembles_without_spills
from rung import bench_attention


@pytest.mark.parametrize("shape", [("prefill", b, s) for b, s in bench_attention.PREFILL] + [("decode", 1, s) for s in bench_attention.DECODE])
def test_every_benchmarked_program_compiles(shape, tmp_path):
    kind, batch, keys = shape
    heads, kv_heads, rows, causal = (32, 32, keys, True) if kind == "prefill" else (32, 8, 1, False)
    fn = rung.compile(bench_attention.program(batch, heads, kv_heads, rows, keys, 128, "f16", causal), target="sm_90a")
    assert {s.name for s in fn.steps} <= {"ptx.launch", "graph.reshape"}
    assert fn.path.count("rung_attention_merge") == (kind == "decode")  # decoding splits the keys
    if shutil.which("ptxas"):
        assert_assembles_without_spills(fn.ptx, "sm_90a", tmp_path)
