"""The register decoders generated for Ladder's weight layout, on the lane simulator and ptxas."""

import re
import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.ptx_text import module_text
from dialects.ptx import KernelOp
from dialects.ptx import run_kernel
from ir.simulator import DeviceMemory
from ir.layout import MMA_SHAPES
from ir.numerics import FormatError
from ir.packing import Decoder, IntDecode, decoder, half_bits, mma_b_words
from lowering.ladder import emit_decode
from lowering.ptx_builder import PtxBuilder
from machine_code import sass_tools_missing, sass

from ir.format_text import load_format_file

# the stored widths, and formats stored in the next one (3-bit integers in nibbles, FP6 in bytes, and the text-defined
# formats of examples/formats/custom.fmt: an FP6 of another bias, a 3-bit table, a 5-bit integer)
CUSTOM = [d.name for d in load_format_file("examples/formats/custom.fmt") if d.name in ("e3m2b2", "t3", "int5")]
FORMATS = ["int1", "uint1", "int2", "uint2", "int4", "uint4", "int8", "uint8", "e2m1", "e4m3", "e5m2", "nf4", "int3", "uint3", "e3m2",
           "e2m3", *CUSTOM]


def decode_kernel(d: Decoder, dtype: str, threads: int = 64, rescaled: bool = True) -> KernelOp:
    """Thread i decodes word i and stores its pairs to out[i * pairs ...]."""
    k = KernelOp.get("decode", ["u64", "u64"], threads)
    b = PtxBuilder(k.body.block)
    src, dst = k.body.block.args
    tid = b.sreg("tid.x")
    word = b.ld("global", b.add(src, b.cvt(b.shl(tid, 2), "u64")), "b32")
    regs = emit_decode(d, b, word, dtype, rescaled)
    out = b.add(dst, b.cvt(b.mul(tid, 4 * len(regs)), "u64"))
    for j, r in enumerate(regs):
        b.st("global", out, [r], offset=4 * j)
    return k


def run_decoder(d: Decoder, dtype: str, words: np.ndarray, rescaled: bool = True) -> np.ndarray:
    """Every word decoded by its own thread; the values in order."""
    words = words.reshape(-1).astype(np.uint32)
    mem = DeviceMemory()
    src = mem.alloc(words)
    t = np.float16 if dtype == "f16" else ml_dtypes.bfloat16
    dst = mem.alloc(np.zeros(words.size * d.per_word, t))
    run_kernel(decode_kernel(d, dtype, words.size, rescaled), (1,), [src, dst], mem)
    return mem.read(dst, np.zeros(words.size * d.per_word, t)).astype(np.float64)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("name", FORMATS)
def test_generated_decoder_recovers_every_value(name, dtype):
    """Every code of the format, decoded in registers, is its value rounded to dtype (exact but for nf4)."""
    from ir.numerics import element_format

    d = decoder(name)
    if dtype == "bf16" and isinstance(d, IntDecode) and d.own_bits == 8:
        with pytest.raises(FormatError, match="do not fit the mantissa of bf16"):
            decode_kernel(d, dtype)
        return
    fmt = element_format(name)
    finite = np.flatnonzero(np.isfinite(fmt.values))
    codes = np.random.default_rng(d.bits).choice(finite, 64 * d.per_word)
    codes[: finite.size] = finite  # every finite code at least once
    values = fmt.values[codes]
    words = d.pack(d.codes(values))
    want = half_bits(values, dtype)
    got = half_bits(run_decoder(d, dtype, words), dtype)
    assert np.array_equal(got, want), (values[got != want][:4], run_decoder(d, dtype, words)[got != want][:4])
    # left unrescaled (kernels that rescale f32 partial sums instead), each value over the rescale, exactly
    unrescaled = run_decoder(d, dtype, words, rescaled=False)
    assert np.array_equal(unrescaled * d.rescale(dtype), half_bits(values, dtype).view(np.float16 if dtype == "f16" else ml_dtypes.bfloat16))


@given(st.sampled_from(["int1", "uint2", "int4", "int8", "e2m1", "e4m3", "nf4", *CUSTOM]), st.integers(1, 4), st.integers(0, 2**31))
def test_mma_order_gives_each_lane_its_b_fragments(name, blocks, seed):
    from ir.numerics import element_format

    d = decoder(name)
    steps = d.per_word // 4
    rng = np.random.default_rng(seed)
    table = element_format(name).values
    w = rng.choice(table[np.isfinite(table)], (8, 16 * steps * blocks))
    words = mma_b_words(w, d)
    per_word = run_decoder(d, "f16", words).reshape(8, blocks, 4, steps, 4)  # [n, block, t, step, value]
    n_of, k_of = MMA_SHAPES["m16n8k16"].b.coords  # [lane, value] -> (n, k) in one n8 x k16 tile
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for blk in range(blocks):
            for s in range(steps):
                want = w[n_of[lane], 16 * steps * blk + 16 * s + k_of[lane]]
                assert np.array_equal(half_bits(per_word[g, blk, t, s], "f16"), half_bits(want, "f16"))


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("name", ["int4", "e2m1", "e4m3", "e5m2", "nf4", *CUSTOM])
def test_decoders_assemble(name, dtype, tmp_path):
    src = tmp_path / "d.ptx"
    src.write_text(module_text(decode_kernel(decoder(name), dtype), "sm_80"))
    r = subprocess.run(["ptxas", "-arch=sm_80", str(src), "-o", str(tmp_path / "d.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(sass_tools_missing, reason="ptxas or nvdisasm is not installed")
@pytest.mark.parametrize("name, dtype", [(n, t) for n in ("int1", "uint2", "int4", "uint8") for t in ("f16", "bf16") if (n, t) != ("uint8", "bf16")])
def test_integer_decoders_take_their_constants_as_immediates(name, dtype, tmp_path):
    """Every pair's own constants (its magic and field in the lop3, magic + offset in the fma) are
    immediates in the machine code: all the decoder's fmas multiply by one register (1.0), so a main
    loop short of registers has no per-pair constants to rebuild (with a unit 2^-(b*i) per place, the
    1-bit small-M loop rebuilt ten of them each k-tile)."""
    code = sass(module_text(decode_kernel(decoder(name), dtype), "sm_90a"), "sm_90a", tmp_path)
    fmas = [re.match(r"HFMA2(\.BF16_V2)? R\d+, R\d+\S*, (R\d+)\S*, -?[\d.e+-]+, ", ins) for ins in code if re.match(r"HFMA2(\.BF16_V2)? ", ins)]
    assert len(fmas) == decoder(name).per_word // 2 and all(fmas), code
    assert len({f.group(2) for f in fmas}) == 1, [f.group(0) for f in fmas]
    lop3s = [ins for ins in code if re.match(r"LOP3\.LUT R\d+, R\d+\S*, 0x[0-9a-f]+, R\d+\S*, 0xc4", ins)]
    assert len(lop3s) == len(fmas), code


@pytest.mark.parametrize("name, f16_ops, bf16_ops", [("e2m1", 11, 15), ("e4m3", 5, 7), ("e5m2", 3, 7)])
def test_minifloat_codes_are_placed_for_one_shift_decoding(name, f16_ops, bf16_ops):
    """The pairs' magnitude and sign bits tile a half word, and a word decodes in that many shifts,
    ands and lop3s (e2m1 in pair order took 15 in f16: two shifts, an and and a lop3 a pair)."""
    d = decoder(name)
    assert sorted(b for mag, sign in d.placement for b in (*range(mag, mag + d.bits - 1), sign)) == list(range(16))
    for dtype, ops in (("f16", f16_ops), ("bf16", bf16_ops)):
        k = KernelOp.get("decode", ["u64"], 32)
        b = PtxBuilder(k.body.block)
        word = b.ld("global", k.body.block.args[0], "b32")
        emit_decode(d, b, word, dtype, rescaled=False)
        assert sum(op.name in ("ptx.shl", "ptx.shr", "ptx.and", "ptx.lop3") for op in k.body.block.ops) == ops, dtype
