"""Options of the shared pipeline: the masked input's baseline (ClusCAM's ``baseline=``) and restricting a map to
the foreground (``cam(x, foreground=mask)``, any method)."""

from __future__ import annotations

import pytest
import torch

from monai_cluscam import ClusCAM, GradCAM, ScoreCAM
from monai_cluscam.cam.base import BASELINES, input_baseline
from monai_cluscam.utils import blur, class_scores, masked_forward


@pytest.mark.parametrize("baseline", ["blur", "mean"])
def test_baseline_is_what_masked_out_voxels_become(resnet2d, baseline):
    torch.manual_seed(0)
    x = torch.rand(2, 1, 48, 48)
    cam = ClusCAM(resnet2d, "layer4", num_clusters=5, baseline=baseline)
    cam(x)
    exp = cam.explanation_
    fill = blur(x, 48 / 20) if baseline == "blur" else x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    with torch.no_grad():
        outputs = masked_forward(resnet2d.eval(), x, exp.cluster_maps, baseline=fill)
    expected = class_scores(outputs, exp.class_idx) - exp.base_scores[:, None]
    assert torch.allclose(exp.score_diffs, expected, atol=1e-5)
    zero = ClusCAM(resnet2d, "layer4", num_clusters=5)
    zero(x)
    # the same clusters, other scores: the baseline reached the masked copies
    assert torch.equal(zero.explanation_.cluster_maps, exp.cluster_maps)
    assert (zero.explanation_.score_diffs - exp.score_diffs).abs().max() > 1e-3


def test_input_baseline_values():
    x = torch.arange(8.0).view(1, 2, 2, 2)
    assert input_baseline(x, "zero") is None
    assert input_baseline(x, "mean")[0, 1].unique().tolist() == [5.5]
    assert torch.allclose(input_baseline(torch.full((1, 1, 9, 9), 3.0), "blur"), torch.full((1, 1, 9, 9), 3.0))


def test_unknown_baseline_names_the_choices(resnet2d):
    with pytest.raises(ValueError, match=r"baseline must be one of \('zero', 'blur', 'mean'\); got 'noise'"):
        ClusCAM(resnet2d, "layer4", baseline="noise")
    with pytest.raises(ValueError, match="unknown baseline 'noise'"):
        input_baseline(torch.zeros(1, 1, 4, 4), "noise")
    assert BASELINES == ("zero", "blur", "mean")


@pytest.mark.parametrize("method", [GradCAM, ScoreCAM, ClusCAM])
def test_foreground_keeps_the_map_inside_the_mask(resnet2d, method):
    torch.manual_seed(1)
    x = torch.rand(2, 1, 32, 32)
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    mask[0, :, 4:20, 6:28] = True
    mask[1, :, 10:30, 2:16] = True
    cam = method(resnet2d, "layer4")
    free = cam(x)
    inside = cam(x, foreground=mask)
    assert torch.equal(inside[~mask], torch.zeros(int((~mask).sum())))
    for b in range(2):
        # inside the mask the restricted map is the free map rescaled: an exact affine function of it
        m, r = free[b][mask[b]].double(), inside[b][mask[b]].double()
        assert r.max() == 1.0 and torch.corrcoef(torch.stack([m, r]))[0, 1] > 1 - 1e-9


def test_one_foreground_for_the_whole_batch(resnet2d):
    x = torch.rand(3, 1, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0
    out = GradCAM(resnet2d, "layer4")(x, foreground=mask)
    assert out[:, :, :8].abs().sum() == 0 and out.flatten(1).amax(1).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "shape", [(2, 1, 16, 16), (3, 1, 32, 32), (2, 2, 32, 32), (1, 32, 32)], ids=["grid", "batch", "channels", "ndim"]
)
def test_foreground_of_the_wrong_shape_is_refused(resnet2d, shape):
    with pytest.raises(ValueError, match=r"foreground has shape .*expected \(2 or 1, 1, \*\(32, 32\)\)"):
        ClusCAM(resnet2d, "layer4", num_clusters=3)(torch.rand(2, 1, 32, 32), foreground=torch.ones(shape))


def test_unknown_score_kind_of_a_method_is_refused(resnet2d):
    class Typo(ScoreCAM):
        score_kind = "prob"

    with pytest.raises(ValueError, match=r"Typo.score_kind is 'prob'; choose one of \('probability', 'logit_change'"):
        Typo(resnet2d, "layer4")(torch.rand(1, 1, 32, 32))


def test_foreground_made_from_the_input(resnet2d):
    x = torch.zeros(2, 1, 32, 32)
    x[0, :, 4:28, 6:26] = torch.rand(24, 20) * 0.5 + 0.2
    x[1, :, 8:30, 2:20] = torch.rand(22, 18) * 0.5 + 0.2
    x[0, :, 12:16, 12:16] = 0.0  # a dark hole inside the subject stays subject
    cam = GradCAM(resnet2d, "layer4")
    auto = cam(x, foreground=True)
    subject = x > 0.04
    subject[0, :, 12:16, 12:16] = True
    assert torch.equal(auto, cam(x, foreground=subject))
    assert auto[~subject].abs().sum() == 0 and auto[0, :, 12:16, 12:16].abs().sum() > 0
    # a grey value sets the threshold: above every voxel, nothing is subject and the map is blank
    with pytest.warns(UserWarning, match="no voxel may hold attribution"):
        assert cam(x, foreground=0.9).abs().sum() == 0
    assert torch.equal(cam(x, foreground=False), cam(x))


def test_foreground_that_is_not_a_mask_or_a_grey_value_is_refused(resnet2d):
    cam = GradCAM(resnet2d, "layer4")
    for bad in (float("nan"), "brain", "false"):
        with pytest.raises(ValueError, match=f"foreground must be True, False, a finite grey value or a mask tensor; "
                                             f"got {bad!r}"):
            cam(torch.rand(1, 1, 32, 32), foreground=bad)
