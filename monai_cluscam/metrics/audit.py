"""What an attribution audit measures, as plain functions on tensors: where each map of an audit set peaks
against a subject mask, the audit set's summary with its alert, and how much the maps moved since the last
audit. :class:`monai_cluscam.handlers.AttributionAuditHandler` computes these during training; the share of
each map's mass outside the mask is :func:`~monai_cluscam.metrics.localization.attribution_outside_mask`.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from monai_cluscam.metrics.localization import pointing_game
from monai_cluscam.utils import plain_tensor

__all__ = ["STABILITY_GRID", "coarse_maps", "map_correlation", "peak_outside_mask", "summarize_outside"]

#: maps are compared across audits on a grid of at most this many voxels per axis
STABILITY_GRID = 32


def peak_outside_mask(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1.0 where a map's maximum lies outside ``mask`` (a pointing-game miss, ties counted as
    :func:`~monai_cluscam.metrics.localization.pointing_game` counts them), 0.0 where it lies inside, and
    ``nan`` for an all-zero map, which has no peak (so that a mean with ``nanmean`` leaves it out).

    Args:
        saliency: ``(B, 1, *spatial)`` or ``(B, *spatial)`` maps.
        mask: the subject, ``(B, 1, *spatial)`` or ``(B, *spatial)``, bool or ``{0, 1}``; batch 1 broadcasts.

    Returns:
        ``(B,)`` float32 on the map's device.

    Example:
        >>> sal = torch.zeros(3, 1, 4, 4); sal[0, 0, 0, 0] = 1.0; sal[1, 0, 3, 3] = 1.0
        >>> brain = torch.zeros(1, 1, 4, 4, dtype=torch.bool); brain[..., :2, :2] = True
        >>> peak_outside_mask(sal, brain)
        tensor([0., 1., nan])
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pointing_game: the map of sample")  # blank maps are nan here
        missed = (~pointing_game(saliency, mask)).float()
    blank = (plain_tensor(saliency).flatten(1) == 0).all(1).to(missed.device)
    return torch.where(blank, torch.full_like(missed, float("nan")), missed)


def summarize_outside(
    outside: torch.Tensor, peak_outside: torch.Tensor, threshold: float = 0.5, peak_threshold: float = 0.5
) -> dict[str, float]:
    """The audit set's summary of the per-sample shares outside a subject mask, and the audit's alert.

    Args:
        outside: ``(N,)`` share of each map's mass outside the mask (``nan`` for a blank map, left out).
        peak_outside: ``(N,)`` as :func:`peak_outside_mask` gives it (``nan`` for a blank map, left out).
        threshold: the mean share outside above which the audit alerts.
        peak_threshold: the share of maps peaking outside above which the audit alerts.

    Returns:
        ``outside_mask`` (mean share), ``outside_mask_max`` (worst sample), ``flagged`` (share of samples above
        ``threshold``), the three only when some map is not blank; ``peak_outside`` (share of non-blank maps
        peaking outside, 0.0 when all are blank); ``alert`` (1.0 when ``outside_mask > threshold`` or
        ``peak_outside > peak_threshold``, else 0.0).

    Example:
        >>> s = summarize_outside(torch.tensor([0.2, 0.6, float("nan")]), torch.tensor([0.0, 1.0, float("nan")]))
        >>> {k: round(v, 2) for k, v in s.items()}
        {'outside_mask': 0.4, 'outside_mask_max': 0.6, 'flagged': 0.5, 'peak_outside': 0.5, 'alert': 0.0}
    """
    summary: dict[str, float] = {}
    valid = outside[~torch.isnan(outside)]
    if valid.numel():
        summary["outside_mask"] = float(valid.mean())
        summary["outside_mask_max"] = float(valid.max())
        summary["flagged"] = float((valid > threshold).float().mean())
    peaked = peak_outside[~torch.isnan(peak_outside)]
    summary["peak_outside"] = float(peaked.mean()) if peaked.numel() else 0.0
    alert = summary.get("outside_mask", 0.0) > threshold or summary["peak_outside"] > peak_threshold
    summary["alert"] = float(alert)
    return summary


def coarse_maps(maps: torch.Tensor, grid: int = STABILITY_GRID) -> torch.Tensor:
    """``(B, 1, *spatial)`` 2D or 3D maps average-pooled to at most ``grid`` voxels per axis, flattened to
    ``(B, N)``: small enough to keep from one audit to the next.

    Example:
        >>> coarse_maps(torch.rand(2, 1, 64, 48), grid=8).shape
        torch.Size([2, 64])
    """
    size = [min(s, grid) for s in maps.shape[2:]]
    pool = F.adaptive_avg_pool2d if len(size) == 2 else F.adaptive_avg_pool3d
    return pool(plain_tensor(maps).float(), size).flatten(1)


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of two ``(B, N)`` tensors, ``nan`` where a row is constant.

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
        >>> map_correlation(a, torch.tensor([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0]]))
        tensor([1.0000,    nan])
    """
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-12), torch.full_like(denom, float("nan")))
