"""The dialect registry: every Rung dialect in one xDSL context, and parsing IR text with it."""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.ir import Dialect

from dialects.graph import GRAPH
from dialects.lp import LP
from dialects.ptx import PTX
from dialects.tile import TILE
from dialects.warp import WARP
from ir.syntax import parse_module, print_ir, verify  # noqa: F401  (re-exported: the tools' whole text interface)

DIALECTS: dict[str, Dialect] = {d.name: d for d in (Builtin, Func, LP, GRAPH, TILE, WARP, PTX)}


def make_context() -> Context:
    ctx = Context()
    for d in DIALECTS.values():
        ctx.load_dialect(d)
    return ctx


def parse_ir(text: str, filename: str = "<stdin>", ctx: Context | None = None) -> ModuleOp:
    """Parse and verify IR text of Rung's dialects; any problem is a RungError `file:line:col: message`."""
    return parse_module(text, filename, ctx or make_context())
