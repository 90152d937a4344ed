"""Explaining from several layers (one forward pass, the geometric mean of the per-layer maps) and the rule that
a voxel masking cannot change gets no attribution."""

from __future__ import annotations

import pytest
import torch

from monai_cluscam import ClusCAM, GradCAM, ScoreCAM
from monai_cluscam.cam import RISE, Occlusion
from monai_cluscam.utils import minmax_normalize


def brain_like(b: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """A bright disc with texture on an exactly black background, like a skull-stripped slice."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2).float()
    return disc * (0.3 + 0.7 * torch.rand(b, 1, size, size, generator=g))


@pytest.mark.parametrize("method", [ClusCAM, ScoreCAM])
def test_black_background_gets_no_attribution_unless_asked(resnet2d, method):
    x = brain_like()
    background = x == 0
    ruled = method(resnet2d, "layer4")(x)
    published = method(resnet2d, "layer4", zero_unmaskable=False)(x)
    assert float(ruled[background].abs().max()) == 0.0
    assert float(published[background].mean()) > 0.05  # upsampled heat on pixels no mask can change
    # inside the subject each ruled map is the published one rescaled
    for a, b, inside in zip(ruled, published, ~background, strict=True):
        assert float(torch.corrcoef(torch.stack([a[inside], b[inside]]))[0, 1]) > 0.9999


def test_unmaskable_follows_each_methods_baseline(resnet2d):
    x = brain_like(1)
    assert torch.equal(ClusCAM(resnet2d, "layer4").unmaskable(x), x == 0)
    # with the blurred input as baseline, the black far from the subject equals its blur; next to it, it does not
    blurred = ClusCAM(resnet2d, "layer4", baseline="blur").unmaskable(x)
    assert bool(blurred[..., 0, 0]) and not bool(blurred[..., 16, 4])
    # tissue is never unmaskable, even where it equals its blur or the mean; the mean baseline changes the black
    assert not bool((blurred & (x > 0)).any())
    assert not bool(ClusCAM(resnet2d, "layer4", baseline="mean").unmaskable(x).any())
    assert Occlusion(resnet2d, mode="mean_patch").unmaskable(x) is None
    assert torch.equal(Occlusion(resnet2d, mode=0.0).unmaskable(x), x == 0)
    assert RISE(resnet2d).zero_unmaskable is None and RISE(resnet2d).perturbs_input
    # a gradient method scores no masked copy: the rule is off by default, on when asked
    assert float(GradCAM(resnet2d, "layer4")(x)[x == 0].max()) > 0
    assert float(GradCAM(resnet2d, "layer4", zero_unmaskable=True)(x)[x == 0].max()) == 0


def test_bad_switch_is_refused(resnet2d):
    with pytest.raises(ValueError, match="zero_unmaskable must be True, False or None"):
        ClusCAM(resnet2d, "layer4", zero_unmaskable="yes")


@pytest.mark.parametrize("method", [ClusCAM, GradCAM])
def test_several_layers_are_the_geometric_mean_of_their_maps(resnet2d, method):
    x = brain_like()
    layers = ["layer2", "layer3", "layer4"]
    fused = method(resnet2d, layers, zero_unmaskable=False)(x)
    singles = torch.stack([method(resnet2d, layer, zero_unmaskable=False)(x) for layer in layers])
    expected = minmax_normalize(singles.prod(0) ** (1 / 3))[0]
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-5)


def test_several_layers_share_one_forward_pass_and_keep_their_parts(resnet2d):
    seen = []
    handle = resnet2d.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    cam = ClusCAM(resnet2d, ["layer3", "layer4"], num_clusters=4, batch_size=8)
    try:
        out = cam(brain_like())
    finally:
        handle.remove()
    # one unmasked pass per sample, then 2 samples x 2 layers x 4 clusters masked copies, in chunks of 8
    assert seen == [1, 1, 8, 8]
    assert [s.layer_name for s in cam.states_] == ["layer3", "layer4"] and cam.state_ is cam.states_[0]
    assert [e.cluster_maps.shape[-1] for e in cam.explanations_] == [4, 2]  # each layer's own grid
    assert out.shape == (2, 1, 32, 32)


def test_scoring_by_log_probability_ignores_a_shift_of_every_logit(resnet2d):
    x = brain_like(1)
    cam = ClusCAM(resnet2d, "layer4", num_clusters=4, scoring="log_probability")
    cam(x)
    diffs = cam.explanation_.score_diffs
    with torch.no_grad():
        masks = cam.explanation_.cluster_maps_at_input()
        c = int(cam.explanation_.class_idx)
        logp = lambda t: resnet2d(t).log_softmax(1)[:, c]  # noqa: E731
        manual = torch.cat([logp(x * masks[:, k : k + 1]) for k in range(4)]) - logp(x)
    torch.testing.assert_close(diffs[0], manual, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match=r"scoring must be one of \('logit', 'log_probability'\)"):
        ClusCAM(resnet2d, "layer4", scoring="margin")
