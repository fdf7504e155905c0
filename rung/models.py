"""A PyTorch model file compiled whole and run against PyTorch: `rung-run model.py --gpu` (or `--sim`); an ONNX
model the same way against onnxruntime: `rung-run model.onnx --gpu` (run_onnx).

The model is brought in by torch2ir in f16 or bf16, compiled by rung.compile (every op a kernel of
Rung's, or an error naming the first op without one), run on the GPU (or the CPU lane simulator) on
the model file's example inputs, and compared with the same model in PyTorch on the same device.
`--gpu` on a machine without a GPU says so in one line and runs the same kernels on the simulator.
On the GPU it also times a forward: the compiled program replayed as one CUDA graph, torch eager and
torch.compile, wall time per forward in one run.
"""

from __future__ import annotations

import sys
import time

import ml_dtypes
import numpy as np


def wall_us(fn, calls: int = 30) -> float:
    """Wall microseconds per call of `calls` calls in a row, host work included (what CUDA graphs remove)."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e6 / calls


def main_arguments(model, names: list[str], args: tuple, kwargs: dict, weights: dict | None = None) -> list:
    """@main's arguments as the model's own tensors, in torch2ir's order (`names`): its parameters and
    buffers by name, then the tensors of `args` and `kwargs` (frontend.torch2ir.inputs_for, without copies);
    a weight a transform made (folded or quantized, not in the model) comes from `weights`, on the model's device."""
    import torch
    import torch.utils._pytree as pytree

    from backend.device import to_torch

    state = {**dict(model.named_parameters(remove_duplicate=False)), **dict(model.named_buffers(remove_duplicate=False))}  # tied weights by each name
    device = next(iter(state.values())).device if state else "cpu"
    made = {n: to_torch(w).to(device) for n, w in (weights or {}).items() if n not in state}
    user = iter(a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor))
    return [state[n].detach() if n in state else made[n] if n in made else next(user) for n in names]


def run_model(path: str, dtype: str, gpu: bool, progress=lambda msg: print(msg, file=sys.stderr, flush=True)) -> int:
    """Compile the model file whole, run it, print the error against PyTorch (and on the GPU the times);
    1 if the error is above torch2ir's tolerance for `dtype`."""
    import torch

    from frontend.loading import cast_model, load_model_file
    from frontend.torch2ir import TOLERANCE, inputs_for, located, output_error, torch_outputs, torch_to_ir
    from ir.errors import RungError
    from rung.compiler import compile

    if gpu and not torch.cuda.is_available():  # said, not silent: the same kernels, simulated
        print("rung-run: no CUDA GPU here: running the compiled kernels on the CPU lane simulator instead", file=sys.stderr)
        gpu = False
    model, args, kwargs = cast_model(*load_model_file(path), dtype)
    module, weights, names = torch_to_ir(model, args, kwargs, progress)
    progress("compiling every op to kernels ...")
    try:
        fn = compile(module)
    except RungError as e:  # an op without a kernel: where the model made it
        raise located(e, model, args, kwargs) from None
    progress(f"{fn.path.count('rung_')} kernel launches; {fn.memory.summary()}")
    if not gpu:
        progress("running on the CPU lane simulator ...")
        err = output_error(fn(*inputs_for(names, weights, args, kwargs)), torch_outputs(model, args, kwargs))
        where = "the CPU lane simulator"
    else:
        model = model.cuda()
        cuda_args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        tensors = main_arguments(model, names, cuda_args, kwargs, weights)
        want = torch_outputs(model, cuda_args, kwargs)
        with torch.no_grad():
            replay = fn.capture(*tensors)
            err = output_error(replay(*tensors), want)
            compiled = torch.compile(model)
            times = {"Rung (one CUDA graph)": wall_us(lambda: replay(*tensors)),
                     "torch eager": wall_us(lambda: model(*cuda_args, **kwargs)),
                     "torch.compile": wall_us(lambda: compiled(*cuda_args, **kwargs))}
        where = torch.cuda.get_device_name()
        print("per forward: " + ", ".join(f"{k} {v:.1f} us" for k, v in times.items()))
    ok = err <= TOLERANCE[dtype]
    print(f"max relative error vs PyTorch {err:.2e} on {where} ({dtype}; {'within' if ok else 'ABOVE'} {TOLERANCE[dtype]:g})")
    return 0 if ok else 1


def run_onnx(path: str, dtype: str, gpu: bool, shapes: dict, progress=lambda msg: print(msg, file=sys.stderr, flush=True)) -> int:
    """An ONNX model (frontend.onnx2ir) in `dtype`, compiled whole and run on the GPU (or the simulator) on random
    inputs; the error against onnxruntime on the same inputs (rounded to `dtype`, computed in f32) printed, 1 if
    it is above torch2ir's tolerance for `dtype`."""
    import torch

    from backend.device import to_torch
    from frontend.onnx2ir import example_inputs, onnx_to_ir, onnxruntime_outputs, relative_error
    from frontend.torch2ir import TOLERANCE
    from rung.compiler import compile

    if gpu and not torch.cuda.is_available():
        print("rung-run: no CUDA GPU here: running the compiled kernels on the CPU lane simulator instead", file=sys.stderr)
        gpu = False
    module, weights, names, bound, model = onnx_to_ir(path, shapes, progress, dtype)
    half = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}[dtype]
    inputs = {n: a.astype(half) if a.dtype.kind == "f" else a for n, a in zip(bound, example_inputs(bound, seed=1))}
    want = onnxruntime_outputs(model, {n: a.astype(np.float32) if a.dtype.kind == "f" or a.dtype == half else a for n, a in inputs.items()})
    progress("compiling every op to kernels ...")
    fn = compile(module)
    progress(f"{fn.path.count('rung_')} kernel launches; {fn.memory.summary()}")
    arguments = [weights[n] if n in weights else inputs[n] for n in names]
    if gpu:
        got, where = fn(*(to_torch(a).cuda() for a in arguments)), torch.cuda.get_device_name()
    else:
        got, where = fn(*arguments), "the CPU lane simulator"
    got = [np.asarray(g.float().cpu() if isinstance(g, torch.Tensor) else g, np.float32) for g in (got if isinstance(got, tuple) else (got,))]
    err = relative_error(got, want)
    ok = err <= TOLERANCE[dtype]
    print(f"max relative error vs onnxruntime {err:.2e} on {where} ({dtype}; {'within' if ok else 'ABOVE'} {TOLERANCE[dtype]:g})")
    return 0 if ok else 1
