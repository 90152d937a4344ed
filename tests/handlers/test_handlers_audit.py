"""AttributionAuditHandler: it flags a classifier that learned a shortcut outside the brain, and only that one."""

from __future__ import annotations

import logging
import re
import warnings
from logging.handlers import BufferingHandler

import numpy as np
import pytest
import torch
from handler_helpers import BRAIN, BrainNet, brains, tiny_net
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.handlers import StatsHandler, TensorBoardStatsHandler
from torch import nn

import monai_cluscam.handlers.audit as audit_module
from monai_cluscam import ClusCAM, register_method, unregister_method
from monai_cluscam.cam.base import BaseCAM, CAMState
from monai_cluscam.handlers import AttributionAuditHandler, AttributionAuditWarning
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
    """With the threshold set from the mask's area (the brain covers 56%) the mass share alone separates them."""
    kwargs = {"threshold": 0.3, "peak_threshold": 1.0}
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
        maps[name] = ClusCAM(net, "features", num_clusters=4)(images)[:, 0]
    brain = masks[:, 0]
    flat = maps["second"].flatten(1)
    outside = (flat * ~brain.flatten(1)).sum(1) / flat.sum(1)
    threshold = float(outside.sort().values[2:4].mean())  # between the 3rd and 4th share: 2 of 5 flagged
    peaks = flat == flat.amax(1, keepdim=True)
    peak_outside = (peaks & ~brain.flatten(1)).any(1).float()
    with torch.no_grad():
        accuracy = (second(images).argmax(1) == labels).float().mean()
    correlation = [
        float(np.corrcoef(a.flatten(), b.flatten())[0, 1]) for a, b in zip(maps["first"], maps["second"], strict=True)
    ]

    audit = AttributionAuditHandler(
        images,
        masks=masks,
        labels=labels,
        target_layers="features",
        num_clusters=4,
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
        "shortcut_alert": float(outside.mean() > threshold),
        "shortcut_stability": float(np.mean(correlation)),
        "shortcut_accuracy": float(accuracy),
    }
    assert trainer.state.metrics == pytest.approx(expected, abs=1e-5)
    assert 0 < expected["shortcut_stability"] < 0.99, "the two networks' maps must differ for this to test anything"
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
