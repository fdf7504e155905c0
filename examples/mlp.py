"""A plain nn.Sequential MLP."""

import torch
from torch import nn


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10), nn.Softmax(dim=-1))


def example_inputs() -> tuple:
    return (torch.randn(4, 64),)
