"""Pointing game, energy pointing game and attribution outside a mask: values, conventions, errors."""

from __future__ import annotations

import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_cluscam.metrics import (
    AttributionOutsideMaskMetric,
    EnergyPointingGameMetric,
    PointingGameMetric,
    attribution_outside_mask,
    energy_pointing_game,
    pointing_game,
)


def _peak_map(spatial: tuple[int, ...], peaks: list[tuple[int, ...]]) -> torch.Tensor:
    sal = torch.zeros(len(peaks), 1, *spatial)
    for i, p in enumerate(peaks):
        sal[(i, 0, *p)] = 1.0
    return sal


@pytest.mark.parametrize("spatial", [(6, 5), (4, 5, 3)])
def test_pointing_game_hits_and_misses_2d_3d(spatial):
    inside, outside = (0,) * len(spatial), tuple(s - 1 for s in spatial)
    sal = _peak_map(spatial, [inside, outside])
    sal += 0.1 * torch.rand_like(sal)  # background below the peak
    region = torch.zeros(2, 1, *spatial, dtype=torch.bool)
    region[(slice(None), 0, *[slice(0, 2)] * len(spatial))] = True
    assert pointing_game(sal, region).tolist() == [True, False]
    assert pointing_game(sal, region[:, 0].int()).tolist() == [True, False]  # (B, *spatial), {0, 1}


def test_pointing_game_ties():
    sal = torch.zeros(1, 1, 4, 4)
    sal[0, 0, 0, 0] = sal[0, 0, 3, 3] = 1.0  # two maxima, one inside
    region = torch.zeros(1, 1, 4, 4)
    region[..., :2, :2] = 1
    assert pointing_game(sal, region).tolist() == [False]
    assert pointing_game(sal, region, ties="any").tolist() == [True]
    region[..., 3, 3] = 1
    assert pointing_game(sal, region).tolist() == [True]


def test_all_zero_map_is_a_miss_and_has_nan_energy():
    sal = torch.zeros(2, 1, 4, 4)
    sal[1, 0, 0, 0] = 1.0
    full = torch.ones(2, 1, 4, 4)
    with pytest.warns(UserWarning, match=r"sample\(s\) \[0\] is all zero"):
        assert pointing_game(sal, full).tolist() == [False, True]
    with pytest.warns(UserWarning, match="nan"):
        energy = energy_pointing_game(sal, full)
    assert torch.isnan(energy[0]) and energy[1] == 1.0
    with pytest.warns(UserWarning, match="nan"):
        outside = attribution_outside_mask(sal, full)
    assert torch.isnan(outside[0]) and outside[1] == 0.0


def test_energy_and_outside_hand_computed_3d():
    sal = torch.zeros(1, 1, 2, 2, 2)
    sal[0, 0, 0, 0, 0] = 3.0
    sal[0, 0, 1, 1, 1] = 1.0
    brain = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    brain[0, 0] = True
    assert energy_pointing_game(sal, brain).item() == pytest.approx(0.75)
    assert attribution_outside_mask(sal, brain).item() == pytest.approx(0.25)


def test_one_mask_broadcasts_over_the_batch_and_metatensors_work():
    sal = torch.rand(3, 1, 5, 5)
    brain = (torch.rand(1, 1, 5, 5) > 0.5).float()
    brain[0, 0, 0, 0] = 1
    expected = torch.stack([attribution_outside_mask(sal[i : i + 1], brain)[0] for i in range(3)])
    assert torch.allclose(attribution_outside_mask(MetaTensor(sal), MetaTensor(brain)), expected)


def test_values_stay_on_the_map_device_and_dtype():
    sal = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    mask = torch.ones(2, 1, 4, 4)
    assert pointing_game(sal, mask).dtype == torch.bool
    out = energy_pointing_game(sal, mask)
    assert out.dtype == torch.float32 and out.device == sal.device and out.shape == (2,)


@pytest.mark.parametrize(
    ("sal", "mask", "message"),
    [
        (torch.rand(2, 1, 4, 4), torch.ones(2, 1, 4, 5), "does not match"),
        (torch.rand(2, 1, 4, 4), torch.ones(3, 1, 4, 4), "does not match"),
        (torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), "empty"),
        (torch.rand(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5), "Threshold"),
        (torch.rand(2, 1, 4, 4) - 0.5, torch.ones(2, 1, 4, 4), "negative"),
        (torch.full((2, 1, 4, 4), float("nan")), torch.ones(2, 1, 4, 4), "NaN"),
        (torch.rand(4, 4), torch.ones(4, 4), "batch dimension"),
    ],
)
def test_bad_inputs_raise_clear_errors(sal, mask, message):
    with pytest.raises(ValueError, match=message):
        energy_pointing_game(sal, mask)


def test_empty_mask_names_the_sample_and_bad_ties():
    mask = torch.ones(2, 1, 3, 3)
    mask[1] = 0
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] is empty"):
        pointing_game(torch.rand(2, 1, 3, 3), mask)
    with pytest.raises(ValueError, match="ties"):
        pointing_game(torch.rand(1, 1, 3, 3), torch.ones(1, 1, 3, 3), ties="first")
    with pytest.raises(ValueError, match="ties"):
        PointingGameMetric(ties="first")


def test_metric_classes_accumulate_and_match_the_functions():
    torch.manual_seed(0)
    sal = torch.rand(4, 1, 6, 6)
    mask = torch.rand(4, 1, 6, 6) > 0.5
    for metric, fn in [
        (PointingGameMetric(), pointing_game),
        (EnergyPointingGameMetric(), energy_pointing_game),
        (AttributionOutsideMaskMetric(), attribution_outside_mask),
    ]:
        metric(y_pred=sal[:2], y=mask[:2])
        metric(y_pred=list(sal[2:]), y=list(mask[2:]))  # decollated channel-first items
        expected = fn(sal, mask).float()
        assert torch.allclose(metric.get_buffer()[:, 0], expected)
        assert metric.aggregate().item() == pytest.approx(expected.mean().item())
        metric.reset()
        with pytest.raises(ValueError, match="no values"):
            metric.aggregate()


def test_metric_skips_failed_nan_maps_and_all_zero_maps():
    sal = torch.rand(3, 1, 4, 4)
    sal[0] = float("nan")
    sal[2] = 0.0
    metric = EnergyPointingGameMetric(get_not_nans=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric(y_pred=sal, y=torch.ones(3, 1, 4, 4))
    assert {"failed explanations" in str(w.message) or "all zero" in str(w.message) for w in caught} == {True}
    value, not_nans = metric.aggregate()
    assert value.item() == pytest.approx(1.0) and not_nans.item() == 1


def test_metric_needs_y():
    with pytest.raises(ValueError, match="region masks"):
        PointingGameMetric()(y_pred=torch.rand(1, 1, 3, 3))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.just(1), st.integers(1, 5), st.integers(1, 5)),
        elements=st.floats(0, 1, width=32),
    ),
    st.data(),
)
def test_energy_properties(sal_np, data):
    sal = torch.from_numpy(sal_np)
    mask = torch.from_numpy(data.draw(hnp.arrays(np.bool_, sal_np.shape)))
    mask.view(mask.shape[0], -1)[:, 0] = True  # never empty
    sal.view(sal.shape[0], -1)[:, -1] += 0.5  # never all zero
    inside = energy_pointing_game(sal, mask)
    outside = attribution_outside_mask(sal, mask)
    flat, region = sal.flatten(1).double(), mask.flatten(1)
    torch.testing.assert_close(inside.double(), (flat * region).sum(1) / flat.sum(1), rtol=0, atol=1e-6)
    assert torch.allclose(inside + outside, torch.ones_like(inside), atol=1e-6)
    # with a single maximum, a hit is exactly "the argmax lies in the mask"
    flat = sal.flatten(1)
    unique = (flat == flat.amax(1, keepdim=True)).sum(1) == 1
    argmax_inside = mask.flatten(1).gather(1, flat.argmax(1, keepdim=True))[:, 0]
    assert torch.equal(pointing_game(sal, mask)[unique], argmax_inside[unique])
