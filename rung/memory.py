"""The memory plan of a compiled program: every intermediate tensor at an offset of one arena.

A lowered @main is a straight line of launches, weight packings and reshapes, so each buffer a
launch writes lives from that launch to its last reader (through any reshape of it). Buffers
whose lifetimes do not overlap share bytes; the offsets come from the greedy-by-size placement
(largest first, each at the lowest offset free for its whole lifetime), which is what TFLite's
and ONNX Runtime's planners do for static graphs. Results of @main are not in the arena: the
caller keeps them. A call allocates the arena once, instead of one tensor per intermediate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import func
from xdsl.ir import SSAValue

from dialects import graph as g
from dialects import ptx
from ir.dtypes import storage_dtype

ALIGN = 256  # bytes: every buffer starts where any vector access of any kernel may


@dataclass(frozen=True)
class Placement:
    """A buffer: written by step `first`, last read by step `last`, at `offset` of the arena."""

    value: SSAValue
    nbytes: int
    first: int
    last: int
    offset: int = 0

    def overlaps_in_time(self, other: "Placement") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class MemoryPlan:
    placements: dict  # launch result -> Placement
    arena_bytes: int

    @property
    def unshared_bytes(self) -> int:
        """What the intermediates would take with a buffer each."""
        return sum(p.nbytes for p in self.placements.values())

    def summary(self) -> str:
        n, total = len(self.placements), self.unshared_bytes
        return (f"{n} intermediate tensors in an arena of {self.arena_bytes / 2**20:.2f} MiB "
                f"({total / 2**20:.2f} MiB with a buffer each)")


def _nbytes(value: SSAValue) -> int:
    t = value.type
    return int(np.prod(t.get_shape(), dtype=np.int64)) * storage_dtype(t.element_type).itemsize


def plan_memory(fn: func.FuncOp) -> MemoryPlan:
    """The arena offsets of @main's launch results that it does not return."""
    steps = list(fn.body.block.ops)
    root: dict[SSAValue, SSAValue] = {}  # a reshape's result -> the buffer it views
    first: dict[SSAValue, int] = {}
    last: dict[SSAValue, int] = {}
    returned: set[SSAValue] = set()
    for i, op in enumerate(steps):
        for v in op.operands:
            buffer = root.get(v, v)
            if buffer in first:
                last[buffer] = i
            if isinstance(op, func.ReturnOp):
                returned.add(buffer)
        if isinstance(op, ptx.LaunchOp) and op.in_place is not None:  # the donated operand's buffer, not the arena's
            root[op.result] = root.get(op.operands[op.in_place.value.data], op.operands[op.in_place.value.data])
        elif isinstance(op, ptx.LaunchOp):
            first[op.result] = last[op.result] = i
        elif isinstance(op, g.ReshapeOp):
            root[op.results[0]] = root.get(op.operands[0], op.operands[0])
    buffers = [Placement(v, _nbytes(v), first[v], last[v]) for v in first if v not in returned]
    placed: list[Placement] = []
    for b in sorted(buffers, key=lambda b: (-b.nbytes, b.first)):
        offset = 0
        for other in sorted((p for p in placed if p.overlaps_in_time(b)), key=lambda p: p.offset):
            if offset + b.nbytes <= other.offset:
                break
            offset = max(offset, _aligned(other.offset + other.nbytes))
        placed.append(Placement(b.value, b.nbytes, b.first, b.last, offset))
    arena = max((p.offset + p.nbytes for p in placed), default=0)
    return MemoryPlan({p.value: p for p in placed}, _aligned(arena))


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN
