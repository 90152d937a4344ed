"""Map readability: detail (correlation length) and the share of a map on the empty background."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_cluscam.metrics.readability import (
    background_mask,
    background_share,
    correlation_length,
    peak_on_background,
)


def test_correlation_length_grows_with_the_grid_a_map_is_upsampled_from():
    g = torch.Generator().manual_seed(0)
    lengths = []
    for grid in (32, 16, 4):
        coarse = torch.rand(8, 1, grid, grid, generator=g)
        lengths.append(float(correlation_length(F.interpolate(coarse, size=128, mode="bilinear")).median()))
    assert lengths[0] < lengths[1] < lengths[2]
    assert lengths[0] <= 4 and 6 <= lengths[1] <= 12 and lengths[2] >= 15


def test_correlation_length_in_3d_and_of_a_flat_map():
    blob = torch.zeros(1, 1, 32, 32, 32)
    blob[..., 12:20, 12:20, 12:20] = 1.0
    flat = torch.ones(1, 1, 32, 32, 32)
    out = correlation_length(torch.cat([blob, flat]))
    assert 2 <= float(out[0]) <= 6 and math.isnan(float(out[1]))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        correlation_length(torch.rand(2, 3, 8, 8))


def slice_with_corner_text():
    image = torch.zeros(1, 1, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    image[0, 0][(yy - 32) ** 2 + (xx - 32) ** 2 < 20**2] = 0.6
    return image


def test_background_is_the_black_far_from_the_subject():
    image = slice_with_corner_text()
    bg = background_mask(image)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    dist = ((yy - 32) ** 2 + (xx - 32) ** 2).sqrt()
    assert bool(bg[0, 0][dist > 26].all()) and not bool(bg[0, 0][dist < 23].any())
    uniform = torch.ones(1, 1, 64, 64)
    assert float(background_share(uniform, image)) == pytest.approx(float(bg.float().mean()))


def test_share_and_peak_on_background():
    image = slice_with_corner_text().expand(3, -1, -1, -1)
    maps = torch.zeros(3, 1, 64, 64)
    maps[0, 0, 30:34, 30:34] = 1.0  # on the subject
    maps[1, 0, 0:8, 0:8] = 1.0  # in the corner
    maps[1, 0, 32, 32] = 0.5
    share = background_share(maps, image)
    assert float(share[0]) == 0.0 and float(share[1]) > 0.95 and math.isnan(float(share[2]))
    peak = peak_on_background(maps, image)
    assert peak[:2].tolist() == [0.0, 1.0] and math.isnan(float(peak[2]))
