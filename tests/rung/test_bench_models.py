"""The model benchmark's program, at a small size, before device time goes to it: torch2ir brings it in,
it compiles whole, and the compiled kernels compute on the simulator what torch does."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rung  # noqa: E402
from frontend.torch2ir import inputs_for, torch_to_ir  # noqa: E402
from rung.bench_models import feed_forward  # noqa: E402


def test_the_feed_forward_block_compiles_whole_and_computes_as_torch_does():
    model = feed_forward(dim=64, hidden=160)
    x = torch.randn(3, 64).half()
    module, weights, names = torch_to_ir(model, (x,), {})
    fn = rung.compile(module, target="sm_90a")
    # the norm, then 3 GEMMs: silu in the gate's epilogue, SwiGLU's product in the up's, the residual add in the down's
    assert [op.name for op in fn.steps if op.name != "graph.reshape"] == ["ptx.launch"] * 4
    got = np.asarray(fn(*inputs_for(names, weights, (x,))), np.float32)
    want = model.float()(x.float()).detach().numpy()
    assert np.abs(got - want).max() <= 1e-2 * np.abs(want).max()


def test_main_arguments_are_the_models_own_tensors_in_torch2irs_order():
    from rung.models import main_arguments

    model = feed_forward(dim=64, hidden=160)
    x = torch.randn(3, 64).half()
    _, weights, names = torch_to_ir(model, (x,), {})
    tensors = main_arguments(model, names, (x,), {})
    assert tensors[-1] is x and tensors[0].data_ptr() == dict(model.named_parameters())[names[0]].data_ptr()
    for t, want in zip(tensors, inputs_for(names, weights, (x,))):
        assert np.array_equal(t.numpy(), want)


def test_the_llama_program_at_a_small_size_compiles_whole_and_computes_as_torch_does():
    """The whole-model benchmark's LLaMA, two small layers: every op a kernel, the simulator's logits torch's."""
    from frontend.torch2ir import torch_outputs
    from rung.bench_models import llama

    model = llama(layers=2, hidden=64, intermediate=160, heads=4, kv_heads=2, vocab=128)
    args, kwargs = (torch.randint(0, 128, (1, 12)),), {"use_cache": False}
    module, weights, names = torch_to_ir(model, args, kwargs)
    fn = rung.compile(module, target="sm_90a")
    assert {op.name for op in fn.steps} <= {"ptx.launch", "graph.reshape", "graph.constant"}
    got = np.asarray(fn(*inputs_for(names, weights, args, kwargs)), np.float32)
    want = torch_outputs(model.float(), args, kwargs)[0].numpy()
    assert np.abs(got - want).max() <= 1e-2 * np.abs(want).max()
