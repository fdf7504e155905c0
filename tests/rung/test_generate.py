"""Generation over a static KV cache: greedy tokens equal to transformers' for several families and a real model,
sampling that keeps to its top-k and nucleus and repeats with a seed, and clear errors."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from ir.errors import RungError
from rung.generate import Generator, Sampling

EXAMPLES = Path(__file__).parents[2] / "examples"
SIZES = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=64, initializer_range=1.0)  # wide weights: logits far apart, tokens that vary
FAMILIES = {
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**SIZES)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SIZES)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**SIZES)),
    "gemma": lambda: transformers.GemmaForCausalLM(transformers.GemmaConfig(**SIZES, head_dim=8)),
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                                         initializer_range=1.0, bos_token_id=0, eos_token_id=0)),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_equal_transformers_generate(family):
    torch.manual_seed(0)
    lm = FAMILIES[family]().eval()
    prompt = torch.randint(1, 96, (1, 7))
    with torch.no_grad():
        want = lm.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)[0, 7:].tolist()
    got = Generator(lm, 24).generate(prompt[0].tolist(), 12).tokens
    assert got == want
    assert len(set(want)) > 2  # a sequence that varies, not one token repeated


@given(st.integers(2, 6).flatmap(lambda v: st.tuples(*[st.lists(st.floats(0.01, 1), min_size=v, max_size=v)] * 3)), st.integers(0, 2**31))
@settings(max_examples=10, deadline=None)
def test_speculative_sampling_draws_from_the_models_distribution(rows, seed):
    """Whatever the draft's distribution q, the first token speculative_pick emits follows the model's p (the draft's
    guess kept with probability min(1, p / q), else a draw from max(0, p - q)); the token after a kept guess follows
    the model's next row."""
    from rung.generate import speculative_pick

    p0, p1, q0 = (np.array(r) / sum(r) for r in rows)
    rng, trials = np.random.default_rng(seed), 20000
    first, after = np.zeros(len(p0)), np.zeros(len(p0))
    for _ in range(trials):
        guess = int(rng.choice(len(q0), p=q0))
        n, picks = speculative_pick([p0, p1], [q0], [guess], rng)
        first[picks[0]] += 1
        if n == 1:
            after[picks[1]] += 1
    assert 0.5 * np.abs(first / trials - p0).sum() < 0.02  # total variation: 20000 draws keep it near 0.01
    if after.sum() > 2000:
        assert 0.5 * np.abs(after / after.sum() - p1).sum() < 0.05


def test_sampled_speculation_repeats_with_its_seed_and_a_draft_that_is_the_model_is_always_kept():
    torch.manual_seed(0)
    lm = FAMILIES["llama"]().eval()
    sampling = Sampling(temperature=1.0, top_k=20)
    gen = Generator(lm, 32)
    first = gen.speculate([3, 1, 4], 10, Generator(lm, 32), 3, sampling=sampling, seed=5)
    assert gen.speculate([3, 1, 4], 10, Generator(lm, 32), 3, sampling=sampling, seed=5).tokens == first.tokens
    assert first.accepted == first.proposed > 0 and len(first.tokens) == 10


def test_quantizing_keeps_the_output_head_unless_asked():
    from dialects import graph as g
    from ir.numerics import quant_format

    torch.manual_seed(0)
    lm = FAMILIES["llama"]().eval()
    for keep, float_linears in ((None, 1), ((), 0), (("*q_proj*",), 2)):
        gen = Generator(lm, 16, quant_format("int4", group=16), keep=keep)
        module = gen._program(1).module
        assert sum(isinstance(op, g.LinearOp) for op in module.walk()) == float_linears, keep
    assert Generator(lm, 16, quant_format("int4", group=16)).keep == ("lm.lm_head.weight",)


def test_a_sparse_model_generates_the_pruned_models_greedy_tokens():
    """Generator(sparsity=0.6): every linear but the output head pruned per row into Tiled-CSL; transformers on the same
    pruned weights agrees."""
    from ir.sparse import prune

    torch.manual_seed(0)
    lm = FAMILIES["llama"]().eval()
    pruned = copy.deepcopy(lm)
    for module in pruned.modules():
        if isinstance(module, torch.nn.Linear) and module is not pruned.get_output_embeddings():
            module.weight.data = torch.from_numpy(prune(module.weight.detach().double().numpy(), 0.6)).float()
    prompt = torch.randint(1, 96, (1, 7))
    with torch.no_grad():
        want = pruned.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)[0, 7:].tolist()
    assert Generator(lm, 16, sparsity=0.6).generate(prompt[0].tolist(), 8).tokens == want


@pytest.mark.parametrize("k", [1, 4])
def test_speculative_decoding_gives_the_models_own_greedy_tokens(k):
    """Drafts that always agree (the model itself), mostly agree (its int4 copy) and hardly ever (another model): the
    tokens of the model's own greedy run every time, in fewer of its steps the more the draft agrees."""
    from ir.numerics import quant_format

    torch.manual_seed(0)
    lm, other = FAMILIES["llama"]().eval(), transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SIZES, "num_hidden_layers": 1})).eval()
    prompt = [5, 17, 3, 9, 60, 2, 11]
    want = Generator(lm, 40).generate(prompt, 20).tokens
    for draft, kept in ((Generator(lm, 40), 1.0), (Generator(lm, 40, quant_format("int4", group=32)), None), (Generator(other, 40), None)):
        out = Generator(lm, 40).speculate(prompt, 20, draft, k)
        assert out.tokens == want and 0 <= out.accepted <= out.proposed
        assert kept is None or out.accepted == out.proposed
    stop = want[6]
    stopped = Generator(lm, 40).speculate(prompt, 20, Generator(lm, 40), k, stop=(stop,))
    assert stopped.stopped and stopped.tokens == want[:want.index(stop) + 1]


def test_a_batch_generates_each_sequences_own_greedy_tokens():
    """Three prompts of one length stepped together: each row's tokens are its own batch-1 run's; a stop token ends
    its row alone."""
    torch.manual_seed(0)
    lm = FAMILIES["qwen2"]().eval()
    prompts = [[5, 17, 3, 9], [60, 2, 11, 40], [1, 1, 2, 3]]
    alone = [Generator(lm, 20).generate(p, 10).tokens for p in prompts]
    batch = Generator(lm, 20, batch=3)
    assert [g.tokens for g in batch.generate_batch(prompts, 10)] == alone
    stop = alone[1][3]
    ended = batch.generate_batch(prompts, 10, stop=(stop,))
    assert ended[1].tokens == alone[1][:alone[1].index(stop) + 1] and ended[1].stopped
    with pytest.raises(RungError, match="prompts of one length"):
        batch.generate_batch([[1, 2], [3], [4, 5]], 4)


@pytest.mark.parametrize("quantize, sparsity", [(None, None), ("w8a8", None), (None, 0.7)])
def test_the_kernels_on_the_simulator_generate_the_interpreters_tokens(quantize, sparsity):
    """The steps compiled whole (cache updates in place, attention up to the positions; W8A8's row quantization and
    8-bit GEMMs; the sparse GEMM of pruned linears) and run on the lane simulator."""
    from frontend.transforms import named_format

    torch.manual_seed(0)
    lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SIZES, "hidden_size": 64, "intermediate_size": 96})).eval().half()
    prompt = [5, 17, 3, 9, 60, 2, 11]
    fmt = quantize and named_format(quantize, "quantize")
    want = _greedy_clear_of_ties(Generator(lm, 16, fmt, sparsity=sparsity), prompt, 6)
    got = Generator(lm, 16, fmt, device="simulator", sparsity=sparsity).generate(prompt, 6).tokens
    assert got[:len(want)] == want and len(want) >= 3


def _greedy_clear_of_ties(gen: Generator, prompt: list[int], new: int) -> list[int]:
    """`gen`'s greedy tokens before the first step whose top two logits lie within f16 rounding of each other, where
    kernels that sum in another order may rightly pick the other."""
    tokens, ids, position = [], prompt, 0
    for _ in range(new):
        logits = np.asarray(gen.logits(ids, position), np.float64)
        second, first = np.sort(logits)[-2:]
        if first - second <= 1e-2 * max(1.0, abs(first)):  # either token is right from here on
            break
        tokens.append(int(np.argmax(logits)))
        position, ids = position + len(ids), tokens[-1:]
    return tokens


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


def _prompt_and_reference(lm, new: int, length: int = 9, counted: int = 4) -> tuple[list[int], list[int]]:
    """A random prompt and transformers' greedy tokens after it on the GPU, before the first step whose top two logits
    lie within f16 rounding (past it either token is right); prompts are drawn until at least `counted` tokens count
    (a random model's near ties can end a comparison after a token or two)."""
    for _ in range(20):
        prompt = torch.randint(1, 96, (length,)).tolist()
        if len(want := _greedy_prefix_that_counts(lm, prompt, new)) >= counted:
            return prompt, want
    pytest.fail(f"no prompt of 20 drawn gives {counted} greedy tokens clear of near ties")


def _greedy_prefix_that_counts(lm, prompt: list[int], new: int) -> list[int]:
    with torch.no_grad():
        out = lm.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0,
                          output_scores=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(prompt):].tolist()
    for step, scores in enumerate(out.scores):
        top = torch.topk(scores[0].float(), 2).values
        if float(top[0] - top[1]) <= 1e-2 * max(1.0, float(top[0].abs())):  # either token is right from here on
            return tokens[:step]
    return tokens


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gpt2"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_greedy_tokens_on_the_gpu_equal_transformers(family, dtype):
    """Prefill, then decode steps replayed as one CUDA graph each, the caches updated in place on the GPU."""
    torch.manual_seed(0)
    sizes = {"hidden_size": 128, "intermediate_size": 256} if family != "gpt2" else {}
    lm = FAMILIES[family]()
    if sizes:
        lm = type(lm)(type(lm.config)(**{**SIZES, **sizes}))
    else:
        lm = type(lm)(type(lm.config)(vocab_size=96, n_embd=128, n_layer=2, n_head=4, n_positions=64, initializer_range=1.0))
    lm = lm.eval().to(dtype).cuda()
    prompt, want = _prompt_and_reference(lm, 16)
    got = Generator(lm, 32, device="gpu").generate(prompt, 16).tokens
    assert got[:len(want)] == want


@gpu
@pytest.mark.gpu
def test_speculative_decoding_on_the_gpu_gives_its_greedy_tokens():
    """An int4 copy drafting for the f16 model on the GPU: the tokens of the GPU's own greedy run."""
    from ir.numerics import quant_format

    torch.manual_seed(0)
    lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SIZES, "hidden_size": 128, "intermediate_size": 256})).eval().half().cuda()
    prompt = torch.randint(1, 96, (9,)).tolist()
    want = Generator(lm, 40, device="gpu").generate(prompt, 16).tokens
    out = Generator(lm, 40, device="gpu").speculate(prompt, 16, Generator(lm, 40, quant_format("int4", group=32), device="gpu"), 4)
    assert out.tokens == want and out.proposed > 0


logits_arrays = st.lists(st.floats(-20, 20, allow_nan=False), min_size=2, max_size=40).map(lambda v: np.array(v, np.float32))


@given(logits_arrays, st.floats(0.1, 3), st.integers(0, 8), st.floats(0.05, 1), st.integers(0, 2**31))
def test_sampling_keeps_to_the_top_k_and_the_nucleus(logits, temperature, top_k, top_p, seed):
    sampling = Sampling(temperature, top_k, top_p)
    token = sampling.pick(logits, np.random.default_rng(seed))
    order = np.argsort(-logits.astype(np.float64), kind="stable")
    allowed = order[:top_k] if top_k else order
    p = np.exp((logits[allowed] - logits[allowed[0]]) / temperature)
    p /= p.sum()
    before = np.cumsum(p) - p  # probability of the tokens ranked above each
    assert token in allowed[before < top_p]
    assert sampling.pick(logits, np.random.default_rng(seed)) == token  # a seed repeats its draw


@given(logits_arrays, st.integers(0, 2**31))
def test_greedy_and_top_1_pick_the_largest_logit(logits, seed):
    rng = np.random.default_rng(seed)
    assert Sampling().pick(logits, rng) == Sampling(temperature=1.5, top_k=1).pick(logits, rng) == int(np.argmax(logits))


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**31))
def test_sampled_generation_repeats_with_its_seed_and_stops_at_a_stop_token(seed):
    torch.manual_seed(0)
    gen = Generator(FAMILIES["llama"]().eval(), 16)
    sampling = Sampling(temperature=1.0, top_k=20, top_p=0.9)
    first = gen.generate([3, 1, 4], 8, sampling, seed)
    assert gen.generate([3, 1, 4], 8, sampling, seed).tokens == first.tokens
    stop = first.tokens[2]
    stopped = gen.generate([3, 1, 4], 8, sampling, seed, stop=(stop,))
    assert stopped.stopped and stopped.tokens == first.tokens[:first.tokens.index(stop) + 1]


@pytest.mark.parametrize("call, message", [
    (lambda gen: gen.generate([100], 2), "prompt token 100 is outside the vocabulary"),
    (lambda gen: gen.generate([1] * 10, 8), "need 17 positions, more than max_seq_len 16"),
    (lambda gen: gen.generate([], 2), "the prompt has no tokens"),
    (lambda gen: Sampling(temperature=-1), "temperature must be 0"),
    (lambda gen: Sampling(top_p=0), "top-p must lie in"),
])
def test_bad_requests_say_what_is_wrong(call, message):
    torch.manual_seed(0)
    with pytest.raises(RungError, match=message):
        call(Generator(FAMILIES["llama"]().eval(), 16))


def _chat_prompt(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_smollm2_greedy_text_equals_transformers(smollm2):
    lm, tokenizer = smollm2
    prompt = _chat_prompt(tokenizer, "What is the capital of France?")
    with torch.no_grad():
        want = lm.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    got = Generator(lm, len(prompt) + 8).generate(prompt, 8).tokens
    assert got == want and "Paris" in tokenizer.decode(got)


@gpu
@pytest.mark.gpu
def test_smollm2_greedy_text_on_the_gpu_equals_transformers(smollm2):
    """The real model in f16 on the GPU, 32 tokens (those before a step whose top two logits are within rounding)."""
    from frontend.causal_lm import load_causal_lm

    lm, tokenizer = load_causal_lm("smollm2", "f16")[0].cuda(), smollm2[1]  # a GGUF model refuses .half()
    prompt = _chat_prompt(tokenizer, "Count from one to ten in words.")  # 32 decisive greedy steps (a poem starts on a near tie)
    want = _greedy_prefix_that_counts(lm, prompt, 32)
    got = Generator(lm, len(prompt) + 32, device="gpu").generate(prompt, 32).tokens
    assert got[:len(want)] == want and len(want) >= 16, (tokenizer.decode(got), tokenizer.decode(want))
