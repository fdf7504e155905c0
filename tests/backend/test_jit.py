"""The driver calls the JIT makes, checked against the installed cuda-python bindings without a GPU.

The bindings convert every argument before they look for the driver library, so a call whose
arguments they reject raises TypeError here, on any machine; with the arguments accepted, a
machine without a driver answers with its own error instead."""

import pytest

from backend.jit import Kernel, jit_log_options, programmatic_launch_config
from dialects.tile import GemmConfig

driver = pytest.importorskip("cuda.bindings.driver", reason="cuda-python is not installed")


def accepts(call, *args) -> None:
    try:
        call(*args)
    except TypeError as e:
        pytest.fail(f"{call.__name__} rejects its arguments: {e}")
    except Exception:  # no driver on this machine (or no GPU): the arguments got through
        pass


def test_module_load_takes_the_jit_log_options():
    opts, values, log_buffer = jit_log_options()
    accepts(driver.cuModuleLoadDataEx, b".version 8.0\n\0", len(opts), opts, values)
    assert values[0] is log_buffer and len(log_buffer) == values[1]


def test_kernel_launch_marshals_its_parameters():
    cfg = GemmConfig("f16", weight="int4", group=128, bias=True)
    kernel = Kernel(cfg.name, "", cfg.threads, cfg.param_kinds, "test")
    args = (0x7F0000000000, 0x7F0000100000, 0x7F0000200000, 0x7F0000300000, 0x7F0000400000, 17, 4096, 4096)
    accepts(driver.cuLaunchKernel, driver.CUfunction(), *cfg.grid(17, 4096), kernel.threads, 1, 1, 0, 0, (args, kernel.arg_types), 0)
    accepts(driver.cuFuncSetAttribute, driver.CUfunction(),
            driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 98304)


def test_programmatic_launch_marshals_its_configuration():
    """The split-K reduction's launch on sm_90: cuLaunchKernelEx with programmatic stream serialization."""
    from dialects.tile import REDUCE_THREADS, reduce_grid, reduce_param_kinds

    kernel = Kernel("rung_sum_splits_f16_s4", "", REDUCE_THREADS, reduce_param_kinds(False), "test")
    config = programmatic_launch_config(reduce_grid(1, 28672), kernel.threads, 0, 0)
    assert (config.gridDimX, config.blockDimX, config.numAttrs) == (reduce_grid(1, 28672)[0], REDUCE_THREADS, 1)
    assert config.attrs[0].value.programmaticStreamSerializationAllowed == 1
    accepts(driver.cuLaunchKernelEx, config, driver.CUfunction(), ((0x7F0000000000, 0x7F0000100000, 1, 28672), kernel.arg_types), 0)
