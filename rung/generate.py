"""Text generation with a causal LM over a static KV cache: `rung-generate`.

    gen = Generator(lm, max_seq_len=256)        # a transformers causal LM (frontend.causal_lm.load_causal_lm)
    out = gen.generate(prompt_ids, 32, Sampling(temperature=0.7, top_p=0.9), seed=0)
    out.tokens, out.prefill_s, out.decode_tokens_per_s

The prompt runs as one prefill step over its T tokens, then each new token as one decode step; both are
the model exported by torch2ir through frontend.causal_lm.CachedCausalLM (one program per token count),
sharing one set of weights and of key/value caches, which each step updates at its positions
(graph.index_copy of donated arguments). Tokens are sampled from the last position's logits: greedy
(temperature 0), or at a temperature from the top-k tokens and the top-p nucleus, with a seeded
generator, so a seed gives the same tokens every run. The steps run on the IR interpreter; the compiled
GPU path (cache updates and position-masked attention as kernels) is not built yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ir.errors import RungError


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn from the logits: greedy at temperature 0; otherwise softmax(logits / T)
    over the top_k most likely tokens (0: all) within the smallest set whose probability reaches top_p."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise RungError(f"the temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.top_k < 0:
            raise RungError(f"top-k must be 0 (all tokens) or more, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise RungError(f"top-p must lie in (0, 1], got {self.top_p}")

    def pick(self, logits: np.ndarray, rng: np.random.Generator) -> int:
        logits = np.asarray(logits, np.float64)
        if self.temperature == 0:
            return int(np.argmax(logits))
        order = np.argsort(-logits, kind="stable")
        if self.top_k:
            order = order[:self.top_k]
        p = np.exp((logits[order] - logits[order[0]]) / self.temperature)
        p /= p.sum()
        keep = int(np.searchsorted(np.cumsum(p), self.top_p * (1 - 1e-12))) + 1  # the nucleus: reaches top_p
        p = p[:keep] / p[:keep].sum()
        return int(order[rng.choice(keep, p=p)])


@dataclass
class Generated:
    """What a generation made and how long it took."""

    tokens: list[int]  # the new tokens (the stop token included when one ended it)
    prompt_tokens: int
    prefill_s: float  # the prompt's step, first token included
    decode_s: float  # every later step
    stopped: bool = False  # ended by a stop token rather than the token limit

    @property
    def decode_tokens_per_s(self) -> float:
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 and self.decode_s > 0 else 0.0


@dataclass
class _Program:
    module: object
    names: list[str]  # @main's arguments: weights, caches, then ids and positions
    updates: list[tuple[int, str]] = field(default_factory=list)  # (result index, cache argument it updates)


class Generator:
    """A causal LM's prefill and decode steps over one static KV cache of max_seq_len positions (batch 1)."""

    def __init__(self, lm, max_seq_len: int, quantize=None, progress=lambda msg: None):
        from frontend.causal_lm import CachedCausalLM

        if max_seq_len < 2:
            raise RungError(f"max_seq_len must be 2 or more, got {max_seq_len}")
        self.step = CachedCausalLM(lm, max_seq_len)
        self.max_seq_len, self.quantize, self.progress = max_seq_len, quantize, progress
        self.vocab = lm.config.vocab_size
        self._programs: dict[int, _Program] = {}
        self._state: dict[str, np.ndarray] | None = None  # weights and caches by argument name, shared by the programs

    def _program(self, tokens: int) -> _Program:
        """The step over `tokens` tokens, exported once."""
        if tokens not in self._programs:
            import torch

            from dialects import graph as g
            from frontend.torch2ir import torch_to_ir
            from ir.interpreter import find_function

            self.progress(f"exporting the {'decode' if tokens == 1 else f'{tokens}-token prefill'} step ...")
            module, weights, names = torch_to_ir(self.step, (torch.zeros((1, tokens), dtype=torch.int64), torch.arange(tokens)))
            if self.quantize is not None:
                from frontend.transforms import quantize_linears

                names, weights, _ = quantize_linears(module, names, weights, self.quantize)
            if self._state is None:
                self._state = weights
            args = list(find_function(module, "main").body.block.args)
            returned = find_function(module, "main").body.block.last_op.operands
            updates = [(i, names[args.index(r.owner.x)]) for i, r in enumerate(returned)
                       if isinstance(r.owner, g.IndexCopyOp) and r.owner.x in args]
            self._programs[tokens] = _Program(module, names, updates)
        return self._programs[tokens]

    def logits(self, ids: list[int], start: int) -> np.ndarray:
        """The next token's logits [vocab] after `ids` at positions start, start + 1, ...; the caches are
        updated there (what lies past them is never read: a step attends positions up to its own)."""
        from ir.interpreter import run

        if start + len(ids) > self.max_seq_len:
            raise RungError(f"position {start + len(ids) - 1} is past max_seq_len {self.max_seq_len}: raise --max-seq-len")
        program = self._program(len(ids))
        user = {"ids": np.asarray([ids], np.int64), "positions": np.arange(start, start + len(ids), dtype=np.int64)}
        *weights, _, _ = program.names
        outs = run(program.module, [self._state[n] for n in weights] + [user["ids"], user["positions"]])
        for i, name in program.updates:
            self._state[name] = outs[i]
        return np.asarray(outs[-1], np.float32).reshape(-1)[-self.vocab:]

    def generate(self, prompt: list[int], max_new_tokens: int, sampling: Sampling = Sampling(), seed: int = 0,
                 stop: tuple[int, ...] = (), on_token=lambda token: None) -> Generated:
        """Up to max_new_tokens tokens after `prompt`, ending early at a token of `stop`; on_token(token) as each comes."""
        if not prompt:
            raise RungError("the prompt has no tokens")
        if bad := [t for t in prompt if not 0 <= t < self.vocab]:
            raise RungError(f"prompt token {bad[0]} is outside the vocabulary [0, {self.vocab})")
        if max_new_tokens < 1:
            raise RungError(f"max_new_tokens must be 1 or more, got {max_new_tokens}")
        if len(prompt) + max_new_tokens - 1 > self.max_seq_len:
            raise RungError(f"{len(prompt)} prompt tokens and {max_new_tokens} new ones need {len(prompt) + max_new_tokens - 1} "
                            f"positions, more than max_seq_len {self.max_seq_len}")
        self._program(len(prompt)), self._program(1)  # exported before the clock starts
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        tokens = [sampling.pick(self.logits(prompt, 0), rng)]
        on_token(tokens[-1])
        t1 = time.perf_counter()
        while len(tokens) < max_new_tokens and tokens[-1] not in stop:
            tokens.append(sampling.pick(self.logits(tokens[-1:], len(prompt) + len(tokens) - 1), rng))
            on_token(tokens[-1])
        return Generated(tokens, len(prompt), t1 - t0, time.perf_counter() - t1, stopped=tokens[-1] in stop)
