"""Checks of results against references, shared by the GPU tests (torch imported where a check needs it)."""

import numpy as np


def assert_matches(out, ref) -> None:
    """`out` (a poisoned output: NaN until written) written everywhere and within its dtype's
    rounding of the f32 reference `ref`: 4e-3 (f16) or 2e-2 (bf16) of ref's largest magnitude,
    plus 1e-3."""
    import torch

    tol = (2e-2 if out.dtype == torch.bfloat16 else 4e-3) * ref.abs().max().item() + 1e-3
    assert not out.isnan().any()
    assert (out.float() - ref).abs().max().item() <= tol


def math_attention():
    """torch's reference attention as plain matmuls and softmax: its fused kernels (cuDNN's, CUTLASS's) are
    reported by compute-sanitizer's racecheck, which runs these tests for Rung's kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def assert_model_runs_as_torch(path, dtype: str) -> None:
    """The model file compiled whole once and run on the GPU on two sets of fresh inputs (token ids below the
    example's largest), each against the same model in torch on the GPU: within 4e-3 (f16) or 2e-2 (bf16) of
    the output's largest magnitude."""
    import torch

    import rung
    from frontend.loading import cast_model, load_model_file
    from frontend.torch2ir import torch_outputs, torch_to_ir
    from rung.models import main_arguments

    model, args, kwargs = cast_model(*load_model_file(str(path)), dtype)
    module, weights, names = torch_to_ir(model, args, kwargs)
    fn = rung.compile(module)
    model = model.cuda()
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        fresh = tuple(torch.randint(0, int(a.max()) + 1, a.shape, generator=generator).cuda() if not a.is_floating_point()
                      else torch.randn(a.shape, generator=generator).to(a.dtype).cuda() for a in args)
        got = fn(*main_arguments(model, names, fresh, {}, weights))
        with math_attention():
            wants = torch_outputs(model, fresh, {})
        for got, want in zip(got if isinstance(got, tuple) else (got,), wants, strict=True):
            assert_close(got.float().cpu().numpy(), want.float().cpu().numpy(), dtype)


def assert_close(got, want, dtype: str) -> None:
    """`got` of `want`'s shape, finite, within 4e-3 (f16) or 2e-2 (bf16) of want's largest magnitude (at least 1)."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape and np.isfinite(got).all()
    tol = (2e-2 if dtype == "bf16" else 4e-3) * max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= tol, np.abs(got - want).max()
