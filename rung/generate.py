"""Text generation with a causal LM over a static KV cache: `rung-generate`.

    gen = Generator(lm, max_seq_len=256, device="gpu")  # a transformers causal LM (frontend.causal_lm.load_causal_lm)
    out = gen.generate(prompt_ids, 32, Sampling(temperature=0.7, top_p=0.9), seed=0)
    out.tokens, out.prefill_s, out.decode_tokens_per_s

The prompt runs as one prefill step over its T tokens, then each new token as one decode step; both are
the model exported by torch2ir through frontend.causal_lm.CachedCausalLM (one program per token count),
sharing one set of weights and of key/value caches, which each step updates at its positions
(graph.index_copy of donated arguments). `device` runs the steps on the IR interpreter, or compiled by
rung.compile into Rung's kernels on the CPU lane simulator (small models) or the GPU, where the weights
and caches stay on the device, a step updates the caches in place and steps of up to CAPTURED_TOKENS tokens
(decoding, speculative verification) are captured once as CUDA graphs and replayed. Tokens are sampled from the last position's logits (on the GPU,
there): greedy (temperature 0), or at a temperature from the top-k tokens and the top-p nucleus, with a
seeded generator, so a seed gives the same tokens every run on a device.
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

    def pick(self, logits, rng) -> int:
        """The next token from logits [vocab]: a numpy array with a numpy Generator, or a torch tensor with a torch
        Generator of its device (sampled there)."""
        if not isinstance(logits, np.ndarray):
            return self._pick_torch(logits, rng)
        logits = np.asarray(logits, np.float64)
        if self.temperature == 0:
            return int(np.argmax(logits))
        tokens, p = self._nucleus(logits)
        return int(tokens[rng.choice(len(tokens), p=p)])

    def probabilities(self, logits) -> np.ndarray:
        """The distribution `pick` draws from, over the whole vocabulary (float64; at temperature 0, all on the
        largest logit): what speculative sampling compares the draft's and the model's by."""
        if self.temperature == 0:  # (on a GPU only the argmax comes back)
            p = np.zeros(logits.shape[-1])
            p[self.pick(logits, None)] = 1.0
            return p
        logits = np.asarray(logits.float().cpu() if hasattr(logits, "cpu") else logits, np.float64)
        tokens, q = self._nucleus(logits)
        p = np.zeros_like(logits)
        p[tokens] = q
        return p

    def _nucleus(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, their probabilities) that a draw at a temperature picks from: softmax(logits / T) over the top_k
        most likely tokens, cut to the smallest set reaching top_p, renormalized."""
        order = np.argsort(-logits, kind="stable")
        if self.top_k:
            order = order[:self.top_k]
        p = np.exp((logits[order] - logits[order[0]]) / self.temperature)
        p /= p.sum()
        keep = int(np.searchsorted(np.cumsum(p), self.top_p * (1 - 1e-12))) + 1  # the nucleus: reaches top_p
        return order[:keep], p[:keep] / p[:keep].sum()

    def _pick_torch(self, logits, generator) -> int:
        import torch

        logits = logits.float()
        if self.temperature == 0:
            return int(torch.argmax(logits))
        values, order = torch.sort(logits, descending=True, stable=True)
        if self.top_k:
            values, order = values[:self.top_k], order[:self.top_k]
        p = torch.softmax((values - values[0]) / self.temperature, dim=0)
        keep = int(torch.searchsorted(torch.cumsum(p, 0), torch.tensor([self.top_p * (1 - 1e-12)], device=p.device))) + 1
        return int(order[torch.multinomial(p[:keep] / p[:keep].sum(), 1, generator=generator)])


@dataclass
class Generated:
    """What a generation made and how long it took."""

    tokens: list[int]  # the new tokens (the stop token included when one ended it)
    prompt_tokens: int
    prefill_s: float  # the prompt's step, first token included
    decode_s: float  # every later step
    stopped: bool = False  # ended by a stop token rather than the token limit
    accepted: int = 0  # speculative decoding: the draft's tokens kept,
    proposed: int = 0  # of those it proposed

    @property
    def decode_tokens_per_s(self) -> float:
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 and self.decode_s > 0 else 0.0


@dataclass
class _Program:
    module: object
    names: list[str]  # @main's arguments: weights, caches, then ids and positions
    updates: list[tuple[int, str]] = field(default_factory=list)  # (result index, cache argument it updates)
    compiled: object = None  # rung.compile's function (on the simulator or the GPU)
    replay: object = None  # the GPU's short step (decoding, verification) captured as a CUDA graph, on `inputs`
    inputs: tuple = ()


DEVICES = ("interpreter", "simulator", "gpu")
CAPTURED_TOKENS = 16  # steps of this many tokens or fewer replay as CUDA graphs on the GPU


class Generator:
    """A causal LM's prefill and decode steps over one static KV cache of max_seq_len positions for `batch` sequences,
    on `device` (DEVICES; compiled ones need f16 or bf16 weights). With `quantize` (a weight format) or `sparsity`,
    every linear but those whose weights match a `keep` pattern (fnmatch; by default the output head's) is quantized
    or pruned."""

    def __init__(self, lm, max_seq_len: int, quantize=None, device: str = "interpreter", progress=lambda msg: None, batch: int = 1,
                 sparsity: float | None = None, keep: tuple[str, ...] | None = None, programmatic: bool = True):
        from frontend.causal_lm import CachedCausalLM

        if max_seq_len < 2:
            raise RungError(f"max_seq_len must be 2 or more, got {max_seq_len}")
        if device not in DEVICES:
            raise RungError(f"device must be one of {', '.join(DEVICES)}, got {device}")
        dtype = str(next(lm.parameters()).dtype).removeprefix("torch.")
        if device != "interpreter" and dtype not in ("float16", "bfloat16"):
            raise RungError(f"Rung's kernels take f16 or bf16 weights, the model's are {dtype} (load it with dtype f16)")
        if device == "gpu":
            import torch

            if not torch.cuda.is_available():
                raise RungError("device gpu: no CUDA GPU here")
        if batch < 1:
            raise RungError(f"the batch must be 1 or more, got {batch}")
        self.step = CachedCausalLM(lm, max_seq_len, batch)
        self.max_seq_len, self.quantize, self.device, self.progress, self.batch = max_seq_len, quantize, device, progress, batch
        self.sparsity, self.programmatic = sparsity, programmatic  # (rung.compile's: kernels launched while the one before runs)
        head = lm.get_output_embeddings()  # kept in float unless `keep` says otherwise: the logits are the most sensitive
        self.keep = tuple(keep) if keep is not None else tuple(name for name, p in self.step.named_parameters(remove_duplicate=False)
                                                               if head is not None and p is head.weight)
        self.vocab = lm.config.vocab_size
        self._programs: dict[tuple[int, bool], _Program] = {}  # by (tokens, every_logit)
        self._state: dict | None = None  # weights and caches by argument name, shared by the programs (on the device)
        self._quantized: dict = {}  # each linear's quantized (or sparse) parts, by weight name (quantize_linears)
        self._packed: dict = {}  # each quantized weight packed for the kernels, shared by the compiled programs

    def _program(self, tokens: int, every_logit: bool = False) -> _Program:
        """The step over `tokens` tokens (returning the logits of each with `every_logit`), exported (and compiled) once."""
        if (tokens, every_logit) not in self._programs:
            import torch

            from dialects import graph as g
            from frontend.torch2ir import torch_to_ir
            from ir.interpreter import find_function

            what = f"{tokens}-token verification" if every_logit else "decode" if tokens == 1 else f"{tokens}-token prefill"
            self.progress(f"exporting the {what} step ...")
            device = next(self.step.parameters()).device
            self.step.every_logit = every_logit
            try:
                module, weights, names = torch_to_ir(self.step, (torch.zeros((self.batch, tokens), dtype=torch.int64, device=device),
                                                                 torch.arange(tokens, device=device)))
            finally:
                self.step.every_logit = False
            if self.sparsity is not None:
                from frontend.transforms import sparsify_linears

                names, weights, _ = sparsify_linears(module, names, weights, self.sparsity, quantize=self.quantize, sparse=self._quantized,
                                                     keep=self.keep)
            elif self.quantize is not None:
                from frontend.transforms import quantize_linears

                names, weights, _ = quantize_linears(module, names, weights, self.quantize, self._quantized, self.keep)
            if self._state is None:
                self._state = weights if self.device != "gpu" else self._own_on_gpu(weights)
            main = find_function(module, "main")
            args, returned = list(main.body.block.args), main.body.block.last_op.operands
            updates = [(i, names[args.index(r.owner.x)]) for i, r in enumerate(returned)
                       if isinstance(r.owner, g.IndexCopyOp) and r.owner.x in args]
            compiled = None
            if self.device != "interpreter":
                from rung.compiler import compile

                self.progress("compiling it to kernels ...")
                compiled = compile(module, "sm_80" if self.device == "simulator" else None, packed=self._packed, programmatic=self.programmatic)
            self._programs[tokens, every_logit] = _Program(module, names, updates, compiled)
        return self._programs[tokens, every_logit]

    def _own_on_gpu(self, weights: dict) -> dict:
        """The arguments, the model's own tensors where they are on the GPU (its parameters, the caches and rotary tables
        of the wrapper); the others (quantized weights) stay the exported host copies until a program reads one on
        the GPU (_arguments)."""
        own = {**dict(self.step.named_parameters(remove_duplicate=False)), **dict(self.step.named_buffers(remove_duplicate=False))}
        return {name: own[name].detach() if name in own and own[name].is_cuda else w for name, w in weights.items()}

    def _arguments(self, program: _Program) -> list:
        """The program's weights and caches; on the GPU a host weight is uploaded the first time a program reads it there
        (one that a weight packing alone reads, a quantized or sparse linear's parts, CompiledFunction.host_weights, is
        packed from the host copy and uploaded packed: the unpacked weight takes no GPU memory)."""
        weights = [self._state[n] for n in program.names[:-2]]
        if self.device == "gpu":
            from backend.device import to_torch

            for i, (name, w) in enumerate(zip(program.names, weights)):
                if isinstance(w, np.ndarray) and i not in program.compiled.host_weights:
                    self._state[name] = weights[i] = to_torch(w).cuda()
        return weights

    def logits(self, ids: list, start: int, every_logit: bool = False):
        """The next token's logits [vocab] (numpy, or on the GPU a tensor there) after `ids` at positions start,
        start + 1, ... (with `every_logit`, [len(ids), vocab]: after each of them); the caches are updated there (what
        lies past them is never read: a step attends positions up to its own). With a batch, `ids` holds a row of
        tokens per sequence, and the logits gain a leading batch dimension."""
        rows = ids if ids and isinstance(ids[0], list) else [ids]
        if len(rows) != self.batch or len({len(r) for r in rows}) != 1:
            raise RungError(f"a step takes {self.batch} rows of as many tokens, got {[len(r) for r in rows]}")
        tokens = len(rows[0])
        if start + tokens > self.max_seq_len:
            raise RungError(f"position {start + tokens - 1} is past max_seq_len {self.max_seq_len}: raise --max-seq-len")
        program = self._program(tokens, every_logit)
        weights = self._arguments(program)
        ids_array, positions = np.asarray(rows, np.int64), np.arange(start, start + tokens, dtype=np.int64)
        if self.device == "interpreter":
            from ir.interpreter import run

            outs = run(program.module, weights + [ids_array, positions])
        elif self.device == "simulator":
            outs = program.compiled(*weights, ids_array, positions)
        else:
            outs = self._on_gpu(program, weights, ids_array, positions)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        for i, name in program.updates:
            self._state[name] = outs[i]
        logits = outs[-1].reshape(self.batch, tokens if every_logit else 1, self.vocab)[:, -(tokens if every_logit else 1):]
        logits = logits if every_logit else logits[:, 0]
        return logits if rows is ids else logits[0]

    def _on_gpu(self, program: _Program, weights: list, ids, positions):
        """A prompt's prefill called directly; a step of up to CAPTURED_TOKENS tokens (decoding, and speculative
        decoding's verification of k + 1) captured once as a CUDA graph on buffers of its own, whose ids and positions
        each call sets before the replay (the caches: updated in place, recorded as they are), since a direct call
        pays some 90 us of host work for each of a model's hundreds of launches."""
        import torch

        ids, positions = torch.from_numpy(ids).cuda(), torch.from_numpy(positions).cuda()
        if ids.shape[1] > CAPTURED_TOKENS:
            return program.compiled(*weights, ids, positions)
        if program.replay is None:
            program.inputs = (*weights, ids.clone(), positions.clone())
            program.replay = program.compiled.capture(*program.inputs)
        program.inputs[-2].copy_(ids)
        program.inputs[-1].copy_(positions)
        return program.replay(*program.inputs)

    def _check(self, prompt: list[int], max_new_tokens: int, extra: int = 0) -> None:
        if not prompt:
            raise RungError("the prompt has no tokens")
        if bad := [t for t in prompt if not 0 <= t < self.vocab]:
            raise RungError(f"prompt token {bad[0]} is outside the vocabulary [0, {self.vocab})")
        if max_new_tokens < 1:
            raise RungError(f"max_new_tokens must be 1 or more, got {max_new_tokens}")
        if len(prompt) + max_new_tokens - 1 + extra > self.max_seq_len:
            raise RungError(f"{len(prompt)} prompt tokens and {max_new_tokens} new ones need {len(prompt) + max_new_tokens - 1 + extra} "
                            f"positions{' (with the speculated ones)' if extra else ''}, more than max_seq_len {self.max_seq_len}")

    def _rng(self, seed: int):
        if self.device != "gpu":
            return np.random.default_rng(seed)
        import torch

        return torch.Generator(device="cuda").manual_seed(seed)

    def generate(self, prompt: list[int], max_new_tokens: int, sampling: Sampling = Sampling(), seed: int = 0,
                 stop: tuple[int, ...] = (), on_token=lambda token: None) -> Generated:
        """Up to max_new_tokens tokens after `prompt`, ending early at a token of `stop`; on_token(token) as each comes."""
        return self.generate_batch([prompt], max_new_tokens, sampling, seed, stop, lambda row, token: on_token(token))[0]

    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling = Sampling(), seed: int = 0,
                       stop: tuple[int, ...] = (), on_token=lambda row, token: None) -> list[Generated]:
        """generate for the batch's sequences together (prompts of one length), a step for all of them at a time, until
        each has its tokens or a stop token; on_token(row, token) as each comes."""
        if len(prompts) != self.batch or len({len(p) for p in prompts}) != 1:
            raise RungError(f"the batch takes {self.batch} prompts of one length (no padding yet), got lengths {[len(p) for p in prompts]}")
        for prompt in prompts:
            self._check(prompt, max_new_tokens)
        self._program(len(prompts[0])), self._program(1)  # exported (and compiled) before the clock starts
        rng = self._rng(seed)
        t0 = time.perf_counter()
        rows = [[sampling.pick(row, rng)] for row in self.logits([list(p) for p in prompts], 0)]
        for i, row in enumerate(rows):
            on_token(i, row[0])
        t1 = time.perf_counter()
        done = lambda row: len(row) >= max_new_tokens or row[-1] in stop  # noqa: E731
        while not all(map(done, rows)):
            logits = self.logits([row[-1:] for row in rows], len(prompts[0]) + max(map(len, rows)) - 1)
            for i, (row, next_logits) in enumerate(zip(rows, logits)):
                token = sampling.pick(next_logits, rng)  # (drawn for every row, so a row's draws do not depend on the others' ends)
                if not done(row):
                    row.append(token)
                    on_token(i, token)
        elapsed = time.perf_counter() - t1
        return [Generated(row, len(prompts[0]), t1 - t0, elapsed, stopped=row[-1] in stop) for row in rows]

    def speculate(self, prompt: list[int], max_new_tokens: int, draft: "Generator", k: int = 4, stop: tuple[int, ...] = (),
                  on_token=lambda token: None, sampling: Sampling = Sampling(), seed: int = 0) -> Generated:
        """Generation in gpt-fast's speculative manner: `draft` (a smaller model, or a lower-bit copy of this one)
        proposes k tokens one at a time, this model checks them in one step over k + 1 positions, and keeps the draft's
        tokens up to the first it would not have picked, then its own: greedy, the tokens of generate's greedy run, in
        fewer steps of this model. With `sampling` at a temperature, a drafted token is kept with probability
        min(1, p / q) (p the model's probability of it, q the draft's), a rejected one replaced by a draw from
        max(0, p - q) normalized (speculative_pick): the tokens follow the model's own distribution. Generated.accepted
        / proposed is the draft's acceptance."""
        if k < 1:
            raise RungError(f"the draft proposes k >= 1 tokens at a time, got {k}")
        if draft.vocab != self.vocab:
            raise RungError(f"the draft's vocabulary ({draft.vocab} tokens) is not the model's ({self.vocab})")
        self._check(prompt, max_new_tokens, k)
        draft._check(prompt, max_new_tokens, k)
        for generator, steps in ((self, [(len(prompt), False), (k + 1, True)]), (draft, [(len(prompt), False), (1, False), (2, False)])):
            for tokens, every_logit in steps:  # exported (and compiled) before the clock starts
                generator._program(tokens, every_logit)
        rng = np.random.default_rng(seed)
        draw = lambda p: _draw(p, rng)  # noqa: E731
        t0 = time.perf_counter()
        tokens = [draw(sampling.probabilities(self.logits(prompt, 0)))]
        draft.logits(prompt, 0)  # the draft's prefill too, so that decoding steps only catch it up on a token or two
        on_token(tokens[-1])
        t1 = time.perf_counter()
        # the model's cache holds every position but the last token's; the draft's its first `known`
        known, accepted, proposed = len(prompt), 0, 0
        while len(tokens) < max_new_tokens and tokens[-1] not in stop:
            context = prompt + tokens
            start = len(context) - 1  # the last token's position, where the check starts
            q = [sampling.probabilities(draft.logits(context[known:], known))]  # the draft catches up on what it has not seen
            guesses = [draw(q[0])]
            for i in range(1, k):
                q.append(sampling.probabilities(draft.logits(guesses[-1:], start + i)))
                guesses.append(draw(q[-1]))
            p = [sampling.probabilities(row) for row in self.logits([context[-1], *guesses], start, every_logit=True)]
            n, picks = speculative_pick(p, q, guesses, rng)
            accepted, proposed = accepted + n, proposed + k
            known = start + 1 + min(n, k - 1)  # the draft saw its guesses up to the (k - 1)-th: right up to the last one kept
            for token in [*guesses[:n], picks[n]]:
                if len(tokens) < max_new_tokens and tokens[-1] not in stop:
                    tokens.append(token)
                    on_token(token)
        return Generated(tokens, len(prompt), t1 - t0, time.perf_counter() - t1, stopped=tokens[-1] in stop,
                         accepted=accepted, proposed=proposed)


def speculative_pick(p: list, q: list, guesses: list[int], rng) -> tuple[int, list[int]]:
    """Speculative sampling's check of k drafted tokens: p [k + 1 rows of the vocabulary] the model's distributions at
    each drafted position and the one after, q [k] the draft's that `guesses` were drawn from. Returns (n, picks): the
    first n guesses are kept, and picks[n] follows them (a draw from max(0, p - q) normalized where guess n was
    rejected, else from p's last row). Greedy distributions (one-hot) keep a guess exactly when it is the model's
    argmax, and pick the model's argmax."""
    for i, (guess, pi, qi) in enumerate(zip(guesses, p, q)):
        if rng.random() * qi[guess] >= pi[guess]:  # kept with probability min(1, p / q)
            rest = np.maximum(pi - qi, 0.0)
            return i, [*guesses[:i], _draw(rest if rest.sum() > 0 else pi, rng)]
    return len(guesses), [*guesses, _draw(p[-1], rng)]


def _draw(weights: np.ndarray, rng) -> int:
    """A token drawn with probability proportional to `weights` (non-negative, over the vocabulary), reading only the
    nonzero ones: a greedy or nucleus distribution has a few, and rng.choice over a whole vocabulary costs a
    speculative step some 0.4 ms."""
    tokens = np.flatnonzero(weights)
    cumulative = np.cumsum(weights[tokens])
    return int(tokens[min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(tokens) - 1)])
