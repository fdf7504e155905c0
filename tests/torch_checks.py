"""Checks of GPU results against torch references, shared by the GPU tests."""

import numpy as np
import torch


def assert_matches(out, ref) -> None:
    """`out` (a poisoned output: NaN until written) written everywhere and within its dtype's
    rounding of the f32 reference `ref`: 4e-3 (f16) or 2e-2 (bf16) of ref's largest magnitude,
    plus 1e-3."""
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
            got, want = got.float().cpu().numpy(), want.float().cpu().numpy()
            assert got.shape == want.shape and np.isfinite(got).all()
            tol = (2e-2 if dtype == "bf16" else 4e-3) * max(1.0, float(np.abs(want).max()))
            assert np.abs(got - want).max() <= tol, np.abs(got - want).max()
