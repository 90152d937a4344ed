"""Audit a classifier while it trains: where do its explanations of a fixed audit set fall?

A model that learned a shortcut (a scanner tag, burnt-in text, a background marker) puts its attribution
outside the anatomy. Every few epochs :class:`AttributionAuditHandler` explains a fixed set of images with
the network being trained, measures how much of each map falls outside the brain mask, and puts the numbers
into the engine's metrics, where MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` write them.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from torch import nn

from monai_cluscam.handlers._audit_samples import AuditBatch, audit_batches, audit_samples
from monai_cluscam.handlers._common import Engine, Events, engine_network, sample_name
from monai_cluscam.io import save_overlay
from monai_cluscam.metrics.audit import (
    SUBJECT_MIN_PART,
    coarse_maps,
    distance_to_mask,
    map_correlation,
    outside_by_class,
    peak_margin,
    peak_outside_mask,
    peak_voxels,
    subject_mask,
    summarize_outside,
)
from monai_cluscam.metrics.localization import attribution_outside_mask
from monai_cluscam.metrics.sanity import DEFAULT_THRESHOLD, cascade_steps_to, cascading_randomization
from monai_cluscam.transforms import make_explainer, resolve_method, wrap_like
from monai_cluscam.utils import eval_mode, forward_logits, model_device, plain_tensor

__all__ = ["AttributionAuditHandler", "AttributionAuditWarning"]

_CLASS_SOURCES = ("pred", "label")


class AttributionAuditWarning(UserWarning):
    """The audited network's explanations fall outside the subject beyond the configured threshold."""


class AttributionAuditHandler:
    """Every ``interval`` epochs of a ``SupervisedTrainer``, explain a fixed audit set with the trained network
    and put into ``engine.state.metrics`` where the explanations fall.

    The metrics, named ``<prefix>_<name>`` (``audit_outside_mask``, ...; also kept in :attr:`history`):

    * ``outside_mask``: mean over the audit set of the share of each map's mass outside the subject
      (:func:`~monai_cluscam.metrics.localization.attribution_outside_mask`); ``outside_mask_max``: its
      worst sample; ``flagged``: share of samples above ``threshold``; ``peak_outside``: share of samples
      whose map peaks outside the subject, farther than ``peak_margin`` voxels from it
      (:func:`~monai_cluscam.metrics.audit.peak_outside_mask`; blank maps are left out);
      ``outside_mask_class_max`` and ``peak_outside_class_max``: the same two for the worst class, the maps
      grouped by the class they explain (:func:`~monai_cluscam.metrics.audit.outside_by_class`); ``alert``:
      1.0 when a share outside exceeds ``threshold`` or a share of peaks outside exceeds ``peak_threshold``,
      over the audit set or for one class (:func:`~monai_cluscam.metrics.audit.summarize_outside`). The
      subject is the mask less its small stray parts (:func:`~monai_cluscam.metrics.audit.subject_mask`). These
      need masks; the classes that alerted are in :attr:`alert_classes_`, each sample's figures (where its map
      peaks, how far outside, its overlay file) in :attr:`samples_`.
    * ``stability``: mean Pearson correlation of each map with the same sample's map at the previous audit
      (from the second audit on); a low value means the explanations are still moving.
    * ``accuracy``: share of the audit set the network classifies right (when labels are given).
    * ``randomization_spearman`` and ``randomization_ssim`` (with ``randomization_check``): the parameter
      randomisation sanity check (Adebayo et al., NeurIPS 2018) run on the audit set with the same method, layer
      and settings: :func:`~monai_cluscam.metrics.sanity.cascading_randomization` re-initialises the top
      ``randomization_check`` layers of a copy of the network (``True``: from the output down to the explained
      layer, :func:`~monai_cluscam.metrics.sanity.cascade_steps_to`) and re-explains;
      the metrics are the mean over the audit set of the last step's Spearman rank correlation and SSIM with the
      trained network's maps. When the mean correlation is not below
      :data:`~monai_cluscam.metrics.sanity.DEFAULT_THRESHOLD` (0.5) the maps barely depend on the network and an
      :class:`AttributionAuditWarning` is issued and logged. Off by default; it costs a copy of the network and
      one more explanation of the audit set per randomised layer, plus one, per audit.

    They are in ``engine.state.metrics`` from the audited epoch's ``EPOCH_COMPLETED`` until the next epoch
    starts, so that loggers record them at the audited epochs only. This handler writes no log line of its
    own: attach MONAI's ``StatsHandler`` (the epoch line) and ``TensorBoardStatsHandler`` (a scalar per metric
    and audited epoch, needs ``tensorboard``) after it, as in the example. On an alert an
    :class:`AttributionAuditWarning` is issued and logged. With ``output_dir`` the audit overlays of epoch
    ``e`` go to ``output_dir/epoch_{e:04d}/`` (existing files are kept; a sample that cannot be written is
    logged, and training goes on). The network is left as found (train/eval flags, parameters, gradients);
    the audit costs the explanations of the audit set (the accuracy and the predicted classes reuse their forward
    pass, ``logits_``, when the explainer keeps it; else one more forward pass).

    What the audit measures, and why so: a shortcut lives in the background, where a perturbation method such as
    ClusCAM gives no attribution unless the input is there to mask (its ``zero_unmaskable``: the empty black
    background of a skull-stripped scan gets none), so a marker or burnt-in text is where the map of a model that
    reads it peaks, while a model that looks at the brain peaks on the brain. Three things keep that signal:

    * the subject is the mask's large parts only: a mask thresholded from the image (the bundle's
      :func:`~monai_cluscam.data.foreground_mask`) holds the marker too, as a small part of its own, and would
      count the attribution on it as "on the brain" (``min_subject_part``);
    * a peak counts as outside only beyond ``peak_margin`` voxels from the subject (default 1/32 of the image's
      side): the dark, not quite black voxels on the brain's edge keep some attribution;
    * the alert also looks at each class alone: a shortcut in one class of four moves a quarter of the audit's
      maps at most, never the audit set's share over 0.5; with two audit slices a class, a class alerts when both
      of its maps peak outside.

    On the Alzheimer MRI bundle's recipe (``benchmarks/shortcut_audit.py``) the shipped model's audit maps all
    peak inside the brain, with under 1 % of their attribution outside it. Audit the cases whose explanation
    matters (e.g. the positive cases): explanations of a "nothing found" class are rarely localised.

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
        threshold: the ``outside_mask`` level (overall or of a class) above which the audit warns.
        peak_threshold: the ``peak_outside`` level (overall or of a class) above which the audit warns.
        peak_margin: voxels around the subject within which a map's peak still counts as on it; None (default):
            :func:`~monai_cluscam.metrics.audit.peak_margin`, 1/32 of the image's shortest side (4 on 128 x 128).
        min_subject_part: parts of a mask smaller than this share of its largest part are not the subject
            (:func:`~monai_cluscam.metrics.audit.subject_mask`); 0 takes masks as they are.
        class_names: names of the classes, for the alert's wording (``class 0 (Mild_Demented)``).
        audit_batch_size: audit images explained together.
        output_dir: folder for the per-epoch overlays; none are written when None.
        preview: also write PNG previews of the overlays.
        prefix: prefix of the metric names.
        randomization_check: run the parameter-randomisation check at each audit: ``False`` (default) or 0 not,
            ``True`` with every layer from the output down to the explained one randomised (a map must not survive
            that, whatever the method: randomising only the output layer leaves ClusCAM's clusters, made from the
            explained layer's activations, as they were), or an int ``n``: the top ``n`` layers of the cascade
            (:func:`~monai_cluscam.metrics.sanity.cascade_layers`) randomised cumulatively.
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
        >>> print(*sorted(k for k in trainer.state.metrics if k.startswith("audit_")))  # doctest: +NORMALIZE_WHITESPACE
        audit_alert audit_flagged audit_outside_mask audit_outside_mask_class_max audit_outside_mask_max
        audit_peak_outside audit_peak_outside_class_max

    To log and plot the audit, list MONAI's handlers after it (they read ``engine.state.metrics`` on the same
    ``EPOCH_COMPLETED``, so they must run after the audit)::

        from monai.handlers import StatsHandler, TensorBoardStatsHandler

        train_handlers = [
            audit,
            StatsHandler(iteration_log=False),  # "Epoch[5] Metrics -- audit_outside_mask: 0.4312 ..."
            TensorBoardStatsHandler(log_dir="runs", iteration_log=False),  # one scalar per metric and audit
        ]

    The 2D bundle's ``configs/train.json`` does the same, with the TensorBoard handler disabled when
    ``tensorboard`` is not installed.
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
        peak_margin: float | None = None,
        min_subject_part: float = SUBJECT_MIN_PART,
        class_names: Sequence[str] | None = None,
        audit_batch_size: int = 8,
        output_dir: str | os.PathLike | None = None,
        preview: bool = True,
        prefix: str = "audit",
        randomization_check: bool | int = False,
        **method_args: Any,
    ) -> None:
        resolve_method(method, method_args)
        if not (class_idx in _CLASS_SOURCES or (isinstance(class_idx, int) and class_idx >= 0)):
            raise ValueError(f"class_idx must be one of {_CLASS_SOURCES} or a class index >= 0; got {class_idx!r}.")
        for name, value in (("interval", interval), ("audit_batch_size", audit_batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        if not isinstance(randomization_check, int) or randomization_check < 0:
            raise ValueError(
                f"randomization_check is a bool or a number of layers >= 0 to randomise; got {randomization_check!r}."
            )
        for name, value in (
            ("threshold", threshold), ("peak_threshold", peak_threshold), ("min_subject_part", min_subject_part)
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a share, in [0, 1]; got {value!r}.")
        if peak_margin is not None and not (isinstance(peak_margin, (int, float)) and 0 <= peak_margin < math.inf):
            raise ValueError(
                f"peak_margin is a number of voxels >= 0 (or None: 1/32 of the image's side); got {peak_margin!r}."
            )
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
        self.peak_margin = peak_margin
        self.min_subject_part = min_subject_part
        self.class_names = list(class_names) if class_names is not None else None
        self.audit_batch_size = audit_batch_size
        self.output_dir = output_dir
        self.preview = preview
        self.prefix = prefix
        self.randomization_check = randomization_check if randomization_check is True else int(randomization_check)
        self.randomized_layers_: int | None = None
        self.method_args = method_args
        self.history: list[dict[str, float]] = []
        self.samples_: list[dict[str, Any]] = []
        self.alert_classes_: list[int] = []
        self.explainer = None
        self._previous: torch.Tensor | None = None
        self._stored: list[str] = []
        self._margin_used = 0.0

    def attach(self, engine: Engine) -> None:
        """Audit on every ``interval``-th ``EPOCH_COMPLETED``; clear the audit's metrics on ``EPOCH_STARTED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._clear_metrics)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        """Run the audit for the epoch just completed: gather samples, explain, score, store the metrics, save the
        overlays, alert."""
        network = engine_network(engine, self.network)
        if self.explainer is None or self.explainer.nn_module is not network:
            self.explainer = make_explainer(network, self.method, self.target_layers, **self.method_args)
        epoch = int(engine.state.epoch)
        scores: dict[str, list[torch.Tensor]] = {
            "outside": [], "peak_outside": [], "classes": [], "correct": [], "coarse": [], "spearman": [], "ssim": []
        }
        unsaved = 0
        self.samples_ = []
        samples = audit_samples(self.data, self.masks, self.labels, self.image_key, self.mask_key, self.label_key)
        for batch in audit_batches(samples, self.audit_batch_size):
            maps = self._explain(network, batch)
            for key, value in self._score(network, batch, maps).items():
                scores[key].append(value)
            if self.randomization_check:
                for key, value in self._randomize(network, batch).items():
                    scores[key].append(value)
            unsaved += self._save_overlays(engine, batch, maps, epoch)
        if not scores["coarse"]:
            raise ValueError(f"{type(self).__name__}: the audit set is empty; give at least one image.")
        if unsaved:
            message = f"{type(self).__name__}: {unsaved} audit overlay(s) of epoch {epoch} could not be written."
            warnings.warn(message, stacklevel=2)
        metrics = self._summarize({key: torch.cat(values) for key, values in scores.items() if values})
        self._store_metrics(engine, epoch, metrics)
        for message in self._alerts(epoch, metrics):
            warnings.warn(message, AttributionAuditWarning, stacklevel=2)
            engine.logger.warning(message)

    def _classes(self, batch: AuditBatch) -> Sequence[int] | int | None:
        """The classes to explain in one batch, as ``class_idx`` says (None: the predicted ones)."""
        if self.class_idx == "label" and batch.labels is None:
            raise ValueError(
                f"class_idx='label' but the audit set has no labels (labels= or {self.label_key!r}); "
                "give them or use class_idx='pred'."
            )
        return batch.labels if self.class_idx == "label" else None if self.class_idx == "pred" else self.class_idx

    def _explain(self, network: nn.Module, batch: AuditBatch) -> torch.Tensor:
        """The audit maps of one batch, for the class ``class_idx`` says."""
        return self.explainer(batch.x.to(model_device(network)), self._classes(batch)).detach()

    def _randomized_layers(self, network: nn.Module) -> int:
        """How many layers of the cascade the randomisation check re-initialises (kept in ``randomized_layers_``)."""
        steps = self.randomization_check
        self.randomized_layers_ = cascade_steps_to(network, self.target_layers) if steps is True else steps
        return self.randomized_layers_

    def _randomize(self, network: nn.Module, batch: AuditBatch) -> dict[str, torch.Tensor]:
        """Per-sample last-step Spearman correlation and SSIM of the randomisation check on one batch."""
        result = cascading_randomization(
            network,
            batch.x.to(model_device(network)),
            self.method,
            self.target_layers,
            num_steps=self._randomized_layers(network),
            class_idx=self._classes(batch),
            keep_maps=False,
            **self.method_args,
        )
        return {"spearman": result.spearman[-1].cpu(), "ssim": result.ssim[-1].cpu()}

    def _margin(self, maps: torch.Tensor) -> float:
        """The margin around the subject within which a peak counts as on it, in voxels."""
        return float(self.peak_margin) if self.peak_margin is not None else peak_margin(maps.shape[2:])

    def _score(self, network: nn.Module, batch: AuditBatch, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample scores of one batch: shares and peaks outside the subject masks, the explained classes,
        correctness, coarse maps; a record per sample in ``samples_``."""
        scores = {"coarse": coarse_maps(maps.cpu())}
        predicted = None
        if batch.labels is not None or self.class_idx == "pred":
            logits = getattr(self.explainer, "logits_", None)  # the explanation's forward pass, when it keeps it
            if not isinstance(logits, torch.Tensor) or logits.shape[0] != len(maps):
                with torch.no_grad(), eval_mode(network):
                    logits = forward_logits(network, batch.x.to(model_device(network)))
            predicted = logits.detach().argmax(1).cpu()
        if batch.labels is not None:
            scores["correct"] = (predicted == torch.tensor(batch.labels)).float()
        explained = self._classes(batch)
        explained = predicted if explained is None else torch.as_tensor(explained).flatten().expand(len(maps))
        records = [
            {"index": batch.start + i, "name": sample_name(image) or "", "class": int(explained[i])}
            for i, image in enumerate(batch.images)
        ]
        if batch.labels is not None:
            for record, label in zip(records, batch.labels, strict=True):
                record["label"] = int(label)
        if batch.masks is not None:
            masks = subject_mask(batch.masks, self.min_subject_part).to(maps.device)
            scores["outside"] = attribution_outside_mask(maps, masks).cpu()
            self._margin_used = self._margin(maps)
            scores["peak_outside"] = peak_outside_mask(maps, masks, self._margin_used).cpu()
            scores["classes"] = explained.cpu()
            peaks = peak_voxels(maps).cpu()
            peak_index = plain_tensor(maps).flatten(1).argmax(1, keepdim=True).cpu()
            at_peak = distance_to_mask(masks).flatten(1).cpu().gather(1, peak_index)
            for i, record in enumerate(records):
                record.update(
                    outside_mask=float(scores["outside"][i]),
                    peak_outside=float(scores["peak_outside"][i]),
                    peak_voxel=peaks[i].tolist(),
                    peak_distance=float(at_peak[i, 0]),
                )
        self.samples_.extend(records)
        return scores

    def _summarize(self, scores: dict[str, torch.Tensor]) -> dict[str, float]:
        """The audit set's metrics from the per-sample scores; the coarse maps are kept for the next audit."""
        metrics: dict[str, float] = {}
        self.alert_classes_ = []
        if "outside" in scores:
            metrics.update(
                summarize_outside(
                    scores["outside"], scores["peak_outside"], self.threshold, self.peak_threshold, scores["classes"]
                )
            )
            by_class = outside_by_class(scores["outside"], scores["peak_outside"], scores["classes"])
            self.alert_classes_ = [
                c for c, row in by_class.items()
                if row["peak_outside"] > self.peak_threshold or row["outside_mask"] > self.threshold
            ]
        coarse = scores["coarse"]
        if self._previous is not None and self._previous.shape == coarse.shape:
            metrics["stability"] = float(map_correlation(coarse, self._previous).nanmean())
        self._previous = coarse
        if "correct" in scores:
            metrics["accuracy"] = float(scores["correct"].mean())
        if "spearman" in scores:
            metrics["randomization_spearman"] = float(scores["spearman"].mean())
            metrics["randomization_ssim"] = float(scores["ssim"].mean())
        return metrics

    def _store_metrics(self, engine: Engine, epoch: int, metrics: dict[str, float]) -> None:
        named = {f"{self.prefix}_{key}": value for key, value in metrics.items()}
        engine.state.metrics.update(named)
        self._stored = list(named)
        self.history.append({"epoch": float(epoch), **metrics})

    def _clear_metrics(self, engine: Engine) -> None:
        """Remove the last audit's metrics, so that epoch loggers do not repeat them at epochs not audited."""
        for key in self._stored:
            engine.state.metrics.pop(key, None)
        self._stored = []

    def _save_overlays(self, engine: Engine, batch: AuditBatch, maps: torch.Tensor, epoch: int) -> int:
        """Write the batch's audit overlays under ``output_dir/epoch_{epoch:04d}``; returns how many failed."""
        if self.output_dir is None:
            return 0
        folder = os.path.join(str(self.output_dir), f"epoch_{epoch:04d}")
        maps = maps.cpu()
        return sum(
            self._save(engine, wrap_like(maps[i], image), folder, batch.start + i, image)
            for i, image in enumerate(batch.images)
        )

    def _save(self, engine: Engine, cam: MetaTensor, folder: str, index: int, image: Any) -> int:
        """Write one audit overlay; a failure (an existing file, a full disk) is logged and counted, not raised,
        so that the training goes on. Returns the number of failures (0 or 1)."""
        source = sample_name(image)
        name = f"audit_{index:04d}" + (f"_{os.path.basename(source)}" if source else "")
        try:
            [files] = save_overlay(
                cam,
                folder,
                image=image.detach().cpu() if isinstance(image, MetaTensor) else None,
                name=name,
                preview=self.preview,
            )
        except Exception as err:
            engine.logger.error(f"{type(self).__name__}: could not write the audit overlay {name}: {err}")
            return 1
        if index < len(self.samples_):
            self.samples_[index]["overlay"] = str(files.preview or files.nifti)
        return 0

    def _class_name(self, c: int) -> str:
        if self.class_names is not None and 0 <= c < len(self.class_names):
            return f"class {c} ({self.class_names[c]})"
        return f"class {c}"

    def _outside_message(self, epoch: int, metrics: dict[str, float]) -> str:
        """The alert's wording: the figures, then for each class that alerts its maps (worst first) with where
        they peak and which overlay file to open, and what to look for."""
        margin = self._margin_used
        lines = [
            f"{type(self).__name__}: at epoch {epoch} the explanations leave the brain mask: "
            f"{metrics.get('outside_mask', float('nan')):.0%} of the attribution falls outside it on average "
            f"(threshold {self.threshold:.0%}) and {metrics['peak_outside']:.0%} of the audit maps peak outside it, "
            f"more than {margin:g} voxel{'' if margin == 1 else 's'} from it (threshold {self.peak_threshold:.0%}; "
            f"in the worst class {metrics.get('peak_outside_class_max', metrics['peak_outside']):.0%})."
        ]
        overlays = []
        for c in self.alert_classes_:
            members = [r for r in self.samples_ if r["class"] == c and "outside_mask" in r]
            peaking = [r for r in members if r["peak_outside"] == 1.0]
            share = sum(r["outside_mask"] for r in members) / max(len(members), 1)
            shown = sorted(members, key=lambda r: (-r["peak_outside"], -r["outside_mask"]))[:4]
            where = "; ".join(
                f"#{r['index']}" + (f" {os.path.basename(r['name'])}" if r["name"] else "")
                + f" peaks at voxel {tuple(r['peak_voxel'])}, "
                + (f"{r['peak_distance']:.0f} voxels outside the mask" if r["peak_distance"] > 0 else "inside the mask")
                + f", {r['outside_mask']:.0%} of its map outside"
                for r in shown
            )
            lines.append(
                f"Maps explaining {self._class_name(c)}: {len(peaking)} of {len(members)} peak outside the mask, "
                f"{share:.0%} of their attribution lies outside it ({where})."
            )
            overlays += [r["overlay"] for r in shown if r.get("overlay")]
        named = ", ".join(self._class_name(c) for c in self.alert_classes_) or "the audit set"
        advice = (
            f"The network may be using a shortcut outside the anatomy for {named} (a marker, burnt-in text, the "
            "background) rather than the brain: look at what those images show at the peak voxels"
        )
        if overlays:
            advice += f" and open the audit overlays {', '.join(overlays)}"
        elif self.output_dir is None:
            advice += " (give output_dir= to have the audit write its overlays)"
        lines.append(advice + "; check the training images of that class for the same mark.")
        return " ".join(lines)

    def _alerts(self, epoch: int, metrics: dict[str, float]) -> list[str]:
        """The audit's warnings: the ``alert`` raised, the randomisation check failed."""
        messages = []
        if metrics.get("alert"):
            messages.append(self._outside_message(epoch, metrics))
        if metrics.get("randomization_spearman", float("-inf")) >= DEFAULT_THRESHOLD:
            messages.append(
                f"{type(self).__name__}: at epoch {epoch} the {self.method!r} explanations fail the parameter "
                f"randomisation sanity check: with the top {self.randomized_layers_} layer(s) of the network "
                f"re-initialised, the maps keep a mean rank correlation of {metrics['randomization_spearman']:.2f} "
                f"(SSIM {metrics['randomization_ssim']:.2f}) with the trained network's (threshold "
                f"{DEFAULT_THRESHOLD}). They barely depend on the model; do not read them as what the network looks at."
            )
        return messages
