"""tile-to-warp: the GEMM kernel, interpreted lane by lane on the CPU (as generated and lowered) and assembled by ptxas."""

import dataclasses
import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backend.ptx_text import module_text
from dialects.ptx import run_kernel
from ir.simulator import DeviceMemory
from ir.errors import RungError
from dialects.tile import copy_elems, reduce_grid
from backend.bench_gemm import CANDIDATES, WGMMA_CANDIDATES
from backend.gemm import lowered_gemm_kernel
from dialects import ptx
from dialects.ptx import KernelOp
from dialects.tile import GemmConfig
from lowering.tile_to_warp import gemm_kernel
from machine_code import sass_tools_missing, sass

EPILOGUES = [GemmConfig("f16", bias=True, activation="silu"), GemmConfig("bf16", bm=64, bn=128, bk=32, stages=4, bias=True, activation="relu"),
             GemmConfig("f16", bm=64, bn=64, copy_elems=2), GemmConfig("bf16", bm=64, bn=64, copy_elems=1),
             GemmConfig("f16", bm=128, bn=256, bk=32, warps_m=2, warps_n=4, stages=4),   # 96 KiB: dynamic shared memory
             GemmConfig("bf16", bm=256, bn=128, bk=64, warps_m=4, warps_n=2, stages=3),
             GemmConfig("f16", b_kn=True), GemmConfig("bf16", bm=64, bn=64, b_kn=True, b_copy_elems=2),
             GemmConfig("f16", bm=64, bn=128, stages=4, weight="int4", group=128), GemmConfig("bf16", weight="int4", group=128),
             GemmConfig("f16", bk=64, a8="s8", raster=8), GemmConfig("bf16", bm=16, bn=128, bk=128, warps_m=1, warps_n=4, a8="e4m3", split_k=2)]
WGMMA_CONFIGS = [GemmConfig("f16", bm=64, bn=32, bk=64, warps_m=4, warps_n=1, stages=3, wgmma=True),
                 GemmConfig("f16", bm=128, bn=128, bk=128, warps_m=8, warps_n=1, stages=4, raster=8, a8="s8", wgmma=True),
                 GemmConfig("bf16", bm=128, bn=128, bk=128, warps_m=8, warps_n=1, stages=4, raster=8, a8="e4m3", wgmma=True),
                 GemmConfig("bf16", bm=128, bn=64, bk=64, warps_m=8, warps_n=1, stages=4, raster=2, wgmma=True),
                 GemmConfig("f16", bm=64, bn=48, bk=64, warps_m=4, warps_n=1, stages=5, bias=True, activation="silu", wgmma=True),
                 # packed weights decoded into wgmma's A registers (the schedules choose_config takes at M > 128 and M <= 128)
                 GemmConfig("f16", bm=256, bn=128, bk=64, warps_m=1, warps_n=8, stages=4, raster=8, weight="int4", group=128, wgmma=True),
                 GemmConfig("bf16", bm=128, bn=128, bk=64, warps_m=1, warps_n=8, stages=4, weight="uint4", group=32, zero=True,
                            split_k=2, bias=True, activation="silu", wgmma=True)]
# a residual read in the epilogue (a prompt's residual add and SwiGLU's product; the product on a decoded weight)
RESIDUAL_WGMMA_CONFIGS = [GemmConfig("f16", bm=128, bn=128, bk=64, warps_m=8, warps_n=1, stages=4, raster=8, bias=True, residual="add", wgmma=True),
                          GemmConfig("bf16", bm=128, bn=256, bk=64, warps_m=8, warps_n=1, stages=4, raster=8, residual="mul", wgmma=True),
                          GemmConfig("bf16", bm=128, bn=128, bk=64, warps_m=1, warps_n=8, stages=4, raster=8, weight="int4", group=128,
                                     residual="mul", wgmma=True)]
CONFIGS = [
    GemmConfig("f16", bm=32, bn=32, bk=32, warps_m=1, warps_n=1, stages=2),
    GemmConfig("bf16", bm=64, bn=32, bk=64, warps_m=2, warps_n=1, stages=3),
    GemmConfig("f16", bm=64, bn=128, bk=32, warps_m=2, warps_n=2, stages=4),
    GemmConfig("bf16", bm=128, bn=128, bk=32, warps_m=2, warps_n=2, stages=3),
]


def lowered(cfg) -> KernelOp:
    """The kernel as it runs: swizzled tiles, every access a ptx instruction."""
    return lowered_gemm_kernel(cfg).ops.first


def launch(cfg, mem, operands: list, bias, m, n, k, out_dtype, kernel=None, residual=None) -> np.ndarray:
    """Run a schedule's kernel(s) on the interpreter as the launcher does (the GEMM, and with a
    split K the reduction over its workspace) into a poisoned output; returns the output."""

    out = mem.alloc(np.full((m, n), np.nan, out_dtype))  # poisoned: every element must be written
    bias_ptr = ([mem.alloc(bias)] if bias is not None else []) + ([mem.alloc(residual)] if residual is not None else [])
    if cfg.split_k == 1:
        run_kernel(kernel or lowered(cfg), cfg.grid(m, n), operands + bias_ptr + [out, m, n, k], mem)
    else:
        ws = mem.alloc(np.full(cfg.workspace_shape(m, n), np.nan, np.float32))
        run_kernel(kernel or lowered(cfg), cfg.grid(m, n), operands + [ws, m, n, k], mem)
        run_kernel(lowered_gemm_kernel(cfg, reduction=True).ops.first, reduce_grid(m, n), [ws] + bias_ptr + [out, m, n], mem)
    return mem.read(out, np.empty((m, n), out_dtype))


def interpret_gemm(cfg, a, b, kernel=None, bias=None, residual=None):
    m, k = a.shape
    n = b.shape[1] if cfg.b_kn else b.shape[0]
    mem = DeviceMemory()
    return launch(cfg, mem, [mem.alloc(a), mem.alloc(b)], bias, m, n, k, a.dtype, kernel, residual)


@settings(max_examples=max(10, settings().max_examples // 4))  # each example interprets whole thread blocks
@given(st.sampled_from(CONFIGS), st.booleans(), st.integers(1, 140), st.integers(1, 140), st.integers(1, 100), st.integers(0, 2**31))
def test_gemm_kernel_computes_the_product_exactly(cfg, kn, m, n, k, seed):
    # odd K (or N, for a [K, N] B) copies element by element
    cfg = dataclasses.replace(cfg, copy_elems=copy_elems(k), b_kn=kn, b_copy_elems=copy_elems(n) if kn else 8)
    rng = np.random.default_rng(seed)
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    a = rng.integers(-4, 5, (m, k)).astype(dt)  # small integers: every partial sum is exact
    b = rng.integers(-4, 5, (n, k)).astype(dt)
    out = interpret_gemm(cfg, a, np.ascontiguousarray(b.T) if kn else b)
    exact = a.astype(np.float32) @ b.astype(np.float32).T  # f32 accumulation of small integers is exact
    assert np.array_equal(out.astype(np.float32), exact.astype(dt).astype(np.float32))  # one rounding, to the output type


def test_gemm_rounds_like_f32_accumulation():
    cfg = CONFIGS[2]
    rng = np.random.default_rng(1)
    a = rng.standard_normal((70, 96)).astype(np.float16)
    b = rng.standard_normal((33, 96)).astype(np.float16)
    out = interpret_gemm(cfg, a, b).astype(np.float32)
    ref = (a.astype(np.float32) @ b.astype(np.float32).T)
    np.testing.assert_allclose(out, ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("activation", ["none", "relu", "silu"])
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_epilogue_adds_bias_and_applies_the_activation(activation, dtype):
    cfg = GemmConfig(dtype, bm=32, bn=32, bk=32, warps_m=1, warps_n=1, stages=2, bias=True, activation=activation)
    dt = np.float16 if dtype == "f16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(2)
    m, n, k = 37, 45, 48
    a, b = (rng.standard_normal((m, k)) * 0.3).astype(dt), (rng.standard_normal((n, k)) * 0.3).astype(dt)
    bias = rng.standard_normal(n).astype(dt)
    out = interpret_gemm(cfg, a, b, bias=bias).astype(np.float32)
    y = a.astype(np.float32) @ b.astype(np.float32).T + bias.astype(np.float32)
    y = {"none": y, "relu": np.maximum(y, 0), "silu": y / (1 + np.exp(-y))}[activation]
    tol = 2e-3 if dtype == "f16" else 1e-2
    np.testing.assert_allclose(out, y.astype(dt).astype(np.float32), rtol=tol, atol=tol)


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="f16 or bf16"):
        GemmConfig("f32")
    with pytest.raises(ValueError, match="warp tile"):
        GemmConfig(bm=48, warps_m=2)
    with pytest.raises(ValueError, match="exceed the 227 KiB"):
        GemmConfig(bm=256, bn=256, bk=64, warps_m=4, warps_n=4, stages=4)
    with pytest.raises(ValueError, match="wgmma tiles take k-tiles of 128 bytes a row"):
        GemmConfig(bm=64, bn=64, bk=32, warps_m=4, warps_n=1, wgmma=True)
    with pytest.raises(ValueError, match="each warpgroup 64 rows"):
        GemmConfig(bm=64, bn=64, bk=64, warps_m=2, warps_n=2, wgmma=True)
    with pytest.raises(ValueError, match="no \\[K, N\\] B, register prefetch or scale_partials"):
        GemmConfig(bm=64, bn=64, bk=64, warps_m=4, warps_n=1, wgmma=True, b_kn=True)
    with pytest.raises(ValueError, match="3 stages or more"):
        GemmConfig(bm=64, bn=64, bk=64, warps_m=4, warps_n=1, stages=2, wgmma=True)
    with pytest.raises(ValueError, match="with a packed weight give each warpgroup 64 of its rows"):
        GemmConfig(bm=64, bn=64, bk=64, warps_m=4, warps_n=1, weight="int4", wgmma=True)
    with pytest.raises(ValueError, match="int1 weights need B as \\[N, K\\] and BK a multiple of 128"):
        GemmConfig(bm=64, bn=64, bk=64, warps_m=1, warps_n=4, weight="int1", wgmma=True)


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("cfg", CONFIGS + EPILOGUES + WGMMA_CONFIGS + RESIDUAL_WGMMA_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_gemm_kernels_assemble_without_spills(cfg, arch, tmp_path):
    if cfg.a8 == "e4m3" and arch == "sm_80":
        pytest.skip("fp8 mma.sync needs sm_89 (the launcher refuses it for sm_80: tests/backend/test_quant.py)")
    if cfg.wgmma and arch == "sm_80":
        pytest.skip("wgmma is sm_90a's (the launcher refuses it elsewhere: tests/backend/test_gemm.py)")
    src = tmp_path / "gemm.ptx"
    src.write_text(module_text(lowered_gemm_kernel(cfg, target=arch), arch))
    r = subprocess.run(["ptxas", f"-arch={arch}", "-v", str(src), "-o", str(tmp_path / "gemm.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "0 bytes spill stores" in r.stderr, r.stderr
    assert "serialized" not in r.stderr, r.stderr  # ptxas made the wgmmas wait for each other


@pytest.mark.skipif(sass_tools_missing, reason="ptxas or nvdisasm is not installed")
@pytest.mark.parametrize("cfg", WGMMA_CONFIGS + RESIDUAL_WGMMA_CONFIGS, ids=lambda c: c.name)
def test_sass_reads_accumulators_only_after_the_last_wgmma_retires(cfg, tmp_path):
    """In the machine code, no instruction after the last wgmma (HGMMA) touches its accumulators before a
    WARPGROUP.DEPBAR.LE gsb0, 0x0: ptxas 13.0 once moved the epilogue's reads of them above the wait
    (decoded-weight loops that left a group in flight), which the GPU turned into wrong sums."""
    import re

    code = sass(module_text(lowered_gemm_kernel(cfg, target="sm_90a"), "sm_90a"), "sm_90a", tmp_path)
    last = max(i for i, ins in enumerate(code) if re.match(r"[HIQ]GMMA", ins))  # (f16/bf16, s8, fp8)
    first, n = (int(v) for v in re.search(r"GMMA\.64x(\d+)x\d+\S* R(\d+)", code[last]).groups()[::-1])
    acc = {f"R{r}" for r in range(first, first + n // 2)}
    for ins in code[last + 1:]:
        if "WARPGROUP.DEPBAR.LE gsb0, 0x0" in ins:
            return
        assert not acc & set(re.findall(r"\bR\d+\b", ins)), f"accumulators read before the last wgmma retires: {ins}"
    raise AssertionError("no WARPGROUP.DEPBAR.LE gsb0, 0x0 after the last HGMMA")


@settings(max_examples=max(6, settings().max_examples // 5))  # each example interprets whole thread blocks
@given(st.sampled_from([c for c in WGMMA_CONFIGS + RESIDUAL_WGMMA_CONFIGS if not c.a8 and not c.weight]), st.integers(1, 150),
       st.integers(1, 140), st.integers(1, 40), st.integers(1, 3), st.integers(0, 2**31))
def test_wgmma_kernel_computes_the_product_exactly(cfg, m, n, k8, split, seed):
    cfg = dataclasses.replace(cfg, split_k=split)
    rng = np.random.default_rng(seed)
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    k = 8 * k8  # rows copied 16 bytes at a time
    n += n % 2 if cfg.residual else 0  # residual epilogues read pairs as words
    a, b = rng.integers(-4, 5, (m, k)).astype(dt), rng.integers(-4, 5, (n, k)).astype(dt)
    bias = rng.integers(-4, 5, n).astype(dt) if cfg.bias else None
    residual = rng.integers(-4, 5, (m, n)).astype(dt) if cfg.residual else None
    y = a.astype(np.float32) @ b.astype(np.float32).T + (bias.astype(np.float32) if cfg.bias else 0)
    if cfg.residual:  # combined with the rounded product (in bf16, products past 256 round)
        y = y.astype(dt).astype(np.float32)
        y = y + residual.astype(np.float32) if cfg.residual == "add" else y * residual.astype(np.float32)
    out = interpret_gemm(cfg, a, b, bias=bias, residual=residual).astype(np.float32)
    if cfg.activation == "silu":  # ex2 and rcp are approximations on the GPU
        silu = y * (0.5 + 0.5 * np.tanh(y / 2))
        np.testing.assert_allclose(out, silu.astype(dt).astype(np.float32), rtol=2e-3, atol=2e-3)
    else:
        assert np.array_equal(out, y.astype(dt).astype(np.float32))


def test_wgmma_warp_level_and_lowered_kernels_agree():
    cfg = WGMMA_CONFIGS[3]
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((130, 136)).astype(ml_dtypes.bfloat16), rng.standard_normal((70, 136)).astype(ml_dtypes.bfloat16)
    assert np.array_equal(interpret_gemm(cfg, a, b, kernel=gemm_kernel(cfg)).view(np.uint16), interpret_gemm(cfg, a, b).view(np.uint16))


@pytest.mark.parametrize("broken, message", [
    ("fence", "written with no fence.proxy.async since"),
    ("wait", "which an in-flight wgmma reads"),
    ("stage", "which an in-flight wgmma reads"),
])
def test_the_interpreter_catches_wgmma_hazards(broken, message):
    """Copies the async proxy cannot see, a stage refilled while a wgmma still reads it."""
    from xdsl.dialects.builtin import IntegerAttr, i64

    from dialects.ptx import FenceProxyAsyncOp, ForOp, ImmOp, WgmmaWaitOp

    cfg = WGMMA_CONFIGS[0]

    def wait_less(op):  # two k-tiles of wgmmas in flight: the stage refilled is still being read
        if isinstance(op, WgmmaWaitOp) and op.pending.value.data:
            op.properties["pending"] = IntegerAttr(2, i64)

    if broken == "stage":  # refill the stage read one k-tile ago (as an mma.sync pipeline would)
        cfg = dataclasses.replace(cfg, stages=4)
        kernel = gemm_kernel(cfg)
        loop = next(o for o in kernel.walk() if isinstance(o, ForOp))
        stage = ImmOp.get(cfg.stages - 1)
        loop.parent.insert_op_before(stage, loop)
        loop.operands = [*loop.operands[:-1], stage.result]  # the write stage the loop starts from
    else:
        kernel = _broken(cfg, _drop(FenceProxyAsyncOp) if broken == "fence" else wait_less)
    with pytest.raises(RungError, match=message):
        _run(kernel, cfg, k=256)


def _broken(cfg, mutate):
    kernel = gemm_kernel(cfg)
    for op in list(kernel.walk()):
        mutate(op)
    return kernel


def _drop(cls):
    """A mutation for _broken that removes every op of class `cls`."""
    def mutate(op):
        if isinstance(op, cls):
            op.detach()
            op.erase()
    return mutate


def _run(kernel, cfg, m=40, n=40, k=128):
    rng = np.random.default_rng(0)
    interpret_gemm(cfg, rng.standard_normal((m, k)).astype(np.float16), rng.standard_normal((n, k)).astype(np.float16), kernel)


def test_the_interpreter_catches_a_missing_barrier():
    from dialects.ptx import BarSyncOp

    cfg = CONFIGS[0]
    kernel = _broken(cfg, _drop(BarSyncOp))
    with pytest.raises(RungError, match="shared-memory race"):
        _run(kernel, cfg)


def test_the_interpreter_catches_a_pipeline_that_waits_too_little():
    from xdsl.dialects.builtin import IntegerAttr, i64

    from dialects.ptx import CpAsyncWaitOp

    cfg = CONFIGS[2]

    def wait_less(op):
        if isinstance(op, CpAsyncWaitOp) and op.pending.value.data:
            op.properties["pending"] = IntegerAttr(cfg.stages - 1, i64)

    with pytest.raises(RungError, match="before the cp.async that writes it completed"):
        _run(_broken(cfg, wait_less), cfg)


@pytest.mark.parametrize("cfg", [c for c in EPILOGUES if c.threads == 256 and not c.a8], ids=lambda c: c.name)
def test_eight_warp_tiles_with_dynamic_shared_memory(cfg):
    rng = np.random.default_rng(5)
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    m, n, k = cfg.bm + 3, cfg.bn + 5, 2 * cfg.bk + 8
    a, b = rng.integers(-3, 4, (m, k)).astype(dt), rng.integers(-3, 4, (n, k)).astype(dt)
    exact = a.astype(np.float32) @ b.astype(np.float32).T
    assert np.array_equal(interpret_gemm(cfg, a, b).astype(np.float32), exact.astype(dt).astype(np.float32))


@pytest.mark.parametrize("cfg", [CONFIGS[1], GemmConfig("f16", b_kn=True)], ids=lambda c: c.name)
def test_warp_level_and_lowered_kernels_agree(cfg):
    """The generated (unswizzled, warp-level) kernel and the lowered one compute the same bits."""
    rng = np.random.default_rng(9)
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    m, n, k = 70, 90, 100
    a = rng.standard_normal((m, k)).astype(dt)
    b = rng.standard_normal((k, n) if cfg.b_kn else (n, k)).astype(dt)
    cfg = dataclasses.replace(cfg, copy_elems=copy_elems(k), b_copy_elems=copy_elems(n) if cfg.b_kn else 8)
    warp_level = interpret_gemm(cfg, a, b, kernel=gemm_kernel(cfg))
    as_run = interpret_gemm(cfg, a, b)
    assert np.array_equal(warp_level.view(np.uint16), as_run.view(np.uint16))


@st.composite
def schedules(draw):
    """Valid schedules across the space the scheduler and the benchmark draw from."""
    warps_m, warps_n = draw(st.sampled_from([(1, 1), (2, 1), (1, 2), (2, 2), (4, 2), (2, 4)]))
    wm, wn = draw(st.sampled_from([16, 32, 64])), draw(st.sampled_from([16, 32, 64]))
    cfg = dict(dtype=draw(st.sampled_from(["f16", "bf16"])), bm=warps_m * wm, bn=warps_n * wn, bk=draw(st.sampled_from([32, 64])),
               warps_m=warps_m, warps_n=warps_n, stages=draw(st.integers(2, 4)), b_kn=draw(st.booleans()),
               bias=draw(st.booleans()), activation=draw(st.sampled_from(["none", "relu"])), prefetch=draw(st.booleans()),
               split_k=draw(st.integers(1, 3)), raster=draw(st.integers(1, 3)), early_weights=draw(st.booleans()))
    try:
        return GemmConfig(**cfg)
    except ValueError:  # e.g. a tile that does not split over the threads
        assume(False)


@settings(max_examples=max(6, settings().max_examples // 5))
@given(schedules(), st.integers(1, 2), st.integers(1, 2), st.integers(0, 2**31))
def test_any_valid_schedule_computes_the_product(cfg, mt, nt, seed):
    rng = np.random.default_rng(seed)
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    m, n, k = cfg.bm * mt - 3, cfg.bn * nt - 5, 2 * cfg.bk + 8
    try:  # a [K, N] B with odd N copies element by element, which small blocks cannot split
        cfg = dataclasses.replace(cfg, b_copy_elems=copy_elems(n) if cfg.b_kn else 8)
    except ValueError:
        assume(False)
    a, b = rng.integers(-3, 4, (m, k)).astype(dt), rng.integers(-3, 4, (n, k)).astype(dt)
    bias = rng.integers(-3, 4, n).astype(dt) if cfg.bias else None
    out = interpret_gemm(cfg, a, np.ascontiguousarray(b.T) if cfg.b_kn else b, bias=bias)
    y = a.astype(np.float32) @ b.astype(np.float32).T + (bias.astype(np.float32) if cfg.bias else 0)
    y = np.maximum(y, 0) if cfg.activation == "relu" else y
    assert np.array_equal(out.astype(np.float32), y.astype(dt).astype(np.float32))


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("candidate", CANDIDATES + WGMMA_CANDIDATES, ids=str)
def test_benchmark_candidates_are_correct_and_assemble(candidate, tmp_path):
    """The schedules the GPU benchmark times must be right before any device time goes to them."""
    cfg = GemmConfig("f16", **candidate)
    rng = np.random.default_rng(1)
    m, n, k = cfg.bm + 1, cfg.bn + 2, cfg.bk * 2
    a, b = rng.integers(-3, 4, (m, k)).astype(np.float16), rng.integers(-3, 4, (n, k)).astype(np.float16)
    exact = (a.astype(np.float32) @ b.astype(np.float32).T).astype(np.float16)
    assert np.array_equal(interpret_gemm(cfg, a, b), exact)
    src = tmp_path / "k.ptx"
    src.write_text(module_text(lowered_gemm_kernel(cfg, target="sm_90a"), "sm_90a"))
    r = subprocess.run(["ptxas", "-arch=sm_90a", "-v", str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0 and "0 bytes spill stores" in r.stderr and "serialized" not in r.stderr, r.stderr


def run_weight_gemm(cfg, fmt, x, w, bias=None, kernel=None):
    """Quantize w with `fmt`, pack it (ir.packing), run the lowered kernel(s) (or `kernel`) on
    the interpreter; returns (out, the weight the kernel computes with, the format's dequantized weight)."""
    from ir.packing import pack_weight, unpack_weight

    m, k = x.shape
    n = w.shape[0]
    q, s, z = fmt.quantize(w)
    packed = pack_weight(q, s, z, fmt, cfg.dtype)
    mem = DeviceMemory()
    operands = [mem.alloc(x), mem.alloc(packed.codes), mem.alloc(packed.scales)] + ([mem.alloc(packed.zeros)] if cfg.zero else [])
    out = launch(cfg, mem, operands, bias, m, n, k, x.dtype, kernel)
    dense = unpack_weight(packed, cfg.weight, cfg.group, cfg.scale == "e8m0", cfg.dtype, k, rounded=not cfg.scale_partials)
    return out.astype(np.float32), dense, fmt.dequantize(q, s, z)


WEIGHT_CASES = [  # (format, schedule): every decoder kind, zero mode, scale kind, split-K, raster, 16-row tiles
    (("int4", 128, "f16", "none"), dict(dtype="f16", bk=32)),
    (("int4", None, "bf16", "none"), dict(dtype="bf16", bk=64, split_k=3)),
    (("uint4", 32, "f16", "quantized"), dict(dtype="f16", bk=64, raster=2)),
    (("uint4", 64, "bf16", "original"), dict(dtype="bf16", bk=64, bm=16, warps_m=1, warps_n=2, split_k=2)),
    (("int8", 32, "f16", "none"), dict(dtype="f16", bk=32)),
    (("uint8", None, "f16", "rescale"), dict(dtype="f16", bk=64, bias=True, activation="relu")),
    (("int2", 64, "f16", "none"), dict(dtype="f16", bk=64)),
    (("uint2", 32, "bf16", "quantized"), dict(dtype="bf16", bk=128, bm=16, warps_m=1, warps_n=2)),
    (("int1", 128, "f16", "original"), dict(dtype="f16", bk=128)),
    (("e2m1", 32, "e8m0", "none"), dict(dtype="f16", bk=64, split_k=2, bias=True)),
    (("e2m1", 32, "e8m0", "none"), dict(dtype="bf16", bk=32)),
    (("e4m3", 32, "e8m0", "none"), dict(dtype="bf16", bk=64, raster=3)),
    (("e5m2", 64, "f16", "none"), dict(dtype="f16", bk=64)),
    (("nf4", 64, "f32", "none"), dict(dtype="f16", bk=64, bm=16, warps_m=1, warps_n=2)),
    (("nf4", 64, "f32", "none"), dict(dtype="bf16", bk=64, split_k=2)),
    # scales applied to each group's partial sums (scale_partials): groups within, across and beyond a unit and a k-tile
    (("int4", 128, "f16", "none"), dict(dtype="f16", bk=128, bm=16, warps_m=1, warps_n=2, prefetch=True, scale_partials=True)),
    (("int4", None, "bf16", "none"), dict(dtype="bf16", bk=64, split_k=2, scale_partials=True)),
    (("int2", 64, "f16", "none"), dict(dtype="f16", bk=128, bm=16, warps_m=1, warps_n=2, scale_partials=True)),
    (("int2", 32, "bf16", "none"), dict(dtype="bf16", bk=128, prefetch=True, scale_partials=True)),
    (("nf4", 64, "f32", "none"), dict(dtype="f16", bk=64, bias=True, activation="relu", scale_partials=True)),
    (("e2m1", 32, "e8m0", "none"), dict(dtype="bf16", bk=64, bm=16, warps_m=1, warps_n=2, scale_partials=True)),
    (("e4m3", 128, "f16", "none"), dict(dtype="f16", bk=64, prefetch=True, scale_partials=True)),
    (("e2m1", 32, "f16", "none"), dict(dtype="f16", bk=128, bm=16, warps_m=1, warps_n=2, prefetch=True, scale_partials=True)),
    # wgmma tiles: the weight decoded into wgmma's A registers, C stored from its transpose
    (("int4", 128, "f16", "none"), dict(dtype="f16", bm=16, bn=64, bk=64, warps_n=4, stages=3, wgmma=True)),
    (("uint4", 32, "bf16", "quantized"), dict(dtype="bf16", bm=32, bn=64, bk=64, warps_n=4, stages=4, bias=True, activation="silu",
                                                wgmma=True)),
    (("int2", 64, "f16", "none"), dict(dtype="f16", bm=48, bn=64, bk=64, warps_n=4, stages=3, split_k=3, wgmma=True)),
    (("nf4", 64, "f32", "none"), dict(dtype="f16", bm=32, bn=64, bk=64, warps_n=4, stages=3, wgmma=True)),
    (("e2m1", 32, "e8m0", "none"), dict(dtype="bf16", bm=16, bn=64, bk=64, warps_n=4, stages=3, wgmma=True)),
    (("e4m3", 128, "f16", "none"), dict(dtype="f16", bm=32, bn=64, bk=64, warps_n=4, stages=5, wgmma=True)),
    (("int8", None, "f16", "rescale"), dict(dtype="f16", bm=16, bn=64, bk=64, warps_n=4, stages=3, bias=True, wgmma=True)),
    # 8-row tiles (weight_is_a): the weight is the mma's A operand, C is stored from its transpose
    (("int4", 128, "f16", "none"), dict(dtype="f16", bk=128, bm=8, warps_n=2, bn=64, prefetch=True, scale_partials=True)),
    (("int2", 64, "f16", "none"), dict(dtype="f16", bk=128, bm=8, scale_partials=True, bias=True, activation="relu")),
    (("int1", 128, "f16", "original"), dict(dtype="f16", bk=128, bm=8, split_k=2)),
    (("uint4", 32, "bf16", "quantized"), dict(dtype="bf16", bk=64, bm=8, warps_n=2, bn=64, bias=True, activation="silu")),
    (("nf4", 64, "f32", "none"), dict(dtype="f16", bk=64, bm=8, split_k=3, scale_partials=True)),
    (("e2m1", 32, "e8m0", "none"), dict(dtype="bf16", bk=64, bm=8, scale_partials=True)),
    (("e2m1", 32, "e8m0", "none"), dict(dtype="f16", bk=128, bm=8, split_k=2, prefetch=True, scale_partials=True)),
    (("e4m3", 128, "f16", "none"), dict(dtype="f16", bk=64, bm=8, prefetch=True)),
    # a table format's pairs looked up in shared memory (shared_table), filled by 32 to 128 threads
    (("nf4", 64, "f32", "none"), dict(dtype="bf16", bk=64, shared_table=True)),
    (("nf4", 32, "f32", "none"), dict(dtype="f16", bk=128, bm=16, warps_m=1, warps_n=2, prefetch=True, shared_table=True)),
    (("nf4", 64, "f32", "none"), dict(dtype="f16", bk=64, bm=8, split_k=3, scale_partials=True, shared_table=True)),
    (("nf4", None, "f32", "none"), dict(dtype="bf16", bm=32, bn=64, bk=64, warps_n=4, stages=3, wgmma=True, shared_table=True)),
]


@pytest.mark.parametrize("fmt, schedule", WEIGHT_CASES, ids=lambda c: "-".join(map(str, c)) if isinstance(c, tuple) else
                         "_".join(f"{k}{v}" for k, v in c.items()))
def test_low_precision_weights_decode_in_registers(fmt, schedule):
    """W x A16: the kernel equals x @ (the packed weight decoded)^T up to f32 summation order, and
    that weight is the format's dequantized weight rounded to the activation type."""
    from ir.numerics import QuantFormat

    fmt = QuantFormat(*fmt)
    base = dict(bm=32, bn=32, warps_m=1, warps_n=1, stages=2)
    cfg = GemmConfig(weight=fmt.element, group=fmt.group or 0, scale="e8m0" if fmt.scale == "e8m0" else "", zero=fmt.zero != "none",
                     **{**base, **schedule})
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(4)
    m, n, k = 37, 48, 256  # (codes in 16-row tiles; rows as they are: test_small_m_schedules_read_codes_in_16_row_tiles)
    x = (rng.standard_normal((m, k)) * 0.5).astype(dt)
    w = rng.standard_normal((n, k))
    bias = (rng.standard_normal(n) * 0.1).astype(dt) if cfg.bias else None
    out, dense, exact = run_weight_gemm(cfg, fmt, x, w, bias)
    tol = 2e-3 if cfg.dtype == "f16" else 1e-2
    np.testing.assert_allclose(dense, exact, rtol=tol, atol=tol * np.abs(exact).max())
    ref = x.astype(np.float32) @ dense.T + (bias.astype(np.float32) if bias is not None else 0)
    ref = np.maximum(ref, 0) if cfg.activation == "relu" else ref / (1 + np.exp(-ref)) if cfg.activation == "silu" else ref
    np.testing.assert_allclose(out, ref.astype(dt).astype(np.float32), rtol=tol, atol=tol * np.abs(ref).max())


@settings(max_examples=max(6, settings().max_examples // 5))  # each example interprets whole thread blocks
@given(st.sampled_from([("int4", 64, "f16", "none"), ("uint2", 32, "bf16", "original"), ("e4m3", 32, "e8m0", "none")]),
       st.integers(1, 300), st.integers(1, 140) | st.integers(1, 8).map(lambda t: 16 * t), st.integers(1, 7), st.integers(1, 3),
       st.integers(0, 2**31))
def test_wgmma_decoded_weights_at_any_shape(fmt, m, n, k_tiles, split, seed):
    """Odd and even k-tile counts per split (the pipeline runs k-tiles in pairs, an odd count's last
    beside a zero-filled one), partial tiles along M and N: the kernel equals x @ (the packed
    weight decoded)^T."""
    from ir.numerics import QuantFormat

    fmt = QuantFormat(*fmt)
    cfg = GemmConfig(fmt.scale if fmt.scale in ("f16", "bf16") else "f16", bm=128 if m > 64 else 64, bn=64, bk=64, warps_m=1,
                     warps_n=4, stages=4, split_k=split, wgmma=True, **GemmConfig.weight_fields(fmt))
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, 64 * k_tiles)) * 0.5).astype(dt)
    out, dense, _ = run_weight_gemm(cfg, fmt, x, rng.standard_normal((n, 64 * k_tiles)))
    ref = x.astype(np.float32) @ dense.T
    tol = 2e-3 if cfg.dtype == "f16" else 1e-2
    np.testing.assert_allclose(out, ref.astype(dt).astype(np.float32), rtol=tol, atol=tol * np.abs(ref).max())


@settings(max_examples=max(6, settings().max_examples // 5))  # each example interprets whole thread blocks
@given(st.sampled_from([("int4", 32, "f16", "none"), ("int2", 64, "f16", "none"), ("e2m1", 32, "e8m0", "none"), ("nf4", 32, "f32", "none")]),
       st.sampled_from([8, 16]), st.integers(1, 16), st.integers(1, 90) | st.integers(1, 5).map(lambda t: 16 * t), st.integers(1, 6),
       st.integers(0, 2**31))
def test_small_m_schedules_read_codes_in_16_row_tiles(fmt, bm, m, n, blocks, seed):
    """The small-M schedules' copies find each row's k-tile in the codes' 16-row tiles (or rows as
    they are, N not a multiple of 16 or K not of the chunk), nf4's pairs in its shared table: the
    kernel equals x @ (the packed weight decoded)^T."""
    from ir.numerics import QuantFormat
    from ir.packing import block_elems, decoder

    fmt = QuantFormat(*fmt)
    k = blocks * block_elems(decoder(fmt.element).bits)
    cfg = GemmConfig("f16", bm=bm, bn=64, bk=128, warps_m=1, warps_n=2, stages=3, prefetch=True, scale_partials=True,
                     split_k=2 if k > 128 else 1, shared_table=fmt.element == "nf4", **GemmConfig.weight_fields(fmt))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((min(m, bm), k)) * 0.5).astype(np.float16)
    out, dense, _ = run_weight_gemm(cfg, fmt, x, rng.standard_normal((n, k)))
    ref = x.astype(np.float32) @ dense.T
    np.testing.assert_allclose(out, ref.astype(np.float16).astype(np.float32), rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def test_the_interpreter_catches_a_wgmma_reading_registers_rewritten():
    """Each k-tile of the decoded-weight loop decodes into registers of its own: with every group
    of a trip left in flight (and no copies, whose stage refills would be caught first) the next
    trip decodes into registers the last trip's wgmmas still read."""
    from xdsl.dialects.builtin import IntegerAttr, i64

    from dialects.ptx import ForOp, WgmmaWaitOp
    from dialects.warp import CpAsyncOp
    from ir.numerics import QuantFormat
    from lowering.tile_to_warp import DECODED_UNROLL

    cfg = WGMMA_CONFIGS[-2]

    def wait_less(op):
        if isinstance(op, WgmmaWaitOp) and isinstance(op.parent_op(), ForOp):
            op.properties["pending"] = IntegerAttr(DECODED_UNROLL, i64)
        elif isinstance(op, CpAsyncOp) and isinstance(op.parent_op(), ForOp):
            _drop(CpAsyncOp)(op)

    kernel = _broken(cfg, wait_less)
    rng = np.random.default_rng(0)
    with pytest.raises(RungError, match="a register an in-flight wgmma reads as its A operand is written"):
        run_weight_gemm(cfg, QuantFormat("int4", 128, "f16", "none"), rng.standard_normal((40, 512)).astype(np.float16),
                        rng.standard_normal((40, 512)), kernel=kernel)


def test_weight_schedules_are_checked():
    with pytest.raises(ValueError, match="int2 weights need B as \\[N, K\\] and BK a multiple of 64"):
        GemmConfig(bk=32, weight="int2")
    with pytest.raises(ValueError, match="group 96 must be a power of two"):
        GemmConfig(weight="int4", group=96)
    with pytest.raises(ValueError, match="8-bit integer weights decode into f16 only"):
        GemmConfig("bf16", weight="int8")
    with pytest.raises(ValueError, match="no register decoder for e8m0"):
        GemmConfig(weight="e8m0")
    with pytest.raises(ValueError, match="set `weight` too"):
        GemmConfig(group=128)
    with pytest.raises(ValueError, match="a weight with zero terms scales each value"):
        GemmConfig(weight="uint4", group=128, zero=True, scale_partials=True)
    with pytest.raises(ValueError, match="8-row tiles put a packed weight in the mma's A operand"):
        GemmConfig(bm=8, warps_m=1)
    with pytest.raises(ValueError, match="one warp along M"):
        GemmConfig(bm=8, warps_m=2, weight="int4")


@pytest.mark.parametrize("cfg", [GemmConfig("f16", bm=64, bn=64, stages=3), GemmConfig("bf16", b_kn=True, stages=4),
                                 GemmConfig("f16", bm=16, bn=64, bk=128, warps_m=1, warps_n=2, weight="int4", group=32, split_k=2),
                                 GemmConfig("bf16", bm=32, bn=32, bk=64, warps_m=1, warps_n=1, weight="e2m1", group=32, scale="e8m0"),
                                 GemmConfig("f16", bm=32, bn=64, bk=128, warps_m=1, warps_n=2, weight="int1", group=128, zero=True),
                                 GemmConfig("f16", bm=16, bn=64, bk=128, warps_m=1, warps_n=2, weight="int2", group=64, scale_partials=True),
                                 GemmConfig("f16", bm=8, bn=64, bk=128, warps_m=1, warps_n=2, weight="int4", group=128, scale_partials=True)],
                         ids=lambda c: c.name)
def test_prefetching_fragments_changes_no_bit(cfg):
    """The double-buffered main loop (the next unit's fragments load while the current one
    computes) issues the same mma in the same order: identical results, and no race or early
    read on the interpreter."""
    from ir.numerics import QuantFormat

    rng = np.random.default_rng(3)
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    m, n, k = cfg.bm + 5, cfg.bn + (8 if cfg.b_kn else 7), 3 * cfg.bk  # (B's rows along N must stay 16-byte aligned)
    x = rng.standard_normal((m, k)).astype(dt)
    if cfg.weight:
        fmt = QuantFormat(cfg.weight, cfg.group or None, "e8m0" if cfg.scale else "f16", "original" if cfg.zero else "none")
        w = rng.standard_normal((n, k))
        plain, pipelined = (run_weight_gemm(dataclasses.replace(cfg, prefetch=p), fmt, x, w)[0] for p in (False, True))
    else:
        b = rng.standard_normal((k, n) if cfg.b_kn else (n, k)).astype(dt)
        plain, pipelined = (interpret_gemm(dataclasses.replace(cfg, prefetch=p), x, b).astype(np.float32) for p in (False, True))
    assert np.array_equal(plain, pipelined)


@pytest.mark.parametrize("cfg", [GemmConfig("f16", bm=16, bn=128, bk=64, warps_m=1, warps_n=4, stages=4, split_k=3, bias=True),
                                 GemmConfig("f16", bm=16, bn=64, bk=128, warps_m=1, warps_n=2, weight="int4", group=32, split_k=2, prefetch=True),
                                 GemmConfig("bf16", bm=32, bn=32, bk=64, warps_m=1, warps_n=1, weight="e2m1", group=32, scale="e8m0"),
                                 GemmConfig("f16", bm=32, bn=64, bk=128, warps_m=1, warps_n=2, weight="int1", group=128, zero=True),
                                 GemmConfig("f16", bm=128, bn=64, bk=64, warps_m=8, warps_n=1, stages=4, wgmma=True, residual="add")],
                         ids=lambda c: c.name)
def test_copying_the_weight_before_waiting_for_the_kernel_ahead_changes_no_bit(cfg):
    """early_weights: the first k-tiles' weight copies (B, scales, zero terms) go before griddepcontrol.wait, A's after
    it, all in the same stages: identical results, and no early read on the interpreter (which checks every read of
    shared memory against the cp.async groups waited for)."""
    from ir.numerics import QuantFormat

    rng = np.random.default_rng(5)
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    m, n, k = cfg.bm + 3, cfg.bn + 10, 5 * cfg.bk + (0 if cfg.weight else 16)  # (whole groups)
    x = rng.standard_normal((m, k)).astype(dt)
    early = dataclasses.replace(cfg, early_weights=True)
    if cfg.weight:
        fmt = QuantFormat(cfg.weight, cfg.group or None, "e8m0" if cfg.scale else "f16", "original" if cfg.zero else "none")
        w = rng.standard_normal((n, k))
        plain, early_first = (run_weight_gemm(c, fmt, x, w)[0] for c in (cfg, early))
    else:
        b = rng.standard_normal((n, k)).astype(dt)
        residual = rng.standard_normal((m, n)).astype(dt) if cfg.residual else None
        bias = rng.standard_normal(n).astype(dt) if cfg.bias else None
        plain, early_first = (interpret_gemm(c, x, b, bias=bias, residual=residual).astype(np.float32) for c in (cfg, early))
    assert np.array_equal(plain, early_first)
    ops = list(gemm_kernel(early).body.block.ops)
    wait = next(i for i, o in enumerate(ops) if isinstance(o, ptx.GridDepWaitOp))
    assert isinstance(ops[0], ptx.GridDepLaunchOp) and not isinstance(gemm_kernel(cfg).body.block.first_op, ptx.GridDepLaunchOp)
    copies = [i for i, o in enumerate(ops) if o.name.endswith("cp_async")]  # (warp level: copies into shared tiles)
    assert not any(isinstance(o, ptx.CpAsyncCommitOp) for o in ops[:wait])  # the weight's copies join the first group
    assert copies[0] < wait < copies[-1]


@pytest.mark.parametrize("cfg", [GemmConfig("f16", bm=32, bn=32, bk=64, warps_m=1, warps_n=1, stages=2, a8="s8"),
                                 GemmConfig("bf16", bm=32, bn=64, bk=128, warps_m=1, warps_n=2, stages=3, a8="s8", split_k=2, bias=True),
                                 GemmConfig("f16", bm=16, bn=64, bk=64, warps_m=1, warps_n=2, stages=2, a8="e4m3", prefetch=True),
                                 GemmConfig("bf16", bm=32, bn=32, bk=64, warps_m=1, warps_n=1, stages=2, a8="e4m3", raster=2,
                                            activation="relu")], ids=lambda c: c.name)
def test_eight_bit_operands_multiply_on_m16n8k32(cfg):
    """W8A8 and FP8 x FP8: 8-bit rows copied and read with ldmatrix as pairs of bytes, mma.m16n8k32,
    accumulators times the row's and column's scales: (x8 * xs) @ (w8 * ws)^T, rounded once."""
    check_eight_bit_gemm(cfg)


@pytest.mark.parametrize("cfg", [GemmConfig("f16", bm=64, bn=32, bk=128, warps_m=4, warps_n=1, stages=3, a8="s8", wgmma=True),
                                 GemmConfig("bf16", bm=64, bn=48, bk=128, warps_m=4, warps_n=1, stages=4, a8="e4m3", split_k=2,
                                            bias=True, wgmma=True)], ids=lambda c: c.name)
def test_eight_bit_operands_multiply_on_wgmma(cfg):
    """The same on wgmma m64nNk32 (s32 or f32 accumulators), 128 bytes of each row a k-tile."""
    check_eight_bit_gemm(cfg)


def check_eight_bit_gemm(cfg):
    rng = np.random.default_rng(7)
    m, n, k = cfg.bm + 5, cfg.bn + 7, 3 * cfg.bk + 16
    if cfg.a8 == "s8":
        x, w = rng.integers(-127, 128, (m, k)).astype(np.int8), rng.integers(-127, 128, (n, k)).astype(np.int8)
    else:
        x, w = (rng.standard_normal(s).astype(ml_dtypes.float8_e4m3fn) for s in ((m, k), (n, k)))
    xs, ws = (rng.random(s).astype(np.float32) * 0.01 + 0.001 for s in (m, n))
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    bias = (rng.standard_normal(n) * 0.1).astype(dt) if cfg.bias else None
    mem = DeviceMemory()
    out = launch(cfg, mem, [mem.alloc(x.view(np.uint8)), mem.alloc(w.view(np.uint8)), mem.alloc(xs), mem.alloc(ws)], bias, m, n, k, dt)
    ref = (x.astype(np.float64) * xs[:, None]) @ (w.astype(np.float64) * ws[:, None]).T + (bias.astype(np.float64) if cfg.bias else 0)
    ref = np.maximum(ref, 0) if cfg.activation == "relu" else ref
    tol = 2e-3 if cfg.dtype == "f16" else 1e-2
    np.testing.assert_allclose(out.astype(np.float64), ref.astype(dt).astype(np.float64), rtol=tol, atol=tol * np.abs(ref).max())


def test_eight_bit_schedules_are_checked():
    with pytest.raises(ValueError, match="8-bit operands take BK 64 or 128"):
        GemmConfig(a8="s8", bk=32)
    with pytest.raises(ValueError, match="8-bit operands \\(a8\\) are s8 or e4m3"):
        GemmConfig(a8="int4", bk=64)


@settings(max_examples=max(6, settings().max_examples // 5), deadline=None)  # each example interprets whole thread blocks
@given(st.sampled_from([GemmConfig("f16", bm=16, bn=64, bk=64, warps_m=1, warps_n=2, stages=3),
                        GemmConfig("bf16", bm=32, bn=128, bk=32, warps_m=2, warps_n=2, stages=2),
                        GemmConfig("f16", bm=16, bn=128, bk=64, warps_m=1, warps_n=4, stages=4)]),
       st.integers(1, 40), st.integers(1, 300), st.integers(1, 200), st.sampled_from([0.0, 0.5, 0.8, 0.95, 0.999]),
       st.sampled_from(["row", "tensor"]), st.integers(1, 3), st.integers(0, 2**31))
def test_a_sparse_weight_scattered_in_shared_memory_computes_the_pruned_product(cfg, m, n, k, sparsity, per, split, seed):
    """Tiled slots (ir.sparse.kernel_tiles) copied k-tile by k-tile, scattered into a zeroed dense tile, multiplied by
    mma.sync: exactly the product with the pruned weight, over odd shapes, empty rows and tiles (and whole empty
    weights), split K; the interpreter checks every shared read and write for races."""
    from ir.sparse import kernel_tiles, prune

    rng = np.random.default_rng(seed)
    dt = np.float16 if cfg.dtype == "f16" else ml_dtypes.bfloat16
    w = prune(rng.integers(-4, 5, (n, k)).astype(np.float64), sparsity, per)
    packed = kernel_tiles(w, cfg.bn, cfg.bk, cfg.dtype, cfg.threads)
    cfg = dataclasses.replace(cfg, sparse=packed.shape[1] // -(-k // cfg.bk) * cfg.bn, split_k=split, copy_elems=copy_elems(k))
    x = rng.integers(-4, 5, (m, k)).astype(dt)
    mem = DeviceMemory()
    out = launch(cfg, mem, [mem.alloc(x), mem.alloc(packed)], None, m, n, k, dt)
    exact = x.astype(np.float32) @ w.astype(np.float32).T
    assert np.array_equal(out.astype(np.float32), exact.astype(dt).astype(np.float32))


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("cfg", [GemmConfig("f16", bm=16, bn=128, bk=64, warps_m=1, warps_n=4, stages=4, sparse=1792, split_k=4),
                                 GemmConfig("bf16", bm=32, bn=128, bk=64, warps_m=2, warps_n=4, stages=3, sparse=4096)],
                         ids=lambda c: c.name)
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_sparse_kernels_assemble_without_spills(cfg, arch, tmp_path):
    from machine_code import assert_assembles_without_spills

    assert_assembles_without_spills(module_text(lowered_gemm_kernel(cfg, target=arch), arch), arch, tmp_path)
