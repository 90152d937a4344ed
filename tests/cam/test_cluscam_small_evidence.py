"""ClusCAM's ``centroids=`` option: the published mean of a cluster's min-max maps (the default), that mean min-max
normalised, or the channels weighted by their activation range, so that a small strong detector merged with weak
channels that peak elsewhere is not diluted."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from monai_cluscam import ClusCAM
from monai_cluscam.clustering import kmeans
from monai_cluscam.metrics import pointing_game
from monai_cluscam.transforms import make_explainer
from monai_cluscam.utils import minmax_normalize

SIZE = 32


class Features(nn.Module):
    """Channel 0 detects a bright spot (``10 * relu(x - 0.8)``: a large activation range, on the spot only);
    channels 1-7 are weak (range about 0.1), all peaking at one place away from the spot."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        bump = torch.exp(-((yy - 24.0) ** 2 + (xx - 24.0) ** 2) / 8.0).to(x)
        weak = [0.1 * (1 + 0.01 * i) * bump * x.mean((1, 2, 3)).view(-1, 1, 1) for i in range(7)]
        return torch.cat([10 * torch.relu(x - 0.8), torch.stack(weak, 1)], 1)


class SpotModel(nn.Module):
    """Class 1's logit is the detector's peak: the spot is the only evidence."""

    def __init__(self) -> None:
        super().__init__()
        self.features = Features()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        evidence = f[:, 0].flatten(1).amax(1) * self.scale
        return torch.stack([-evidence, evidence], 1)


def spot_image() -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    spot = ((yy - 8) ** 2 + (xx - 8) ** 2 <= 4)[None, None]
    return torch.where(spot, 1.0, 0.5), spot


def test_a_strong_detector_merged_with_weak_channels_is_found_only_with_weighted_centroids():
    x, spot = spot_image()
    maps = {}
    for centroids in ("mean", "normalized", "weighted"):
        cam = ClusCAM(SpotModel(), "features", num_clusters=1, drop_ratio=0.0, centroids=centroids)
        maps[centroids] = cam(x, class_idx=1)
        # one cluster holds all eight channels
        assert cam.explanation_.channel_labels.unique().tolist() == [0]
    # the mean of the eight min-max maps is 1/8 on the spot and 7/8 where the weak channels peak
    assert not bool(pointing_game(maps["mean"], spot)) and not bool(pointing_game(maps["normalized"], spot))
    assert bool(pointing_game(maps["weighted"], spot))


def test_weighted_is_the_default_and_every_option_keeps_the_published_clusters(resnet2d):
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    parts = {}
    for centroids in (None, "mean", "normalized", "weighted"):
        cam = ClusCAM(resnet2d, "layer3", num_clusters=4) if centroids is None else ClusCAM(
            resnet2d, "layer3", num_clusters=4, centroids=centroids)
        out = cam(x)
        parts[centroids] = (out, cam.explanation_, cam.state_.activations)
    default, mean = parts[None], parts["weighted"]
    assert torch.equal(default[0], mean[0]) and torch.equal(default[1].cluster_maps, mean[1].cluster_maps)
    mean = parts["mean"]
    acts = mean[2]
    channels = minmax_normalize(acts, start_dim=2)[0].flatten(2)
    published = kmeans(channels, 4, seed=0)
    assert torch.equal(mean[1].cluster_maps.flatten(2), published.centroids)
    for name in ("normalized", "weighted"):  # the clusters are the published ones
        assert torch.equal(parts[name][1].channel_labels, published.labels)
    normalized = parts["normalized"][1].cluster_maps.flatten(2)
    assert torch.allclose(normalized, minmax_normalize(published.centroids, start_dim=2)[0])
    # weighted: each channel's min-max map times its activation range, summed per cluster, divided by the ranges
    flat = acts.flatten(2)
    span = flat.amax(2) - flat.amin(2)
    for b in range(2):
        for k in range(4):
            members = published.labels[b] == k
            expected = (channels[b, members] * span[b, members, None]).sum(0) / span[b, members].sum()
            expected = minmax_normalize(expected[None], start_dim=1)[0][0]
            assert torch.allclose(parts["weighted"][1].cluster_maps[b, k].flatten(), expected, atol=1e-6)
    for name in ("normalized", "weighted"):
        peaks = parts[name][1].cluster_maps.flatten(2).amax(2)
        assert torch.allclose(peaks, torch.ones_like(peaks))


def test_a_cluster_of_flat_channels_keeps_its_mean():
    # a layer whose channels are all constant: no range to weigh by, the centroid stays the (flat) mean
    cam = ClusCAM(nn.Sequential(nn.Conv2d(1, 2, 1)), "0", num_clusters=1, centroids="weighted")
    acts = torch.ones(1, 3, 4, 4)
    centroids, labels = cam.cluster(acts, (4, 4))
    assert torch.equal(centroids, torch.ones(1, 1, 4, 4)) and labels.tolist() == [[0, 0, 0]]


def test_the_option_goes_through_make_explainer_and_bad_values_are_refused(resnet2d):
    cam = make_explainer(resnet2d, "cluscam", "layer4", centroids="mean")
    assert cam.centroids == "mean" and ClusCAM(resnet2d, "layer4").centroids == "weighted"
    with pytest.raises(ValueError, match=r"centroids must be one of \('mean', 'normalized', 'weighted'\)"):
        ClusCAM(resnet2d, "layer4", centroids="medoid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = cam(torch.rand(1, 1, 32, 32))
    assert out.shape == (1, 1, 32, 32) and float(out.max()) == 1.0
