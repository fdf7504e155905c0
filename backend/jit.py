"""Load PTX with the CUDA driver API (cuda-python) and launch kernels on torch tensors.

The driver is imported lazily: everything but launching works without cuda-python or a GPU.
Loaded modules are cached in memory by the SHA-256 of (PTX, device, Rung version); the PTX
itself is cached on disk (backend.cache) and the driver keeps its own cache of the machine
code it JIT-compiles from PTX. Launches go to the current
torch stream of the tensors' device.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from dataclasses import dataclass, field
from functools import lru_cache

from backend.cache import RUNG_VERSION
from ir.errors import RungError

log = logging.getLogger("rung.jit")


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError:
        raise RungError("cuda-python is not installed: pip install -e '.[cuda]' in Rung's checkout (or pip install cuda-bindings)") from None
    return driver


def _check(result, what: str):
    """Unpack a driver call's (status, *values); raise RungError naming the call on failure."""
    driver = _driver()
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(status)
        _, text = driver.cuGetErrorString(status)
        raise RungError(f"{what} failed: {name.decode() if name else status} ({text.decode() if text else ''})")
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class Device:
    ordinal: int
    name: str
    capability: tuple[int, int]
    multiprocessors: int


@lru_cache(maxsize=None)
def device(ordinal: int = 0) -> Device:
    """The GPU and its compute capability, from the driver (never from nvidia-smi)."""
    driver = _driver()
    try:
        _check(driver.cuInit(0), "cuInit")
    except RungError:
        raise
    except Exception as e:  # the bindings raise when no driver library is present
        raise RungError(f"no CUDA driver: {str(e).splitlines()[0]}") from None
    count = _check(driver.cuDeviceGetCount(), "cuDeviceGetCount")
    if ordinal >= count:
        raise RungError(f"no GPU {ordinal}: the driver sees {count}")
    dev = _check(driver.cuDeviceGet(ordinal), "cuDeviceGet")
    attr = driver.CUdevice_attribute
    major = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute")
    minor = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute")
    sms = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev), "cuDeviceGetAttribute")
    name = _check(driver.cuDeviceGetName(256, dev), "cuDeviceGetName")
    return Device(ordinal, name.split(b"\0")[0].decode(), (major, minor), sms)


def _use_primary_context(ordinal: int) -> None:
    driver = _driver()
    ctx = _check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if not int(ctx):
        dev = _check(driver.cuDeviceGet(ordinal), "cuDeviceGet")
        ctx = _check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        _check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")


_LOG_BYTES = 16384


def jit_log_options() -> tuple[list, list, bytearray]:
    """cuModuleLoadDataEx's (options, values) asking for the JIT error log, and the buffer it lands in
    (the bindings take the buffer as a bytes-like object and pass its address on)."""
    driver = _driver()
    log_buffer = bytearray(_LOG_BYTES)
    opts = [driver.CUjit_option.CU_JIT_ERROR_LOG_BUFFER, driver.CUjit_option.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES]
    return opts, [log_buffer, _LOG_BYTES], log_buffer


def load_module(ptx: str, ordinal: int = 0):
    """cuModuleLoadDataEx on PTX; a rejection raises RungError with the driver's JIT error log."""
    driver = _driver()
    _use_primary_context(ordinal)
    opts, values, log_buffer = jit_log_options()
    status, module = driver.cuModuleLoadDataEx(ptx.encode() + b"\0", len(opts), opts, values)
    if status != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(status)
        log_text = log_buffer.split(b"\0", 1)[0].decode(errors="replace").strip()
        raise RungError(f"the driver rejected the PTX ({name.decode() if name else status}): {log_text or 'no log'}")
    return module


@dataclass
class Kernel:
    """A kernel to load from PTX: `kernel.launch(grid, args, stream)` loads it once, then launches it."""

    name: str
    ptx: str
    threads: int
    param_kinds: tuple[str, ...]
    path: str  # which code path this is (logged at launch when enabled)
    ordinal: int = 0
    dynamic_shared: int = 0  # bytes of dynamic shared memory per block
    _function: object = field(default=None, repr=False)
    arg_types: tuple = field(default=(), repr=False)  # the ctypes the bindings marshal each parameter as
    _configs: dict = field(default_factory=dict, repr=False)  # programmatic launch configurations by (grid, stream), made once

    def __post_init__(self):
        self.arg_types = tuple(ctypes.c_void_p if k == "u64" else ctypes.c_uint32 for k in self.param_kinds)

    def _load(self):
        if self._function is None:
            driver = _driver()
            module = _module_cache(self.ptx, self.ordinal)
            function = _check(driver.cuModuleGetFunction(module, self.name.encode()), "cuModuleGetFunction")
            if self.dynamic_shared:
                dev = _check(driver.cuDeviceGet(self.ordinal), "cuDeviceGet")
                limit = _check(driver.cuDeviceGetAttribute(
                    driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev), "cuDeviceGetAttribute")
                if self.dynamic_shared > limit:
                    raise RungError(f"{self.name} needs {self.dynamic_shared} bytes of shared memory; {device(self.ordinal).name} allows {limit}")
                _check(driver.cuFuncSetAttribute(function, driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                 self.dynamic_shared), "cuFuncSetAttribute")
            self._function = function
        return self._function

    def launch(self, grid: tuple[int, int, int], args: tuple, stream: int, programmatic: bool = False) -> None:
        """Launch on `stream`; `programmatic` (sm_90): the kernel may start before the kernel ahead
        of it in the stream completes (once that one's blocks run griddepcontrol.launch_dependents)
        and must wait for it with griddepcontrol.wait."""
        driver = _driver()
        function = self._load()
        if log.isEnabledFor(logging.INFO):
            log.info("launch %s grid=%s path=%s%s", self.name, grid, self.path, " (programmatic)" if programmatic else "")
        if not programmatic:
            _check(driver.cuLaunchKernel(function, *grid, self.threads, 1, 1, self.dynamic_shared, stream, (args, self.arg_types), 0),
                   f"launching {self.name}")
            return
        if (grid, stream) not in self._configs:  # (building one costs more host time than the launch)
            self._configs[grid, stream] = programmatic_launch_config(grid, self.threads, self.dynamic_shared, stream)
        config = self._configs[grid, stream]
        _check(driver.cuLaunchKernelEx(config, function, (args, self.arg_types), 0), f"launching {self.name} programmatically")


def programmatic_launch_config(grid: tuple[int, int, int], threads: int, dynamic_shared: int, stream: int):
    """cuLaunchKernelEx's configuration for a launch with programmatic stream serialization."""
    driver = _driver()
    config = driver.CUlaunchConfig()
    config.gridDimX, config.gridDimY, config.gridDimZ = grid
    config.blockDimX, config.blockDimY, config.blockDimZ = threads, 1, 1
    config.sharedMemBytes, config.hStream = dynamic_shared, driver.CUstream(stream)
    serialization = driver.CUlaunchAttribute()
    serialization.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
    serialization.value.programmaticStreamSerializationAllowed = 1
    config.attrs, config.numAttrs = [serialization], 1
    return config


_MODULES: dict[str, object] = {}


def _module_cache(ptx: str, ordinal: int):
    dev = device(ordinal)
    key = hashlib.sha256(f"{RUNG_VERSION}\0{dev.name}\0{dev.capability}\0{ptx}".encode()).hexdigest()
    if key not in _MODULES:
        _MODULES[key] = load_module(ptx, ordinal)
    return _MODULES[key]
