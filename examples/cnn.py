"""A small CNN: conv2d, batch norm, ReLU, max and average pooling, a linear head."""

import torch
from torch import nn


def model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, stride=1, padding=1, groups=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    for norm in (net[1], net[5]):  # statistics as training leaves them, so that folding them changes the weights
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.2, 0.2)
    return net.eval()


def example_inputs() -> tuple:
    return (torch.randn(2, 3, 16, 16),)
