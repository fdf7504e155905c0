"""`rung.compile`: a function of IR text lowered to Rung's kernels, run on the GPU or the CPU simulator.

    fn = rung.compile(ir_text)                 # @main through the lower-to-ptx pipeline
    y = fn(x, w)                               # CUDA tensors: on that GPU; numpy arrays: on the CPU lane simulator
    fn.path                                    # which kernels run, in words
    fn.ptx                                     # the PTX module of its kernels

The pipeline runs once, at compile time: lower-to-ptx (graph-to-tile for the target,
tile-expand, tile-to-warp, smem-swizzle, warp-to-ptx). What is left of @main are ptx.launch ops
(kernels on device buffers), tile.pack_weight (Ladder's weight transform, run once per weight on
the CPU) and graph.reshape (views); any other op has no kernel yet and is an error naming it. A call
runs the same launches on whichever device its arguments live on (backend.device).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from backend.device import CudaDevice, SimulatorDevice, device_kind
from backend.gemm import describe_gemm
from backend.ptx_text import module_text
from dialects import graph as g
from dialects import ptx
from dialects import tile as t
from ir.dtypes import storage_dtype
from ir.errors import RungError
from ir.interpreter import find_function
from ir.targets import check_target
from lowering.lower_to_ptx import check_lowered
from rung.context import make_context, parse_ir
from rung.passes import run_pipeline


@dataclass
class CompiledFunction:
    """@main lowered to kernel launches; call it on CUDA tensors or on numpy arrays."""

    module: ModuleOp  # the lowered module: @main and its ptx.kernels
    target: str
    descriptions: dict  # kernel name -> what it does, in words
    ptx: str = field(repr=False)
    _packed: dict = field(default_factory=dict, repr=False)  # tile.pack_weight results by (op, device, weights' identity)
    _gpus: dict = field(default_factory=dict, repr=False)  # CudaDevice by ordinal, kernels loaded once

    @property
    def function(self) -> func.FuncOp:
        return find_function(self.module, "main")

    @property
    def steps(self) -> list:
        """@main's ops in order: ptx.launch, tile.pack_weight, graph.reshape."""
        return [op for op in self.function.body.block.ops if not isinstance(op, func.ReturnOp)]

    @property
    def path(self) -> str:
        return "; ".join(self.descriptions[op.kernel.root_reference.data] for op in self.steps if isinstance(op, ptx.LaunchOp))

    def __call__(self, *args):
        fn = self.function
        params = list(fn.body.block.args)
        if len(args) != len(params):
            raise RungError(f"@main takes {len(params)} tensors, got {len(args)}")
        ordinal = device_kind(args)
        device = SimulatorDevice() if ordinal is None else self._gpus.setdefault(ordinal, CudaDevice(self.ptx, ordinal))
        env = {p: device.put(_checked(i, a, p.type)) for i, (a, p) in enumerate(zip(args, params))}
        results = []
        for op in fn.body.block.ops:
            vals = [env[v] for v in op.operands]
            if isinstance(op, ptx.LaunchOp):
                out_type = op.result.type
                env[op.result] = device.empty(out_type.get_shape(), storage_dtype(out_type.element_type))
                device.launch(op.kernel_op(), op.grid.get_values(), [*vals, env[op.result]], list(op.dims.get_values()))
            elif isinstance(op, t.PackWeightOp):
                env.update(zip(op.results, self._pack(op, device, vals)))
            elif isinstance(op, g.ReshapeOp):
                env[op.results[0]] = device.view(vals[0], op.results[0].type.get_shape())
            elif isinstance(op, func.ReturnOp):
                results = vals
        outs = tuple(device.get(r) if ordinal is None else r for r in results)
        return outs[0] if len(outs) == 1 else outs

    def _pack(self, op, device, weights) -> tuple:
        """The packed weight (Ladder's offline transform, on the CPU) for these weights: on a GPU made
        once per weight (by its storage and version), on the simulator every call."""
        key = (op, device.ordinal, *((w.data_ptr(), w._version) for w in weights)) if isinstance(device, CudaDevice) else None
        if key in self._packed:
            return self._packed[key]
        host = [np.asarray(device.get(w), np.float32) for w in weights]
        packed = tuple(device.put(np.ascontiguousarray(a).astype(storage_dtype(r.type.element_type)))
                       for a, r in zip(op.execute(*host), op.results))
        if key is not None:
            self._packed[key] = packed
        return packed


def _checked(i: int, value, t):
    """An argument of the type @main declares (shape, element storage, contiguous, aligned), or a RungError."""
    shape, want = list(value.shape), storage_dtype(t.element_type)
    if shape != list(t.get_shape()) or str(value.dtype).removeprefix("torch.") != want.name:
        raise RungError(f"argument {i}: expected {t}, got {shape} {value.dtype}")
    if isinstance(value, np.ndarray):
        return value
    if not value.is_contiguous() or value.data_ptr() % 16:
        raise RungError(f"argument {i} must be contiguous and 16-byte aligned")
    return value


def describe(program, target: str) -> str:
    """What a block program (tile.kernel) does, in words."""
    schedule = program.schedule
    if isinstance(schedule, t.GemmSchedule):
        return describe_gemm(schedule.data, target, pdl=False)
    cfg = schedule.data
    return f"{program.sym_name.data}: a row program, a block of {cfg.threads} threads per row of {cfg.cols}, built for {target}"


def compile(module_or_text, target: str | None = None) -> CompiledFunction:
    """Lower @main to kernels for `target` (default: the GPU's, or sm_80 on a machine without one).

    Every op of @main must become a kernel launch, a weight packing or a reshape; anything else is
    an error naming the op, never a silent fallback."""
    ctx = make_context()
    if not isinstance(module_or_text, (str, ModuleOp)):
        raise RungError(f"rung.compile takes IR text or a module, got {type(module_or_text).__name__}")
    module = parse_ir(module_or_text, "<rung.compile>", ctx) if isinstance(module_or_text, str) else module_or_text.clone()
    target = check_target(target or _default_target())
    run_pipeline(module, f"graph-to-tile{{target={target}}},tile-expand", ctx)
    descriptions = {k.sym_name.data: describe(k, target) for k in module.ops if isinstance(k, t.KernelOp)}
    run_pipeline(module, "tile-to-warp,smem-swizzle,warp-to-ptx", ctx)
    check_lowered(module, "rung.compile")
    for op in module.ops:
        if isinstance(op, ptx.KernelOp) and op.sym_name.data not in descriptions:
            descriptions[op.sym_name.data] = f"{op.sym_name.data}: the split-K reduction, built for {target}"
    return CompiledFunction(module, target, descriptions, module_text(module, target))


def _default_target() -> str:
    try:
        import torch
    except ImportError:
        return "sm_80"
    if not torch.cuda.is_available():
        return "sm_80"
    from backend.gemm import device_target

    return device_target()
