"""graph ops that run as row programs (dialects.tile.rows): rms_norm, layer_norm, softmax (last dimension), embedding,
permutes, broadcasts, slices (of the last dimension, or of a leading one), concatenations, rope, a convolution's
windows (im2col), max and average pooling, and sum, mean and max over the trailing dimensions.

An op over the last dimension of an f16/bf16 tensor [..., N] becomes a tile.launch of a
tile.kernel with a #tile.rows schedule (one block per row; x flattened to [rows, N] and the
result reshaped back). The program is a few row ops, so a new row-wise op is one function here:
its program, and the op class it replaces in ROW_PROGRAMS.
"""

from __future__ import annotations

import math

import numpy as np
from xdsl.dialects.builtin import DenseArrayBase, FloatAttr, IndexType, IntegerAttr, ModuleOp, StringAttr, TensorType, UnitAttr, f32, i64
from xdsl.ir import Block, Region
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern

from dialects import graph as g
from dialects import tile as t
from dialects.tile.rows import MAX_ROW_THREADS

ROW_DTYPES = ("f16", "bf16")


def row_threads(cols: int) -> int:
    """Threads a row for rows of `cols`: about 8 elements a thread, a multiple of 32, at most 1024."""
    return min(MAX_ROW_THREADS, 32 * max(1, math.ceil(cols / 256)))


ROWS_PER_WARP_BLOCK = 8  # rows of one warp each share a block of 256 threads: a block per short row would leave the GPU idle


def row_config(cols: int) -> t.RowConfig:
    threads = row_threads(cols)
    return t.RowConfig(cols, threads, ROWS_PER_WARP_BLOCK if threads == 32 else 1)


class RowProgram:
    """Builds a row program: `load`, `map`, `reduce`, then `store` the result row."""

    def __init__(self, name: str, cols: int, args: list):
        self.cols = cols
        self.block = Block(arg_types=args)
        self.row = self.add(t.RowIdOp.build(result_types=[IndexType()])).result
        self.kernel = t.KernelOp.create(properties={"sym_name": StringAttr(name), "schedule": t.RowSchedule(row_config(cols))},
                                        regions=[Region(self.block)])

    def add(self, op):
        self.block.add_op(op)
        return op

    def source_row(self, shape, strides, offset: int = 0):
        """The row a tensor's row of this block's row comes from (tile.source_row)."""
        props = {"shape": DenseArrayBase.from_list(i64, list(shape)), "strides": DenseArrayBase.from_list(i64, list(strides))}
        if offset:
            props["offset"] = IntegerAttr(offset, i64)
        return self.add(t.SourceRowOp.build(operands=[self.row], result_types=[IndexType()], properties=props)).result

    def load(self, tensor, per_row: bool = True, row=None, stride: int = 0, offset: int = 0, padded: bool = False):
        """Row `row` (this block's by default) of `tensor`, or with per_row False its only row; with `stride`, of
        rows that long, the columns from `offset` on (`padded`: zeros outside the row; tile.load_row)."""
        props = {"stride": IntegerAttr(stride, i64), "offset": IntegerAttr(offset, i64)} if stride else {}
        if padded:
            props["padded"] = UnitAttr()
        op = t.LoadRowOp.build(operands=[tensor, [row or self.row] if per_row else []], result_types=[t.RowType.get(self.cols)], properties=props)
        return self.add(op).result

    def gather(self, tensor, rows, cols, dims, origin, row_map, col_map, fill: float = 0.0):
        """This block's row gathered from `tensor` viewed as `dims` (tile.gather_row; the maps as nested lists)."""
        props = {k: DenseArrayBase.from_list(i64, [int(x) for x in np.ravel(v)]) for k, v in
                 (("rows", rows), ("cols", cols), ("dims", dims), ("origin", origin), ("row_map", row_map), ("col_map", col_map))}
        if fill:
            props["fill"] = FloatAttr(fill, f32)
        return self.add(t.GatherRowOp.build(operands=[tensor, self.row], result_types=[t.RowType.get(self.cols)], properties=props)).result

    def map(self, fn: str, *inputs, constant: float | None = None):
        return self.add(t.MapOp.get(fn, *inputs, constant=constant)).result

    def reduce(self, kind: str, value):
        return self.add(t.ReduceRowOp.build(operands=[value], result_types=[f32], properties={"kind": StringAttr(kind)})).result

    def store(self, value) -> t.KernelOp:
        self.add(t.StoreRowOp.build(operands=[value, self.block.args[-1], self.row]))
        self.add(t.YieldOp.build(operands=[[]]))
        return self.kernel


def eight_bit_rows_program(element: str, x_type, cols: int, values: bool) -> t.KernelOp:
    """Rows of x (of element type `x_type`) quantized to 8-bit `element` (int8 or e4m3) as ir.numerics.quantize_rows
    does: with `values`, x / scale rounded (into an i8 or f8E4M3FN tensor), else scale = max(absmax(x) / largest,
    f32 tiny) itself (f32, one per row). Both compute the scale alike, so the two programs agree bit for bit."""
    from ir.dtypes import EIGHT_BIT_TYPES
    from ir.numerics import element_format

    out = EIGHT_BIT_TYPES[element] if values else f32
    name = f"rung_{'quantize_rows' if values else 'row_scales'}_{element}_{x_type}_n{cols}"
    p = RowProgram(name, cols, [t.generic_tensor(x_type), t.generic_tensor(out)])
    v = p.load(p.block.args[0])
    absmax = p.reduce("max", p.map("max", v, p.map("neg", v)))
    scale = p.map("max", p.map("div", absmax, constant=element_format(element).max), constant=float(np.finfo(np.float32).tiny))
    return p.store(p.map("div", v, scale) if values else scale)


def float_tag(letter: str, value: float) -> str:
    """A kernel name's part for a float it bakes in: `letter` and the f32 bits in hex (exact, and a valid name)."""
    return f"{letter}{int(np.float32(value).view(np.uint32)):08x}"


def rms_norm_program(op: g.RmsNormOp, dtype: str, cols: int) -> t.KernelOp:
    """y = x * rsqrt(mean(x^2) + eps) * (weight + offset)."""
    eps, offset = op.attr("eps"), op.attr("offset")
    elem = op.x.type.element_type
    name = f"rung_rms_norm_{dtype}_n{cols}_{float_tag('e', eps)}" + (f"_{float_tag('o', offset)}" if offset else "")
    p = RowProgram(name, cols, [t.generic_tensor(elem), t.generic_tensor(elem, 1), t.generic_tensor(elem)])
    x, w, _ = p.block.args
    v = p.load(x)
    mean = p.map("mul", p.reduce("sum", p.map("mul", v, v)), constant=1.0 / cols)
    scale = p.map("rsqrt", p.map("add", mean, constant=eps))
    weight = p.load(w, per_row=False)
    return p.store(p.map("mul", p.map("mul", v, scale), p.map("add", weight, constant=offset) if offset else weight))


def layer_norm_program(op: g.LayerNormOp, dtype: str, cols: int) -> t.KernelOp:
    """y = (x - mean) * rsqrt(mean((x - mean)^2) + eps) * weight + bias."""
    eps = op.attr("eps")
    elem = op.x.type.element_type
    p = RowProgram(f"rung_layer_norm_{dtype}_n{cols}_{float_tag('e', eps)}", cols,
                 [t.generic_tensor(elem), t.generic_tensor(elem, 1), t.generic_tensor(elem, 1), t.generic_tensor(elem)])
    x, w, b, _ = p.block.args
    v = p.load(x)
    centered = p.map("sub", v, p.map("mul", p.reduce("sum", v), constant=1.0 / cols))
    var = p.map("mul", p.reduce("sum", p.map("mul", centered, centered)), constant=1.0 / cols)
    scale = p.map("rsqrt", p.map("add", var, constant=eps))
    return p.store(p.map("add", p.map("mul", p.map("mul", centered, scale), p.load(w, per_row=False)), p.load(b, per_row=False)))


def softmax_program(op: g.SoftmaxOp, dtype: str, cols: int) -> t.KernelOp | None:
    """y = exp(x - max(x)) / sum(exp(x - max(x))), over the last dimension only."""
    if op.attr("dim") % len(op.x.type.get_shape()) != len(op.x.type.get_shape()) - 1:
        return None
    p = RowProgram(f"rung_softmax_{dtype}_n{cols}", cols, [t.generic_tensor(op.x.type.element_type)] * 2)
    v = p.load(p.block.args[0])
    e = p.map("exp", p.map("sub", v, p.reduce("max", v)))
    return p.store(p.map("mul", e, p.map("rcp", p.reduce("sum", e))))


def embedding_program(op: g.EmbeddingOp, dtype: str, cols: int) -> t.KernelOp | None:
    """y[r] = weight[indices[r]]: the block's index read once, its row copied."""
    vocab, index_type = op.weight.type.get_shape()[0], op.indices.type.element_type
    if getattr(index_type, "width", None) is None or index_type.width.data not in (32, 64):
        return None
    elem = op.weight.type.element_type
    p = RowProgram(f"rung_embedding_{dtype}_n{cols}_v{vocab}_i{index_type.width.data}", cols,
                   [t.generic_tensor(elem), t.generic_tensor(index_type, 1), t.generic_tensor(elem)])
    weight, indices, _ = p.block.args
    row = p.add(t.LoadIndexOp.build(operands=[indices, p.row], result_types=[IndexType()],
                                    properties={"limit": IntegerAttr(vocab, i64)})).result
    return p.store(p.load(weight, row=row))


def permute_program(op: g.PermuteOp, dtype: str, cols: int) -> t.KernelOp | None:
    """A permute that keeps the last dimension in place: each block copies its row from the source row it
    comes from (tile.source_row). One that moves it: each block gathers its row, one source row apart an element
    (tile.gather_row; reads that coalesce only across blocks)."""
    perm, shape = list(op.attr("dims")), op.results[0].type.get_shape()
    source, rank = op.operands[0].type.get_shape(), len(shape)
    perm = [d % rank for d in perm]
    elem, tag = op.results[0].type.element_type, "".join(map(str, perm))
    p = RowProgram(f"rung_permute_{dtype}_{'x'.join(map(str, source))}_p{tag}", cols, [t.generic_tensor(elem)] * 2)
    if rank >= 2 and perm[-1] == rank - 1:
        source_strides = row_strides(source)
        return p.store(p.load(p.block.args[0], row=p.source_row(shape[:-1], [source_strides[a] for a in perm[:-1]])))
    unit = np.eye(rank, dtype=np.int64)
    return p.store(p.gather(p.block.args[0], shape[:-1], shape[-1:], source, [0] * rank, unit[perm[:-1]], unit[perm[-1:]]))


def im2col_program(op: g.Im2colOp, dtype: str, cols: int) -> t.KernelOp:
    """Row (n, oh, ow) of a convolution's windows, columns (c, kh, kw): x[n, first + c, oh * sh - ph + kh * dh,
    ow * sw - pw + kw * dw], zero in the padding (tile.gather_row)."""
    (n, c, h, w), (first, count) = op.x.type.get_shape(), op.attr("channels")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = op.window()
    oh, ow = op.out_size()
    p = RowProgram(f"rung_im2col_{dtype}_{n}x{c}x{h}x{w}_k{kh}x{kw}_s{sh}x{sw}_p{ph}x{pw}_d{dh}x{dw}_c{first}x{count}", cols,
                   [t.generic_tensor(op.x.type.element_type)] * 2)
    return p.store(p.gather(p.block.args[0], (n, oh, ow), (count, kh, kw), (n, c, h, w), (0, first, -ph, -pw),
                            ((1, 0, 0, 0), (0, 0, sh, 0), (0, 0, 0, sw)), ((0, 1, 0, 0), (0, 0, dh, 0), (0, 0, 0, dw))))


def pool_program(op: g.Pool2dOp, dtype: str, cols: int) -> t.KernelOp:
    """Row (n, c, oh) of a max or average pooling: for each (kh, kw) of the window, the row gathered at
    x[n, c, oh * sh - ph + kh, ow * sw - pw + kw] (tile.gather_row; -inf or 0 in the padding), combined by max or
    by a sum times 1 / (KH * KW) (padding counts in the mean, as torch's count_include_pad)."""
    n, c, h, w = op.x.type.get_shape()
    oh = op.result.type.get_shape()[2]
    (kh, kw), (sh, sw), (ph, pw) = op.window()
    is_max = isinstance(op, g.MaxPool2dOp)
    p = RowProgram(f"rung_{'max' if is_max else 'avg'}_pool_{dtype}_{n}x{c}x{h}x{w}_k{kh}x{kw}_s{sh}x{sw}_p{ph}x{pw}", cols,
                   [t.generic_tensor(op.x.type.element_type)] * 2)
    total = None
    for i in range(kh):
        for j in range(kw):
            part = p.gather(p.block.args[0], (n, c, oh), (cols,), (n, c, h, w), (0, 0, i - ph, j - pw),
                            ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, sh, 0)), ((0, 0, 0, sw),), fill=-math.inf if is_max else 0.0)
            total = part if total is None else p.map("max" if is_max else "add", total, part)
    return p.store(total if is_max else p.map("mul", total, constant=1.0 / (kh * kw)))


def reduce_program(op: g.ReduceOp, dtype: str, cols: int) -> t.KernelOp | None:
    """A sum, mean or max over the trailing dimensions (a global average pooling's [-2, -1]): one row of their
    elements per block, reduced to the one element it stores."""
    shape, kind = op.x.type.get_shape(), op.attr("kind")
    reduced = op.reduced_dims()
    if kind not in ("sum", "mean", "max") or reduced != tuple(range(len(shape) - len(reduced), len(shape))):
        return None
    p = RowProgram(f"rung_reduce_{kind}_{dtype}_n{cols}", cols, [t.generic_tensor(op.x.type.element_type)] * 2)
    total = p.reduce("max" if kind == "max" else "sum", p.load(p.block.args[0]))
    return p.store(p.map("mul", total, constant=1.0 / cols) if kind == "mean" else total)


def moves_only_unit_dims(op: g.PermuteOp) -> bool:
    """Whether the permute keeps the order of the dimensions larger than 1 (a decoding step's [B, H, 1, D] -> [B, 1, H, D])."""
    shape, rank = op.x.type.get_shape(), len(op.x.type.get_shape())
    kept = [d % rank for d in op.attr("dims") if shape[d % rank] > 1]
    return kept == sorted(kept)


def row_strides(shape) -> list[int]:
    """The row strides of a tensor's leading dimensions (rows of its last dimension)."""
    return [math.prod(shape[a + 1:-1]) for a in range(len(shape) - 1)]


def broadcast_strides(shape, result) -> list[int] | None:
    """For a tensor of `shape` broadcast over some leading dimensions of `result` (rope's [1, 1, S, D] tables under
    [B, H, S, D]), its own last dimension kept: the row strides that take a result row to its row (0 along a broadcast
    dimension); None if it is not one."""
    padded = [1] * (len(result) - len(shape)) + list(shape)
    if len(shape) > len(result) or not shape or shape[-1] != result[-1] or any(d not in (1, r) for d, r in zip(padded[:-1], result[:-1])):
        return None
    strides = row_strides(padded)
    return [0 if padded[i] == 1 and result[i] > 1 else strides[i] for i in range(len(result) - 1)]


def broadcast_program(op: g.BroadcastOp, dtype: str, cols: int) -> t.KernelOp | None:
    """A broadcast (ViT's class token under the batch): each block copies the source row it comes from (tile.source_row,
    0 along a broadcast dimension); one that broadcasts the last dimension gathers its row (tile.gather_row)."""
    source, shape = op.operands[0].type.get_shape(), op.results[0].type.get_shape()
    if not source:  # (a scalar: no rows to read)
        return None
    elem, padded = op.results[0].type.element_type, [1] * (len(shape) - len(source)) + list(source)
    name = f"rung_broadcast_{dtype}_{'x'.join(map(str, padded))}_to_{'x'.join(map(str, shape))}"
    p = RowProgram(name, cols, [t.generic_tensor(elem)] * 2)
    if padded[-1] == shape[-1]:
        return p.store(p.load(p.block.args[0], row=p.source_row(shape[:-1], broadcast_strides(source, shape))))
    spread = np.diag([int(d == r) for d, r in zip(padded, shape)])  # a broadcast axis (size 1) stays at coordinate 0
    return p.store(p.gather(p.block.args[0], shape[:-1], shape[-1:], padded, [0] * len(shape), spread[:-1], spread[-1:]))


def slice_program(op: g.SliceOp, dtype: str, cols: int) -> t.KernelOp | None:
    """A slice of the last dimension (step 1): each block copies its row's columns [start, start + N). A slice of a
    leading dimension: each block copies the source row it comes from (tile.source_row, `step` rows apart)."""
    source = op.operands[0].type.get_shape()
    dim, step = op.attr("dim") % len(source), op.attr("step")
    start = min(op.attr("start") % source[dim] if op.attr("start") < 0 else op.attr("start"), source[dim])
    elem, shape = op.results[0].type.element_type, op.results[0].type.get_shape()
    if dim == len(source) - 1:
        if step != 1:
            return None
        p = RowProgram(f"rung_slice_{dtype}_n{cols}_of{source[-1]}_at{start}", cols, [t.generic_tensor(elem)] * 2)
        return p.store(p.load(p.block.args[0], stride=source[-1], offset=start))
    strides = row_strides(source)
    p = RowProgram(f"rung_slice_{dtype}_n{cols}_{'x'.join(map(str, source[:-1]))}_d{dim}_at{start}_by{step}", cols, [t.generic_tensor(elem)] * 2)
    row = p.source_row(shape[:-1], [s * step if i == dim else s for i, s in enumerate(strides)], start * strides[dim])
    return p.store(p.load(p.block.args[0], row=row))


def cat_program(op: g.CatOp, dtype: str, cols: int) -> t.KernelOp:
    """A concatenation: input i read where it starts (along the last dimension, its row at columns shifted by
    where it starts, tile.load_row `padded`; along a leading one, its row gathered at that dimension's index
    shifted, tile.gather_row), zeros outside it, the parts summed (adding zeros is exact)."""
    shape = op.results[0].type.get_shape()
    dim, elem = op.attr("dim") % len(shape), op.results[0].type.element_type
    widths = [v.type.get_shape()[dim] for v in op.operands]
    tag = "" if dim == len(shape) - 1 else f"_{'x'.join(map(str, shape))}_d{dim}"
    p = RowProgram(f"rung_cat_{dtype}_{'_'.join(map(str, widths))}{tag}", cols, [t.generic_tensor(elem)] * (len(widths) + 1))
    unit = np.eye(len(shape), dtype=np.int64)
    total, start = None, 0
    for arg, value, width in zip(p.block.args, op.operands, widths):
        if dim == len(shape) - 1:
            part = p.load(arg, stride=width, offset=-start, padded=True)
        else:
            part = p.gather(arg, shape[:-1], shape[-1:], value.type.get_shape(), -start * unit[dim], unit[:-1], unit[-1:])
        total = part if total is None else p.map("add", total, part)
        start += width
    return p.store(total)


def rope_program(op: g.RopeOp, dtype: str, cols: int) -> t.KernelOp | None:
    """y = x * cos + rotate_half(x) * sin: rotate_half(x) is x read half a row to the left minus x read half a
    row to the right (tile.load_row `padded`: zeros past either end); cos and sin through tile.source_row. When x
    is a permute keeping the last dimension, used by the rope alone (transformers' transpose of the heads before
    rope), x's rows come from the permute's source through tile.source_row too: the transpose is never written."""
    shape = op.result.type.get_shape()
    strides = [broadcast_strides(v.type.get_shape(), shape) for v in (op.cos, op.sin)]
    if cols % 2 or None in strides:
        return None
    permute = permuted_rows(op.x)
    x_strides = [row_strides(permute.x.type.get_shape())[a] for a in permute.attr("dims")[:-1]] if permute else None
    elem, half = op.result.type.element_type, cols // 2
    tag = f"_x{'x'.join(map(str, permute.x.type.get_shape()[:-1]))}p{''.join(str(d % len(shape)) for d in permute.attr('dims'))}" if permute else ""
    p = RowProgram(f"rung_rope_{dtype}_n{cols}_{'x'.join(map(str, shape[:-1]))}_{'_'.join('x'.join(map(str, s)) for s in strides)}{tag}", cols,
                   [t.generic_tensor(elem)] * 4)
    x, cos, sin, _ = p.block.args
    row = p.source_row(shape[:-1], x_strides) if permute else None
    rotated = p.map("sub", p.load(x, row=row, stride=cols, offset=-half, padded=True), p.load(x, row=row, stride=cols, offset=half, padded=True))
    tables = [p.load(v, row=p.source_row(shape[:-1], s)) for v, s in zip((cos, sin), strides)]
    return p.store(p.map("add", p.map("mul", p.load(x, row=row), tables[0]), p.map("mul", rotated, tables[1])))


def permuted_rows(v) -> g.PermuteOp | None:
    """The permute that makes `v` if it keeps the last dimension and `v` has no other use (a consumer can read its rows
    from the permute's source instead)."""
    permute = v.owner if isinstance(v.owner, g.PermuteOp) and len(list(v.uses)) == 1 else None
    rank = len(v.type.get_shape())
    return permute if permute is not None and rank >= 2 and permute.attr("dims")[-1] % rank == rank - 1 else None


ROW_PROGRAMS = {g.RmsNormOp: rms_norm_program, g.LayerNormOp: layer_norm_program, g.SoftmaxOp: softmax_program,
                g.EmbeddingOp: embedding_program, g.PermuteOp: permute_program, g.SliceOp: slice_program, g.CatOp: cat_program,
                g.RopeOp: rope_program, g.BroadcastOp: broadcast_program, g.Im2colOp: im2col_program, g.MaxPool2dOp: pool_program, g.AvgPool2dOp: pool_program,
                g.ReduceOp: reduce_program}


class RowOpToTile(RewritePattern):
    """An op of ROW_PROGRAMS on f16/bf16 operands -> tile.launch of its row program."""

    def match_and_rewrite(self, op, rewriter: PatternRewriter):
        if isinstance(op, g.PermuteOp) and moves_only_unit_dims(op):  # the same elements in the same order: a view
            rewriter.replace(op, [], [reshaped(rewriter, op.x, list(op.result.type.get_shape()))])
            return
        make = ROW_PROGRAMS.get(type(op))
        result = op.results[0].type if make else None
        if make is None or str(result.element_type) not in ROW_DTYPES or any(
                str(v.type.element_type) not in ROW_DTYPES for v in op.operands if not isinstance(op, g.EmbeddingOp)):
            return
        x_shape = op.operands[0].type.get_shape()
        cols = math.prod(x_shape[len(x_shape) - len(op.reduced_dims()):]) if isinstance(op, g.ReduceOp) else result.get_shape()[-1]
        kernel = make(op, str(result.element_type), cols)
        if kernel is None:  # (an op this program does not cover, e.g. softmax over another dimension)
            return
        operands = list(op.operands)
        permute = permuted_rows(op.x) if isinstance(op, g.RopeOp) else None
        if permute:  # (rope_program reads x's rows from the permute's source)
            operands[0] = permute.x
        if isinstance(op, (g.PermuteOp, g.SliceOp, g.CatOp, g.RopeOp, g.BroadcastOp, g.Im2colOp, g.Pool2dOp)):  # the sources as [rows, their last dimension]
            operands = [reshaped(rewriter, v, [math.prod(v.type.get_shape()[:-1]), v.type.get_shape()[-1]]) for v in operands]
        if isinstance(op, g.ReduceOp):  # a row of the reduced elements per result element
            operands = [reshaped(rewriter, op.x, [math.prod(x_shape) // cols, cols])]
        if isinstance(op, g.EmbeddingOp):  # the indices, one per result row
            operands[1] = reshaped(rewriter, op.indices, [math.prod(op.indices.type.get_shape())])
        launch_rows(rewriter, op, kernel, operands, [math.prod(result.get_shape()), 1] if isinstance(op, g.ReduceOp) else None)
        if permute:
            rewriter.erase(permute)


class FusedRopeToTile(RowOpToTile):
    """RowOpToTile for a rope whose x is a permute it reads through (graph-to-tile runs it first, before the permute
    itself would become a copy)."""

    def match_and_rewrite(self, op, rewriter: PatternRewriter):
        if isinstance(op, g.RopeOp) and permuted_rows(op.x):
            super().match_and_rewrite(op, rewriter)


def reshaped(rewriter: PatternRewriter, v, shape: list[int]):
    """`v` as `shape`: through a graph.reshape inserted before the op being rewritten, or `v` itself."""
    if list(v.type.get_shape()) == list(shape):
        return v
    rewriter.insert(reshape := g.ReshapeOp.make(v, result_type=TensorType(v.type.element_type, list(shape))))
    return reshape.results[0]


def add_kernel_once(op, kernel: t.KernelOp) -> None:
    """Put block program `kernel` in the module of `op` unless a program of its name is there (one per distinct program)."""
    module = op.get_toplevel_object()
    if isinstance(module, ModuleOp) and not any(isinstance(k, t.KernelOp) and k.sym_name == kernel.sym_name for k in module.ops):
        module.body.block.add_op(kernel)


def launch_rows(rewriter: PatternRewriter, op, kernel: t.KernelOp, operands: list, rows: list[int] | None = None) -> None:
    """Replace `op` by a tile.launch of row program `kernel` (added to the module once) on `operands`: those
    of the result's shape [..., N] flattened to [rows, N] (others, rows read by every row, as they are), the
    result (`rows` if given, else [rows, N]) reshaped back."""
    add_kernel_once(op, kernel)
    result = op.results[0].type
    shape, elem = result.get_shape(), result.element_type
    rows = rows or [math.prod(shape[:-1]), shape[-1]]
    flattened = [reshaped(rewriter, v, rows) if v.type.get_shape() == shape else v for v in operands]
    launch = t.LaunchOp.get(kernel.sym_name.data, flattened, TensorType(elem, rows))
    rewriter.insert(launch)
    rewriter.replace(op, [], [reshaped(rewriter, launch.result, shape)])
