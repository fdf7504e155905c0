"""rung.compile: one lowered program, run on the CPU lane simulator (numpy arguments) or a GPU (CUDA tensors)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rung
from ir.errors import RungError
from torch_checks import assert_close

LINEAR = """func.func @main(%x: tensor<{m}x{k}x{t}>, %w: tensor<{n}x{k}x{t}>, %b: tensor<{n}x{t}>) -> tensor<{m}x{n}x{t}> {{
  %y = graph.linear %x, %w, %b : (tensor<{m}x{k}x{t}>, tensor<{n}x{k}x{t}>, tensor<{n}x{t}>) -> tensor<{m}x{n}x{t}>
  %z = graph.silu %y : (tensor<{m}x{n}x{t}>) -> tensor<{m}x{n}x{t}>
  func.return %z : tensor<{m}x{n}x{t}>
}}
"""
NORM = """func.func @main(%x: tensor<{shape}x{t}>, %w: tensor<{n}x{t}>) -> tensor<{shape}x{t}> {{
  %y = graph.rms_norm %x, %w {{eps = {eps} : f64}} : (tensor<{shape}x{t}>, tensor<{n}x{t}>) -> tensor<{shape}x{t}>
  func.return %y : tensor<{shape}x{t}>
}}
"""
SOFTMAX = """func.func @main(%x: tensor<{shape}x{t}>) -> tensor<{shape}x{t}> {{
  %y = graph.softmax %x {{dim = -1 : i64}} : (tensor<{shape}x{t}>) -> tensor<{shape}x{t}>
  func.return %y : tensor<{shape}x{t}>
}}
"""
LAYER_NORM = """func.func @main(%x: tensor<{shape}x{t}>, %w: tensor<{n}x{t}>, %b: tensor<{n}x{t}>) -> tensor<{shape}x{t}> {{
  %y = graph.layer_norm %x, %w, %b {{eps = 1.0e-05 : f64}} : (tensor<{shape}x{t}>, tensor<{n}x{t}>, tensor<{n}x{t}>) -> tensor<{shape}x{t}>
  func.return %y : tensor<{shape}x{t}>
}}
"""


SWIGLU = """func.func @main(%g: tensor<{shape}x{t}>, %u: tensor<{shape}x{t}>, %b: tensor<{n}x{t}>) -> tensor<{shape}x{t}> {{
  %s = graph.silu %g : (tensor<{shape}x{t}>) -> tensor<{shape}x{t}>
  %m = graph.mul %s, %u : (tensor<{shape}x{t}>, tensor<{shape}x{t}>) -> tensor<{shape}x{t}>
  %y = graph.add %m, %b : (tensor<{shape}x{t}>, tensor<{n}x{t}>) -> tensor<{shape}x{t}>
  func.return %y : tensor<{shape}x{t}>
}}
"""
EXAMPLES = __import__("pathlib").Path(__file__).parents[2] / "examples"


def _example(name: str, dtype: str):
    """(torch model, its example inputs, its @main module, @main's inputs, @main's argument names) of an example
    model file in `dtype`."""
    from frontend.loading import cast_model, load_model_file
    from frontend.torch2ir import inputs_for, torch_to_ir

    model, args, kwargs = cast_model(*load_model_file(EXAMPLES / f"{name}.py"), dtype)
    module, weights, names = torch_to_ir(model, args, kwargs)
    return model, args, module, inputs_for(names, weights, args, kwargs), names


def _inputs(module_text: str, seed: int) -> list[np.ndarray]:
    from rung.cli import random_inputs
    from ir.interpreter import find_function

    fn = find_function(rung.parse_ir(module_text), "main")
    return random_inputs([a.type for a in fn.body.block.args], seed, 8)


def test_compile_lowers_to_launches_and_refuses_the_rest():
    fn = rung.compile(LINEAR.format(m=4, n=8, k=64, t="f16"), target="sm_80")
    assert [op.name for op in fn.steps] == ["ptx.launch"]
    assert fn.path.startswith("rung_gemm_f16") and "built for sm_80" in fn.path
    assert ".target sm_80" in fn.ptx and ".entry rung_gemm_f16" in fn.ptx
    with pytest.raises(RungError, match="rung.compile: 'graph.linear' \\(%y\\) in @main has no GPU kernel yet: its operands are f32: Rung's kernels take f16 or bf16"):
        rung.compile(LINEAR.format(m=4, n=8, k=64, t="f32"), target="sm_80")
    with pytest.raises(RungError, match="'graph.sin' \\(%y\\) in @main has no GPU kernel yet: no kernel yet for this op on f16 \\(so far: "):
        rung.compile("func.func @main(%x: tensor<4xf16>) -> tensor<4xf16> {\n"
                     "  %y = graph.sin %x : (tensor<4xf16>) -> tensor<4xf16>\n  func.return %y : tensor<4xf16>\n}\n", target="sm_80")
    with pytest.raises(RungError, match="rung.compile takes IR text or a module, got int"):
        rung.compile(123)
    with pytest.raises(RungError, match="unknown target sm_70"):
        rung.compile(LINEAR.format(m=4, n=8, k=64, t="f16"), target="sm_70")


@pytest.mark.parametrize("text, dtype", [
    (LINEAR.format(m=5, n=40, k=64, t="f16"), "f16"),
    (LINEAR.format(m=3, n=24, k=40, t="bf16"), "bf16"),
    (NORM.format(shape="3x5x100", n=100, t="f16", eps="1.0e-05"), "f16"),
    (NORM.format(shape="2x300", n=300, t="bf16", eps="1.0e-06"), "bf16"),
    (SWIGLU.format(shape="3x2x70", n=70, t="bf16"), "bf16"),
])
def test_the_simulator_runs_the_compiled_program_as_the_interpreter_does(text, dtype):
    """The same lowered program the GPU runs, every launch simulated lane by lane, against the
    graph-level interpreter on the same inputs."""
    fn = rung.compile(text, target="sm_80")
    args = _inputs(text, seed=1)
    assert_close(fn(*args), rung.run(rung.parse_ir(text), args)[0], dtype)


def test_the_mlp_example_compiles_whole_and_runs_on_the_simulator():
    """Every op of the model a kernel of Rung's (GEMMs with their bias and relu, gelu, softmax): no graph op left."""
    _, _, module, inputs, _ = _example("mlp", "f16")
    fn = rung.compile(module, target="sm_80")
    assert {op.name for op in fn.steps} <= {"ptx.launch", "graph.reshape"} and fn.path.count("rung_") == 5
    assert_close(fn(*inputs), rung.run(module, inputs)[0], "f16")


def test_a_compiled_qlinear_packs_its_weight_and_runs_on_the_simulator():
    m, n, k = 3, 32, 128
    text = (f"func.func @main(%x: tensor<{m}x{k}xf16>, %q: tensor<{n}x{k}xsi4>, %s: tensor<{n}x1xf16>) -> tensor<{m}x{n}xf16> {{\n"
            f"  %y = graph.qlinear %x, %q, %s {{format = #lp.quant<si4, group 128, scale f16>}} : "
            f"(tensor<{m}x{k}xf16>, tensor<{n}x{k}xsi4>, tensor<{n}x1xf16>) -> tensor<{m}x{n}xf16>\n"
            f"  func.return %y : tensor<{m}x{n}xf16>\n}}\n")
    fn = rung.compile(text, target="sm_80")
    assert [op.name for op in fn.steps] == ["tile.pack_weight", "ptx.launch"]
    args = _inputs(text, seed=2)
    args[2] = (np.abs(args[2]) * 0.05).astype(np.float16)
    assert_close(fn(*args), rung.run(rung.parse_ir(text), args)[0], "f16")


def test_a_first_gpu_call_packs_every_weight_once_and_shares_them_by_storage():
    """CompiledFunction._pack_missing on a device standing in for a GPU (CPU tensors): two qlinears on one weight and one
    on another pack two weights, as tile.pack_weight computes them; a second compiled program given the same cache finds
    them there."""
    import torch

    from backend.device import CudaDevice
    from dialects.tile import PackWeightOp
    from rung.compiler import _pack_key

    class HostAsGpu(CudaDevice):
        def __init__(self):
            self.ordinal = 0

        def get(self, tensor):
            return tensor.numpy()

        def put(self, array):
            return torch.from_numpy(np.ascontiguousarray(array))

    m, n, k = 3, 32, 128
    types = f"(tensor<{m}x{k}xf16>, tensor<{n}x{k}xsi4>, tensor<{n}x1xf16>) -> tensor<{m}x{n}xf16>"
    qlinear = '{{format = #lp.quant<si4, group 128, scale f16>}}'
    text = (f"func.func @main(%x: tensor<{m}x{k}xf16>, %q: tensor<{n}x{k}xsi4>, %s: tensor<{n}x1xf16>, %q2: tensor<{n}x{k}xsi4>, "
            f"%s2: tensor<{n}x1xf16>) -> tensor<{m}x{n}xf16> {{\n"
            f"  %a = graph.qlinear %x, %q, %s {qlinear.format()} : {types}\n  %b = graph.qlinear %x, %q, %s {qlinear.format()} : {types}\n"
            f"  %c = graph.qlinear %x, %q2, %s2 {qlinear.format()} : {types}\n"
            f"  %d = graph.add %a, %b : (tensor<{m}x{n}xf16>, tensor<{m}x{n}xf16>) -> tensor<{m}x{n}xf16>\n"
            f"  %e = graph.add %d, %c : (tensor<{m}x{n}xf16>, tensor<{m}x{n}xf16>) -> tensor<{m}x{n}xf16>\n"
            f"  func.return %e : tensor<{m}x{n}xf16>\n}}\n")
    fn = rung.compile(text, target="sm_80")
    args = [torch.from_numpy(a) for a in _inputs(text, seed=3)]
    env = dict(zip(fn.function.body.block.args, args))
    fn._pack_missing(HostAsGpu(), env)
    assert len(fn._packed) == 2
    packs = [op for op in fn.steps if isinstance(op, PackWeightOp)]
    for op in packs:
        weights = [env[v] for v in op.operands]
        key = _pack_key(op, HostAsGpu(), weights)
        want = op.execute(*(w.numpy().astype(np.float32) for w in weights))
        assert all(np.array_equal(got.numpy(), np.asarray(w)) for got, w in zip(fn._packed[key], want))
    again = rung.compile(text, target="sm_80", packed=fn._packed)
    before = dict(fn._packed)
    again._pack_missing(HostAsGpu(), dict(zip(again.function.body.block.args, args)))
    assert again._packed is fn._packed and fn._packed == before

    # weights that only tile.pack_weight reads may stay numpy arrays beside CUDA activations: packed from the host copy,
    # cached by the array's identity (an equal copy is another weight), never put on the device unpacked
    assert fn.host_weights == {1, 2, 3, 4}
    host = [a.numpy() for a in args]
    on_host = rung.compile(text, target="sm_80")
    env = dict(zip(on_host.function.body.block.args, [args[0], *host[1:]]))
    on_host._pack_missing(HostAsGpu(), env)
    assert len(on_host._packed) == 2
    for op in [op for op in on_host.steps if isinstance(op, PackWeightOp)]:
        weights = [env[v] for v in op.operands]
        want = op.execute(*(w.astype(np.float32) for w in weights))
        assert all(np.array_equal(got.numpy(), w) for got, w in zip(on_host._packed[_pack_key(op, HostAsGpu(), weights)], want))
    on_host._pack_missing(HostAsGpu(), dict(zip(on_host.function.body.block.args, [args[0], host[1].copy(), *host[2:]])))
    assert len(on_host._packed) == 3


@settings(max_examples=max(4, settings().max_examples // 5), deadline=None)
@given(st.integers(1, 3), st.integers(1, 600), st.sampled_from(["f16", "bf16"]), st.integers(0, 2**31))
def test_rms_norm_on_the_simulator_for_any_row_length(rows, n, dtype, seed):
    """Rows shorter than a warp, not a multiple of the block's threads, and longer than it."""
    text = NORM.format(shape=f"{rows}x{n}", n=n, t=dtype, eps="1.0e-05")
    fn = rung.compile(text, target="sm_80")
    args = _inputs(text, seed)
    assert_close(fn(*args), rung.run(rung.parse_ir(text), args)[0], dtype)


def test_arguments_must_be_all_numpy_or_all_cuda_and_of_the_declared_types():
    fn = rung.compile(NORM.format(shape="2x64", n=64, t="f16", eps="1.0e-05"), target="sm_80")
    x, w = np.zeros((2, 64), np.float16), np.ones(64, np.float16)
    with pytest.raises(RungError, match="argument 0: expected tensor<2x64xf16>, got \\[2, 32\\] float16"):
        fn(x[:, :32].copy(), w)
    with pytest.raises(RungError, match="argument 1: expected tensor<64xf16>, got \\[64\\] float32"):
        fn(x, w.astype(np.float32))
    with pytest.raises(RungError, match="@main takes 2 tensors, got 1"):
        fn(x)
    with pytest.raises(RungError, match="all arguments as numpy arrays .* or all as CUDA tensors .*, got list, ndarray"):
        fn(x, [1.0] * 64)


torch = pytest.importorskip("torch")
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("text, dtype", [
    (LINEAR.format(m=33, n=200, k=96, t="f16"), "f16"),
    (NORM.format(shape="4x7x4096", n=4096, t="f16", eps="1.0e-05"), "f16"),
    (NORM.format(shape="77x1000", n=1000, t="bf16", eps="1.0e-06"), "bf16"),
    (NORM.format(shape="3x8192", n=8192, t="bf16", eps="1.0e-05"), "bf16"),
    (SOFTMAX.format(shape="4x32x513", t="f16"), "f16"),
    (SOFTMAX.format(shape="2x4096", t="bf16"), "bf16"),
    (LAYER_NORM.format(shape="5x768", n=768, t="f16"), "f16"),
    (LAYER_NORM.format(shape="2x3x4096", n=4096, t="bf16"), "bf16"),
    (SWIGLU.format(shape="5x11008", n=11008, t="bf16"), "bf16"),
    (SWIGLU.format(shape="2x3x333", n=333, t="f16"), "f16"),
])
def test_the_gpu_and_the_simulator_run_one_program_alike(text, dtype):
    """Fresh random inputs; the GPU's result against the simulator's (the same kernels) and torch's."""
    fn = rung.compile(text)
    args = _inputs(text, seed=7)
    on_gpu = fn(*(torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).cuda() if a.dtype.name == "bfloat16"
                  else torch.from_numpy(a).cuda() for a in args))
    torch.cuda.synchronize()
    got = on_gpu.float().cpu().numpy()
    x, *params = (torch.from_numpy(np.asarray(a, np.float32)) for a in args)
    if "rms_norm" in text:
        ref = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + float(text.split("eps = ")[1].split(" ")[0])) * params[0]
    elif "layer_norm" in text:
        ref = torch.nn.functional.layer_norm(x, x.shape[-1:], *params, eps=1e-5)
    elif "softmax" in text:
        ref = torch.softmax(x, -1)
    elif "graph.silu %g" in text:
        ref = torch.nn.functional.silu(x) * params[0] + params[1]
    else:
        ref = torch.nn.functional.silu(x @ params[0].T + params[1])
    assert_close(got, ref.numpy(), dtype)
    assert_close(got, np.asarray(rung.run(rung.parse_ir(text), args)[0], np.float32), dtype)
    if args[0].size <= 4096:  # the simulator is slow: small programs only
        assert_close(got, np.asarray(fn(*args), np.float32), dtype)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "gpt2", "llama"])
def test_an_example_model_runs_whole_on_the_gpu_as_torch_does(name, dtype):
    from torch_checks import assert_model_runs_as_torch

    assert_model_runs_as_torch(EXAMPLES / f"{name}.py", dtype)


def _fresh_qkv(generator, dtype: str, heads: int, kv_heads: int, rows: int, keys: int, dim: int) -> tuple:
    """Random q [1, heads, rows, dim] and k, v [1, kv_heads, keys, dim] of `dtype` on the GPU."""
    torch_type = {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    return tuple(torch.randn(shape, generator=generator).to(torch_type).cuda()
                 for shape in ((1, heads, rows, dim), (1, kv_heads, keys, dim), (1, kv_heads, keys, dim)))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("heads, kv_heads, rows, keys, dim, causal", [
    (8, 2, 300, 300, 128, True), (4, 4, 77, 1000, 64, False), (32, 8, 1, 1500, 128, False), (6, 6, 130, 130, 96, True)])
def test_attention_runs_on_the_gpu_as_torch_sdpa_does(dtype, heads, kv_heads, rows, keys, dim, causal):
    """Fresh random q, k, v; the output buffer filled with NaN first, so a row the kernel misses shows."""
    from torch_checks import math_attention

    q_t, kv_t = f"tensor<1x{heads}x{rows}x{dim}x{dtype}>", f"tensor<1x{kv_heads}x{keys}x{dim}x{dtype}>"
    fn = rung.compile(f"func.func @main(%q: {q_t}, %k: {kv_t}, %v: {kv_t}) -> {q_t} {{\n"
                      f"  %y = graph.sdpa %q, %k, %v {{{'causal' if causal else ''}}} : ({q_t}, {kv_t}, {kv_t}) -> {q_t}\n"
                      f"  func.return %y : {q_t}\n}}\n")
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        q, k, v = _fresh_qkv(generator, dtype, heads, kv_heads, rows, keys, dim)
        torch.empty(1 << 26, device="cuda").fill_(float("nan"))  # poison what the allocator hands out next
        got = fn(q, k, v)
        with math_attention():
            want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal, enable_gqa=kv_heads < heads)
        assert_close(got.float().cpu().numpy(), want.cpu().numpy(), dtype)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("heads, kv_heads, rows, keys, dim", [(32, 8, 1, 4096, 128), (8, 2, 37, 1000, 64), (4, 4, 3, 300, 16)])
def test_attention_at_positions_runs_on_the_gpu_as_masked_torch_sdpa_does(dtype, heads, kv_heads, rows, keys, dim):
    """A step over a KV cache: fresh random positions (out of order too), the keys past the largest NaN, so a
    tile the kernel should skip shows."""
    from torch_checks import math_attention

    q_t, kv_t, p_t = f"tensor<1x{heads}x{rows}x{dim}x{dtype}>", f"tensor<1x{kv_heads}x{keys}x{dim}x{dtype}>", f"tensor<{rows}xi64>"
    fn = rung.compile(f"func.func @main(%q: {q_t}, %k: {kv_t}, %v: {kv_t}, %p: {p_t}) -> {q_t} {{\n"
                      f"  %y = graph.sdpa %q, %k, %v, %p {{positions}} : ({q_t}, {kv_t}, {kv_t}, {p_t}) -> {q_t}\n"
                      f"  func.return %y : {q_t}\n}}\n")
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        q, k, v = _fresh_qkv(generator, dtype, heads, kv_heads, rows, keys, dim)
        positions = torch.randint(0, keys // 2, (rows,), generator=generator).cuda()
        past = (int(positions.max()) // 64 + 1) * 64  # the first key of the tiles after the largest position's
        k_read, v_read = k.clone(), v.clone()
        k_read[:, :, past:], v_read[:, :, past:] = float("nan"), float("nan")
        torch.empty(1 << 26, device="cuda").fill_(float("nan"))  # poison what the allocator hands out next
        got = fn(q, k_read, v_read, positions)
        with math_attention():
            mask = torch.arange(keys, device="cuda")[None, :] <= positions[:, None]
            want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), mask, enable_gqa=kv_heads < heads)
        assert_close(got.float().cpu().numpy(), want.cpu().numpy(), dtype)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_a_donated_cache_is_updated_in_place_on_the_gpu(dtype):
    """graph.index_copy of an argument: the call writes into the caller's tensor itself (fresh data, out-of-order
    positions) and returns it."""
    x, s, p = f"tensor<2x4x64x128x{dtype}>", f"tensor<2x4x3x128x{dtype}>", "tensor<3xi64>"
    fn = rung.compile(f"func.func @main(%x: {x}, %p: {p}, %s: {s}) -> {x} {{\n"
                      f"  %y = graph.index_copy %x, %p, %s {{dim = 2 : i64}} : ({x}, {p}, {s}) -> {x}\n  func.return %y : {x}\n}}\n")
    torch_type = {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    cache, new = torch.randn(2, 4, 64, 128).to(torch_type).cuda(), torch.randn(2, 4, 3, 128).to(torch_type).cuda()
    positions = torch.tensor([40, 2, 17]).cuda()
    want = cache.clone().index_copy_(2, positions, new)
    got = fn(cache, positions, new)
    assert got.data_ptr() == cache.data_ptr() and torch.equal(cache, want)


@gpu
@pytest.mark.gpu
def test_a_quantized_weight_left_on_the_host_is_packed_from_there_and_computes_the_same():
    """A qlinear's codes and scales as numpy arrays beside a CUDA x: packed on the host, uploaded packed (the unpacked
    codes never on the GPU), the result that of the weight on the GPU, direct and replayed as a CUDA graph."""
    m, n, k = 5, 256, 512
    text = (f"func.func @main(%x: tensor<{m}x{k}xf16>, %q: tensor<{n}x{k}xsi4>, %s: tensor<{n}x4xf16>) -> tensor<{m}x{n}xf16> {{\n"
            f"  %y = graph.qlinear %x, %q, %s {{format = #lp.quant<si4, group 128, scale f16>}} : "
            f"(tensor<{m}x{k}xf16>, tensor<{n}x{k}xsi4>, tensor<{n}x4xf16>) -> tensor<{m}x{n}xf16>\n"
            f"  func.return %y : tensor<{m}x{n}xf16>\n}}\n")
    x, q, s = _inputs(text, seed=4)
    s = (np.abs(s) * 0.05).astype(np.float16)
    fn = rung.compile(text)
    want = fn(*(torch.from_numpy(a).cuda() for a in (x, q, s)))
    x_gpu = torch.from_numpy(x).cuda()
    got = fn(x_gpu, q, s)
    replay = fn.capture(x_gpu, q, s)
    replayed = replay(x_gpu, q, s).clone()
    torch.cuda.synchronize()
    assert torch.equal(got, want) and torch.equal(replayed, want)


@gpu
@pytest.mark.gpu
def test_a_captured_model_replays_on_new_inputs_as_a_call_computes():
    """The whole MLP as one CUDA graph: replays on fresh inputs equal direct calls, bit for bit; weights passed
    as recorded are not copied, a tensor of another shape is refused."""
    _, args, module, inputs, _ = _example("mlp", "f16")
    fn = rung.compile(module)
    weights = [torch.from_numpy(np.asarray(a)).cuda() for a in inputs[:-1]]
    x0 = torch.randn(args[0].shape, device="cuda").half()
    replay = fn.capture(*weights, x0)
    for seed in (3, 4):
        x = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(seed)).half().cuda()
        want = fn(*weights, x)
        got = replay(*weights, x)
        torch.cuda.synchronize()
        assert torch.equal(got, want)
    with pytest.raises(RungError, match="argument 6: the graph was captured on"):
        replay(*weights, torch.zeros(1, 2, device="cuda", dtype=torch.float16))
    with pytest.raises(RungError, match="capture records a CUDA graph"):
        fn.capture(*inputs)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_an_embedding_gathers_rows_on_the_gpu_as_torch_does(dtype):
    v, n = 32000, 4096
    text = (f"func.func @main(%w: tensor<{v}x{n}x{dtype}>, %i: tensor<3x77xi64>) -> tensor<3x77x{n}x{dtype}> {{\n"
            f"  %y = graph.embedding %w, %i : (tensor<{v}x{n}x{dtype}>, tensor<3x77xi64>) -> tensor<3x77x{n}x{dtype}>\n"
            f"  func.return %y : tensor<3x77x{n}x{dtype}>\n}}\n")
    fn = rung.compile(text)
    w = torch.randn(v, n, device="cuda", dtype={"f16": torch.float16, "bf16": torch.bfloat16}[dtype])
    i = torch.randint(0, v, (3, 77), device="cuda")
    assert torch.equal(fn(w, i), torch.nn.functional.embedding(i, w))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("n, c, h, w, o, k, stride, padding, dilation, groups", [
    (2, 3, 33, 31, 16, 3, 1, 1, 1, 1), (1, 16, 28, 28, 32, 3, 2, 1, 1, 2), (4, 8, 17, 9, 24, 5, 1, 2, 2, 4), (1, 64, 14, 14, 64, 1, 1, 0, 1, 1)])
def test_a_convolution_runs_on_the_gpu_as_torch_does(dtype, n, c, h, w, o, k, stride, padding, dilation, groups):
    """conv2d (bias, relu) and a 3x3 max pool after it, on fresh inputs, against torch's on the GPU."""
    torch_type = {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    generator = torch.Generator().manual_seed(n * c * h * w)
    x, weight, bias = (torch.randn(s, generator=generator).to(torch_type).cuda() for s in ((n, c, h, w), (o, c // groups, k, k), (o,)))
    conv = torch.nn.functional.conv2d(x.float(), weight.float(), bias.float(), stride, padding, dilation, groups)
    want = torch.nn.functional.max_pool2d(torch.relu(conv), 3, 2, 1)
    y, p = (f"tensor<{'x'.join(map(str, s))}x{dtype}>" for s in (conv.shape, want.shape))
    x_t, w_t, b_t = (f"tensor<{'x'.join(map(str, t.shape))}x{dtype}>" for t in (x, weight, bias))
    pair = lambda v: f"array<i64: {v}, {v}>"  # noqa: E731
    fn = rung.compile(f"func.func @main(%x: {x_t}, %w: {w_t}, %b: {b_t}) -> {p} {{\n"
                      f"  %y = graph.conv2d %x, %w, %b {{stride = {pair(stride)}, padding = {pair(padding)}, dilation = {pair(dilation)}, "
                      f"groups = {groups} : i64}} : ({x_t}, {w_t}, {b_t}) -> {y}\n"
                      f"  %r = graph.relu %y : ({y}) -> {y}\n"
                      f"  %p = graph.max_pool2d %r {{kernel = array<i64: 3, 3>, stride = array<i64: 2, 2>, padding = array<i64: 1, 1>}} : ({y}) -> {p}\n"
                      f"  func.return %p : {p}\n}}\n")
    torch.empty(1 << 26, device="cuda").fill_(float("nan"))  # poison what the allocator hands out next
    assert_close(fn(x, weight, bias).float().cpu().numpy(), want.cpu().numpy(), dtype)


QLINEAR8 = """func.func @main(%x: tensor<{m}x{k}xf16>, %w: tensor<{n}x{k}x{w8}>, %s: tensor<{n}xf32>) -> tensor<{m}x{n}xf16> {{
  %y = graph.qlinear8 %x, %w, %s : (tensor<{m}x{k}xf16>, tensor<{n}x{k}x{w8}>, tensor<{n}xf32>) -> tensor<{m}x{n}xf16>
  func.return %y : tensor<{m}x{n}xf16>
}}
"""


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["w8a8", "fp8"])
@pytest.mark.parametrize("m, n, k", [(1, 4096, 4096), (37, 200, 96), (300, 1024, 2048)])
def test_eight_bit_activations_on_the_gpu_as_the_interpreter_and_torch_compute(preset, m, n, k):
    """W8A8 and FP8 compiled (row scales, rows quantized, the 8-bit GEMM), on fresh random data, against the interpreter
    and against torch on the same 8-bit values."""
    from backend.device import to_torch
    from backend.quant import per_token
    from ir.dtypes import EIGHT_BIT_TYPES, storage_dtype
    from ir.numerics import EIGHT_BIT_PRESETS

    fmt = EIGHT_BIT_PRESETS[preset]
    text = QLINEAR8.format(m=m, n=n, k=k, w8=EIGHT_BIT_TYPES[fmt.element])
    fn = rung.compile(text)
    generator = torch.Generator().manual_seed(m * n + k)
    q, s, _ = fmt.weight.quantize(torch.randn(n, k, generator=generator, dtype=torch.float64).numpy())
    args = [(torch.randn(m, k, generator=generator) * 3).half().numpy(), q.astype(storage_dtype(EIGHT_BIT_TYPES[fmt.element])),
            s[:, 0].astype(np.float32)]
    torch.empty(1 << 26, device="cuda").fill_(float("nan"))  # poison what the allocator hands out next
    got = fn(*(to_torch(a).cuda() for a in args)).float().cpu().numpy()
    x8, xs = per_token(torch.from_numpy(args[0]).cuda(), fmt.a8)
    ref = (x8.double() @ torch.from_numpy(q).cuda().T) * xs.double()[:, None] * torch.from_numpy(s[:, 0]).cuda()
    interpreted = np.asarray(rung.run(rung.parse_ir(text), args)[0], np.float32)
    assert_close(interpreted, ref.float().cpu().numpy(), "f16")  # (the IR's meaning: torch's quantization)
    assert_close(got, interpreted, "f16")


@pytest.mark.parametrize("per, sparsity", [("row", 0.8), ("tensor", 0.95)])
def test_a_sparsified_model_compiles_to_the_sparse_kernel_and_runs_on_the_simulator(per, sparsity):
    """torch2ir's program with its linears pruned (sparsify_linears) lowers to tile.pack_sparse and the sparse GEMM
    (GemmConfig.sparse), whose kernels on the lane simulator compute what the interpreter does."""
    from frontend.torch2ir import torch_to_ir
    from frontend.transforms import sparsify_linears
    from ir.interpreter import run

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(96, 200), torch.nn.SiLU(), torch.nn.Linear(200, 72)).half().eval()
    x = torch.randn(5, 96).half()
    module, weights, names = torch_to_ir(model, (x,))
    names, weights, _ = sparsify_linears(module, names, weights, sparsity, per)
    inputs = [weights[n] if n in weights else x.numpy() for n in names]
    fn = rung.compile(module, "sm_80")
    assert [op.name for op in fn.steps].count("tile.pack_sparse") == 2 and fn.path.count("_csl") == 2
    assert_close(fn(*inputs), run(module, inputs)[0], "f16")


def test_a_sparse_linear_with_k_split_writes_every_column():
    """A long K splits (the partial sums' workspace is [splits, M, N]): the kernel still covers all N columns."""
    from frontend.torch2ir import torch_to_ir
    from frontend.transforms import sparsify_linears
    from ir.interpreter import run

    torch.manual_seed(1)
    model = torch.nn.Linear(1030, 200, bias=False).half().eval()
    x = torch.randn(3, 1030).half()
    module, weights, names = torch_to_ir(model, (x,))
    names, weights, _ = sparsify_linears(module, names, weights, 0.9)
    inputs = [weights[n] if n in weights else x.numpy() for n in names]
    fn = rung.compile(module, "sm_90a")
    assert "_split" in fn.path and "_csl" in fn.path
    assert_close(fn(*inputs), run(module, inputs)[0], "f16")


def test_a_sparse_weight_the_kernel_cannot_take_says_why():
    from dialects import graph as g
    from dialects.lp import SparseAttr
    from frontend.torch2ir import torch_to_ir
    from frontend.transforms import sparsify_linears
    from ir.interpreter import find_function

    model = torch.nn.Sequential(torch.nn.Linear(64, 32)).half().eval()
    module, weights, names = torch_to_ir(model, (torch.randn(3, 64).half(),))
    names, weights, _ = sparsify_linears(module, names, weights, 0.5)
    op = next(o for o in find_function(module, "main").walk() if isinstance(o, g.SparseLinearOp))
    fullest = op.sparse.max_nnz.data
    op.properties["sparse"] = SparseAttr(128, 64, 8)  # a bound the weight does not keep to: found when it is packed
    inputs = [weights[n] if n in weights else np.ones((3, 64), np.float16) for n in names]
    with pytest.raises(RungError, match=f"tile.pack_sparse of a 32-row weight .*cannot hold a tile of {fullest} nonzeros"):
        rung.compile(module, "sm_80")(*inputs)
    op.properties["sparse"] = SparseAttr(128, 64)  # no stated bound on a tile's nonzeros
    with pytest.raises(RungError, match="states no bound on a tile's nonzeros"):
        rung.compile(module, "sm_80")
    op.properties["sparse"] = SparseAttr(100, 64, 40)  # rows of tiles no block can take
    with pytest.raises(RungError, match="BN a power of two from 16 to 256 and BK 32, 64 or 128, got 100x64"):
        rung.compile(module, "sm_80")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 8, 16, 32, 64, 256])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_a_sparse_linear_on_the_gpu_is_torch_on_the_pruned_weight(m, sparsity):
    """The sparse GEMM on fresh random data, odd N and K, against torch.matmul of the pruned weight."""
    from frontend.torch2ir import torch_to_ir
    from frontend.transforms import dense_weights, sparsify_linears

    n, k = 1000, 1030
    model = torch.nn.Linear(k, n, bias=False).half().eval()
    x = torch.randn(m, k).half()
    module, weights, names = torch_to_ir(model, (x,))
    names, weights, _ = sparsify_linears(module, names, weights, sparsity)
    pruned = torch.from_numpy(next(iter(dense_weights(module, names, weights).values()))).half().cuda()
    fn = rung.compile(module)
    got = fn(*(weights[name] if name in weights else x.cuda() for name in names))  # (the weight on the host: packed there)
    want = x.cuda() @ pruned.T
    torch.testing.assert_close(got, want, rtol=2e-2, atol=5e-2)
