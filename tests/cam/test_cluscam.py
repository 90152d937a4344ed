"""ClusCAM: output contract, faithfulness to the published algorithm, inspectability, model hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.networks.nets import DenseNet121, SEResNet50
from reference_cluscam import reference_cluscam
from torch import nn
from toy_models import RegionClassifier, blob_image

from monai_cluscam import ClusCAM, select_num_clusters


def two_blobs(size=(64, 64)):
    return blob_image(size, (0.25,) * len(size), seed=0) + blob_image(size, (0.75,) * len(size), seed=1)


@pytest.mark.parametrize("resolution", ["feature", "input"])
def test_2d_cnn_shape_range_dtype(resnet2d, resolution):
    x = torch.rand(3, 1, 48, 40)
    out = ClusCAM(resnet2d, "layer4", num_clusters=6, cluster_resolution=resolution)(x)
    assert out.shape == (3, 1, 48, 40)
    assert out.dtype == x.dtype and out.device == x.device
    # each map min-max normalised on its own: exactly 0 at its lowest voxel, 1 at its highest
    assert torch.equal(out.flatten(1).amin(1), torch.zeros(3))
    torch.testing.assert_close(out.flatten(1).amax(1), torch.ones(3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("resolution", ["feature", "input"])
def test_3d_cnn(resnet3d, resolution):
    x = torch.rand(2, 1, 32, 32, 24)
    cam = ClusCAM(resnet3d, "layer3", num_clusters=4, cluster_resolution=resolution)
    out = cam(x)
    assert out.shape == (2, 1, 32, 32, 24)
    assert torch.equal(out.flatten(1).amin(1), torch.zeros(2))
    torch.testing.assert_close(out.flatten(1).amax(1), torch.ones(2), rtol=0, atol=1e-6)
    assert cam.explanation_.cluster_maps_at_input().shape == (2, 4, 32, 32, 24)


def test_float64_input_gives_float64_map(resnet2d):
    out = ClusCAM(resnet2d.double(), "layer4", num_clusters=3)(torch.rand(1, 1, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_vit_tuple_output_and_tokens(vit2d):
    x = torch.rand(2, 1, 32, 32)
    cam = ClusCAM(vit2d, "blocks.1", num_clusters=5)
    out = cam(x)
    assert out.shape == (2, 1, 32, 32)
    # 16 patch tokens (the class token dropped) on a 4x4 grid, 48 embedding dims as channels
    assert cam.explanation_.cluster_maps.shape == (2, 5, 4, 4)
    assert cam.explanation_.channel_labels.shape == (2, 48)


def test_vit_reshape_transform_override(vit2d):
    calls = []

    def to_grid(tokens):
        calls.append(tokens.shape)
        return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, 4, 4)

    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    default = ClusCAM(vit2d, "blocks.1", num_clusters=4)(x)
    custom = ClusCAM(vit2d, "blocks.1", num_clusters=4, reshape_transform=to_grid)(x)
    assert calls == [torch.Size([1, 17, 48])]
    assert torch.allclose(default, custom, atol=1e-6)


@pytest.mark.parametrize(
    ("factory", "layer"),
    [
        (lambda: DenseNet121(spatial_dims=2, in_channels=1, out_channels=3), "features"),
        (lambda: SEResNet50(spatial_dims=2, in_channels=1, num_classes=3, layers=(1, 1, 1, 1)), "layer4"),
    ],
    ids=["densenet121", "seresnet"],
)
def test_other_monai_cnns(factory, layer):
    torch.manual_seed(0)
    net = factory().eval()
    out = ClusCAM(net, layer, num_clusters=4)(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()


def test_localises_the_evidence_region():
    model = RegionClassifier(2).eval()
    x = two_blobs()
    for resolution in ("feature", "input"):
        sal = ClusCAM(model, "features", num_clusters=6, cluster_resolution=resolution)(x, class_idx=1)[0, 0]
        row, col = divmod(int(sal.argmax()), 64)
        assert row < 32 and col < 32, (resolution, row, col)
        assert sal[:32, :32].mean() > 5 * sal[32:, 32:].mean()


def test_localises_in_3d():
    model = RegionClassifier(3).eval()
    x = two_blobs((32, 32, 32))
    sal = ClusCAM(model, "features", num_clusters=6)(x, class_idx=1)[0, 0]
    peak = np.unravel_index(int(sal.argmax()), sal.shape)
    assert all(p < 16 for p in peak)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_input_resolution_matches_published_algorithm(resnet2d, seed):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(1, 1, 64, 64, generator=g) + blob_image((64, 64), (0.4, 0.6), seed=seed)[0]
    ref = reference_cluscam(resnet2d, resnet2d.layer4, x, k=10, r=0.5, tau=0.5, seed=seed)
    ours = ClusCAM(resnet2d, "layer4", cluster_resolution="input", seed=seed, zero_unmaskable=False,
                   centroids="mean")(x)[0, 0]
    # exact up to float rounding (measured: largest difference 4e-7, Pearson r = 1.0000 on these seeds)
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=0, atol=1e-5)


def test_feature_and_input_resolution_agree_on_evidence():
    model = RegionClassifier(2).eval()
    x = two_blobs()
    a = ClusCAM(model, "features", num_clusters=6, cluster_resolution="feature")(x, class_idx=1)
    b = ClusCAM(model, "features", num_clusters=6, cluster_resolution="input")(x, class_idx=1)
    assert np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1] > 0.9


def test_mixed_class_batch_equals_single_calls(resnet2d):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 32, 32, generator=g)
    classes = [0, 3, 1, 3]
    cam = ClusCAM(resnet2d, "layer4", num_clusters=5, batch_size=3)
    batch = cam(x, class_idx=classes)
    for i, c in enumerate(classes):
        single = cam(x[i : i + 1], class_idx=c)
        assert torch.allclose(batch[i], single[0], atol=1e-4), i


def test_class_idx_forms_agree(resnet2d):
    x = torch.rand(2, 1, 32, 32)
    cam = ClusCAM(resnet2d, "layer4", num_clusters=4)
    a = cam(x, class_idx=2)
    b = cam(x, class_idx=torch.tensor([2, 2]))
    c = cam(x, class_idx=[2, 2])
    assert torch.equal(a, b) and torch.equal(a, c)
    cam(x)
    assert torch.equal(cam.explanation_.class_idx, resnet2d(x).argmax(1))


def test_deterministic_and_seeded(resnet2d):
    x = torch.rand(2, 1, 32, 32)
    a = ClusCAM(resnet2d, "layer4", num_clusters=6, seed=7)(x)
    b = ClusCAM(resnet2d, "layer4", num_clusters=6, seed=7)(x)
    assert torch.equal(a, b)


def test_batch_size_does_not_change_the_map(resnet2d):
    x = torch.rand(2, 1, 32, 32)
    maps = [ClusCAM(resnet2d, "layer4", num_clusters=5, batch_size=bs)(x) for bs in (1, 4, None)]
    assert torch.allclose(maps[0], maps[1], atol=1e-5) and torch.allclose(maps[0], maps[2], atol=1e-5)


def test_forward_passes_are_k_plus_one_and_gradient_free(resnet2d):
    seen = []
    handle = resnet2d.register_forward_pre_hook(
        lambda m, a: seen.append((a[0].shape[0], torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
    )
    try:
        ClusCAM(resnet2d, "layer4", num_clusters=6, batch_size=4)(torch.rand(2, 1, 32, 32))
    finally:
        handle.remove()
    assert [n for n, _, _ in seen] == [1, 1, 4, 4, 4]  # one pass per sample, then 12 masked copies in chunks of 4
    assert all(inf and not grad for _, inf, grad in seen)


def test_explanation_parts_are_consistent(resnet2d):
    x = torch.rand(1, 1, 32, 32)
    cam = ClusCAM(resnet2d, "layer4", num_clusters=8, drop_ratio=0.5, temperature=0.5, zero_unmaskable=False)
    sal = cam(x, class_idx=1)
    e = cam.explanation_
    assert e.cluster_maps.shape == (1, 8, 1, 1) or e.cluster_maps.shape[:2] == (1, 8)
    assert torch.allclose(e.weights.sum(1), torch.ones(1))
    assert int((e.weights == 0).sum()) == 4  # floor(0.5 * 8) pruned
    kept = e.weights[0] > 0
    assert e.score_diffs[0][kept].min() >= e.score_diffs[0][~kept].max()
    # a score difference recomputed by hand
    with torch.no_grad():
        masks = e.cluster_maps_at_input()
        manual = resnet2d(x * masks[:, 2:3])[0, 1] - resnet2d(x)[0, 1]
    assert torch.isclose(e.score_diffs[0, 2], manual, atol=1e-4)
    # the map is the normalised weighted sum of the meta-representations
    expected = (e.weights[0].view(-1, 1, 1) * masks[0]).sum(0)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(sal[0, 0], expected, atol=1e-5)
    assert e.channel_labels.shape == (1, 512) and int(e.channel_labels.max()) < 8


@pytest.mark.parametrize("dims", [2, 3])
def test_feature_path_equals_an_independent_statement(resnet2d, resnet3d, dims):
    """The default ``cluster_resolution="feature"`` path restated with plain torch, given only k-means' channel
    labels: per-channel min-max at the layer's grid, centroids as label means, masks upsampled (linear,
    align_corners=False), d_k from masked forward passes, pruning, softmax(d / tau), ReLU of the weighted sum,
    upsampled and min-max normalised. Stated tolerance: 1e-4 (float32 sums in another order)."""
    net, layer, size = (resnet2d, "layer4", (48, 40)) if dims == 2 else (resnet3d, "layer3", (32, 32, 24))
    torch.manual_seed(1)
    x = torch.rand(1, 1, *size) + blob_image(size, (0.3,) * dims, seed=2)
    cam = ClusCAM(net, layer, num_clusters=6, drop_ratio=0.5, temperature=0.25, zero_unmaskable=False,
                  centroids="mean")
    sal = cam(x)
    e = cam.explanation_
    seen = []
    hook = getattr(net, layer).register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        logits = net(x)
    hook.remove()
    c = int(logits.argmax(1))
    acts = seen[0][0].flatten(1)  # (C, P)
    lo, hi = acts.amin(1, keepdim=True), acts.amax(1, keepdim=True)
    normed = torch.where(hi > lo, (acts - lo) / (hi - lo).clamp_min(1e-12), acts)
    labels = e.channel_labels[0]
    centroids = torch.stack([normed[labels == k].mean(0) for k in range(6)]).view(6, *seen[0].shape[2:])
    torch.testing.assert_close(e.cluster_maps[0], centroids, rtol=0, atol=1e-5)
    mode = "bilinear" if dims == 2 else "trilinear"
    masks = torch.nn.functional.interpolate(centroids[:, None], size=size, mode=mode, align_corners=False)
    with torch.no_grad():
        diffs = torch.stack([net(x * masks[k : k + 1])[0, c] - logits[0, c] for k in range(6)])
    torch.testing.assert_close(e.score_diffs[0], diffs, rtol=0, atol=1e-4)
    keep = diffs.argsort(descending=True)[:3]
    weights = torch.zeros(6)
    weights[keep] = torch.softmax(diffs[keep] / 0.25, 0)
    raw = torch.relu((weights.view(6, *[1] * dims) * centroids).sum(0))
    up = torch.nn.functional.interpolate(raw[None, None], size=size, mode=mode, align_corners=False)[0, 0]
    expected = (up - up.min()) / (up.max() - up.min())
    torch.testing.assert_close(sal[0, 0], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("drop_ratio, temperature", [(0.0, 0.1), (0.5, 0.1), (0.5, 2.0), (0.75, 0.5)])
def test_weights_equal_pruning_then_temperature_softmax_exactly(resnet2d, drop_ratio, temperature):
    """An exact oracle of the weighting step from the published algorithm: the floor(r K) lowest score
    differences get weight 0, the others softmax(d / tau). Ignoring the temperature or the pruning fails it."""
    cam = ClusCAM(resnet2d, "layer4", num_clusters=8, drop_ratio=drop_ratio, temperature=temperature)
    cam(torch.rand(2, 1, 32, 32))
    e = cam.explanation_
    expected = torch.zeros_like(e.weights)
    n_keep = 8 - int(drop_ratio * 8)
    for i in range(2):
        keep = e.score_diffs[i].argsort(descending=True)[:n_keep]
        expected[i, keep] = torch.softmax(e.score_diffs[i, keep].double() / temperature, 0).to(expected.dtype)
    torch.testing.assert_close(e.weights, expected, rtol=1e-5, atol=1e-7)
    assert int((e.weights > 0).sum()) == 2 * n_keep


def test_lower_temperature_sharpens_weights(resnet2d):
    x = torch.rand(1, 1, 32, 32)
    cam_hot = ClusCAM(resnet2d, "layer4", num_clusters=8, temperature=5.0)
    cam_cold = ClusCAM(resnet2d, "layer4", num_clusters=8, temperature=0.05)
    cam_hot(x), cam_cold(x)
    assert cam_cold.explanation_.weights.max() > cam_hot.explanation_.weights.max()


def test_metatensor_metadata_is_kept(resnet2d):
    affine = torch.tensor([[0.0, -2, 0, 10], [1.5, 0, 0, -5], [0, 0, 3, 7], [0, 0, 0, 1]])
    x = MetaTensor(torch.rand(1, 1, 32, 32), affine=affine, meta={"filename_or_obj": "scan.nii.gz"})
    out = ClusCAM(resnet2d, "layer4", num_clusters=4)(x)
    assert isinstance(out, MetaTensor)
    assert torch.equal(out.affine, x.affine)
    assert out.meta["filename_or_obj"] == "scan.nii.gz"


def test_batched_metatensor_keeps_batch_metadata(resnet2d):
    from monai.data import list_data_collate

    items = [
        MetaTensor(
            torch.rand(1, 32, 32),
            affine=torch.diag(torch.tensor([s, s, 1.0, 1.0])),
            meta={"filename_or_obj": f"{s}.nii"},
        )
        for s in (1.0, 2.0)
    ]
    batch = list_data_collate(items)
    out = ClusCAM(resnet2d, "layer4", num_clusters=3)(batch)
    assert isinstance(out, MetaTensor) and out.is_batch
    assert torch.equal(out.affine, batch.affine)
    assert out.meta["filename_or_obj"] == ["1.0.nii", "2.0.nii"]


def test_model_left_as_found(resnet2d):
    resnet2d.train()
    resnet2d.layer1.eval()
    modes = {n: m.training for n, m in resnet2d.named_modules()}
    state = {k: v.clone() for k, v in resnet2d.state_dict().items()}
    inplace = {n: m.inplace for n, m in resnet2d.named_modules() if hasattr(m, "inplace")}
    ClusCAM(resnet2d, "layer4", num_clusters=4)(torch.rand(2, 1, 32, 32))
    assert modes == {n: m.training for n, m in resnet2d.named_modules()}
    assert all(torch.equal(state[k], v) for k, v in resnet2d.state_dict().items())  # BN running stats untouched
    assert inplace == {n: m.inplace for n, m in resnet2d.named_modules() if hasattr(m, "inplace")}
    assert all(not m._forward_hooks and not m._backward_hooks for m in resnet2d.modules())
    assert all(p.grad is None for p in resnet2d.parameters())


def test_select_num_clusters(resnet2d):
    data = [{"image": torch.rand(2, 1, 32, 32)}, {"image": torch.rand(1, 1, 32, 32)}]
    sel = select_num_clusters(resnet2d, "layer4", data, candidates=(2, 4, 8, 1024), progress=False)
    assert sel.candidates == [2, 4, 8]  # more clusters than the 512 channels is dropped
    assert len(sel.mean_score_diffs) == 3 and all(np.isfinite(sel.mean_score_diffs))
    top, bottom = max(sel.mean_score_diffs), min(sel.mean_score_diffs)
    chosen = sel.mean_score_diffs[sel.candidates.index(sel.num_clusters)]
    assert chosen >= top - 0.05 * (top - bottom)
    earlier = sel.mean_score_diffs[: sel.candidates.index(sel.num_clusters)]
    assert all(v < top - 0.05 * (top - bottom) for v in earlier)


class FourRegionNet(nn.Module):
    """A network whose K-selection curve is known. ``features`` gives 32 channel maps in 4 groups of 8, each
    the indicator of one quadrant of a 16 x 16 input (with noise below 1e-3, so that a group can be split);
    the class-0 logit is ``sum x**2``. On ``x = 1``: a centroid of one group masks a quadrant, ``d = 64 - 256``;
    a centroid of two merged groups is 1/2 on two quadrants, ``d = 32 - 256``. So the curve rises until K = 4
    and is flat (-192) from there: K = 4 is where it levels off."""

    def __init__(self) -> None:
        super().__init__()
        quadrants = torch.zeros(4, 16, 16)
        for q, (r, c) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
            quadrants[q, r : r + 8, c : c + 8] = 1.0
        noise = 1e-3 * torch.rand(32, 16, 16, generator=torch.Generator().manual_seed(0))
        self.register_buffer("maps", quadrants.repeat_interleave(8, 0) + noise)
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.features(self.maps.expand(x.shape[0], -1, -1, -1))
        energy = (x**2).flatten(1).sum(1)
        return torch.stack([energy, -energy], 1)


def test_select_num_clusters_finds_the_known_plateau():
    """The curve of FourRegionNet is known: below -192 for K < 4 (merged quadrants), -192 from K = 4 on. The rule
    (smallest K within ``tolerance`` of the rise below the top) picks 4; a tolerance wide enough to admit K = 3
    (10.7 below the top, half the rise of 21.3 when K = 2 splits the groups 3 + 1, a third of 32 for 2 + 2)
    but not K = 2 picks 3."""
    net = FourRegionNet()
    data = [torch.ones(2, 1, 16, 16)]
    sel = select_num_clusters(net, "features", data, candidates=(2, 3, 4, 6, 8), progress=False, centroids="mean")
    assert sel.candidates == [2, 3, 4, 6, 8]
    curve = dict(zip(sel.candidates, sel.mean_score_diffs, strict=True))
    for k in (4, 6, 8):
        assert curve[k] == pytest.approx(-192.0, abs=0.5), (k, curve)
    assert curve[3] == pytest.approx((32 + 64 + 64) / 3 - 256, abs=0.5), curve  # one merged pair, two quadrants
    assert curve[2] == pytest.approx((64 / 3 + 64) / 2 - 256, abs=0.5) or curve[2] == pytest.approx(-224, abs=0.5)
    assert sel.num_clusters == 4
    wide = select_num_clusters(net, "features", data, candidates=(2, 3, 4, 6, 8), tolerance=0.6, progress=False,
                               centroids="mean")
    assert wide.num_clusters == 3


def test_select_num_clusters_agrees_with_explanations(resnet2d):
    x = torch.rand(2, 1, 32, 32)
    sel = select_num_clusters(resnet2d, "layer4", [x], candidates=(3,), progress=False)
    cam = ClusCAM(resnet2d, "layer4", num_clusters=3)
    cam(x)
    assert sel.mean_score_diffs[0] == pytest.approx(float(cam.explanation_.score_diffs.mean()), rel=1e-5)


@pytest.mark.parametrize("method", ["ClusCAM", "ScoreCAM", "GradCAM", "DecomCAM"])
def test_logits_of_the_explanation_pass_are_kept(resnet2d, method):
    import monai_cluscam

    x = torch.rand(2, 1, 32, 32)
    cam = getattr(monai_cluscam, method)(resnet2d, "layer4")
    cam(x)
    with torch.no_grad():
        assert torch.allclose(cam.logits_, resnet2d(x), atol=1e-5)
