"""Ladder's hardware-aware layout for low-precision weights, and the register decoders it enables.

A weight of b-bit codes (b = 1, 2, 4 or 8) is transformed once, offline, so that the kernel
loads it in 32-bit words that hold exactly the mma.m16n8k16 B fragments a lane needs
(`mma_b_words`), with each word's codes placed where a few bit operations turn them into f16x2
or bf16x2 pairs in registers. The decoder is generated from the format's bit-level description,
one of three kinds:

- integers (`IntDecode`): the stored code u = q + offset of pair j sits at bits b*j and
  16 + b*j; one lop3 drops both codes, where they lie, into the mantissas of a "magic" f16x2
  whose mantissa bit there is worth 1 (2^10 + u for codes at bit 0, 2^9 + u at bit 1, ...; 2^7 +
  u at bit 0 in bf16), one fma subtracts magic + offset; a shift is needed only once per window
  of pairs whose codes fit the mantissa (2 pairs of int4, 5 of int2, 10 of int1 for f16);
- minifloats (`FloatDecode`, e2m1, e4m3, e5m2): the exponent and mantissa bits are shifted
  under the target's exponent field, the sign to the top of each half, and one exact multiply
  by 2^(target bias - format bias) corrects the exponent (or is left to a kernel that scales
  f32 partial sums: `rescale`); the codes are placed in the word so that one shift and one and
  decode most pairs (`float_placement`);
- any other 4-bit table (`LutDecode`, nf4): the 16 values' low and high bytes live in eight
  registers; prmt picks four values' bytes at once by their codes; or each byte of codes (a pair)
  is looked up in a table of all 256 pairs that the kernel keeps in shared memory.

`pack_weight` is the whole offline transform of a quantized weight (values, scales, zeros of
ir.numerics.QuantFormat) into what the kernel reads: codes in mma order, and scales and zero
terms laid out group-major [K / group, N] (N padded to 16) so that a k-tile's scales for a
block of columns are one contiguous row. Every zero-point mode becomes w = q * s + z.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import ml_dtypes
import numpy as np

from ir.numerics import FORMATS, FormatError, QuantFormat, element_format, pack, unpack
from lowering.ptx_builder import PtxBuilder

# dtype -> (exponent bits, mantissa bits, bias)
TARGET_BITS = {"f16": (5, 10, 15), "bf16": (8, 7, 127)}
OR_AND_LUT = 0xEA  # lop3 truth table of (a & b) | c
MANTISSA_AND_LUT = 0xC4  # lop3 truth table of c ? a & b : b
PAIR = 0x00010001  # a 16-bit pattern in both halves of a word


def half_bits(x, dtype: str) -> np.ndarray:
    """The 16-bit patterns of `x` rounded to f16 or bf16."""
    return np.asarray(np.asarray(x, np.float64).astype(np.float16 if dtype == "f16" else ml_dtypes.bfloat16)).view(np.uint16)


def _word_elements(codes: np.ndarray, per_word: int) -> np.ndarray:
    """Codes along the last axis as [..., word, pair, lo/hi]: elements 2j and 2j + 1 of a word form pair j."""
    codes = np.asarray(codes, np.uint8)
    if codes.shape[-1] % per_word:
        raise FormatError(f"{codes.shape[-1]} codes do not fill whole words of {per_word}")
    return codes.reshape(*codes.shape[:-1], -1, per_word // 2, 2)


def pack_pairs(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint32 words of codes along the last axis, pair j of each word at bits b*j and 16 + b*j."""
    words = _word_elements(codes, 32 // bits)
    slots = np.concatenate([words[..., 0], words[..., 1]], axis=-1)  # lo halves then hi halves
    return pack(slots, bits, np.uint32).reshape(*np.shape(codes)[:-1], -1)


class Decoder:
    """How a format's codes are stored in 32-bit words and decoded in registers."""

    name: str
    bits: int

    @property
    def per_word(self) -> int:
        return 32 // self.bits

    def codes(self, values) -> np.ndarray:
        """Stored codes (uint8) of element values, which must be exactly representable."""
        fmt = element_format(self.name)
        v = np.asarray(values, np.float64)
        c = fmt.encode(v)
        if v.size and not np.array_equal(fmt.decode(c), v):
            bad = v[fmt.decode(c) != v].flat[0]
            raise FormatError(f"{bad} is not a value of {self.name}")
        return c

    def values(self, codes) -> np.ndarray:
        """Element values (float64) of stored codes: the inverse of `codes`."""
        return element_format(self.name).decode(codes)

    def pack(self, codes: np.ndarray) -> np.ndarray:
        """Words of codes along the last axis; elements 2j and 2j + 1 of a word form pair j."""
        return pack_pairs(codes, self.bits)

    def unpack(self, words: np.ndarray) -> np.ndarray:
        """The codes `pack` stored, in order."""
        slots = unpack(np.asarray(words, np.uint32), self.bits)
        slots = slots.reshape(*slots.shape[:-1], -1, 2, self.per_word // 2)  # [..., word, lo/hi, pair]
        return np.swapaxes(slots, -1, -2).reshape(*slots.shape[:-3], -1)

    def emit(self, b: PtxBuilder, word, dtype: str, rescaled: bool = True) -> list:
        """Registers holding each pair of a word's values as dtype x2, in order; with `rescaled`
        False, the values divided by `rescale(dtype)` (a decoder that would multiply by it last)."""
        raise NotImplementedError

    def rescale(self, dtype: str) -> float:
        """The exact power of two the decoder's last step multiplies by (1: none)."""
        return 1.0

    def partials_rescale(self, dtype: str) -> float:
        """The rescale a kernel scaling f32 partial sums (GemmConfig.scale_partials) takes over from
        the decoder: all of it in f16; none in bf16, where the values as placed (2^-126 of a
        minifloat's) would make f32 products subnormal."""
        return self.rescale(dtype) if dtype == "f16" else 1.0


@dataclass(frozen=True)
class IntDecode(Decoder):
    """Integers: code u = q + offset, decoded through a magic float."""

    name: str
    bits: int
    offset: int

    def codes(self, values) -> np.ndarray:
        v = np.asarray(values)
        u = v.astype(np.int64) + self.offset
        if u.size and (u.min() < 0 or u.max() >= 1 << self.bits or not np.array_equal(u - self.offset, v)):
            raise FormatError(f"values outside [{-self.offset}, {(1 << self.bits) - 1 - self.offset}] do not fit {self.bits} bits")
        return u.astype(np.uint8)

    def values(self, codes) -> np.ndarray:
        return np.asarray(codes, np.float64) - self.offset

    def emit(self, b: PtxBuilder, word, dtype: str, rescaled: bool = True) -> list:
        """One shift per window of pairs: a code at bits b*i of a half already lies inside the
        mantissa, so lop3 takes it without shifting, under a magic float whose mantissa bit b*i is
        worth 1 (2^(m - b*i) for m mantissa bits), and one fma (times 1) subtracts that magic and the
        offset, exactly. A pair's own constants are immediates, the operands every pair shares (the
        mantissa's bits, 1) one register each: a loop short of registers has no constants to rebuild."""
        _, man_bits, bias = TARGET_BITS[dtype]
        if self.bits > man_bits:
            raise FormatError(f"{self.bits}-bit codes do not fit the mantissa of {dtype}")
        window = man_bits // self.bits  # pairs whose codes fit the mantissa unshifted
        mantissa = ((1 << man_bits) - 1) * PAIR
        one = int(half_bits(1.0, dtype)) * PAIR
        out = []
        for j in range(self.per_word // 2):
            i = j % window  # place within the window
            if i == 0:
                shifted = word if j == 0 else b.shr(word, self.bits * j)
            place = self.bits * i
            magic = (man_bits - place + bias) << man_bits
            field = ((1 << self.bits) - 1) << place
            magic_plus_code = b.lop3(shifted, (magic | field) * PAIR, mantissa, MANTISSA_AND_LUT)
            minus = int(half_bits(-(2.0 ** (man_bits - place) + self.offset), dtype))
            out.append(b.fma2(magic_plus_code, one, minus * PAIR, dtype))
        return out


@dataclass(frozen=True)
class FloatDecode(Decoder):
    """Sign-magnitude minifloats: bits placed under the target's exponent, then one exact rescale.

    The codes are not stored in pair order but where they decode cheaply (`placement`): each
    pair's magnitude (exponent and mantissa bits) and sign bit in the low half of the word, the
    high half's element 16 bits up. A pair whose sign lies as far above its magnitude as in
    f16 decodes with one shift and one and; the others shift magnitude and sign apart."""

    name: str
    bits: int
    exp_bits: int
    man_bits: int
    bias: int

    def rescale(self, dtype: str) -> float:
        return 2.0 ** (TARGET_BITS[dtype][2] - self.bias)

    @property
    def placement(self) -> tuple:
        """(magnitude's lowest bit, sign bit) of each pair's low element."""
        return float_placement(self.bits, self.exp_bits)

    def pack(self, codes: np.ndarray) -> np.ndarray:
        elems = _word_elements(codes, self.per_word).astype(np.uint32)
        field = (1 << (self.bits - 1)) - 1
        words = np.zeros(elems.shape[:-2], np.uint32)
        for j, (mag, sign) in enumerate(self.placement):
            for half in range(2):
                x = elems[..., j, half]
                words |= ((x & field) << (mag + 16 * half)) | ((x >> (self.bits - 1)) << (sign + 16 * half))
        return words.reshape(*np.shape(codes)[:-1], -1)

    def unpack(self, words: np.ndarray) -> np.ndarray:
        w = np.asarray(words, np.uint32)
        field = (1 << (self.bits - 1)) - 1
        elems = np.stack([np.stack([((w >> (mag + 16 * half)) & field) | (((w >> (sign + 16 * half)) & 1) << (self.bits - 1))
                                    for half in range(2)], -1) for mag, sign in self.placement], -2)
        return elems.astype(np.uint8).reshape(*w.shape[:-1], -1)

    def emit(self, b: PtxBuilder, word, dtype: str, rescaled: bool = True) -> list:
        """Without `rescaled`, the placed bits as they are: the values times 2^(format bias - target
        bias), exact (the target's subnormals hold the format's)."""
        at = _magnitude_bit(self.bits, self.exp_bits, TARGET_BITS[dtype][0])
        magnitude = (((1 << (self.bits - 1)) - 1) << at) * PAIR
        sign = 0x8000 * PAIR
        rescale = int(half_bits(self.rescale(dtype), dtype)) * PAIR if rescaled and self.rescale(dtype) != 1 else None
        shifted = {0: word}

        def shift(n: int):  # the word n bits up (down if negative); each half's element stays in its half where masked
            if n not in shifted:
                shifted[n] = b.shl(word, n) if n > 0 else b.shr(word, -n)
            return shifted[n]

        out = []
        for mag, sign_bit in self.placement:
            up, sign_up = at - mag, 15 - sign_bit
            if up == sign_up:
                placed = b.and_(shift(up), magnitude | sign)
            else:
                placed = b.lop3(shift(up), magnitude, b.and_(shift(sign_up), sign), OR_AND_LUT)
            out.append(b.fma2(placed, rescale, sign, dtype) if rescale else placed)  # x * 2^e + (-0: the sign bits) is exact
        return out


def _magnitude_bit(bits: int, exp_bits: int, target_exp_bits: int) -> int:
    """Where a minifloat's magnitude (exponent, then mantissa bits) starts in a 16-bit float with
    `target_exp_bits` of exponent: its exponent's top bit under the target exponent's lowest."""
    return 16 - bits - (target_exp_bits - exp_bits)


@lru_cache(maxsize=None)
def float_placement(bits: int, exp_bits: int) -> tuple:
    """Where a word keeps each pair of a minifloat's codes (FloatDecode.placement), chosen for f16:
    first the pair in place (its magnitude and sign where f16 has them: decoded by one and), then
    pairs placed lower with the same distance between magnitude and sign (one left shift, one
    and), while they fit; the rest take the lowest free run of bits for the magnitude and the
    lowest free bit for the sign (two shifts, an and, a lop3). In f16, e2m1 takes 11 operations a
    word instead of 15 for codes in pair order, e4m3 5 instead of 7."""
    at, span = _magnitude_bit(bits, exp_bits, TARGET_BITS["f16"][0]), bits - 1
    free, out = set(range(16)), []

    def take(mag: int, sign: int) -> None:
        free.difference_update(range(mag, mag + span), {sign})
        out.append((mag, sign))

    for mag in [at, *range(at)]:
        if len(out) < 16 // bits and {*range(mag, mag + span), mag + 15 - at} <= free:
            take(mag, mag + 15 - at)
    while len(out) < 16 // bits:
        mag = min(m for m in free if set(range(m, m + span)) <= free)
        take(mag, min(free - set(range(mag, mag + span))))
    return tuple(out)


@dataclass(frozen=True)
class LutDecode(Decoder):
    """Any 4-bit format by its value table: the values' low and high bytes in eight registers,
    four codes at a time looked up with prmt (codes in plain nibble order)."""

    name: str
    bits: int = 4

    def pack(self, codes: np.ndarray) -> np.ndarray:
        return pack(np.asarray(codes, np.uint8), 4, np.uint32)

    def unpack(self, words: np.ndarray) -> np.ndarray:
        return unpack(np.asarray(words, np.uint32), 4)

    def emit(self, b: PtxBuilder, word, dtype: str, rescaled: bool = True) -> list:
        table = half_bits(element_format(self.name).values, dtype).astype(np.uint32)
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

    def looked_up(self, b: PtxBuilder, word, lookup) -> list:
        """The word's pairs from a table of every byte's pair (`emit` of the byte, in dtype x2):
        `lookup(b, code)` reads the entry of a register holding byte j of the word, pair j."""
        return [lookup(b, b.prmt(word, 0, 0x4440 | j, "u32")) for j in range(4)]  # byte j, then three zero bytes


def decoder(name: str) -> Decoder:
    """The register decoder of a format of ir.numerics ('int4', 'e2m1', 'nf4', ...)."""
    fmt = element_format(name)
    if fmt.bits not in (1, 2, 4, 8) or name == "e8m0":
        raise FormatError(f"no register decoder for {name}: formats of 1, 2, 4 or 8 bits have one")
    if fmt.is_integer:
        return IntDecode(name, fmt.bits, -int(fmt.min))
    if fmt.float_bits is not None:
        return FloatDecode(name, fmt.bits, *fmt.float_bits)
    if fmt.bits == 4:
        return LutDecode(name)
    raise FormatError(f"no register decoder for {name}")


def block_elems(bits: int) -> int:
    """K elements one lane's word covers: 16 per k16 step, 32 / bits / 4 steps per word."""
    return 16 * (32 // bits) // 4


def mma_order(k: int, bits: int) -> np.ndarray:
    """The permutation of a row's K elements into the order its words store them.

    K is taken in blocks of 16 * steps (steps = 32 / bits / 4 k16 steps per word); in each block
    word t (t = lane % 4) holds, for step s, the elements 16s + 2t, +1, +8, +9 of the row: the
    two B registers of mma.m16n8k16 that lane needs, for every step of the block."""
    steps = 32 // bits // 4
    block = block_elems(bits)
    if k % block:
        raise FormatError(f"K = {k} must be a multiple of {block} for {bits}-bit weights in mma order")
    t = np.arange(4)[:, None, None]
    s = np.arange(steps)[None, :, None]
    within = np.array([0, 1, 8, 9])[None, None, :]
    order = (16 * s + 2 * t + within).reshape(-1)  # one block: word t's elements in order, t = 0..3
    return (np.arange(0, k, block)[:, None] + order).reshape(-1)


def mma_b_words(values, d: Decoder) -> np.ndarray:
    """The transformed weight: values [N, K] -> uint32 [N, K * bits / 32] (codes in `mma_order`)."""
    v = np.asarray(values)
    return d.pack(d.codes(v[:, mma_order(v.shape[1], d.bits)]))


CODE_TILE_ROWS = 16  # packed codes are stored in tiles of 16 rows (code_tiles)


def code_chunk_bytes(bits: int) -> int:
    """Bytes of each row a code tile keeps together: a small-M k-tile's (16 * bits, at most 64)."""
    return min(16 * bits, 64)


def code_tiles(words: np.ndarray, chunk: int) -> np.ndarray:
    """The stored image of codes [N, W] (words in mma order along each row): tiles of 16 rows one
    after another, and in each, chunk by chunk of K, the rows' `chunk` bytes one row after
    another. A k-tile of 16 rows is then one contiguous run of memory rather than 16 runs a row
    apart (DRAM streams it faster: int4 at M = 1 on 28672 x 8192, 48.2 -> 44.9 us on an H100;
    16-byte chunks instead ran 70 us). Codes whose N is not a multiple of 16, or whose rows are
    not whole chunks, stay as they are. Same shape; `code_rows` undoes it."""
    words = np.asarray(words, np.uint32)
    return _retile(words, chunk, True) if _in_tiles(words.shape, chunk) else words.copy()


def code_rows(image: np.ndarray, chunk: int, rows: range | None = None) -> np.ndarray:
    """Codes [N, W] row by row from their stored image (`code_tiles`); with `rows`, only those
    (whole tiles of them: from a tile's first row to another's, or to N)."""
    image = np.asarray(image, np.uint32)
    tiled = _in_tiles(image.shape, chunk)
    if rows is not None:
        if tiled and (rows.start % CODE_TILE_ROWS or (rows.stop % CODE_TILE_ROWS and rows.stop < image.shape[0])):
            raise ValueError(f"rows {rows.start}..{rows.stop} are not whole tiles of {CODE_TILE_ROWS}")
        image = image[rows.start:rows.stop]
    return _retile(image, chunk, False) if tiled else image.copy()


def _in_tiles(shape: tuple, chunk: int) -> bool:
    """Whether codes of this shape are stored in tiles: N a multiple of 16 and rows whole chunks."""
    n, w = shape
    return n % CODE_TILE_ROWS == 0 and w % (chunk // 4) == 0


def _retile(x: np.ndarray, chunk: int, to_tiles: bool) -> np.ndarray:
    n, w = x.shape
    per, t = chunk // 4, CODE_TILE_ROWS  # words a chunk, rows a tile
    if to_tiles:  # [tile, row, chunk, word] -> [tile, chunk, row, word]
        return np.ascontiguousarray(x.reshape(n // t, t, w // per, per).transpose(0, 2, 1, 3)).reshape(n, w)
    return np.ascontiguousarray(x.reshape(n // t, w // per, t, per).transpose(0, 2, 1, 3)).reshape(n, w)


N_ALIGN = 16  # scale rows are padded to a multiple of 16 columns: every row starts 16-byte aligned


@dataclass
class PackedWeight:
    """What the kernel reads: `codes` uint32 [N, K * bits / 32] in mma order, stored in 16-row tiles
    (`code_tiles`); `scales` [G, N16]
    as 16-bit patterns of the activation dtype (uint16) or e8m0 codes (uint8); `zeros` [G, N16]
    (uint16 patterns of z in w = q * s + z) or None. G = K / group (1 per channel)."""

    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None


def pack_weight(values, scales, zeros, fmt: QuantFormat, dtype: str) -> PackedWeight:
    """The offline Ladder transform of a quantized weight (QuantFormat's values, scales, zeros)
    for a kernel with `dtype` (f16 or bf16) activations."""
    values = np.asarray(values, np.float64)
    n, k = values.shape
    fmt.check_params(values.shape, np.shape(scales), None if zeros is None else np.shape(zeros))
    s = np.asarray(scales, np.float64)
    n16 = -(-n // N_ALIGN) * N_ALIGN

    def group_major(x, out_dtype):
        out = np.zeros((x.shape[1], n16), out_dtype)
        out[:, :n] = x.T
        return out

    if fmt.scale == "e8m0":
        packed_scales = group_major(FORMATS["e8m0"].encode(s), np.uint8)
    else:
        if not np.isfinite(s.astype(np.float16 if dtype == "f16" else ml_dtypes.bfloat16)).all():
            raise FormatError(f"scales outside the range of {dtype}")
        packed_scales = group_major(half_bits(s, dtype), np.uint16)
    z = None
    if fmt.zero != "none":
        zf = np.asarray(zeros, np.float64)
        z = -zf if fmt.zero == "rescale" else -zf * s  # (q - z) s = q s - z s
        z = group_major(half_bits(z, dtype), np.uint16)
    d = decoder(fmt.element)
    return PackedWeight(code_tiles(mma_b_words(values, d), code_chunk_bytes(d.bits)), packed_scales, z)


def unpack_weight(packed: PackedWeight, element: str, group: int, mx: bool, dtype: str, k: int, rounded: bool = True) -> np.ndarray:
    """The [N, K] weight a kernel computes with from `packed`, as float32: each value decoded to
    dtype, times its scale plus its zero term, rounded once to dtype (the decoders' fma); with
    `rounded` False, q * s as it is (kernels that scale partial sums, GemmConfig.scale_partials;
    MX scales then stay exact powers of two)."""
    q = decode_values(code_rows(packed.codes, code_chunk_bytes(decoder(element).bits)), element, dtype, k)
    return apply_scales(q, packed.scales, packed.zeros, group, mx, dtype, rounded)


def apply_scales(q: np.ndarray, scales, zeros, group: int, mx: bool, dtype: str, rounded: bool = True) -> np.ndarray:
    """Values q [N, K] times their packed scales plus their zero terms ([G, N16]), as unpack_weight
    gives them, float32."""
    n, k = q.shape
    groups = k // group if group else 1
    s = group_scales(scales[:, :n], mx, dtype, rounded)
    z = _from_bits(zeros[:, :n], dtype) if zeros is not None else np.zeros((groups, n))
    per = k // groups
    w = (q.reshape(n, groups, per) * s.T[..., None] + z.T[..., None]).reshape(n, k)  # exact in float64
    return (_as_dtype(w, dtype) if rounded else w).astype(np.float32)


def decode_values(codes: np.ndarray, element: str, dtype: str, k: int) -> np.ndarray:
    """The values q [N, K] of codes in mma order (`mma_b_words`, row by row), rounded to dtype, as float64."""
    d = decoder(element)
    q = np.empty((codes.shape[0], k), np.float64)
    q[:, mma_order(k, d.bits)] = d.values(d.unpack(codes))
    return _as_dtype(q, dtype)


def group_scales(scales, mx: bool, dtype: str, rounded: bool = True) -> np.ndarray:
    """Packed scales (16-bit patterns of dtype, or e8m0 codes) as float64 values; an e8m0 scale
    2^(e - 127) is rounded to dtype's range unless `rounded` is False."""
    if mx:
        s = FORMATS["e8m0"].decode(scales)
        return _as_dtype(s, dtype) if rounded else s
    return _from_bits(scales, dtype)


def _as_dtype(x, dtype: str) -> np.ndarray:
    return np.asarray(x, np.float64).astype(np.float16 if dtype == "f16" else ml_dtypes.bfloat16).astype(np.float64)


def _from_bits(bits, dtype: str) -> np.ndarray:
    return np.asarray(bits, np.uint16).view(np.float16 if dtype == "f16" else ml_dtypes.bfloat16).astype(np.float64)
