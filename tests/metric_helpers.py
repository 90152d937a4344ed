"""Tiny classifiers whose class probabilities are known in closed form, for the metric tests."""

from __future__ import annotations

import torch
from torch import nn


class RegionMeanClassifier(nn.Module):
    """Two classes with logits ``(0, gain * mean(x over region) + bias)``.

    So ``P(class 1) = sigmoid(gain * mean + bias)`` and ``P(class 0) = 1 - P(class 1)``: the class-1 evidence is the
    mean intensity of a known region, everything outside it is ignored.
    """

    def __init__(self, region: torch.Tensor, gain: float = 4.0, bias: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.gain = gain
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.region.expand_as(x[:1])
        mean = (x * r).flatten(1).sum(1) / r.sum()
        z = self.gain * mean + self.bias
        return torch.stack([torch.zeros_like(z), z], dim=1)


def corner_region(spatial: tuple[int, ...]) -> torch.Tensor:
    """``(1, 1, *spatial)`` mask of the low half of every axis (the top-left quadrant in 2D)."""
    region = torch.zeros(1, 1, *spatial)
    region[(slice(None), slice(None), *[slice(0, s // 2) for s in spatial])] = 1
    return region
