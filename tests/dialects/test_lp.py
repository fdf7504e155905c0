"""The lp dialect: element types and the quantization format attribute."""

import pytest
from xdsl.dialects.builtin import Float4E2M1FNType, Float8E8M0FNUType, IntegerType, Signedness, f16

from dialects.lp import NF4Type, QuantAttr, format_name
from rung.context import parse_ir, print_ir
from ir.errors import RungError
from ir.numerics import QuantFormat


def _module(attr: str) -> str:
    return ("func.func @main(%x: tensor<2x64xf32>, %q: tensor<4x64xui4>, %s: tensor<4x2xf16>, %z: tensor<4x2xui4>) -> tensor<2x4xf32> {\n"
            f"  %y = graph.qlinear %x, %q, %s, %z {{format = {attr}}} : (tensor<2x64xf32>, tensor<4x64xui4>, tensor<4x2xf16>, tensor<4x2xui4>) -> tensor<2x4xf32>\n"
            "  func.return %y : tensor<2x4xf32>\n}\n")


@pytest.mark.parametrize("text", [
    "#lp.quant<si4, group 128, scale f16>",
    "#lp.quant<ui4, group 64, scale bf16, zero quantized>",
    "#lp.quant<f4E2M1FN, group 32, scale f8E8M0FNU>",
    "#lp.quant<si8, group channel, scale f32>",
    "#lp.quant<!lp.nf4, group 64, scale f32>",
])
def test_quant_attr_prints_and_parses_back(text):
    m = parse_ir(f"func.func @f() attributes {{q = {text}}} {{\n  func.return\n}}\n")
    assert text in print_ir(m)


def test_quant_attr_format():
    assert QuantAttr(IntegerType(4, Signedness.UNSIGNED), 64, f16, "quantized").format == QuantFormat("uint4", 64, "f16", "quantized")
    assert QuantAttr(Float4E2M1FNType(), 32, Float8E8M0FNUType()).format == QuantFormat("e2m1", 32, "e8m0")
    assert format_name(NF4Type()) == "nf4" and format_name(IntegerType(4)) is None  # signless i4 is ambiguous


def test_qlinear_with_quantized_zeros_verifies():
    assert "zero quantized" in print_ir(parse_ir(_module("#lp.quant<ui4, group 32, scale f16, zero quantized>")))


@pytest.mark.parametrize("attr, message", [
    ("#lp.quant<ui4, group 32, scale f16>", "needs a zero point"),
    ("#lp.quant<i4, group 32, scale f16, zero quantized>", "is not a low-precision element type"),
    ("#lp.quant<ui4, group 32, scale i8, zero quantized>", "scale type must be f16, bf16, f32 or f8E8M0FNU"),
    ("#lp.quant<ui4, group 32, scale f16, zero sideways>", "unknown zero mode 'sideways'"),
    ("#lp.quant<ui4, group 48, scale f16, zero quantized>", "group size 48 does not divide the reduction axis of length 64"),
    ("#lp.quant<ui4, group 16, scale f16, zero quantized>", "scales of a \\[4, 64\\] weight must have shape \\[4, 4\\], got \\[4, 2\\]"),
])
def test_bad_formats_are_clear_errors(attr, message):
    with pytest.raises(RungError, match=message):
        parse_ir(_module(attr), "q.mlir")


def test_malformed_attr_names_the_position():
    with pytest.raises(RungError, match=r"^q.mlir:2:\d+: .*group"):
        parse_ir(_module("#lp.quant<ui4, grup 32, scale f16>"), "q.mlir")
