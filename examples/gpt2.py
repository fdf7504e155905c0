"""A small GPT-2 from transformers' GPT2Config (random init, nothing downloaded)."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def model():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def example_inputs() -> tuple:
    return (torch.randint(0, 256, (1, 16)),)
