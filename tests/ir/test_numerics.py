"""Exact numerics of the element and quantization formats (ir.numerics)."""

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ir.numerics import FORMATS, ML_DTYPES, PRESETS, FormatError, QuantFormat, element_format, pack, unpack

FLOATS = [n for n, f in FORMATS.items() if not f.is_integer]


@pytest.mark.parametrize("name", FORMATS)
def test_decode_encode_is_identity_on_every_code_value(name):
    fmt = FORMATS[name]
    codes = np.arange(1 << fmt.bits, dtype=np.uint8)
    values = fmt.decode(codes)
    finite = np.isfinite(values) | np.isinf(values)
    back = fmt.encode(values[finite])
    assert np.array_equal(fmt.decode(back), values[finite])
    # distinct values keep their code (only +-0 share a value)
    nonzero = finite & (values != 0)
    assert np.array_equal(back[values[finite] != 0], codes[nonzero])


@pytest.mark.parametrize("name", [n for n in ML_DTYPES if not FORMATS[n].is_integer])
@given(data=st.data())
def test_float_encode_matches_ml_dtypes_bit_for_bit(name, data):
    fmt, dt = FORMATS[name], ML_DTYPES[name]
    if fmt.signed:
        elems = st.floats(-fmt.max, fmt.max, width=32)
    else:  # e8m0: positive powers of two and everything between
        elems = st.floats(2.0**-126, 2.0**127, width=32)
    x = data.draw(hnp.arrays(np.float32, st.integers(1, 64), elements=elems))
    ours = fmt.encode(x)
    ref = x.astype(dt)
    if fmt.bits == 8:
        assert np.array_equal(ours, ref.view(np.uint8))
    else:
        assert np.array_equal(fmt.decode(ours), ref.astype(np.float64))


@pytest.mark.parametrize("name", [n for n in ML_DTYPES if FORMATS[n].is_integer])
def test_integer_ranges_match_ml_dtypes(name):
    fmt, dt = FORMATS[name], np.dtype(ML_DTYPES[name])
    info = ml_dtypes.iinfo(dt)
    assert (fmt.min, fmt.max) == (info.min, info.max)
    x = np.arange(info.min, info.max + 1)
    assert np.array_equal(fmt.decode(fmt.encode(x)), x.astype(dt).astype(np.float64))


@pytest.mark.parametrize("name", FLOATS)
@given(x=st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_encode_rounds_to_nearest_and_saturates(name, x):
    fmt = FORMATS[name]
    assume(fmt.signed or x > 0)
    got = float(fmt.round(np.float32(x)))
    vals = fmt._nearest[0]
    target = min(max(abs(x) if fmt.sign_magnitude else x, vals[0]), vals[-1])
    best = np.min(np.abs(vals - target))
    assert abs(abs(got) - target) == best if fmt.sign_magnitude else abs(got - target) == best
    if fmt.sign_magnitude and got != 0:
        assert math.copysign(1, got) == math.copysign(1, x)


@pytest.mark.parametrize("name", [n for n, f in FORMATS.items() if f.is_integer])
@given(x=hnp.arrays(np.float64, st.integers(1, 64), elements=st.one_of(st.floats(-300, 300), st.integers(-300, 300).map(lambda i: i + 0.5))))
def test_integer_rounding_is_the_code_tables(name, x):
    """round's shortcut for integers (rint, clipped) gives the values the code table's nearest-even encoding gives."""
    fmt = FORMATS[name]
    got, want = fmt.round(x), fmt.decode(fmt.encode(x))
    assert np.array_equal(got, want) and not np.signbit(got[got == 0]).any()


def test_special_values():
    e4m3, e5m2, e2m1 = FORMATS["e4m3"], FORMATS["e5m2"], FORMATS["e2m1"]
    assert e4m3.encode([1e9])[0] == 0x7E and e4m3.decode([0x7E])[0] == 448  # saturates to max
    assert np.isnan(e4m3.round([np.nan])[0])
    assert np.isinf(e5m2.round([np.inf])[0])
    assert e2m1.round([-100.0])[0] == -6.0
    with pytest.raises(FormatError, match="no NaN"):
        e2m1.encode([np.nan])


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("word", [np.uint8, np.uint32])
@given(data=st.data())
def test_pack_unpack_round_trip(bits, word, data):
    wbits = np.dtype(word).itemsize * 8
    per = wbits // math.gcd(wbits, bits)
    n = per * data.draw(st.integers(1, 4))
    rows = data.draw(st.integers(1, 3))
    codes = data.draw(hnp.arrays(np.uint8, (rows, n), elements=st.integers(0, (1 << bits) - 1)))
    words = pack(codes, bits, word)
    assert words.dtype == word and words.shape == (rows, n * bits // wbits)
    assert np.array_equal(unpack(words, bits), codes)


def test_pack_element_order_is_documented_little_endian():
    # int4 codes 1..8 in one uint32 word: element 0 in the lowest nibble
    assert pack(np.arange(1, 9, dtype=np.uint8), 4, np.uint32)[0] == 0x87654321
    assert pack(np.array([1, 2, 3, 0], np.uint8), 2, np.uint8)[0] == 0b00111001
    with pytest.raises(FormatError, match="whole 32-bit words"):
        pack(np.zeros(3, np.uint8), 4, np.uint32)
    with pytest.raises(FormatError, match="does not fit in 4 bits"):
        pack(np.array([16, 0], np.uint8), 4)


QUANTS = [
    QuantFormat("int4", 32, "f16"), QuantFormat("int4", None, "bf16"), QuantFormat("int8", 64, "f32"),
    QuantFormat("int2", 32, "f32"), QuantFormat("int3", 32, "f32"),
    QuantFormat("uint4", 32, "f32", "original"), QuantFormat("uint4", 64, "f32", "rescale"),
    QuantFormat("uint4", 32, "f32", "quantized"), QuantFormat("uint2", 32, "f16", "quantized"),
    QuantFormat("uint1", 32, "f32", "original"), QuantFormat("uint3", 32, "f32", "rescale"),
    *PRESETS.values(), QuantFormat("e4m3", None, "f16"), QuantFormat("e5m2", 32, "bf16"),
]


@pytest.mark.parametrize("q", QUANTS, ids=str)
@given(data=st.data())
def test_quantization_error_stays_within_the_format_bound(q, data):
    k = 128 * data.draw(st.integers(1, 2))
    w = data.draw(hnp.arrays(np.float64, (data.draw(st.integers(1, 3)), k),
                             elements=st.floats(-4, 4, allow_subnormal=False)))
    values, scales, zeros = q.quantize(w)
    fmt = q.fmt
    # the values are representable and the parameters have the documented shape
    assert np.array_equal(fmt.round(values), values)
    assert scales.shape == q.param_shape(w.shape)
    err = np.abs(q.dequantize(values, scales, zeros) - w).reshape(*scales.shape, -1)
    s = scales[..., None].astype(np.float64)
    scale_eps = {"f16": 2.0**-11, "bf16": 2.0**-8, "f32": 2.0**-24, "e8m0": 0.0}[q.scale]
    slack = 1e-6 + scale_eps * 2 * np.abs(w).reshape(err.shape).max(axis=-1, keepdims=True)
    if fmt.is_integer:
        # half a step; a rounded zero point can shift the grid by up to another half step
        steps = 1.0 if q.zero == "quantized" else 0.5
        bound = steps * s + slack * (fmt.max - fmt.min)
    elif q.scale == "e8m0":
        # MX: the block max may exceed the element range by < 2x and saturate; otherwise half a gap
        bound = np.maximum(fmt.exact_bound * np.abs(w).reshape(err.shape), s * fmt.values[fmt._nearest[1][1]]) + \
            np.maximum(np.abs(w).reshape(err.shape) - fmt.max * s, 0)
    else:
        bound = fmt.exact_bound * np.abs(w).reshape(err.shape) + s * np.min(np.diff(fmt._nearest[0])) + slack * fmt.max
    assert np.all(err <= bound + 1e-9), float(np.max(err - bound))


def test_quant_format_errors():
    with pytest.raises(FormatError, match="group size 128 does not divide the reduction axis of length 100"):
        QuantFormat("int4", 128).quantize(np.zeros((2, 100)))
    with pytest.raises(FormatError, match="needs a zero point"):
        QuantFormat("uint4", 32)
    with pytest.raises(FormatError, match="needs an integer element format"):
        QuantFormat("e4m3", 32, "f16", "original")
    with pytest.raises(FormatError, match="unknown element format 'int9'"):
        QuantFormat("int9", 32)
    with pytest.raises(FormatError, match="scales of a \\[2, 64\\] weight must have shape \\[2, 2\\]"):
        QuantFormat("int4", 32).dequantize(np.zeros((2, 64)), np.ones((2, 3)))
    with pytest.raises(FormatError, match="inf or NaN"):
        QuantFormat("int4", 32).quantize(np.full((1, 32), np.inf))
    with pytest.raises(FormatError, match="unknown element format"):
        element_format("fp5")


@pytest.mark.parametrize("call, message", [
    (lambda: QuantFormat("int4", group="32"), "group size must be a positive integer .* got '32'"),
    (lambda: QuantFormat("int4", group=True), "group size must be a positive integer .* got True"),
    (lambda: QuantFormat("int4", group=32).quantize(np.float32(1.0)), "reduction \\(last\\) axis of at least one element, got shape \\[\\]"),
    (lambda: QuantFormat("int8", group=None).quantize(np.zeros((4, 0))), "got shape \\[4, 0\\]"),
    (lambda: unpack(np.zeros(4, np.uint32), 0), "codes are 1 to 8 bits wide, got 0"),
    (lambda: element_format("int4").decode(np.array([-300])), "code -300 is not one of int4's codes 0 .. 15"),
    (lambda: element_format("int4").decode(np.array([-1])), "code -1 is not one of int4's codes"),
    (lambda: element_format("int4").decode(np.array([1.5])), "code 1.5 is not one of int4's codes"),
    (lambda: pack(np.array([-1, 2]), 4), "code -1 does not fit in 4 bits"),
    (lambda: QuantFormat("int4", group=32).quantize(np.full((2, 32), 1e6)), "weights up to 1e\\+06 need scales beyond what f16 holds"),
])
def test_bad_calls_are_one_clear_format_error(call, message):
    """Nothing silently wrong (a code of -1 read as the last code, infinite scales) and no IndexError or
    ZeroDivisionError from inside: a FormatError (a ValueError) that names the problem."""
    with pytest.raises(FormatError, match=message):
        call()
