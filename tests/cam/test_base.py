"""The shared mechanisms: masked forward passes, token grids, blurring, normalisation."""

from __future__ import annotations

import pytest
import torch

from monai_cluscam.cam.base import blur, masked_forward, minmax_normalize, tokens_to_grid, upsample


def test_masked_forward_equals_direct_computation(resnet2d):
    x = torch.rand(2, 1, 32, 32)
    masks = torch.rand(2, 3, 4, 4)
    out = masked_forward(resnet2d, x, masks, batch_size=4)
    with torch.no_grad():
        for b in range(2):
            for k in range(3):
                m = upsample(masks[b : b + 1, k : k + 1], (32, 32))
                assert torch.allclose(out[b, k], resnet2d(x[b : b + 1] * m)[0], atol=1e-5)


def test_masked_forward_baseline_blend(resnet2d):
    x = torch.rand(1, 1, 32, 32)
    baseline = torch.full_like(x, 0.5)
    masks = torch.rand(1, 2, 32, 32)
    out = masked_forward(resnet2d, x, masks, baseline=baseline, batch_size=1)
    with torch.no_grad():
        expected = resnet2d(x * masks[0, 1] + 0.5 * (1 - masks[0, 1]))
    assert torch.allclose(out[0, 1], expected[0], atol=1e-5)


def test_masked_forward_with_provider(resnet2d):
    x = torch.rand(2, 1, 16, 16)
    calls = []

    def provider(s_idx, m_idx):
        calls.append((s_idx.tolist(), m_idx.tolist()))
        return (m_idx.float() / 4).view(-1, 1, 1, 1).expand(-1, 1, 16, 16)

    out = masked_forward(resnet2d, x, provider, num_masks=3, batch_size=4)
    assert out.shape == (2, 3, 4)
    assert calls == [([0, 0, 0, 1], [0, 1, 2, 0]), ([1, 1], [1, 2])]
    with pytest.raises(ValueError, match="num_masks is required"):
        masked_forward(resnet2d, x, provider)


def test_tokens_to_grid_drops_leading_tokens_3d():
    tokens = torch.arange(2 * (2 + 27) * 5, dtype=torch.float32).view(2, 29, 5)
    grid = tokens_to_grid(tokens, (24, 24, 24))
    assert grid.shape == (2, 5, 3, 3, 3)
    assert torch.equal(grid[:, :, 0, 0, 0], tokens[:, 2])  # the first patch token, after 2 extra tokens


def test_minmax_leaves_constant_maps():
    t = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])[None]
    out, constant = minmax_normalize(t, start_dim=2)
    assert torch.equal(out[0, 0], t[0, 0]) and constant.tolist() == [[True, False]]
    assert out[0, 1].min() == 0 and out[0, 1].max() == 1


@pytest.mark.parametrize("size", [(20, 20), (12, 10, 8)])
def test_blur_keeps_constants_and_smooths(size):
    assert torch.allclose(blur(torch.full((1, 2, *size), 2.0), 1.5), torch.full((1, 2, *size), 2.0))
    spike = torch.zeros(1, 1, *size)
    spike[(0, 0, *[s // 2 for s in size])] = 1.0
    out = blur(spike, 1.0)
    assert out.shape == spike.shape
    assert out.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert out.max() < 0.5
