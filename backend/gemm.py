"""The tensor-core GEMM from Python: `linear(x, weight)` = x @ weight^T on torch CUDA tensors.

    import backend as rung
    y = rung.linear(x, w)                      # f16/bf16, x [M, K], w [N, K] -> [M, N]
    c = rung.matmul(a, b)                      # a [M, K], b [K, N]
    fn = rung.compile(ir_text)                 # @main scheduled by graph-to-tile
    y = fn(x, w)                               # fn.path says which kernels run

Every call checks devices, dtypes, shapes, contiguity and 16-byte alignment first. The
kernel path (`kernel.path`) says what runs; nothing falls back silently to another path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from xdsl.dialects.builtin import ModuleOp

from backend.cache import cached_text
from backend.jit import Kernel, device
from backend.ptx_text import module_text
from dialects.ptx import dynamic_shared
from dialects.tile import GemmConfig
from ir.errors import RungError
from lowering.graph_to_tile import choose_config
from lowering.tile_to_warp import gemm_kernel

_DTYPES = {"float16": "f16", "bfloat16": "bf16"}  # torch dtype name -> IR element type


def lowered_gemm_kernel(cfg: GemmConfig) -> ModuleOp:
    """A module holding the schedule's kernel after smem-swizzle and warp-to-ptx."""
    from ir.context import make_context
    from ir.passes import run_pipeline

    module = ModuleOp([gemm_kernel(cfg)])
    run_pipeline(module, "smem-swizzle,warp-to-ptx", make_context())
    return module


def gemm_ptx(cfg: GemmConfig, target: str) -> str:
    """The PTX of a GEMM schedule (from the disk cache when it holds it)."""
    return cached_text((target, repr(cfg)), lambda: module_text(lowered_gemm_kernel(cfg), target))[0]


def device_target(ordinal: int = 0) -> str:
    dev = device(ordinal)
    if dev.capability < (8, 0):
        raise RungError(f"{dev.name} (sm_{dev.capability[0]}{dev.capability[1]}) has no mma.sync m16n8k16: Rung needs sm_80 or newer")
    return "sm_90a" if dev.capability >= (9, 0) else "sm_80"


@lru_cache(maxsize=None)
def gemm_kernel_for(cfg: GemmConfig, target: str, ordinal: int = 0) -> Kernel:
    """The loadable kernel of a schedule; `path` names what runs (Hopper runs the sm_80 mma.sync path for now)."""
    epilogue = (" + bias" if cfg.bias else "") + ("" if cfg.activation == "none" else f" + {cfg.activation}")
    path = (f"{cfg.name}: mma.sync m16n8k16 {cfg.dtype}{epilogue}, {cfg.bm}x{cfg.bn}x{cfg.bk} tiles, "
            f"{cfg.stages}-stage cp.async, built for {target}")
    return Kernel(cfg.name, gemm_ptx(cfg, target), cfg.threads, cfg.param_kinds, path, ordinal, dynamic_shared(cfg.shared_bytes))


def _check_operands(x, w, out, b_kn: bool = False):
    import torch

    names = ("a", "b", "out") if b_kn else ("x", "weight", "out")
    for name, t in zip(names, (x, w, out)):
        if not isinstance(t, torch.Tensor):
            raise RungError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_cuda:
            raise RungError(f"{name} is on {t.device}; Rung kernels take CUDA tensors")
        if str(t.dtype).removeprefix("torch.") not in _DTYPES:
            raise RungError(f"{name} has dtype {t.dtype}; the GEMM takes float16 or bfloat16")
        if t.dim() != 2:
            raise RungError(f"{name} must be 2-D, got shape {list(t.shape)}")
        if not t.is_contiguous():
            raise RungError(f"{name} is not contiguous (strides {t.stride()}); call .contiguous() first")
        if t.data_ptr() % 16:
            raise RungError(f"{name} is not 16-byte aligned (data_ptr {t.data_ptr():#x})")
    if not (x.dtype == w.dtype == out.dtype):
        raise RungError(f"{', '.join(names)} must share a dtype, got {x.dtype}, {w.dtype}, {out.dtype}")
    if not (x.device == w.device == out.device):
        raise RungError(f"{', '.join(names)} are on different devices: {x.device}, {w.device}, {out.device}")
    (m, k), (n, k2) = x.shape, (tuple(reversed(w.shape)) if b_kn else w.shape)
    if k != k2:
        shape = f"[{k2}, {n}]" if b_kn else f"[{n}, {k2}]"
        raise RungError(f"{names[0]} is [{m}, {k}] but {names[1]} is {shape}: the K dims differ")
    if tuple(out.shape) != (m, n):
        raise RungError(f"out must have shape [{m}, {n}], got {list(out.shape)}")
    return m, n, k


def launch(x, w, out, m, n, k, b_kn: bool = False) -> None:
    import torch

    cfg = choose_config(m, n, k, _DTYPES[str(x.dtype).removeprefix("torch.")], b_kn)
    ordinal = x.device.index or 0
    kernel = gemm_kernel_for(cfg, device_target(ordinal), ordinal)
    stream = torch.cuda.current_stream(x.device).cuda_stream
    kernel.launch(cfg.grid(m, n), (x.data_ptr(), w.data_ptr(), out.data_ptr(), m, n, k), stream)


def _gemm(x, w, out, b_kn: bool):
    import torch

    if out is None and all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in (x, w)):
        out = torch.empty((x.shape[0], w.shape[1] if b_kn else w.shape[0]), dtype=x.dtype, device=x.device)
    m, n, k = _check_operands(x, w, out, b_kn)
    if m and n:
        launch(x, w, out, m, n, k, b_kn)
    return out


def linear(x, weight, out=None):
    """x @ weight^T on the tensor cores: x [M, K], weight [N, K], f16 or bf16, any M, N, K."""
    return _gemm(x, weight, out, b_kn=False)


def matmul(a, b, out=None):
    """a @ b on the tensor cores: a [M, K], b [K, N] (read as stored, no transpose copy), f16 or bf16."""
    return _gemm(a, b, out, b_kn=True)


@dataclass
class CompiledFunction:
    """@main scheduled on tensor-core kernels; call it on torch CUDA tensors."""

    steps: list  # (op, Kernel or None) in program order: tile.matmul launches, graph.reshape views
    arg_types: list
    results: list

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
            if list(value.shape) != list(arg.type.get_shape()) or value.dtype != _torch_dtype(str(arg.type.element_type)):
                raise RungError(f"argument {i}: expected {arg.type}, got {list(value.shape)} {value.dtype}")
            if not value.is_contiguous() or value.data_ptr() % 16:
                raise RungError(f"argument {i} must be contiguous and 16-byte aligned")
            env[arg] = value
        for op, kernel in self.steps:
            vals = [env[o] for o in op.operands]
            if kernel is None:  # graph.reshape: a view
                env[op.results[0]] = vals[0].view(op.results[0].type.get_shape())
                continue
            (m, k), n = op.x.type.get_shape(), op.result.type.get_shape()[1]
            out = torch.empty((m, n), dtype=vals[0].dtype, device=vals[0].device)
            stream = torch.cuda.current_stream(out.device).cuda_stream
            kernel.launch(op.config.grid(m, n), tuple(v.data_ptr() for v in (*vals, out)) + (m, n, k), stream)
            env[op.result] = out
        return tuple(env[r] for r in self.results) if len(self.results) != 1 else env[self.results[0]]


def _torch_dtype(elem: str):
    import torch

    names = {v: k for k, v in _DTYPES.items()}
    if elem not in names:
        raise RungError(f"element type {elem} has no GPU path yet (f16 and bf16 do)")
    return getattr(torch, names[elem])


def compile(module_or_text, target: str | None = None) -> CompiledFunction:
    """Schedule @main (graph-to-tile) and prepare one kernel per tile.matmul schedule.

    Every op of @main must become a kernel (or a reshape); anything else is an error naming
    the op, never a silent fallback. `target` defaults to the GPU's (sm_90a on Hopper)."""
    from xdsl.dialects import func

    from dialects import graph as g
    from dialects.tile import MatmulOp
    from ir.context import make_context, parse_ir
    from ir.interpreter import find_function
    from ir.passes import run_pipeline
    from backend.ptx_text import TARGETS

    ctx = make_context()
    module = parse_ir(module_or_text, "<rung.compile>", ctx) if isinstance(module_or_text, str) else module_or_text.clone()
    run_pipeline(module, "graph-to-tile", ctx)
    fn = find_function(module, "main")
    target = target or device_target()
    if target not in TARGETS:
        raise RungError(f"unknown target {target} (known: {', '.join(TARGETS)})")
    steps, results = [], []
    for op in fn.body.block.ops:
        if isinstance(op, func.ReturnOp):
            results = list(op.operands)
        elif isinstance(op, MatmulOp):
            steps.append((op, gemm_kernel_for(op.config, target)))
        elif isinstance(op, g.ReshapeOp):
            steps.append((op, None))
        else:
            raise RungError(f"'{op.name}' has no GPU kernel yet (so far: f16/bf16 graph.linear, with its bias and "
                            "a relu or silu after it, and 2-D graph.matmul)")
    return CompiledFunction(steps, list(fn.body.block.args), results)
