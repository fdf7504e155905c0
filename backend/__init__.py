"""Rung's GPU backend: PTX text, the kernel cache, the cuda-python JIT, kernels' launchers and benchmarks."""
