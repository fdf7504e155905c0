"""The tensor-core GEMM from Python: `linear(x, weight)` = x @ weight^T on torch CUDA tensors.

    import rung
    y = rung.linear(x, w)                      # f16/bf16, x [M, K], w [N, K] -> [M, N]
    c = rung.matmul(a, b)                      # a [M, K], b [K, N]

Every call checks devices, dtypes, shapes, contiguity and 16-byte alignment first. The
kernel path (`kernel.path`) says what runs; nothing falls back silently to another path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from backend.cache import cached_text
from backend.jit import Kernel, device
from backend.ptx_text import module_text
from dialects.ptx import dynamic_shared
from dialects.tile import REDUCE_THREADS, GemmConfig, reduce_grid, reduce_param_kinds
from ir.errors import RungError
from ir.targets import programmatic_launch
from lowering.graph_to_tile import choose_config
from lowering.smem_swizzle import SmemSwizzle
from lowering.tile_to_warp import gemm_kernel, sum_splits_kernel, sum_splits_name
from lowering.warp_to_ptx import WarpToPtx

_DTYPES = {"float16": "f16", "bfloat16": "bf16"}  # torch dtype name -> IR element type
log = logging.getLogger("rung")


def reduction_of(cfg: GemmConfig) -> tuple:
    """(split_k, dtype, bias, activation, residual): what the split-K reduction of a schedule does."""
    return cfg.split_k, cfg.dtype, cfg.bias, cfg.activation, cfg.residual


def lowered_gemm_kernel(cfg: GemmConfig, reduction: bool = False, target: str = "sm_80") -> ModuleOp:
    """A module holding one of the schedule's kernels (the GEMM, or its split-K reduction) for
    `target`, after smem-swizzle and warp-to-ptx."""
    pdl = programmatic_launch(target)
    module = ModuleOp([sum_splits_kernel(*reduction_of(cfg), programmatic=pdl) if reduction else gemm_kernel(cfg, programmatic=pdl)])
    for lower in (SmemSwizzle(), WarpToPtx()):
        lower.apply(Context(), module)
    return module


def gemm_ptx(cfg: GemmConfig, target: str, reduction: bool = False) -> str:
    """The PTX of one of a schedule's kernels (from the disk cache when it holds it)."""
    key = (target, "sum_splits", repr(reduction_of(cfg))) if reduction else (target, "gemm", repr(cfg))
    return cached_text(key, lambda: module_text(lowered_gemm_kernel(cfg, reduction, target), target))[0]


@lru_cache(maxsize=None)
def device_target(ordinal: int = 0) -> str:
    dev = device(ordinal)
    if dev.capability < (8, 0):
        raise RungError(f"{dev.name} (sm_{dev.capability[0]}{dev.capability[1]}) has no mma.sync m16n8k16: Rung needs sm_80 or newer")
    if dev.capability >= (9, 0):
        log.warning("%s: Rung's wgmma kernels cover linears at M > 64 (f16/bf16, 8-bit, and packed weights of 2 bits or "
                    "more) so far; the rest run the sm_80 mma.sync path, built for sm_90a", dev.name)
        return "sm_90a"
    return "sm_80"


def device_multiprocessors(t) -> int:
    return device(t.device.index or 0).multiprocessors


def describe_gemm(cfg: GemmConfig, target: str, pdl: bool | None = None) -> str:
    """What a GEMM schedule's kernels do, in words (the `path` a launch logs); `pdl`: whether its
    split-K reduction launches programmatically (default: where the target can)."""
    if cfg.a8:
        b = f"{cfg.a8} activations and weight, scaled per token and channel, {cfg.dtype} out"
    elif cfg.sparse:
        b = f"{cfg.dtype} sparse weight ({cfg.sparse} slots a {cfg.bn}x{cfg.bk} tile, scattered into a dense tile in shared memory)"
    elif cfg.weight:
        b = f"{cfg.weight} weight (group {cfg.group or 'channel'}{', e8m0 scales' if cfg.scale else ''}{', zeros' if cfg.zero else ''}) " \
            "decoded in registers"
    else:
        b = f"{cfg.dtype} weight"
    epilogue = (" + bias" if cfg.bias else "") + ("" if cfg.activation == "none" else f" + {cfg.activation}")
    split = f", K split {cfg.split_k} ways + reduction" if cfg.split_k > 1 else ""
    split += " (launched programmatically)" if cfg.split_k > 1 and (programmatic_launch(target) if pdl is None else pdl) else ""
    split += ", its first weight tiles copied before it waits for the kernel ahead" if cfg.early_weights else ""
    if cfg.wgmma:  # (a decoded weight is wgmma's A, from registers, and the activation rows its N)
        n, a = (cfg.bm, ", weight as A from registers") if cfg.weight else (cfg.bn, "")
        mma, hopper = f"wgmma m64n{n}k{16 * cfg.k_unit} {cfg.mma[0]} by {cfg.threads // 128} warpgroups{a}", ""
    else:
        mma = f"mma.sync {cfg.mma[1]} {cfg.mma[0]}"
        hopper = " (the sm_80 path: no wgmma kernel for this schedule yet)" if target.startswith("sm_90") else ""
    return (f"{cfg.name}: {mma}, {b}{epilogue}, {cfg.bm}x{cfg.bn}x{cfg.bk} tiles, "
            f"{cfg.stages}-stage cp.async{split}, built for {target}{hopper}")


@dataclass
class GemmKernels:
    """One schedule's loaded kernels: the GEMM and, when K is split, the reduction that sums its
    f32 partial results (from a workspace allocated per call) and applies the epilogue."""

    cfg: GemmConfig
    target: str
    gemm: Kernel
    reduce: Kernel | None = field(default=None)

    @property
    def path(self) -> str:
        return describe_gemm(self.cfg, self.target)

    def launch(self, addresses: dict[str, int], m: int, n: int, k: int, like) -> None:
        """Run on the current stream of tensor `like`'s device; `addresses` maps cfg.param_names
        ('a', 'b', 'scales', 'zeros', 'bias', 'c') to data pointers."""
        import torch

        cfg = self.cfg
        if cfg.residual and n % 2:
            raise ValueError(f"a residual epilogue reads its tensor's pairs as 32-bit words: N must be even, got {n}")
        stream = torch.cuda.current_stream(like.device).cuda_stream
        if cfg.split_k == 1:
            self.gemm.launch(cfg.grid(m, n), tuple(addresses[p] for p in cfg.param_names[:-3]) + (m, n, k), stream)
            return
        ws = torch.empty(cfg.workspace_shape(m, n), dtype=torch.float32, device=like.device)
        self.gemm.launch(cfg.grid(m, n), tuple(ws.data_ptr() if p == "c" else addresses[p] for p in cfg.param_names[:-3]) + (m, n, k), stream)
        bias = (addresses["bias"],) if cfg.bias else ()
        residual = (addresses["residual"],) if cfg.residual else ()
        self.reduce.launch(reduce_grid(m, n), (ws.data_ptr(), *bias, *residual, addresses["c"], m, n), stream,
                           programmatic=programmatic_launch(self.target))


@lru_cache(maxsize=None)
def gemm_kernels(cfg: GemmConfig, target: str, ordinal: int = 0) -> GemmKernels:
    """The loadable kernels of a schedule; `path` names what runs."""
    if cfg.a8 == "e4m3" and target in ("sm_80", "sm_86"):
        raise RungError(f"fp8 (e4m3) mma.sync needs sm_89 or newer; the target is {target}")
    if cfg.wgmma and target != "sm_90a":
        raise RungError(f"wgmma tiles need sm_90a; the target is {target}")
    gemm = Kernel(cfg.name, gemm_ptx(cfg, target), cfg.threads, cfg.param_kinds, "", ordinal, dynamic_shared(cfg.shared_bytes))
    reduce = None
    if cfg.split_k > 1:
        reduce = Kernel(sum_splits_name(*reduction_of(cfg)), gemm_ptx(cfg, target, reduction=True), REDUCE_THREADS,
                        reduce_param_kinds(cfg.bias, bool(cfg.residual)), "", ordinal)
    kernels = GemmKernels(cfg, target, gemm, reduce)
    for kernel in (gemm, reduce):
        if kernel is not None:
            kernel.path = kernels.path
    return kernels


def check_tensor(name: str, t, dtypes=tuple(_DTYPES), dims: int | None = 2) -> None:
    """A CUDA tensor of one of `dtypes`, `dims`-D, contiguous and 16-byte aligned, or a RungError saying which it is not."""
    import torch

    if not isinstance(t, torch.Tensor):
        raise RungError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise RungError(f"{name} is on {t.device}; Rung kernels take CUDA tensors")
    if str(t.dtype).removeprefix("torch.") not in dtypes:
        raise RungError(f"{name} has dtype {t.dtype}; expected {' or '.join(dtypes)}")
    if dims is not None and t.dim() != dims:
        raise RungError(f"{name} must be {dims}-D, got shape {list(t.shape)}")
    if not t.is_contiguous():
        raise RungError(f"{name} is not contiguous (strides {t.stride()}); call .contiguous() first")
    if t.data_ptr() % 16:
        raise RungError(f"{name} is not 16-byte aligned (data_ptr {t.data_ptr():#x})")


def check_same(names, tensors) -> None:
    if len({t.dtype for t in tensors}) != 1:
        raise RungError(f"{', '.join(names)} must share a dtype, got {', '.join(str(t.dtype) for t in tensors)}")
    if len({t.device for t in tensors}) != 1:
        raise RungError(f"{', '.join(names)} are on different devices: {', '.join(str(t.device) for t in tensors)}")


def _check_operands(x, w, out, b_kn: bool = False):
    names = ("a", "b", "out") if b_kn else ("x", "weight", "out")
    for name, t in zip(names, (x, w, out)):
        check_tensor(name, t)
    check_same(names, (x, w, out))
    (m, k), (n, k2) = x.shape, (tuple(reversed(w.shape)) if b_kn else w.shape)
    if k != k2:
        shape = f"[{k2}, {n}]" if b_kn else f"[{n}, {k2}]"
        raise RungError(f"{names[0]} is [{m}, {k}] but {names[1]} is {shape}: the K dims differ")
    if tuple(out.shape) != (m, n):
        raise RungError(f"out must have shape [{m}, {n}], got {list(out.shape)}")
    return m, n, k


def dtype_of(t) -> str:
    return _DTYPES[str(t.dtype).removeprefix("torch.")]


def _gemm(x, w, out, b_kn: bool):
    import torch

    if out is None and all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in (x, w)):
        out = torch.empty((x.shape[0], w.shape[1] if b_kn else w.shape[0]), dtype=x.dtype, device=x.device)
    m, n, k = _check_operands(x, w, out, b_kn)
    if m and n:
        ordinal = x.device.index or 0
        target = device_target(ordinal)
        cfg = choose_config(m, n, k, dtype_of(x), b_kn, sms=device_multiprocessors(x), target=target)
        gemm_kernels(cfg, target, ordinal).launch({"a": x.data_ptr(), "b": w.data_ptr(), "c": out.data_ptr()}, m, n, k, x)
    return out


def linear(x, weight, out=None):
    """x @ weight^T on the tensor cores: x [M, K], weight [N, K], f16 or bf16, any M, N, K."""
    return _gemm(x, weight, out, b_kn=False)


def matmul(a, b, out=None):
    """a @ b on the tensor cores: a [M, K], b [K, N] (read as stored, no transpose copy), f16 or bf16."""
    return _gemm(a, b, out, b_kn=True)
