"""The benchmarks' schedules are checked before device time goes to them: every schedule the
GEMM benchmarks time (the scheduler's choices for their shapes and the candidates) is assembled by
ptxas for sm_90a, with no spills (but those measured and listed) and no wgmma serialized."""

import dataclasses
import re
import shutil
import subprocess

import pytest

from backend import bench_gemm, bench_quant, bench_sparse
from backend.gemm import lowered_gemm_kernel
from backend.ptx_text import module_text


# Spills kept because the schedule measured faster than the same tile without them (H100, 2026-11-23,
# M = 4096 x 28672 x 8192: 4 warps 4940 us with 40 bytes spilled, 8 warps 5561 us with none)
MEASURED_SPILLS = {"rung_gemm_f16_128x128x64_w2x2_s3_r8_xe4m3": 40}


def planned_schedules(sms: int = 132) -> list:
    out = set()
    for _, _, _, _, cfg, candidates in bench_quant.plan(sms, target="sm_90a"):
        out.update([cfg, *candidates])
    for m, n, k in bench_gemm.CASES:
        out.update(bench_gemm.plan(m, n, k, "f16", sms, "sm_90a"))
    out.update(bench_sparse.planned_schedules())
    # a split's count is a constant of the same code: one split schedule of each kind is enough
    return sorted({dataclasses.replace(c, split_k=min(c.split_k, 2)) for c in out}, key=lambda c: c.name)


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
def test_every_benchmarked_schedule_assembles_without_spills(tmp_path):
    schedules = planned_schedules()
    assert len(schedules) > 20
    for cfg in schedules:
        src = tmp_path / "k.ptx"
        src.write_text(module_text(lowered_gemm_kernel(cfg, target="sm_90a"), "sm_90a"))
        r = subprocess.run(["ptxas", "-arch=sm_90a", "-v", str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
        spilled = int(re.search(r"(\d+) bytes spill stores", r.stderr).group(1))
        assert r.returncode == 0 and spilled == MEASURED_SPILLS.get(cfg.name, 0), (cfg.name, r.stderr)
        assert "serialized" not in r.stderr, (cfg.name, r.stderr)  # wgmmas made to wait for each other
