"""The ptx dialect: instruction semantics against the PTX ISA, printing, ptxas."""

import shutil
import subprocess

import numpy as np
import pytest

from lowering.ptx_builder import PtxBuilder
from backend.ptx_text import module_text
from dialects.ptx import KernelOp
from dialects.ptx import run_kernel
from ir.simulator import DeviceMemory, ThreadBlock
from ir.errors import RungError

PTXAS = shutil.which("ptxas")


def assemble(ptx: str, arch: str, tmp_path) -> str:
    src = tmp_path / "k.ptx"
    src.write_text(ptx)
    r = subprocess.run([PTXAS, f"-arch={arch}", str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stderr


@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_gives_each_lane_its_row_pair(trans):
    k = KernelOp.get("k", [], 32, 1024)
    b = PtxBuilder(k.body.block)
    regs = b.ldmatrix(b.shared_base(), 4, trans)
    op = regs[0].owner
    cta = ThreadBlock(32, (0, 0, 0), DeviceMemory(), 1024)
    halves = np.arange(512, dtype=np.uint16)  # matrix i, row r, column c holds 64 i + 8 r + c
    cta.shared.data[:] = halves.view(np.uint8)
    lane = np.arange(32, dtype=np.int64)
    out = op.execute(cta, (lane * 16).astype(np.uint32))  # lane 8i + r points at matrix i's row r
    for i, word in enumerate(out):
        lo, hi = word & 0xFFFF, word >> 16
        row, col = lane // 4, 2 * (lane % 4)
        if trans:  # lane l receives column l/4, rows 2(l%4), 2(l%4)+1
            row, col = col, row
            assert np.array_equal(lo, 64 * i + 8 * row + col) and np.array_equal(hi, 64 * i + 8 * (row + 1) + col)
        else:
            assert np.array_equal(lo, 64 * i + 8 * row + col) and np.array_equal(hi, 64 * i + 8 * row + col + 1)


def _copy_kernel():
    """out[i] = in[i] * 3 + 1 for i < n, one thread per element."""
    k = KernelOp.get("scale", ["u64", "u64", "u32"], 64)
    b = PtxBuilder(k.body.block)
    src, dst, n = k.body.block.args
    i = b.add(b.mul(b.sreg("ctaid.x"), 64), b.sreg("tid.x"))
    inside = b.setp("lt", i, n)
    off = b.cvt(b.shl(i, 2), "u64")
    (v,) = (b.ld("global", b.add(src, off), "u32", pred=inside),)
    b.st("global", b.add(dst, off), [b.add(b.mul(v, 3), 1)], pred=inside)
    return k


def test_kernel_interpretation_with_bounds():
    mem = DeviceMemory()
    x = np.arange(100, dtype=np.uint32)
    src, dst = mem.alloc(x), mem.alloc(np.zeros(100, np.uint32))
    run_kernel(_copy_kernel(), (2,), [src, dst, 100], mem)
    assert np.array_equal(mem.read(dst, x), x * 3 + 1)
    with pytest.raises(RungError, match="out-of-bounds global access"):
        run_kernel(_copy_kernel(), (2,), [src, dst, 128], mem)  # a wrong bound is caught on the CPU


@pytest.mark.skipif(PTXAS is None, reason="ptxas is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_printed_kernels_assemble(arch, tmp_path):
    text = module_text(_copy_kernel(), arch)
    assert text.startswith(".version") and f".target {arch}" in text and ".visible .entry scale(" in text
    assemble(text, arch, tmp_path)


def _pack(halves: np.ndarray) -> np.ndarray:
    """[32, 2n] halves (as uint16) -> [32, n] b32 words, the lower index in the low half."""
    h = halves.astype(np.uint32)
    return h[:, 0::2] | (h[:, 1::2] << 16)


@pytest.mark.parametrize("shape, dtype, acc", [("m16n8k16", "f16", "f32"), ("m16n8k16", "bf16", "f32"), ("m16n8k8", "f16", "f32"),
                                               ("m16n8k8", "bf16", "f32"), ("m16n8k16", "f16", "f16"), ("m16n8k8", "f16", "f16")])
def test_mma_variants_compute_a_times_b_plus_c(shape, dtype, acc, tmp_path):
    import ml_dtypes

    from ir.layout import MMA_SHAPES

    mma = MMA_SHAPES[shape]
    dt = np.float16 if dtype == "f16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(3)
    a, b = rng.integers(-3, 4, (16, mma.k)).astype(dt), rng.integers(-3, 4, (8, mma.k)).astype(dt)
    c = rng.integers(-3, 4, (16, 8)).astype(np.float16 if acc == "f16" else np.float32)
    words = lambda m, tv: _pack(m[tv.coords].view(np.uint16))  # noqa: E731
    a_regs, b_regs = words(a, mma.a), words(b, mma.b)
    c_regs = words(c, mma.c) if acc == "f16" else c[mma.c.coords]
    k = KernelOp.get("mma", [], 32)
    bld = PtxBuilder(k.body.block)
    kinds = ["b32"] * (a_regs.shape[1] + b_regs.shape[1]) + (["b32"] * 2 if acc == "f16" else ["f32"] * 4)
    ins = [bld.imm(0, kind) for kind in kinds]
    outs = bld.mma(ins[:a_regs.shape[1]], ins[a_regs.shape[1]:a_regs.shape[1] + b_regs.shape[1]], ins[a_regs.shape[1] + b_regs.shape[1]:], dtype, shape, acc)
    op = outs[0].owner
    op.verify()
    cta = ThreadBlock(32, (0, 0, 0), DeviceMemory(), 0)
    regs = [a_regs[:, i] for i in range(a_regs.shape[1])] + [b_regs[:, i] for i in range(b_regs.shape[1])]
    regs += [c_regs[:, i] for i in range(c_regs.shape[1])]
    d = op.execute(cta, *regs)
    expected = (a.astype(np.float32) @ b.astype(np.float32).T + c.astype(np.float32))[mma.c.coords]
    if acc == "f16":
        got = np.stack([np.stack([w & 0xFFFF, w >> 16], 1) for w in d], 1).reshape(32, 4).astype(np.uint16).view(np.float16)
    else:
        got = np.stack(d, 1)
    assert np.array_equal(got.astype(np.float32), expected)
    if PTXAS:
        assemble(module_text(k, "sm_80"), "sm_80", tmp_path)


def test_wgmma_reads_swizzled_operands_through_their_descriptors(tmp_path):
    """A 64 x 16 A and a 24 x 16 B stored in the 128-byte swizzle, multiplied by one wgmma of a warpgroup."""
    import ml_dtypes

    from dialects.ptx import smem_descriptor
    from dialects.warp import WGMMA_SWIZZLE
    from ir.layout import wgmma_accumulators

    rng = np.random.default_rng(5)
    a, b = rng.integers(-3, 4, (64, 16)).astype(ml_dtypes.bfloat16), rng.integers(-3, 4, (24, 16)).astype(ml_dtypes.bfloat16)
    cta = ThreadBlock(128, (0, 0, 0), DeviceMemory(), 16384)
    for base, m in ((0, a), (8192, b)):  # rows of 128 bytes (K = 64 halves; this step reads the first 16)
        r, c = np.meshgrid(np.arange(m.shape[0]), np.arange(16), indexing="ij")
        offsets = base + WGMMA_SWIZZLE(r * 128 + 2 * c)
        cta.shared.data[(offsets[..., None] + np.arange(2)).ravel()] = np.ascontiguousarray(m).view(np.uint8).ravel()
    k = KernelOp.get("wgmma", [], 128)
    bld = PtxBuilder(k.body.block)
    desc_a, desc_b = bld.imm(smem_descriptor(0, 1024), "u64"), bld.imm(smem_descriptor(8192, 1024), "u64")
    acc = [bld.fimm(0.0) for _ in range(12)]
    op = bld.wgmma([desc_a], desc_b, bld.setp("eq", bld.imm(0), bld.imm(0)), [bld.add(v, v) for v in acc], "bf16")[0].owner
    op.verify()
    c = rng.integers(-3, 4, (64, 24)).astype(np.float32)
    coords = wgmma_accumulators(24).coords
    d = np.stack(op.execute(cta, np.full(128, smem_descriptor(0, 1024), np.uint64), np.full(128, smem_descriptor(8192, 1024), np.uint64),
                            np.ones(128, bool), *c[coords].T), 1)
    assert np.array_equal(d, (a.astype(np.float32) @ b.astype(np.float32).T + c)[coords])
    with pytest.raises(RungError, match="must start on 1024 bytes"):
        op.execute(cta, np.full(128, smem_descriptor(128, 1024), np.uint64), np.full(128, smem_descriptor(8192, 1024), np.uint64),
                   np.ones(128, bool), *c[coords].T)


def test_wgmma_verifies_its_accumulators():
    from xdsl.utils.exceptions import VerifyException

    k = KernelOp.get("wgmma", [], 128)
    bld = PtxBuilder(k.body.block)
    desc, true = bld.imm(0, "u64"), bld.setp("eq", bld.imm(0), bld.imm(0))
    with pytest.raises(VerifyException, match="N/2 f32 accumulators"):
        bld.wgmma([desc], desc, true, [bld.add(bld.fimm(0.0), bld.fimm(0.0)) for _ in range(3)], "f16")[0].owner.verify()
    shared = bld.add(bld.fimm(1.0), bld.fimm(1.0))
    op = bld.wgmma([desc], desc, true, [shared] * 4, "f16")[0].owner
    with pytest.raises(VerifyException, match="updated in place: they can have no other use"):
        op.verify()
    words = [bld.imm(0, "b32")] * 4
    for a, dtype in (([desc, desc], "f16"), (words[:3], "f16"), (words, "s8")):
        with pytest.raises(VerifyException, match="A is a u64 descriptor, or \\(f16, bf16\\) four b32 registers"):
            bld.wgmma(a, desc, true, [bld.add(bld.fimm(0.0), bld.fimm(0.0)) if dtype == "f16" else bld.add(bld.imm(0, "s32"), bld.imm(0, "s32")) for _ in range(4)], dtype)[0].owner.verify()


def test_wgmma_takes_a_from_registers(tmp_path):
    """A 64 x 16 A in the threads' registers (each warp's 16 rows as mma.sync's A fragment) times a
    40 x 16 B in shared memory; the registers stay read until a wait_group retires the wgmma."""
    from dialects.ptx import smem_descriptor
    from dialects.warp import WGMMA_SWIZZLE
    from ir.layout import wgmma_a, wgmma_accumulators

    rng = np.random.default_rng(6)
    a, b = rng.integers(-3, 4, (64, 16)).astype(np.float16), rng.integers(-3, 4, (40, 16)).astype(np.float16)
    cta = ThreadBlock(128, (0, 0, 0), DeviceMemory(), 8192)
    r, c = np.meshgrid(np.arange(40), np.arange(16), indexing="ij")
    offsets = WGMMA_SWIZZLE(r * 128 + 2 * c)
    cta.shared.data[(offsets[..., None] + np.arange(2)).ravel()] = np.ascontiguousarray(b).view(np.uint8).ravel()
    k = KernelOp.get("wgmma_rs", [], 128)
    bld = PtxBuilder(k.body.block)
    words = [bld.lop3(bld.imm(i, "b32"), 0, 0, 0xF0) for i in range(4)]
    acc = [bld.add(bld.fimm(0.0), bld.fimm(0.0)) for _ in range(20)]
    op = bld.wgmma(words, bld.imm(smem_descriptor(0, 1024), "u64"), bld.setp("eq", bld.imm(0), bld.imm(0)), acc, "f16")[0].owner
    op.verify()
    assert "{%r" in op.text(lambda v: "%r0" if v in words else "%x") and op.text(lambda v: "%x").endswith(", 1, 1, 0;")
    halves = a.view(np.uint16)[wgmma_a().coords].astype(np.uint32)  # [thread, value]: value e + 2 * register
    regs = [halves[:, 2 * i] | (halves[:, 2 * i + 1] << 16) for i in range(4)]
    c = rng.integers(-3, 4, (64, 40)).astype(np.float32)
    coords = wgmma_accumulators(40).coords
    d = np.stack(op.execute(cta, *regs, np.full(128, smem_descriptor(0, 1024), np.uint64), np.ones(128, bool), *c[coords].T), 1)
    assert np.array_equal(d, (a.astype(np.float32) @ b.astype(np.float32).T + c)[coords])
    with pytest.raises(RungError, match="a register an in-flight wgmma reads as its A operand is written"):
        cta.check_writes([words[2]])
    cta.commit_wgmma()
    cta.retire_wgmma(0)
    cta.check_writes(words)  # retired: free to write
    if PTXAS:
        bld.wgmma_commit()
        bld.wgmma_wait(0)
        assemble(module_text(k, "sm_90a"), "sm_90a", tmp_path)


@pytest.mark.parametrize("lanes", [1, 2, 16])
def test_butterfly_shuffles_exchange_within_a_warp(lanes):
    """Lane l gets the value of lane l ^ lanes, in every warp of the block; ptxas takes an f32 register."""
    k = KernelOp.get("k", [], 64)
    b = PtxBuilder(k.body.block)
    op = b.shfl_bfly(b.cvt(b.sreg("tid.x"), "f32"), lanes).owner
    cta = ThreadBlock(64, (0, 0, 0), DeviceMemory(), 0)
    values = np.arange(64, dtype=np.float32) * 10
    assert np.array_equal(op.execute(cta, values), values[np.arange(64) ^ lanes])
    assert f"shfl.sync.bfly.b32 %f1, %f0, {lanes}, 0x1f, 0xffffffff;" in module_text(k)


@pytest.mark.skipif(PTXAS is None, reason="ptxas is not installed")
def test_a_shuffle_of_an_f32_register_assembles(tmp_path):
    k = KernelOp.get("k", ["u64"], 32)
    b = PtxBuilder(k.body.block)
    x = b.rsqrt(b.ld("global", k.body.block.args[0], "f32"))
    b.st("global", k.body.block.args[0], [b.shfl_bfly(x, 4)])
    assemble(module_text(k), "sm_80", tmp_path)


@pytest.mark.parametrize("value, kind, bits", [(-1, "u32", 0xFFFFFFFF), (-2, "u64", 2**64 - 2), (0xFFFFFFFF, "s32", 0xFFFFFFFF),
                                               (-1, "s32", 0xFFFFFFFF), (0x3F800000, "f32", 0x3F800000), (1, "pred", 1)])
def test_an_immediate_is_its_twos_complement_bits(value, kind, bits):
    from dialects.ptx import ImmOp

    op = ImmOp.get(value, kind)
    op.verify()
    out = op.execute(ThreadBlock(32, (0, 0, 0), DeviceMemory(), 0))
    assert out.shape == (32,) and int(out.view(f"u{out.dtype.itemsize}")[0] if kind != "pred" else out[0]) == bits


@pytest.mark.parametrize("value, kind", [(2**32, "u32"), (-(2**31) - 1, "s32"), (70000, "b16"), (2, "pred"), (-40000, "b16")])
def test_an_immediate_that_does_not_fit_its_register_is_refused(value, kind):
    from xdsl.utils.exceptions import VerifyException

    from dialects.ptx import ImmOp

    with pytest.raises(VerifyException, match=f"does not fit a {kind} register"):
        ImmOp.get(value, kind).verify()
