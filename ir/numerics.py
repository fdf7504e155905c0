"""Exact numerics of Rung's low-precision element formats and quantization formats.

Every element format has at most 8 bits, so each one is described by a table: the
value of every code. Encoding rounds to the nearest representable value (ties to the
even code, except e8m0 whose ties round up, as OCP MX and ml_dtypes define it) and
saturates values beyond the largest finite one; decoding is a table lookup.

Bit packing is a little-endian bit stream along the last axis: element i occupies bits
[i*b, (i+1)*b) of the stream, bit 0 being the least significant bit of byte 0. Seen as
uint32 words (little-endian), word j holds elements [j*32/b, (j+1)*32/b) for b dividing
32, element j*32/b in its lowest bits.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from functools import cached_property

import ml_dtypes
import numpy as np


class FormatError(ValueError):
    """A value, shape or parameter that a format cannot represent."""


@dataclass(frozen=True, eq=False)
class ElementFormat:
    """A low-precision element format: `bits` wide, `table[code]` is the code's value (NaN for NaN codes)."""

    name: str
    bits: int
    table: tuple[float, ...] = field(repr=False)
    sign_magnitude: bool = False  # the top bit is a sign bit over a symmetric magnitude table
    is_integer: bool = False
    ties_up: bool = False  # ties round to the larger value instead of the even code
    float_bits: tuple[int, int, int] | None = None  # minifloats: (exponent bits, mantissa bits, bias)

    @cached_property
    def values(self) -> np.ndarray:
        return np.array(self.table, dtype=np.float64)

    def __eq__(self, other) -> bool:  # (tables compared code by code, sign of zero and NaN included)
        if not isinstance(other, ElementFormat):
            return NotImplemented
        fields = lambda f: (f.name, f.bits, f.sign_magnitude, f.is_integer, f.ties_up, f.float_bits)  # noqa: E731
        return fields(self) == fields(other) and np.array_equal(self.values, other.values, equal_nan=True) and \
            np.array_equal(np.signbit(self.values), np.signbit(other.values))

    def __hash__(self) -> int:
        return hash((self.name, self.bits))

    @cached_property
    def _nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted finite values of the codes that encoding picks from, and those codes."""
        codes = np.arange(1 << (self.bits - 1) if self.sign_magnitude else 1 << self.bits)
        vals = self.values[codes]
        keep = np.isfinite(vals)
        order = np.argsort(vals[keep], kind="stable")
        return vals[keep][order], codes[keep][order]

    @property
    def max(self) -> float:
        return float(self._nearest[0][-1])

    @property
    def min(self) -> float:
        return -self.max if self.sign_magnitude else float(self._nearest[0][0])

    @property
    def signed(self) -> bool:
        return self.min < 0

    def _code_of(self, special: float) -> int | None:
        hits = np.flatnonzero((self.values == special) | (np.isnan(self.values) & np.isnan(special)))
        return int(hits[0]) if hits.size else None

    def encode(self, x) -> np.ndarray:
        """Codes (uint8) of the representable values nearest to `x`, saturating at the range."""
        x = np.asarray(x, dtype=np.float64)
        vals, codes = self._nearest
        mag = np.abs(x) if self.sign_magnitude else x
        clipped = np.clip(np.nan_to_num(mag, nan=0.0), vals[0], vals[-1])
        hi = np.clip(np.searchsorted(vals, clipped), 1, len(vals) - 1)
        lo = hi - 1
        d_lo, d_hi = clipped - vals[lo], vals[hi] - clipped
        tie_hi = np.ones_like(d_lo, bool) if self.ties_up else (codes[hi] % 2 == 0)
        pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & tie_hi)
        out = np.where(pick_hi, codes[hi], codes[lo]).astype(np.uint8)
        if self.sign_magnitude:
            out |= np.signbit(x).astype(np.uint8) << (self.bits - 1)
        inf_code = self._code_of(math.inf)
        if inf_code is not None:
            out = np.where(np.isposinf(x), inf_code, np.where(np.isneginf(x), self._code_of(-math.inf), out))
        if np.isnan(x).any():
            nan_code = self._code_of(math.nan)
            if nan_code is None:
                raise FormatError(f"{self.name} has no NaN, but the input holds NaN")
            out = np.where(np.isnan(x), nan_code | (np.signbit(x).astype(np.uint8) << (self.bits - 1)), out)
        return out.astype(np.uint8)

    def decode(self, codes) -> np.ndarray:
        """Values (float64) of `codes`."""
        codes = np.asarray(codes)
        if codes.size and (codes.dtype.kind not in "iub" or int(codes.min()) < 0 or int(codes.max()) >= (1 << self.bits)):
            bad = codes.flat[0] if codes.dtype.kind not in "iub" else codes[(codes < 0) | (codes >= 1 << self.bits)].flat[0]
            raise FormatError(f"code {bad} is not one of {self.name}'s codes 0 .. {(1 << self.bits) - 1}")
        return self.values[codes.astype(np.intp)]

    def round(self, x) -> np.ndarray:
        """`x` rounded to this format (float64)."""
        x = np.asarray(x, dtype=np.float64)
        if self.is_integer and not np.isnan(x).any():  # integers: a code's parity is its value's, so ties to even are rint's
            out = np.rint(x)
            np.maximum(out, self.min, out=out)
            np.minimum(out, self.max, out=out)
            out += 0.0  # -0.0 becomes the zero code's value
            return out
        return self.decode(self.encode(x))

    @property
    def exact_bound(self) -> float:
        """The largest gap between adjacent finite values, relative to the larger (for error bounds)."""
        vals = self._nearest[0]
        pos = vals[vals > 0]
        return float(np.max(np.diff(pos) / pos[1:])) if pos.size > 1 else 1.0


def int_format(bits: int, signed: bool, name: str | None = None) -> ElementFormat:
    """Two's complement (signed) or plain binary (unsigned) integers of 1 to 8 bits, named intN / uintN unless `name`."""
    if not 1 <= bits <= 8:
        raise FormatError(f"integer formats have 1 to 8 bits, not {bits}")
    table = [(c - (1 << bits)) if signed and c >> (bits - 1) else c for c in range(1 << bits)]
    return ElementFormat(name or ("int" if signed else "uint") + str(bits), bits, tuple(map(float, table)), is_integer=True)


def float_format(name: str, exp_bits: int, man_bits: int, bias: int | None = None, specials: str = "none", signed: bool = True,
                 subnormals: bool = True, ties_up: bool = False) -> ElementFormat:
    """A minifloat of at most 8 bits: a sign bit (unless not `signed`), `exp_bits` of exponent with `bias`
    (2^(exp_bits - 1) - 1 unless given) and `man_bits` of mantissa. `specials` is 'ieee' (inf and NaN at the top
    exponent), 'fn' (only the all-ones magnitude is NaN) or 'none' (every code is finite); without `subnormals` the
    lowest exponent is a normal one (e8m0's). Encoding ties to the even code, or up with `ties_up`."""
    if exp_bits < 1 or man_bits < 0:
        raise FormatError(f"a float has at least one exponent bit and no negative mantissa, got exponent {exp_bits}, mantissa {man_bits}")
    bits = int(signed) + exp_bits + man_bits
    if not 2 <= bits <= 8:
        raise FormatError(f"formats have at most 8 bits (and at least 2): sign, exponent {exp_bits} and mantissa {man_bits} make {bits}")
    if specials not in ("none", "fn", "ieee"):
        raise FormatError(f"specials are none, fn or ieee, not {specials!r}")
    if specials == "ieee" and (exp_bits < 2 or man_bits < 1):
        raise FormatError("ieee specials (inf and NaN at the top exponent) need 2 exponent bits and a mantissa bit")
    bias = (1 << (exp_bits - 1)) - 1 if bias is None else bias
    mag_bits = exp_bits + man_bits
    table = []
    for code in range(1 << bits):
        sign = -1.0 if signed and code >> mag_bits else 1.0
        e, m = (code >> man_bits) & ((1 << exp_bits) - 1), code & ((1 << man_bits) - 1)
        top = e == (1 << exp_bits) - 1
        if specials == "ieee" and top:
            table.append(sign * math.inf if m == 0 else math.nan)
        elif specials == "fn" and top and m == (1 << man_bits) - 1:
            table.append(math.nan)
        elif e == 0 and subnormals:
            table.append(sign * m * 2.0 ** (1 - bias - man_bits))
        else:
            table.append(sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias))
    plain = signed and subnormals  # (what the register decoders place under a 16-bit float's exponent)
    return ElementFormat(name, bits, tuple(table), sign_magnitude=signed, ties_up=ties_up,
                         float_bits=(exp_bits, man_bits, bias) if plain else None)


def table_format(name: str, values: tuple[float, ...]) -> ElementFormat:
    """A format by the value of each code (nf4's kind): 2^bits values in code order, bits 1 to 8."""
    bits = len(values).bit_length() - 1
    if len(values) < 2 or len(values) != 1 << bits or bits > 8:
        raise FormatError(f"a table lists 2^bits values for bits 1 to 8 (2, 4, ..., 256 of them), got {len(values)}")
    if not any(math.isfinite(v) for v in values):
        raise FormatError("a table needs a finite value")
    return ElementFormat(name, bits, tuple(float(v) for v in values))


# NF4 (QLoRA): quantiles of N(0, 1) normalized to [-1, 1], with an exact zero.
NF4_VALUES = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)

FORMATS: dict[str, ElementFormat] = {
    **{f"int{b}": int_format(b, True) for b in (1, 2, 3, 4, 8)},
    **{f"uint{b}": int_format(b, False) for b in (1, 2, 3, 4, 8)},
    "nf4": ElementFormat("nf4", 4, NF4_VALUES),
    "e4m3": float_format("e4m3", 4, 3, 7, "fn"),
    "e5m2": float_format("e5m2", 5, 2, 15, "ieee"),
    "e3m2": float_format("e3m2", 3, 2, 3, "none"),
    "e2m3": float_format("e2m3", 2, 3, 1, "none"),
    "e2m1": float_format("e2m1", 2, 1, 1, "none"),
    "e8m0": float_format("e8m0", 8, 0, 127, "fn", signed=False, subnormals=False, ties_up=True),  # (MX scales)
}

# The ml_dtypes type that holds each format, where one exists (used for storage and cross-checks).
ML_DTYPES = {
    "int2": ml_dtypes.int2, "uint2": ml_dtypes.uint2, "int4": ml_dtypes.int4, "uint4": ml_dtypes.uint4,
    "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
    "e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m3": ml_dtypes.float6_e2m3fn, "e2m1": ml_dtypes.float4_e2m1fn, "e8m0": ml_dtypes.float8_e8m0fnu,
}


BUILTIN_FORMATS = frozenset(FORMATS)


def int_name(name: str) -> tuple[int, bool] | None:
    """(bits, signed) of a name intN or uintN with N from 1 to 8, else None."""
    match = re.fullmatch(r"(u?)int([1-8])", name)
    return (int(match[2]), not match[1]) if match else None


def element_format(name: str) -> ElementFormat:
    """A format by name: a built-in or registered one, or intN / uintN of any width 1 to 8."""
    if name in FORMATS:
        return FORMATS[name]
    if int_name(name):
        return int_format(*int_name(name))
    raise FormatError(f"unknown element format '{name}' (known: {', '.join(FORMATS)}; a format defined as text is loaded "
                      "first: --format-file FILE, rung.load_formats)") from None


def register_format(name: str, fmt: ElementFormat) -> None:
    """Make `fmt` known by `name` (ir.format_text's definitions); the same definition again is no change, another
    meaning of a known name is a FormatError."""
    try:
        known = element_format(name)
    except FormatError:
        known = None
    if known is not None and known != fmt:
        raise FormatError(f"{name} is already {'a built-in' if name in BUILTIN_FORMATS else 'a registered'} element format with "
                          "another meaning")
    FORMATS[name] = fmt


def defined_formats_digest() -> str:
    """What the element formats defined as text mean (a kernel cache key's part: a name means what its definition says)."""
    return ";".join(f"{name}:{f.bits}:{f.values.tobytes().hex()}:{f.sign_magnitude}{f.is_integer}{f.ties_up}{f.float_bits}"
                    for name, f in sorted(FORMATS.items()) if name not in BUILTIN_FORMATS)


def unregister(name: str) -> None:
    """Forget a registered format or preset (a built-in one stays)."""
    if name not in BUILTIN_FORMATS:
        FORMATS.pop(name, None)
    if name not in BUILTIN_PRESETS:
        PRESETS.pop(name, None)


# --- bit packing -------------------------------------------------------------------------


def pack(codes, bits: int, word=np.uint8) -> np.ndarray:
    """Pack `bits`-wide codes along the last axis into words of dtype `word` (uint8 or uint32)."""
    _check_bits(bits)
    codes = np.asarray(codes)
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= (1 << bits)):
        raise FormatError(f"code {int(codes.min()) if int(codes.min()) < 0 else int(codes.max())} does not fit in {bits} bits")
    codes = codes.astype(np.uint8)
    wbits = np.dtype(word).itemsize * 8
    n = codes.shape[-1]
    if (n * bits) % wbits:
        raise FormatError(f"{n} elements of {bits} bits do not fill whole {wbits}-bit words")
    if codes.size and int(codes.max()) >= (1 << bits):
        raise FormatError(f"code {int(codes.max())} does not fit in {bits} bits")
    stream = ((codes[..., None] >> np.arange(bits, dtype=np.uint8)) & 1).reshape(*codes.shape[:-1], n * bits)
    packed = np.packbits(stream, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.dtype(word).newbyteorder("<")).astype(word)


def _check_bits(bits) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise FormatError(f"codes are 1 to 8 bits wide, got {bits!r}")


def unpack(words, bits: int, count: int | None = None) -> np.ndarray:
    """Inverse of `pack`: the first `count` codes (all by default) along the last axis."""
    _check_bits(bits)
    words = np.ascontiguousarray(np.asarray(words))
    as_bytes = words.astype(words.dtype.newbyteorder("<")).view(np.uint8)
    stream = np.unpackbits(as_bytes, axis=-1, bitorder="little")
    total = stream.shape[-1] // bits
    count = total if count is None else count
    groups = stream[..., : count * bits].reshape(*stream.shape[:-1], count, bits)
    return (groups << np.arange(bits, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)


# --- storage dtypes of scales -------------------------------------------------------------

SCALE_DTYPES = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f32": np.float32, "e8m0": None}
ZERO_MODES = ("none", "original", "rescale", "quantized")


def round_scale(x, dtype: str) -> np.ndarray:
    """`x` rounded to the scale dtype, returned as float32."""
    if dtype == "e8m0":
        return FORMATS["e8m0"].round(x).astype(np.float32)
    return np.asarray(x, np.float32).astype(SCALE_DTYPES[dtype]).astype(np.float32)


@dataclass(frozen=True)
class QuantFormat:
    """A weight quantization format: element format, group size along the reduction (last)
    axis (None: one group per channel), scale dtype and zero-point mode.

    Zero modes (BitBLAS's names): 'none' w = q * s; 'original' w = (q - z) * s with a float z;
    'rescale' w = q * s - z with a float z; 'quantized' w = (q - z) * s with z in the element
    format. Scales and zeros have the weight's shape with the last axis divided by the group size.
    """

    element: str
    group: int | None = 128
    scale: str = "f16"
    zero: str = "none"

    def __post_init__(self):
        fmt = element_format(self.element)
        if self.scale not in SCALE_DTYPES:
            raise FormatError(f"unknown scale dtype '{self.scale}' (known: {', '.join(SCALE_DTYPES)})")
        if self.zero not in ZERO_MODES:
            raise FormatError(f"unknown zero mode '{self.zero}' (known: {', '.join(ZERO_MODES)})")
        if self.group is not None and (not isinstance(self.group, (int, np.integer)) or isinstance(self.group, bool) or self.group <= 0):
            raise FormatError(f"group size must be a positive integer (or None: one per channel), got {self.group!r}")
        if self.zero != "none" and not fmt.is_integer:
            raise FormatError(f"zero mode '{self.zero}' needs an integer element format, not {self.element}")
        if self.zero == "none" and fmt.is_integer and not (fmt.signed and fmt.max > 0):
            raise FormatError(f"{self.element} has no symmetric range: it needs a zero point (zero mode original, rescale or quantized)")
        if self.scale == "e8m0" and self.zero != "none":
            raise FormatError("e8m0 (MX) scales take no zero point")
        if self.element == "e8m0":
            raise FormatError("e8m0 is a scale format, not an element format")

    @property
    def fmt(self) -> ElementFormat:
        return element_format(self.element)

    def group_size(self, k: int) -> int:
        g = k if self.group is None else self.group
        if k % g:
            raise FormatError(f"group size {g} does not divide the reduction axis of length {k}")
        return g

    def _grouped(self, w: np.ndarray) -> np.ndarray:
        k = w.shape[-1]
        g = self.group_size(k)
        return w.reshape(*w.shape[:-1], k // g, g)

    def quantize(self, w) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(values, scales, zeros): `values` are the element values (exactly representable,
        float64), `scales` and `zeros` float32 already rounded to the scale dtype."""
        w = np.asarray(w, dtype=np.float64)
        if w.ndim < 1 or w.shape[-1] == 0:
            raise FormatError(f"a weight to quantize has a reduction (last) axis of at least one element, got shape {list(w.shape)}")
        if not np.isfinite(w).all():
            raise FormatError("cannot quantize a weight holding inf or NaN")
        fmt, grouped = self.fmt, self._grouped(w)
        if self.zero == "none":
            amax = np.abs(grouped).max(axis=-1)
            if self.scale == "e8m0":
                emax = math.floor(math.log2(fmt.max))
                exp = np.floor(np.log2(np.where(amax > 0, amax, 1.0))) - emax
                s = round_scale(np.exp2(np.clip(exp, -127, 127)), "e8m0")
            else:
                s = round_scale(np.where(amax > 0, amax / fmt.max, 1.0), self.scale)
            s = self._finite_scales(np.where(s > 0, s, 1.0).astype(np.float32), amax)
            q = fmt.round(grouped / s[..., None])
            return q.reshape(w.shape), s, None
        lo, hi = grouped.min(axis=-1), grouped.max(axis=-1)
        if self.zero == "quantized":  # the range must hold 0 for the zero point to be representable
            lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        s = round_scale(np.where(hi > lo, (hi - lo) / (fmt.max - fmt.min), 1.0), self.scale)
        s = self._finite_scales(np.where(s > 0, s, 1.0).astype(np.float32), np.maximum(-lo, hi))
        if self.zero == "original":
            z = round_scale(fmt.min - lo / s, self.scale)
            q = fmt.round(grouped / s[..., None] + z[..., None])
        elif self.zero == "rescale":
            z = round_scale(fmt.min * s - lo, self.scale)
            q = fmt.round((grouped + z[..., None]) / s[..., None])
        else:
            z = fmt.round(fmt.min - lo / s).astype(np.float32)
            q = fmt.round(grouped / s[..., None] + z[..., None])
        return q.reshape(w.shape), s, z

    def _finite_scales(self, s: np.ndarray, amax: np.ndarray) -> np.ndarray:
        if not np.isfinite(s).all():
            raise FormatError(f"weights up to {float(np.max(amax)):.3g} need scales beyond what {self.scale} holds "
                              "(use scale f32 or bf16)")
        return s

    def dequantize(self, values, scales, zeros=None) -> np.ndarray:
        """The float32 weight that (values, scales, zeros) stand for."""
        values = np.asarray(values, dtype=np.float64)
        grouped = self._grouped(values)
        self.check_params(values.shape, np.shape(scales), None if zeros is None else np.shape(zeros))
        s = np.asarray(scales, np.float64)[..., None]
        if self.zero == "none":
            out = grouped * s
        elif self.zero == "rescale":
            out = grouped * s - np.asarray(zeros, np.float64)[..., None]
        else:
            out = (grouped - np.asarray(zeros, np.float64)[..., None]) * s
        return out.reshape(values.shape).astype(np.float32)

    def param_shape(self, weight_shape) -> tuple[int, ...]:
        """Shape of the scales (and zeros) of a weight of `weight_shape`."""
        *lead, k = weight_shape
        return (*lead, k // self.group_size(k))

    def check_params(self, weight_shape, scale_shape, zero_shape) -> None:
        want = self.param_shape(weight_shape)
        if tuple(scale_shape) != want:
            raise FormatError(f"scales of a {list(weight_shape)} weight must have shape {list(want)}, got {list(scale_shape)}")
        if (zero_shape is None) != (self.zero == "none"):
            raise FormatError(f"zero mode '{self.zero}' " + ("takes no zeros" if zero_shape is not None else "needs zeros"))
        if zero_shape is not None and tuple(zero_shape) != want:
            raise FormatError(f"zeros of a {list(weight_shape)} weight must have shape {list(want)}, got {list(zero_shape)}")


# Named presets: the MX block formats (OCP MX v1.0) and common weight-only formats.
PRESETS: dict[str, QuantFormat] = {
    "mxfp8": QuantFormat("e4m3", 32, "e8m0"),
    "mxfp8_e5m2": QuantFormat("e5m2", 32, "e8m0"),
    "mxfp6": QuantFormat("e2m3", 32, "e8m0"),
    "mxfp6_e3m2": QuantFormat("e3m2", 32, "e8m0"),
    "mxfp4": QuantFormat("e2m1", 32, "e8m0"),
    "nf4": QuantFormat("nf4", 64, "f32"),
    "int4": QuantFormat("int4", 128, "f16"),
    "uint4": QuantFormat("uint4", 128, "f16", "quantized"),
    "int8": QuantFormat("int8", None, "f16"),
}
BUILTIN_PRESETS = frozenset(PRESETS)


def register_preset(name: str, fmt: QuantFormat) -> None:
    """Make a quantization format known by `name` (quant_format); as register_format does for element formats."""
    known = PRESETS.get(name)
    if known is not None and known != fmt:
        raise FormatError(f"{name} is already {'a built-in' if name in BUILTIN_PRESETS else 'a registered'} quantization format with "
                          "another meaning")
    PRESETS[name] = fmt


@dataclass(frozen=True)
class EightBitFormat:
    """W8A8 and FP8: an 8-bit weight, one f32 scale per output channel, times the activations quantized to the same
    8-bit type per token (row) at every call (`quantize_rows`), multiplied 8-bit by 8-bit on the tensor cores."""

    element: str  # int8 or e4m3

    @property
    def a8(self) -> str:
        """The tensor cores' name of the 8-bit type (mma's s8 or e4m3)."""
        return "s8" if self.element == "int8" else "e4m3"

    @property
    def weight(self) -> QuantFormat:
        return QuantFormat(self.element, None, "f32")


EIGHT_BIT_PRESETS = {"w8a8": EightBitFormat("int8"), "fp8": EightBitFormat("e4m3")}


def quantize_rows(x, element: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, scales): each row of x [..., K] quantized to `element` (int8 or e4m3) by its absolute maximum, as
    8-bit activations are at every call: scale = max(absmax / largest, f32 tiny) and values = x / scale rounded to
    nearest even, all in f32 (values float64, exactly the element's; scales f32 [...])."""
    fmt = element_format(element)
    x = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        scales = np.maximum(np.abs(x).max(axis=-1, initial=0.0) / np.float32(fmt.max), np.finfo(np.float32).tiny).astype(np.float32)
        return fmt.round(x / scales[..., None]), scales


def quant_format(name: str | QuantFormat, **overrides) -> QuantFormat:
    """A format by preset name ("int4", "mxfp4", ...) or element name ("int2", "e4m3", ...; group 128,
    f16 scales, and a quantized zero point for integers without a symmetric range), with
    keyword overrides of group, scale and zero."""
    if isinstance(name, QuantFormat):
        fmt = name
    elif name in PRESETS:
        fmt = PRESETS[name]
    elif name in FORMATS:
        e = FORMATS[name]
        fmt = QuantFormat(name, 128, "f16", "quantized" if e.is_integer and not (e.signed and e.max > 0) else "none")
    else:
        raise FormatError(f"unknown format '{name}' (presets: {', '.join(PRESETS)}; or an element format: {', '.join(FORMATS)})")
    unknown = set(overrides) - {"group", "scale", "zero"}
    if unknown:
        raise FormatError(f"a format has no field {', '.join(sorted(unknown))}")
    return dataclasses.replace(fmt, **overrides)
