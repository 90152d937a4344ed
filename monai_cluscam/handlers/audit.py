"""Audit a classifier while it trains: where do its explanations of a fixed audit set fall?

A model that learned a shortcut (a scanner tag, burnt-in text, a background marker) puts its attribution
outside the anatomy. Every few epochs :class:`AttributionAuditHandler` explains a fixed set of images with
the network being trained and measures how much of each map falls outside the brain mask.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.utils import optional_import
from torch import nn
from torch.utils.data import DataLoader

from monai_cluscam.handlers._common import (
    Engine,
    Events,
    engine_network,
    sample_name,
    split_batch,
)
from monai_cluscam.io import save_overlay
from monai_cluscam.metrics.localization import attribution_outside_mask, pointing_game
from monai_cluscam.transforms import class_index_of, make_explainer, resolve_method, wrap_like
from monai_cluscam.utils import eval_mode, forward_logits, model_device, plain_tensor

__all__ = ["AttributionAuditHandler", "AttributionAuditWarning"]

_CLASS_SOURCES = ("pred", "label")
#: maps are compared across audits on a grid of at most this many voxels per axis
_STABILITY_GRID = 32


class AttributionAuditWarning(UserWarning):
    """The audited network's explanations fall outside the subject beyond the configured threshold."""


class AttributionAuditHandler:
    """Every ``interval`` epochs of a ``SupervisedTrainer``, explain a fixed audit set with the trained network
    and report where the explanations fall.

    Signals, stored in ``engine.state.metrics`` under ``<prefix>_<name>`` (and in :attr:`history`):

    * ``outside_mask``: mean over the audit set of the share of each map's mass outside the brain mask
      (:func:`~monai_cluscam.metrics.localization.attribution_outside_mask`); ``outside_mask_max``: its
      worst sample; ``flagged``: share of samples above ``threshold``; ``peak_outside``: share of samples
      whose map peaks outside the mask (a pointing-game miss; blank maps are left out); ``alert``: 1.0 when
      ``outside_mask`` exceeds ``threshold`` or ``peak_outside`` exceeds ``peak_threshold``. These need masks.
    * ``stability``: mean Pearson correlation of each map with the same sample's map at the previous audit
      (from the second audit on); a low value means the explanations are still moving.
    * ``accuracy``: share of the audit set the network classifies right (when labels are given).

    The metrics are logged through the engine's logger (attach a ``StatsHandler`` after this handler to see
    them in its epoch line too) and written to TensorBoard when a ``summary_writer`` or ``log_dir`` is given
    and ``tensorboard`` is installed. On an alert an :class:`AttributionAuditWarning` is issued and logged.
    With ``output_dir`` the audit overlays of epoch ``e`` go to ``output_dir/epoch_{e:04d}/`` (existing files
    are kept; a sample that cannot be written is logged, and training goes on). The network is left as found
    (train/eval flags, parameters, gradients); the audit costs the explanations of the audit set and one
    forward pass for the accuracy.

    Why two alert criteria: the mass share depends on how much of the image the mask covers (a uniform map
    over a brain filling 56% of the image puts 44% outside), and perturbation maps such as ClusCAM's keep a
    diffuse floor over the anatomy. On a toy model that learned a marker in a background corner, ClusCAM's
    mean share outside rose from about 0.2 (a model looking at the brain) to about 0.45, below 0.5, while
    the maps of nearly every audit image peaked on the marker. Set ``threshold`` from the mask's area, and
    keep ``peak_threshold`` as the sharper signal. Audit the cases whose explanation matters (e.g. the
    positive cases): explanations of a "nothing found" class are rarely localised.

    Args:
        data: the audit set: a tensor ``(N, C, *spatial)`` (with ``masks``/``labels`` tensors), a sequence
            of per-sample dicts (a list or a MONAI ``Dataset``), or a ``DataLoader`` (or other iterable) of
            batched dicts; dicts hold the image under ``image_key`` and optionally ``mask_key``, ``label_key``.
            It is read at every audit: keep it fixed (no shuffling, no random transforms) so that audits compare.
        masks: ``(N, 1, *spatial)`` brain masks (bool or 0/1) when ``data`` is a tensor.
        labels: ``(N,)`` class labels when ``data`` is a tensor.
        interval: audit every this many epochs.
        method: ``"cluscam"`` (default) or a baseline, see :data:`monai_cluscam.transforms.METHODS`.
        target_layers: name of the layer to explain from.
        network: the network to audit; by default the trainer's ``network``.
        class_idx: ``"pred"`` (default: the predicted class), ``"label"``, or a fixed class index.
        image_key, mask_key, label_key: keys in dict data.
        threshold: the ``outside_mask`` level above which the audit warns.
        peak_threshold: the ``peak_outside`` level above which the audit warns.
        audit_batch_size: audit images explained together.
        output_dir: folder for the per-epoch overlays; none are written when None.
        preview: also write PNG previews of the overlays.
        summary_writer: a TensorBoard ``SummaryWriter`` (or anything with ``add_scalar``).
        log_dir: folder for a ``SummaryWriter`` this handler creates (needs ``tensorboard``).
        prefix: prefix of the metric names.
        method_args: the method's parameters (``num_clusters``, ``drop_ratio``, ``temperature``, ...).

    Example:
        >>> from monai.engines import SupervisedTrainer
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> images, masks = torch.rand(2, 1, 32, 32), torch.ones(2, 1, 32, 32, dtype=torch.bool)
        >>> masks[..., 12:20, 12:20] = False
        >>> audit = AttributionAuditHandler(images, masks=masks, target_layers="layer4", num_clusters=4)
        >>> train = [{"image": torch.rand(4, 1, 32, 32), "label": torch.tensor([0, 1, 0, 1])}]
        >>> trainer = SupervisedTrainer(
        ...     torch.device("cpu"), 1, train, net, torch.optim.SGD(net.parameters(), lr=0.01),
        ...     torch.nn.CrossEntropyLoss(), train_handlers=[audit])
        >>> trainer.run()
        >>> 0.0 <= trainer.state.metrics["audit_outside_mask"] <= 1.0
        True
    """

    def __init__(
        self,
        data: torch.Tensor | Sequence[Mapping] | Iterable[Mapping],
        masks: torch.Tensor | None = None,
        labels: torch.Tensor | Sequence[int] | None = None,
        interval: int = 1,
        method: str = "cluscam",
        target_layers: str = "layer4",
        network: nn.Module | None = None,
        class_idx: str | int = "pred",
        image_key: str = "image",
        mask_key: str = "mask",
        label_key: str = "label",
        threshold: float = 0.5,
        peak_threshold: float = 0.5,
        audit_batch_size: int = 8,
        output_dir: str | os.PathLike | None = None,
        preview: bool = True,
        summary_writer: Any | None = None,
        log_dir: str | os.PathLike | None = None,
        prefix: str = "audit",
        **method_args: Any,
    ) -> None:
        resolve_method(method, method_args)
        if not (class_idx in _CLASS_SOURCES or (isinstance(class_idx, int) and class_idx >= 0)):
            raise ValueError(f"class_idx must be one of {_CLASS_SOURCES} or a class index >= 0; got {class_idx!r}.")
        for name, value in (("interval", interval), ("audit_batch_size", audit_batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        for name, value in (("threshold", threshold), ("peak_threshold", peak_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a share, in [0, 1]; got {value!r}.")
        if not isinstance(data, torch.Tensor) and (masks is not None or labels is not None):
            raise ValueError("masks= and labels= go with a tensor of images; dict data holds them under its keys.")
        if isinstance(data, torch.Tensor) and data.ndim not in (4, 5):
            raise ValueError(f"audit images must be (N, C, H, W) or (N, C, H, W, D); got {tuple(data.shape)}.")
        self.data = data
        self.masks = masks
        self.labels = labels
        self.interval = interval
        self.method = method
        self.target_layers = target_layers
        self.network = network
        self.class_idx = class_idx
        self.image_key = image_key
        self.mask_key = mask_key
        self.label_key = label_key
        self.threshold = threshold
        self.peak_threshold = peak_threshold
        self.audit_batch_size = audit_batch_size
        self.output_dir = output_dir
        self.preview = preview
        self.summary_writer = summary_writer
        self.log_dir = log_dir
        self.prefix = prefix
        self.method_args = method_args
        self.history: list[dict[str, float]] = []
        self.explainer = None
        self._own_writer = False
        self._previous: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        """Audit on every ``interval``-th ``EPOCH_COMPLETED``; close a writer this handler opened on ``COMPLETED``."""
        if self.summary_writer is None and self.log_dir is not None:
            summary_writer, has_tensorboard = optional_import("torch.utils.tensorboard", name="SummaryWriter")
            if has_tensorboard:
                self.summary_writer = summary_writer(log_dir=str(self.log_dir))
                self._own_writer = True
            else:
                message = (
                    f"{type(self).__name__}: log_dir={str(self.log_dir)!r} given but tensorboard is not installed; "
                    "the audit is not written to TensorBoard (pip install tensorboard)."
                )
                warnings.warn(message, stacklevel=2)
                engine.logger.warning(message)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _close(self, engine: Engine) -> None:
        if self._own_writer and self.summary_writer is not None:
            self.summary_writer.close()

    # --- the audit set ------------------------------------------------------------------------
    def _samples(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, Any]]:
        """``(image, mask or None, label or None)`` for every audit sample, channel-first, unbatched."""
        data = self.data
        if isinstance(data, torch.Tensor):
            n = data.shape[0]
            for name, extra in (("masks", self.masks), ("labels", self.labels)):
                if extra is not None and len(extra) != n:
                    raise ValueError(f"{name} has {len(extra)} entries for {n} audit images; give one per image.")
            for i in range(n):
                mask = None if self.masks is None else self.masks[i]
                label = None if self.labels is None else self.labels[i]
                yield data[i], mask, label
            return
        sized = hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, DataLoader)
        items = (data[i] for i in range(len(data))) if sized else data
        for item in items:
            if not isinstance(item, Mapping) or self.image_key not in item:
                raise ValueError(
                    f"audit data must give dicts holding {self.image_key!r}; got "
                    f"{sorted(item) if isinstance(item, Mapping) else type(item).__name__}. Set image_key."
                )
            if sized:
                yield item[self.image_key], item.get(self.mask_key), item.get(self.label_key)
                continue
            images = split_batch(item[self.image_key])
            masks = split_batch(item[self.mask_key]) if self.mask_key in item else [None] * len(images)
            labels = split_batch(item[self.label_key]) if self.label_key in item else [None] * len(images)
            yield from zip(images, masks, labels, strict=True)

    def _chunks(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor | None, Any]]]:
        chunk = []
        for sample in self._samples():
            chunk.append(sample)
            if len(chunk) == self.audit_batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    # --- the audit ----------------------------------------------------------------------------
    def __call__(self, engine: Engine) -> None:
        """Run the audit for the epoch just completed."""
        network = engine_network(engine, self.network)
        if self.explainer is None or self.explainer.nn_module is not network:
            self.explainer = make_explainer(network, self.method, self.target_layers, **self.method_args)
        device = model_device(network)
        epoch = int(engine.state.epoch)
        outside, peaks_out, correct, coarse = [], [], [], []
        has_masks = has_labels = None
        index = unsaved = 0
        for chunk in self._chunks():
            images = [img for img, _, _ in chunk]
            masks = [m for _, m, _ in chunk]
            labels = [lab for _, _, lab in chunk]
            has_masks = _all_or_none(masks, "masks", has_masks)
            has_labels = _all_or_none(labels, "labels", has_labels)
            x = torch.stack([_plain(img) for img in images]).float().to(device)
            maps = self.explainer(x, self._classes(labels, has_labels))
            if has_masks:
                m = torch.stack([_plain(mask) for mask in masks]).to(maps.device)
                outside.append(attribution_outside_mask(maps, m).cpu())
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # blank maps: attribution_outside_mask has warned already
                    missed = (~pointing_game(maps, m)).float()
                blank = (maps.flatten(1) == 0).all(1)
                peaks_out.append(torch.where(blank, torch.full_like(missed, float("nan")), missed).cpu())
            if has_labels:
                with torch.no_grad(), eval_mode(network):
                    predicted = forward_logits(network, x).argmax(1).cpu()
                truth = torch.tensor([class_index_of(lab) for lab in labels])
                correct.append((predicted == truth).float())
            coarse.append(_coarse(maps.detach().float().cpu()))
            if self.output_dir is not None:
                folder = os.path.join(str(self.output_dir), f"epoch_{epoch:04d}")
                for i, img in enumerate(images):
                    unsaved += self._save(engine, wrap_like(maps[i].detach().cpu(), img), folder, index + i, img)
            index += len(chunk)
        if index == 0:
            raise ValueError(f"{type(self).__name__}: the audit set is empty; give at least one image.")
        if unsaved:
            message = f"{type(self).__name__}: {unsaved} audit overlay(s) of epoch {epoch} could not be written."
            warnings.warn(message, stacklevel=2)
        metrics = self._metrics(outside, peaks_out, correct, torch.cat(coarse))
        self._report(engine, epoch, metrics)

    def _classes(self, labels: list, has_labels: bool) -> list[int] | int | None:
        if self.class_idx == "pred":
            return None
        if isinstance(self.class_idx, int):
            return self.class_idx
        if not has_labels:
            raise ValueError(
                f"class_idx='label' but the audit set has no labels (labels= or {self.label_key!r}); "
                "give them or use class_idx='pred'."
            )
        return [class_index_of(lab) for lab in labels]

    def _save(self, engine: Engine, cam: MetaTensor, folder: str, index: int, image: Any) -> int:
        """Write one audit overlay; a failure (an existing file, a full disk) is logged and counted, not raised,
        so that the training goes on. Returns the number of failures (0 or 1)."""
        source = sample_name(image)
        name = f"audit_{index:04d}" + (f"_{os.path.basename(source)}" if source else "")
        try:
            save_overlay(
                cam,
                folder,
                image=image.detach().cpu() if isinstance(image, MetaTensor) else None,
                name=name,
                preview=self.preview,
            )
        except Exception as err:
            engine.logger.error(f"{type(self).__name__}: could not write the audit overlay {name}: {err}")
            return 1
        return 0

    def _metrics(self, outside: list, peaks_out: list, correct: list, coarse: torch.Tensor) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if outside:
            share = torch.cat(outside)
            valid = share[~torch.isnan(share)]
            if valid.numel():
                metrics["outside_mask"] = float(valid.mean())
                metrics["outside_mask_max"] = float(valid.max())
                metrics["flagged"] = float((valid > self.threshold).float().mean())
            missed = torch.cat(peaks_out)
            metrics["peak_outside"] = float(missed.nanmean()) if bool((~missed.isnan()).any()) else 0.0
            mass_alert = metrics.get("outside_mask", 0.0) > self.threshold
            metrics["alert"] = float(mass_alert or metrics["peak_outside"] > self.peak_threshold)
        if self._previous is not None and self._previous.shape == coarse.shape:
            metrics["stability"] = float(_pearson(coarse, self._previous).nanmean())
        self._previous = coarse
        if correct:
            metrics["accuracy"] = float(torch.cat(correct).mean())
        return metrics

    def _report(self, engine: Engine, epoch: int, metrics: dict[str, float]) -> None:
        named = {f"{self.prefix}_{key}": value for key, value in metrics.items()}
        engine.state.metrics.update(named)
        self.history.append({"epoch": float(epoch), **metrics})
        if self.summary_writer is not None:
            for key, value in named.items():
                self.summary_writer.add_scalar(key, value, epoch)
        text = ", ".join(f"{key}={value:.4f}" for key, value in named.items())
        engine.logger.info(f"{type(self).__name__}: epoch {epoch} ({self.method}, {self.target_layers}): {text}")
        if metrics.get("alert"):
            message = (
                f"{type(self).__name__}: at epoch {epoch} the explanations leave the brain mask: "
                f"{metrics.get('outside_mask', float('nan')):.0%} of the attribution falls outside it on average "
                f"(threshold {self.threshold:.0%}) and {metrics['peak_outside']:.0%} of the audit maps peak outside "
                f"it (threshold {self.peak_threshold:.0%}). The network may be learning a shortcut outside the "
                "anatomy (markers, text, background); inspect the audit overlays."
            )
            warnings.warn(message, AttributionAuditWarning, stacklevel=2)
            engine.logger.warning(message)


def _plain(t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"audit images and masks must be torch.Tensors; got {type(t).__name__}.")
    return plain_tensor(t)


def _all_or_none(values: list, name: str, before: bool | None) -> bool:
    present = [v is not None for v in values]
    if any(present) != all(present) or (before is not None and before != all(present)):
        raise ValueError(f"some audit samples have {name} and others not; give {name} for all or none.")
    return all(present)


def _coarse(maps: torch.Tensor) -> torch.Tensor:
    """``(B, 1, *spatial)`` maps average-pooled to at most :data:`_STABILITY_GRID` voxels per axis, flattened."""
    size = [min(s, _STABILITY_GRID) for s in maps.shape[2:]]
    pool = F.adaptive_avg_pool2d if len(size) == 2 else F.adaptive_avg_pool3d
    return pool(maps, size).flatten(1)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of ``(B, N)`` tensors; NaN where a row is constant."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-12), torch.full_like(denom, float("nan")))
