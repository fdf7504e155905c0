"""The ptx dialect: instruction semantics against the PTX ISA, printing, ptxas."""

import shutil
import subprocess

import numpy as np
import pytest

from lowering.ptx_builder import PtxBuilder
from backend.ptx_text import module_text
from dialects.ptx import KernelOp
from ir.interpreter import DeviceMemory, ThreadBlock, run_kernel
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
