"""Sanity checks (monai_cluscam.metrics.sanity): model-dependent methods pass, model-independent ones fail, the
caller's model is untouched, 2D and 3D, and bad input gets a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from toy_models import blob_image

from monai_cluscam.metrics import (
    SanityCheckResult,
    cascade_layers,
    cascading_randomization,
    compare_models,
    plot_sanity_checks,
    spearman_correlation,
    structural_similarity,
)
from monai_cluscam.metrics.sanity import DEFAULT_THRESHOLD


class EvidenceNet(nn.Module):
    """A CNN trained by construction: ``conv1`` passes the input through on channel 0 (three more channels are
    seeded random filters), ``features`` (the explained layer) is the identity, and ``fc`` scores class 1 by the
    mean of channel 0 (class 0 by its negative). Grad-CAM of class 1 is then the input's intensity; randomising
    any layer breaks that."""

    def __init__(self, spatial_dims: int = 2, evidence_channel: int = 0) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv1 = conv(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.features = conv(4, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(4, 2)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.randn(self.conv1.weight.shape, generator=g) * 0.3)
            self.conv1.weight[0] = 0
            self.conv1.weight[(0, 0, *[1] * spatial_dims)] = 1.0
            self.conv1.bias.zero_()
            self.features.weight.copy_(torch.eye(4).view(4, 4, *[1] * spatial_dims))
            self.features.bias.zero_()
            self.fc.weight.zero_()
            self.fc.weight[1, evidence_channel], self.fc.weight[0, evidence_channel] = 5.0, -5.0
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(self.act(self.conv1(x)))).flatten(1))


def intensity(model: nn.Module):
    """An 'explainer' that ignores the model: the input itself."""
    return lambda x, class_idx=None: x


def edges(model: nn.Module):
    """An edge detector, also blind to the model."""
    return lambda x, class_idx=None: torch.stack(torch.gradient(x[:, 0], dim=tuple(range(1, x.ndim - 1)))).norm(
        dim=0)[:, None]


def blobs(spatial_dims: int, n: int = 3) -> torch.Tensor:
    size = (24, 24) if spatial_dims == 2 else (12, 12, 12)
    centres = [(0.3, 0.3), (0.7, 0.4), (0.5, 0.7)] if spatial_dims == 2 else [(0.3, 0.3, 0.5), (0.7, 0.4, 0.3),
                                                                               (0.5, 0.7, 0.6)]
    return torch.cat([blob_image(size, c, radius=0.2, seed=i) for i, c in enumerate(centres[:n])])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradcam_depends_on_the_model(spatial_dims):
    net, x = EvidenceNet(spatial_dims).eval(), blobs(spatial_dims)
    result = cascading_randomization(net, x, "gradcam", "features", class_idx=1)
    assert isinstance(result, SanityCheckResult) and result.check == "cascading" and result.method == "Grad-CAM"
    assert result.steps == ["fc", "features", "conv1"]
    assert result.spearman.shape == result.ssim.shape == result.flat.shape == (3, 3)
    assert result.maps.shape == (3, *result.original_maps.shape) and result.original_maps.shape == x.shape
    # by construction the trained model's map is the input's intensity
    assert bool((spearman_correlation(result.original_maps, x) > 0.99).all())
    assert float(result.spearman[-1].mean()) < DEFAULT_THRESHOLD and result.passed
    assert float(result.spearman[0].mean()) < 0.5  # Grad-CAM's channel weights come from fc: its re-draw suffices
    summary = result.summary()
    json.dumps(summary)
    assert summary["passed"] and [s["step"] for s in summary["steps"]] == result.steps
    assert summary["final_spearman"] == pytest.approx(float(result.spearman[-1].double().mean()))


def test_cluscam_depends_on_the_model():
    net, x = EvidenceNet(2).eval(), blobs(2)
    result = cascading_randomization(net, x, "ClusCAM", "features", class_idx=1, num_clusters=2)
    assert result.method == "ClusCAM"
    # with K = 2 and half pruned the map is one cluster map, the same whatever fc scores: the drop comes with the
    # randomised features
    assert float(result.spearman[0].mean()) > float(result.spearman[-1].mean())
    assert result.passed


def test_the_zeroed_background_is_not_counted_as_agreement():
    # ClusCAM gives the empty background no attribution whatever the model: over the whole image every pair of
    # maps agrees there, so the whole-image rank correlation rises with the background's share
    net, x = EvidenceNet(2).eval(), blobs(2)
    maskable = cascading_randomization(net, x, "ClusCAM", "features", class_idx=1, num_clusters=2)
    image = cascading_randomization(net, x, "ClusCAM", "features", class_idx=1, num_clusters=2, region="image")
    assert float(image.spearman[-1].mean()) > float(maskable.spearman[-1].mean()) + 0.1
    torch.testing.assert_close(maskable.original_maps, image.original_maps)
    with pytest.raises(ValueError, match="region must be one of"):
        compare_models(net, net, x, "gradcam", "features", region="brain")


def test_masked_measures_compare_only_the_masked_voxels():
    g = torch.Generator().manual_seed(0)
    a, noise = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[:, :, :8] = True
    b = torch.where(mask, a, noise)  # equal on the mask, unrelated off it
    expected = [spearmanr(a[i][mask[i]], b[i][mask[i]]).statistic for i in range(2)]
    np.testing.assert_allclose(spearman_correlation(a, b, mask).numpy(), expected, atol=1e-6)
    assert bool((spearman_correlation(a, b) < 0.9).all())
    # SSIM over the windows centred in the mask's inner rows: they see only equal voxels
    inner = torch.zeros_like(mask)
    inner[:, :, 3:5, 3:13] = True
    torch.testing.assert_close(structural_similarity(a, b, mask=inner), structural_similarity(a, a), atol=0.05,
                               rtol=0)
    assert bool((structural_similarity(a, b) < 0.8).all())
    # an empty mask falls back to the whole image; a mask of the wrong shape is refused
    empty = torch.zeros_like(mask)
    torch.testing.assert_close(spearman_correlation(a, b, empty), spearman_correlation(a, b))
    torch.testing.assert_close(structural_similarity(a, b, mask=empty), structural_similarity(a, b))
    with pytest.raises(ValueError, match="does not fit"):
        spearman_correlation(a, b, mask[:, :, :4])


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("explainer", [intensity, edges])
def test_a_model_independent_explainer_fails(spatial_dims, explainer):
    net, x = EvidenceNet(spatial_dims).eval(), blobs(spatial_dims)
    result = cascading_randomization(net, x, explainer)
    assert result.method == explainer.__name__
    torch.testing.assert_close(result.spearman, torch.ones(3, 3))
    torch.testing.assert_close(result.ssim, torch.ones(3, 3))
    assert not result.passed and not result.summary()["passed"]


@pytest.mark.parametrize("cascade", [True, False])
def test_the_callers_model_is_unchanged(cascade):
    net, x = EvidenceNet(2).train(), blobs(2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    cascading_randomization(net, x, "gradcam", "features", cascade=cascade)
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in net.modules()) and all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_seeded_and_independent_steps():
    net, x = EvidenceNet(2).eval(), blobs(2)
    a = cascading_randomization(net, x, "gradcam", "features", seed=3)
    b = cascading_randomization(net, x, "gradcam", "features", seed=3)
    torch.testing.assert_close(a.spearman, b.spearman, rtol=0, atol=0)
    torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=0)
    independent = cascading_randomization(net, x, "gradcam", "features", seed=3, cascade=False)
    assert independent.check == "independent" and independent.steps == a.steps
    torch.testing.assert_close(independent.maps[0], a.maps[0])  # the first step randomises the same layer alike
    # randomising only conv1 keeps fc and the identity features: the map is that of the random filters, and it is
    # not the map of the fully randomised model
    assert not torch.equal(independent.maps[-1], a.maps[-1])


def test_a_cheap_check_for_a_handler():
    net, x = EvidenceNet(2).eval(), blobs(2, n=2)
    result = cascading_randomization(net, x, "gradcam", "features", num_steps=1, keep_maps=False)
    assert result.steps == ["fc"] and result.maps is None and result.spearman.shape == (1, 2)
    result = cascading_randomization(net, x, "gradcam", "features", layers=["features", "fc"])
    assert result.steps == ["features", "fc"]
    result = cascading_randomization(net, x, "gradcam", "features", layers="conv1")
    assert result.steps == ["conv1"]
    with pytest.raises(ValueError, match="plot"):
        cascading_randomization(net, x, "gradcam", "features", num_steps=1, keep_maps=False).plot()


def test_compare_models_shuffled_label_like():
    x = blobs(2)
    net, other = EvidenceNet(2).eval(), EvidenceNet(2, evidence_channel=2).eval()
    same = compare_models(net, net, x, "gradcam", "features", name="itself")
    assert same.check == "models" and same.steps == ["itself"]
    torch.testing.assert_close(same.spearman, torch.ones(1, 3))
    assert not same.passed
    different = compare_models(net, other, x, "gradcam", "features", class_idx=1, name="other evidence")
    assert different.passed and float(different.ssim.mean()) < 0.9
    torch.testing.assert_close(different.class_idx, torch.ones(3, dtype=torch.long))
    blind = compare_models(net, other, x, intensity)
    assert not blind.passed


def test_spearman_correlation_matches_scipy_and_defines_constant_maps():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 1, 8, 8, generator=g).round(decimals=1)  # with ties
    b = a + 0.3 * torch.rand(4, 1, 8, 8, generator=g)
    expected = [spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(4)]
    np.testing.assert_allclose(spearman_correlation(a, b).numpy(), expected, atol=1e-6)
    flat, zero = torch.zeros(1, 1, 8, 8), torch.zeros(1, 4, 4)
    assert spearman_correlation(flat, a[:1]).tolist() == [0.0]
    assert spearman_correlation(zero, zero + 2).tolist() == [1.0]
    with pytest.raises(ValueError, match="shape"):
        spearman_correlation(a, a[:, :, :4])
    with pytest.raises(ValueError, match="NaN"):
        spearman_correlation(a, a.clone().index_fill_(0, torch.tensor([2]), float("nan")))


@pytest.mark.parametrize("shape", [(16, 16), (5, 5), (8, 8, 8)])
def test_structural_similarity(shape):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, *shape, generator=g)
    torch.testing.assert_close(structural_similarity(a, 2 * a + 1), torch.ones(2))
    other = structural_similarity(a, torch.rand(2, 1, *shape, generator=g))
    assert other.shape == (2,) and bool((other < 0.5).all())
    with pytest.raises(ValueError, match="2D or 3D"):
        structural_similarity(torch.rand(2, 1, 4, 4, 4, 4), torch.rand(2, 1, 4, 4, 4, 4))


def test_plots_2d_and_3d(tmp_path):
    for dims in (2, 3):
        x = blobs(dims)
        grad = cascading_randomization(EvidenceNet(dims).eval(), x, "gradcam", "features")
        fig = grad.plot(tmp_path / f"cascade{dims}.png", images=x, samples=(0, 2))
        assert len(fig.axes) == 2 * 5 and (tmp_path / f"cascade{dims}.png").stat().st_size > 1000
    blind = cascading_randomization(EvidenceNet(3).eval(), x, intensity)
    plot_sanity_checks([grad, blind], sample=1, path=tmp_path / "both.png", title="two methods")
    assert (tmp_path / "both.png").stat().st_size > 1000
    shorter = cascading_randomization(EvidenceNet(3).eval(), x, intensity, num_steps=1)
    with pytest.raises(ValueError, match="steps"):
        plot_sanity_checks([grad, shorter])


def test_cascade_layers():
    from monai.networks.nets import resnet10

    net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=2)
    assert cascade_layers(net) == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]
    assert cascade_layers(nn.Sequential(EvidenceNet(2))) == ["0.fc", "0.features", "0.conv1"]
    with pytest.raises(ValueError, match="no sub-module with parameters"):
        cascade_layers(nn.ReLU())


def test_bad_input():
    net, x = EvidenceNet(2).eval(), blobs(2)
    with pytest.raises(ValueError, match=r"'fc2' does not exist.*close matches: 'fc'.*'features'"):
        cascading_randomization(net, x, "gradcam", "features", layers=["fc2"])
    with pytest.raises(ValueError, match="'act' of EvidenceNet has no parameters"):
        cascading_randomization(net, x, "gradcam", "features", layers=["act"])
    with pytest.raises(ValueError, match=r"unknown explanation method 'nocam'.*'cluscam'.*'gradcam'"):
        cascading_randomization(net, x, "nocam", "features")
    with pytest.raises(ValueError, match="unknown explanation method 'nocam'"):
        compare_models(net, net, x, "nocam", "features")
    with pytest.raises(ValueError, match="does not take num_clusterz"):
        cascading_randomization(net, x, "cluscam", "features", num_clusterz=2)
    with pytest.raises(ValueError, match="needs target_layers"):
        cascading_randomization(net, x, "gradcam")
    with pytest.raises(ValueError, match="builds its explainer itself"):
        cascading_randomization(net, x, intensity, "features")
    with pytest.raises(ValueError, match="registered method name or a callable"):
        cascading_randomization(net, x, 3)
    with pytest.raises(ValueError, match="num_steps must be an int from 1 to 3"):
        cascading_randomization(net, x, "gradcam", "features", num_steps=4)
    with pytest.raises(ValueError, match="layers is empty"):
        cascading_randomization(net, x, "gradcam", "features", layers=[])
    with pytest.raises(ValueError, match="float tensor"):
        cascading_randomization(net, x[0], "gradcam", "features")
    with pytest.raises(ValueError, match="float tensor"):
        cascading_randomization(net, (x * 10).long(), "gradcam", "features")
    with pytest.raises(ValueError, match="explainer returned maps of shape"):
        cascading_randomization(net, x, lambda model: (lambda x, class_idx=None: x[:, :, :4]))
