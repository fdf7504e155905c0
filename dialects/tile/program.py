"""The block program: tile.kernel, run by tile.launch over a grid, and the ops one thread block executes, each with its meaning on numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    DenseArrayBase,
    IndexType,
    IntegerAttr,
    IntegerType,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.ir import (
    Attribute,
    Block,
    Region,
    SSAValue,
)
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    VarConstraint,
    base,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import IsTerminator, SymbolOpInterface
from xdsl.utils.exceptions import VerifyException

from dialects.tile.ops import add_scaled_partials, scale_bits
from dialects.tile.attention import AttentionOp, AttentionSchedule
from dialects.tile.rows import RowSchedule, row_program_ops
from dialects.tile.schedule import ACTIVATIONS, RESIDUALS, GemmConfig, GemmSchedule, combine_residual
from dialects.tile.types import FragType, SharedType, element_bits
from ir.dtypes import eight_bit_format


@dataclass(frozen=True)
class BlockIds:
    """The block being interpreted: its (x, y, z) in `grid`, and the kernel's schedule."""

    x: int
    y: int
    z: int
    grid: tuple[int, int, int]
    cfg: GemmConfig


def _print_region(printer: Printer, keyword: str, region: Region) -> None:
    """` keyword (%arg: type, ...) {ops}`."""
    printer.print_string(f" {keyword} (" if keyword else " (")
    printer.print_list(region.block.args, printer.print_block_argument)
    printer.print_string(") ")
    printer.print_region(region, print_entry_block_args=False)


def _parse_region(parser: Parser, keyword: str) -> Region:
    if keyword:
        parser.parse_keyword(keyword)
    args = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_argument)
    return parser.parse_region(args)


def _run_block(block: Block, env: dict, ids: BlockIds) -> list:
    """Run a block program's ops in order (nested regions see `env`); returns what tile.yield passes on."""
    for op in block.ops:
        vals = [env[v] for v in op.operands]
        if isinstance(op, YieldOp):
            return vals
        outs = op.run_regions(ids, env, *vals) if isinstance(op, PipelineOp) else op.run(ids, *vals)
        env.update(zip(op.results, outs if isinstance(outs, tuple) else (outs,)))
    return []


def _window(x: np.ndarray, r0: int, c0: int, rows: int, cols: int) -> np.ndarray:
    """x[r0:r0 + rows, c0:c0 + cols], zeros outside x."""
    out = np.zeros((rows, cols), x.dtype)
    part = x[r0:r0 + rows, c0:c0 + cols]
    out[:part.shape[0], :part.shape[1]] = part
    return out


_INDEX = IndexType()


def generic_tensor(element: Attribute, rank: int = 2) -> TensorType:
    """A tensor of any shape of that rank: what a kernel's arguments are."""
    return TensorType(element, [DYNAMIC_INDEX] * rank)


@irdl_op_definition
class KernelOp(IRDLOperation):
    """One thread block's program, a symbol that tile.launch runs over a grid. Its arguments are
    the launch's operands as shape-generic tensors, then the output it writes with tile.store.
    `schedule` is what the program carries out and names its kind: #tile.gemm (a GEMM's block
    program: its GemmConfig of tiles, warps, pipeline, split K, block order, prefetch, wgmma) or
    #tile.rows (a row program, dialects.tile.rows) or #tile.attention (dialects.tile.attention); the verifier checks the program against it."""

    name = "tile.kernel"
    sym_name = prop_def(StringAttr)
    schedule = prop_def(GemmSchedule | RowSchedule | AttentionSchedule)
    body = region_def("single_block")
    traits = traits_def(SymbolOpInterface())

    def print(self, printer: Printer) -> None:
        printer.print_string(f" @{self.sym_name.data}")
        printer.print_op_attributes({k: v for k, v in self.properties.items() if k != "sym_name"})
        _print_region(printer, "", self.body)

    @classmethod
    def parse(cls, parser: Parser) -> "KernelOp":
        name = parser.parse_symbol_name()
        props = parser.parse_optional_attr_dict()
        return cls.create(properties={"sym_name": name, **props}, regions=[_parse_region(parser, "")])

    def ops_of(self, cls) -> list:
        return [o for o in self.body.walk() if isinstance(o, cls)]

    @property
    def config(self) -> GemmConfig:
        """The schedule the program carries out. With a split K the output is f32 partial sums, and
        bias and activation belong to tile.sum_splits (so to the reduction's schedule, not this)."""
        return self.schedule.data

    def program_config(self) -> GemmConfig:
        """The schedule as the program's ops spell it out (the fields no op shows from `schedule`)."""
        cfg = self.config
        a_copy, b_copy = self.ops_of(CopyOp)[:2]
        x, out = self.body.block.args[0].type, self.body.block.args[-1].type
        a8 = eight_bit.a8 if (eight_bit := eight_bit_format(x.element_type)) else ""
        if str(out.element_type) in ("f16", "bf16"):
            dtype = str(out.element_type)
        else:  # f32 partial sums; 8-bit operands: the reduction rounds to its own type
            dtype = "f16" if a8 else str(x.element_type)
        epilogue, decode = self.ops_of(EpilogueOp)[0], self.ops_of(DecodeOp)
        weight = {}
        if decode:  # the scales go with the decode, or with the mma (scale_partials)
            scaled = decode[0] if decode[0].scales is not None else self.ops_of(MmaOp)[0]
            if scaled.scales is None:
                raise ValueError("a decoded weight's scales go to tile.decode or to the tile.mma that takes it: neither has them")
            if scaled.group is None:
                raise ValueError(f"{scaled.name}'s scales come with their group size")
            weight = dict(weight=decode[0].element.data, group=scaled.group.value.data,
                          scale="e8m0" if _is_e8m0(scaled.scales) else "", zero=decode[0].zeros is not None,
                          scale_partials=scaled is not decode[0], shared_table=decode[0].shared_table is not None)
        b_kn = b_copy.k_dim.value.data == 0
        scatter = self.ops_of(ScatterOp)
        if scatter:
            weight["sparse"] = math.prod(scatter[0].slots.type.get_shape())
        return GemmConfig(dtype, cfg.bm, cfg.bn, cfg.bk, cfg.warps_m, cfg.warps_n, cfg.stages, epilogue.bias is not None,
                          epilogue.activation.data if epilogue.activation else "none", a_copy.elems, b_kn,
                          b_copy.elems if b_kn else 8, split_k=cfg.split_k, raster=cfg.raster, prefetch=cfg.prefetch, a8=a8,
                          wgmma=cfg.wgmma, residual=epilogue.residual.data if epilogue.residual else "", early_weights=cfg.early_weights,
                          **weight)

    def verify_(self):
        if not isinstance(self.body.block.last_op, YieldOp):
            raise VerifyException("tile.kernel ends in tile.yield")
        if isinstance(self.schedule, RowSchedule):
            row_program_ops(self)
        elif isinstance(self.schedule, AttentionSchedule):
            if [type(o) for o in self.body.block.ops] != [AttentionOp, YieldOp]:
                raise VerifyException("an attention program is one tile.attention")
        else:
            self._verify_gemm()

    def _verify_gemm(self):
        k_dims = {c.buffer: c.k_dim.value.data for c in self.ops_of(CopyOp)}
        for f in self.ops_of(FragmentOp):
            if f.result.type.layout.data in ("b", "bt") and (f.result.type.layout.data == "bt") != (k_dims.get(f.buffer) == 0):
                raise VerifyException("a bt fragment reads a B tile copied with K along its rows (k_dim = 0), a b fragment one with K along its columns")
        for cls in (BlockOriginOp, KRangeOp, PipelineOp, EpilogueOp, StoreOp):
            if len(self.ops_of(cls)) != 1:
                raise VerifyException(f"a GEMM block program has one {cls.name}")
        if len(self.ops_of(CopyOp)) < 2:
            raise VerifyException("a GEMM block program copies A and B")
        try:
            program = self.program_config()
        except ValueError as e:
            raise VerifyException(str(e)) from None
        cfg = self.config
        if program != cfg:
            diff = ", ".join(f"{f}: {getattr(program, f)!r}" for f in cfg.__dataclass_fields__ if getattr(program, f) != getattr(cfg, f))
            raise VerifyException(f"the program does not carry out its schedule: its ops have {diff}")
        buffers = [op.result.type for op in self.ops_of(SharedBufferOp)]
        for t, tile in zip(buffers, cfg.copied_tiles, strict=True):
            stages, rows, cols = t.get_shape()
            if (stages, rows, cols * element_bits(t.element) // 8) != (cfg.stages, tile.rows, tile.bytes // tile.rows):
                raise VerifyException(f"shared buffer {t} does not hold the schedule's {tile.rows}x{tile.bytes // tile.rows}-byte tiles")
        for copy, (k_dim, k_step) in zip(self.ops_of(CopyOp), cfg.copy_k_steps, strict=True):
            if (copy.k_dim.value.data, tuple(copy.k_step.get_values())) != (k_dim, k_step):
                raise VerifyException(f"tile.copy into {copy.buffer.type} places k-tiles by k_dim = {k_dim}, k_step = {list(k_step)} in this schedule")

    def interpret(self, operands: list, out: np.ndarray) -> np.ndarray:
        """Run every block of the grid (for a row program, every row), one after another, into `out`."""
        shapes = [o.shape for o in (*operands, out)]
        grid = self.schedule.instances(shapes) if hasattr(self.schedule, "instances") else self.schedule.launch_grid(shapes)
        cfg = self.schedule.data
        for z in range(grid[2]):
            for y in range(grid[1]):
                for x in range(grid[0]):
                    _run_block(self.body.block, dict(zip(self.body.block.args, [*operands, out])), BlockIds(x, y, z, grid, cfg))
        return out


@irdl_op_definition
class LaunchOp(IRDLOperation):
    """Run the tile.kernel `kernel` on the operands over the grid of the result's BM x BN tiles
    (z: the K splits of the kernel's schedule); the kernel writes the result."""

    name = "tile.launch"
    kernel = prop_def(SymbolRefAttr)
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = "$kernel `(` $inputs `)` attr-dict `:` functional-type($inputs, results)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(kernel: str, inputs: list, result_type) -> "LaunchOp":
        return LaunchOp.build(operands=[inputs], result_types=[result_type], properties={"kernel": SymbolRefAttr(kernel)})

    def verify_(self):
        self.definition()

    def definition(self) -> KernelOp:
        top = self
        while top.parent_op() is not None:
            top = top.parent_op()
        for op in top.walk():
            if isinstance(op, KernelOp) and op.sym_name.data == self.kernel.root_reference.data:
                return op
        raise VerifyException(f"tile.launch: no tile.kernel @{self.kernel.root_reference.data} in the module")

    def execute(self, *inputs):
        out = np.full(self.result.type.get_shape(), np.nan, np.float32)  # poisoned: the kernel writes all of it
        return self.definition().interpret(list(inputs), out)


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Ends a block program or a pipeline region, passing `values` on."""

    name = "tile.yield"
    values = var_operand_def()
    assembly_format = "($values^ `:` type($values))? attr-dict"
    traits = traits_def(IsTerminator())


@irdl_op_definition
class BlockOriginOp(IRDLOperation):
    """(row, column) of this block's output tile: grid x runs over N-tiles inside bands of the
    kernel's `raster` M-tiles, so the B tiles a band reads stay in L2."""

    name = "tile.block_origin"
    row = result_def(_INDEX)
    col = result_def(_INDEX)
    assembly_format = "attr-dict"

    def run(self, ids: BlockIds):
        cfg, (tiles_n, tiles_m, _) = ids.cfg, ids.grid
        pid, band = ids.y * tiles_n + ids.x, tiles_n * cfg.raster
        first = pid // band * cfg.raster
        within = pid % band
        rows = min(tiles_m - first, cfg.raster)  # the last band may be short
        return (first + within % rows) * cfg.bm, within // rows * cfg.bn


@irdl_op_definition
class KRangeOp(IRDLOperation):
    """(first, count) of the BK-wide k-tiles of x's K this block accumulates: all of them, or
    its split's share (grid z of the kernel's split_k)."""

    name = "tile.k_range"
    x = operand_def(TensorType)
    first = result_def(_INDEX)
    count = result_def(_INDEX)
    assembly_format = "$x attr-dict `:` type($x)"

    def run(self, ids: BlockIds, x):
        cfg = ids.cfg
        k_tiles = -(-x.shape[1] // cfg.bk)
        per_split = -(-k_tiles // cfg.split_k)
        first = ids.z * per_split
        return first, max(0, min(k_tiles, first + per_split) - first)


@irdl_op_definition
class SharedBufferOp(IRDLOperation):
    """A buffer in shared memory, one tile per pipeline stage."""

    name = "tile.shared_buffer"
    result = result_def(SharedType)
    assembly_format = "attr-dict `:` type($result)"

    def run(self, ids: BlockIds):
        from ir.dtypes import storage_dtype

        return np.zeros(self.result.type.get_shape(), storage_dtype(self.result.type.element))


@irdl_op_definition
class ZerosOp(IRDLOperation):
    """A register tile of zeros (the accumulator's start)."""

    name = "tile.zeros"
    result = result_def(FragType)
    assembly_format = "attr-dict `:` type($result)"

    def run(self, ids: BlockIds):
        t = self.result.type
        return np.zeros(t.get_shape(), np.int32 if isinstance(t.element, IntegerType) else np.float32)


@irdl_op_definition
class PipelineOp(IRDLOperation):
    """Accumulate over `count` k-tiles from `first`: the `copy` region (k-tile, stage) fills
    pipeline stage `stage` with k-tile's tiles, the `compute` region (stage, acc) reads that stage
    and yields the new accumulator. The kernel's `stages` stages let copies run that many k-tiles
    ahead of compute; in meaning each k-tile is copied, then computed."""

    name = "tile.pipeline"
    first = operand_def(_INDEX)
    count = operand_def(_INDEX)
    init = operand_def(FragType)
    result = result_def(FragType)
    copy = region_def("single_block")
    compute = region_def("single_block")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operands(self.operands)
        printer.print_string(" : ")
        printer.print_attribute(self.init.type)
        _print_region(printer, "copy", self.copy)
        _print_region(printer, "compute", self.compute)

    @classmethod
    def parse(cls, parser: Parser) -> "PipelineOp":
        operands = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_unresolved_operand)
        parser.parse_punctuation(":")
        acc = parser.parse_type()
        operands = parser.resolve_operands(operands, [_INDEX, _INDEX, acc], parser.pos)
        copy, compute = _parse_region(parser, "copy"), _parse_region(parser, "compute")
        return cls.create(operands=operands, result_types=[acc], regions=[copy, compute])

    @staticmethod
    def get(first: SSAValue, count: SSAValue, init: SSAValue) -> "PipelineOp":
        return PipelineOp.build(operands=[first, count, init], result_types=[init.type],
                                regions=[Region(Block(arg_types=[_INDEX, _INDEX])), Region(Block(arg_types=[_INDEX, init.type]))])

    def verify_(self):
        term = self.compute.block.last_op
        if not isinstance(term, YieldOp) or [v.type for v in term.values] != [self.init.type]:
            raise VerifyException("tile.pipeline's compute region yields the accumulator")
        if not isinstance(self.copy.block.last_op, YieldOp) or any(not isinstance(o, (CopyOp, YieldOp)) for o in self.copy.block.ops):
            raise VerifyException("tile.pipeline's copy region holds tile.copy ops")

    def run_regions(self, ids: BlockIds, env: dict, first: int, count: int, acc):
        for i in range(count):
            stage = i % ids.cfg.stages
            env.update(zip(self.copy.block.args, (first + i, stage)))
            _run_block(self.copy.block, env, ids)
            env.update(zip(self.compute.block.args, (stage, acc)))
            (acc,) = _run_block(self.compute.block, env, ids)
        return acc


COPY_BYTES = (16, 8, 4, 2)  # cp.async sizes; 2: a load and a shared store per element


@irdl_op_definition
class CopyOp(IRDLOperation):
    """buffer[stage] = the buffer tile's window of `src` (zeros outside it) at `fixed` along the
    dimension other than `k_dim`, and k-tile `k_tile` along `k_dim`: from k_tile * k_step[0] //
    k_step[1] (k_step: k-tile to rows or columns of src). `bytes` per copy instruction. With
    `row_tiles` (C), src is packed codes stored in tiles of 16 rows, C bytes of each row at a time
    (ir.packing.code_tiles)."""

    name = "tile.copy"
    src = operand_def(TensorType)
    fixed = operand_def(_INDEX)
    k_tile = operand_def(_INDEX)
    buffer = operand_def(SharedType)
    stage = operand_def(_INDEX)
    k_dim = prop_def(IntegerAttr)
    k_step = prop_def(DenseArrayBase)
    bytes = prop_def(IntegerAttr)
    row_tiles = opt_prop_def(IntegerAttr)
    assembly_format = "$src `[` $fixed `,` $k_tile `]` `->` $buffer `[` $stage `]` attr-dict `:` type($src) `,` type($buffer)"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def get(src, fixed, k_tile, buffer, stage, k_dim: int, k_step: tuple[int, int], nbytes: int, row_tiles: int = 0) -> "CopyOp":
        props = {"k_dim": IntegerAttr(k_dim, i64), "k_step": DenseArrayBase.from_list(i64, list(k_step)), "bytes": IntegerAttr(nbytes, i64)}
        if row_tiles:
            props["row_tiles"] = IntegerAttr(row_tiles, i64)
        return CopyOp.build(operands=[src, fixed, k_tile, buffer, stage], properties=props)

    @property
    def elems(self) -> int:
        """16-bit units per copy (GemmConfig's copy_elems)."""
        return self.bytes.value.data // 2

    def verify_(self):
        if self.k_dim.value.data not in (0, 1) or len(self.k_step.get_values()) != 2 or self.bytes.value.data not in COPY_BYTES:
            raise VerifyException(f"tile.copy: k_dim is 0 or 1, k_step [num, den], bytes one of {COPY_BYTES}")
        if self.src.type.element_type != self.buffer.type.element:
            raise VerifyException(f"tile.copy keeps the element type: {self.src.type.element_type} into {self.buffer.type.element}")
        chunk = self.row_tiles.value.data if self.row_tiles is not None else 16
        if self.row_tiles is not None and (self.k_dim.value.data != 1 or self.bytes.value.data != 16 or chunk < 16 or chunk & (chunk - 1)):
            raise VerifyException("tile.copy from 16-row tiles copies along the rows (k_dim 1), 16 bytes at a time, from chunks of "
                                  "a power of two bytes, 16 or more")

    def run(self, ids: BlockIds, src, fixed, k_tile, buffer, stage):
        num, den = self.k_step.get_values()
        k0 = k_tile * num // den if den else 0
        _, rows, cols = buffer.shape
        r0, c0 = (fixed, k0) if self.k_dim.value.data == 1 else (k0, fixed)
        if self.row_tiles is not None:  # the window's rows, back in row order
            from ir.packing import code_rows

            src, r0 = code_rows(src.view(np.uint32), self.row_tiles.value.data, range(r0, r0 + rows)).view(src.dtype), 0
        buffer[stage] = _window(src, r0, c0, rows, cols)
        return ()


@irdl_op_definition
class FragmentOp(IRDLOperation):
    """The tile of buffer[stage] in registers, laid out as the result type says."""

    name = "tile.fragment"
    buffer = operand_def(SharedType)
    stage = operand_def(_INDEX)
    result = result_def(FragType)
    assembly_format = "$buffer `[` $stage `]` attr-dict `:` type($buffer) `->` type($result)"

    def verify_(self):
        b, f = self.buffer.type, self.result.type
        if b.get_shape()[1:] != f.get_shape() or b.element != f.element:
            raise VerifyException(f"a fragment of {b} is {b.get_shape()[1]}x{b.get_shape()[2]}x{b.element}, got {f}")

    def run(self, ids: BlockIds, buffer, stage):
        return buffer[stage].copy()


@irdl_op_definition
class DecodeOp(IRDLOperation):
    """B [BN, BK] in the activation type from a k-tile of `element` codes. With the scale rows
    (and zero terms) of its `group`s (0: one per output channel; ui8 scales are e8m0 codes):
    w = q * s + z, rounded once, as lowering.ladder's register decoders compute it; without
    them, the codes' values q (which tile.mma then scales per group). `shared_table`: the kernel
    looks each byte of codes up as a pair in shared memory (GemmConfig.shared_table), same values."""

    name = "tile.decode"
    codes = operand_def(FragType)
    scales = opt_operand_def(FragType)
    zeros = opt_operand_def(FragType)
    result = result_def(FragType)
    element = prop_def(StringAttr)
    group = opt_prop_def(IntegerAttr)
    shared_table = opt_prop_def(UnitAttr)
    assembly_format = ("$codes (`scales` $scales^)? (`zeros` $zeros^)? attr-dict `:` type($codes) (`scales` type($scales)^)? "
                       "(`zeros` type($zeros)^)? `->` type($result)")
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())

    def verify_(self):
        layouts = [self.codes.type.layout.data, self.result.type.layout.data]
        extra = [v.type.layout.data for v in (self.scales, self.zeros) if v is not None]
        if layouts != ["packed", "b"] or any(x != "group" for x in extra):
            raise VerifyException("tile.decode takes packed codes (and group scales and zeros) to a b fragment")
        if self.zeros is not None and self.scales is None:
            raise VerifyException("tile.decode's zero terms come with scales")
        if (self.scales is None) != (self.group is None):
            raise VerifyException("tile.decode's scales come with their group size, and only with them")

    def run(self, ids: BlockIds, codes, scales=None, zeros=None):
        from ir.packing import apply_scales, decode_values

        bk, dtype = self.result.type.get_shape()[1], str(self.result.type.element)
        q = decode_values(codes.view(np.uint32), self.element.data, dtype, bk)  # a k-tile's rows, as shared memory holds them
        if scales is None:
            return q.astype(np.float32)
        group = self.group.value.data
        return apply_scales(q, scale_bits(scales, dtype), scale_bits(zeros, dtype) if zeros is not None else None, group if 0 < group < bk else 0,
                            _is_e8m0(self.scales), dtype)


@irdl_op_definition
class ScatterOp(IRDLOperation):
    """B [BN, BK] in the activation type from a sparse tile's slots [BN, slots / BN] (ir.sparse.kernel_tiles: each a
    value's bits and its position row * BK + column): zeros, and each slot's value at its position. The kernel scatters them into a
    zeroed tile in shared memory and reads that as the mma's B (Flash-LLM's load-as-sparse, compute-as-dense)."""

    name = "tile.scatter"
    slots = operand_def(FragType)
    result = result_def(FragType)
    assembly_format = "$slots attr-dict `:` type($slots) `->` type($result)"

    def verify_(self):
        (rows, _), (bn, bk) = self.slots.type.get_shape(), self.result.type.get_shape()
        if [self.slots.type.layout.data, self.result.type.layout.data] != ["sparse", "b"] or rows != bn or bn * bk > 1 << 16:
            raise VerifyException("tile.scatter takes a sparse tile's slots [BN, slots / BN] to a b fragment [BN, BK] of at most "
                                  "2^16 positions")

    def run(self, ids: BlockIds, slots):
        from ir.sparse import kernel_dense

        bn, bk = self.result.type.get_shape()
        return kernel_dense(slots, bn, bk, bn, bk, str(self.result.type.element)).astype(np.float32)  # (one tile of the layout)


def _is_e8m0(scales: SSAValue | None) -> bool:
    """Whether a scale operand holds e8m0 codes (ui8) rather than the activation type's values."""
    return scales is not None and isinstance(scales.type.element, IntegerType)


@irdl_op_definition
class MmaOp(IRDLOperation):
    """acc + a @ b^T (a [BM, BK]; b [BN, BK], or [BK, BN] with layout bt: acc + a @ b) on tensor
    cores, accumulating in f32 (s32 for s8 operands). With `scales` (rows of `group` K elements,
    0: one row for the k-tile; ui8: e8m0 codes): each group's f32 partial sum a_g @ b_g^T is
    multiplied by its row of scales, column by column, as it is added to acc."""

    name = "tile.mma"
    T: ClassVar = VarConstraint("T", base(FragType))
    a = operand_def(FragType)
    b = operand_def(FragType)
    acc = operand_def(T)
    scales = opt_operand_def(FragType)
    result = result_def(T)
    group = opt_prop_def(IntegerAttr)
    assembly_format = "$a `,` $b `,` $acc (`scales` $scales^)? attr-dict `:` type($a) `,` type($b) (`scales` type($scales)^)? `->` type($result)"
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self):
        a, b, acc = self.a.type, self.b.type, self.acc.type
        if a.layout.data != "a" or b.layout.data not in ("b", "bt") or acc.layout.data != "acc" or self.result.type != acc:
            raise VerifyException("tile.mma takes a, b (or bt) and acc fragments and gives acc's type")
        (m, k), (n, kb) = a.get_shape(), b.get_shape()[::-1] if b.layout.data == "bt" else b.get_shape()
        if k != kb or acc.get_shape() != (m, n):
            raise VerifyException(f"tile.mma shapes: {a}, {b} -> {acc}")
        if (self.scales is None) != (self.group is None):
            raise VerifyException("tile.mma's scales come with their group size, and only with them")
        if self.scales is not None:
            s, group = self.scales.type, self.group.value.data
            rows = k // group if 0 < group < k else 1
            if s.layout.data != "group_acc" or s.get_shape() != (rows, n) or group % 16 or str(acc.element) != "f32":
                raise VerifyException(f"tile.mma scales f32 partial sums by group_acc rows [{rows}, {n}] of a group that is a multiple of 16, "
                                      f"got {s} for group {group}")

    def run(self, ids: BlockIds, a, b, acc, scales=None):
        b = b.T if self.b.type.layout.data == "bt" else b
        if acc.dtype == np.int32:
            return (a.astype(np.int64) @ b.T.astype(np.int64) + acc).astype(np.int32)
        if scales is None:
            return acc + a.astype(np.float32) @ b.T.astype(np.float32)
        from ir.packing import group_scales

        k, group, dtype = a.shape[1], self.group.value.data, str(self.a.type.element)
        s = group_scales(scale_bits(scales, dtype), _is_e8m0(self.scales), dtype, rounded=False)
        return add_scaled_partials(acc, a, b, s, group if 0 < group < k else k)


@irdl_op_definition
class EpilogueOp(IRDLOperation):
    """The accumulator tile at (row, col) of the output as f32, times row_scales[row] and
    col_scales[col] (8-bit operands), plus bias[col], through `activation` (none, relu, silu), then
    with `residual` (add or mul) combined with the residual tensor's tile at (row, col); scales, bias
    and residual past the output's edge read as zero."""

    name = "tile.epilogue"
    acc = operand_def(FragType)
    row = operand_def(_INDEX)
    col = operand_def(_INDEX)
    row_scales = opt_operand_def(TensorType)
    col_scales = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    residual_tensor = opt_operand_def(TensorType)
    result = result_def(FragType)
    activation = opt_prop_def(StringAttr)
    residual = opt_prop_def(StringAttr)
    assembly_format = ("$acc `at` $row `,` $col (`row_scales` $row_scales^)? (`col_scales` $col_scales^)? (`bias` $bias^)? "
                       "(`residual_tensor` $residual_tensor^)? attr-dict `:` type($acc) (`row_scales` type($row_scales)^)? "
                       "(`col_scales` type($col_scales)^)? (`bias` type($bias)^)? (`residual_tensor` type($residual_tensor)^)? `->` type($result)")
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())

    def verify_(self):
        if (self.row_scales is None) != (self.col_scales is None):
            raise VerifyException("tile.epilogue scales by rows and columns together")
        if isinstance(self.acc.type.element, IntegerType) and self.row_scales is None:
            raise VerifyException("an s32 accumulator is scaled to f32 by row_scales and col_scales")
        if self.activation is not None and self.activation.data not in ACTIVATIONS:
            raise VerifyException(f"activation must be one of {', '.join(ACTIVATIONS)}")
        if (self.residual is None) != (self.residual_tensor is None) or (self.residual is not None and self.residual.data not in RESIDUALS):
            raise VerifyException(f"tile.epilogue's residual ({' or '.join(RESIDUALS)}) comes with its residual_tensor")

    def run(self, ids: BlockIds, acc, row, col, *vectors):
        rows, cols = acc.shape
        along = lambda v, at, n: _window(np.asarray(v, np.float32)[None], 0, at, 1, n)[0]  # noqa: E731
        vectors = list(vectors)
        y = acc.astype(np.float32)
        if self.row_scales is not None:
            y = y * along(vectors.pop(0), row, rows)[:, None] * along(vectors.pop(0), col, cols)[None]
        if self.bias is not None:
            y = y + along(vectors.pop(0), col, cols)[None]
        y = ACTIVATIONS[self.activation.data if self.activation else "none"](y)
        if self.residual is not None:
            y = combine_residual(self.residual.data, y, _window(np.asarray(vectors.pop(0), np.float32), row, col, rows, cols),
                                 self.residual_tensor.type.element_type)
        return y


@irdl_op_definition
class StoreOp(IRDLOperation):
    """out[row:, col:] = value, inside out's bounds, rounded to out's type; a 3-D out (f32 partial
    sums) takes slice z, the block's K split."""

    name = "tile.store"
    value = operand_def(FragType)
    out = operand_def(TensorType)
    row = operand_def(_INDEX)
    col = operand_def(_INDEX)
    assembly_format = "$value `,` $out `[` $row `,` $col `]` attr-dict `:` type($value) `,` type($out)"

    def run(self, ids: BlockIds, value, out, row, col):
        target = out[ids.z] if out.ndim == 3 else out
        part = target[row:row + value.shape[0], col:col + value.shape[1]]
        part[...] = value[:part.shape[0], :part.shape[1]]
        return ()


@irdl_op_definition
class SumSplitsOp(IRDLOperation):
    """y = act(sum over z of partial[z, :, :N] + bias), then with `residual` (add or mul) combined with
    residual_tensor: the reduction after a split-K launch."""

    name = "tile.sum_splits"
    partial = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    residual_tensor = opt_operand_def(TensorType)
    result = result_def(TensorType)
    activation = opt_prop_def(StringAttr)
    residual = opt_prop_def(StringAttr)
    assembly_format = ("$partial (`bias` $bias^)? (`residual_tensor` $residual_tensor^)? attr-dict `:` type($partial) (`bias` type($bias)^)? "
                       "(`residual_tensor` type($residual_tensor)^)? `->` type($result)")
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())

    @property
    def split_k(self) -> int:
        return self.partial.type.get_shape()[0]

    def verify_(self):
        (_, m, npad), (m2, n) = self.partial.type.get_shape(), self.result.type.get_shape()
        if str(self.partial.type.element_type) != "f32" or m != m2 or npad != n + (n & 1):
            raise VerifyException(f"tile.sum_splits takes f32 partial sums [splits, M, N rounded up to even], got {self.partial.type}")
        if (self.residual is None) != (self.residual_tensor is None) or (self.residual is not None and self.residual_tensor.type != self.result.type):
            raise VerifyException("tile.sum_splits's residual comes with a residual_tensor of the result's type")
        if self.residual is not None and n % 2:
            raise VerifyException(f"tile.sum_splits reads its residual's pairs as 32-bit words: N must be even, got {n}")

    def execute(self, partial, *rest):
        rest = list(rest)
        bias = rest.pop(0) if self.bias is not None else None
        n = self.result.type.get_shape()[1]
        y = np.zeros(partial.shape[1:2] + (n,), np.float32)
        for z in range(partial.shape[0]):
            y += partial[z, :, :n]
        if bias is not None:
            y += bias.astype(np.float32)
        y = ACTIVATIONS[self.activation.data if self.activation else "none"](y)
        return y if self.residual is None else combine_residual(self.residual.data, y, rest.pop(0), self.result.type.element_type)
