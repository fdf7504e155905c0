"""A causal LM's steps over a static KV cache, exported by torch2ir: caches as donated arguments, updated by graph.index_copy."""

import numpy as np
import pytest
import torch
import transformers

from dialects import graph as g
from frontend.causal_lm import CachedCausalLM, cache_shape, load_causal_lm
from frontend.torch2ir import torch_to_ir
from ir.errors import RungError
from ir.interpreter import run
from rung.context import parse_ir, print_ir


def tiny_llama(**overrides):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2, **overrides)
    return transformers.LlamaForCausalLM(config).eval()


def test_steps_update_the_caches_as_transformers_does():
    """A prefill then a decode step on the interpreter: the logits of transformers' own cached forward, and
    @main's cache results are graph.index_copy of its cache arguments."""
    lm, max_len = tiny_llama(), 16
    module, weights, names = torch_to_ir(CachedCausalLM(lm, max_len), (torch.zeros((1, 5), dtype=torch.int64), torch.arange(5)))
    assert print_ir(parse_ir(print_ir(module))) == print_ir(module)
    fn = module.ops.first
    returned = list(fn.body.block.last_op.operands)
    updated = [r for r in returned if isinstance(r.owner, g.IndexCopyOp)]
    assert len(updated) == 4 and all(r.owner.x in fn.body.block.args for r in updated)
    caches = [n for n in names if "_cache_" in n]
    assert caches == ["key_cache_0", "value_cache_0", "key_cache_1", "value_cache_1"]
    assert all(weights[n].shape == cache_shape(lm.config, max_len, 1) for n in caches)

    ids = torch.randint(0, 96, (1, 6))
    with torch.no_grad():
        want = lm(ids).logits[0, -1].numpy()
    state = dict(weights)
    outs = run(module, [state[n] for n in names[:-2]] + [ids[:, :5].numpy(), np.arange(5)])
    state.update({n: o for n, o in zip(caches, outs[:4])})
    decode = torch_to_ir(CachedCausalLM(lm, max_len), (torch.zeros((1, 1), dtype=torch.int64), torch.tensor([5])))[0]
    got = run(decode, [state[n] for n in names[:-2]] + [ids[:, 5:].numpy(), np.array([5])])[-1]
    np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-4, atol=1e-4)


def test_a_sliding_window_shorter_than_the_cache_is_refused():
    lm = transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=32, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        sliding_window=8))
    with pytest.raises(RungError, match="sliding window of 8 tokens"):
        CachedCausalLM(lm, 16)


def test_a_module_that_is_no_causal_lm_is_refused():
    with pytest.raises(RungError, match="not a transformers causal LM"):
        CachedCausalLM(torch.nn.Linear(2, 2), 8)


@pytest.mark.parametrize("name, body, message", [
    ("missing.py", None, "no such model file"),
    ("model.py", "x = 1\n", "defines no model\\(\\)"),
    ("weights.bin", "", "not a model"),
])
def test_bad_model_paths_say_what_is_wrong(tmp_path, name, body, message):
    path = tmp_path / name
    if body is not None:
        path.write_text(body)
    with pytest.raises(RungError, match=message):
        load_causal_lm(path)


def test_a_packaged_model_whose_file_is_gone_says_so(tmp_path, monkeypatch):
    from frontend.causal_lm import PACKAGED, packaged_model

    module, file, package = PACKAGED["smollm2"]
    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RungError, match=f"{file} is missing from .*{module}: reinstall it"):
        packaged_model("smollm2")
    (tmp_path / module / file).write_bytes(b"")
    assert packaged_model("smollm2") == tmp_path / module / file
