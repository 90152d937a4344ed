"""Score-CAM, Grad-CAM, Grad-CAM++ and DecomCAM: same contract as ClusCAM, batch-correct, not inverted."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from toy_models import RegionClassifier, blob_image

from monai_cluscam import DecomCAM, GradCAM, GradCAMpp, ScoreCAM

BASELINES = [ScoreCAM, GradCAM, GradCAMpp, DecomCAM]


def two_blobs(size=(64, 64)):
    return blob_image(size, (0.25,) * len(size), seed=0) + blob_image(size, (0.75,) * len(size), seed=1)


@pytest.mark.parametrize("method", BASELINES)
def test_localise_evidence_not_inverted(method):
    """High values mark the evidence region: an inverting normaliser would put the peak elsewhere."""
    model = RegionClassifier(2).eval()
    sal = method(model, "features")(two_blobs(), class_idx=1)[0, 0]
    row, col = divmod(int(sal.argmax()), 64)
    assert row < 32 and col < 32
    assert sal[:32, :32].mean() > 1.2 * sal[32:, 32:].mean()


@pytest.mark.parametrize("method", BASELINES)
def test_mixed_class_batch_equals_single_calls(resnet2d, method):
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    classes = [2, 0, 3]
    cam = method(resnet2d, "layer3")
    batch = cam(x, class_idx=classes)
    for i, c in enumerate(classes):
        assert torch.allclose(batch[i], cam(x[i : i + 1], class_idx=c)[0], atol=1e-4), i


@pytest.mark.parametrize("method", BASELINES)
def test_3d_shape_and_metadata(resnet3d, method):
    x = MetaTensor(torch.rand(1, 1, 24, 24, 16), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = method(resnet3d, "layer3")(x)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine)
    assert out.shape == (1, 1, 24, 24, 16) and out.min() == 0 and out.max() == 1  # min-max normalised


@pytest.mark.parametrize("method", BASELINES)
def test_vit(vit2d, method):
    # blocks.0: the last block's patch tokens do not reach the class token, so their gradients are zero
    out = method(vit2d, "blocks.0")(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()
    assert (out.flatten(1).amax(1) == 1).all()


@pytest.mark.parametrize("method", [GradCAM, GradCAMpp, DecomCAM])
def test_gradient_methods_leave_no_grad_and_work_with_frozen_models(resnet2d, method):
    for p in resnet2d.parameters():
        p.requires_grad_(False)
    out = method(resnet2d, "layer4")(torch.rand(1, 1, 32, 32))
    assert torch.isfinite(out).all()
    assert all(p.grad is None and not p.requires_grad for p in resnet2d.parameters())


def test_gradcam_under_inplace_relu_after_layer():
    """DenseNet's classifier starts with ReLU(inplace=True) right after the target layer."""
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()
    out = GradCAM(net, "features")(torch.rand(1, 1, 64, 64))
    assert torch.isfinite(out).all()
    assert net.class_layers.relu.inplace


def test_scorecam_uses_every_channel(resnet2d):
    seen = []
    handle = resnet2d.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    try:
        ScoreCAM(resnet2d, "layer3", batch_size=100)(torch.rand(1, 1, 32, 32))
    finally:
        handle.remove()
    assert seen == [1, 100, 100, 56]  # one pass, then the 256 channels of layer3 in chunks


def test_decomcam_parameters(resnet2d):
    with pytest.raises(ValueError, match="num_components must be a positive int"):
        DecomCAM(resnet2d, "layer4", num_components=0)
    with pytest.raises(ValueError, match="blur_sigma must be > 0"):
        DecomCAM(resnet2d, "layer4", blur_sigma=-1.0)
