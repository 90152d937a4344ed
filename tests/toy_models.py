"""Toy models and images whose right explanation is known, shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


class RegionClassifier(nn.Module):
    """A classifier whose class-1 evidence is the brightness of one known region.

    ``features`` has one channel per cell of a coarse grid: the pooled input times a smooth bump
    centred on that cell, so its channel maps differ in where they are active. The class-1 logit sums
    the channels whose bump lies in the evidence region (the low half of every spatial axis: the
    top-left quadrant in 2D), class 0 is its negative. Masking that region away lowers the class-1
    logit; masking elsewhere barely changes it.
    """

    def __init__(self, spatial_dims: int = 2, grid: int = 4, pool: int = 4) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        pool_cls = nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d
        self.pool = pool_cls(pool)
        self.features = nn.Identity()
        self.grid = grid
        self.scale = nn.Parameter(torch.ones(1))
        self._cells = list(torch.cartesian_prod(*[torch.arange(grid)] * spatial_dims).view(-1, spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pool(x).mean(1, keepdim=True)  # (B, 1, *s)
        s = p.shape[2:]
        coords = torch.meshgrid(*[torch.linspace(0, self.grid - 1, n, device=x.device) for n in s], indexing="ij")
        bumps = []
        for cell in self._cells:
            d2 = sum((c - float(v)) ** 2 for c, v in zip(coords, cell, strict=True))
            bumps.append(torch.exp(-d2 / 0.5))
        feats = self.features(p * torch.stack(bumps)[None])  # (B, C, *s)
        in_region = torch.tensor([bool((cell < self.grid // 2).all()) for cell in self._cells], device=x.device)
        evidence = feats[:, in_region].flatten(1).mean(1) * 40 * self.scale
        return torch.stack([-evidence, evidence], dim=1)


def blob_image(size: tuple[int, ...], centre: tuple[float, ...], radius: float = 0.25, seed: int = 0) -> torch.Tensor:
    """``(1, 1, *size)``: faint noise plus a bright ball at ``centre`` (fractions of each axis)."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.linspace(0, 1, n) for n in size], indexing="ij")
    d2 = sum((a - c) ** 2 for a, c in zip(axes, centre, strict=True))
    img = (d2 < radius**2).float() + 0.1 * torch.rand(size, generator=g)
    return img[None, None]
