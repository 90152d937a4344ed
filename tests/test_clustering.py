"""The seeded, batched k-means++."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from monai_cluscam.clustering import kmeans


@pytest.mark.parametrize("seed", [0, 3])
def test_matches_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(1, 200, 30, generator=g)
    ours = kmeans(pts, 6, seed=seed).centroids[0].numpy()
    ref = KMeans(6, init="k-means++", random_state=seed).fit(pts[0].numpy()).cluster_centers_
    assert np.allclose(np.sort(ours, axis=0), np.sort(ref, axis=0), atol=1e-4)


def test_batch_equals_singles_and_seed_matters():
    pts = torch.rand(3, 100, 8, generator=torch.Generator().manual_seed(0))
    batch = kmeans(pts, 5, seed=1)
    for i in range(3):
        single = kmeans(pts[i : i + 1], 5, seed=1)
        assert torch.allclose(batch.centroids[i], single.centroids[0], atol=1e-6)
        assert torch.equal(batch.labels[i], single.labels[0])


def test_separated_groups_are_found():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    noise = 0.1 * torch.randn(60, 2, generator=torch.Generator().manual_seed(0))
    pts = (centres.repeat_interleave(20, 0) + noise)[None]
    res = kmeans(pts, 3)
    labels = res.labels[0].view(3, 20)
    assert all(len(set(row.tolist())) == 1 for row in labels)
    assert len(set(labels[:, 0].tolist())) == 3


def test_degenerate_points_give_finite_centres():
    pts = torch.cat([torch.zeros(1, 8, 4), torch.ones(1, 2, 4)], dim=1)
    res = kmeans(pts, 5)
    assert torch.isfinite(res.centroids).all()
    assert res.labels.shape == (1, 10)


def test_k_equals_n_and_bad_arguments():
    pts = torch.rand(1, 4, 3)
    res = kmeans(pts, 4)
    assert torch.allclose(res.centroids[0].sort(0).values, pts[0].sort(0).values)
    with pytest.raises(ValueError, match="between 1 and the number of points"):
        kmeans(pts, 5)
    with pytest.raises(ValueError, match=r"\(B, N, F\)"):
        kmeans(pts[0], 2)
