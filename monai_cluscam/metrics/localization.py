"""Localisation metrics: does a saliency map point at a known region?

Plain functions on tensors, 2D and 3D alike, batched, on the map's device:

- :func:`pointing_game`: a hit when the map's maximum lies inside the region.
- :func:`energy_pointing_game`: the share of the map's total ``sum L`` that lies inside the region
  (the energy-based pointing game of the Score-CAM paper).
- :func:`attribution_outside_mask`: the share of ``sum L`` that lies outside a mask, for instance a brain
  mask; a high value is the audit signal of a classifier that learned a shortcut (background, burnt-in text).

Conventions shared by all three:

- ``saliency`` is ``(B, 1, *spatial)`` (or ``(B, *spatial)``), finite, and for the energy measures
  non-negative (maps of this package are in ``[0, 1]``).
- ``mask`` is ``(B, 1, *spatial)`` or ``(B, *spatial)``, bool or with values in ``{0, 1}``; a batch of one
  mask is applied to every sample (e.g. one brain template).
- An empty mask raises ``ValueError``: the region is undefined, so no score would mean anything.
- An all-zero map has no maximum and no energy: :func:`pointing_game` counts it as a miss, the energy
  measures return ``nan`` for it (which MONAI's reductions skip); both warn, naming the samples.
"""

from __future__ import annotations

import warnings

import torch
from monai.utils import MetricReduction

from monai_cluscam.metrics.base import SaliencyMetric
from monai_cluscam.utils import plain_tensor

__all__ = [
    "AttributionOutsideMaskMetric",
    "EnergyPointingGameMetric",
    "PointingGameMetric",
    "attribution_outside_mask",
    "energy_pointing_game",
    "pointing_game",
]

_TIES = ("all", "any")


def _check(
    saliency: torch.Tensor, mask: torch.Tensor, name: str, nonnegative: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and flatten: returns ``(B, N)`` float maps and ``(B, N)`` bool masks on the map's device."""
    if not isinstance(saliency, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise ValueError(
            f"{name}: saliency and mask must be torch.Tensors; got {type(saliency).__name__} and {type(mask).__name__}."
        )
    sal = plain_tensor(saliency)
    m = plain_tensor(mask).to(sal.device)
    if sal.ndim < 3:
        raise ValueError(
            f"{name}: saliency must be (B, 1, *spatial) or (B, *spatial); got shape {tuple(sal.shape)}. "
            "Add a batch dimension with saliency[None]."
        )
    if sal.ndim >= 4 and sal.shape[1] == 1 and m.shape != sal.shape:
        sal = sal[:, 0]  # (B, 1, *spatial) -> (B, *spatial); a (B, *spatial) mask is matched below
    if m.ndim == sal.ndim + 1 and m.shape[1] == 1:
        m = m[:, 0]
    if m.shape[1:] != sal.shape[1:] or m.shape[0] not in (1, sal.shape[0]):
        raise ValueError(
            f"{name}: mask shape {tuple(mask.shape)} does not match saliency shape {tuple(saliency.shape)}; "
            "give a (B, 1, *spatial) or (B, *spatial) mask on the map's grid (resample it, or the map, first)."
        )
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(
                f"{name}: mask must be bool or hold only 0 and 1; got values in [{float(m.min())}, "
                f"{float(m.max())}]. Threshold a soft or interpolated mask first, e.g. mask > 0.5."
            )
        m = m != 0
    sal = sal.flatten(1).float()
    m = m.flatten(1).expand(sal.shape[0], -1)
    if not bool(torch.isfinite(sal).all()):
        bad = torch.nonzero(~torch.isfinite(sal).all(1)).flatten().tolist()
        raise ValueError(f"{name}: saliency contains NaN or Inf in sample(s) {bad}.")
    if nonnegative and bool((sal < 0).any()):
        bad = torch.nonzero((sal < 0).any(1)).flatten().tolist()
        raise ValueError(
            f"{name}: saliency of sample(s) {bad} has negative values; an energy share needs a non-negative "
            "map. Apply ReLU or min-max normalise it first."
        )
    empty = ~m.any(1)
    if bool(empty.any()):
        bad = torch.nonzero(empty).flatten().tolist()
        raise ValueError(
            f"{name}: the mask of sample(s) {bad} is empty, so there is no region to score the map against "
            "(a missing annotation or a failed brain extraction); drop those samples or fix their masks."
        )
    return sal, m


def _warn_blank(blank: torch.Tensor, name: str, outcome: str, stacklevel: int) -> None:
    if bool(blank.any()):
        idx = torch.nonzero(blank).flatten().tolist()
        warnings.warn(
            f"{name}: the map of sample(s) {idx} is all zero, so it points nowhere; {outcome}.",
            stacklevel=stacklevel,
        )


def pointing_game(saliency: torch.Tensor, mask: torch.Tensor, ties: str = "all") -> torch.Tensor:
    """Pointing game: a hit when the map's maximum lies inside the region.

    Ties: when several voxels share the maximum value, ``ties="all"`` (default, conservative) counts a
    hit only if every one of them lies inside the region, so a flat map cannot score by chance;
    ``ties="any"`` counts a hit if at least one does. An all-zero map is a miss (with a warning).

    Args:
        saliency: ``(B, 1, *spatial)`` or ``(B, *spatial)`` maps.
        mask: the region, ``(B, 1, *spatial)`` or ``(B, *spatial)``, bool or ``{0, 1}``; batch 1 broadcasts.
        ties: ``"all"`` or ``"any"``, see above.

    Returns:
        ``(B,)`` bool tensor on the map's device.

    Raises:
        ValueError: shapes do not match, the mask is not binary or is empty, the map is not finite,
            or ``ties`` is not one of ``"all"``, ``"any"``.

    Example:
        >>> sal = torch.zeros(2, 1, 4, 4); sal[0, 0, 1, 1] = 1.0; sal[1, 0, 3, 3] = 1.0
        >>> region = torch.zeros(2, 1, 4, 4, dtype=torch.bool); region[:, :, :2, :2] = True
        >>> pointing_game(sal, region)
        tensor([ True, False])
    """
    if ties not in _TIES:
        raise ValueError(f"pointing_game: ties must be one of {_TIES}; got {ties!r}.")
    sal, m = _check(saliency, mask, "pointing_game", nonnegative=False)
    peak = sal == sal.amax(1, keepdim=True)
    hit = (peak & ~m).sum(1) == 0 if ties == "all" else (peak & m).any(1)
    blank = (sal == 0).all(1)
    _warn_blank(blank, "pointing_game", "counting it as a miss", stacklevel=3)
    return hit & ~blank


def _inside_share(sal: torch.Tensor, m: torch.Tensor, name: str) -> torch.Tensor:
    """``sum L inside / sum L`` per sample in float64 (nan for an all-zero map, with a warning)."""
    total = sal.double().sum(1)
    inside = (sal.double() * m).sum(1)
    blank = total == 0
    _warn_blank(blank, name, "returning nan for it (MONAI's mean reductions skip nan)", stacklevel=4)
    return torch.where(blank, torch.full_like(total, float("nan")), inside / torch.where(blank, 1.0, total))


def energy_pointing_game(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game: the share ``sum L inside / sum L`` of the map inside the region.

    Args:
        saliency: non-negative ``(B, 1, *spatial)`` or ``(B, *spatial)`` maps.
        mask: the region, ``(B, 1, *spatial)`` or ``(B, *spatial)``, bool or ``{0, 1}``; batch 1 broadcasts.

    Returns:
        ``(B,)`` float32 in ``[0, 1]`` on the map's device; ``nan`` (and a warning) for an all-zero map.

    Raises:
        ValueError: shapes do not match, the mask is not binary or is empty, the map is negative or not finite.

    Example:
        >>> sal = torch.tensor([[[[3.0, 1.0], [0.0, 0.0]]]])
        >>> energy_pointing_game(sal, torch.tensor([[[[1, 0], [0, 0]]]]))
        tensor([0.7500])
    """
    sal, m = _check(saliency, mask, "energy_pointing_game", nonnegative=True)
    return _inside_share(sal, m, "energy_pointing_game").float()


def attribution_outside_mask(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The share of the map's total ``sum L`` that falls outside ``mask`` (e.g. outside the brain).

    An audit signal for shortcut learning: a classifier whose maps put much of their mass on the background,
    the skull or burnt-in annotations is not looking at the anatomy. For a non-blank map it equals
    ``1 - energy_pointing_game(saliency, mask)``.

    Args:
        saliency: non-negative ``(B, 1, *spatial)`` or ``(B, *spatial)`` maps.
        mask: the subject (e.g. a brain mask), ``(B, 1, *spatial)`` or ``(B, *spatial)``, bool or ``{0, 1}``;
            batch 1 broadcasts.

    Returns:
        ``(B,)`` float32 in ``[0, 1]`` on the map's device; ``nan`` (and a warning) for an all-zero map.

    Raises:
        ValueError: shapes do not match, the mask is not binary or is empty, the map is negative or not finite.

    Example:
        >>> sal = torch.tensor([[[[3.0, 1.0], [0.0, 0.0]]]])
        >>> attribution_outside_mask(sal, torch.tensor([[[[1, 0], [0, 0]]]]))
        tensor([0.2500])
    """
    sal, m = _check(saliency, mask, "attribution_outside_mask", nonnegative=True)
    return (1.0 - _inside_share(sal, m, "attribution_outside_mask")).float()


class PointingGameMetric(SaliencyMetric):
    """Pointing game as a MONAI metric: ``metric(y_pred=saliency, y=region_mask)``; the mean of the per-sample
    hits (1.0 or 0.0) is the hit rate. See :func:`pointing_game` (ties, all-zero maps).

    Args:
        ties: ``"all"`` or ``"any"``, as in :func:`pointing_game`.
        reduction: see :class:`~monai_cluscam.metrics.base.SaliencyMetric`.
        get_not_nans: see :class:`~monai_cluscam.metrics.base.SaliencyMetric`.

    Example:
        >>> metric = PointingGameMetric()
        >>> sal = torch.zeros(2, 1, 4, 4); sal[0, 0, 0, 0] = 1.0; sal[1, 0, 3, 3] = 1.0
        >>> _ = metric(y_pred=sal, y=torch.ones(2, 1, 4, 4) * (torch.arange(4) < 2))
        >>> metric.aggregate()
        tensor([0.5000])
    """

    _y_role = "region masks (B, 1, *spatial)"

    def __init__(
        self, ties: str = "all", reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False
    ) -> None:
        if ties not in _TIES:
            raise ValueError(f"ties must be one of {_TIES}; got {ties!r}.")
        super().__init__(reduction, get_not_nans)
        self.ties = ties

    def _per_sample(self, saliency: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pointing_game(saliency, y, ties=self.ties)


class EnergyPointingGameMetric(SaliencyMetric):
    """Energy-based pointing game as a MONAI metric: ``metric(y_pred=saliency, y=region_mask)``; see
    :func:`energy_pointing_game`. All-zero maps give nan, which the mean skips.

    Example:
        >>> metric = EnergyPointingGameMetric()
        >>> _ = metric(y_pred=torch.tensor([[[[3.0, 1.0]]]]), y=torch.tensor([[[[1, 0]]]]))
        >>> metric.aggregate()
        tensor([0.7500])
    """

    _y_role = "region masks (B, 1, *spatial)"

    def _per_sample(self, saliency: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return energy_pointing_game(saliency, y)


class AttributionOutsideMaskMetric(SaliencyMetric):
    """Share of attribution outside a mask as a MONAI metric: ``metric(y_pred=saliency, y=subject_mask)``;
    see :func:`attribution_outside_mask`. All-zero maps give nan, which the mean skips.

    Example:
        >>> metric = AttributionOutsideMaskMetric()
        >>> _ = metric(y_pred=torch.tensor([[[[3.0, 1.0]]]]), y=torch.tensor([[[[1, 0]]]]))
        >>> metric.aggregate()
        tensor([0.2500])
    """

    _y_role = "subject masks (B, 1, *spatial), e.g. brain masks"

    def _per_sample(self, saliency: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attribution_outside_mask(saliency, y)
