"""programmatic-launch: every kernel of a program lets the next one start early, and waits for the one before.

A decode step is hundreds of short kernels; between two of them a GPU idles while the next one is
launched, scheduled and set up. With programmatic stream serialization (sm_90), each kernel runs
griddepcontrol.launch_dependents first, so the next one's blocks are scheduled as soon as all of
this one's have started, and griddepcontrol.wait before it touches global memory, so it reads and
writes only once the kernel before it has completed and its writes are visible. Memory accesses stay
in stream order; only launch and scheduling overlap. The launcher launches a kernel that waits
programmatically (`waits_for_grid`); one that does not wait is never launched so.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from dialects import ptx


def waits_for_grid(kernel: ptx.KernelOp) -> bool:
    """Whether the kernel waits for the grid launched before it (griddepcontrol.wait in its body): only such a kernel
    may be launched programmatically."""
    return any(isinstance(op, ptx.GridDepWaitOp) for op in kernel.body.block.ops)


@dataclass(frozen=True)
class ProgrammaticLaunch(ModulePass):
    """Start every ptx.kernel with griddepcontrol.launch_dependents and griddepcontrol.wait (sm_90 and later), so that
    each kernel of a program is launched while the one before it runs (kernels that already wait are left as they are)."""

    name = "programmatic-launch"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for kernel in op.ops:
            if isinstance(kernel, ptx.KernelOp) and not waits_for_grid(kernel):
                block = kernel.body.block
                first = block.first_op
                for marker in (ptx.GridDepLaunchOp(), ptx.GridDepWaitOp()):
                    block.insert_op_before(marker, first) if first is not None else block.add_op(marker)
