"""Bad input gets a clear error or warning, never a silent wrong map."""

from __future__ import annotations

import warnings

import pytest
import torch

from monai_cluscam import ClusCAM, DecomCAM, GradCAM, GradCAMpp, ScoreCAM
from monai_cluscam.cam.layers import resolve_layer

METHODS = [ClusCAM, ScoreCAM, GradCAM, GradCAMpp, DecomCAM]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input(resnet2d, method, bad):
    x = torch.rand(3, 1, 32, 32)
    x[1, 0, 4, 4] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf in sample\(s\) \[1\]"):
        method(resnet2d, "layer4")(x)


def test_missing_batch_dimension(resnet2d):
    with pytest.raises(ValueError, match=r"x\[None\]"):
        ClusCAM(resnet2d, "layer4")(torch.rand(1, 32, 32))


def test_wrong_number_of_spatial_dims(resnet2d, resnet3d):
    with pytest.raises(ValueError, match="takes 2D inputs but x has 3 spatial dims"):
        ClusCAM(resnet2d, "layer4")(torch.rand(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="takes 3D inputs but x has 2 spatial dims"):
        ClusCAM(resnet3d, "layer4")(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ClusCAM(resnet2d, "layer4")(torch.rand(1, 1, 2, 16, 16, 16))


def test_integer_input(resnet2d):
    with pytest.raises(ValueError, match=r"floating point.*x\.float\(\)"):
        ClusCAM(resnet2d, "layer4")(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


def test_unknown_layer_lists_close_matches(resnet2d):
    with pytest.raises(ValueError, match=r"'layer5' does not exist.*Close matches: 'layer4'"):
        ClusCAM(resnet2d, "layer5")


def test_layer_that_is_not_run(resnet2d):
    class Unused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = resnet2d
            self.spare = torch.nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.net(x)

    with pytest.raises(ValueError, match="'spare' was not run"):
        ClusCAM(Unused(), "spare")(torch.rand(1, 1, 32, 32))


def test_layer_lists_that_cannot_work_are_refused(resnet2d, resnet3d):
    assert ClusCAM(resnet2d, ["layer4"]).layer_name == "layer4"
    assert ClusCAM(resnet2d, resnet2d.layer3).layer_name == "layer3"
    assert ClusCAM(resnet2d, ["layer3", resnet2d.layer4]).layer_name == "layer3+layer4"
    with pytest.raises(ValueError, match="target_layers is empty"):
        ClusCAM(resnet2d, [])
    with pytest.raises(ValueError, match=r"names \['layer4'\] more than once"):
        ClusCAM(resnet2d, ["layer4", resnet2d.layer4])
    # a layer of another network (here a 3D one) is not a layer of the model explained
    with pytest.raises(ValueError, match="not a submodule of the model"):
        ClusCAM(resnet2d, [resnet2d.layer3, resnet3d.layer4])
    with pytest.raises(ValueError, match="exactly one target layer"):
        resolve_layer(resnet2d, ["layer3", "layer4"])


def test_too_many_clusters_for_every_layer_is_clamped_per_layer(resnet2d):
    cam = ClusCAM(resnet2d, ["layer1", "layer2"], num_clusters=200)
    with pytest.warns(UserWarning) as seen:
        out = cam(torch.rand(1, 1, 32, 32))
    messages = " ".join(str(w.message) for w in seen)
    assert "channels of 'layer1'; using 64" in messages and "channels of 'layer2'; using 128" in messages
    assert [e.weights.shape[1] for e in cam.explanations_] == [64, 128]
    assert torch.isfinite(out).all() and float(out.max()) == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_class_idx_out_of_range(resnet2d, method):
    with pytest.raises(ValueError, match=r"out of range: the model has 4 classes \(0\.\.3\)"):
        method(resnet2d, "layer4")(torch.rand(2, 1, 32, 32), class_idx=4)
    with pytest.raises(ValueError, match="out of range"):
        method(resnet2d, "layer4")(torch.rand(2, 1, 32, 32), class_idx=[0, -1])


def test_class_idx_wrong_length(resnet2d):
    with pytest.raises(ValueError, match="3 entries for a batch of 2"):
        ClusCAM(resnet2d, "layer4")(torch.rand(2, 1, 32, 32), class_idx=[0, 1, 2])


def test_too_many_clusters_is_clamped_with_warning(vit2d):
    cam = ClusCAM(vit2d, "blocks.1", num_clusters=100)
    with pytest.warns(UserWarning, match="num_clusters=100 exceeds the 48 channels of 'blocks.1'; using 48"):
        out = cam(torch.rand(1, 1, 32, 32))
    assert cam.explanation_.weights.shape == (1, 48)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", METHODS)
def test_constant_image_gives_finite_map_and_warning(resnet2d, method):
    with pytest.warns(UserWarning, match=r"sample\(s\) \[0, 1\] of x are constant images"):
        out = method(resnet2d, "layer4")(torch.full((2, 1, 32, 32), 0.5))
    assert torch.isfinite(out).all() and out.shape == (2, 1, 32, 32)
    # each map min-max normalised: a constant image's map still spans exactly [0, 1], not scaled nor shifted
    assert (out.flatten(1).amin(1) == 0).all() and (out.flatten(1).amax(1) == 1).all()


@pytest.mark.parametrize("method", METHODS)
def test_all_background_image_gets_a_blank_map_and_a_warning(resnet2d, method):
    x = torch.rand(2, 1, 32, 32)
    x[1] = 0.0  # sample 1 is all background: no masked copy of it differs from it
    cam = method(resnet2d, "layer4")
    if cam.perturbs_input:
        with pytest.warns(UserWarning, match=r"sample\(s\) \[1\]: no voxel may hold attribution"):
            out = cam(x)
        assert float(out[1].abs().sum()) == 0 and float(out[0].max()) == 1.0
    else:  # gradient methods do not mask, so the rule is off unless asked for
        assert cam.zero_unmaskable is None and float(cam(x)[1].max()) == 1.0


def test_constant_activations_warn(resnet2d):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.rand(1, 1, 8, 8))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(1.0)
    with pytest.warns(UserWarning, match=r"sample\(s\) \[0\]: the map is constant.*all-zero"):
        out = ClusCAM(model, "1", num_clusters=2)(torch.rand(1, 1, 8, 8))
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isfinite(out).all()


def test_normal_input_does_not_warn(resnet2d):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClusCAM(resnet2d, "layer4", num_clusters=4)(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clusters": 0}, "num_clusters must be a positive int"),
        ({"drop_ratio": 1.0}, r"drop_ratio must be in \[0, 1\)"),
        ({"drop_ratio": -0.1}, r"drop_ratio must be in \[0, 1\)"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"cluster_resolution": "pixel"}, r"cluster_resolution must be one of \('feature', 'input'\)"),
        ({"batch_size": 0}, "batch_size must be a positive int or None"),
    ],
)
def test_invalid_parameters(resnet2d, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClusCAM(resnet2d, "layer4", **kwargs)


def test_not_a_module():
    with pytest.raises(ValueError, match="nn_module must be a torch.nn.Module"):
        ClusCAM(lambda x: x, "layer4")


def test_model_output_not_logits():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match=r"class scores of shape \(B, num_classes\)"):
        ClusCAM(model, "0")(torch.rand(1, 1, 8, 8))


def test_tokens_that_fit_no_grid():
    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(1, 6)
            self.head = torch.nn.Linear(6, 2)

        def forward(self, x):
            t = self.embed(x.flatten(2)[:, :, :3].transpose(1, 2))  # 3 tokens for a 32x32 input
            return self.head(t.mean(1))

    with pytest.raises(ValueError, match="cannot arrange 3 tokens.*reshape_transform"):
        ClusCAM(Tokens(), "embed")(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize("export", ["script", "trace"])
def test_torchscript_is_refused_by_the_methods_that_hook_layers(resnet2d, export):
    """Forward hooks cannot be put on a TorchScript module: the methods that record a layer refuse one when they
    are built, naming the eager network to use; RISE and occlusion, which read only the output, explain it."""
    from monai_cluscam.cam import RISE, Occlusion

    x = torch.rand(1, 1, 32, 32)
    scripted = torch.jit.script(resnet2d) if export == "script" else torch.jit.trace(resnet2d, x)
    for method in METHODS:
        with pytest.raises(ValueError, match=r"TorchScript module \(ResNet\).*eager network.*models/model\.pt"):
            method(scripted, "layer4")
    with pytest.raises(ValueError, match="a target layer is a TorchScript module"):
        ClusCAM(torch.nn.Sequential(torch.jit.script(torch.nn.Conv2d(1, 2, 3))), "0")
    assert torch.isfinite(RISE(scripted, num_masks=8)(x)).all()
    assert torch.isfinite(Occlusion(scripted, mask_size=16)(x)).all()
