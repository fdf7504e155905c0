"""One interpreter for every level: it walks a function and runs each op's `execute` on numpy.

Values are numpy arrays in the storage of their tensor type (ir.dtypes); ops compute on
`compute_view`s of them and every result is rounded to its element type by `to_storage`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import SSAValue

from ir.dtypes import compute_view, storage_dtype, tensor_problem, to_storage
from ir.errors import RungError


def max_elements() -> int:
    """The most elements one tensor of the interpreter may hold (RUNG_MAX_ELEMENTS, default 2^28):
    a program asking for more is refused before anything is allocated."""
    return int(os.environ.get("RUNG_MAX_ELEMENTS", 1 << 28))


def check_size(t, what: str) -> None:
    """A tensor type the interpreter can hold: static, of an element type it stores, within its size limit."""
    if problem := tensor_problem(t):
        raise RungError(f"{what}: {problem}")
    if isinstance(t, TensorType) and (n := int(np.prod(t.get_shape(), dtype=object))) > max_elements():
        raise RungError(f"{what} is {t}: {n:,} elements, more than the interpreter's limit of {max_elements():,} "
                        "(RUNG_MAX_ELEMENTS raises it)")


def find_function(module: ModuleOp, name: str) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == name:
            if not op.body.blocks:
                raise RungError(f"@{name} is a declaration: it has no body to run or lower")
            return op
    names = [op.sym_name.data for op in module.ops if isinstance(op, func.FuncOp)]
    raise RungError(f"no function @{name} in the module (functions: {', '.join('@' + n for n in names) or 'none'})")


def _check_input(i: int, value, t) -> np.ndarray:
    arr = np.asarray(value)
    if not isinstance(t, TensorType):
        raise RungError(f"argument {i} has type {t}; only tensor arguments can be passed")
    check_size(t, f"argument {i}")
    if arr.shape != tuple(t.get_shape()):
        raise RungError(f"argument {i}: expected shape {list(t.get_shape())} ({t}), got {list(arr.shape)}")
    want = storage_dtype(t.element_type)
    if arr.dtype != want and not np.can_cast(arr.dtype, want, "same_kind"):
        raise RungError(f"argument {i}: expected {t.element_type} elements, got numpy {arr.dtype}")
    return to_storage(arr, t)


def run_function(fn: func.FuncOp, inputs: Sequence, functions: dict[str, func.FuncOp] | None = None) -> list[np.ndarray]:
    """Execute `fn`; a func.call finds its callee by name in `functions` (the module's, indexed once)."""
    args = fn.body.block.args
    if len(inputs) != len(args):
        raise RungError(f"@{fn.sym_name.data} takes {len(args)} arguments, got {len(inputs)}")
    env: dict[SSAValue, np.ndarray] = {a: _check_input(i, v, a.type) for i, (a, v) in enumerate(zip(args, inputs))}
    for r in (r for op in fn.body.block.ops for r in op.results):
        check_size(r.type, f"the result of '{r.owner.name}'")
    for op in fn.body.block.ops:
        vals = [env[o] for o in op.operands]
        if isinstance(op, func.ReturnOp):
            return vals
        if isinstance(op, func.CallOp):
            callee = (functions or {}).get(op.callee.root_reference.data)
            if callee is None or not callee.body.blocks:
                raise RungError(f"func.call: no function @{op.callee.root_reference.data} with a body to run")
            outs = run_function(callee, vals, functions)
        elif hasattr(op, "execute"):
            try:
                outs = op.execute(*map(compute_view, vals))
            except (IndexError, FloatingPointError, ValueError) as e:
                raise RungError(f"'{op.name}' failed at run time: {e}") from None
            outs = outs if isinstance(outs, tuple) else (outs,)
        else:
            raise RungError(f"the interpreter cannot execute '{op.name}'")
        for r, v in zip(op.results, outs):
            env[r] = to_storage(v, r.type)
    raise RungError(f"@{fn.sym_name.data} has no func.return")


def run(module: ModuleOp, inputs: Sequence, name: str = "main") -> list[np.ndarray]:
    """Execute function @name of `module` on numpy inputs; returns its results."""
    with np.errstate(all="ignore"):
        functions = {op.sym_name.data: op for op in module.ops if isinstance(op, func.FuncOp)}
        return run_function(find_function(module, name), inputs, functions)
