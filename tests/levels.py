"""A program run at every IR level on the CPU: each lowering stage's module computes what the graph computed."""

import numpy as np

from ir.interpreter import run
from rung.context import make_context
from rung.passes import run_pipeline

STAGES = ["graph-to-tile", "tile-expand", "tile-to-warp", "smem-swizzle", "warp-to-ptx"]


def assert_each_level_computes(module, args, want, tol: float, stages=STAGES) -> None:
    """Lower `module` stage by stage; after each, its result on `args` is finite and within `tol` of `want`."""
    for stage in stages:
        run_pipeline(module, stage, make_context())
        got = run(module, args)[0].astype(np.float32)
        assert np.isfinite(got).all() and np.abs(got - want).max() <= tol, (stage, np.abs(got - want).max())


def dtype_tolerance(dtype: str, want, f16: float = 4e-3, bf16: float = 2e-2) -> float:
    """An error bound for a kernel that keeps f32 where the graph rounds: relative to the result's largest value."""
    return (bf16 if dtype == "bf16" else f16) * max(1.0, float(np.abs(want).max()))
