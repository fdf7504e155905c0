"""`rung.compile`: a function of IR text lowered to Rung's kernels, run on the GPU or the CPU simulator.

    fn = rung.compile(ir_text)                 # @main through the lower-to-ptx pipeline
    y = fn(x, w)                               # CUDA tensors: on that GPU; numpy arrays: on the CPU lane simulator
    fn.path                                    # which kernels run, in words
    fn.ptx                                     # the PTX module of its kernels
    fn.memory.summary()                        # the one arena a call allocates for its intermediates
    replay = fn.capture(x, w); y = replay(x2, w)  # the whole call as one CUDA graph

An argument that a graph.index_copy alone reads (a KV cache) is donated: the call updates it in place and
returns it as that op's result. An argument that a weight packing alone reads (tile.pack_weight: a quantized weight's codes,
scales and zeros; tile.pack_sparse: a sparse one's values, positions and offsets; `fn.host_weights`) may be a numpy
array beside CUDA tensors: packed on the host once and uploaded packed.

The pipeline runs once, at compile time: lower-to-ptx (fold-constants, raise-norms, raise-rope, raise-attention, conv-to-gemm, graph-to-tile for the target,
tile-expand, tile-to-warp, smem-swizzle, warp-to-ptx). What is left of @main are ptx.launch ops
(kernels on device buffers), tile.pack_weight (Ladder's weight transform, run once per weight on
the CPU), graph.reshape (views) and graph.constant (uploaded once); any other op has no kernel yet
and is an error naming it. A call
runs the same launches on whichever device its arguments live on (backend.device).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from backend.device import BY_BITS, CudaDevice, SimulatorDevice, device_kind
from backend.gemm import describe_gemm
from backend.ptx_text import module_text
from dialects import graph as g
from dialects import ptx
from dialects import tile as t
from ir.dtypes import storage_dtype
from ir.errors import RungError, progress_bar
from ir.interpreter import find_function
from ir.targets import check_target, programmatic_launch
from lowering.fold_constants import constant_value
from lowering.lower_to_ptx import GRAPH_PASSES, PACK_OPS, check_lowered
from rung.context import make_context, parse_ir
from rung.memory import MemoryPlan, plan_memory
from rung.passes import run_pipeline


@dataclass
class CompiledFunction:
    """@main lowered to kernel launches; call it on CUDA tensors or on numpy arrays."""

    module: ModuleOp  # the lowered module: @main and its ptx.kernels
    target: str
    descriptions: dict  # kernel name -> what it does, in words
    ptx: str = field(repr=False)
    _packed: dict = field(default_factory=dict, repr=False)  # tile.pack_weight results by (format, dtype, device, weights' identity)
    _gpus: dict = field(default_factory=dict, repr=False)  # CudaDevice by ordinal, kernels loaded once
    _constants: dict = field(default_factory=dict, repr=False)  # (ordinal, value) -> the constant on that GPU

    @cached_property
    def function(self) -> func.FuncOp:
        return find_function(self.module, "main")

    @property
    def steps(self) -> list:
        """@main's ops in order: ptx.launch, tile.pack_weight, graph.reshape, graph.constant."""
        return [op for op in self.function.body.block.ops if not isinstance(op, func.ReturnOp)]

    @property
    def path(self) -> str:
        return "; ".join(self.descriptions[op.kernel.root_reference.data] for op in self.steps if isinstance(op, ptx.LaunchOp))

    @cached_property
    def memory(self) -> MemoryPlan:
        """Where each intermediate tensor lives in the one arena a call allocates."""
        return plan_memory(self.function)

    @cached_property
    def _program(self) -> list[tuple]:
        """@main's steps with everything a call needs resolved once (kernels, grids, sizes, types, arena
        offsets): ("launch", kernel, grid, dims, out shape, out dtype, where (an arena offset, the operand a launch in
        place updates, or None: a buffer of its own), operands, result),
        ("pack", op, operands, results), ("view", shape, operand, result), ("constant", value, result), ("return", operands)."""
        plan, steps = self.memory, []
        for op in self.function.body.block.ops:
            if isinstance(op, ptx.LaunchOp):
                out = op.result.type
                placed = plan.placements.get(op.result)
                where = op.operands[op.in_place.value.data] if op.in_place is not None else placed.offset if placed else None
                steps.append(("launch", op.kernel_op(), tuple(op.grid.get_values()), list(op.dims.get_values()), tuple(out.get_shape()),
                              storage_dtype(out.element_type), where, list(op.operands), op.result))
            elif isinstance(op, PACK_OPS):
                steps.append(("pack", op, list(op.operands), list(op.results)))
            elif isinstance(op, g.ReshapeOp):
                steps.append(("view", tuple(op.results[0].type.get_shape()), op.operands[0], op.results[0]))
            elif isinstance(op, g.ConstantOp):
                steps.append(("constant", np.ascontiguousarray(constant_value(op)), op.results[0]))
            elif isinstance(op, func.ReturnOp):
                steps.append(("return", list(op.operands)))
        return steps

    @cached_property
    def host_weights(self) -> frozenset[int]:
        """Indices of @main's arguments that only a weight packing reads (tile.pack_weight: a quantized weight's codes,
        scales and zeros; tile.pack_sparse: a sparse one's values, positions and offsets): on a GPU call they may stay
        numpy arrays, packed on the host once (by the array's identity: do not change one in place) and uploaded
        packed, so the unpacked weight takes no GPU memory."""
        return frozenset(i for i, p in enumerate(self.function.body.block.args)
                         if p.uses and all(isinstance(use.operation, PACK_OPS) for use in p.uses))

    def _device_of(self, args) -> int | None:
        """device_kind of the arguments, host weights (numpy, host_weights) aside when the others are CUDA tensors."""
        on_device = [a for i, a in enumerate(args) if not (i in self.host_weights and isinstance(a, np.ndarray))]
        return device_kind(on_device) if on_device else None

    @cached_property
    def _parameters(self) -> list[tuple]:
        """(shape, storage dtype name) of each argument @main declares."""
        return [(tuple(p.type.get_shape()), storage_dtype(p.type.element_type).name) for p in self.function.body.block.args]

    def __call__(self, *args):
        params = list(self.function.body.block.args)
        if len(args) != len(params):
            raise RungError(f"@main takes {len(params)} tensors, got {len(args)}")
        ordinal = self._device_of(args)
        if ordinal is None:
            device = SimulatorDevice()
        elif ordinal not in self._gpus:  # (a CudaDevice asks the driver about the GPU: once)
            device = self._gpus[ordinal] = CudaDevice(self.ptx, ordinal)
        else:
            device = self._gpus[ordinal]
        env = {p: _checked(i, a, p.type, want) for i, (a, p, want) in enumerate(zip(args, params, self._parameters))}
        env = {p: a if ordinal is not None and isinstance(a, np.ndarray) else device.put(a) for p, a in env.items()}  # (host weights)
        if ordinal is not None:
            self._pack_missing(device, env)
        arena = device.empty((self.memory.arena_bytes,), np.uint8) if self.memory.arena_bytes else None
        results = []
        for step in self._program:
            if step[0] == "launch":
                _, kernel, grid, dims, shape, dtype, where, operands, result = step
                env[result] = device.empty(shape, dtype) if where is None else env[where] if isinstance(where, SSAValue) else \
                    device.at(arena, where, shape, dtype)
                device.launch(kernel, grid, [*(env[v] for v in operands), env[result]], dims)
            elif step[0] == "pack":
                _, op, operands, packed = step
                env.update(zip(packed, self._pack(op, device, [env[v] for v in operands])))
            elif step[0] == "constant":  # on a GPU uploaded once, like a packed weight
                _, value, result = step
                key = (ordinal, result)
                env[result] = self._constants[key] if key in self._constants else device.put(value)
                if ordinal is not None:
                    self._constants[key] = env[result]
            elif step[0] == "view":
                _, shape, operand, result = step
                env[result] = device.view(env[operand], shape)
            else:
                results = [env[v] for v in step[1]]
        outs = tuple(device.get(r) if ordinal is None else r for r in results)
        return outs[0] if len(outs) == 1 else outs

    def capture(self, *args) -> "CapturedFunction":
        """The whole call recorded once as one CUDA graph on `args` (CUDA tensors), which stay its inputs:
        a replay takes tensors of the same types, copying each one that is not already the recorded
        input (pass the weights as recorded and only the activations are copied)."""
        import torch

        ordinal = self._device_of(args)
        if ordinal is None:
            raise RungError("capture records a CUDA graph: pass CUDA tensors (numpy arrays run on the simulator)")
        stream = torch.cuda.Stream(ordinal)
        stream.wait_stream(torch.cuda.current_stream(ordinal))
        with torch.cuda.stream(stream):
            self(*args)  # loads the kernels and packs the weights, neither of which a capture may do
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            outs = self(*args)
        return CapturedFunction(graph, args, outs)

    def _pack(self, op, device, weights) -> tuple:
        """The packed weight (Ladder's offline transform, on the CPU) for these weights: on a GPU made
        once per weight (by its storage and version; _pack_missing makes them all at a first call), on the
        simulator every call."""
        key = _pack_key(op, device, weights)
        if key in self._packed:
            return self._packed[key]
        packed = _upload(op, device, _packed_on_host(op, device, weights))
        if key is not None:
            self._packed[key] = packed
        return packed

    def _pack_missing(self, device, env: dict) -> None:
        """Every weight of the call not packed for this GPU yet, packed at once on several threads (numpy leaves the
        interpreter lock while it works): a model's many weights in seconds, not one after another."""
        todo = {}
        for step in self._program:
            if step[0] == "pack":
                weights = [env[v] for v in step[2]]
                key = _pack_key(step[1], device, weights)
                if key not in self._packed:
                    todo.setdefault(key, (step[1], weights))
        if not todo:
            return
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            arrays = pool.map(lambda item: _packed_on_host(item[0], device, item[1]), todo.values())
            for key, (op, _), host in zip(todo, todo.values(), progress_bar(arrays, len(todo), "packed weights")):
                self._packed[key] = _upload(op, device, host)


def _pack_key(op, device, weights) -> tuple | None:
    """What a packed weight on a GPU is cached by (None on the simulator, which packs at every call): a CUDA tensor's
    storage and version, a host weight's identity (the key holds the array, so the identity stays its own)."""
    if not isinstance(device, CudaDevice):
        return None
    return (op.packing, device.ordinal, *(_Identity(w) if isinstance(w, np.ndarray) else (w.data_ptr(), w._version) for w in weights))


@dataclass(frozen=True, eq=False)
class _Identity:
    """A key part equal only to a key part holding the same array: it hashes and compares by the array's identity, and
    keeps the array alive (so no other array takes its id while the key stands)."""

    array: np.ndarray

    def __hash__(self):
        return id(self.array)

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.array is self.array


def _packed_on_host(op, device, weights) -> tuple:
    """The packing op run on the host: floating-point weights widened to f32, integer ones (codes, positions) as they are."""
    arrays = [np.asarray(w if isinstance(w, np.ndarray) else device.get(w)) for w in weights]
    packed = op.execute(*(a.astype(np.float32) if a.dtype.kind == "f" or a.dtype.name in BY_BITS else a for a in arrays))
    return packed if isinstance(packed, tuple) else (packed,)


def _upload(op, device, arrays) -> tuple:
    return tuple(device.put(np.ascontiguousarray(a).astype(storage_dtype(r.type.element_type))) for a, r in zip(arrays, op.results))


@dataclass
class CapturedFunction:
    """A compiled call recorded as a CUDA graph (CompiledFunction.capture). Its results are the recorded
    output tensors: the next replay overwrites them (clone one to keep it)."""

    graph: object
    inputs: tuple
    outputs: object

    def __call__(self, *args):
        if len(args) != len(self.inputs):
            raise RungError(f"the captured @main takes {len(self.inputs)} tensors, got {len(args)}")
        for i, (a, recorded) in enumerate(zip(args, self.inputs)):
            if a is not recorded:
                if a.shape != recorded.shape or a.dtype != recorded.dtype or a.device != recorded.device:
                    raise RungError(f"argument {i}: the graph was captured on {list(recorded.shape)} {recorded.dtype} "
                                    f"on {recorded.device}, got {list(a.shape)} {a.dtype} on {a.device}")
                recorded.copy_(a)
        self.graph.replay()
        return self.outputs


def _checked(i: int, value, t, expected: tuple):
    """An argument of the type @main declares (shape, element storage, contiguous, aligned), or a RungError;
    `expected` is (shape, storage dtype name) of `t`."""
    shape, want = tuple(value.shape), expected
    if shape != want[0] or str(value.dtype).removeprefix("torch.") != want[1]:
        raise RungError(f"argument {i}: expected {t}, got {list(shape)} {value.dtype}")
    if isinstance(value, np.ndarray):
        return value
    if not value.is_contiguous() or value.data_ptr() % 16:
        raise RungError(f"argument {i} must be contiguous and 16-byte aligned")
    return value


def describe(program, target: str) -> str:
    """What a block program (tile.kernel) does, in words."""
    schedule = program.schedule
    if isinstance(schedule, t.GemmSchedule):
        return describe_gemm(schedule.data, target)
    cfg = schedule.data
    if isinstance(schedule, t.AttentionSchedule):
        return (f"{program.sym_name.data}: attention, a block of {cfg.threads} threads per {cfg.block_m} query rows of a head, "
                f"keys {cfg.block_n} at a time, built for {target}")
    per = f"a block of {cfg.threads} threads per row" if cfg.rows == 1 else f"a block of {cfg.rows} rows, a warp each,"
    return f"{program.sym_name.data}: a row program, {per} of {cfg.cols}, built for {target}"


def compile(module_or_text, target: str | None = None, packed: dict | None = None, programmatic: bool = True) -> CompiledFunction:
    """Lower @main to kernels for `target` (default: the GPU's, or sm_80 on a machine without one). `packed`: a cache
    of packed weights to share with other compiled functions on the same weights (a prefill and a decode step).
    `programmatic` (sm_90): each kernel is launched while the one before runs (programmatic-launch, early_weights);
    False launches them one after another, as before sm_90.

    Every op of @main must become a kernel launch, a weight packing or a reshape; anything else is
    an error naming the op, never a silent fallback."""
    ctx = make_context()
    if not isinstance(module_or_text, (str, ModuleOp)):
        raise RungError(f"rung.compile takes IR text or a module, got {type(module_or_text).__name__}")
    module = parse_ir(module_or_text, "<rung.compile>", ctx) if isinstance(module_or_text, str) else module_or_text.clone()
    target = check_target(target or _default_target())
    programmatic = programmatic and programmatic_launch(target)
    run_pipeline(module, ",".join(p.name for p in GRAPH_PASSES) + f",graph-to-tile{{target={target} programmatic={str(programmatic).lower()}}},"
                 "tile-expand", ctx)
    descriptions = {k.sym_name.data: describe(k, target) for k in module.ops if isinstance(k, t.KernelOp)}
    run_pipeline(module, "tile-to-warp,smem-swizzle,warp-to-ptx" + (",programmatic-launch" if programmatic else ""), ctx)
    check_lowered(module, "rung.compile")
    for op in module.ops:  # the kernels tile-to-warp generates whole
        name = op.sym_name.data if isinstance(op, ptx.KernelOp) else None
        if name is not None and name not in descriptions:
            what = ("the attention's key splits merged" if name.startswith("rung_attention_merge") else
                    "a cache's rows written in place" if name.startswith("rung_write_rows") else "the split-K reduction")
            descriptions[name] = f"{name}: {what}, built for {target}"
    return CompiledFunction(module, target, descriptions, module_text(module, target), {} if packed is None else packed)


def _default_target() -> str:
    try:
        import torch
    except ImportError:
        return "sm_80"
    if not torch.cuda.is_available():
        return "sm_80"
    from backend.gemm import device_target

    return device_target()
