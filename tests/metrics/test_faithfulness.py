"""Average Drop / Increase in Confidence / Average Gain and deletion / insertion curves: closed-form values,
direction, 2D and 3D, batching, chunking, determinism, errors, and the MONAI metric classes."""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from metric_helpers import RegionMeanClassifier, corner_region
from monai.data import MetaTensor
from torch import nn

import monai_cluscam.metrics.faithfulness as faithfulness
from monai_cluscam.cam.base import blur
from monai_cluscam.metrics import (
    AverageDropMetric,
    AverageGainMetric,
    DeletionAUCMetric,
    IncreaseInConfidenceMetric,
    InsertionAUCMetric,
    average_drop,
    average_gain,
    confidence_scores,
    deletion_curve,
    increase_in_confidence,
    insertion_curve,
)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _setup(spatial: tuple[int, ...], batch: int = 2, seed: int = 0):
    """A region classifier, images brighter in the evidence region, and maps covering or missing it."""
    g = torch.Generator().manual_seed(seed)
    region = corner_region(spatial)
    x = 0.2 * torch.rand(batch, 1, *spatial, generator=g) + 0.8 * region
    noise = 0.05 * torch.rand(batch, 1, *spatial, generator=g)
    covering = (region + noise).clamp(0, 1).expand(batch, -1, *spatial).contiguous()
    missing = (1 - region + noise).clamp(0, 1).expand(batch, -1, *spatial).contiguous()
    return RegionMeanClassifier(region, gain=8.0, bias=-4.0).eval(), x, covering, missing


# --- closed-form values --------------------------------------------------------------------------


def test_confidence_metrics_closed_form():
    region = corner_region((4, 4))
    model = RegionMeanClassifier(region, gain=4.0)
    x = torch.ones(1, 1, 4, 4)
    half = torch.full((1, 1, 4, 4), 0.5)
    p, o = _sigmoid(4.0), _sigmoid(2.0)  # class 1: the region mean goes from 1 to 0.5
    scores = confidence_scores(model, x, half, class_idx=1)
    assert scores.prob.item() == pytest.approx(p) and scores.masked_prob.item() == pytest.approx(o)
    assert average_drop(model, x, half, 1).item() == pytest.approx(100 * (p - o) / p)
    assert increase_in_confidence(model, x, half, 1).item() == 0
    assert average_gain(model, x, half, 1).item() == 0
    # class 0 gains confidence when the evidence for class 1 is dimmed
    p0, o0 = 1 - p, 1 - o
    assert average_drop(model, x, half, 0).item() == 0
    assert increase_in_confidence(model, x, half, 0).item() == 100
    assert average_gain(model, x, half, 0).item() == pytest.approx(100 * (o0 - p0) / (1 - p0), rel=1e-4)


def test_reduction_mean_is_the_published_aggregate():
    model, x, covering, missing = _setup((8, 8), batch=3)
    sal = torch.cat([covering[:2], missing[:1]])
    terms = average_drop(model, x, sal)
    assert terms.shape == (3,)
    assert average_drop(model, x, sal, reduction="mean").item() == pytest.approx(terms.mean().item())
    assert increase_in_confidence(model, x, sal, reduction="mean").item() in (0.0, 100 / 3, 200 / 3, 100.0)


def test_deletion_closed_form_with_known_ranking():
    # one 2x2 image, class-1 logit = 4 * mean(all voxels); saliency ranks the voxels 3, 1, 0, 2
    model = RegionMeanClassifier(torch.ones(1, 1, 2, 2), gain=4.0)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    sal = torch.tensor([[[[0.5, 0.9], [0.1, 1.0]]]])
    result = deletion_curve(model, x, sal, class_idx=1, steps=4)
    remaining = [10.0, 6.0, 4.0, 3.0, 0.0]  # sum after deleting 4, then 2, then 1, then 3
    expected = torch.tensor([_sigmoid(4.0 * s / 4) for s in remaining])
    assert torch.allclose(result.curve[0], expected, atol=1e-6)
    assert result.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    trapezoid = sum((expected[i] + expected[i + 1]) / 2 * 0.25 for i in range(4))
    assert result.auc.item() == pytest.approx(float(trapezoid), abs=1e-6)
    # insertion from a zero baseline walks the same ranking the other way
    ins = insertion_curve(model, x, sal, class_idx=1, steps=4, baseline="zeros")
    inserted = [0.0, 4.0, 6.0, 7.0, 10.0]
    assert torch.allclose(ins.curve[0], torch.tensor([_sigmoid(4.0 * s / 4) for s in inserted]), atol=1e-6)


def test_unequal_step_sizes_use_the_true_fractions():
    model = RegionMeanClassifier(torch.ones(1, 1, 3, 3))
    result = deletion_curve(model, torch.rand(1, 1, 3, 3), torch.rand(1, 1, 3, 3), steps=4)
    assert result.fractions.tolist() == pytest.approx([0, 2 / 9, 4 / 9, 6 / 9, 1])


def test_ties_are_broken_by_flat_index():
    # only voxel (0, 0) matters; with a constant map it is the first one deleted
    evidence = torch.zeros(1, 1, 3, 3)
    evidence[..., 0, 0] = 1
    model = RegionMeanClassifier(evidence, gain=10.0, bias=-5.0)
    x = torch.ones(1, 1, 3, 3)
    flat = torch.full((1, 1, 3, 3), 0.3)
    result = deletion_curve(model, x, flat, class_idx=1, steps=9)
    assert result.curve[0, 0].item() == pytest.approx(_sigmoid(5.0))
    assert torch.allclose(result.curve[0, 1:], torch.full((9,), _sigmoid(-5.0)))
    again = deletion_curve(model, x, flat, class_idx=1, steps=9)
    assert torch.equal(result.curve, again.curve)


def test_insertion_starts_at_the_blurred_baseline_and_ends_at_x():
    model, x, covering, _ = _setup((8, 8))
    result = insertion_curve(model, x, covering, class_idx=1, steps=5)
    probs = model(x).softmax(1)[:, 1]
    base_probs = model(blur(x, 5.0)).softmax(1)[:, 1]
    assert torch.allclose(result.curve[:, -1], probs, atol=1e-6)
    assert torch.allclose(result.curve[:, 0], base_probs, atol=1e-6)
    explicit = insertion_curve(model, x, covering, class_idx=1, steps=5, baseline=blur(x, 5.0))
    assert torch.allclose(result.curve, explicit.curve)
    constant = insertion_curve(model, x, covering, class_idx=1, steps=5, baseline=0.5)
    assert torch.allclose(constant.curve[:, 0], model(torch.full_like(x, 0.5)).softmax(1)[:, 1], atol=1e-6)


# --- direction: a map that covers the evidence beats one that misses it --------------------------


@pytest.mark.parametrize("spatial", [(12, 12), (6, 6, 6)])
def test_covering_map_beats_missing_map(spatial):
    model, x, covering, missing = _setup(spatial)
    assert bool((average_drop(model, x, covering, 1) < average_drop(model, x, missing, 1)).all())
    assert bool((average_gain(model, x, covering, 0) <= average_gain(model, x, missing, 0)).all())
    del_cov = deletion_curve(model, x, covering, 1, steps=8).auc
    del_mis = deletion_curve(model, x, missing, 1, steps=8).auc
    ins_cov = insertion_curve(model, x, covering, 1, steps=8).auc
    ins_mis = insertion_curve(model, x, missing, 1, steps=8).auc
    assert bool((del_cov < del_mis - 0.1).all())
    assert bool((ins_cov > ins_mis + 0.1).all())


# --- classes, batching, chunking -----------------------------------------------------------------


def test_class_idx_none_int_and_per_sample():
    model, x, covering, _ = _setup((8, 8))
    predicted = model(x).argmax(1)
    assert torch.equal(deletion_curve(model, x, covering, steps=4).class_idx, predicted)
    c1 = deletion_curve(model, x, covering, class_idx=1, steps=4)
    mixed = deletion_curve(model, x, covering, class_idx=[0, 1], steps=4)
    assert torch.allclose(mixed.curve[0], 1 - c1.curve[0], atol=1e-6)
    assert torch.allclose(mixed.curve[1], c1.curve[1])
    assert torch.equal(
        confidence_scores(model, x, covering, class_idx=torch.tensor([1, 0])).class_idx, torch.tensor([1, 0])
    )


@pytest.mark.parametrize("spatial", [(8, 8), (4, 4, 4)])
def test_batch_equals_singles_and_chunking_changes_nothing(spatial):
    model, x, covering, missing = _setup(spatial, batch=3)
    sal = torch.cat([covering[:2], missing[2:]])
    whole = deletion_curve(model, x, sal, class_idx=1, steps=6, batch_size=4)
    singles = torch.cat([deletion_curve(model, x[i : i + 1], sal[i : i + 1], 1, steps=6).curve for i in range(3)])
    assert torch.allclose(whole.curve, singles, atol=1e-6)
    for batch_size in (1, 5, None):
        chunked = insertion_curve(model, x, sal, class_idx=1, steps=6, batch_size=batch_size)
        assert torch.allclose(chunked.auc, insertion_curve(model, x, sal, class_idx=1, steps=6).auc, atol=1e-6)
        assert torch.allclose(
            average_drop(model, x, sal, batch_size=batch_size), average_drop(model, x, sal), atol=1e-6
        )


def test_3d_deletion_builds_step_masks_one_chunk_at_a_time(monkeypatch):
    model, x, covering, _ = _setup((8, 8, 8), batch=2)
    steps, batch_size = 10, 4
    sizes: list[int] = []
    real = faithfulness.masked_forward

    def spy(model, x, masks, num_masks=None, baseline=None, batch_size=None, progress=False):
        assert callable(masks) and not isinstance(masks, torch.Tensor)

        def recording(sample_idx, mask_idx):
            out = masks(sample_idx, mask_idx)
            sizes.append(out.shape[0])
            return out

        return real(model, x, recording, num_masks, baseline, batch_size, progress)

    monkeypatch.setattr(faithfulness, "masked_forward", spy)
    result = deletion_curve(model, x, covering, class_idx=1, steps=steps, batch_size=batch_size)
    total = 2 * (steps + 1)
    assert max(sizes) <= batch_size and sum(sizes) == total and len(sizes) == math.ceil(total / batch_size)
    assert result.curve.shape == (2, steps + 1)


def test_model_mode_and_buffers_are_left_as_found():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(128, 2)).train()
    stats = model[1].running_mean.clone()
    x = torch.rand(2, 1, 8, 8)
    deletion_curve(model, x, torch.rand(2, 1, 8, 8), steps=3)
    average_drop(model, x, torch.rand(2, 1, 8, 8))
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, stats)


def test_metatensors_and_sigmoid_single_output():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    x, sal = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    scores = confidence_scores(model, MetaTensor(x), MetaTensor(sal), activation="sigmoid")
    with torch.no_grad():
        assert torch.allclose(scores.prob, model(x)[:, 0].sigmoid(), atol=1e-6)
        assert torch.allclose(scores.masked_prob, model(x * sal)[:, 0].sigmoid(), atol=1e-6)
    with pytest.raises(ValueError, match="single output"):
        confidence_scores(model, x, sal)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"saliency": torch.rand(2, 1, 4, 5)}, "does not fit"),
        ({"saliency": torch.rand(3, 1, 4, 4)}, "does not fit"),
        ({"x": torch.ones(2, 1, 4, 4, dtype=torch.long)}, "floating point"),
        ({"x": torch.full((2, 1, 4, 4), float("nan"))}, "NaN"),
        ({"steps": 0}, "steps"),
        ({"baseline": "noise"}, "baseline"),
        ({"baseline": torch.zeros(3, 1, 4, 4)}, "broadcast"),
        ({"baseline": "blur", "blur_sigma": 0.0}, "blur_sigma"),
        ({"activation": "relu"}, "activation"),
        ({"batch_size": 0}, "batch_size"),
        ({"class_idx": 2}, "out of range"),
        ({"class_idx": [0, 1, 1]}, "one per sample"),
    ],
)
def test_curve_bad_inputs(kwargs, message):
    model = RegionMeanClassifier(torch.ones(1, 1, 4, 4))
    args = {"model": model, "x": torch.rand(2, 1, 4, 4), "saliency": torch.rand(2, 1, 4, 4), "steps": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        deletion_curve(**args)


def test_confidence_bad_inputs():
    model = RegionMeanClassifier(torch.ones(1, 1, 4, 4))
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        average_drop(model, x, 2 * torch.rand(2, 1, 4, 4) + 0.5)
    with pytest.raises(ValueError, match="reduction"):
        average_gain(model, x, torch.rand(2, 1, 4, 4), reduction="sum")
    with pytest.raises(ValueError, match="nn.Module"):
        average_drop(lambda t: t, x, torch.rand(2, 1, 4, 4))


# --- the MONAI metric classes --------------------------------------------------------------------


def test_metric_classes_match_functions_for_lists_and_batches():
    model, x, covering, missing = _setup((8, 8), batch=4)
    sal = torch.cat([covering[:2], missing[2:]])
    classes = [1, 0, 1, 0]
    cases = [
        (AverageDropMetric(model), lambda: average_drop(model, x, sal, classes)),
        (IncreaseInConfidenceMetric(model), lambda: increase_in_confidence(model, x, sal, classes)),
        (AverageGainMetric(model), lambda: average_gain(model, x, sal, classes)),
        (DeletionAUCMetric(model, steps=5), lambda: deletion_curve(model, x, sal, classes, steps=5).auc),
        (InsertionAUCMetric(model, steps=5), lambda: insertion_curve(model, x, sal, classes, steps=5).auc),
    ]
    for metric, expected_fn in cases:
        metric(y_pred=sal[:2], y=x[:2], class_idx=classes[:2])
        # decollated items with per-sample labels as tensors, as from_engine returns them
        metric(y_pred=list(sal[2:]), y=list(x[2:]), class_idx=[torch.tensor([c]) for c in classes[2:]])
        expected = expected_fn()
        assert torch.allclose(metric.get_buffer()[:, 0], expected, atol=1e-6), type(metric).__name__
        assert metric.aggregate().item() == pytest.approx(expected.mean().item(), abs=1e-5)


def test_curve_metric_keeps_curves_and_resets():
    model, x, covering, _ = _setup((8, 8))
    metric = DeletionAUCMetric(model, steps=3)
    metric(y_pred=covering, y=x)
    assert torch.allclose(metric.get_curves(), deletion_curve(model, x, covering, steps=3).curve)
    metric.reset()
    assert metric.get_curves().shape == (0, 4)


def test_metric_scores_failed_maps_nan_and_the_rest_as_usual():
    model, x, covering, _ = _setup((8, 8), batch=3)
    sal = covering.clone()
    sal[1] = float("nan")
    metric = AverageDropMetric(model, get_not_nans=True)
    with pytest.warns(UserWarning, match=r"sample\(s\) \[1\]"):
        metric(y_pred=sal, y=x, class_idx=[1, 0, 0])
    values = metric.get_buffer()[:, 0]
    expected = average_drop(model, x[[0, 2]], covering[[0, 2]], [1, 0])
    assert torch.isnan(values[1]) and torch.allclose(values[[0, 2]], expected)
    mean, not_nans = metric.aggregate()
    assert mean.item() == pytest.approx(expected.mean().item()) and not_nans.item() == 2


def test_metric_errors():
    model = RegionMeanClassifier(torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="input images"):
        AverageDropMetric(model)(y_pred=torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="share a shape"):
        AverageDropMetric(model)(y_pred=[torch.rand(1, 4, 4), torch.rand(1, 4, 5)], y=[torch.rand(1, 4, 4)] * 2)
    with pytest.raises(ValueError, match="one-hot"):
        AverageDropMetric(model)(y_pred=torch.rand(2, 1, 4, 4), y=torch.rand(2, 1, 4, 4), class_idx=list(torch.eye(2)))
    with pytest.raises(ValueError, match="steps"):
        DeletionAUCMetric(model, steps=0)
    with pytest.raises(ValueError, match="activation"):
        InsertionAUCMetric(model, activation="tanh")


# --- properties ----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(np.float32, (2, 1, 5, 4), elements=st.floats(-3, 3, width=32)),
    hnp.arrays(np.float32, (2, 1, 5, 4), elements=st.floats(0, 1, width=32)),
    st.integers(1, 25),
    st.sampled_from(["zeros", "blur"]),
)
def test_auc_and_confidence_terms_match_their_definitions(sal_np, x_np, steps, baseline):
    model = RegionMeanClassifier(corner_region((5, 4)), gain=6.0, bias=-2.0)
    x, sal = torch.from_numpy(x_np), torch.from_numpy(sal_np)
    result = deletion_curve(model, x, sal, steps=steps, baseline=baseline, blur_sigma=1.0)
    # the area is the trapezoid rule over the returned curve, written out here
    f, c = result.fractions.double(), result.curve.double()
    area = ((f[1:] - f[:-1]) * (c[:, 1:] + c[:, :-1]) / 2).sum(1)
    torch.testing.assert_close(result.auc.double(), area, rtol=0, atol=1e-6)
    assert result.fractions[0] == 0 and result.fractions[-1] == 1 and bool((result.fractions.diff() >= 0).all())
    p = model(x).softmax(1).gather(1, result.class_idx[:, None])[:, 0]
    assert torch.allclose(result.curve[:, 0], p, atol=1e-6)
    mask = sal.clamp(0, 1)
    scores = confidence_scores(model, x, mask)
    # Average Drop and Gain terms from the two probabilities computed here: of x and of x masked by its map
    with torch.no_grad():
        classes = model(x).argmax(1, keepdim=True)
        p, o = (model(v).softmax(1).gather(1, classes)[:, 0].double() for v in (x, x * mask))
    torch.testing.assert_close(scores.average_drop.double(), 100 * (p - o).clamp_min(0) / p, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores.average_gain.double(), 100 * (o - p).clamp_min(0) / (1 - p), rtol=1e-4, atol=1e-4)
