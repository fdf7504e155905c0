"""graph.sdpa -> attention program -> FlashAttention kernel: each level run on the CPU (interpreter, block
program, lane simulator) against the graph op, on drawn shapes; ptxas assembles the kernels without spills."""

import re
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.ptx_text import module_text
from ir.errors import RungError
from ir.interpreter import run
from levels import STAGES, assert_each_level_computes, dtype_tolerance
from machine_code import assert_assembles_without_spills
from rung.cli import random_inputs
from rung.context import make_context, parse_ir, print_ir
from rung.passes import run_pipeline



def sdpa(heads: int, kv_heads: int, rows: int, keys: int, dim: int, dtype: str, causal: bool, scale: float | None = None) -> str:
    q, kv = f"tensor<1x{heads}x{rows}x{dim}x{dtype}>", f"tensor<1x{kv_heads}x{keys}x{dim}x{dtype}>"
    attrs = ", ".join((["causal"] if causal else []) + ([f"scale = {scale} : f64"] if scale else []))
    return (f"func.func @main(%q: {q}, %k: {kv}, %v: {kv}) -> {q} {{\n"
            f"  %y = graph.sdpa %q, %k, %v {{{attrs}}} : ({q}, {kv}, {kv}) -> {q}\n"
            f"  func.return %y : {q}\n}}\n")


@settings(max_examples=max(6, settings().max_examples // 4), deadline=None)
@given(st.sampled_from([(1, 1), (2, 2), (4, 2), (6, 3), (4, 1)]), st.integers(1, 80), st.integers(1, 80),
       st.sampled_from([16, 32, 48, 64, 96, 128]), st.sampled_from(["f16", "bf16"]), st.booleans(), st.sampled_from([None, 0.3]),
       st.integers(0, 2**31))
def test_each_level_computes_the_same_attention(heads, rows, keys, dim, dtype, causal, scale, seed):
    """Odd sequence lengths, fewer keys than rows and the reverse, grouped-query heads, every head dim."""
    heads, kv_heads = heads
    module = parse_ir(sdpa(heads, kv_heads, rows, keys, dim, dtype, causal, scale))
    args = random_inputs([a.type for a in module.ops.first.body.block.args], seed, 4)
    want = run(module, args)[0].astype(np.float32)
    assert_each_level_computes(module, args, want, dtype_tolerance(dtype, want, bf16=3e-2))


@settings(max_examples=max(6, settings().max_examples // 4), deadline=None)
@given(st.integers(1, 3), st.sampled_from([(2, 2), (4, 1), (3, 3)]), st.integers(1, 70), st.sampled_from([16, 64, 128]),
       st.sampled_from(["f16", "bf16"]), st.booleans(), st.integers(0, 2**31))
def test_the_heads_transpose_after_attention_is_written_by_its_stores(batch, heads, rows, dim, dtype, causal, seed):
    """transformers' [B, H, S, D] -> [B, S, H, D] before the output projection: no copy kernel, the attention
    kernel stores each head's rows H D elements apart."""
    heads, kv_heads = heads
    q, kv = (f"tensor<{batch}x{h}x{rows}x{dim}x{dtype}>" for h in (heads, kv_heads))
    out = f"tensor<{batch}x{rows}x{heads}x{dim}x{dtype}>"
    module = parse_ir(f"func.func @main(%q: {q}, %k: {kv}, %v: {kv}) -> {out} {{\n"
                      f"  %y = graph.sdpa %q, %k, %v {{{'causal' if causal else ''}}} : ({q}, {kv}, {kv}) -> {q}\n"
                      f"  %t = graph.permute %y {{dims = array<i64: 0, 2, 1, 3>}} : ({q}) -> {out}\n  func.return %t : {out}\n}}\n")
    args = random_inputs([a.type for a in module.ops.first.body.block.args], seed, 4)
    want = run(module, args)[0].astype(np.float32)
    assert_each_level_computes(module, args, want, dtype_tolerance(dtype, want, bf16=3e-2))
    launches = [op for op in module.ops.first.body.block.ops if op.name == "ptx.launch"]
    folded = any(re.search(r"_o\d+$", op.kernel.root_reference.data) for op in launches)
    assert folded == (len(launches) == 1) and (folded or rows * heads < 64 * 132)  # folded unless the keys were split


@pytest.mark.parametrize("heads, kv_heads, rows, keys, dim, dtype, causal", [
    (8, 2, 3, 700, 128, "bf16", False),  # decoding: the 4 query heads of a kv head as its rows, keys split 5 ways
    (1, 1, 300, 300, 64, "f16", True),  # few blocks: causal blocks split their unequal key ranges
])
def test_split_keys_merge_to_the_same_attention(heads, kv_heads, rows, keys, dim, dtype, causal):
    module = parse_ir(sdpa(heads, kv_heads, rows, keys, dim, dtype, causal))
    args = random_inputs([a.type for a in module.ops.first.body.block.args], 3, 4)
    want = run(module, args)[0].astype(np.float32)
    run_pipeline(module, "graph-to-tile", make_context())
    assert "tile.merge_splits" in print_ir(module)
    assert_each_level_computes(module, args, want, dtype_tolerance(dtype, want, bf16=3e-2), STAGES[1:])


def test_the_attention_program_prints_parses_and_names_what_it_bakes_in():
    module = parse_ir(sdpa(8, 2, 40, 40, 64, "f16", True))
    run_pipeline(module, "graph-to-tile", make_context())
    text = print_ir(module)
    assert "#tile.attention<head_dim = 64, block_m = 64, block_n = 64, splits = 1>" in text
    assert "@rung_attention_f16_d64_m64_n64_causal_g4" in text and "tile.attention %" in text
    assert print_ir(parse_ir(text)) == text


@pytest.mark.parametrize("old, new, message", [
    ("head_dim = 64", "head_dim = 72", "bad attention schedule: head_dim must be a multiple of 16 from 16 to 128"),
    ("block_m = 64", "block_m = 48", "block_m must be 16, 32, 64 or 128"),
])
def test_a_bad_attention_schedule_is_located(old, new, message):
    module = parse_ir(sdpa(2, 2, 40, 40, 64, "f16", False))
    run_pipeline(module, "graph-to-tile", make_context())
    with pytest.raises(RungError, match=message) as e:
        parse_ir(print_ir(module).replace(old, new), "attn.mlir")
    assert "attn.mlir:" in str(e.value)


def sdpa_at_positions(heads: int, kv_heads: int, rows: int, keys: int, dim: int, dtype: str, index: str = "i64") -> str:
    """A step over a KV cache: the query rows attend to the keys up to their positions (graph.sdpa `positions`)."""
    q, kv, p = f"tensor<1x{heads}x{rows}x{dim}x{dtype}>", f"tensor<1x{kv_heads}x{keys}x{dim}x{dtype}>", f"tensor<{rows}x{index}>"
    return (f"func.func @main(%q: {q}, %k: {kv}, %v: {kv}, %p: {p}) -> {q} {{\n"
            f"  %y = graph.sdpa %q, %k, %v, %p {{positions}} : ({q}, {kv}, {kv}, {p}) -> {q}\n"
            f"  func.return %y : {q}\n}}\n")


@settings(max_examples=max(6, settings().max_examples // 4), deadline=None)
@given(st.sampled_from([(1, 1), (4, 2), (8, 2), (3, 3)]), st.integers(1, 20), st.integers(1, 300), st.sampled_from([16, 64, 128]),
       st.sampled_from(["f16", "bf16"]), st.sampled_from(["i64", "i32"]), st.data())
def test_each_level_attends_up_to_the_positions(heads, rows, keys, dim, dtype, index, data):
    """Prefill and decode steps over a cache of `keys` positions: any positions (out of order too), grouped-query heads
    packed as rows, the keys split where the blocks are few; a row whose keys in a split all lie past its position."""
    heads, kv_heads = heads
    module = parse_ir(sdpa_at_positions(heads, kv_heads, rows, keys, dim, dtype, index))
    args = random_inputs([a.type for a in module.ops.first.body.block.args][:3], data.draw(st.integers(0, 2**31)), 4)
    args.append(np.array(data.draw(st.lists(st.integers(0, keys - 1), min_size=rows, max_size=rows)), index.replace("i", "int")))
    want = run(module, args)[0].astype(np.float32)
    assert_each_level_computes(module, args, want, dtype_tolerance(dtype, want, bf16=3e-2))


def test_a_kv_cache_step_keeps_its_keys_past_the_positions_unread():
    """Decoding at position 700 of 4096: the kernel bounds the key tiles by the position (tiles past its own, keys from
    768 on, are never read: NaN there does not reach the result)."""
    module = parse_ir(sdpa_at_positions(8, 2, 1, 4096, 64, "f16"))
    args = random_inputs([a.type for a in module.ops.first.body.block.args][:3], 5, 4) + [np.array([700])]
    want = run(module, args)[0].astype(np.float32)
    run_pipeline(module, ",".join(STAGES[:2]), make_context())  # (the tile level's reference reads every key)
    for kv in args[1:3]:
        kv[:, :, 768:] = np.nan
    assert_each_level_computes(module, args, want, dtype_tolerance("f16", want), STAGES[2:])


@pytest.mark.parametrize("dim, keys, message", [
    (80 + 1, 40, "head dims .* multiple of 16 up to 128, not 81"),
    (256, 40, "multiple of 16 up to 128, not 256"),
])
def test_lower_to_ptx_says_which_attention_has_no_kernel(dim, keys, message):
    module = parse_ir(sdpa(2, 2, 40, keys, dim, "f16", False))
    with pytest.raises(RungError, match=f"'graph.sdpa' \\(%y\\) in @main has no GPU kernel yet: .*{message}"):
        run_pipeline(module, "lower-to-ptx", make_context())


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("dim", [64, 96, 128])
@pytest.mark.parametrize("heads, kv_heads, rows, causal", [(32, 8, 1, False), (32, 8, 512, True), (4, 4, 256, True)])  # decoding, prefill, split
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_attention_kernels_assemble_without_spills(dim, heads, kv_heads, rows, causal, dtype, target, tmp_path):
    text = sdpa(heads, kv_heads, rows, 1024, dim, dtype, causal)
    if rows == 512:  # and the heads' transpose after it, folded into the stores
        q, out = f"tensor<1x{heads}x{rows}x{dim}x{dtype}>", f"tensor<1x{rows}x{heads}x{dim}x{dtype}>"
        text = text.replace(f") -> {q} {{", f") -> {out} {{").replace(f"  func.return %y : {q}", f"  %t = graph.permute %y {{dims = array<i64: 0, 2, 1, 3>}} : ({q}) -> {out}\n  func.return %t : {out}")
    module = parse_ir(text)
    run_pipeline(module, "lower-to-ptx", make_context())
    assert (rows == 512) == ("_o32" in print_ir(module))
    assert_assembles_without_spills(module_text(module, target), target, tmp_path)


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("rows", [1, 512])  # a decode step (keys split) and a prefill over the cache
@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_attention_at_positions_assembles_without_spills(dim, rows, target, tmp_path):
    module = parse_ir(sdpa_at_positions(32, 8, rows, 4096, dim, "bf16"))
    run_pipeline(module, "lower-to-ptx", make_context())
    assert "_pos64" in print_ir(module)
    assert_assembles_without_spills(module_text(module, target), target, tmp_path)
