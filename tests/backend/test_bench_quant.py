"""The benchmarks' schedules are checked before device time goes to them: every schedule either
benchmark times (the scheduler's choices for its shapes and the candidates) is assembled by
ptxas for sm_90a, with no spills."""

import dataclasses
import shutil
import subprocess

import pytest

from backend import bench_gemm, bench_quant
from backend.gemm import lowered_gemm_kernel
from backend.ptx_text import module_text


def planned_schedules(sms: int = 132) -> list:
    out = set()
    for _, _, _, _, cfg, candidates in bench_quant.plan(sms):
        out.update([cfg, *candidates])
    for m, n, k in bench_gemm.CASES:
        out.update(bench_gemm.plan(m, n, k, "f16", sms))
    # a split's count is a constant of the same code: one split schedule of each kind is enough
    return sorted({dataclasses.replace(c, split_k=min(c.split_k, 2)) for c in out}, key=lambda c: c.name)


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
def test_every_benchmarked_schedule_assembles_without_spills(tmp_path):
    schedules = planned_schedules()
    assert len(schedules) > 20
    for cfg in schedules:
        src = tmp_path / "k.ptx"
        src.write_text(module_text(lowered_gemm_kernel(cfg), "sm_90a"))
        r = subprocess.run(["ptxas", "-arch=sm_90a", "-v", str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
        assert r.returncode == 0 and "0 bytes spill stores" in r.stderr, (cfg.name, r.stderr)
