"""The register decoders of Ladder's weight layout (ir.packing), generated from each format's bits.

`emit_decode(d, b, word, dtype)` writes the ptx ops that turn one 32-bit word of codes into its
pairs of values as f16x2 or bf16x2 registers, by the kind of the format's storage:

- integers (`IntDecode`): one lop3 drops both codes of a pair, where they lie, into the
  mantissas of a "magic" f16x2 whose mantissa bit there is worth 1 (2^10 + u for codes at bit 0,
  2^9 + u at bit 1, ...; 2^7 + u at bit 0 in bf16), one fma subtracts magic + offset; a shift is
  needed only once per window of pairs whose codes fit the mantissa (2 pairs of int4, 5 of
  int2, 10 of int1 for f16);
- minifloats (`FloatDecode`): the exponent and mantissa bits are shifted under the target's
  exponent field, the sign to the top of each half, and one exact multiply by 2^(target bias -
  format bias) corrects the exponent (or is left to a kernel that scales f32 partial sums);
- any other 4-bit table (`LutDecode`, nf4): the 16 values' low and high bytes live in eight
  registers; prmt picks four values' bytes at once by their codes; or each byte of codes (a pair)
  is looked up in a table of all 256 pairs that the kernel keeps in shared memory (`looked_up`).
"""

from __future__ import annotations

import numpy as np

from ir.numerics import FormatError
from ir.packing import TARGET_BITS, Decoder, FloatDecode, IntDecode, LutDecode, magnitude_bit, half_bits
from lowering.ptx_builder import PtxBuilder

OR_AND_LUT = 0xEA  # lop3 truth table of (a & b) | c
MANTISSA_AND_LUT = 0xC4  # lop3 truth table of c ? a & b : b
PAIR = 0x00010001  # a 16-bit pattern in both halves of a word


def emit_decode(d: Decoder, b: PtxBuilder, word, dtype: str, rescaled: bool = True) -> list:
    """Registers holding each pair of a word's values as dtype x2, in order; with `rescaled`
    False, the values divided by `d.rescale(dtype)` (a decoder that would multiply by it last)."""
    return _EMITTERS[type(d)](d, b, word, dtype, rescaled)


def _emit_int(d: IntDecode, b: PtxBuilder, word, dtype: str, rescaled: bool) -> list:
    """One shift per window of pairs: a code at bits b*i of a half already lies inside the
    mantissa, so lop3 takes it without shifting, under a magic float whose mantissa bit b*i is
    worth 1 (2^(m - b*i) for m mantissa bits), and one fma (times 1) subtracts that magic and the
    offset, exactly. A pair's own constants are immediates, the operands every pair shares (the
    mantissa's bits, 1) one register each: a loop short of registers has no constants to rebuild."""
    _, man_bits, bias = TARGET_BITS[dtype]
    if d.own_bits > man_bits:
        raise FormatError(f"{d.own_bits}-bit codes do not fit the mantissa of {dtype}")
    window = max(1, man_bits // d.bits)  # pairs whose codes fit the mantissa unshifted
    mantissa = ((1 << man_bits) - 1) * PAIR
    one = int(half_bits(1.0, dtype)) * PAIR
    out = []
    for j in range(d.per_word // 2):
        i = j % window  # place within the window
        if i == 0:
            shifted = word if j == 0 else b.shr(word, d.bits * j)
        place = d.bits * i
        magic = (man_bits - place + bias) << man_bits
        field = ((1 << d.own_bits) - 1) << place
        magic_plus_code = b.lop3(shifted, (magic | field) * PAIR, mantissa, MANTISSA_AND_LUT)
        minus = int(half_bits(-(2.0 ** (man_bits - place) + d.offset), dtype))
        out.append(b.fma2(magic_plus_code, one, minus * PAIR, dtype))
    return out


def _emit_float(d: FloatDecode, b: PtxBuilder, word, dtype: str, rescaled: bool) -> list:
    """Without `rescaled`, the placed bits as they are: the values times 2^(format bias - target
    bias), exact (the target's subnormals hold the format's)."""
    at = magnitude_bit(d.bits, d.exp_bits, TARGET_BITS[dtype][0])
    magnitude = (((1 << (d.bits - 1)) - 1) << at) * PAIR
    sign = 0x8000 * PAIR
    rescale = int(half_bits(d.rescale(dtype), dtype)) * PAIR if rescaled and d.rescale(dtype) != 1 else None
    shifted = {0: word}

    def shift(n: int):  # the word n bits up (down if negative); each half's element stays in its half where masked
        if n not in shifted:
            shifted[n] = b.shl(word, n) if n > 0 else b.shr(word, -n)
        return shifted[n]

    out = []
    for mag, sign_bit in d.placement:
        up, sign_up = at - mag, 15 - sign_bit
        if up == sign_up:
            placed = b.and_(shift(up), magnitude | sign)
        else:
            placed = b.lop3(shift(up), magnitude, b.and_(shift(sign_up), sign), OR_AND_LUT)
        out.append(b.fma2(placed, rescale, sign, dtype) if rescale else placed)  # x * 2^e + (-0: the sign bits) is exact
    return out


def _emit_table(d: LutDecode, b: PtxBuilder, word, dtype: str, rescaled: bool) -> list:
    table = half_bits(d.table, dtype).astype(np.uint32)
    words = [[int(sum(int(byte_of(table[4 * i + j])) << (8 * j) for j in range(4))) for i in range(4)]
             for byte_of in (lambda v: v & 0xFF, lambda v: v >> 8)]
    low, high = ([b.imm(v, "b32") for v in ws] for ws in words)
    out = []
    for half in range(2):  # four codes per 16 bits: prmt reads its selectors from the low 16
        x = word if half == 0 else b.shr(word, 16)
        within = b.and_(x, 0x7777)  # which of eight entries (selector bit 3 off: no sign replication)
        pick = b.lop3(b.shr(x, 1), 0x4444, 0x3210, OR_AND_LUT)  # byte i of the first eight entries, or of the last
        lo, hi = (b.prmt(b.prmt(t[0], t[1], within), b.prmt(t[2], t[3], within), pick) for t in (low, high))
        out += [b.prmt(lo, hi, 0x5140), b.prmt(lo, hi, 0x7362)]
    return out


_EMITTERS = {IntDecode: _emit_int, FloatDecode: _emit_float, LutDecode: _emit_table}


def looked_up(b: PtxBuilder, word, lookup) -> list:
    """A table format's pairs of a word from a table of every byte's pair (`emit_decode` of the
    byte, in dtype x2): `lookup(b, code)` reads the entry of a register holding byte j of the
    word, pair j."""
    return [lookup(b, b.prmt(word, 0, 0x4440 | j, "u32")) for j in range(4)]  # byte j, then three zero bytes
