"""Loading a model file (the model() / example_inputs() convention) and exporting it with torch.export,
every failure one RungError naming the file and what failed."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import warnings
from pathlib import Path

from ir.errors import RungError


def import_model_file(path: str | Path, needs: tuple[str, ...] = ("model", "example_inputs")):
    """(the imported model file, call): call(what, fn) runs one of its functions, any failure a RungError naming it."""
    path = Path(path)
    if not path.is_file():
        raise RungError(f"{path}: no such model file")
    if path.suffix != ".py":
        raise RungError(f"{path}: a model file is a Python file (.py) defining {' and '.join(f'{n}()' for n in needs)}")
    spec = importlib.util.spec_from_file_location(f"rung_model_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    call = _calling(path)
    call("import", lambda: spec.loader.exec_module(mod))
    for name in needs:
        if not callable(getattr(mod, name, None)):
            raise RungError(f"{path}: defines no {name}() (a model file defines {' and '.join(f'{n}()' for n in needs)})")
    return mod, call


def load_model_file(path: str | Path):
    """(module, args, kwargs) from a model file following the model()/example_inputs() convention."""
    path = Path(path)
    mod, call = import_model_file(path)
    import torch

    model = call("model()", mod.model)
    if not isinstance(model, torch.nn.Module):
        raise RungError(f"{path}: model() returned {type(model).__name__}, not a torch.nn.Module")
    args = call("example_inputs()", mod.example_inputs)
    if not isinstance(args, tuple):
        raise RungError(f"{path}: example_inputs() returned {type(args).__name__}, not a tuple")
    kwargs = call("example_kwargs()", mod.example_kwargs) if callable(getattr(mod, "example_kwargs", None)) else {}
    if not isinstance(kwargs, dict):
        raise RungError(f"{path}: example_kwargs() returned {type(kwargs).__name__}, not a dict")
    kwargs = dict(kwargs)
    if "use_cache" in inspect.signature(model.forward).parameters and "use_cache" not in kwargs:
        kwargs["use_cache"] = False
    return model.eval(), args, kwargs


def _calling(path: Path):
    """call(what, fn): fn() with whatever the model file raises (SystemExit too) as one RungError naming it."""

    def call(what: str, fn):
        try:
            return fn()
        except (Exception, SystemExit) as e:
            raise RungError(f"{path}: {what} failed: {type(e).__name__}: {e}") from None

    return call


# Ops that torch.export keeps whole instead of decomposing to core ATen: Rung has them.
def _kept_ops():
    import torch

    aten = torch.ops.aten
    return [aten.linear.default, aten.scaled_dot_product_attention.default, aten.silu.default, aten.gelu.default,
            aten.layer_norm.default, aten.softmax.int, aten._softmax.default, aten.embedding.default,
            aten.conv2d.default, aten.rms_norm.default, aten.addmm.default, aten.matmul.default]


def export(model, args, kwargs):
    import torch

    logging.disable(logging.ERROR)  # torch logs a failing trace's traceback itself: the error below says it in one line
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)  # torch's own pytree
            ep = torch.export.export(model, args, kwargs=kwargs)
            table = torch.export.default_decompositions()
            for op in _kept_ops():
                table.pop(op, None)
            return ep.run_decompositions(table)
    except RungError:  # (raised by the model's own code, e.g. onnx2ir's nodes: it says where)
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RungError(f"torch.export failed: {type(e).__name__}: {msg}") from None
    finally:
        logging.disable(logging.NOTSET)


DTYPES = ("f32", "f16", "bf16")


def cast_model(model, args: tuple, kwargs: dict, dtype: str):
    """The model's floating-point parameters and buffers, and its floating-point example inputs, in `dtype`."""
    import torch

    to = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]

    def cast(v):
        return v.to(to) if isinstance(v, torch.Tensor) and v.is_floating_point() else v

    return model.to(to), tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}
