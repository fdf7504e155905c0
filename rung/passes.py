"""The pass registry: every pass Rung runs is registered here once, by name.

A pipeline is written as in mlir-opt: `pass-a,pass-b{option=value other=1}`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.arg_spec import parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError

from ir.errors import RungError


def _cse():
    from xdsl.transforms.common_subexpression_elimination import CommonSubexpressionElimination

    return CommonSubexpressionElimination


def _dce():
    from xdsl.transforms.dead_code_elimination import DeadCodeElimination

    return DeadCodeElimination


def _decompose_graph():
    from lowering.decompose_graph import DecomposeGraph

    return DecomposeGraph


def _fold_constants():
    from lowering.fold_constants import FoldConstants

    return FoldConstants


def _raise_norms():
    from lowering.raise_norms import RaiseNorms

    return RaiseNorms


def _raise_rope():
    from lowering.raise_rope import RaiseRopePass

    return RaiseRopePass


def _raise_attention():
    from lowering.raise_attention import RaiseAttentionPass

    return RaiseAttentionPass


def _conv_to_gemm():
    from lowering.conv_to_gemm import ConvToGemmPass

    return ConvToGemmPass


def _graph_to_tile():
    from lowering.graph_to_tile import GraphToTile

    return GraphToTile


def _tile_expand():
    from lowering.tile_expand import TileExpand

    return TileExpand


def _tile_to_warp():
    from lowering.tile_to_warp import TileToWarp

    return TileToWarp


def _smem_swizzle():
    from lowering.smem_swizzle import SmemSwizzle

    return SmemSwizzle


def _warp_to_ptx():
    from lowering.warp_to_ptx import WarpToPtx

    return WarpToPtx


def _programmatic_launch():
    from lowering.programmatic_launch import ProgrammaticLaunch

    return ProgrammaticLaunch


def _lower_to_ptx():
    from lowering.lower_to_ptx import LowerToPtx

    return LowerToPtx


# name -> loader of the pass class (loaded lazily: a pipeline imports only what it runs)
PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "cse": _cse,
    "dce": _dce,
    "decompose-graph": _decompose_graph,
    "fold-constants": _fold_constants,
    "raise-norms": _raise_norms,
    "raise-rope": _raise_rope,
    "raise-attention": _raise_attention,
    "conv-to-gemm": _conv_to_gemm,
    "graph-to-tile": _graph_to_tile,
    "tile-expand": _tile_expand,
    "tile-to-warp": _tile_to_warp,
    "smem-swizzle": _smem_swizzle,
    "warp-to-ptx": _warp_to_ptx,
    "programmatic-launch": _programmatic_launch,
    "lower-to-ptx": _lower_to_ptx,
}
# graph to PTX: the pipeline rung.compile and the examples use
LOWER_TO_PTX = "graph-to-tile,tile-expand,tile-to-warp,smem-swizzle,warp-to-ptx"
_SUMMARIES = {"cse": "Eliminate common subexpressions (xDSL).", "dce": "Remove unused pure ops (xDSL)."}


def pass_summary(name: str) -> str:
    """The pass's description: its docstring's first paragraph, on one line."""
    if name in _SUMMARIES:
        return _SUMMARIES[name]
    return " ".join((PASSES[name]().__doc__ or "").strip().split("\n\n")[0].split())


def pass_options(name: str) -> list[str]:
    """The pass's options as `name=default`, as a -p spec sets them (`pass{name=value}`)."""
    if name in _SUMMARIES:
        return []
    return [f"{f.name}={f.default!r}" if isinstance(f.default, str) else f"{f.name}={str(f.default).lower()}" if isinstance(f.default, bool)
            else f"{f.name}={f.default}" for f in dataclasses.fields(PASSES[name]())]  # (booleans as a -p spec writes them)


def build_pipeline(spec: str, callback=None) -> PassPipeline:
    """The pipeline of a `-p` spec; unknown passes or options are a RungError."""
    try:
        specs = list(parse_pipeline(spec))
    except (ArgSpecParseError, ValueError) as e:
        raise RungError(f"bad pass pipeline '{spec}': {str(e).strip().splitlines()[-1]}") from None
    passes = []
    for s in specs:
        if s.name not in PASSES:
            raise RungError(f"unknown pass '{s.name}' (see --list-passes)")
        try:
            passes.append(PASSES[s.name]().from_pass_spec(s))
        except Exception as e:  # xDSL reports bad options with several exception types
            raise RungError(f"pass '{s.name}': {str(e).strip().splitlines()[-1]}") from None
    return PassPipeline(tuple(passes), callback)


def run_pipeline(module: ModuleOp, spec: str, ctx: Context, callback=None) -> None:
    if spec:
        build_pipeline(spec, callback).apply(ctx, module)
