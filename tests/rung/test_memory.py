"""The memory plan of compiled programs: buffers that live at once never share bytes, and those that
do not, do."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import rung
from rung.memory import ALIGN


def _chain(ops: list[str], rows: int, cols: int) -> str:
    """x -> op0 -> op1 -> ..., each a softmax or an elementwise op that ends a chain (its value used twice)."""
    ty = f"tensor<{rows}x{cols}xf16>"
    lines, value = [], "%x"
    for i, op in enumerate(ops):
        if op == "softmax":
            lines.append(f"  %v{i} = graph.softmax {value} {{dim = -1 : i64}} : ({ty}) -> {ty}")
        else:  # a square: its operand is used twice, so each is a kernel of its own
            lines.append(f"  %v{i} = graph.mul {value}, {value} : ({ty}, {ty}) -> {ty}")
        value = f"%v{i}"
    return f"func.func @main(%x: {ty}) -> {ty} {{\n" + "\n".join(lines) + f"\n  func.return {value} : {ty}\n}}\n"


@settings(max_examples=max(10, settings().max_examples // 2), deadline=None)
@given(st.lists(st.sampled_from(["softmax", "square"]), min_size=1, max_size=6), st.integers(1, 9), st.integers(1, 100))
def test_buffers_alive_together_never_share_bytes_and_the_program_still_computes(ops, rows, cols):
    text = _chain(ops, rows, cols)
    fn = rung.compile(text, target="sm_80")
    placed = list(fn.memory.placements.values())
    for a in placed:
        assert a.offset % ALIGN == 0 and a.offset + a.nbytes <= fn.memory.arena_bytes
        for b in placed:
            if a is not b and a.overlaps_in_time(b):
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset
    x = np.random.default_rng(rows * cols).uniform(-1, 1, (rows, cols)).astype(np.float16)
    want = np.asarray(rung.run(rung.parse_ir(text), [x])[0], np.float32)
    np.testing.assert_allclose(np.asarray(fn(x), np.float32), want, rtol=5e-3, atol=5e-3)


def test_a_chain_of_kernels_takes_two_buffers_however_long():
    fn = rung.compile(_chain(["softmax"] * 6, 64, 512), target="sm_80")
    one = 64 * 512 * 2
    assert len(fn.memory.placements) == 5 and fn.memory.unshared_bytes == 5 * one  # the sixth is the result
    assert fn.memory.arena_bytes == 2 * one
    assert fn.memory.summary() == "5 intermediate tensors in an arena of 0.12 MiB (0.31 MiB with a buffer each)"


def test_a_cache_written_in_place_takes_no_arena_bytes_and_its_readers_see_the_update():
    """A decode step's shape: the cache updated in place (its donated argument's buffer), then read by an add."""
    x, s, p = "tensor<2x8x16xf16>", "tensor<2x1x16xf16>", "tensor<1xi64>"
    fn = rung.compile(f"func.func @main(%x: {x}, %p: {p}, %s: {s}) -> {x} {{\n"
                      f"  %y = graph.index_copy %x, %p, %s {{dim = 1 : i64}} : ({x}, {p}, {s}) -> {x}\n"
                      f"  %z = graph.add %y, %y : ({x}, {x}) -> {x}\n  func.return %z : {x}\n}}\n")
    assert fn.memory.arena_bytes == 0 and not fn.memory.placements  # the add's result is returned, the cache is the argument's
    rng = np.random.default_rng(0)
    cache, new = rng.standard_normal((2, 8, 16)).astype(np.float16), rng.standard_normal((2, 1, 16)).astype(np.float16)
    want = cache.copy()
    want[:, 5:6] = new
    assert np.array_equal(fn(cache, np.array([5]), new), 2 * want)
