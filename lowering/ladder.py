"""Ladder's hardware-aware layout for low-bit integer weights, and the register decoders it enables.

A b-bit element (b in 1, 2, 4, 8) is stored as an unsigned code u = q + offset. Offline, a
32-bit word's 32/b codes are placed so that pair j (elements 2j, 2j+1) sits at bits [b*j, b*j+b)
and [16 + b*j, 16 + b*j + b): one shift and one lop3 then drop both codes into the mantissas
of an f16x2 (or bf16x2) "magic" constant, 2^10 + u (2^7 + u for bf16), and one fma subtracts
magic + offset. That is the whole decoder, generated here from (bits, offset, dtype) for every
integer format instead of written by hand per format.

`mma_b_words` is the weight transform: it permutes K so that the B fragments of
mma.m16n8k16 that a lane needs for consecutive k16 steps sit in one word, so a lane loads one
32-bit word per n8 tile and k-block and decodes it in registers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ir.numerics import FormatError, element_format, pack
from lowering.ptx_builder import PtxBuilder

# dtype -> (16-bit pattern of the magic float 2^p, its value, largest code the mantissa holds)
MAGIC = {"f16": (0x6400, 1024.0, 1 << 10), "bf16": (0x4300, 128.0, 1 << 7)}
OR_AND_LUT = 0xEA  # lop3 truth table of (a & b) | c


@dataclass(frozen=True)
class IntDecode:
    """What a decoder is generated from: element width and the offset stored codes carry."""

    bits: int
    offset: int

    @staticmethod
    def of(name: str) -> "IntDecode":
        """The decoder of an integer format of ir.numerics ('int4', 'uint2', ...)."""
        fmt = element_format(name)
        if not fmt.is_integer or fmt.bits not in (1, 2, 4, 8):
            raise FormatError(f"no register decoder for {name}: integer formats of 1, 2, 4 or 8 bits have one")
        return IntDecode(fmt.bits, -int(fmt.min))

    @property
    def per_word(self) -> int:
        return 32 // self.bits

    def codes(self, values) -> np.ndarray:
        """Stored codes of element values (checked against the format's range)."""
        v = np.asarray(values)
        u = v.astype(np.int64) + self.offset
        if u.size and (u.min() < 0 or u.max() >= 1 << self.bits):
            raise FormatError(f"values outside [{-self.offset}, {(1 << self.bits) - 1 - self.offset}] do not fit {self.bits} bits")
        return u.astype(np.uint8)


def pack_pairs(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint32 words of codes along the last axis, pair j of each word at bits b*j and 16 + b*j."""
    per_word = 32 // bits
    codes = np.asarray(codes, np.uint8)
    if codes.shape[-1] % per_word:
        raise FormatError(f"{codes.shape[-1]} codes do not fill whole words of {per_word}")
    words = codes.reshape(*codes.shape[:-1], -1, per_word // 2, 2)  # [..., word, pair, lo/hi]
    slots = np.concatenate([words[..., 0], words[..., 1]], axis=-1)  # lo halves then hi halves
    return pack(slots, bits, np.uint32).reshape(*codes.shape[:-1], -1)


def emit_decode(b: PtxBuilder, word, d: IntDecode, dtype: str) -> list:
    """Registers holding (q_2j, q_2j+1) as dtype x2 for each pair j of a word packed by pack_pairs."""
    pattern, value, capacity = MAGIC[dtype]
    if 1 << d.bits > capacity:
        raise FormatError(f"{d.bits}-bit codes do not fit the mantissa of {dtype}")
    mask = ((1 << d.bits) - 1) * 0x00010001
    one = {"f16": 0x3C00, "bf16": 0x3F80}[dtype]
    bias = _half_bits(-(value + d.offset), dtype)
    out = []
    for j in range(d.per_word // 2):
        shifted = word if j == 0 else b.shr(word, d.bits * j)
        magic_plus_code = b.lop3(shifted, mask, pattern * 0x00010001, OR_AND_LUT)
        out.append(b.fma2(magic_plus_code, one * 0x00010001, bias * 0x00010001, dtype))
    return out


def _half_bits(x: float, dtype: str) -> int:
    import ml_dtypes

    t = np.float16 if dtype == "f16" else ml_dtypes.bfloat16
    return int(np.array(x, t).view(np.uint16))


def mma_b_words(values, d: IntDecode) -> np.ndarray:
    """The transformed weight: values [N, K] -> uint32 [N, K * bits / 32].

    K is taken in blocks of 16 * steps (steps = 32 / bits / 4 k16 steps per word); in each block
    word t (t = lane % 4) holds, for step s, the elements 16s + 2t, +1, +8, +9 of the row: the
    two B registers of mma.m16n8k16 that lane needs, for every step of the block."""
    v = np.asarray(values)
    n, k = v.shape
    steps = d.per_word // 4
    block = 16 * steps
    if k % block:
        raise FormatError(f"K = {k} must be a multiple of {block} for {d.bits}-bit weights in mma order")
    t = np.arange(4)[:, None, None]
    s = np.arange(steps)[None, :, None]
    within = np.array([0, 1, 8, 9])[None, None, :]
    order = (16 * s + 2 * t + within).reshape(4, -1)  # [word t, its elements in order]
    blocks = v.reshape(n, k // block, block)[:, :, order]  # [n, block, t, elements]
    return pack_pairs(d.codes(blocks.reshape(n, -1)), d.bits)
