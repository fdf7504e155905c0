"""Element types as the interpreter stores them in numpy, and their conversions.

f16, bf16 and the 8-bit floats (e4m3, e5m2) are stored as themselves (through ml_dtypes, byte for
byte what kernels read) and computed in f32; the other low-precision floats (fp6, fp4, nf4, e8m0)
are stored as float32 holding exactly representable values; narrow integers as int8/uint8 holding in-range values. Every value
written to a tensor goes through `to_storage`, which rounds and saturates as the element
format defines (ir.numerics).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import (
    AnyFloat,
    BFloat16Type,
    Float4E2M1FNType,
    Float6E2M3FNType,
    Float6E3M2FNType,
    Float8E4M3FNType,
    Float8E5M2Type,
    Float8E8M0FNUType,
    Float16Type,
    Float32Type,
    Float64Type,
    IndexType,
    IntegerType,
    Signedness,
    TensorType,
)
from xdsl.ir import Attribute

from ir.numerics import EIGHT_BIT_PRESETS, EightBitFormat, element_format

FLOAT_FORMATS = {
    Float8E4M3FNType: "e4m3",
    Float8E5M2Type: "e5m2",
    Float6E3M2FNType: "e3m2",
    Float6E2M3FNType: "e2m3",
    Float4E2M1FNType: "e2m1",
    Float8E8M0FNUType: "e8m0",
}


EIGHT_BIT_TYPES = {"int8": IntegerType(8), "e4m3": Float8E4M3FNType()}  # W8A8's and FP8's operand types, by ir.numerics format


def eight_bit_format(t: Attribute) -> EightBitFormat | None:
    """The W8A8 or FP8 format whose 8-bit operands have element type `t` (i8, f8E4M3FN), or None."""
    return next((f for f in EIGHT_BIT_PRESETS.values() if EIGHT_BIT_TYPES[f.element] == t), None)


def format_name(t: Attribute) -> str | None:
    """The `ir.numerics` format of a low-precision element type, None for other types. A
    dialect's own element type names its format in a class attribute `FORMAT` (lp.nf4)."""
    if isinstance(t, IntegerType):
        if 1 <= t.width.data <= 8 and t.signedness.data != Signedness.SIGNLESS:
            return ("int" if t.signedness.data == Signedness.SIGNED else "uint") + str(t.width.data)
        return None
    return FLOAT_FORMATS.get(type(t)) or getattr(t, "FORMAT", None)


_NATIVE_FLOATS = {Float16Type: np.float16, BFloat16Type: ml_dtypes.bfloat16, Float32Type: np.float32, Float64Type: np.float64,
                  Float8E4M3FNType: ml_dtypes.float8_e4m3fn, Float8E5M2Type: ml_dtypes.float8_e5m2}


def is_float(t: Attribute) -> bool:
    fmt = format_name(t)
    return isinstance(t, AnyFloat) or (fmt is not None and not element_format(fmt).is_integer)


def is_bool(t: Attribute) -> bool:
    return isinstance(t, IntegerType) and t.width.data == 1 and t.signedness.data == Signedness.SIGNLESS


def is_integer(t: Attribute) -> bool:
    return isinstance(t, IntegerType | IndexType) and not is_bool(t)


def storage_dtype(t: Attribute) -> np.dtype:
    """The numpy dtype that holds tensors of element type `t`."""
    if type(t) in _NATIVE_FLOATS:
        return np.dtype(_NATIVE_FLOATS[type(t)])
    fmt = format_name(t)
    if is_float(t) and fmt is not None:  # fp6, fp4, nf4, e8m0 and formats defined as text: held exactly in f32
        return np.dtype(np.float32)
    if fmt is not None and not isinstance(t, IntegerType):  # an integer format defined as text
        return np.dtype(np.int8 if element_format(fmt).signed else np.uint8)
    if is_bool(t):
        return np.dtype(np.bool_)
    if isinstance(t, IndexType):
        return np.dtype(np.int64)
    if isinstance(t, IntegerType):
        width = max(8, 1 << (t.width.data - 1).bit_length())
        if width > 64:
            raise TypeError(f"integers of {t.width.data} bits are not supported")
        unsigned = t.signedness.data == Signedness.UNSIGNED
        return np.dtype(f"{'u' if unsigned else ''}int{width}")
    raise TypeError(f"{t} is not a tensor element type Rung can execute")


def tensor_problem(t: Attribute) -> str | None:
    """What keeps Rung from holding tensors of type `t` (a dynamic dimension, an element type it
    cannot store), or None."""
    if not isinstance(t, TensorType):
        return None
    if any(d < 0 for d in t.get_shape()):
        return f"{t} has a dynamic dimension: Rung's programs have static shapes"
    try:
        storage_dtype(t.element_type)
    except TypeError as e:
        return f"{t}: {e}"
    return None


def to_storage(value, t: TensorType) -> np.ndarray:
    """`value` converted to the storage of tensor type `t` (rounded for low-precision types)."""
    elem = t.element_type
    arr = np.asarray(value)
    fmt = format_name(elem)
    if fmt is not None:
        if is_float(elem):
            arr = element_format(fmt).round(arr)
        else:
            f = element_format(fmt)
            arr = np.clip(np.rint(arr) if arr.dtype.kind == "f" else arr, f.min, f.max)
    elif is_integer(elem) and arr.dtype.kind == "f":
        arr = np.trunc(arr)  # float to integer conversion truncates, as in torch and C
    out = arr.astype(storage_dtype(elem), copy=False)
    return np.broadcast_to(out, t.get_shape()) if out.shape != tuple(t.get_shape()) else out


def compute_view(arr: np.ndarray) -> np.ndarray:
    """What ops compute on: f16 and bf16 widened to f32."""
    if arr.dtype in (np.float16, ml_dtypes.bfloat16):
        return arr.astype(np.float32)
    return arr
