"""The tensor-core GEMM through the Python API: argument checks on the CPU, results on the GPU."""

import pytest
import torch

import rung
from dialects.tile import GemmConfig
from ir.errors import RungError
from torch_checks import assert_matches

GPU = torch.cuda.is_available()
gpu = pytest.mark.skipif(not GPU, reason="needs an NVIDIA GPU")

IR = """func.func @main(%x: tensor<{m}x{k}x{t}>, %w: tensor<{n}x{k}x{t}>) -> tensor<{m}x{n}x{t}> {{
  %y = graph.linear %x, %w : (tensor<{m}x{k}x{t}>, tensor<{n}x{k}x{t}>) -> tensor<{m}x{n}x{t}>
  func.return %y : tensor<{m}x{n}x{t}>
}}
"""


def test_cpu_tensors_are_refused_with_the_reason():
    x, w = torch.zeros(4, 64, dtype=torch.float16), torch.zeros(8, 64, dtype=torch.float16)
    with pytest.raises(RungError, match="x is on cpu; Rung kernels take CUDA tensors"):
        rung.linear(x, w)


def reference(x, w):
    return (x.float() @ w.float().T)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 3, 17, 64, 4096])
@pytest.mark.parametrize("n, k", [(128, 64), (127, 72), (129, 61), (333, 1030), (4096, 4096)])
def test_linear_matches_torch(dtype, m, n, k):
    torch.manual_seed(m * 7 + n + k)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    w = torch.randn(n, k, device="cuda", dtype=dtype)
    out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)  # poisoned: every element must be written
    rung.linear(x, w, out)
    torch.cuda.synchronize()
    ref = reference(x, w)
    assert_matches(out, ref)


@gpu
@pytest.mark.gpu
def test_compiled_function_runs_its_launches_and_checks_arguments():
    fn = rung.compile(IR.format(m=17, n=256, k=128, t="bf16"))
    assert "mma.sync m16n8k16" in fn.path
    x = torch.randn(17, 128, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(256, 128, device="cuda", dtype=torch.bfloat16)
    out = fn(x, w)
    torch.cuda.synchronize()
    assert (out.float() - reference(x, w)).abs().max().item() < 0.5
    with pytest.raises(RungError, match="argument 0: expected tensor<17x128xbf16>"):
        fn(x[:16], w)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("make, message", [
    (lambda: (torch.randn(8, 64, device="cuda", dtype=torch.float16).t(), torch.randn(8, 64, device="cuda", dtype=torch.float16)), "not contiguous"),
    (lambda: (torch.randn(8, 64, device="cuda", dtype=torch.float32), torch.randn(8, 64, device="cuda", dtype=torch.float32)), "float16 or bfloat16"),
    (lambda: (torch.randn(8 * 64 + 1, device="cuda", dtype=torch.float16)[1:].view(8, 64), torch.randn(8, 64, device="cuda", dtype=torch.float16)), "16-byte aligned"),
    (lambda: (torch.randn(8, 64, device="cuda", dtype=torch.float16), torch.randn(8, 72, device="cuda", dtype=torch.float16)), "K dims differ"),
])
def test_bad_gpu_operands(make, message):
    x, w = make()
    with pytest.raises(RungError, match=message):
        rung.linear(x, w)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("activation", ["relu", "silu"])
def test_fused_linear_bias_activation_on_the_gpu(dtype, activation):
    t = {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    m, n, k = 33, 200, 96
    text = (f"func.func @main(%x: tensor<{m}x{k}x{dtype}>, %w: tensor<{n}x{k}x{dtype}>, %b: tensor<{n}x{dtype}>) -> tensor<{m}x{n}x{dtype}> {{\n"
            f"  %y = graph.linear %x, %w, %b : (tensor<{m}x{k}x{dtype}>, tensor<{n}x{k}x{dtype}>, tensor<{n}x{dtype}>) -> tensor<{m}x{n}x{dtype}>\n"
            f"  %z = graph.{activation} %y : (tensor<{m}x{n}x{dtype}>) -> tensor<{m}x{n}x{dtype}>\n"
            f"  func.return %z : tensor<{m}x{n}x{dtype}>\n}}\n")
    fn = rung.compile(text)
    assert [op.name for op in fn.steps] == ["ptx.launch"] and f"_bias_{activation}" in fn.path
    x, w, b = (torch.randn(*s, device="cuda", dtype=t) * 0.3 for s in ((m, k), (n, k), (n,)))
    y = fn(x, w, b)
    torch.cuda.synchronize()
    ref = getattr(torch.nn.functional, activation)(x.float() @ w.float().T + b.float())
    assert (y.float() - ref).abs().max().item() < (2e-2 if dtype == "bf16" else 4e-3)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k", [(1, 128, 64), (17, 127, 72), (64, 130, 61), (4096, 4096, 4096), (300, 1000, 333)])
def test_matmul_matches_torch(dtype, m, n, k):
    torch.manual_seed(m + n + k)
    a = torch.randn(m, k, device="cuda", dtype=dtype)
    b = torch.randn(k, n, device="cuda", dtype=dtype)
    out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
    rung.matmul(a, b, out)
    torch.cuda.synchronize()
    ref = a.float() @ b.float()
    assert_matches(out, ref)


def test_matmul_checks_shapes_on_the_cpu_too():
    a, b = torch.zeros(4, 64, dtype=torch.float16), torch.zeros(64, 8, dtype=torch.float16)
    with pytest.raises(RungError, match="a is on cpu; Rung kernels take CUDA tensors"):
        rung.matmul(a, b)


@pytest.mark.parametrize("cfg", [GemmConfig("f16"), GemmConfig("f16", bias=True, activation="silu"),
                                 GemmConfig("bf16", weight="int4", group=128, bias=True),
                                 GemmConfig("f16", weight="uint4", group=64, zero=True, split_k=3, bias=True),
                                 GemmConfig("f16", bm=128, bn=256, warps_n=4, stages=4)], ids=lambda c: c.name)
def test_loadable_kernel_matches_its_ptx(cfg):
    """The launcher's parameter list and dynamic shared memory are those of the kernel it loads."""
    from backend.gemm import gemm_kernels, lowered_gemm_kernel

    kernel_op = lowered_gemm_kernel(cfg).ops.first
    kernel = gemm_kernels(cfg, "sm_80").gemm
    assert kernel.param_kinds == tuple(a.type.kind.data for a in kernel_op.body.block.args)
    assert kernel.dynamic_shared == kernel_op.dynamic_shared_bytes
    assert (".extern .shared" in kernel.ptx) == bool(kernel.dynamic_shared)



def test_split_k_reduction_matches_its_ptx():
    from backend.gemm import gemm_kernels, lowered_gemm_kernel

    cfg = GemmConfig("bf16", bm=16, bn=128, bk=64, warps_m=1, warps_n=4, split_k=4, bias=True, activation="silu")
    kernels = gemm_kernels(cfg, "sm_90a")
    reduce_op = lowered_gemm_kernel(cfg, reduction=True).ops.first
    assert "bias" not in cfg.param_names and kernels.reduce.param_kinds == tuple(a.type.kind.data for a in reduce_op.body.block.args)
    assert "K split 4 ways + reduction (launched programmatically)" in kernels.path and "no wgmma kernel for this schedule yet" in kernels.path


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_split_k_reduction_launches_programmatically_from_sm_90(target, tmp_path):
    """On sm_90 the GEMM lets its reduction start early (griddepcontrol.launch_dependents) and the
    reduction waits for the GEMM's grid (griddepcontrol.wait) before it reads the workspace;
    before sm_90 neither instruction exists and stream order alone serializes them."""
    import shutil
    import subprocess

    from backend.gemm import gemm_kernels

    cfg = GemmConfig("f16", bm=8, bn=128, bk=128, warps_m=1, warps_n=4, weight="int2", group=64, split_k=4)
    kernels = gemm_kernels(cfg, target)
    hopper = target == "sm_90a"
    assert ("griddepcontrol.launch_dependents;" in kernels.gemm.ptx) == hopper and ("griddepcontrol.wait;" in kernels.reduce.ptx) == hopper
    assert ("launched programmatically" in kernels.path) == hopper
    unsplit = gemm_kernels(GemmConfig("f16", bm=8, bn=128, bk=128, warps_m=1, warps_n=4, weight="int2", group=64), target)
    assert "griddepcontrol" not in unsplit.gemm.ptx  # nothing launches after it
    if shutil.which("ptxas"):
        for kernel in (kernels.gemm, kernels.reduce):
            (tmp_path / "k.ptx").write_text(kernel.ptx)
            r = subprocess.run(["ptxas", f"-arch={target}", str(tmp_path / "k.ptx"), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr


def test_wgmma_schedules_are_chosen_for_sm_90a_only():
    from backend.gemm import gemm_kernels
    from lowering.graph_to_tile import choose_config

    cfg = choose_config(4096, 4096, 4096, "f16", target="sm_90a")
    assert cfg.wgmma and "wgmma m64n256k16 f16 by 2 warpgroups" in gemm_kernels(cfg, "sm_90a").path
    assert not choose_config(4096, 4096, 4096, "f16", target="sm_80").wgmma
    assert not choose_config(4096, 4096, 4096, "f16", b_kn=True, target="sm_90a").wgmma  # B [K, N]: mma.sync
    assert not choose_config(64, 4096, 4096, "f16", target="sm_90a").wgmma
    w8a8 = choose_config(4096, 4096, 4096, "bf16", a8="s8", target="sm_90a")
    assert w8a8.wgmma and "wgmma m64n128k32 s8 by 2 warpgroups" in gemm_kernels(w8a8, "sm_90a").path
    fp8 = choose_config(4096, 4096, 4096, "bf16", a8="e4m3", target="sm_90a")  # Hopper's FP8 wgmma sums too coarsely
    assert not fp8.wgmma and "mma.sync m16n8k32 e4m3" in gemm_kernels(fp8, "sm_90a").path
    fp8_wgmma = GemmConfig("bf16", bm=128, bn=128, bk=128, warps_m=8, warps_n=1, stages=4, raster=8, a8="e4m3", wgmma=True)
    assert "wgmma m64n128k32 e4m3 by 2 warpgroups" in gemm_kernels(fp8_wgmma, "sm_90a").path  # (still built when asked for)
    with pytest.raises(RungError, match="wgmma tiles need sm_90a; the target is sm_80"):
        gemm_kernels(cfg, "sm_80")
    int4 = choose_config(4096, 4096, 4096, "f16", weight="int4", group=128, target="sm_90a")
    assert int4.wgmma and "wgmma m64n256k16 f16 by 2 warpgroups, weight as A from registers" in gemm_kernels(int4, "sm_90a").path
    assert choose_config(128, 4096, 4096, "f16", weight="int2", group=64, target="sm_90a").bm == 128  # wgmma N: the rows there are
    int1 = gemm_kernels(choose_config(4096, 4096, 4096, "f16", weight="int1", group=128, target="sm_90a"), "sm_90a")
    assert "mma.sync" in int1.path and "the sm_80 path: no wgmma kernel for this schedule yet" in int1.path  # words span 128 k
    fn = rung.compile(IR.format(m=256, n=512, k=64, t="bf16"), target="sm_90a")
    assert "wgmma" in fn.path and "wgmma.mma_async" in fn.ptx


WGMMA_SCHEDULES = [GemmConfig("f16", bm=128, bn=256, bk=64, warps_m=8, warps_n=1, stages=4, raster=8, wgmma=True),
                   GemmConfig("bf16", bm=128, bn=128, bk=64, warps_m=8, warps_n=1, stages=3, bias=True, activation="silu", wgmma=True),
                   GemmConfig("f16", bm=64, bn=256, bk=64, warps_m=4, warps_n=1, stages=4, split_k=3, bias=True, wgmma=True),
                   GemmConfig("f16", bm=128, bn=128, bk=64, warps_m=8, warps_n=1, stages=4, raster=8, split_k=8, wgmma=True)]  # a prompt's


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("cfg", WGMMA_SCHEDULES, ids=lambda c: c.name)
@pytest.mark.parametrize("m, n, k", [(65, 129, 72), (300, 1000, 1032), (1024, 768, 4096)])
def test_wgmma_schedules_match_torch(cfg, m, n, k):
    from backend.gemm import device_target, gemm_kernels

    if device_target() != "sm_90a":
        pytest.skip("wgmma needs sm_90a")
    torch.manual_seed(m + n + k)
    dtype = torch.float16 if cfg.dtype == "f16" else torch.bfloat16
    x, w = torch.randn(m, k, device="cuda", dtype=dtype), torch.randn(n, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype)
    out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)  # poisoned
    gemm_kernels(cfg, "sm_90a").launch({"a": x.data_ptr(), "b": w.data_ptr(), "bias": bias.data_ptr(), "c": out.data_ptr()}, m, n, k, x)
    torch.cuda.synchronize()
    ref = reference(x, w) + (bias.float() if cfg.bias else 0)
    ref = torch.nn.functional.silu(ref) if cfg.activation == "silu" else ref
    assert_matches(out, ref)


@gpu
@pytest.mark.gpu
def test_split_k_sums_alike_in_graph_replays_and_on_concurrent_streams():
    """A split-K GEMM and its reduction (launched programmatically on sm_90) on two streams at
    once and in a CUDA graph's replays: the reduction always sums complete partial sums, in
    split order, so every result equals the first launch's bit for bit."""
    from backend.gemm import device_target, gemm_kernels

    cfg = GemmConfig("f16", bm=16, bn=128, bk=64, warps_m=1, warps_n=4, split_k=4, bias=True)
    kernels = gemm_kernels(cfg, device_target())
    m, n, k = 5, 4096, 4096
    torch.manual_seed(11)
    x, w = torch.randn(m, k, device="cuda", dtype=torch.float16), torch.randn(n, k, device="cuda", dtype=torch.float16)
    bias = torch.randn(n, device="cuda", dtype=torch.float16)
    poisoned = lambda: torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)  # noqa: E731

    def run(out):
        kernels.launch({"a": x.data_ptr(), "b": w.data_ptr(), "bias": bias.data_ptr(), "c": out.data_ptr()}, m, n, k, x)
        return out

    want = run(poisoned())
    torch.cuda.synchronize()
    ref = reference(x, w) + bias.float()
    assert_matches(want, ref)
    streams = [torch.cuda.Stream() for _ in range(2)]
    outs = [[poisoned() for _ in range(16)] for _ in streams]
    torch.cuda.synchronize()
    for i in range(16):  # interleaved, so the streams' launches overlap
        for stream, stream_outs in zip(streams, outs):
            with torch.cuda.stream(stream):
                run(stream_outs[i])
    torch.cuda.synchronize()
    assert all(torch.equal(out, want) for stream_outs in outs for out in stream_outs)
    graph, graph_out = torch.cuda.CUDAGraph(), poisoned()
    with torch.cuda.graph(graph):
        for _ in range(3):
            run(graph_out)
    for _ in range(3):
        graph_out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(graph_out, want)
