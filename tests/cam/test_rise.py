"""RISE: random masks scored through masked_forward, seeded, batch-correct, 2D and 3D."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from torch import nn
from toy_models import RegionClassifier, blob_image

from monai_cluscam.cam import RISE
from monai_cluscam.transforms import make_explainer


class Centred(nn.Module):
    """RegionClassifier with its logits shifted so that a half-masked input sits near p = 0.5.

    RISE weighs masks by the class probability; on the plain toy the probability saturates near 1 for
    every mask, which leaves RISE (by its definition) only the mask-coverage noise to show.
    """

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.model = RegionClassifier(2).eval()
        with torch.no_grad():
            self.shift = float(self.model(x)[0, 1]) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) - torch.tensor([-self.shift, self.shift])


def two_blobs(size=(64, 64)):
    return blob_image(size, (0.25,) * len(size), seed=0) + blob_image(size, (0.75,) * len(size), seed=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_rise_localises_evidence(seed):
    x = two_blobs()
    # as published (the near-zero background would otherwise hold no attribution and stretch the min-max)
    sal = RISE(Centred(x), num_masks=500, seed=seed, zero_unmaskable=False)(x, class_idx=1)[0, 0]
    row, col = divmod(int(sal.argmax()), 64)
    assert row < 32 and col < 32
    assert sal[:32, :32].mean() > 1.5 * sal[32:, 32:].mean()


def test_masks_are_seeded_shifted_and_keep_prob():
    cam = RISE(nn.Conv2d(1, 1, 1), num_masks=400, grid_size=4, keep_prob=0.3, seed=3)
    masks = cam.masks((30, 30))(torch.arange(400), torch.device("cpu"))
    assert masks.shape == (400, 1, 30, 30) and masks.min() == 0 and masks.max() == 1  # upsampled 0/1 grids
    assert abs(float(masks.mean()) - 0.3) < 0.03
    assert len({tuple(s) for s in cam.masks((30, 30)).shifts.tolist()}) > 10  # shifted, not all aligned
    again = RISE(nn.Conv2d(1, 1, 1), num_masks=400, grid_size=4, keep_prob=0.3, seed=3).masks((30, 30))
    assert torch.equal(again(torch.arange(400), torch.device("cpu")), masks)
    other = RISE(nn.Conv2d(1, 1, 1), num_masks=400, grid_size=4, keep_prob=0.3, seed=4).masks((30, 30))
    assert not torch.equal(other(torch.arange(400), torch.device("cpu")), masks)


def test_mixed_class_batch_equals_single_calls_and_scores_through_masked_forward(resnet2d):
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    cam = RISE(resnet2d, num_masks=40, batch_size=50)
    seen = []
    handle = resnet2d.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    try:
        batch = cam(x, class_idx=[2, 0, 3])
    finally:
        handle.remove()
    assert seen == [3, 50, 50, 20]  # one unmasked pass, then 3 x 40 masked copies in chunks of 50
    for i, c in enumerate([2, 0, 3]):
        assert torch.allclose(batch[i], cam(x[i : i + 1], class_idx=c)[0], atol=1e-5), i
    assert not torch.allclose(batch[0], batch[1])


def test_3d_shape_metadata_and_registry(resnet3d):
    x = MetaTensor(torch.rand(2, 1, 20, 20, 12), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    cam = make_explainer(resnet3d, "rise", "layer4", num_masks=12, grid_size=4)
    assert isinstance(cam, RISE)
    out = cam(x)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine)
    assert out.shape == (2, 1, 20, 20, 12)
    assert (out.flatten(1).amin(1) == 0).all() and (out.flatten(1).amax(1) == 1).all()  # each map min-max normalised


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"num_masks": 0}, "num_masks"), ({"grid_size": 1.5}, "grid_size"), ({"keep_prob": 1.0}, "keep_prob")],
)
def test_invalid_parameters(resnet2d, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RISE(resnet2d, **kwargs)
