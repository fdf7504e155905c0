"""Data formats written as text: a format's bits in a line, from which Rung derives its numerics (ir.numerics), its
`lp` type, its packing and its register decoder (ir.packing), so a new format runs through quantize, graph.qlinear and
the kernels with no Python written.

    # a comment
    e3m2b2 = float exponent 3 mantissa 2 bias 2               # sign, 3 exponent and 2 mantissa bits; every code finite
    e4m3   = float exponent 4 mantissa 3 specials fn          # bias 2^(e-1) - 1 unless stated; fn: the all-ones codes are NaN
    e5m2   = float exponent 5 mantissa 2 specials ieee        # inf and NaN at the top exponent
    e8m0   = float exponent 8 mantissa 0 unsigned subnormals none specials fn ties up
    int5   = int bits 5                                       # two's complement; `unsigned` for plain binary
    t3     = table [-1, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1]   # 2^bits values in code order (nan, inf allowed)
    mxt3   = quant t3 group 32 scale e8m0                     # a quantization format: element, group (or channel),
    u5z    = quant uint5 group 64 scale f16 zero quantized    #   scale f16, bf16, f32 or e8m0, zero point mode

`load_formats(text)` and `load_format_file(path)` register the definitions (ir.numerics.register_format,
register_preset), after which `quant_format(name)` and the IR type `!lp.format<name>` know them. A definition equal to a
built-in one is accepted (the built-ins are written this way in examples/formats/builtin.fmt); one that gives a
built-in or registered name another meaning is an error. Every error names the text's line and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lark import Lark, Token, Transformer, UnexpectedInput, v_args
from lark.exceptions import VisitError
from lark.lexer import PatternStr

from ir.errors import RungError
from ir.numerics import ElementFormat, FormatError, QuantFormat, float_format, int_format, table_format

GRAMMAR = r"""
start: _NL? (definition _NL)*
definition: NAME "=" (float | integer | table | quant)

float: "float" "exponent" INT "mantissa" INT float_option*
float_option: "bias" SIGNED_INT          -> bias
            | "specials" SPECIALS        -> specials
            | "unsigned"                 -> unsigned
            | "subnormals" "none"        -> no_subnormals
            | "ties" "up"                -> ties_up
integer: "int" "bits" INT UNSIGNED?
table: "table" "[" _NL? number ("," _NL? number)* ","? _NL? "]"
quant: "quant" NAME "group" (INT | CHANNEL) "scale" NAME ("zero" NAME)?

number: SIGNED_NUMBER | /[+-]?(nan|inf)/
SPECIALS: "none" | "fn" | "ieee"
UNSIGNED: "unsigned"
CHANNEL: "channel"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
COMMENT: /#[^\n]*/
_NL: /(\r?\n[\t ]*(#[^\n]*)?)+/

%import common.INT
%import common.SIGNED_INT
%import common.SIGNED_NUMBER
%import common.WS_INLINE
%ignore WS_INLINE
%ignore COMMENT
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True)


@dataclass(frozen=True)
class Definition:
    """One line of format text: a name, what it defines (an element format or a quantization format), and where."""

    name: str
    format: ElementFormat | QuantFormat
    line: int
    column: int


class _Build(Transformer):
    """A definition's tree to a Definition; a format the numerics refuse raises _Located (its message, line and column)."""

    @v_args(meta=True)
    def definition(self, meta, children):
        name, make = str(children[0]), children[1]
        try:
            return Definition(name, make(name), meta.line, meta.column)
        except FormatError as e:
            raise _Located(str(e), meta.line, meta.column) from None

    def float(self, children):
        exp_bits, man_bits, *options = children
        opts = dict(options)
        return lambda name: float_format(name, int(exp_bits), int(man_bits), opts.get("bias"), opts.get("specials", "none"),
                                         signed="unsigned" not in opts, subnormals="no_subnormals" not in opts,
                                         ties_up="ties_up" in opts)

    def bias(self, children):
        return "bias", int(children[0])

    def specials(self, children):
        return "specials", str(children[0])

    def unsigned(self, _):
        return "unsigned", True

    def no_subnormals(self, _):
        return "no_subnormals", True

    def ties_up(self, _):
        return "ties_up", True

    def integer(self, children):
        bits, signed = int(children[0]), len(children) == 1
        return lambda name: int_format(bits, signed, name)

    def table(self, values):
        return lambda name: table_format(name, tuple(values))

    def number(self, children):
        return float(children[0])

    def quant(self, children):
        element, group, scale, *zero = (str(c) for c in children)
        return lambda _: QuantFormat(element, None if group == "channel" else int(group), scale, zero[0] if zero else "none")


class _Located(Exception):
    def __init__(self, message: str, line: int, column: int):
        super().__init__(message)
        self.line, self.column = line, column


def load_formats(text: str, source: str = "<formats>") -> list[Definition]:
    """Register the formats that `text` defines, one after another (a quantization format may name an element format
    defined above it), and return the definitions. Bad text, or a name that already means another format, is a
    RungError `source:line:col: what is wrong`, and registers nothing."""
    from ir.numerics import register_format, register_preset, unregister

    try:
        tree = _PARSER.parse(text if text.endswith("\n") else text + "\n")
    except UnexpectedInput as e:
        raise RungError(f"{source}:{e.line}:{e.column}: {_syntax_message(e)}") from None
    out: list[Definition] = []
    try:
        for node in tree.children:
            try:
                d = _Build().transform(node)
            except VisitError as e:  # (what a callback raised, wrapped by lark)
                if isinstance(e.orig_exc, _Located):
                    raise e.orig_exc from None
                raise
            first = next((o for o in out if o.name == d.name and type(o.format) is type(d.format)), None)
            if first is not None:
                raise _Located(f"{d.name} is defined twice (first at line {first.line})", d.line, d.column)
            try:
                (register_format if isinstance(d.format, ElementFormat) else register_preset)(d.name, d.format)
            except FormatError as e:
                raise _Located(str(e), d.line, d.column) from None
            out.append(d)
    except _Located as e:
        for d in out:
            unregister(d.name)
        raise RungError(f"{source}:{e.line}:{e.column}: {e}") from None
    return out


def load_format_file(path: str | Path) -> list[Definition]:
    """load_formats of a file, its errors naming it."""
    path = Path(path)
    if not path.is_file():
        raise RungError(f"{path}: no such format file")
    return load_formats(path.read_text(), str(path))


FORMATS_OPTION_HELP = "a file of formats defined as text (ir.format_text) to load first; may be given more than once"


def load_format_files(paths) -> None:
    """load_format_file of each path (a tool's --format-file)."""
    for path in paths:
        load_format_file(path)


def _syntax_message(e: UnexpectedInput) -> str:
    token = getattr(e, "token", None)
    if isinstance(token, Token):
        got = f"unexpected {str(token)!r}" if str(token).strip() else "unexpected end of line"
    else:
        got = "unexpected text"
    names = {"NAME": "a name", "INT": "an integer", "SIGNED_INT": "an integer", "SIGNED_NUMBER": "a number", "_NL": "the end of the line",
             "$END": "the end"}

    def spelled(terminal: str) -> str:
        pattern = _PARSER.get_terminal(terminal).pattern
        return names.get(terminal) or (repr(pattern.value) if isinstance(pattern, PatternStr) else terminal.lower())

    expected = getattr(e, "expected", None) or getattr(e, "allowed", None) or ()
    want = ", ".join(sorted({spelled(x) for x in expected}))
    return f"{got}{f'; expected {want}' if want else ''}"
