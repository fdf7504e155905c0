"""torch.compile(model, backend="rung"): Dynamo's graphs as Rung programs (on CPU tensors, the IR interpreter)."""

import logging

import pytest
import torch

from rung.dynamo import backend


class Sorted(torch.nn.Module):
    """A linear, then an op Rung has no conversion for (sort)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.sort(self.linear(x), dim=-1).values


def test_a_compiled_mlp_computes_what_eager_does():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    compiled = torch.compile(model, backend=backend)
    for seed in (1, 2):  # fresh inputs reuse the compiled graph
        x = torch.randn(3, 8, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_transformers_model_compiled_gives_its_logits():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=32)).eval()
    ids = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        want = lm(ids, use_cache=False).logits
        got = torch.compile(lm, backend=backend)(ids, use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_an_op_rung_cannot_take_is_an_error_naming_it_unless_fallback_is_asked_for(caplog):
    torch._dynamo.reset()
    model, x = Sorted().eval(), torch.randn(2, 8)
    with pytest.raises(Exception, match=r"graph \d+: .*test_dynamo.py:\d+.*sort"):
        torch.compile(model, backend=backend)(x)
    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING, logger="rung.dynamo"):
        out = torch.compile(model, backend=backend, options={"fallback": True})(x)
    torch.testing.assert_close(out, model(x))
    assert "runs in PyTorch (option fallback)" in caplog.text and "sort" in caplog.text


def test_an_unknown_option_lists_the_known_ones():
    torch._dynamo.reset()
    with pytest.raises(Exception, match="unknown option 'falback' \\(known: fallback"):
        torch.compile(torch.nn.Linear(2, 2), backend=backend, options={"falback": True})(torch.randn(1, 2))


def test_the_backend_is_registered_by_name():
    from torch._dynamo.backends.registry import lookup_backend

    assert lookup_backend("rung") is backend


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_on_cuda_tensors_the_graph_runs_as_rungs_kernels(dtype, caplog):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.SiLU(), torch.nn.Linear(128, 32)).eval().to(dtype).cuda()
    x = torch.randn(5, 64, device="cuda", dtype=dtype)
    with caplog.at_level(logging.INFO, logger="rung.dynamo"), torch.no_grad():
        got = torch.compile(model, backend=backend)(x)
        want = model(x)
    assert "kernel launches" in caplog.text
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
