"""The base class of this package's MONAI metrics: saliency maps in, one value per sample buffered.

Calling convention of every metric: ``metric(y_pred=saliency, y=reference, **kwargs)``, where ``y_pred`` holds
the maps and ``y`` what they are judged against: the input images for faithfulness metrics, a region or
subject mask for localisation metrics. Both may be batch-first tensors (``(B, 1, *spatial)`` maps) or lists of
channel-first tensors (``(1, *spatial)`` maps, as after :func:`monai.data.decollate_batch`); lists are stacked
into one batch, so the masked forward passes of a whole batch share chunks and per-sample keyword arguments
(``class_idx``) stay aligned with their samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["SaliencyMetric"]


def _stack(items: torch.Tensor | Sequence[torch.Tensor], role: str) -> torch.Tensor:
    if isinstance(items, torch.Tensor):
        return items
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) != 1:
        raise ValueError(
            f"the {role} items of one call must share a shape to be batched; got shapes {sorted(shapes)}. "
            "Call the metric once per group of equally sized samples."
        )
    return torch.stack([t.detach() for t in items])


def _take(value: Any, keep: torch.Tensor, b: int) -> Any:
    """The entries of a per-sample argument (``b`` of them) at ``keep``; other arguments pass unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == b:
        return value[keep.to(value.device)]
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == b:
        return [value[i] for i in keep.tolist()]
    return value


class SaliencyMetric(CumulativeIterationMetric):
    """A cumulative metric of saliency maps: :meth:`_per_sample` gives one value per sample, buffered as
    ``(B, 1)``, and :meth:`aggregate` reduces the buffer (``nan`` values are skipped by the mean reductions).

    A map that is NaN everywhere (a failed explanation, as ``ClusCAMHandler`` marks them) scores nan with a
    warning instead of stopping an evaluation; the other samples of its batch are scored as usual.

    Args:
        reduction: how :meth:`aggregate` reduces the buffered values, a :class:`monai.utils.MetricReduction`
            (default mean over all samples; ``"none"`` returns the ``(N, 1)`` values).
        get_not_nans: whether :meth:`aggregate` also returns the number of non-nan values.
    """

    #: what ``y`` holds, for error messages.
    _y_role = "the reference the maps are judged against"

    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_list(
        self,
        y_pred: torch.Tensor | Sequence[torch.Tensor],
        y: torch.Tensor | Sequence[torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        return self._compute_tensor(_stack(y_pred, "y_pred"), None if y is None else _stack(y, "y"), **kwargs)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError(f"{type(self).__name__} needs y: {self._y_role}.")
        b = y_pred.shape[0]
        failed = torch.isnan(y_pred.flatten(1)).all(1) if y_pred.ndim > 1 else torch.zeros(b, dtype=torch.bool)
        if not bool(failed.any()):
            return self._per_sample(y_pred, y, **kwargs).float().view(-1, 1)
        warnings.warn(
            f"{type(self).__name__}: the maps of sample(s) {torch.nonzero(failed).flatten().tolist()} are NaN "
            "everywhere (failed explanations); scoring them nan, which the mean reductions skip.",
            stacklevel=4,
        )
        values = torch.full((b,), float("nan"), device=y_pred.device)
        keep = torch.nonzero(~failed).flatten()
        if keep.numel():
            kept = {k: _take(v, keep, b) for k, v in kwargs.items()}
            reference = y[keep.to(y.device)] if y.shape[0] == b else y
            values[keep] = self._per_sample(y_pred[keep], reference, **kept).float().to(values.device)
        return values.view(-1, 1)

    def _per_sample(self, saliency: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the buffered per-sample values.

        Args:
            reduction: overrides the reduction given at construction.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"{type(self).__name__} has no values to aggregate; call it on some data first.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f
