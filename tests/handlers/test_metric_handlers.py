"""The Ignite handlers inside a real MONAI SupervisedEvaluator equal the functional metrics."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from torch import nn

from monai_cluscam import ClusCAM
from monai_cluscam.handlers import (
    AttributionOutsideMask,
    AverageDrop,
    AverageGain,
    DeletionAUC,
    EnergyPointingGame,
    IncreaseInConfidence,
    InsertionAUC,
    PointingGame,
)
from monai_cluscam.metrics import (
    attribution_outside_mask,
    average_drop,
    average_gain,
    deletion_curve,
    energy_pointing_game,
    increase_in_confidence,
    insertion_curve,
    pointing_game,
)

STEPS = 6


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 2),
    ).eval()
    with torch.no_grad():
        net[-1].weight.mul_(20)  # confident enough that masking moves the probabilities both ways
    return net


def _data(n: int = 5) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    items = []
    for i in range(n):
        mask = torch.zeros(1, 12, 12)
        mask[:, :8, :8] = 1  # a region (or "brain") the maps are judged against
        image = (0.5 + i) * torch.rand(1, 12, 12, generator=g)  # brightness moves the prediction
        items.append({"image": image, "label": torch.tensor(i % 2), "mask": mask})
    return items


def _evaluator(net, cam, handlers, decollate=True, batch_size=2):
    """An evaluator whose postprocessing stores ClusCAM maps under "cam" (standing in for ClusCAMHandler)."""
    if decollate:

        def add_cam(d):
            return {**d, "cam": cam(d["image"][None])[0]}
    else:

        def add_cam(d):
            return {**d, "cam": cam(d["image"])}

    names = list(handlers)
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(_data()), batch_size=batch_size),
        network=net,
        postprocessing=add_cam,
        decollate=decollate,
        key_val_metric={names[0]: handlers[names[0]]},
        additional_metrics={k: handlers[k] for k in names[1:]},
    )


def _reference():
    net = _net()
    cam = ClusCAM(net, target_layers="2", num_clusters=3)
    items = _data()
    x = torch.stack([d["image"] for d in items])
    mask = torch.stack([d["mask"] for d in items])
    labels = torch.stack([d["label"] for d in items])
    maps = torch.cat([cam(d["image"][None]) for d in items])
    return net, cam, x, mask, labels, maps


def test_handlers_in_supervised_evaluator_equal_functional_results():
    net, cam, x, mask, _, maps = _reference()
    handlers = {
        "average_drop": AverageDrop(net),
        "increase_in_confidence": IncreaseInConfidence(net),
        "average_gain": AverageGain(net),
        "deletion_auc": DeletionAUC(net, steps=STEPS),
        "insertion_auc": InsertionAUC(net, steps=STEPS, blur_sigma=2.0),
        "pointing_game": PointingGame(),
        "energy_pointing_game": EnergyPointingGame(),
        "outside_brain": AttributionOutsideMask(),
    }
    evaluator = _evaluator(net, cam, handlers)
    evaluator.run()
    expected = {
        "average_drop": average_drop(net, x, maps),
        "increase_in_confidence": increase_in_confidence(net, x, maps),
        "average_gain": average_gain(net, x, maps),
        "deletion_auc": deletion_curve(net, x, maps, steps=STEPS).auc,
        "insertion_auc": insertion_curve(net, x, maps, steps=STEPS, blur_sigma=2.0).auc,
        "pointing_game": pointing_game(maps, mask).float(),
        "energy_pointing_game": energy_pointing_game(maps, mask),
        "outside_brain": attribution_outside_mask(maps, mask),
    }
    assert 0 < expected["average_drop"].count_nonzero() < 5  # the values vary, the test has teeth
    assert 0 < expected["pointing_game"].count_nonzero() < 5
    for name, values in expected.items():
        assert evaluator.state.metrics[name] == pytest.approx(values.nanmean().item(), abs=1e-5), name
        details = evaluator.state.metric_details[name]
        assert details.shape == (5, 1)
        assert torch.allclose(details[:, 0], values, atol=1e-5, equal_nan=True), name
    curves = handlers["deletion_auc"].metric_fn.get_curves()
    assert torch.allclose(curves, deletion_curve(net, x, maps, steps=STEPS).curve, atol=1e-6)


def test_class_from_the_engine_output_and_undecollated_batches():
    net, cam, x, _, labels, maps = _reference()
    handlers = {
        "drop_label": AverageDrop(net, output_transform=from_engine(["cam", "image", "label"])),
        "deletion_label": DeletionAUC(net, steps=STEPS, output_transform=from_engine(["cam", "image", "label"])),
    }
    _evaluator(net, cam, handlers).run()
    expected_drop = average_drop(net, x, maps, class_idx=labels, reduction="mean").item()
    expected_del = deletion_curve(net, x, maps, class_idx=labels, steps=STEPS).auc.mean().item()
    assert handlers["drop_label"].metric_fn.aggregate().item() == pytest.approx(expected_drop, abs=1e-5)
    assert handlers["deletion_label"].metric_fn.aggregate().item() == pytest.approx(expected_del, abs=1e-5)

    batched = {"drop": AverageDrop(net), "outside": AttributionOutsideMask()}
    evaluator = _evaluator(net, cam, batched, decollate=False)
    evaluator.run()
    assert evaluator.state.metrics["drop"] == pytest.approx(average_drop(net, x, maps).mean().item(), abs=1e-5)


def test_handler_rejects_wrong_items():
    net = _net()
    with pytest.raises(ValueError, match=r"\(saliency, images\) or \(saliency, images, class_idx\)"):
        AverageDrop(net).update((torch.rand(1, 1, 4, 4),))
    with pytest.raises(ValueError, match=r"\(saliency, mask\)"):
        PointingGame().update((torch.rand(1, 1, 4, 4), torch.ones(1, 1, 4, 4), [0]))
