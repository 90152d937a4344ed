"""Occlusion: MONAI's OcclusionSensitivity turned into a drop-in map (high = occluding it hurts the class)."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.visualize import OcclusionSensitivity
from toy_models import RegionClassifier, blob_image

from monai_cluscam.cam import Occlusion
from monai_cluscam.transforms import make_explainer


def test_occlusion_localises_evidence_not_inverted():
    """MONAI's raw output is low where the region matters; the map must be high there."""
    x = blob_image((64, 64), (0.25, 0.25), seed=0) + blob_image((64, 64), (0.75, 0.75), seed=1)
    sal = Occlusion(RegionClassifier(2).eval())(x, class_idx=1)[0, 0]
    row, col = divmod(int(sal.argmax()), 64)
    assert row < 32 and col < 32
    assert sal[:32, :32].mean() > 5 * sal[32:, 32:].mean()


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_equals_monai_drop_of_the_class_score(resnet2d, score):
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    out = Occlusion(resnet2d, mask_size=8, overlap=0.5, score=score, zero_unmaskable=False)(x, class_idx=3)[0, 0]
    activate = (lambda o: o.softmax(1)) if score == "probability" else False
    with torch.no_grad():
        raw = OcclusionSensitivity(resnet2d, mask_size=8, overlap=0.5, activate=activate, verbose=False)(x)[0]
        base = resnet2d(x)
    base = base.softmax(1) if score == "probability" else base
    drop = (base[0, 3] - raw[0, 3]).clamp_min(0)
    expected = (drop - drop.min()) / (drop.max() - drop.min())
    # the random net's drops span about 1e-3 in probability: float32 noise is amplified by the min-max
    assert torch.allclose(out, expected.as_tensor(), atol=1e-4)


def test_mixed_class_batch_equals_single_calls(resnet2d):
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    cam = Occlusion(resnet2d, mask_size=8)
    batch = cam(x, class_idx=[2, 0, 3])
    assert cam.logits_.shape == (3, 4)
    for i, c in enumerate([2, 0, 3]):
        assert torch.allclose(batch[i], cam(x[i : i + 1], class_idx=c)[0], atol=1e-5), i
    assert not torch.allclose(batch[0], batch[1])


def test_3d_shape_metadata_and_registry(resnet3d):
    x = MetaTensor(torch.rand(1, 1, 20, 20, 12), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    cam = make_explainer(resnet3d, "occlusion", "layer4", mask_size=[8, 8, 6])
    assert isinstance(cam, Occlusion)
    out = cam(x)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine)
    assert out.shape == (1, 1, 20, 20, 12) and out.min() == 0 and out.max() == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"mask_size": 0}, "mask_size"), ({"overlap": 1.0}, "overlap"), ({"score": "prob"}, "score"),
     ({"mode": "zeros"}, "mode")],
)
def test_invalid_parameters(resnet2d, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Occlusion(resnet2d, **kwargs)
