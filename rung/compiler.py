"""`rung.compile`: a function of IR text scheduled on Rung's kernels, called on torch CUDA tensors.

    fn = rung.compile(ir_text)                 # @main scheduled by graph-to-tile
    y = fn(x, w)                               # fn.path says which kernels run
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects import func

from backend.gemm import device_target, gemm_kernels
from dialects import graph as g
from dialects.tile import MatmulOp, PackWeightOp
from ir.errors import RungError
from ir.interpreter import find_function
from ir.targets import check_target
from rung.context import make_context, parse_ir
from rung.passes import run_pipeline


@dataclass
class CompiledFunction:
    """@main scheduled on tensor-core kernels; call it on torch CUDA tensors."""

    steps: list  # (op, GemmKernels or None) in program order: tile.matmul launches, tile.pack_weight, graph.reshape views
    arg_types: list
    results: list
    _packed: dict = field(default_factory=dict, repr=False)  # tile.pack_weight results by (op, weights' identity and version)

    @property
    def path(self) -> str:
        return "; ".join(k.path for _, k in self.steps if k is not None)

    def __call__(self, *args):
        import torch

        if len(args) != len(self.arg_types):
            raise RungError(f"@main takes {len(self.arg_types)} tensors, got {len(args)}")
        env = {}
        for i, (value, arg) in enumerate(zip(args, self.arg_types)):
            if not isinstance(value, torch.Tensor) or not value.is_cuda:
                raise RungError(f"argument {i} must be a CUDA tensor")
            if list(value.shape) != list(arg.type.get_shape()) or value.dtype != torch_dtype(arg.type.element_type):
                raise RungError(f"argument {i}: expected {arg.type}, got {list(value.shape)} {value.dtype}")
            if not value.is_contiguous() or value.data_ptr() % 16:
                raise RungError(f"argument {i} must be contiguous and 16-byte aligned")
            env[arg] = value
        for op, kernels in self.steps:
            vals = [env[o] for o in op.operands]
            if isinstance(op, PackWeightOp):
                env.update(zip(op.results, self._pack(op, vals)))
            elif isinstance(op, MatmulOp):
                (m, k), n = op.x.type.get_shape(), op.result.type.get_shape()[1]
                out = torch.empty((m, n), dtype=vals[0].dtype, device=vals[0].device)
                kernels.launch({**{p: v.data_ptr() for p, v in zip(op.operand_names, vals)}, "c": out.data_ptr()}, m, n, k, out)
                env[op.result] = out
            else:  # graph.reshape: a view
                env[op.results[0]] = vals[0].view(op.results[0].type.get_shape())
        return tuple(env[r] for r in self.results) if len(self.results) != 1 else env[self.results[0]]

    def _pack(self, op, weights) -> tuple:
        """The packed weight (Ladder's offline transform, on the CPU) for these weight tensors, made once."""
        import numpy as np
        import torch

        key = (op, *((t.data_ptr(), t._version) for t in weights))
        if key not in self._packed:
            host = [t.detach().float().cpu().numpy() for t in weights]
            packed = op.execute(*host)
            self._packed[key] = tuple(torch.from_numpy(np.ascontiguousarray(a).view(_NUMPY_VIEW.get(a.dtype.name, a.dtype)))
                                      .view(torch_dtype(r.type.element_type)).to(weights[0].device) for a, r in zip(packed, op.results))
        return self._packed[key]


_NUMPY_VIEW = {"bfloat16": "uint16"}  # numpy dtypes torch cannot take directly, by the raw type of the same width


def torch_dtype(elem):
    """The torch dtype that holds tensors of an element type, as the interpreter stores them
    (ir.dtypes): narrow integers in int8/uint8, fp8/fp4/nf4/e8m0 values in float32."""
    import torch

    from ir.dtypes import storage_dtype

    return getattr(torch, storage_dtype(elem).name)


def compile(module_or_text, target: str | None = None) -> CompiledFunction:
    """Schedule @main (graph-to-tile) and prepare the kernels of each tile.matmul schedule.

    Every op of @main must become a kernel, a weight packing or a reshape; anything else is an
    error naming the op, never a silent fallback. `target` defaults to the GPU's (sm_90a on Hopper)."""
    ctx = make_context()
    module = parse_ir(module_or_text, "<rung.compile>", ctx) if isinstance(module_or_text, str) else module_or_text.clone()
    target = target or device_target()
    check_target(target)
    run_pipeline(module, f"graph-to-tile{{target={target}}}", ctx)
    fn = find_function(module, "main")
    steps, results = [], []
    for op in fn.body.block.ops:
        if isinstance(op, func.ReturnOp):
            results = list(op.operands)
        elif isinstance(op, MatmulOp):
            steps.append((op, gemm_kernels(op.config, target)))
        elif isinstance(op, (g.ReshapeOp, PackWeightOp)):
            steps.append((op, None))
        else:
            raise RungError(f"'{op.name}' has no GPU kernel yet (so far: f16/bf16 graph.linear, with its bias and a relu or silu "
                            "after it, graph.qlinear of formats with a register decoder, and 2-D graph.matmul)")
    return CompiledFunction(steps, list(fn.body.block.args), results)
