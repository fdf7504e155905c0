"""IR text: parsing that reports file:line:col, printing, and verification with located errors."""

from __future__ import annotations

import re
from contextlib import contextmanager
from io import StringIO

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.irdl import IRDLOperation
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import SymbolOpInterface, SymbolTable
from xdsl.utils.exceptions import DiagnosticException, ParseError, VerifyException
from xdsl.utils.lexer import Span
from xdsl.utils.mlir_lexer import MLIRLexer

from ir.errors import RungError

# xDSL's string-literal pattern nests a `+` inside a `*`, so an unterminated literal backtracks
# exponentially (30 letters took 73 s). The same language, one character per step, fails in linear time.
MLIRLexer._unescaped_characters_regex = re.compile(r'"(?:[^"\\\n\v\f]|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*"')


def print_ir(module: Operation) -> str:
    """The IR text of `module`, as rung-opt prints it."""
    out = StringIO()
    Printer(stream=out).print_op(module)
    return out.getvalue() + "\n"


def _line_col(span: Span) -> tuple[int, int]:
    text = span.input.content[: span.start]
    line = text.count("\n") + 1
    return line, span.start - (text.rfind("\n") + 1) + 1


class _LocatingParser(Parser):
    """A parser that remembers where each operation starts, for verifier messages."""

    def __init__(self, ctx: Context, text: str, name: str):
        super().__init__(ctx, text, name)
        self.starts: dict[int, Span] = {}

    def parse_operation(self) -> Operation:
        start = self._current_token.span
        op = super().parse_operation()
        self.starts[id(op)] = start
        return op


def parse_module(text: str, filename: str, ctx: Context) -> ModuleOp:
    """Parse and verify IR text in `ctx`; any problem is a RungError `file:line:col: message`."""
    parser = None
    try:
        parser = _LocatingParser(ctx, text, filename)  # (it lexes the first token already)
        module = parser.parse_module()
    except ParseError as e:
        line, col = _line_col(e.span)
        undefined = re.match(r"values used but not defined: \[(%[^\],]+)", e.msg)
        use = undefined and re.search(rf"(?<![\w.$-]){re.escape(undefined.group(1))}(?![\w.$-])", text)
        if use:  # xDSL reports undefined values at the end of the region: point at the first use
            line, col = text.count("\n", 0, use.start()) + 1, use.start() - text.rfind("\n", 0, use.start())
        raise RungError(f"{filename}:{line}:{col}: {e.msg}") from None
    except (VerifyException, DiagnosticException, ValueError, TypeError, NotImplementedError) as e:
        where = filename
        if parser:  # an attribute or type refused as it was built (or one xDSL cannot build): located at its last character
            end = len(text[:parser._current_token.span.start].rstrip()) - 1
            where += f":{text.count(chr(10), 0, end) + 1}:{end - text.rfind(chr(10), 0, end)}"
        raise RungError(f"{where}: {str(e).strip().splitlines()[-1]}") from None
    verify(module, lambda op: parser.starts.get(id(op)), filename)
    return module


def verify(module: ModuleOp, where=lambda op: None, filename: str = "<ir>") -> None:
    """Verify every op; the first failure is a RungError naming the op (and its position if known).
    First each op's own structure (operands, properties and types its definition declares), for all
    ops, then each op's checks, nested ops before the op that holds them: a check that reads
    another op (a block program its ops, a launch its kernel) never meets one missing a property."""
    ops = list(module.walk(region_first=True))
    with _indexed_symbols():
        _verify_ops(ops, where, filename)


@contextmanager
def _indexed_symbols():
    """xDSL looks a symbol up by scanning its table's ops each time, so verifying thousands of functions
    that call each other was quadratic (3,000: 25 s). While verifying, the IR does not change: each table
    is indexed once, and a name is a dictionary lookup."""
    scan, tables = SymbolTable.lookup_symbol, {}

    def lookup(op, name):
        anchor = op
        while anchor is not None and not anchor.has_trait(SymbolTable):
            anchor = anchor.parent_op()
        root = name if isinstance(name, str) else getattr(name, "data", None) or name.root_reference.data
        if anchor is None or getattr(name, "nested_references", None):
            return scan(op, name)
        if id(anchor) not in tables:
            tables[id(anchor)] = {}
            for o in anchor.regions[0].block.ops:
                if (symbol := o.get_trait(SymbolOpInterface)) is not None:
                    tables[id(anchor)].setdefault(symbol.get_sym_attr_name(o).data, o)
        return tables[id(anchor)].get(root)

    SymbolTable.lookup_symbol = staticmethod(lookup)
    try:
        yield
    finally:
        SymbolTable.lookup_symbol = staticmethod(scan)


def _verify_ops(ops: list[Operation], where, filename: str) -> None:
    for check in (_verify_structure, _verify_all):
        for op in ops:
            try:
                check(op)
            except (VerifyException, DiagnosticException, ValueError) as e:
                span = where(op)
                loc = f"{filename}:{':'.join(map(str, _line_col(span)))}" if span is not None else filename
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise RungError(f"{loc}: '{op.name}' op {msg}") from None


def _verify_structure(op: Operation) -> None:
    if isinstance(op, IRDLOperation):
        type(op).get_irdl_definition().verify(op)


def _verify_all(op: Operation) -> None:
    op.verify(verify_nested_ops=False)
    _verify_defined_before_use(op)


def _verify_defined_before_use(op: Operation) -> None:
    """An operand that an op of the same block defines comes from an op before this one (xDSL's
    parser takes a later definition; MLIR's blocks are ordered)."""
    for v in op.operands:
        owner = v.owner
        if isinstance(owner, Operation) and owner.parent is op.parent and op.parent is not None and not owner.is_before_in_block(op):
            raise VerifyException(f"uses %{v.name_hint or '?'} before '{owner.name}' defines it")


def ssa_name(name: str) -> str:
    """A name as an SSA value name: characters IR names allow, not starting with a digit."""
    return re.sub(r"^(?=[0-9])|[^A-Za-z0-9_.$-]", "_", name)
