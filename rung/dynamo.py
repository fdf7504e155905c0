"""`torch.compile(model, backend="rung")`: the graphs TorchDynamo captures run as Rung programs.

    compiled = torch.compile(model, backend="rung")
    compiled = torch.compile(model, backend="rung", options={"fallback": True})  # a graph Rung cannot take runs in PyTorch

Each FX graph Dynamo hands over (the model's parameters among its inputs) is exported into aten ops by
torch.export and converted by torch2ir's converter into `graph` IR, the path `python -m frontend.torch2ir`
takes. On CUDA tensors (f16 or bf16) the program is compiled by `rung.compile` into Rung's kernels; on CPU
tensors it runs on the IR interpreter (slowly: for checking), as logged once per graph. A graph with an op Rung
cannot convert or compile is an error that names the op and the model's source line, unless the option
`fallback` is set: then that graph runs in PyTorch and a warning says which and why. Dynamo splits a model at
graph breaks into several graphs; each is logged (`logging.getLogger("rung.dynamo")`) with its number, and
`fullgraph=True` makes a break an error, as for any backend. Registered with torch through the
`torch_dynamo_backends` entry point (pyproject.toml).
"""

from __future__ import annotations

import itertools
import logging

from ir.errors import RungError

log = logging.getLogger("rung.dynamo")
OPTIONS = {"fallback": "run a graph Rung cannot take in PyTorch, with a warning (default: an error)"}
_graphs = itertools.count(1)


def backend(gm, example_inputs, options: dict | None = None):
    """The torch.compile backend: `gm` (a graph Dynamo captured) as a callable running Rung's program."""
    options = dict(options or {})
    if unknown := sorted(set(options) - set(OPTIONS)):
        raise RungError(f"torch.compile(backend='rung'): unknown option {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(f'{k}: {v}' for k, v in OPTIONS.items())})")
    index = next(_graphs)
    try:
        return _rung_graph(gm, list(example_inputs), index)
    except RungError as e:
        if not options.get("fallback"):
            raise RungError(f"torch.compile(backend='rung'), graph {index}: {e}") from None
        log.warning("graph %d runs in PyTorch (option fallback): %s", index, e)
        return gm.forward


def _rung_graph(gm, example_inputs: list, index: int):
    import torch

    from backend.device import to_torch
    from frontend.torch2ir import Converter, export, located

    try:
        module, weights, names = Converter(export(gm, tuple(example_inputs), {})).convert()
    except RungError as e:
        raise located(e, gm, tuple(example_inputs)) from None
    user = [n for n in names if n not in weights]  # @main's arguments that are the graph's inputs, in order
    if len(user) != len(example_inputs):
        raise RungError(f"the graph takes {len(example_inputs)} tensors, its program {len(user)}")
    on_gpu = all(isinstance(x, torch.Tensor) and x.is_cuda for x in example_inputs)
    ops = sum(1 for op in module.walk() if op.name.startswith("graph."))
    if on_gpu:
        from rung.compiler import compile

        try:
            fn = compile(module)
        except RungError as e:
            raise located(e, gm, tuple(example_inputs)) from None
        device = example_inputs[0].device
        constants = {n: to_torch(w).to(device) for n, w in weights.items()}
        log.info("graph %d: %d graph ops compiled into %d kernel launches", index, ops, fn.path.count("rung_"))

        def run(*inputs):
            given = iter(inputs)
            outs = fn(*(constants[n] if n in constants else next(given).contiguous() for n in names))
            return tuple(outs) if isinstance(outs, tuple) else (outs,)
        return run

    from frontend.torch2ir import _np
    from ir.interpreter import run as interpret

    log.info("graph %d: %d graph ops on the IR interpreter (CPU tensors: compiled kernels need CUDA tensors)", index, ops)

    def run(*inputs):
        given = iter(inputs)
        outs = interpret(module, [weights[n] if n in weights else _np(next(given)) for n in names])
        return tuple(to_torch(o) for o in (outs if isinstance(outs, (list, tuple)) else [outs]))
    return run
