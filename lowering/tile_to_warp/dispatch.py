"""How tile-to-warp's lowerings go through a block program: by op class, an unknown op a diagnostic."""

from __future__ import annotations

from ir.errors import RungError


def lower_each(lowering, ops, op_classes: tuple, program, kind: str) -> None:
    """Call `lowering._<op name>(op)` for each op in order; an op whose class is not in `op_classes`
    is a RungError naming it, the kernel and the kind of program."""
    for op in ops:
        if not isinstance(op, op_classes):
            raise RungError(f"tile-to-warp: @{program.sym_name.data}: no lowering for '{op.name}' in a {kind} block program")
        getattr(lowering, "_" + op.name.removeprefix("tile."))(op)
