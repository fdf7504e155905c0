"""Checks of GPU results against torch references, shared by the backend's GPU tests."""

import torch


def assert_matches(out, ref) -> None:
    """`out` (a poisoned output: NaN until written) written everywhere and within its dtype's
    rounding of the f32 reference `ref`: 4e-3 (f16) or 2e-2 (bf16) of ref's largest magnitude,
    plus 1e-3."""
    tol = (2e-2 if out.dtype == torch.bfloat16 else 4e-3) * ref.abs().max().item() + 1e-3
    assert not out.isnan().any()
    assert (out.float() - ref).abs().max().item() <= tol
