"""Rung's GPU backend: PTX printing, the cuda-python JIT, and the Python API (`import backend as rung`)."""

from backend.gemm import compile, linear, matmul  # noqa: F401
from backend.quant import QuantizedWeight, qlinear, quantize  # noqa: F401
