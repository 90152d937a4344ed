"""Invariants that hold for any input: shape, range, determinism, batch equals single calls."""

from __future__ import annotations

import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from monai_cluscam import ClusCAM, GradCAM, ScoreCAM


def tiny_cnn(spatial_dims: int) -> nn.Module:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    torch.manual_seed(0)
    return nn.Sequential(
        conv(1, 8, 3, padding=1), nn.ReLU(), conv(8, 12, 3, stride=2, padding=1), nn.ReLU(),
        pool(1), nn.Flatten(), nn.Linear(12, 3),
    ).eval()


MODELS = {2: tiny_cnn(2), 3: tiny_cnn(3)}

cases = st.fixed_dictionaries(
    {
        "dims": st.sampled_from([2, 3]),
        "batch": st.integers(1, 3),
        "size": st.sampled_from([8, 12, 16]),
        "k": st.integers(1, 12),
        "drop": st.floats(0.0, 0.9),
        "tau": st.floats(0.05, 3.0),
        "resolution": st.sampled_from(["feature", "input"]),
        "seed": st.integers(0, 2**16),
    }
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases)
def test_cluscam_invariants(case):
    dims, b, n = case["dims"], case["batch"], case["size"]
    model = MODELS[dims]
    x = torch.rand(b, 1, *[n] * dims, generator=torch.Generator().manual_seed(case["seed"]))
    classes = torch.randint(0, 3, (b,), generator=torch.Generator().manual_seed(case["seed"] + 1))
    cam = ClusCAM(
        model, "2", num_clusters=case["k"], drop_ratio=case["drop"], temperature=case["tau"],
        cluster_resolution=case["resolution"], seed=case["seed"] % 7,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # K above the 12 channels is clamped with a warning
        out = cam(x, class_idx=classes)
        again = cam(x, class_idx=classes)
        singles = [cam(x[i : i + 1], class_idx=int(classes[i])) for i in range(b)]
    assert out.shape == (b, 1, *[n] * dims)
    # each map min-max normalised: its lowest voxel exactly 0, its highest 1 (a constant map, warned about, is zeros)
    flat = out.flatten(1)
    blank = (flat == 0).all(1)
    assert torch.isfinite(out).all() and torch.equal(flat.amin(1), torch.zeros(b))
    torch.testing.assert_close(flat.amax(1)[~blank], torch.ones(int((~blank).sum())), rtol=0, atol=1e-6)
    assert torch.equal(out, again)
    for i, single in enumerate(singles):
        assert torch.allclose(out[i], single[0], atol=1e-4)
    k = min(case["k"], 12)
    weights = cam.explanation_.weights
    assert torch.allclose(weights.sum(1), torch.ones(1), atol=1e-5)
    diffs = cam.explanation_.score_diffs
    n_drop = int(case["drop"] * k)
    order = diffs.argsort(dim=1, stable=True)
    # the floor(r K) lowest differences are pruned, the others get softmax(d / tau) exactly
    assert bool((weights.gather(1, order[:, :n_drop]) == 0).all())
    kept = order[:, n_drop:]
    expected = torch.softmax(diffs.gather(1, kept).double() / case["tau"], dim=1).float()
    torch.testing.assert_close(weights.gather(1, kept), expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(dims=st.sampled_from([2, 3]), batch=st.integers(1, 3), seed=st.integers(0, 1000))
def test_baselines_batch_equals_singles(dims, batch, seed):
    model = MODELS[dims]
    x = torch.rand(batch, 1, *[12] * dims, generator=torch.Generator().manual_seed(seed))
    classes = [(seed + i) % 3 for i in range(batch)]
    for method in (ScoreCAM, GradCAM):
        cam = method(model, "2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = cam(x, class_idx=classes)
            for i in range(batch):
                assert torch.allclose(out[i], cam(x[i : i + 1], class_idx=classes[i])[0], atol=1e-4)
        assert out.min() >= 0 and out.max() <= 1
