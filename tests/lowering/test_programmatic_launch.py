"""programmatic-launch: every kernel of an sm_90 program lets the next start early and waits for the one before."""

import shutil

import pytest
from xdsl.context import Context

import rung
from backend.gemm import lowered_gemm_kernel
from dialects import ptx
from dialects.tile import GemmConfig
from lowering.programmatic_launch import ProgrammaticLaunch, waits_for_grid
from machine_code import assert_assembles_without_spills

# a linear, a norm and an elementwise add: a GEMM, a row program and an elementwise kernel
PROGRAM = """
func.func @main(%x: tensor<5x64xf16>, %w: tensor<96x64xf16>, %g: tensor<96xf16>) -> tensor<5x96xf16> {
  %y = "graph.linear"(%x, %w) : (tensor<5x64xf16>, tensor<96x64xf16>) -> tensor<5x96xf16>
  %n = "graph.rms_norm"(%y, %g) {eps = 1.0e-06 : f64} : (tensor<5x96xf16>, tensor<96xf16>) -> tensor<5x96xf16>
  %z = "graph.add"(%n, %y) : (tensor<5x96xf16>, tensor<5x96xf16>) -> tensor<5x96xf16>
  func.return %z : tensor<5x96xf16>
}
"""


def _kernels(module) -> list:
    return [k for k in module.ops if isinstance(k, ptx.KernelOp)]


def test_on_sm_90_every_kernel_first_lets_the_next_start_then_waits_for_the_one_before():
    """The GEMM, whose weight is an argument, copies its first weight tiles before it waits (early_weights)."""
    kernels = _kernels(rung.compile(PROGRAM, "sm_90a").module)
    assert len(kernels) >= 2 and [k.sym_name.data.endswith("_early") for k in kernels].count(True) == 1
    for kernel in kernels:
        ops = list(kernel.body.block.ops)
        assert isinstance(ops[0], ptx.GridDepLaunchOp) and waits_for_grid(kernel), kernel.sym_name.data
        assert isinstance(ops[1], ptx.GridDepWaitOp) != kernel.sym_name.data.endswith("_early")


@pytest.mark.parametrize("target, programmatic", [("sm_80", True), ("sm_90a", False)])
def test_before_sm_90_or_when_asked_no_kernel_waits(target, programmatic):
    compiled = rung.compile(PROGRAM, target, programmatic=programmatic)
    assert not any(waits_for_grid(k) for k in _kernels(compiled.module))
    assert "griddepcontrol" not in compiled.ptx and "_early" not in compiled.ptx


def test_a_kernel_that_already_waits_is_left_as_it_is_and_the_pass_is_idempotent():
    module = lowered_gemm_kernel(GemmConfig(split_k=2), reduction=True, target="sm_90a")  # the reduction waits for its GEMM
    before = str(module)
    ProgrammaticLaunch().apply(Context(), module)
    assert str(module) == before
    fresh = lowered_gemm_kernel(GemmConfig(), target="sm_80")
    ProgrammaticLaunch().apply(Context(), fresh)
    once = str(fresh)
    ProgrammaticLaunch().apply(Context(), fresh)
    assert str(fresh) == once and once.count("ptx.griddep_wait") == 1


def test_the_waiting_kernels_still_compute_what_they_did_on_the_simulator():
    import numpy as np

    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s).astype(np.float16) for s in ((5, 64), (96, 64), (96,))]
    assert np.array_equal(rung.compile(PROGRAM, "sm_90a")(*args), rung.compile(PROGRAM, "sm_80")(*args))


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
def test_ptxas_assembles_the_waiting_program_for_sm_90a(tmp_path):
    assert_assembles_without_spills(rung.compile(PROGRAM, "sm_90a").ptx, "sm_90a", tmp_path)
