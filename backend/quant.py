"""Weight-only quantized linears from Python: Ladder's layout transform once, then kernels that
decode the weight in registers.

    import rung
    qw = rung.quantize(w, "int4", group=128)            # w [N, K] float -> codes, scales (and zeros) packed on w's device
    y = rung.qlinear(x, qw)                             # x [..., K] f16/bf16 -> [..., N]
    qw = rung.QuantizedWeight.from_gptfast(weight, scales_and_zeros, group=128)
    qw = rung.QuantizedWeight.from_autogptq(qweight, qzeros, scales, group=128)
    qw = rung.quantize(w, "w8a8")                       # int8 weight and activations (or "fp8": e4m3 both)

Formats are ir.numerics presets ("int4", "uint4", "nf4", "mxfp4", "mxfp8", "int8", ...) or
element formats ("int2", "e2m1", "e4m3", ...); keywords override the group size, the scale
type and the zero-point mode. Quantizing rounds to nearest (ir.numerics.QuantFormat).
"w8a8" and "fp8" quantize the weight per output channel and, at every call, the activations
per token (absmax), and multiply 8-bit by 8-bit on the tensor cores (mma.m16n8k32).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from backend.gemm import check_same, check_tensor, device_multiprocessors, device_target, dtype_of, gemm_kernels
from dialects.tile import GemmConfig
from ir.errors import RungError
from ir.numerics import EIGHT_BIT_PRESETS, FormatError, QuantFormat, element_format
from ir.numerics import quant_format as numerics_quant_format
from lowering.graph_to_tile import choose_config
from ir.packing import PackedWeight, decoder, pack_weight, unpack_weight

_UNSET = object()


@dataclass
class QuantizedWeight:
    """A weight [N, K] in the layout Rung's kernels read (ir.packing.pack_weight), packed for
    `dtype` activations: `codes` int32 [N, K * bits / 32] in mma order, stored in 16-row tiles
    (ir.packing.code_tiles), `scales` [K / group, N16]
    (dtype, or uint8 e8m0 codes), `zeros` [K / group, N16] (dtype: w = q * s + z) or None.
    With `activations` (W8A8, FP8), codes are the 8-bit weight as it is and scales f32 [N]."""

    format: QuantFormat
    dtype: str
    shape: tuple[int, int]
    codes: object
    scales: object
    zeros: object | None
    activations: str = ""  # "" (weight-only) or "s8" / "e4m3": codes [N, K] as stored, f32 scales [N], 8-bit activations per token

    @classmethod
    def from_values(cls, values, scales, zeros, fmt: QuantFormat, dtype: str, device) -> "QuantizedWeight":
        """Pack a quantized weight given as QuantFormat holds it: element values [N, K] and
        scales (zeros) [N, K / group], numpy arrays or tensors."""
        import torch

        if dtype not in ("f16", "bf16"):
            raise RungError(f"weights are packed for f16 or bf16 activations, not {dtype}")
        host = [None if a is None else (a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a))
                for a in (values, scales, zeros)]
        try:
            packed = pack_weight(*host, fmt, dtype)
        except FormatError as e:
            raise RungError(f"cannot pack the weight as {fmt.element}: {e}") from None
        as_torch = [None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in
                    (packed.codes.view(np.int32), packed.scales, packed.zeros)]
        scales_t, zeros_t = as_torch[1], as_torch[2]
        half = torch.float16 if dtype == "f16" else torch.bfloat16
        if fmt.scale != "e8m0":
            scales_t = scales_t.view(torch.int16).view(half)
        if zeros_t is not None:
            zeros_t = zeros_t.view(torch.int16).view(half)
        return cls(fmt, dtype, tuple(host[0].shape), as_torch[0], scales_t, zeros_t)

    @property
    def nbytes(self) -> int:
        """Bytes a kernel reads for the whole weight (codes, scales and zeros)."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scales, self.zeros) if t is not None)

    def dequantize(self):
        """The [N, K] weight the kernels compute with, as a tensor of the activation dtype on its device
        (8-bit weights: exactly, in float32)."""
        import torch

        if self.activations:
            return self.codes.float() * self.scales[:, None]

        def raw(t):
            if t is None:
                return None
            return (t.view(torch.int16) if t.element_size() == 2 else t).cpu().numpy()

        packed = PackedWeight(raw(self.codes).view(np.uint32), raw(self.scales), raw(self.zeros))
        fmt = self.format
        w = unpack_weight(packed, fmt.element, fmt.group or 0, fmt.scale == "e8m0", self.dtype, self.shape[1])
        return torch.from_numpy(w).to(self.codes.device, torch.float16 if self.dtype == "f16" else torch.bfloat16)

    @classmethod
    def from_gptfast(cls, weight, scales_and_zeros, group: int, dtype: str = "bf16") -> "QuantizedWeight":
        """gpt-fast's int4 weight-only linears: `weight` is either the codes [N, K] (0..15) that its
        group_quantize_tensor returns or the tensor torch._convert_weight_to_int4pack packed from
        them (CUDA), and `scales_and_zeros` [K / group, N, 2] holds (scale, zero) per group:
        w = (q - 8) * scale + zero."""
        import torch

        sz = scales_and_zeros.detach().float()
        if sz.dim() != 3 or sz.shape[2] != 2:
            raise RungError(f"scales_and_zeros must be [K / group, N, 2], got {list(sz.shape)}")
        n, k = sz.shape[1], sz.shape[0] * group
        if weight.dim() == 2:
            codes = weight.detach().to(torch.int32)
        else:  # tinygemm's layout: let its own kernel read each code back (an identity matmul, exact for 0..15)
            codes = _tinygemm_codes(weight, n, k, group)
        if tuple(codes.shape) != (n, k):
            raise RungError(f"gpt-fast weight holds {list(codes.shape)} codes; scales_and_zeros imply [{n}, {k}]")
        if int(codes.min()) < 0 or int(codes.max()) > 15:
            raise RungError("gpt-fast int4 codes must lie in 0..15")
        fmt = QuantFormat("int4", group, "f32", "rescale")  # (q - 8) s + z = q' s - (-z)
        return cls.from_values(codes - 8, sz[..., 0].T, -sz[..., 1].T, fmt, dtype, weight.device)

    @classmethod
    def from_autogptq(cls, qweight, qzeros, scales, group: int, g_idx=None, bits: int = 4, zero_offset: int = 1,
                      dtype: str = "f16") -> "QuantizedWeight":
        """AutoGPTQ / GPTQ checkpoints: `qweight` int32 [K * bits / 32, N] packed along K, `qzeros`
        int32 [K / group, N * bits / 32] packed along N, `scales` [K / group, N]:
        w = (q - (z + zero_offset)) * s, with zero_offset 1 for the original GPTQ format and 0 for
        gptq_v2. Act-order checkpoints (g_idx other than k // group) are refused."""
        import torch

        if bits not in (2, 4, 8):
            raise RungError(f"GPTQ weights of {bits} bits are not supported (2, 4 and 8 are)")
        q = _unpack_along(qweight.to(torch.int32), bits, dim=0)  # [K, N]
        z = _unpack_along(qzeros.to(torch.int32), bits, dim=1)  # [K / group, N]
        k, n = q.shape
        if g_idx is not None and not torch.equal(g_idx.to(q.device, torch.int64), torch.arange(k, device=q.device) // group):
            raise RungError("act-order (desc_act) GPTQ checkpoints are not supported: g_idx is not k // group")
        if tuple(scales.shape) != (k // group, n) or tuple(z.shape) != (k // group, n):
            raise RungError(f"scales and qzeros must describe [{k // group}, {n}] groups, got {list(scales.shape)} and {list(z.shape)}")
        fmt = QuantFormat(f"uint{bits}", group, "f32", "original")
        return cls.from_values(q.T, scales.float().T, (z + zero_offset).float().T, fmt, dtype, qweight.device)


def _unpack_along(packed, bits: int, dim: int):
    """Codes of int32 words packed little-endian along `dim` (GPTQ's layout)."""
    import torch

    per = 32 // bits
    shifts = torch.arange(0, 32, bits, device=packed.device, dtype=torch.int32)
    codes = (packed.unsqueeze(dim + 1) >> shifts.view(*([1] * (dim + 1)), per, *([1] * (packed.dim() - dim - 1)))) & ((1 << bits) - 1)
    shape = list(packed.shape)
    shape[dim] *= per
    return codes.reshape(shape)


def _tinygemm_codes(packed, n: int, k: int, group: int):
    """The codes [N, K] behind torch._convert_weight_to_int4pack's layout, read by its own kernel."""
    import torch

    if not packed.is_cuda:
        raise RungError("a tinygemm-packed int4 weight is read back on the GPU: move it to CUDA first")
    unit = torch.empty(k // group, n, 2, dtype=torch.bfloat16, device=packed.device)
    unit[..., 0], unit[..., 1] = 1.0, 8.0  # (q - 8) * 1 + 8 = q, exact in bf16
    codes = torch.empty(n, k, dtype=torch.int32, device=packed.device)
    for r0 in range(0, k, 1024):
        rows = min(1024, k - r0)
        eye = torch.zeros(rows, k, dtype=torch.bfloat16, device=packed.device)
        eye[torch.arange(rows), r0 + torch.arange(rows)] = 1.0
        codes[:, r0:r0 + rows] = torch.ops.aten._weight_int4pack_mm(eye, packed, group, unit).T.round().to(torch.int32)
    return codes


def quant_format(format, group=_UNSET, scale=_UNSET, zero=_UNSET) -> QuantFormat:
    """ir.numerics.quant_format with the keywords given, bad ones a RungError."""
    overrides = {f: v for f, v in (("group", group), ("scale", scale), ("zero", zero)) if v is not _UNSET}
    try:
        return numerics_quant_format(format, **overrides)
    except FormatError as e:
        raise RungError(str(e)) from None


def quantize(weight, format="int4", *, group=_UNSET, scale=_UNSET, zero=_UNSET, dtype: str | None = None) -> QuantizedWeight:
    """Quantize a float weight [N, K] (round to nearest) and pack it for Rung's kernels, on the
    weight's device; `dtype` (f16 or bf16) is the activations' type (default: the weight's, or f16)."""
    import torch

    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise RungError("quantize takes a 2-D torch tensor [N, K]")
    dtype = dtype or {torch.bfloat16: "bf16"}.get(weight.dtype, "f16")
    if format in EIGHT_BIT_PRESETS:
        return _quantize_eight_bit(weight, format, dtype)
    fmt = quant_format(format, group, scale, zero)
    try:
        decoder(fmt.element)
    except FormatError as e:
        raise RungError(f"{e}: Rung's kernels cannot read {fmt.element} weights") from None
    try:
        values, scales, zeros = fmt.quantize(weight.detach().double().cpu().numpy())
    except FormatError as e:
        raise RungError(f"cannot quantize the weight as {fmt.element}: {e}") from None
    return QuantizedWeight.from_values(values, scales, zeros, fmt, dtype, weight.device)


def _quantize_eight_bit(weight, preset: str, dtype: str) -> QuantizedWeight:
    """An 8-bit weight per output channel (f32 scales), stored as it is: ldmatrix reads it directly."""
    import torch

    fmt = EIGHT_BIT_PRESETS[preset]
    element, a8 = fmt.element, fmt.a8
    n, k = weight.shape
    if k % 16:
        raise RungError(f"{preset} needs K a multiple of 16 (16-byte rows), got {k}")
    try:
        values, scales, _ = fmt.weight.quantize(weight.detach().double().cpu().numpy())
    except FormatError as e:
        raise RungError(f"cannot quantize the weight as {element}: {e}") from None
    codes = torch.from_numpy(values.astype(np.int8) if a8 == "s8" else values.astype(np.float32)).to(weight.device)
    if a8 == "e4m3":
        codes = codes.to(torch.float8_e4m3fn)  # exact: the values are e4m3 values
    return QuantizedWeight(fmt.weight, dtype, (n, k), codes, torch.from_numpy(scales[:, 0].copy()).to(weight.device), None, a8)


def per_token(x2d, a8: str):
    """8-bit activations and their f32 scales per row (absmax, round to nearest): what 8-bit
    kernels multiply (x ~ x8 * scale[:, None])."""
    import torch

    largest = element_format("int8" if a8 == "s8" else "e4m3").max
    scale = (x2d.abs().amax(dim=1).float() / largest).clamp_min(torch.finfo(torch.float32).tiny)
    y = x2d.float() / scale[:, None]
    return (y.round().clamp(-127, 127).to(torch.int8) if a8 == "s8" else y.to(torch.float8_e4m3fn)), scale


def launch_addresses(x, weight: tuple, out, x_scales=None, bias=None) -> dict:
    """GemmKernels.launch's addresses: activations `x` (8-bit ones with their per-token
    `x_scales`), a (codes, scales, zeros) weight, the bias and the output; None leaves one out."""
    codes, scales, zeros = weight
    named = {"a": x, "b": codes, "scales": scales, "zeros": zeros, "a_scales": x_scales, "bias": bias, "c": out}
    return {name: t.data_ptr() for name, t in named.items() if t is not None}


@lru_cache(maxsize=4096)
def _schedule(m: int, n: int, k: int, dtype: str, fmt: QuantFormat, a8: str, bias: bool, sms: int, target: str) -> GemmConfig:
    if a8:
        cfg = choose_config(m, n, k, dtype, sms=sms, a8=a8, target=target)
    else:
        cfg = choose_config(m, n, k, dtype, sms=sms, **GemmConfig.weight_fields(fmt), target=target)
    return dataclasses.replace(cfg, bias=bias) if bias else cfg


def qlinear(x, qw: QuantizedWeight, bias=None, out=None):
    """x @ dequantize(qw)^T (+ bias) on the tensor cores, the weight decoded in registers:
    x [..., K] of qw's activation dtype -> [..., N]."""
    import torch

    if not isinstance(qw, QuantizedWeight):
        raise RungError(f"qlinear takes a QuantizedWeight (rung.quantize), got {type(qw).__name__}")
    check_tensor("x", x, dims=None)
    n, k = qw.shape
    if x.dim() < 1 or x.shape[-1] != k:
        raise RungError(f"x is {list(x.shape)} but the weight is [{n}, {k}]: the K dims differ")
    if dtype_of(x) != qw.dtype:
        raise RungError(f"the weight was packed for {qw.dtype} activations; x is {x.dtype}")
    if x.device != qw.codes.device:
        raise RungError(f"x is on {x.device}, the weight on {qw.codes.device}")
    m = math.prod(x.shape[:-1])
    if out is None:
        out = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    check_tensor("out", out, dims=None)
    if tuple(out.shape) != (*x.shape[:-1], n):
        raise RungError(f"out must have shape {[*x.shape[:-1], n]}, got {list(out.shape)}")
    if bias is not None:
        check_tensor("bias", bias, dims=1)
        if bias.shape[0] != n:
            raise RungError(f"bias must have shape [{n}], got {list(bias.shape)}")
    check_same(("x", "out") + (("bias",) if bias is not None else ()), (x, out) + ((bias,) if bias is not None else ()))
    if m and n:
        ordinal = x.device.index or 0
        target = device_target(ordinal)
        cfg = _schedule(m, n, k, qw.dtype, qw.format, qw.activations, bias is not None, device_multiprocessors(x), target)
        x_in, x_scales = per_token(x.reshape(m, k), qw.activations) if qw.activations else (x, None)
        addresses = launch_addresses(x_in, (qw.codes, qw.scales, qw.zeros), out, x_scales, bias)
        gemm_kernels(cfg, target, ordinal).launch(addresses, m, n, k, x)
    return out

