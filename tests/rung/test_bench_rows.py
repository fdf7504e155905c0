"""The row benchmark's programs are checked before device time goes to them: each compiles for sm_90a,
and its kernels assemble without spills."""

import shutil

import pytest

import rung
from machine_code import assert_assembles_without_spills
from rung import bench_rows


@pytest.mark.parametrize("op", sorted(bench_rows.PROGRAMS))
def test_every_benchmarked_program_compiles(op, tmp_path):
    rows, cols = max(bench_rows.SHAPES, key=lambda s: s[1])
    fn = rung.compile(bench_rows.program(op, rows, cols, "f16"), target="sm_90a")
    assert {s.name for s in fn.steps} == {"ptx.launch"} and fn.path.count("rung_") == 1  # one kernel, SwiGLU fused
    if shutil.which("ptxas"):
        assert_assembles_without_spills(fn.ptx, "sm_90a", tmp_path)
