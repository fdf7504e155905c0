"""Quantized weights through the Python API: packing, checkpoint imports and bad input on the
CPU; every format against dequantize-then-torch.matmul on the GPU."""

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

import rung
from backend.quant import quant_format
from ir.errors import RungError
from ir.format_text import load_format_file
from torch_checks import assert_matches

load_format_file(Path(__file__).parents[2] / "examples" / "formats" / "custom.fmt")
GPU = torch.cuda.is_available()
gpu = pytest.mark.skipif(not GPU, reason="needs an NVIDIA GPU")

# (format, overrides, activation dtype): every decoder kind, zero mode, scale kind and group size
FORMATS = [
    ("int4", {"group": 128}, "f16"), ("int4", {"group": 128}, "bf16"), ("int4", {"group": None}, "f16"),
    ("uint4", {"group": 64, "zero": "original"}, "f16"), ("uint4", {"group": 32, "zero": "quantized"}, "bf16"),
    ("uint4", {"group": 128, "zero": "rescale"}, "f16"), ("int2", {"group": 64}, "f16"), ("int1", {"group": 128, "zero": "original"}, "f16"),
    ("int8", {"group": None}, "f16"), ("nf4", {"group": 64}, "f16"), ("e4m3", {"group": 128, "scale": "f16"}, "f16"),
    ("e5m2", {"group": 64, "scale": "bf16"}, "bf16"), ("e2m1", {"group": 32}, "f16"), ("mxfp4", {}, "bf16"), ("mxfp8", {}, "f16"),
    ("mxfp6", {}, "f16"), ("int3", {"group": 64}, "bf16"),  # stored in the next width: FP6 in bytes, 3-bit integers in nibbles
    ("fp6b2", {}, "f16"), ("t3g64", {}, "bf16"), ("int5g128", {}, "f16"),  # defined as text (examples/formats/custom.fmt)
]
IDS = [f"{f}-{'-'.join(f'{k}{v}' for k, v in o.items())}-{d}" for f, o, d in FORMATS]


def test_quantize_packs_what_the_format_dequantizes_to():
    w = torch.from_numpy(np.random.default_rng(7).standard_normal((72, 256)))
    for name, overrides, dtype in FORMATS:
        fmt = quant_format(name, **overrides)
        qw = rung.quantize(w, fmt, dtype=dtype)
        values, scales, zeros = fmt.quantize(w.numpy())
        exact = torch.from_numpy(fmt.dequantize(values, scales, zeros))
        tol = 2e-3 if dtype == "f16" else 2e-2  # bf16: the zero term (up to twice the row's magnitude) is rounded at 2^-8 too
        got = qw.dequantize().double()
        assert qw.shape == (72, 256) and qw.codes.dtype == torch.int32
        # one rounding of q * s + z to dtype, z = -(zero * s) rounded too: off by ulps of the row's magnitude at most
        assert ((got - exact).abs() <= tol * exact.abs().amax(1, keepdim=True)).all(), name


def test_gptq_checkpoints_import():
    rng = np.random.default_rng(0)
    k, n, group = 256, 96, 64
    q = rng.integers(0, 16, (k, n))
    z = rng.integers(0, 15, (k // group, n))
    s = (rng.random((k // group, n)) * 0.02 + 0.001).astype(np.float16)
    qweight = torch.from_numpy(sum(q[i::8] << (4 * i) for i in range(8)).astype(np.uint32).view(np.int32))  # [K / 8, N]
    qzeros = torch.from_numpy(sum(z[:, i::8] << (4 * i) for i in range(8)).astype(np.uint32).view(np.int32))  # [K / group, N / 8]
    qw = rung.QuantizedWeight.from_autogptq(qweight, qzeros, torch.from_numpy(s), group)
    want = (q - (np.repeat(z, group, 0) + 1)) * np.repeat(s.astype(np.float64), group, 0)  # [K, N]
    assert np.abs(qw.dequantize().double().numpy() - want.T).max() <= 2e-3 * np.abs(want).max()
    with pytest.raises(RungError, match="act-order"):
        rung.QuantizedWeight.from_autogptq(qweight, qzeros, torch.from_numpy(s), group, g_idx=torch.arange(k).flip(0) // group)


def test_gptfast_codes_import():
    rng = np.random.default_rng(1)
    n, k, group = 64, 256, 32
    codes = torch.from_numpy(rng.integers(0, 16, (n, k)))
    sz = torch.stack([torch.rand(k // group, n) * 0.01 + 0.001, torch.randn(k // group, n) * 0.01], -1).to(torch.bfloat16)
    qw = rung.QuantizedWeight.from_gptfast(codes, sz, group)
    s, z = (sz[..., i].double().T.repeat_interleave(group, 1) for i in range(2))
    want = (codes.double() - 8) * s + z
    assert (qw.dequantize().double() - want).abs().max() <= 1e-2 * want.abs().max()


@pytest.mark.parametrize("call, message", [
    (lambda: rung.quantize(torch.randn(8, 100), "w8a8"), "w8a8 needs K a multiple of 16"),
    (lambda: rung.quantize(torch.randn(8, 100), "int4", group=64), "group size 64 does not divide the reduction axis of length 100"),
    (lambda: rung.quantize(torch.randn(8, 128), "int9"), "unknown format 'int9'"),
    (lambda: (rung.load_formats(f"t5 = table {list(range(32))}"), rung.quantize(torch.randn(8, 128), "t5")),
     "no register decoder for t5: table formats of up to 4 bits have one"),
    (lambda: rung.quantize(torch.full((8, 128), float("nan")), "int4"), "inf or NaN"),
    (lambda: rung.quantize(torch.randn(8, 128), "int4", zero="sideways"), "unknown zero mode 'sideways'"),
    (lambda: rung.qlinear(torch.randn(2, 128, dtype=torch.float16), rung.quantize(torch.randn(8, 128), "int4")), "x is on cpu"),
    (lambda: rung.qlinear(torch.randn(2, 128), torch.randn(8, 128)), "takes a QuantizedWeight"),
    (lambda: rung.QuantizedWeight.from_values(np.full((4, 32), 9.0), np.ones((4, 1)), None, quant_format("int4", group=32), "f16", "cpu"),
     "values outside \\[-8, 7\\]"),
    (lambda: rung.QuantizedWeight.from_values(np.zeros((4, 32)), np.ones((4, 2)), None, quant_format("int4", group=32), "f16", "cpu"),
     "scales of a \\[4, 32\\] weight must have shape \\[4, 1\\]"),
    (lambda: rung.QuantizedWeight.from_gptfast(torch.zeros(8, 64, dtype=torch.int32), torch.zeros(2, 8), 32), "scales_and_zeros must be"),
])
def test_bad_quantized_input_is_a_clear_error(call, message):
    with pytest.raises(RungError, match=message):
        call()


@lru_cache(maxsize=None)
def _weight(index: int, n: int = 2048 + 64):
    """One quantized weight per format and N (quantizing is the slow part), on the GPU: N a
    multiple of 16 stores the codes in 16-row tiles (K = 1024 is whole chunks for every width)."""
    name, overrides, dtype = FORMATS[index]
    torch.manual_seed(index)
    w = torch.randn(n, 1024, device="cuda")
    qw = rung.quantize(w, quant_format(name, **overrides), dtype=dtype)
    return qw, qw.dequantize()


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("index", range(len(FORMATS)), ids=IDS)
@pytest.mark.parametrize("m, n", [(1, 2112), (7, 2112), (16, 2112), (64, 2112), (256, 2112), (4096, 2112), (1, 2120), (16, 2120), (256, 2120)])
def test_every_format_matches_dequantize_then_matmul(index, m, n):
    """Codes in 16-row tiles (N = 2112) and as rows (N = 2120: not a multiple of 16)."""
    qw, dense = _weight(index, n)
    t = dense.dtype
    x = torch.randn(m, qw.shape[1], device="cuda", dtype=t)
    out = torch.full((m, qw.shape[0]), float("nan"), device="cuda", dtype=t)  # poisoned: every element must be written
    rung.qlinear(x, qw, out=out)
    torch.cuda.synchronize()
    ref = x.float() @ dense.float().T
    assert_matches(out, ref)


@gpu
@pytest.mark.gpu
def test_qlinear_takes_batched_x_and_a_bias():
    qw, dense = _weight(0)
    x = torch.randn(3, 5, qw.shape[1], device="cuda", dtype=torch.float16)
    bias = torch.randn(qw.shape[0], device="cuda", dtype=torch.float16)
    y = rung.qlinear(x, qw, bias)
    ref = x.float() @ dense.float().T + bias.float()
    assert y.shape == (3, 5, qw.shape[0]) and (y.float() - ref).abs().max().item() < 4e-3 * ref.abs().max().item() + 1e-3
    with pytest.raises(RungError, match="packed for f16 activations"):
        rung.qlinear(x.to(torch.bfloat16), qw)


@gpu
@pytest.mark.gpu
def test_gptfast_packed_checkpoint_matches_torchs_int4_kernel():
    n, k, group = 1024, 2048, 128
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda")
    packed = torch.ops.aten._convert_weight_to_int4pack((codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8), 8)
    sz = torch.stack([torch.rand(k // group, n, device="cuda") * 0.01 + 0.001, torch.randn(k // group, n, device="cuda") * 0.01], -1)
    sz = sz.to(torch.bfloat16)
    qw = rung.QuantizedWeight.from_gptfast(packed, sz, group)
    x = torch.randn(16, k, device="cuda", dtype=torch.bfloat16)
    ref = torch.ops.aten._weight_int4pack_mm(x, packed, group, sz).float()
    assert (rung.qlinear(x, qw).float() - ref).abs().max().item() <= 2e-2 * ref.abs().max().item()


@gpu
@pytest.mark.gpu
def test_compiled_qlinear_packs_its_weight_once():
    m, n, k = 9, 264, 512
    text = (f"func.func @main(%x: tensor<{m}x{k}xf16>, %q: tensor<{n}x{k}xsi4>, %s: tensor<{n}x{k // 128}xf16>) -> tensor<{m}x{n}xf16> {{\n"
            f"  %y = graph.qlinear %x, %q, %s {{format = #lp.quant<si4, group 128, scale f16>}} : "
            f"(tensor<{m}x{k}xf16>, tensor<{n}x{k}xsi4>, tensor<{n}x{k // 128}xf16>) -> tensor<{m}x{n}xf16>\n"
            f"  %z = graph.silu %y : (tensor<{m}x{n}xf16>) -> tensor<{m}x{n}xf16>\n"
            f"  func.return %z : tensor<{m}x{n}xf16>\n}}\n")
    fn = rung.compile(text)
    assert [op.name for op in fn.steps] == ["tile.pack_weight", "ptx.launch"] and "int4 weight" in fn.path and "_silu" in fn.path
    q = torch.randint(-8, 8, (n, k), dtype=torch.int8, device="cuda")
    s = (torch.rand(n, k // 128, device="cuda") * 0.02).half()
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    ref = torch.nn.functional.silu(x.float() @ (q.float().view(n, -1, 128) * s.float()[..., None]).view(n, k).half().float().T)
    for _ in range(2):
        assert (fn(x, q, s).float() - ref).abs().max().item() < 4e-3 * ref.abs().max().item() + 1e-3
    assert len(fn._packed) == 1


# decoded-weight wgmma schedules beyond the ones qlinear picks: 128 activation rows, bias and silu, split K, 3 or 5 stages
WGMMA_WEIGHT_SCHEDULES = [(0, dict(bm=128, bias=True, activation="silu")), (4, dict(bm=256, stages=3, split_k=3, bias=True)),
                          (6, dict(bm=64, stages=5)), (13, dict(bm=192, raster=2))]


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("index, schedule", WGMMA_WEIGHT_SCHEDULES, ids=lambda s: IDS[s] if isinstance(s, int) else
                         "_".join(f"{k}{v}" for k, v in s.items()))
@pytest.mark.parametrize("m, k", [(65, 320), (300, 1088), (1024, 1024)])
def test_wgmma_decoded_weight_schedules_match_dequantize_then_matmul(index, schedule, m, k):
    """Odd and even k-tile counts, partial tiles along M and N, on fresh random data into a poisoned output."""
    import dataclasses

    from backend.gemm import device_target, gemm_kernels
    from backend.quant import launch_addresses
    from dialects.tile import GemmConfig
    from lowering.graph_to_tile import choose_config

    if device_target() != "sm_90a":
        pytest.skip("wgmma needs sm_90a")
    name, overrides, dtype = FORMATS[index]
    torch.manual_seed(m + k + index)
    qw = rung.quantize(torch.randn(1008, k, device="cuda"), quant_format(name, **{**overrides, "group": 32}), dtype=dtype)  # (codes in 16-row tiles where K = 1024)
    dense, t = qw.dequantize(), torch.float16 if dtype == "f16" else torch.bfloat16
    n = qw.shape[0]
    cfg = choose_config(m, n, k, dtype, **GemmConfig.weight_fields(qw.format), target="sm_90a")
    cfg = dataclasses.replace(cfg, **schedule)
    assert cfg.wgmma
    x, bias = torch.randn(m, k, device="cuda", dtype=t), torch.randn(n, device="cuda", dtype=t)
    out = torch.full((m, n), float("nan"), device="cuda", dtype=t)  # poisoned
    gemm_kernels(cfg, "sm_90a").launch(launch_addresses(x, (qw.codes, qw.scales, qw.zeros), out, bias=bias), m, n, k, x)
    torch.cuda.synchronize()
    ref = x.float() @ dense.float().T + (bias.float() if cfg.bias else 0)
    ref = torch.nn.functional.silu(ref) if cfg.activation == "silu" else ref
    assert_matches(out, ref)


def test_fp8_needs_sm89():
    from backend.gemm import gemm_kernels
    from lowering.graph_to_tile import choose_config

    with pytest.raises(RungError, match="fp8 \\(e4m3\\) mma.sync needs sm_89 or newer; the target is sm_80"):
        gemm_kernels(choose_config(1, 256, 256, "f16", a8="e4m3"), "sm_80")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("preset, dtype", [("w8a8", torch.float16), ("w8a8", torch.bfloat16), ("fp8", torch.float16), ("fp8", torch.bfloat16)])
@pytest.mark.parametrize("m", [1, 7, 16, 64, 256, 4096])
def test_eight_bit_activations_match_dequantize_then_matmul(preset, dtype, m):
    """x quantized per token, the weight per channel, multiplied 8-bit by 8-bit: equals
    (x8 * xs) @ (w8 * ws)^T rounded once."""
    from backend.quant import per_token

    torch.manual_seed(m)
    qw = rung.quantize(torch.randn(2048 + 72, 1024, device="cuda"), preset, dtype="f16" if dtype == torch.float16 else "bf16")
    x = torch.randn(m, 1024, device="cuda", dtype=dtype)
    out = torch.full((m, qw.shape[0]), float("nan"), device="cuda", dtype=dtype)
    rung.qlinear(x, qw, out=out)
    torch.cuda.synchronize()
    x8, xs = per_token(x, qw.activations)
    ref = (x8.float() * xs[:, None]) @ qw.dequantize().T
    assert_matches(out, ref)
