"""AttributionAuditHandler: it flags a classifier that learned a shortcut outside the brain, and only that one."""

from __future__ import annotations

import logging
import os
import re
import warnings
from logging.handlers import BufferingHandler

import numpy as np
import pytest
import torch
from handler_helpers import BRAIN, BrainNet, brains, tiny_net
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedTrainer
from monai.handlers import StatsHandler, TensorBoardStatsHandler
from scipy import ndimage as ndi
from torch import nn

import monai_cluscam.handlers.audit as audit_module
from monai_cluscam import ClusCAM, register_method, unregister_method
from monai_cluscam.cam.base import BaseCAM, CAMState
from monai_cluscam.data import foreground_mask
from monai_cluscam.handlers import AttributionAuditHandler, AttributionAuditWarning
from monai_cluscam.metrics.audit import (
    distance_to_mask,
    outside_by_class,
    peak_margin,
    peak_outside_mask,
    subject_mask,
    summarize_outside,
)
from monai_cluscam.metrics.sanity import cascading_randomization

EPOCHS = 6


def _train_with_audit(shortcut: bool, seed: int, **audit_kwargs) -> tuple[SupervisedTrainer, AttributionAuditHandler]:
    """Train BrainNet for a few epochs on 96 synthetic brains, auditing 8 held-out positive cases every 3 epochs.

    Training images are scaled by a random factor in [0.2, 1] (MRI intensities vary between scanners), so
    the network keys on patterns rather than on absolute brightness; the audit images are not scaled.
    """
    images, labels = brains(96, shortcut, seed)
    g = torch.Generator().manual_seed(seed)
    images = images * (0.2 + 0.8 * torch.rand(96, 1, 1, 1, generator=g))
    batches = [{"image": images[i : i + 16], "label": labels[i : i + 16]} for i in range(0, 96, 16)]
    audit_images, audit_labels = brains(8, shortcut, seed + 100, positives_only=True)
    audit = AttributionAuditHandler(
        audit_images,
        masks=BRAIN.expand(8, 1, -1, -1),
        labels=audit_labels,
        interval=3,
        target_layers="features",
        num_clusters=8,
        **audit_kwargs,
    )
    torch.manual_seed(seed)
    net = BrainNet()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=EPOCHS,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=3e-3),
        loss_function=nn.CrossEntropyLoss(),
        train_handlers=[audit],
    )
    return trainer, audit


def test_audit_flags_a_background_shortcut_and_not_a_clean_model():
    shortcut_trainer, shortcut_audit = _train_with_audit(shortcut=True, seed=0)
    with pytest.warns(AttributionAuditWarning, match="leave the brain mask"):
        shortcut_trainer.run()
    clean_trainer, clean_audit = _train_with_audit(shortcut=False, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttributionAuditWarning)
        clean_trainer.run()

    assert [h["epoch"] for h in shortcut_audit.history] == [3.0, 6.0]
    flagged, clean = shortcut_audit.history[-1], clean_audit.history[-1]
    # both models solved the task: the shortcut is the only class-1 evidence in its data
    assert flagged["accuracy"] == 1.0 and clean["accuracy"] == 1.0
    # the shortcut model's maps peak on the marker; the clean model's on the lesion inside the brain
    assert flagged["peak_outside"] >= 0.75
    assert clean["peak_outside"] <= 0.25
    assert flagged["alert"] == 1.0 and clean["alert"] == 0.0
    # and their mass moves out of the brain: about twice the clean model's share
    assert flagged["outside_mask"] > clean["outside_mask"] + 0.1
    assert clean["outside_mask"] < 0.3
    # the metrics reach engine.state.metrics under clear names, for StatsHandler and checkpoints
    for name in ("outside_mask", "outside_mask_max", "flagged", "peak_outside", "alert", "stability", "accuracy"):
        assert shortcut_trainer.state.metrics[f"audit_{name}"] == pytest.approx(flagged[name])


def test_audit_mass_threshold_alone_flags_the_shortcut():
    """The mass share alone separates them too. ClusCAM gives no attribution to the empty background (its noise is
    under the unmaskable tolerance), so the clean model keeps about 1% of its mass outside the brain and the
    shortcut model about 20%, on the marker: a threshold of 0.1 (not the mask's area) splits them."""
    kwargs = {"threshold": 0.1, "peak_threshold": 1.0}
    results = {}
    for shortcut in (True, False):
        trainer, audit = _train_with_audit(shortcut=shortcut, seed=1, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AttributionAuditWarning)
            trainer.run()
        results[shortcut] = audit.history[-1]
    assert results[True]["alert"] == 1.0 and results[True]["flagged"] >= 0.75
    assert results[False]["alert"] == 0.0 and results[False]["flagged"] == 0.0


def _trainer(net: nn.Module, handler: AttributionAuditHandler, epochs: int = 1, handlers=()) -> SupervisedTrainer:
    data = [{"image": torch.rand(4, 1, 32, 32), "label": torch.tensor([0, 1, 2, 0])}]
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0),
        loss_function=nn.CrossEntropyLoss(),
        train_handlers=[handler, *handlers],
    )


def _audit_set() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, _ = brains(5, shortcut=False, seed=3)
    return images, BRAIN.expand(5, 1, -1, -1).clone(), torch.tensor([0, 1, 2, 0, 1])


def test_audit_set_forms_agree_and_overlays(tmp_path):
    """Tensors, a list of dicts, a Dataset and a DataLoader give the same audit; overlays per epoch."""
    images, masks, labels = _audit_set()
    net = tiny_net()
    samples = [{"image": images[i], "mask": masks[i], "label": labels[i]} for i in range(5)]
    forms = {
        "tensor": {"data": images, "masks": masks, "labels": labels},
        "list": {"data": samples},
        "dataset": {"data": Dataset(samples)},
        "loader": {"data": DataLoader(Dataset(samples), batch_size=2)},
    }
    results = {}
    for name, form in forms.items():
        extra = {"output_dir": tmp_path / "audit", "preview": False} if name == "tensor" else {}
        audit = AttributionAuditHandler(**form, target_layers="features", num_clusters=4, audit_batch_size=3, **extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AttributionAuditWarning)
            _trainer(net, audit, epochs=2).run()
        results[name] = audit.history
    assert [h["epoch"] for h in results["tensor"]] == [1.0, 2.0]
    for name in ("list", "dataset", "loader"):
        for got, want in zip(results[name], results["tensor"], strict=True):
            assert got == pytest.approx(want), name
    for epoch in (1, 2):
        files = sorted(p.name for p in (tmp_path / "audit" / f"epoch_{epoch:04d}").glob("*.nii.gz"))
        assert files == [f"audit_{i:04d}_cluscam.nii.gz" for i in range(5)]


def test_audit_metrics_equal_an_independent_computation():
    """Each metric in engine.state.metrics recomputed here from ClusCAM's maps with plain torch: two audits, the
    network changed between them, the threshold set between the samples' shares so that some are flagged."""
    images, masks, labels = _audit_set()
    first, second = tiny_net(seed=0), tiny_net(seed=1)
    maps = {}
    for name, net in (("first", first), ("second", second)):
        maps[name] = ClusCAM(net, "features", num_clusters=4)(images, labels.tolist())[:, 0]
    brain = masks[:, 0]
    flat = maps["second"].flatten(1)
    outside = (flat * ~brain.flatten(1)).sum(1) / flat.sum(1)
    threshold = float(outside.sort().values[2:4].mean())  # between the 3rd and 4th share: 2 of 5 flagged
    peaks = flat == flat.amax(1, keepdim=True)
    # the default margin on 32 x 32 images is 1 voxel: the brain grown by its 4-neighbours
    grown = torch.from_numpy(np.stack([ndi.binary_dilation(b) for b in brain.numpy()]))
    peak_outside = (peaks & ~grown.flatten(1)).any(1).float()
    with torch.no_grad():
        accuracy = (second(images).argmax(1) == labels).float().mean()
    # the maps explain the labels; each class's mean share and share of peaks outside
    by_class = {int(c): (outside[labels == c].mean(), peak_outside[labels == c].mean()) for c in labels.unique()}
    correlation = [
        float(np.corrcoef(a.flatten(), b.flatten())[0, 1]) for a, b in zip(maps["first"], maps["second"], strict=True)
    ]

    audit = AttributionAuditHandler(
        images,
        masks=masks,
        labels=labels,
        target_layers="features",
        num_clusters=4,
        class_idx="label",
        threshold=threshold,
        peak_threshold=1.0,
        audit_batch_size=2,
        prefix="shortcut",
    )
    trainer = _trainer(first, audit)
    for epoch, net in ((1, first), (2, second)):
        trainer.network = net
        trainer.state.epoch = epoch
        audit(trainer)
    expected = {
        "shortcut_outside_mask": float(outside.mean()),
        "shortcut_outside_mask_max": float(outside.max()),
        "shortcut_flagged": 0.4,
        "shortcut_peak_outside": float(peak_outside.mean()),
        "shortcut_outside_mask_class_max": float(max(share for share, _ in by_class.values())),
        "shortcut_peak_outside_class_max": float(max(peak for _, peak in by_class.values())),
        "shortcut_alert": float(any(share > threshold for share, _ in by_class.values())),
        "shortcut_stability": float(np.mean(correlation)),
        "shortcut_accuracy": float(accuracy),
    }
    assert trainer.state.metrics == pytest.approx(expected, abs=1e-5)
    assert 0 < expected["shortcut_stability"] < 0.99, "the two networks' maps must differ for this to test anything"
    assert len(by_class) > 1, "the maps must explain several classes for the per-class figures to test anything"
    assert audit.alert_classes_ == [c for c, (share, _) in by_class.items() if share > threshold]
    assert audit.history[-1] == pytest.approx({"epoch": 2.0, **{k[9:]: v for k, v in expected.items()}}, abs=1e-5)


class _Recorder:
    """A stand-in for TensorBoard's SummaryWriter that MONAI's TensorBoardStatsHandler writes to."""

    def __init__(self) -> None:
        self.scalars: dict[tuple[str, int], float] = {}

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[(tag, step)] = value

    def flush(self) -> None:
        pass


def test_monai_stats_and_tensorboard_handlers_record_the_audit():
    """MONAI's StatsHandler and TensorBoardStatsHandler, attached after the audit, record its metrics at the
    audited epochs (2 and 4 of 4 with interval 2) and not at the others."""
    images, masks, labels = _audit_set()
    audit = AttributionAuditHandler(
        images, masks=masks, labels=labels, interval=2, target_layers="features", num_clusters=4
    )
    recorder = _Recorder()
    log = BufferingHandler(capacity=100)
    logger = logging.getLogger("audit_stats")
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    loggers = [
        StatsHandler(name="audit_stats", iteration_log=False),
        TensorBoardStatsHandler(summary_writer=recorder, iteration_log=False),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AttributionAuditWarning)
        _trainer(tiny_net(), audit, epochs=4, handlers=loggers).run()
    logger.removeHandler(log)
    assert [h["epoch"] for h in audit.history] == [2.0, 4.0]
    audited = {(f"audit_{k}", int(h["epoch"])): v for h in audit.history for k, v in h.items() if k != "epoch"}
    assert {key: v for key, v in recorder.scalars.items() if key[0].startswith("audit_")} == pytest.approx(audited)
    assert ("audit_stability", 4) in audited and ("audit_accuracy", 2) in audited
    # the epoch lines: the audit's metrics at epochs 2 and 4, nothing to print at 1 and 3 (none kept from before)
    lines = {
        int(m.group(1)): m.group(0)
        for r in log.buffer
        if (m := re.match(r"Epoch\[(\d+)\] Metrics -- .*", r.getMessage()))
    }
    assert sorted(lines) == [2, 4]
    for epoch, audited_epoch in zip((2, 4), audit.history, strict=True):
        for name in ("outside_mask", "peak_outside", "accuracy"):
            assert f"audit_{name}: {audited_epoch[name]:.4f}" in lines[epoch]


def test_tensorboard_event_files_hold_the_audit(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images, masks, _ = _audit_set()
    audit = AttributionAuditHandler(images, masks=masks, target_layers="features", num_clusters=4)
    board = TensorBoardStatsHandler(log_dir=str(tmp_path / "tb"), iteration_log=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AttributionAuditWarning)
        _trainer(tiny_net(), audit, epochs=1, handlers=[board]).run()
    board.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    [written] = events.Scalars("audit_outside_mask")
    assert written.step == 1 and written.value == pytest.approx(audit.history[0]["outside_mask"], abs=1e-6)


def test_audit_leaves_the_network_as_found():
    images, masks, _ = _audit_set()
    net = tiny_net()
    net.train()
    net.body.eval()  # a frozen part stays frozen
    net.head.weight.grad = torch.ones_like(net.head.weight)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    audit = AttributionAuditHandler(images, masks=masks, target_layers="features", method="gradcam")
    trainer = _trainer(net, audit)
    trainer.state.epoch = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AttributionAuditWarning)
        audit(trainer)
    assert len(audit.history) == 1
    assert net.training and not net.body.training and net.features.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(net.head.weight.grad, torch.ones_like(net.head.weight))
    assert net.body[0].weight.grad is None


def test_audit_without_masks_reports_the_other_signals():
    images, _, labels = _audit_set()
    audit = AttributionAuditHandler(images, labels=labels, target_layers="features", num_clusters=4)
    trainer = _trainer(tiny_net(), audit)
    trainer.run()
    assert set(audit.history[0]) == {"epoch", "accuracy"}
    assert "audit_outside_mask" not in trainer.state.metrics



@pytest.mark.parametrize("check, method, settings", [(True, "cluscam", {"num_clusters": 4}), (2, "gradcam", {})])
def test_randomization_check_metrics_equal_a_direct_check(check, method, settings):
    """The check's metrics are the mean last-step Spearman and SSIM of cascading_randomization run directly on the
    audit set with the same method, layer, settings and classes; the audit's batches do not change them."""
    images, masks, labels = _audit_set()
    net = tiny_net()
    direct = cascading_randomization(
        net, images, method, "features", num_steps=2, class_idx=labels, keep_maps=False, **settings
    )
    audit = AttributionAuditHandler(
        images, masks=masks, labels=labels, method=method, target_layers="features", class_idx="label",
        audit_batch_size=2, randomization_check=check, **settings,
    )
    trainer = _trainer(net, audit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AttributionAuditWarning)
        trainer.run()
    expected = {
        "audit_randomization_spearman": float(direct.spearman[-1].mean()),
        "audit_randomization_ssim": float(direct.ssim[-1].mean()),
    }
    assert {k: trainer.state.metrics[k] for k in expected} == pytest.approx(expected, abs=1e-5)
    assert audit.history[0]["randomization_spearman"] == pytest.approx(expected["audit_randomization_spearman"])
    # True: from the output down to the explained layer, "features"; 2: the top two layers, the same here
    assert direct.steps == ["head", "features"] and audit.randomized_layers_ == 2


class IntensityCAM(BaseCAM):
    """A model-blind explainer: the map is the input's intensity, whatever the network."""

    def maps(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        return x[:, :1]

    def weights(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        return torch.ones(x.shape[0], 1, device=x.device)


def test_randomization_check_warns_on_a_model_blind_method():
    images, masks, labels = _audit_set()
    register_method("intensity", IntensityCAM)
    try:
        audit = AttributionAuditHandler(
            images, masks=masks, labels=labels, method="intensity", target_layers="features", randomization_check=True
        )
        trainer = _trainer(tiny_net(), audit)
        with pytest.warns(AttributionAuditWarning, match="fail the parameter randomisation sanity check") as caught:
            trainer.run()
    finally:
        unregister_method("intensity")
    assert trainer.state.metrics["audit_randomization_spearman"] == pytest.approx(1.0)
    assert trainer.state.metrics["audit_randomization_ssim"] == pytest.approx(1.0)
    assert sum("sanity check" in str(w.message) for w in caught) == 1


def test_randomization_check_is_off_by_default(monkeypatch):
    """No check metrics and no call of the check at all unless asked."""

    def not_called(*args, **kwargs):
        raise AssertionError("the randomisation check ran without being asked")

    monkeypatch.setattr(audit_module, "cascading_randomization", not_called)
    images, masks, labels = _audit_set()
    audit = AttributionAuditHandler(images, masks=masks, labels=labels, target_layers="features", num_clusters=4)
    trainer = _trainer(tiny_net(), audit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AttributionAuditWarning)
        trainer.run()
    assert not [k for k in trainer.state.metrics if "randomization" in k]
    assert not [k for k in audit.history[0] if "randomization" in k]

@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "lime"}, "choose one of 'cluscam'"),
        ({"num_cluster": 3}, "does not take num_cluster"),
        ({"threshold": 1.5}, "threshold is a share"),
        ({"interval": 0}, "interval must be a positive int"),
        ({"class_idx": "target"}, "class_idx must be one of"),
        ({"log_dir": "runs"}, "does not take log_dir"),  # MONAI's TensorBoardStatsHandler writes the metrics
        ({"randomization_check": -1}, "randomization_check is a bool or a number of layers"),
        ({"randomization_check": 1.5}, "randomization_check is a bool or a number of layers"),
        ({"peak_margin": -1.0}, "peak_margin is a number of voxels"),
        ({"min_subject_part": 1.5}, "min_subject_part is a share"),
    ],
)
def test_audit_configuration_errors(kwargs, match):
    images, masks, _ = _audit_set()
    with pytest.raises(ValueError, match=match):
        AttributionAuditHandler(images, masks=masks, target_layers="features", **kwargs)


def test_audit_data_errors():
    images, masks, _ = _audit_set()
    with pytest.raises(ValueError, match="masks= and labels= go with a tensor"):
        AttributionAuditHandler([{"image": images[0]}], masks=masks, target_layers="features")
    bad = {
        "masks has 2 entries for 5": AttributionAuditHandler(images, masks=masks[:2], target_layers="features"),
        "has no labels": AttributionAuditHandler(images, masks=masks, target_layers="features", class_idx="label"),
        "audit set is empty": AttributionAuditHandler([], target_layers="features"),
        "some audit samples have masks": AttributionAuditHandler(
            [{"image": images[0], "mask": masks[0]}, {"image": images[1]}], target_layers="features"
        ),
        "does not exist in TinyNet": AttributionAuditHandler(images, target_layers="feature"),
    }
    for match, handler in bad.items():
        with pytest.raises(ValueError, match=match):
            _trainer(tiny_net(), handler).run()


# --- a marker in one class: the subject, the per-class alert, the wording ------------------------------------------
def _marked_audit_set(marked: int | None = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two brains of each of four classes on a black background; those of class ``marked`` carry a bright 4x4
    marker in the top-left corner. The masks are thresholded from the images (``foreground_mask``, as the 2D
    bundle makes them), so they hold the marker too: a part of 16 voxels beside a brain of 573."""
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(8) // 2
    images = torch.where(BRAIN, 0.4 + 0.4 * torch.rand(8, 1, 32, 32, generator=g), torch.zeros(()))
    images[labels == marked, :, 1:5, 1:5] = 1.0
    return images, torch.stack([foreground_mask(image) for image in images]), labels


def _marked_samples(images, masks, labels) -> list[dict]:
    named = [MetaTensor(image, affine=torch.eye(4), meta={"filename_or_obj": f"/data/scan_{i}.png"})
             for i, image in enumerate(images)]
    return [{"image": named[i], "mask": masks[i], "label": labels[i]} for i in range(len(images))]


@pytest.fixture
def intensity_method():
    register_method("intensity", IntensityCAM)
    yield "intensity"
    unregister_method("intensity")


def test_audit_alerts_on_a_marker_in_one_class_and_says_where(tmp_path, intensity_method):
    """A map that peaks on a marker in one class of four: 2 of 8 maps peak outside, under the audit set's threshold,
    but both maps of that class do, so the audit alerts and names the class, its samples, where they peak and the
    overlays to open; the other classes are not named."""
    images, masks, labels = _marked_audit_set(marked=0)
    assert masks[0, 0, 2, 2] and masks[0, 0, 2, 2] == masks[2, 0, 2, 2] + 1, "the thresholded mask holds the marker"
    audit = AttributionAuditHandler(
        _marked_samples(images, masks, labels), method=intensity_method, target_layers="features",
        class_idx="label", class_names=["Mild", "Moderate", "Non", "VeryMild"], output_dir=tmp_path,
    )
    with pytest.warns(AttributionAuditWarning, match="leave the brain mask") as caught:
        _trainer(tiny_net(num_classes=4), audit).run()
    [message] = [str(w.message) for w in caught if issubclass(w.category, AttributionAuditWarning)]
    result = audit.history[0]
    assert result["peak_outside"] == 0.25 and result["peak_outside_class_max"] == 1.0 and result["alert"] == 1.0
    assert audit.alert_classes_ == [0]
    marked, others = audit.samples_[:2], audit.samples_[2:]
    assert all(r["peak_outside"] == 1.0 and r["peak_voxel"] == [1, 1] and r["peak_distance"] > 5 for r in marked)
    assert all(r["peak_outside"] == 0.0 and r["peak_distance"] == 0.0 for r in others)
    assert "Maps explaining class 0 (Mild): 2 of 2 peak outside the mask" in message
    for record in marked:
        assert f"{os.path.basename(record['name'])} peaks at voxel (1, 1)" in message
        assert record["overlay"] in message and os.path.isfile(record["overlay"])
        assert record["overlay"].endswith(".png") and "epoch_0001" in record["overlay"]
    assert "class 1 (Moderate)" not in message and "scan_2.png" not in message
    assert "check the training images of that class" in message


def test_audit_counts_a_marker_in_the_mask_as_outside_the_subject(intensity_method):
    """The same audit with the masks as they are (min_subject_part=0) takes the marker for brain and stays quiet;
    without any marker neither alerts."""
    results = {}
    for name, marked, part in (("subject", 0, 0.05), ("mask as given", 0, 0.0), ("no marker", None, 0.05)):
        images, masks, labels = _marked_audit_set(marked)
        audit = AttributionAuditHandler(images, masks=masks, labels=labels, method=intensity_method,
                                        target_layers="features", class_idx="label", min_subject_part=part)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AttributionAuditWarning)
            _trainer(tiny_net(num_classes=4), audit).run()
        results[name] = audit.history[0]
    assert results["subject"]["alert"] == 1.0 and results["subject"]["outside_mask"] > 0
    assert results["mask as given"]["alert"] == 0.0 and results["mask as given"]["outside_mask"] == 0.0
    assert results["no marker"]["alert"] == 0.0 and results["no marker"]["peak_outside"] == 0.0


def test_subject_mask_keeps_the_large_parts_in_2d_and_3d():
    mask = torch.zeros(2, 1, 20, 20, dtype=torch.bool)
    mask[:, :, 5:15, 5:15] = True  # 100 voxels
    mask[0, :, 0:2, 0:2] = True  # 4: a marker, dropped
    mask[1, :, 16:20, 0:4] = True  # 16: kept at 0.1, dropped at 0.2
    mask[1, :, 15, 15] = True  # touches the brain's corner: part of it
    kept = subject_mask(mask, 0.1)
    assert not kept[0, 0, :2, :2].any() and kept[1, 0, 16:, :4].all() and kept[1, 0, 15, 15]
    assert not subject_mask(mask, 0.2)[1, 0, 16:, :4].any()
    assert torch.equal(subject_mask(mask, 0.0), mask) and torch.equal(subject_mask(mask[:, 0], 0.1), kept[:, 0])
    volume = torch.zeros(1, 1, 12, 12, 12)
    volume[..., 3:10, 3:10, 3:10] = 1
    volume[..., 0, 0, 0] = 1
    assert int(subject_mask(volume).sum()) == 7**3
    with pytest.raises(ValueError, match="min_part is a share"):
        subject_mask(mask, 2.0)


def test_peak_margin_and_distance():
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:12, 4:12] = True
    assert distance_to_mask(mask)[0, 0, 4, 15] == 4.0 and distance_to_mask(mask)[0, 0, 8, 8] == 0.0
    assert torch.isinf(distance_to_mask(torch.zeros(1, 1, 4, 4))).all()
    sal = torch.zeros(1, 1, 16, 16)
    sal[0, 0, 8, 14] = 1.0  # 3 voxels right of the mask
    assert [float(peak_outside_mask(sal, mask, m)) for m in (0.0, 2.0, 3.0, 4.0)] == [1.0, 1.0, 0.0, 0.0]
    assert peak_margin((128, 128)) == 4.0 and peak_margin((64, 64, 48)) == 1.5
    with pytest.raises(ValueError, match="margin is a number of voxels"):
        peak_outside_mask(sal, mask, -1.0)


def test_summary_per_class_alerts_on_one_class():
    """A shortcut in one class of four: the audit set's share of peaks outside stays at 2 of 7, that class's is 1."""
    peak_outside = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, float("nan")])  # the last map is blank
    outside = torch.tensor([0.3, 0.2, 0.0, 0.0, 0.01, 0.0, 0.0, float("nan")])
    classes = torch.arange(8) // 2
    overall = summarize_outside(outside, peak_outside)
    by_class = summarize_outside(outside, peak_outside, classes=classes)
    assert overall["alert"] == 0.0 and overall["peak_outside"] == pytest.approx(2 / 7)
    assert by_class["alert"] == 1.0 and by_class["peak_outside_class_max"] == 1.0
    assert by_class["outside_mask_class_max"] == pytest.approx(0.25)
    rows = outside_by_class(outside, peak_outside, classes)
    assert rows[3] == {"maps": 1.0, "outside_mask": 0.0, "peak_outside": 0.0}
    assert rows[0]["maps"] == 2.0 and rows[0]["outside_mask"] == pytest.approx(0.25)
    # one map in two of a class peaking outside is not more than half: no alert
    assert summarize_outside(outside, torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0]), classes=classes)["alert"] == 0.0

