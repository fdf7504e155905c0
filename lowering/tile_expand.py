"""tile-expand: each tile.matmul becomes a tile.launch of the block program its schedule spells out.

The program (a tile.kernel, defined once per schedule) is what one thread block does:

    %row, %col = tile.block_origin                       // its output tile
    %first, %count = tile.k_range %a                     // its k-tiles (its share of a split K)
    %as = tile.shared_buffer : !tile.shared<3x128x32xf16>
    ...
    %acc = tile.pipeline(%first, %count, %zeros)
      copy (%kt, %stage)     { tile.copy %a[%row, %kt] -> %as[%stage] ... }
      compute (%stage, %acc) { tile.fragment, [tile.decode,] tile.mma ... tile.yield }
    %y = tile.epilogue %acc at %row, %col [bias ...] {activation}
    tile.store %y, %c[%row, %col]

With a split K the launch writes f32 partial sums and tile.sum_splits adds them, then the
bias and activation. tile-to-warp lowers each op of the program.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import Float8E4M3FNType, IndexType, IntegerAttr, IntegerType, ModuleOp, Signedness, StringAttr, TensorType, UnitAttr, \
    bf16, f16, f32, i8, i32, i64
from xdsl.ir import Block, Region
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects import tile as t
from ir.packing import code_chunk_bytes


def _elements(cfg: t.GemmConfig):
    """(activation type, A's and an unpacked B's element type)."""
    act = f16 if cfg.dtype == "f16" else bf16
    return act, {"s8": i8, "e4m3": Float8E4M3FNType()}.get(cfg.a8, act)


def argument_types(cfg: t.GemmConfig) -> list:
    """The block program's arguments (cfg.param_names without the sizes), as shape-generic tensors."""
    act, ab = _elements(cfg)
    scale = IntegerType(8, Signedness.UNSIGNED) if cfg.scale == "e8m0" else act
    types = {"a": t.generic_tensor(ab), "b": t.generic_tensor(i32 if cfg.weight or cfg.sparse else ab), "a_scales": t.generic_tensor(f32, 1),
             "scales": t.generic_tensor(scale) if cfg.weight else t.generic_tensor(f32, 1), "zeros": t.generic_tensor(act),
             "bias": t.generic_tensor(act, 1), "residual": t.generic_tensor(act),
             "c": t.generic_tensor(f32, 3) if cfg.split_k > 1 else t.generic_tensor(act)}
    return [types[name] for name in cfg.param_names[:-3]]


def block_program(cfg: t.GemmConfig) -> t.KernelOp:
    """The tile.kernel of schedule `cfg`, named cfg.name."""
    act, ab = _elements(cfg)
    body = Block(arg_types=argument_types(cfg))
    arg = dict(zip(cfg.param_names, body.args))

    def add(op):
        body.add_op(op)
        return op

    origin = add(t.BlockOriginOp.build(result_types=[IndexType()] * 2))
    k_range = add(t.KRangeOp.build(operands=[arg["a"]], result_types=[IndexType()] * 2))
    # (source, shared element, tile rows x cols in elements, bytes per copy), in cfg.copied_tiles order
    bits = cfg.weight_bits
    copies = [("a", ab, (cfg.bm, cfg.bk), 2 * cfg.copy_elems)]
    if cfg.weight:
        scale_elem = arg["scales"].type.element_type
        copies.append(("b", i32, (cfg.bn, cfg.bk * bits // 32), 2 * cfg.b_tile.elems))
        copies += [(name, elem, (cfg.scale_rows, cfg.bn), 16) for name, elem in (("scales", scale_elem), ("zeros", act))[:1 + cfg.zero]]
    elif cfg.sparse:  # a tile's slots over its BN rows (ir.sparse.kernel_tiles)
        copies.append(("b", i32, (cfg.bn, cfg.sparse // cfg.bn), 2 * cfg.b_tile.elems))
    elif cfg.b_kn:
        copies.append(("b", ab, (cfg.bk, cfg.bn), 2 * cfg.b_copy_elems))
    else:
        copies.append(("b", ab, (cfg.bn, cfg.bk), 2 * cfg.copy_elems))
    buffers = {name: add(t.SharedBufferOp.build(result_types=[t.SharedType.get(cfg.stages, *shape, elem)])).result
               for name, elem, shape, *_ in copies}
    acc_elem = i32 if cfg.a8 == "s8" else f32
    zeros = add(t.ZerosOp.build(result_types=[t.FragType.get(cfg.bm, cfg.bn, acc_elem, "acc")]))

    pipeline = add(t.PipelineOp.get(k_range.first, k_range.count, zeros.result))
    copy, compute = pipeline.copy.block, pipeline.compute.block
    k_tile, stage = copy.args
    for (name, _, _, nbytes), (k_dim, k_step) in zip(copies, cfg.copy_k_steps):
        fixed = origin.row if name == "a" else origin.col
        row_tiles = code_chunk_bytes(bits) if name == "b" and cfg.weight else 0  # packed codes: in 16-row tiles (ir.packing.code_tiles)
        copy.add_op(t.CopyOp.get(arg[name], fixed, k_tile, buffers[name], stage, k_dim, k_step, nbytes, row_tiles))
    copy.add_op(t.YieldOp.build(operands=[[]]))

    stage, acc = compute.args

    def fragment(name: str, layout: str):
        buf = buffers[name].type
        _, rows, cols = buf.get_shape()
        op = t.FragmentOp.build(operands=[buffers[name], stage], result_types=[t.FragType.get(rows, cols, buf.element, layout)])
        compute.add_op(op)
        return op.result

    a = fragment("a", "a")
    group = {"group": IntegerAttr(cfg.group, i64)}
    mma_scales = []
    if cfg.weight:
        codes = fragment("b", "packed")
        if cfg.scale_partials:  # the mma scales each group's partial sums
            mma_scales, decode_scales, zero_terms = [fragment("scales", "group_acc")], [], []
        else:
            decode_scales, zero_terms = [fragment("scales", "group")], [fragment("zeros", "group")] if cfg.zero else []
        decode = t.DecodeOp.build(operands=[codes, decode_scales, zero_terms], result_types=[t.FragType.get(cfg.bn, cfg.bk, act, "b")],
                                  properties={"element": StringAttr(cfg.weight), **({} if mma_scales else group),
                                              **({"shared_table": UnitAttr()} if cfg.shared_table else {})})
        compute.add_op(decode)
        b = decode.result
    elif cfg.sparse:
        scatter = t.ScatterOp.build(operands=[fragment("b", "sparse")], result_types=[t.FragType.get(cfg.bn, cfg.bk, act, "b")])
        compute.add_op(scatter)
        b = scatter.result
    else:
        b = fragment("b", "bt" if cfg.b_kn else "b")
    mma = t.MmaOp.build(operands=[a, b, acc, mma_scales], result_types=[acc.type], properties=group if mma_scales else {})
    compute.add_op(mma)
    compute.add_op(t.YieldOp.build(operands=[[mma.result]]))

    final = cfg.split_k == 1  # else bias, activation and residual follow the sum of the splits
    scaled = [[arg["a_scales"]], [arg["scales"]]] if cfg.a8 else [[], []]
    props = {"activation": StringAttr(cfg.activation)} if final and cfg.activation != "none" else {}
    if final and cfg.residual:
        props["residual"] = StringAttr(cfg.residual)
    epilogue = add(t.EpilogueOp.build(
        operands=[pipeline.result, origin.row, origin.col, *scaled, [arg["bias"]] if final and cfg.bias else [],
                  [arg["residual"]] if final and cfg.residual else []],
        result_types=[t.FragType.get(cfg.bm, cfg.bn, f32, "acc")], properties=props))
    add(t.StoreOp.build(operands=[epilogue.result, arg["c"], origin.row, origin.col]))
    add(t.YieldOp.build(operands=[[]]))

    kernel = t.KernelOp.create(properties={"sym_name": StringAttr(cfg.name), "schedule": t.GemmSchedule(cfg)}, regions=[Region(body)])
    # what the ops carry out: with a split K, f32 partial sums (the reduction adds the bias and applies the activation)
    kernel.properties["schedule"] = t.GemmSchedule(kernel.program_config())
    return kernel


@dataclass(frozen=True)
class TileExpand(ModulePass):
    """Expand each tile.matmul into a tile.launch of its schedule's block program (tile.kernel)."""

    name = "tile-expand"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        kernels = {k.sym_name.data for k in op.ops if isinstance(k, t.KernelOp)}
        for mm in [o for o in op.walk() if isinstance(o, t.MatmulOp)]:
            cfg = mm.config
            if cfg.name not in kernels:
                op.body.block.add_op(block_program(cfg))
                kernels.add(cfg.name)
            inputs = [v for name, v in zip(mm.operand_names, mm.operands) if name not in ("bias", "residual") or cfg.split_k == 1]
            if cfg.split_k == 1:
                Rewriter.replace_op(mm, t.LaunchOp.get(cfg.name, inputs, mm.result.type))
                continue
            (m, _), n = mm.x.type.get_shape(), mm.result.type.get_shape()[1]
            partial = t.LaunchOp.get(cfg.name, inputs, TensorType(f32, cfg.workspace_shape(m, n)))
            props = {"activation": StringAttr(cfg.activation)} if cfg.activation != "none" else {}
            if cfg.residual:
                props["residual"] = StringAttr(cfg.residual)
            total = t.SumSplitsOp.build(operands=[partial.result, [mm.bias] if mm.bias else [], [mm.residual] if mm.residual else []],
                                        result_types=[mm.result.type], properties=props)
            Rewriter.replace_op(mm, [partial, total])
