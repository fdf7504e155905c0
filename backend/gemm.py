"""The tensor-core GEMM from Python: `linear(x, weight)` = x @ weight^T on torch CUDA tensors.

    import backend as rung
    y = rung.linear(x, w)                      # f16/bf16, x [M, K], w [N, K] -> [M, N]
    kernel = rung.compile(ir_text)             # @main holding one graph.linear (no bias)
    kernel(x, w, out)

Every call checks devices, dtypes, shapes, contiguity and 16-byte alignment first. The
kernel path (`kernel.path`) says what runs; nothing falls back silently to another path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from backend.jit import Kernel, device
from backend.ptx_text import module_text
from ir.errors import RungError
from lowering.matmul_to_ptx import GemmConfig, gemm_kernel

_DTYPES = {"float16": "f16", "bfloat16": "bf16"}


def choose_config(m: int, n: int, k: int, dtype: str) -> GemmConfig:
    """Tile sizes from the shape: small M takes 64-row tiles so that more blocks cover the GPU."""
    if m <= 64:
        return GemmConfig(dtype, bm=64, bn=128, bk=32, warps_m=2, warps_n=2, stages=4)
    return GemmConfig(dtype, bm=128, bn=128, bk=32, warps_m=2, warps_n=2, stages=3)


@lru_cache(maxsize=None)
def _kernel(cfg: GemmConfig, ordinal: int) -> Kernel:
    dev = device(ordinal)
    target = "sm_90a" if dev.capability >= (9, 0) else "sm_80"
    if dev.capability < (8, 0):
        raise RungError(f"{dev.name} (sm_{dev.capability[0]}{dev.capability[1]}) has no mma.sync m16n8k16: Rung needs sm_80 or newer")
    ptx = module_text(gemm_kernel(cfg), target)
    path = f"mma.sync m16n8k16 {cfg.dtype}, {cfg.bm}x{cfg.bn}x{cfg.bk} tiles, {cfg.stages}-stage cp.async ({target})"
    return Kernel(cfg.name, ptx, cfg.threads, ("u64", "u64", "u64", "u32", "u32", "u32"), path, ordinal)


def _check_operands(x, w, out):
    import torch

    for name, t in (("x", x), ("weight", w), ("out", out)):
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
        raise RungError(f"x, weight and out must share a dtype, got {x.dtype}, {w.dtype}, {out.dtype}")
    if not (x.device == w.device == out.device):
        raise RungError(f"x, weight and out are on different devices: {x.device}, {w.device}, {out.device}")
    (m, k), (n, k2) = x.shape, w.shape
    if k != k2:
        raise RungError(f"x is [{m}, {k}] but weight is [{n}, {k2}]: the K dims differ")
    if tuple(out.shape) != (m, n):
        raise RungError(f"out must have shape [{m}, {n}], got {list(out.shape)}")
    if k % 8:
        raise RungError(f"K = {k} is not a multiple of 8: rows must be 16-byte aligned for cp.async")
    return m, n, k


@dataclass
class CompiledLinear:
    """A compiled `graph.linear`: call it as kernel(x, weight, out)."""

    m: int
    n: int
    k: int
    dtype: str

    def kernel(self, ordinal: int = 0) -> Kernel:
        return _kernel(choose_config(self.m, self.n, self.k, self.dtype), ordinal)

    @property
    def path(self) -> str:
        return self.kernel().path

    def __call__(self, x, w, out):
        m, n, k = _check_operands(x, w, out)
        if (m, n, k) != (self.m, self.n, self.k) or _DTYPES[str(x.dtype).removeprefix("torch.")] != self.dtype:
            raise RungError(f"compiled for [{self.m}, {self.k}] x [{self.n}, {self.k}] {self.dtype}, called with "
                            f"[{m}, {k}] x [{n}, {k}] {x.dtype}")
        launch(x, w, out, m, n, k)
        return out


def launch(x, w, out, m, n, k) -> None:
    import torch

    cfg = choose_config(m, n, k, _DTYPES[str(x.dtype).removeprefix("torch.")])
    kernel = _kernel(cfg, x.device.index or 0)
    grid = ((n + cfg.bn - 1) // cfg.bn, (m + cfg.bm - 1) // cfg.bm, 1)
    stream = torch.cuda.current_stream(x.device).cuda_stream
    kernel.launch(grid, (x.data_ptr(), w.data_ptr(), out.data_ptr(), m, n, k), stream)


def linear(x, weight, out=None):
    """x @ weight^T on the tensor cores: x [M, K], weight [N, K], f16 or bf16."""
    import torch

    if out is None and isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor) and x.dim() == 2 and weight.dim() == 2:
        out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    m, n, k = _check_operands(x, weight, out)
    if m and n:
        launch(x, weight, out, m, n, k)
    return out


def compile(module_or_text, target: str | None = None) -> CompiledLinear:
    """Compile @main of a graph module whose body is one graph.linear without bias (for now)."""
    from xdsl.dialects import func

    from dialects import graph as g
    from ir.context import parse_ir

    module = parse_ir(module_or_text, "<rung.compile>") if isinstance(module_or_text, str) else module_or_text
    fn = next((op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == "main"), None)
    if fn is None:
        raise RungError("rung.compile needs a function @main")
    ops = [op for op in fn.body.block.ops if not isinstance(op, func.ReturnOp)]
    if len(ops) != 1 or not isinstance(ops[0], g.LinearOp) or ops[0].bias is not None:
        raise RungError("rung.compile lowers one graph.linear without bias so far; got "
                        + ", ".join(op.name for op in ops))
    op = ops[0]
    (m, k), (n, _) = op.x.type.get_shape(), op.weight.type.get_shape()
    dtype = str(op.x.type.element_type)
    if dtype not in ("f16", "bf16") or len(op.x.type.get_shape()) != 2:
        raise RungError(f"the GEMM takes 2-D f16 or bf16 operands, got {op.x.type}")
    if target is not None and target not in ("sm_80", "sm_90", "sm_90a"):
        raise RungError(f"unknown target {target}")
    return CompiledLinear(m, n, k, dtype)
