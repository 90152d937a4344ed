"""Ignite handlers for the saliency metrics, to attach to MONAI's engines like ``monai.handlers.MeanDice``.

Each handler wraps one metric of :mod:`monai_cluscam.metrics` and reads, on every ``ITERATION_COMPLETED``,
the maps and their reference through ``output_transform``:

- faithfulness handlers (:class:`AverageDrop`, :class:`IncreaseInConfidence`, :class:`AverageGain`,
  :class:`DeletionAUC`, :class:`InsertionAUC`) default to ``from_engine(["cam", "image"])``: the maps a
  ``ClusCAMHandler`` stores under ``"cam"`` and the images they explain. An ``output_transform`` returning a
  third item gives the class explained per sample, e.g. ``from_engine(["cam", "image", "label"])``; without
  it, each sample's predicted class is scored (the class ``ClusCAMHandler`` explains by default).
- localisation handlers (:class:`PointingGame`, :class:`EnergyPointingGame`, :class:`AttributionOutsideMask`)
  default to ``from_engine(["cam", "mask"])``: the maps and a region or subject mask.

``output_transform`` sees ``engine.state.output`` with, for each sample, the keys of its ``engine.state.batch``
that the output lacks, as MONAI's ``postprocessing`` sees them: a ``"mask"`` loaded with the images reaches the
handler without being copied into the output. Decollated lists (MONAI's default) and batched tensors both work;
a whole batch is scored at once, so its masked forward passes share chunks.

Maps that are NaN everywhere (a sample ``ClusCAMHandler`` failed to explain) score nan, with a warning, and the
mean skips them. ``engine.state.metrics[name]`` holds the mean; with ``save_details`` (default)
``engine.state.metric_details[name]`` holds the ``(N, 1)`` per-sample values.

Example:
    >>> import torch
    >>> from monai.engines import SupervisedEvaluator
    >>> from monai_cluscam.handlers import AverageDrop, DeletionAUC
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    >>> data = [{"image": torch.rand(2, 1, 4, 4), "label": torch.tensor([0, 1])}]
    >>> add_cam = lambda d: {**d, "cam": d["image"].clamp(0, 1)}  # stands in for ClusCAMHandler
    >>> evaluator = SupervisedEvaluator(
    ...     device=torch.device("cpu"), val_data_loader=data, network=net, postprocessing=add_cam,
    ...     key_val_metric={"average_drop": AverageDrop(net)},
    ...     additional_metrics={"deletion_auc": DeletionAUC(net, steps=4)},
    ... )
    >>> evaluator.run()
    >>> sorted(evaluator.state.metrics)
    ['average_drop', 'deletion_auc']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from monai.handlers import IgniteMetricHandler
from monai.handlers.utils import from_engine
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from monai_cluscam.metrics.base import SaliencyMetric
from monai_cluscam.metrics.faithfulness import (
    AverageDropMetric,
    AverageGainMetric,
    Baseline,
    DeletionAUCMetric,
    IncreaseInConfidenceMetric,
    InsertionAUCMetric,
)
from monai_cluscam.metrics.localization import (
    AttributionOutsideMaskMetric,
    EnergyPointingGameMetric,
    PointingGameMetric,
)

if TYPE_CHECKING:
    from ignite.engine import Engine
    from ignite.metrics.metric import reinit__is_reduced
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    reinit__is_reduced, _ = optional_import(
        "ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced", as_type="decorator"
    )

__all__ = [
    "AttributionOutsideMask",
    "AverageDrop",
    "AverageGain",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "PointingGame",
    "SaliencyMetricHandler",
]

_FAITHFULNESS_KEYS = ("cam", "image")
_LOCALIZATION_KEYS = ("cam", "mask")


def _with_batch_keys(batch: Any, output: Any) -> Any:
    """``output`` with each sample's batch keys filled in where the output lacks them (dicts or lists of dicts)."""
    if isinstance(batch, Mapping) and isinstance(output, Mapping):
        return {**batch, **output}
    if (
        isinstance(batch, Sequence)
        and isinstance(output, Sequence)
        and len(batch) == len(output)
        and all(isinstance(b, Mapping) and isinstance(o, Mapping) for b, o in zip(batch, output, strict=True))
    ):
        return [{**b, **o} for b, o in zip(batch, output, strict=True)]
    return output


class SaliencyMetricHandler(IgniteMetricHandler):
    """Base of the handlers here: an :class:`monai.handlers.IgniteMetricHandler` whose ``output_transform`` sees the
    batch keys too and may return ``(saliency, reference)`` or, for faithfulness metrics,
    ``(saliency, images, class_idx)``; a whole batch goes to the metric in one call.

    Args:
        metric_fn: the :class:`~monai_cluscam.metrics.base.SaliencyMetric` to update.
        output_transform: extracts the items from the engine output (see the module docstring).
        save_details: keep the per-sample values in ``engine.state.metric_details``.
        accepts_class_idx: whether a third item (the class per sample) is allowed.
    """

    def __init__(
        self,
        metric_fn: SaliencyMetric,
        output_transform: Callable,
        save_details: bool = True,
        accepts_class_idx: bool = False,
    ) -> None:
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
        self.accepts_class_idx = accepts_class_idx

    def iteration_completed(self, engine: Engine) -> None:
        """Read the items of the current iteration and update the metric with the whole batch."""
        self.update(self._output_transform(_with_batch_keys(engine.state.batch, engine.state.output)))

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        """Update the metric with ``(saliency, reference)`` or ``(saliency, images, class_idx)``.

        Raises:
            ValueError: ``output`` has another number of items.
        """
        allowed = (2, 3) if self.accepts_class_idx else (2,)
        if not isinstance(output, Sequence) or len(output) not in allowed:
            got = f"{len(output)} items" if isinstance(output, Sequence) else type(output).__name__
            expected = (
                "(saliency, images) or (saliency, images, class_idx)"
                if self.accepts_class_idx
                else ("(saliency, mask)")
            )
            raise ValueError(f"{type(self).__name__}: output_transform must return {expected}; got {got}.")
        if len(output) == 3:
            self.metric_fn(output[0], output[1], class_idx=output[2])
        else:
            self.metric_fn(output[0], output[1])


class _ConfidenceHandler(SaliencyMetricHandler):
    """The handlers of the three confidence metrics: they differ only in ``_metric``."""

    _metric: type[SaliencyMetric]

    def __init__(
        self,
        model: nn.Module,
        activation: str = "softmax",
        batch_size: int | None = None,
        output_transform: Callable | None = None,
        save_details: bool = True,
    ) -> None:
        metric = self._metric(model, activation=activation, batch_size=batch_size)
        super().__init__(metric, output_transform or from_engine(_FAITHFULNESS_KEYS), save_details, True)


class AverageDrop(_ConfidenceHandler):
    """Average Drop of the maps (lower is better); see :class:`~monai_cluscam.metrics.AverageDropMetric`.

    Args:
        model: the classifier the maps explain (usually the evaluator's ``network``).
        activation: ``"softmax"`` or ``"sigmoid"``.
        batch_size: masked copies per forward pass; None picks about 4 MiB of input per pass.
        output_transform: returns ``(cam, image)`` or ``(cam, image, class_idx)``; default
            ``from_engine(["cam", "image"])``.
        save_details: keep the per-sample values in ``engine.state.metric_details``.
    """

    _metric = AverageDropMetric


class IncreaseInConfidence(_ConfidenceHandler):
    """Increase in Confidence of the maps (higher is better); arguments as in :class:`AverageDrop`."""

    _metric = IncreaseInConfidenceMetric


class AverageGain(_ConfidenceHandler):
    """Average Gain of the maps (higher is better); arguments as in :class:`AverageDrop`."""

    _metric = AverageGainMetric


class DeletionAUC(SaliencyMetricHandler):
    """Deletion AUC of the maps (lower is better); see :class:`~monai_cluscam.metrics.DeletionAUCMetric`.
    The curves are in ``handler.metric_fn.get_curves()``.

    Args:
        model: the classifier the maps explain (usually the evaluator's ``network``).
        steps: equal steps from nothing to everything deleted.
        baseline: ``"zeros"`` (default), ``"blur"``, a number or a tensor broadcastable to the images.
        blur_sigma: standard deviation of the blur, in voxels, for ``baseline="blur"``.
        activation: ``"softmax"`` or ``"sigmoid"``.
        batch_size: masked copies per forward pass; None picks about 4 MiB of input per pass.
        output_transform: returns ``(cam, image)`` or ``(cam, image, class_idx)``; default
            ``from_engine(["cam", "image"])``.
        save_details: keep the per-sample values in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        model: nn.Module,
        steps: int = 50,
        baseline: Baseline = "zeros",
        blur_sigma: float = 5.0,
        activation: str = "softmax",
        batch_size: int | None = None,
        output_transform: Callable | None = None,
        save_details: bool = True,
    ) -> None:
        metric = DeletionAUCMetric(model, steps, baseline, blur_sigma, activation, batch_size)
        super().__init__(metric, output_transform or from_engine(_FAITHFULNESS_KEYS), save_details, True)


class InsertionAUC(SaliencyMetricHandler):
    """Insertion AUC of the maps (higher is better); arguments as in :class:`DeletionAUC`, except that
    ``baseline`` defaults to ``"blur"``."""

    def __init__(
        self,
        model: nn.Module,
        steps: int = 50,
        baseline: Baseline = "blur",
        blur_sigma: float = 5.0,
        activation: str = "softmax",
        batch_size: int | None = None,
        output_transform: Callable | None = None,
        save_details: bool = True,
    ) -> None:
        metric = InsertionAUCMetric(model, steps, baseline, blur_sigma, activation, batch_size)
        super().__init__(metric, output_transform or from_engine(_FAITHFULNESS_KEYS), save_details, True)


class PointingGame(SaliencyMetricHandler):
    """Pointing-game hit rate of the maps against a region mask; see
    :class:`~monai_cluscam.metrics.PointingGameMetric`.

    Args:
        ties: ``"all"`` or ``"any"``, as in :func:`~monai_cluscam.metrics.pointing_game`.
        output_transform: returns ``(cam, mask)``; default ``from_engine(["cam", "mask"])``.
        save_details: keep the per-sample values in ``engine.state.metric_details``.
    """

    def __init__(self, ties: str = "all", output_transform: Callable | None = None, save_details: bool = True) -> None:
        super().__init__(
            PointingGameMetric(ties=ties), output_transform or from_engine(_LOCALIZATION_KEYS), save_details
        )


class EnergyPointingGame(SaliencyMetricHandler):
    """Mean share of the maps' energy inside a region mask; see
    :class:`~monai_cluscam.metrics.EnergyPointingGameMetric`.

    Args:
        output_transform: returns ``(cam, mask)``; default ``from_engine(["cam", "mask"])``.
        save_details: keep the per-sample values in ``engine.state.metric_details``.
    """

    def __init__(self, output_transform: Callable | None = None, save_details: bool = True) -> None:
        super().__init__(EnergyPointingGameMetric(), output_transform or from_engine(_LOCALIZATION_KEYS), save_details)


class AttributionOutsideMask(SaliencyMetricHandler):
    """Mean share of the maps' attribution outside a subject mask (e.g. a brain mask): the shortcut audit
    signal; see :class:`~monai_cluscam.metrics.AttributionOutsideMaskMetric`.

    Args:
        output_transform: returns ``(cam, mask)``; default ``from_engine(["cam", "mask"])``.
        save_details: keep the per-sample values in ``engine.state.metric_details``.
    """

    def __init__(self, output_transform: Callable | None = None, save_details: bool = True) -> None:
        super().__init__(
            AttributionOutsideMaskMetric(), output_transform or from_engine(_LOCALIZATION_KEYS), save_details
        )
