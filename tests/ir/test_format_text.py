"""Formats defined as text: the built-ins written in the language are the built-ins, code for code; formats Rung does not
build in (an FP6 of another bias, a 3-bit table, a 5-bit integer) get their numerics, IR type, packing and kernels from
their text alone; bad text is one error naming its line and column."""

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rung
from ir.errors import RungError
from ir.format_text import load_format_file, load_formats
from ir.numerics import BUILTIN_FORMATS, BUILTIN_PRESETS, FORMATS, PRESETS, ElementFormat, element_format, quant_format
from torch_checks import assert_close

FORMAT_FILES = Path(__file__).parents[2] / "examples" / "formats"
CUSTOM = {d.name: d.format for d in load_format_file(FORMAT_FILES / "custom.fmt")}


def test_the_builtin_formats_written_as_text_are_the_builtins_code_for_code():
    known = (dict(FORMATS), dict(PRESETS))
    definitions = load_format_file(FORMAT_FILES / "builtin.fmt")
    assert (dict(FORMATS), dict(PRESETS)) == known  # nothing new, nothing changed
    elements = {d.name for d in definitions if isinstance(d.format, ElementFormat)}
    assert elements == BUILTIN_FORMATS  # every built-in element format is written there, and every preset
    assert {d.name for d in definitions if not isinstance(d.format, ElementFormat)} == BUILTIN_PRESETS
    for d in definitions:
        builtin = FORMATS[d.name] if isinstance(d.format, ElementFormat) else PRESETS[d.name]
        assert d.format == builtin, d.name
        if isinstance(d.format, ElementFormat):  # bit for bit: the value of every code, NaNs and signed zeros in place
            assert d.format.values.tobytes() == builtin.values.tobytes(), d.name


def test_the_custom_formats_mean_what_their_text_says():
    e3m2b2, t3, int5 = (element_format(n) for n in ("e3m2b2", "t3", "int5"))
    # an FP6 of bias 2 is the OCP FP6 (bias 3) times two, code for code
    fp6 = np.arange(64, dtype=np.uint8).view(ml_dtypes.float6_e3m2fn).astype(np.float64)
    assert np.array_equal(e3m2b2.values, 2 * fp6) and e3m2b2.float_bits == (3, 2, 2) and e3m2b2.bits == 6
    assert t3.bits == 3 and t3.table == (-1, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1)
    assert int5.is_integer and (int5.min, int5.max) == (-16, 15)
    assert quant_format("fp6b2") == CUSTOM["fp6b2"] and quant_format("t3g64").group == 64


@given(st.sampled_from(["e3m2b2", "t3", "int5"]), st.integers(0, 2**31))
def test_custom_formats_round_to_their_nearest_value(name, seed):
    fmt = element_format(name)
    x = np.random.default_rng(seed).normal(0, fmt.max / 2, 256)
    rounded = fmt.round(x)
    finite = fmt.values[np.isfinite(fmt.values)]
    nearest = np.abs(np.clip(x, finite.min(), finite.max())[:, None] - finite[None, :]).min(axis=1)
    assert np.isin(rounded, finite).all()
    assert np.allclose(np.abs(np.clip(x, finite.min(), finite.max()) - rounded), nearest)


@pytest.mark.parametrize("name", ["fp6b2", "t3g64", "int5g128"])
def test_a_qlinear_of_a_custom_format_runs_compiled_on_the_simulator(name):
    """The IR type `!lp.format<...>` (or si5) printed and parsed, the weight packed for the format's register decoder,
    the kernel on the lane simulator: the interpreter's result."""
    from dialects.lp import QuantAttr

    fmt = quant_format(name)
    attr = QuantAttr.from_format(fmt)
    m, n, k = 3, 32, 128
    groups = k // fmt.group
    element = str(attr.element)
    text = (f"func.func @main(%x: tensor<{m}x{k}xf16>, %q: tensor<{n}x{k}x{element}>, %s: tensor<{n}x{groups}xf16>) -> "
            f"tensor<{m}x{n}xf16> {{\n  %y = graph.qlinear %x, %q, %s {{format = {attr}}} : (tensor<{m}x{k}xf16>, "
            f"tensor<{n}x{k}x{element}>, tensor<{n}x{groups}xf16>) -> tensor<{m}x{n}xf16>\n  func.return %y : tensor<{m}x{n}xf16>\n}}\n")
    assert rung.print_ir(rung.parse_ir(text)).count(element) >= 2
    rng = np.random.default_rng(5)
    values, scales, _ = fmt.quantize(rng.standard_normal((n, k)))
    x = rng.standard_normal((m, k)).astype(np.float16)
    args = [x, values.astype(np.int8 if fmt.fmt.is_integer else np.float32), scales.astype(np.float16)]
    fn = rung.compile(text, target="sm_80")
    assert [op.name for op in fn.steps] == ["tile.pack_weight", "ptx.launch"]
    assert_close(fn(*args), rung.run(rung.parse_ir(text), args)[0], "f16")


@pytest.mark.parametrize("text, where, message", [
    ("a = float exponent 3 mantissa 2\nb = tabel [1, 2]", "2:5", "unexpected 'tabel'; expected 'float', 'int', 'quant', 'table'"),
    ("a = float exponent 3 mantissa", "1:30", "unexpected end of line; expected an integer"),
    ("a = float exponent 5 mantissa 5", "1:1", "at most 8 bits"),
    ("a = float exponent 1 mantissa 2 specials ieee", "1:1", "ieee specials .* need 2 exponent bits"),
    ("a = table [1, 2, 3]", "1:1", "2\\^bits values .* got 3"),
    ("a = table [nan, nan]", "1:1", "a table needs a finite value"),
    ("a = int bits 9", "1:1", "integer formats have 1 to 8 bits, not 9"),
    ("a = int bits 4\na = int bits 3", "2:1", "a is defined twice \\(first at line 1\\)"),
    ("e4m3 = float exponent 4 mantissa 3", "1:1", "e4m3 is already a built-in element format with another meaning"),
    ("q = quant nosuch group 32 scale f16", "1:1", "unknown element format 'nosuch'"),
    ("q = quant int4 group 32 scale f16 zero sideways", "1:1", "unknown zero mode 'sideways'"),
    ("q = quant int4 group 32 scale f8", "1:1", "unknown scale dtype 'f8'"),
])
def test_bad_text_is_one_error_naming_its_line_and_column(text, where, message):
    before = (dict(FORMATS), dict(PRESETS))
    with pytest.raises(RungError, match=f"^<formats>:{where}: .*{message}"):
        load_formats(text)
    assert (dict(FORMATS), dict(PRESETS)) == before  # a text with an error registers nothing


def test_a_module_naming_an_unloaded_format_says_where_and_how_to_load_it(tmp_path):
    text = ("func.func @main(%q: tensor<4x!lp.format<nowhere>>) -> tensor<4x!lp.format<nowhere>> {\n"
            "  func.return %q : tensor<4x!lp.format<nowhere>>\n}\n")
    with pytest.raises(RungError, match="^<stdin>:1:48: unknown element format 'nowhere'.*--format-file"):
        rung.parse_ir(text)
    with pytest.raises(RungError, match=f"{tmp_path / 'none.fmt'}: no such format file"):
        load_format_file(tmp_path / "none.fmt")


def test_the_tools_load_format_files_and_name_a_bad_line(tmp_path, capsys):
    from rung.cli import opt_main

    module = tmp_path / "t3.mlir"
    module.write_text("func.func @main(%q: tensor<4x!lp.format<t3>>) -> tensor<4x!lp.format<t3>> {\n"
                      "  func.return %q : tensor<4x!lp.format<t3>>\n}\n")
    assert opt_main([str(module), "--format-file", str(FORMAT_FILES / "custom.fmt")]) == 0
    assert "!lp.format<t3>" in capsys.readouterr().out
    bad = tmp_path / "bad.fmt"
    bad.write_text("ok = int bits 4 unsigned\nu = float exponent 3 mantissa 2 bias\n")
    assert opt_main([str(module), "--format-file", str(bad)]) == 1
    assert capsys.readouterr().err == f"rung-opt: error: {bad}:2:37: unexpected end of line; expected an integer\n"
