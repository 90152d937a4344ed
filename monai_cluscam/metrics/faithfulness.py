"""Faithfulness metrics: does the model's confidence follow the saliency map?

Plain functions on tensors, 2D and 3D alike, batched, on the input's device. Every forward pass goes
through :func:`monai_cluscam.utils.masked_forward`, chunk by chunk (``batch_size`` masked copies per pass).

With ``p`` the probability of class ``c`` for ``x`` and ``o`` for ``x * L`` (the map as a soft mask):

- Average Drop, per sample ``100 * max(0, p - o) / p`` (lower is better),
- Increase in Confidence, per sample ``100 * [o > p]`` (higher is better),
- Average Gain, per sample ``100 * max(0, o - p) / (1 - p)`` (higher is better);

their means over a data set are the published aggregates. :func:`deletion_curve` and :func:`insertion_curve`
(Petsiuk et al., RISE, 2018) perturb voxels in order of decreasing saliency in equal steps and return the
class-probability curve and its area under the curve over the fraction of voxels perturbed (so in ``[0, 1]``).

Conventions shared by all functions:

- ``x`` is ``(B, C, *spatial)``; ``saliency`` is ``(B, 1, *spatial)`` or ``(B, *spatial)`` on ``x``'s grid.
- ``class_idx``: None (each sample's predicted class on ``x``), an int, or one per sample.
- ``activation`` turns the model's scores into probabilities: ``"softmax"`` (default) or ``"sigmoid"``
  (for instance for a one-output binary model).
- The model is run in eval mode (each submodule's flag restored afterwards) and without gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.utils import MetricReduction
from torch import nn

from monai_cluscam.metrics.base import SaliencyMetric
from monai_cluscam.utils import (
    blur,
    class_scores,
    eval_mode,
    masked_forward,
    model_device,
    plain_tensor,
    resolve_classes,
)

__all__ = [
    "AverageDropMetric",
    "AverageGainMetric",
    "ConfidenceScores",
    "DeletionAUCMetric",
    "IncreaseInConfidenceMetric",
    "InsertionAUCMetric",
    "PerturbationCurve",
    "average_drop",
    "average_gain",
    "confidence_scores",
    "deletion_curve",
    "increase_in_confidence",
    "insertion_curve",
]

ClassIndex = int | Sequence[int] | torch.Tensor | None
Baseline = str | float | torch.Tensor

_ACTIVATIONS = ("softmax", "sigmoid")
_BASELINES = ("zeros", "blur")
_REDUCTIONS = ("none", "mean")


@dataclass(frozen=True)
class ConfidenceScores:
    """Class probabilities of the inputs and of the inputs masked by their maps.

    Attributes:
        prob: ``p``, ``(B,)`` probability of the class for ``x``.
        masked_prob: ``o``, ``(B,)`` probability of the class for ``x * L``.
        class_idx: ``(B,)`` the class scored for each sample.
    """

    prob: torch.Tensor
    masked_prob: torch.Tensor
    class_idx: torch.Tensor

    @property
    def average_drop(self) -> torch.Tensor:
        """``(B,)`` per-sample terms ``100 * max(0, p - o) / p``; their mean is the Average Drop."""
        drop = (self.prob - self.masked_prob).clamp_min(0)
        return 100 * torch.where(drop > 0, drop / self.prob, torch.zeros_like(drop))

    @property
    def increase_in_confidence(self) -> torch.Tensor:
        """``(B,)`` per-sample terms ``100 * [o > p]``; their mean is the Increase in Confidence."""
        return 100 * (self.masked_prob > self.prob).float()

    @property
    def average_gain(self) -> torch.Tensor:
        """``(B,)`` per-sample terms ``100 * max(0, o - p) / (1 - p)``; their mean is the Average Gain."""
        gain = (self.masked_prob - self.prob).clamp_min(0)
        return 100 * torch.where(gain > 0, gain / (1 - self.prob), torch.zeros_like(gain))


@dataclass(frozen=True)
class PerturbationCurve:
    """A deletion or insertion curve per sample.

    Attributes:
        auc: ``(B,)`` area under ``curve`` over ``fractions`` (trapezoidal), in ``[0, 1]``.
        curve: ``(B, steps + 1)`` probability of the class after each step; column 0 is before any voxel
            is perturbed (``x`` for deletion, the baseline for insertion).
        fractions: ``(steps + 1,)`` fraction of voxels perturbed at each step, from 0 to 1.
        class_idx: ``(B,)`` the class scored for each sample.
    """

    auc: torch.Tensor
    curve: torch.Tensor
    fractions: torch.Tensor
    class_idx: torch.Tensor


def _check_inputs(
    model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``x`` and ``saliency``; return plain tensors, the map as ``(B, 1, *spatial)`` float on ``x.device``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name}: model must be a torch.nn.Module; got {type(model).__name__}.")
    if not isinstance(x, torch.Tensor) or not isinstance(saliency, torch.Tensor):
        raise ValueError(
            f"{name}: x and saliency must be torch.Tensors; got {type(x).__name__} and {type(saliency).__name__}."
        )
    x = plain_tensor(x)
    sal = plain_tensor(saliency)
    if x.ndim not in (4, 5) or not x.is_floating_point():
        raise ValueError(
            f"{name}: x must be a floating point (B, C, H, W) or (B, C, H, W, D) batch; got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}."
        )
    b, _, *spatial = x.shape
    if sal.ndim == x.ndim - 1:
        sal = sal.unsqueeze(1)
    if tuple(sal.shape) != (b, 1, *spatial):
        raise ValueError(
            f"{name}: saliency of shape {tuple(saliency.shape)} does not fit x of shape {tuple(x.shape)}; "
            f"expected ({b}, 1, {', '.join(map(str, spatial))}): one map per sample on the input's grid."
        )
    sal = sal.to(device=x.device, dtype=torch.float32)
    for label, t in (("x", x), ("saliency", sal)):
        finite = torch.isfinite(t.flatten(1)).all(1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            raise ValueError(f"{name}: {label} contains NaN or Inf in sample(s) {bad}.")
    device = model_device(model, default=None)
    if device is not None and device != x.device:
        raise ValueError(f"{name}: the model is on {device} but x is on {x.device}; move them together.")
    return x, sal


def _probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "softmax":
        if logits.shape[-1] == 1:
            raise ValueError("the model has a single output, whose softmax is always 1; use activation='sigmoid'.")
        return logits.softmax(-1)
    return logits.sigmoid()


def _check_options(activation: str, batch_size: int | None) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}; got {activation!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}.")


def confidence_scores(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: ClassIndex = None,
    activation: str = "softmax",
    batch_size: int | None = None,
) -> ConfidenceScores:
    """Probabilities ``p`` of ``x`` and ``o`` of ``x * L`` for the class, from one chunked masked pass.

    Args:
        model: the classifier, returning ``(B, num_classes)`` scores (or a tuple whose first item is).
        x: ``(B, C, *spatial)`` inputs.
        saliency: ``(B, 1, *spatial)`` or ``(B, *spatial)`` maps in ``[0, 1]``.
        class_idx: None (predicted class), an int, or one per sample.
        activation: ``"softmax"`` or ``"sigmoid"``.
        batch_size: masked copies per forward pass; None picks about 4 MiB of input per pass.

    Returns:
        :class:`ConfidenceScores`, whose properties give the per-sample Average Drop, Increase in Confidence
        and Average Gain terms.

    Raises:
        ValueError: shapes do not fit, values are not finite, the map leaves ``[0, 1]``, or an option is invalid.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> scores = confidence_scores(net, torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4))
        >>> scores.average_drop.shape
        torch.Size([3])
    """
    _check_options(activation, batch_size)
    x, sal = _check_inputs(model, x, saliency, "confidence_scores")
    if bool((sal < 0).any() | (sal > 1).any()):
        raise ValueError(
            f"confidence_scores: saliency must be in [0, 1] to act as a soft mask; got values in "
            f"[{float(sal.min())}, {float(sal.max())}]. Min-max normalise the maps first."
        )

    def provide(sample_idx: torch.Tensor, mask_idx: torch.Tensor) -> torch.Tensor:
        maps = sal[sample_idx]
        return torch.where(mask_idx.view(-1, *[1] * (maps.ndim - 1)) == 0, torch.ones_like(maps), maps)

    with eval_mode(model):
        outputs = masked_forward(model, x, provide, num_masks=2, batch_size=batch_size)
    classes = resolve_classes(outputs[:, 0], class_idx)
    probs = class_scores(_probabilities(outputs, activation), classes)
    return ConfidenceScores(prob=probs[:, 0], masked_prob=probs[:, 1], class_idx=classes)


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}.")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    return values.mean() if reduction == "mean" else values


def average_drop(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: ClassIndex = None,
    activation: str = "softmax",
    batch_size: int | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    """Average Drop: per sample ``100 * max(0, p - o) / p``, or its mean with ``reduction="mean"`` (lower is better).

    Arguments as in :func:`confidence_scores`; ``reduction`` is ``"none"`` (``(B,)`` terms) or ``"mean"``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> average_drop(net, x, torch.ones(2, 1, 4, 4), reduction="mean")  # the full map changes nothing
        tensor(0.)
    """
    _check_reduction(reduction)
    scores = confidence_scores(model, x, saliency, class_idx, activation, batch_size)
    return _reduce(scores.average_drop, reduction)


def increase_in_confidence(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: ClassIndex = None,
    activation: str = "softmax",
    batch_size: int | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    """Increase in Confidence: per sample ``100 * [o > p]``, or its mean with ``reduction="mean"`` (higher is better).

    Arguments as in :func:`confidence_scores`; ``reduction`` is ``"none"`` (``(B,)`` terms) or ``"mean"``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> increase_in_confidence(net, torch.rand(2, 1, 4, 4), torch.ones(2, 1, 4, 4))
        tensor([0., 0.])
    """
    _check_reduction(reduction)
    scores = confidence_scores(model, x, saliency, class_idx, activation, batch_size)
    return _reduce(scores.increase_in_confidence, reduction)


def average_gain(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: ClassIndex = None,
    activation: str = "softmax",
    batch_size: int | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    """Average Gain: per sample ``100 * max(0, o - p) / (1 - p)``, or its mean with ``reduction="mean"``
    (higher is better).

    Arguments as in :func:`confidence_scores`; ``reduction`` is ``"none"`` (``(B,)`` terms) or ``"mean"``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> average_gain(net, torch.rand(2, 1, 4, 4), torch.ones(2, 1, 4, 4))
        tensor([0., 0.])
    """
    _check_reduction(reduction)
    scores = confidence_scores(model, x, saliency, class_idx, activation, batch_size)
    return _reduce(scores.average_gain, reduction)


def _baseline_tensor(x: torch.Tensor, baseline: Baseline, blur_sigma: float, name: str) -> torch.Tensor | None:
    """What perturbed voxels become: None for zeros (``masked_forward``'s default), else a tensor broadcastable to x."""
    if isinstance(baseline, str):
        if baseline not in _BASELINES:
            raise ValueError(f"{name}: baseline must be one of {_BASELINES}, a number or a tensor; got {baseline!r}.")
        if baseline == "zeros":
            return None
        if not blur_sigma > 0:
            raise ValueError(f"{name}: blur_sigma must be positive; got {blur_sigma!r}.")
        return blur(x, blur_sigma)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full((), float(baseline), dtype=x.dtype, device=x.device)
    if isinstance(baseline, torch.Tensor):
        base = plain_tensor(baseline)
        fits = base.ndim <= x.ndim and all(n in (1, m) for n, m in zip(base.shape[::-1], x.shape[::-1], strict=False))
        if not fits:
            raise ValueError(
                f"{name}: a baseline tensor must broadcast to x {tuple(x.shape)}; got {tuple(base.shape)}."
            )
        return base.to(device=x.device, dtype=x.dtype)
    raise ValueError(
        f"{name}: baseline must be one of {_BASELINES}, a number or a tensor; got {type(baseline).__name__}."
    )


def _ranking(sal: torch.Tensor) -> torch.Tensor:
    """Rank of every voxel by decreasing saliency, ``(B, N)``; ties go to the lower flat (C-order) index first."""
    flat = sal.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: ClassIndex,
    steps: int,
    baseline: Baseline,
    blur_sigma: float,
    activation: str,
    batch_size: int | None,
    insert: bool,
) -> PerturbationCurve:
    name = "insertion_curve" if insert else "deletion_curve"
    _check_options(activation, batch_size)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name}: steps must be a positive int; got {steps!r}.")
    x, sal = _check_inputs(model, x, saliency, name)
    base = _baseline_tensor(x, baseline, blur_sigma, name)
    b, _, *spatial = x.shape
    rank = _ranking(sal)
    voxels = rank.shape[1]
    counts = torch.arange(steps + 1, device=x.device) * voxels // steps  # voxels perturbed after each step

    def provide(sample_idx: torch.Tensor, step_idx: torch.Tensor) -> torch.Tensor:
        perturbed = rank[sample_idx] < counts[step_idx, None]
        keep = perturbed if insert else ~perturbed
        return keep.view(-1, 1, *spatial)

    with eval_mode(model):
        outputs = masked_forward(model, x, provide, num_masks=steps + 1, baseline=base, batch_size=batch_size)
    full = steps if insert else 0  # the step whose masked copy is x itself
    classes = resolve_classes(outputs[:, full], class_idx)
    curve = class_scores(_probabilities(outputs, activation), classes)
    fractions = counts.float() / voxels
    auc = torch.trapezoid(curve, fractions, dim=1)
    return PerturbationCurve(auc=auc, curve=curve, fractions=fractions, class_idx=classes)


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: ClassIndex = None,
    steps: int = 50,
    baseline: Baseline = "zeros",
    blur_sigma: float = 5.0,
    activation: str = "softmax",
    batch_size: int | None = None,
) -> PerturbationCurve:
    """Deletion: replace voxels by the baseline in order of decreasing saliency; a low AUC is faithful.

    Step ``k`` of ``steps`` replaces the ``floor(k * N / steps)`` most salient of the ``N`` voxels (all channels
    of a voxel together); ties in saliency go to the lower flat index first, so the ranking is deterministic.
    Step masks are made from each sample's ranking one chunk of ``batch_size`` at a time, so a 3D volume never
    holds all ``steps + 1`` masks at once.

    Args:
        model: the classifier, returning ``(B, num_classes)`` scores (or a tuple whose first item is).
        x: ``(B, C, *spatial)`` inputs.
        saliency: ``(B, 1, *spatial)`` or ``(B, *spatial)`` maps (any finite values; only their order counts).
        class_idx: None (predicted class on ``x``), an int, or one per sample.
        steps: number of equal steps from nothing to everything perturbed (``steps + 1`` forward passes per sample).
        baseline: ``"zeros"`` (default), ``"blur"`` (a Gaussian blur of ``x`` with ``blur_sigma`` voxels), a number,
            or a tensor broadcastable to ``x``.
        blur_sigma: standard deviation of the blur, in voxels, for ``baseline="blur"``.
        activation: ``"softmax"`` or ``"sigmoid"``.
        batch_size: masked copies per forward pass; None picks about 4 MiB of input per pass.

    Returns:
        :class:`PerturbationCurve` with the AUC, the curve and the fractions perturbed.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> result = deletion_curve(net, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), steps=4)
        >>> result.curve.shape, result.fractions.tolist()
        (torch.Size([2, 5]), [0.0, 0.25, 0.5, 0.75, 1.0])
    """
    return _perturbation_curve(
        model, x, saliency, class_idx, steps, baseline, blur_sigma, activation, batch_size, insert=False
    )


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: ClassIndex = None,
    steps: int = 50,
    baseline: Baseline = "blur",
    blur_sigma: float = 5.0,
    activation: str = "softmax",
    batch_size: int | None = None,
) -> PerturbationCurve:
    """Insertion: start from the baseline and restore voxels of ``x`` in order of decreasing saliency; a high
    AUC is faithful.

    The baseline defaults to a blurred ``x`` (RISE's choice); otherwise arguments, ranking and chunking are as in
    :func:`deletion_curve`. Column 0 of the curve scores the baseline, the last column ``x`` itself.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> result = insertion_curve(net, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), steps=4)
        >>> bool(((result.auc >= 0) & (result.auc <= 1)).all())
        True
    """
    return _perturbation_curve(
        model, x, saliency, class_idx, steps, baseline, blur_sigma, activation, batch_size, insert=True
    )


def _class_arg(class_idx: ClassIndex) -> ClassIndex:
    """Per-sample class indices given as a list of tensors (decollated labels) become a list of ints."""
    if class_idx is None or isinstance(class_idx, (int, str, torch.Tensor)):
        return class_idx
    out = []
    for c in class_idx:
        if isinstance(c, torch.Tensor):
            if c.numel() != 1:
                raise ValueError(
                    f"each per-sample class_idx must be one class index; got a tensor of shape {tuple(c.shape)} "
                    "(one-hot labels? pass their argmax)."
                )
            c = int(c.item())
        out.append(c)
    return out


class _ConfidenceMetric(SaliencyMetric):
    """Shared by the metrics built on :func:`confidence_scores`.

    Args:
        model: the classifier.
        activation: ``"softmax"`` or ``"sigmoid"``.
        batch_size: masked copies per forward pass; None picks about 4 MiB of input per pass.
        reduction: see :class:`~monai_cluscam.metrics.base.SaliencyMetric`.
        get_not_nans: see :class:`~monai_cluscam.metrics.base.SaliencyMetric`.
    """

    _y_role = "the input images (B, C, *spatial) the maps explain"

    def __init__(
        self,
        model: nn.Module,
        activation: str = "softmax",
        batch_size: int | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        _check_options(activation, batch_size)
        super().__init__(reduction, get_not_nans)
        self.model = model
        self.activation = activation
        self.batch_size = batch_size

    def _scores(self, saliency: torch.Tensor, y: torch.Tensor, class_idx: ClassIndex) -> ConfidenceScores:
        return confidence_scores(self.model, y, saliency, _class_arg(class_idx), self.activation, self.batch_size)


class AverageDropMetric(_ConfidenceMetric):
    """Average Drop as a MONAI metric (lower is better): ``metric(y_pred=saliency, y=images, class_idx=None)``
    buffers ``100 * max(0, p - o) / p`` per sample; :meth:`aggregate` gives their mean, the Average Drop.

    Arguments as in :class:`IncreaseInConfidenceMetric`; ``class_idx`` at call time is None (predicted class),
    an int, or one per sample (ints or one-element tensors).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> metric = AverageDropMetric(net)
        >>> _ = metric(y_pred=torch.ones(2, 1, 4, 4), y=torch.rand(2, 1, 4, 4))
        >>> metric.aggregate()
        tensor([0.])
    """

    def _per_sample(self, saliency: torch.Tensor, y: torch.Tensor, class_idx: ClassIndex = None) -> torch.Tensor:
        return self._scores(saliency, y, class_idx).average_drop


class IncreaseInConfidenceMetric(_ConfidenceMetric):
    """Increase in Confidence as a MONAI metric (higher is better): ``metric(y_pred=saliency, y=images,
    class_idx=None)`` buffers ``100 * [o > p]`` per sample; :meth:`aggregate` gives their mean.

    Args:
        model: the classifier.
        activation: ``"softmax"`` or ``"sigmoid"``.
        batch_size: masked copies per forward pass; None picks about 4 MiB of input per pass.
        reduction: see :class:`~monai_cluscam.metrics.base.SaliencyMetric`.
        get_not_nans: see :class:`~monai_cluscam.metrics.base.SaliencyMetric`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> metric = IncreaseInConfidenceMetric(net)
        >>> _ = metric(y_pred=torch.ones(2, 1, 4, 4), y=torch.rand(2, 1, 4, 4), class_idx=[0, 1])
        >>> metric.aggregate()
        tensor([0.])
    """

    def _per_sample(self, saliency: torch.Tensor, y: torch.Tensor, class_idx: ClassIndex = None) -> torch.Tensor:
        return self._scores(saliency, y, class_idx).increase_in_confidence


class AverageGainMetric(_ConfidenceMetric):
    """Average Gain as a MONAI metric (higher is better): ``metric(y_pred=saliency, y=images, class_idx=None)``
    buffers ``100 * max(0, o - p) / (1 - p)`` per sample; :meth:`aggregate` gives their mean.

    Arguments as in :class:`IncreaseInConfidenceMetric`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> metric = AverageGainMetric(net)
        >>> _ = metric(y_pred=torch.ones(2, 1, 4, 4), y=torch.rand(2, 1, 4, 4))
        >>> metric.aggregate()
        tensor([0.])
    """

    def _per_sample(self, saliency: torch.Tensor, y: torch.Tensor, class_idx: ClassIndex = None) -> torch.Tensor:
        return self._scores(saliency, y, class_idx).average_gain


class _CurveMetric(SaliencyMetric):
    """Shared by :class:`DeletionAUCMetric` and :class:`InsertionAUCMetric`: buffers the AUC per sample and keeps
    the curves of this process in :meth:`get_curves` for plots."""

    _y_role = "the input images (B, C, *spatial) the maps explain"
    _insert = False

    def __init__(
        self,
        model: nn.Module,
        steps: int = 50,
        baseline: Baseline = "zeros",
        blur_sigma: float = 5.0,
        activation: str = "softmax",
        batch_size: int | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        _check_options(activation, batch_size)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int; got {steps!r}.")
        super().__init__(reduction, get_not_nans)
        self.model = model
        self.steps = steps
        self.baseline = baseline
        self.blur_sigma = blur_sigma
        self.activation = activation
        self.batch_size = batch_size

    def reset(self) -> None:
        """Empty the buffer and the stored curves."""
        super().reset()
        self._curves: list[torch.Tensor] = []

    def get_curves(self) -> torch.Tensor:
        """``(N, steps + 1)`` curves of every sample seen since the last reset, in this process.

        Their x axis is ``torch.arange(steps + 1) * N_voxels // steps / N_voxels``, the ``fractions`` of
        :class:`PerturbationCurve`.
        """
        if not self._curves:
            return torch.empty(0, self.steps + 1)
        return torch.cat(self._curves)

    def _per_sample(self, saliency: torch.Tensor, y: torch.Tensor, class_idx: ClassIndex = None) -> torch.Tensor:
        result = _perturbation_curve(
            self.model,
            y,
            saliency,
            _class_arg(class_idx),
            self.steps,
            self.baseline,
            self.blur_sigma,
            self.activation,
            self.batch_size,
            insert=self._insert,
        )
        self._curves.append(result.curve)
        return result.auc


class DeletionAUCMetric(_CurveMetric):
    """Deletion AUC as a MONAI metric (lower is better): ``metric(y_pred=saliency, y=images, class_idx=None)``
    buffers the AUC of :func:`deletion_curve` per sample; :meth:`aggregate` gives their mean and
    :meth:`get_curves` the curves.

    Args:
        model: the classifier.
        steps: equal steps from nothing to everything deleted.
        baseline: ``"zeros"`` (default), ``"blur"``, a number or a tensor broadcastable to the images.
        blur_sigma: standard deviation of the blur, in voxels, for ``baseline="blur"``.
        activation: ``"softmax"`` or ``"sigmoid"``.
        batch_size: masked copies per forward pass; None picks about 4 MiB of input per pass.
        reduction: see :class:`~monai_cluscam.metrics.base.SaliencyMetric`.
        get_not_nans: see :class:`~monai_cluscam.metrics.base.SaliencyMetric`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> metric = DeletionAUCMetric(net, steps=4)
        >>> _ = metric(y_pred=torch.rand(2, 1, 4, 4), y=torch.rand(2, 1, 4, 4))
        >>> metric.aggregate().shape, metric.get_curves().shape
        (torch.Size([1]), torch.Size([2, 5]))
    """


class InsertionAUCMetric(_CurveMetric):
    """Insertion AUC as a MONAI metric (higher is better): ``metric(y_pred=saliency, y=images, class_idx=None)``
    buffers the AUC of :func:`insertion_curve` per sample; :meth:`aggregate` gives their mean and
    :meth:`get_curves` the curves.

    Arguments as in :class:`DeletionAUCMetric`, except that ``baseline`` defaults to ``"blur"``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> metric = InsertionAUCMetric(net, steps=4)
        >>> _ = metric(y_pred=torch.rand(2, 1, 4, 4), y=torch.rand(2, 1, 4, 4))
        >>> metric.aggregate().shape
        torch.Size([1])
    """

    _insert = True

    def __init__(
        self,
        model: nn.Module,
        steps: int = 50,
        baseline: Baseline = "blur",
        blur_sigma: float = 5.0,
        activation: str = "softmax",
        batch_size: int | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(model, steps, baseline, blur_sigma, activation, batch_size, reduction, get_not_nans)
