"""A small LLaMA decoder from transformers' LlamaConfig (random init, nothing downloaded)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    return LlamaForCausalLM(config)


def example_inputs() -> tuple:
    return (torch.randint(0, 256, (1, 16)),)
