"""Rung: a multi-level IR compiler for low-precision deep learning on NVIDIA tensor cores.

    import rung
    fn = rung.compile(ir_text)                   # @main on Rung's kernels; fn(x, w, ...) on CUDA tensors
    y = rung.linear(x, w)                        # f16/bf16 x @ w^T on the tensor cores
    qw = rung.quantize(w, "int4", group=128)     # Ladder's offline weight transform
    sw = rung.sparsify(w, 0.8)                   # magnitude pruning into Tiled-CSL (Flash-LLM's format)
    rung.load_formats("t3 = table [-1, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1]")   # a data format defined as text
    y = rung.qlinear(x, qw)                      # the weight decoded in registers
    module = rung.parse_ir(text)                 # IR text -> module (file:line:col errors)
    outs = rung.run(module, inputs)              # the interpreter, on numpy

The names load on first use, so that the tools (rung.cli) start without the GPU backend.
"""

from importlib import import_module

_API = {
    "compile": "rung.compiler", "linear": "backend.gemm", "matmul": "backend.gemm", "quantize": "backend.quant",
    "qlinear": "backend.quant", "QuantizedWeight": "backend.quant", "RungError": "ir.errors", "run": "ir.interpreter",
    "print_ir": "ir.syntax", "parse_ir": "rung.context", "sparsify": "ir.sparse",
    "load_formats": "ir.format_text", "load_format_file": "ir.format_text",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'rung' has no attribute '{name}'")
    value = getattr(import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
