"""Where a lowered program's kernels run: one interface, two devices.

`SimulatorDevice` runs each ptx.kernel on the CPU lane simulator (ir.simulator) over numpy
buffers; `CudaDevice` loads the module's PTX through the cuda-python JIT and launches on torch
CUDA tensors, on the current stream. A compiled program (rung.compile) calls the same methods
on either, so the same kernels run on both and tests compare them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dialects.ptx import KernelOp, dynamic_shared, kind_of
from ir.errors import RungError
from ir.simulator import DeviceMemory
from lowering.programmatic_launch import waits_for_grid


@dataclass(frozen=True)
class SimBuffer:
    """A tensor in the simulator's global memory."""

    address: int
    shape: tuple[int, ...]
    dtype: np.dtype


class SimulatorDevice:
    """The CPU lane simulator: every thread of every block, in lockstep, hazards made errors."""

    name = "the CPU lane simulator"

    def __init__(self):
        self.memory = DeviceMemory()

    def put(self, array) -> SimBuffer:
        array = np.ascontiguousarray(array)
        return SimBuffer(self.memory.alloc(array), array.shape, array.dtype)

    def empty(self, shape, dtype) -> SimBuffer:
        """A buffer of poison (all bits set: NaN as a float), so a kernel that leaves an element unwritten shows."""
        dtype = np.dtype(dtype)
        return self.put(np.frombuffer(b"\xff" * (int(np.prod(shape)) * dtype.itemsize), dtype).reshape(shape))

    def view(self, buffer: SimBuffer, shape) -> SimBuffer:
        return SimBuffer(buffer.address, tuple(shape), buffer.dtype)

    def at(self, arena: SimBuffer, offset: int, shape, dtype) -> SimBuffer:
        """A tensor at byte `offset` of `arena` (a buffer of bytes from `empty`)."""
        return SimBuffer(arena.address + offset, tuple(shape), np.dtype(dtype))

    def get(self, buffer: SimBuffer) -> np.ndarray:
        return self.memory.read(buffer.address, np.empty(buffer.shape, buffer.dtype))

    def launch(self, kernel: KernelOp, grid, buffers: list, dims: list[int]) -> None:
        from dialects.ptx import run_kernel

        run_kernel(kernel, tuple(grid), [b.address for b in buffers] + list(dims), self.memory)


BY_BITS = {"bfloat16": np.int16, "float8_e4m3fn": np.uint8, "float8_e5m2": np.uint8}  # ml_dtypes types torch takes by their bits


def to_torch(array):
    """A numpy array as a CPU torch tensor (ml_dtypes' bfloat16 and 8-bit floats too, by their bits)."""
    import torch

    array = np.ascontiguousarray(array)
    if array.dtype.name in BY_BITS:
        return torch.from_numpy(array.view(BY_BITS[array.dtype.name])).view(getattr(torch, array.dtype.name))
    return torch.from_numpy(array)


class CudaDevice:
    """A CUDA GPU through cuda-python: the module's PTX loaded once, tensors from torch."""

    def __init__(self, ptx: str, ordinal: int = 0):
        from backend.jit import device

        self.ptx, self.ordinal = ptx, ordinal
        self.name = device(ordinal).name
        self._kernels: dict[str, tuple] = {}  # name -> (loaded Kernel, launched programmatically)

    def put(self, array):
        import torch

        return array if isinstance(array, torch.Tensor) else to_torch(array).cuda(self.ordinal)

    def empty(self, shape, dtype):
        """A new tensor; one the GPU has no room for is a RungError saying how much it needs and what is free."""
        import torch

        try:
            return torch.empty(tuple(shape), dtype=getattr(torch, np.dtype(dtype).name), device=f"cuda:{self.ordinal}")
        except torch.OutOfMemoryError:
            needed = int(np.prod(shape)) * np.dtype(dtype).itemsize
            free, total = torch.cuda.mem_get_info(self.ordinal)
            raise RungError(f"the program needs {needed / 2**20:.1f} MiB more on GPU {self.ordinal} ({list(shape)} {np.dtype(dtype).name}: "
                            f"its intermediates' arena or a result), {free / 2**20:.1f} MiB of {total / 2**20:.0f} MiB are free") from None

    def view(self, tensor, shape):
        return tensor.view(tuple(shape))

    def at(self, arena, offset: int, shape, dtype):
        import torch

        dtype = getattr(torch, np.dtype(dtype).name)
        n = int(np.prod(shape)) * dtype.itemsize
        return arena[offset:offset + n].view(dtype).view(tuple(shape))

    def get(self, tensor) -> np.ndarray:
        import ml_dtypes
        import torch

        name = str(tensor.dtype).removeprefix("torch.")
        if name in BY_BITS:
            return tensor.view(getattr(torch, np.dtype(BY_BITS[name]).name)).cpu().numpy().view(getattr(ml_dtypes, name))
        return tensor.cpu().numpy()

    def launch(self, kernel: KernelOp, grid, tensors: list, dims: list[int]) -> None:
        import torch

        from backend.jit import Kernel

        name = kernel.sym_name.data
        if name not in self._kernels:
            kinds = tuple(kind_of(a) for a in kernel.body.block.args)
            self._kernels[name] = (Kernel(name, self.ptx, kernel.threads.value.data, kinds, name, self.ordinal,
                                          dynamic_shared(kernel.shared_bytes.value.data)), waits_for_grid(kernel))
        stream = torch.cuda.current_stream(self.ordinal).cuda_stream
        loaded, programmatic = self._kernels[name]  # (a kernel that waits for the grid before it: launched as it runs)
        loaded.launch(tuple(grid), tuple(t.data_ptr() for t in tensors) + tuple(dims), stream, programmatic)


def device_kind(args) -> int | None:
    """Where a call's arguments live: None for numpy arrays (the simulator), the GPU's ordinal for
    CUDA tensors. Anything else, or a mix, is an error (nothing is moved silently)."""
    try:
        import torch
    except ImportError:
        torch = None
    if all(isinstance(a, np.ndarray) for a in args):
        return None
    if torch is not None and all(isinstance(a, torch.Tensor) and a.is_cuda for a in args):
        ordinals = {a.device.index or 0 for a in args}
        if len(ordinals) > 1:
            raise RungError(f"the arguments are on different GPUs: {sorted(ordinals)}")
        return ordinals.pop()
    kinds = sorted({type(a).__name__ + (f" on {a.device}" if torch is not None and isinstance(a, torch.Tensor) else "") for a in args})
    raise RungError(f"pass all arguments as numpy arrays (run on the CPU simulator) or all as CUDA tensors (run on the GPU), "
                    f"got {', '.join(kinds)}")
