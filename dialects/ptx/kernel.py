"""Structure: ptx.for, ptx.kernel, ptx.launch, and running a kernel on the lane simulator."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    SymbolNameConstraint,
    SymbolRefAttr,
    TensorType,
    i64,
)
from xdsl.ir import (
    Block,
    Region,
)
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import IsTerminator, NoTerminator
from xdsl.utils.exceptions import VerifyException

from dialects.ptx.base import KINDS, PtxOp, RegType, SinkOp, kind_of, reg
from ir.dtypes import storage_dtype
from ir.errors import RungError
from ir.simulator import DeviceMemory, run_grid, run_ops

# --- structure ----------------------------------------------------------------------------------------------


@irdl_op_definition
class YieldOp(SinkOp):
    """The values a ptx.for iteration carries to the next."""

    name = "ptx.yield"
    values = var_operand_def(RegType)
    traits = traits_def(IsTerminator())


@irdl_op_definition
class ForOp(PtxOp):
    """for (iv = lb; iv < ub; iv += step) with loop-carried registers; lb, ub, step are u32 and uniform."""

    name = "ptx.for"
    assembly_format = None  # a region: the generic form
    lb = operand_def(RegType)
    ub = operand_def(RegType)
    step = operand_def(RegType)
    inits = var_operand_def(RegType)
    results_ = var_result_def(RegType)
    body = region_def("single_block")

    @staticmethod
    def get(lb, ub, step, inits) -> "ForOp":
        block = Block(arg_types=[reg("u32")] + [v.type for v in inits])
        return ForOp.create(operands=[lb, ub, step, *inits], result_types=[v.type for v in inits], regions=[Region(block)])

    def verify_(self):
        term = self.body.block.last_op
        if not isinstance(term, YieldOp) or [v.type for v in term.values] != [v.type for v in self.inits]:
            raise VerifyException("ptx.for must end in a ptx.yield of its carried types")

    def simulate(self, cta, env: dict) -> None:
        lb, ub, step, *values = (env[v] for v in self.operands)
        if any((a != a[0]).any() for a in (lb, ub, step)):
            raise RungError("ptx.for bounds differ between threads (the loop must be uniform)")
        iv, *carried = self.body.block.args
        for i in range(int(lb[0]), int(ub[0]), int(step[0])):
            env[iv] = np.full(cta.threads, i, np.uint32)
            cta.check_writes(carried)
            env.update(zip(carried, values))
            run_ops(self.body.block, env, cta)
            values = [env[v] for v in self.body.block.last_op.values]
        env.update(zip(self.results, values))


STATIC_SHARED_LIMIT = 48 * 1024  # above this a kernel's shared memory is dynamic, opted into at launch


def dynamic_shared(shared_bytes: int) -> int:
    """Bytes of dynamic shared memory to request at launch for a kernel needing `shared_bytes` (0: static)."""
    return shared_bytes if shared_bytes > STATIC_SHARED_LIMIT else 0


@irdl_op_definition
class KernelOp(IRDLOperation):
    """A kernel entry: parameters are the entry block's arguments (u64 pointers or 32-bit values);
    `shared_bytes` of shared memory, static up to 48 KiB and dynamic above; `min_blocks` (.minnctapersm):
    the blocks per multiprocessor ptxas budgets registers for (without it ptxas may cap a kernel with many
    live registers low and spill)."""

    name = "ptx.kernel"
    sym_name = prop_def(SymbolNameConstraint())
    threads = prop_def(IntegerAttr)
    shared_bytes = prop_def(IntegerAttr)
    min_blocks = opt_prop_def(IntegerAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    @property
    def dynamic_shared_bytes(self) -> int:
        """Bytes to request at launch (0 when the shared memory is static)."""
        return dynamic_shared(self.shared_bytes.value.data)

    @staticmethod
    def get(name: str, param_kinds: list[str], threads: int, shared_bytes: int = 0, min_blocks: int = 0) -> "KernelOp":
        props = {"sym_name": StringAttr(name), "threads": IntegerAttr(threads, i64), "shared_bytes": IntegerAttr(shared_bytes, i64)}
        if min_blocks:
            props["min_blocks"] = IntegerAttr(min_blocks, i64)
        return KernelOp.create(properties=props, regions=[Region(Block(arg_types=[reg(k) for k in param_kinds]))])


@irdl_op_definition
class LaunchOp(IRDLOperation):
    """A kernel launch on tensors: the kernel's pointer parameters are the operands then the
    result; its 32-bit parameters are `dims`; `grid` thread blocks of the kernel's threads. With
    `in_place` i, the result is operand i's buffer, which the kernel updates (the operand is donated:
    nothing reads it after the launch but through the result)."""

    name = "ptx.launch"
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    kernel = prop_def(SymbolRefAttr)
    grid = prop_def(DenseArrayBase)
    dims = prop_def(DenseArrayBase)
    in_place = opt_prop_def(IntegerAttr)
    assembly_format = "$kernel `(` $inputs `)` attr-dict `:` functional-type($inputs, results)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(kernel: str, inputs, result_type, grid, dims, in_place: int | None = None) -> "LaunchOp":
        props = {"kernel": SymbolRefAttr(kernel), "grid": DenseArrayBase.from_list(i64, list(grid)), "dims": DenseArrayBase.from_list(i64, list(dims))}
        if in_place is not None:
            props["in_place"] = IntegerAttr(in_place, i64)
        return LaunchOp.create(operands=list(inputs), result_types=[result_type], properties=props)

    def kernel_op(self) -> "KernelOp":
        module = self.parent_op()
        while module is not None and not isinstance(module, ModuleOp):
            module = module.parent_op()
        name = self.kernel.root_reference.data
        for op in module.ops if module is not None else ():
            if isinstance(op, KernelOp) and op.sym_name.data == name:
                return op
        raise VerifyException(f"no ptx.kernel @{name} in the module")

    def verify_(self):
        kernel = self.kernel_op()
        kinds = [kind_of(a) for a in kernel.body.block.args]
        want = ["u64"] * (len(self.inputs) + 1) + ["u32"] * len(self.dims.get_values())
        if kinds != want:
            raise VerifyException(f"@{kernel.sym_name.data} takes parameters {kinds}, the launch gives {want}")
        if self.in_place is not None and (not 0 <= self.in_place.value.data < len(self.inputs)
                                          or self.inputs[self.in_place.value.data].type != self.result.type):
            raise VerifyException(f"ptx.launch in place of operand {self.in_place.value.data} needs an operand of the result's type")

    def execute(self, *inputs):
        mem = DeviceMemory()
        ptrs = [mem.alloc(np.asarray(v).astype(storage_dtype(o.type.element_type))) for v, o in zip(inputs, self.inputs)]
        out_type = self.result.type
        out = np.full(out_type.get_shape(), np.nan, storage_dtype(out_type.element_type)) if self.in_place is None else \
            np.array(inputs[self.in_place.value.data], storage_dtype(out_type.element_type))  # poisoned, or the updated operand
        ptrs.append(mem.alloc(out))
        run_kernel(self.kernel_op(), tuple(self.grid.get_values()), ptrs + list(self.dims.get_values()), mem)
        return mem.read(ptrs[-1], out)


def run_kernel(kernel: KernelOp, grid: tuple[int, ...], params: list, memory: DeviceMemory) -> None:
    """Simulate a ptx.kernel over `grid` thread blocks; `params` are ints (addresses from `memory`)."""
    args = kernel.body.block.args
    if len(params) != len(args):
        raise RungError(f"kernel @{kernel.sym_name.data} takes {len(args)} parameters, got {len(params)}")
    typed = {a: KINDS[kind_of(a)](p) for a, p in zip(args, params)}
    run_grid(kernel.body.block, kernel.threads.value.data, kernel.shared_bytes.value.data, grid, typed, memory)
