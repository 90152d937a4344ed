"""What an attribution audit measures, as plain functions on tensors: the subject in a mask (its stray small
parts left out), where each map of an audit set peaks against it, the audit set's summary (overall and per class)
with its alert, and how much the maps moved since the last audit.
:class:`monai_cluscam.handlers.AttributionAuditHandler` computes these during training; the share of each map's
mass outside the mask is :func:`~monai_cluscam.metrics.localization.attribution_outside_mask`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from monai_cluscam.metrics.localization import pointing_game
from monai_cluscam.utils import plain_tensor

__all__ = [
    "PEAK_MARGIN",
    "STABILITY_GRID",
    "SUBJECT_MIN_PART",
    "coarse_maps",
    "distance_to_mask",
    "map_correlation",
    "outside_by_class",
    "peak_margin",
    "peak_outside_mask",
    "peak_voxels",
    "subject_mask",
    "summarize_outside",
]

#: maps are compared across audits on a grid of at most this many voxels per axis
STABILITY_GRID = 32

#: a connected part of a subject mask smaller than this share of its largest part is not the subject
SUBJECT_MIN_PART = 0.05

#: the default margin of :func:`peak_margin`: this share of the image's shortest side
PEAK_MARGIN = 1 / 32


def subject_mask(mask: torch.Tensor, min_part: float = SUBJECT_MIN_PART) -> torch.Tensor:
    """The subject of each mask: its connected parts (voxels touching by a face, an edge or a corner) of at least
    ``min_part`` times the voxels of its largest part; smaller parts are dropped.

    A mask made by thresholding a skull-stripped image (such as :func:`monai_cluscam.data.foreground_mask`) keeps
    everything bright: the brain, but also a burnt-in marker or text in the background and stray specks of noise,
    each a small part of its own. Those are what an audit must count as outside the subject.

    Args:
        mask: ``(B, 1, *spatial)`` or ``(B, *spatial)``, bool or ``{0, 1}``.
        min_part: share in ``[0, 1]`` of the largest part's size; 0 keeps the mask as it is.

    Returns:
        A bool tensor of the mask's shape, on its device.

    Example:
        >>> m = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
        >>> m[..., 2:8, 2:8] = True  # the brain, 36 voxels
        >>> m[..., 0, 0] = True  # a marker in the corner, 1 voxel: under 5% of the brain
        >>> subject_mask(m)[0, 0, 0, 0].item(), int(subject_mask(m).sum())
        (False, 36)
    """
    if not 0.0 <= min_part <= 1.0:
        raise ValueError(f"subject_mask: min_part is a share, in [0, 1]; got {min_part!r}.")
    m = plain_tensor(mask) != 0
    if min_part == 0:
        return m
    flat = m.detach().cpu().numpy().reshape(-1, *_spatial(m))
    out = flat.copy()
    for i, sample in enumerate(flat):
        labels, count = ndi.label(sample, structure=np.ones((3,) * sample.ndim, dtype=bool))
        if count > 1:
            sizes = np.bincount(labels.ravel())[1:]
            out[i] = np.isin(labels, np.flatnonzero(sizes >= min_part * sizes.max()) + 1)
    return torch.from_numpy(out.reshape(m.shape)).to(m.device)


def _spatial(mask: torch.Tensor) -> tuple[int, ...]:
    """The spatial shape of a ``(B, 1, *spatial)`` or ``(B, *spatial)`` mask."""
    return tuple(mask.shape[2:] if mask.ndim >= 4 and mask.shape[1] == 1 else mask.shape[1:])


def distance_to_mask(mask: torch.Tensor) -> torch.Tensor:
    """Euclidean distance, in voxels, from each voxel to the nearest voxel of its sample's mask (0 inside it;
    ``inf`` everywhere for an empty mask).

    Args:
        mask: ``(B, 1, *spatial)`` or ``(B, *spatial)``, bool or ``{0, 1}``.

    Returns:
        float32 of the mask's shape, on its device.

    Example:
        >>> m = torch.zeros(1, 1, 1, 5, dtype=torch.bool); m[..., 0] = True
        >>> distance_to_mask(m)[0, 0, 0].tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0]
    """
    m = plain_tensor(mask) != 0
    flat = m.detach().cpu().numpy().reshape(-1, *_spatial(m))
    out = np.full(flat.shape, np.inf, dtype=np.float32)
    for i, sample in enumerate(flat):
        if sample.any():
            out[i] = ndi.distance_transform_edt(~sample)
    return torch.from_numpy(out.reshape(m.shape)).to(m.device)


def peak_margin(spatial_size: tuple[int, ...] | torch.Size, share: float = PEAK_MARGIN) -> float:
    """The default margin of :func:`peak_outside_mask` for images of ``spatial_size``: ``share`` of its shortest
    side, in voxels (4 for 128 x 128 slices, 1 for 32 x 32).

    A map is only as sharp as the layer it comes from, and a thresholded mask's edge is not quite the anatomy's:
    the voxels just outside a skull-stripped brain are dark but not black (compression noise, partial volume), so
    a map whose hot spot lies on the brain's edge may peak a voxel or two outside it. Within the margin a peak
    counts as on the subject. (The pointing game of Zhang et al., ECCV 2016, has a 15-pixel tolerance on
    224-pixel images for the same reason.)

    Example:
        >>> peak_margin((128, 128)), peak_margin((32, 32, 16))
        (4.0, 0.5)
    """
    return float(share * min(spatial_size))


def peak_voxels(saliency: torch.Tensor) -> torch.Tensor:
    """The index of each map's maximum (the first in memory order when tied): ``(B, ndim)`` long, on the map's
    device.

    Example:
        >>> sal = torch.zeros(2, 1, 4, 4); sal[0, 0, 1, 2] = 1.0; sal[1, 0, 3, 0] = 2.0
        >>> peak_voxels(sal).tolist()
        [[1, 2], [3, 0]]
    """
    sal = plain_tensor(saliency)
    sal = sal[:, 0] if sal.ndim >= 4 and sal.shape[1] == 1 else sal
    flat = sal.flatten(1).argmax(1)
    coords = []
    for size in reversed(sal.shape[1:]):
        coords.append(flat % size)
        flat = flat // size
    return torch.stack(coords[::-1], dim=1)


def peak_outside_mask(saliency: torch.Tensor, mask: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """1.0 where a map's maximum lies outside ``mask`` (a pointing-game miss, ties counted as
    :func:`~monai_cluscam.metrics.localization.pointing_game` counts them) by more than ``margin`` voxels, 0.0
    where it lies inside or within the margin, and ``nan`` for an all-zero map, which has no peak (so that a mean
    with ``nanmean`` leaves it out).

    Args:
        saliency: ``(B, 1, *spatial)`` or ``(B, *spatial)`` maps.
        mask: the subject, ``(B, 1, *spatial)`` or ``(B, *spatial)``, bool or ``{0, 1}``; batch 1 broadcasts.
        margin: voxels around the mask (Euclidean distance) where a peak still counts as inside; see
            :func:`peak_margin`.

    Returns:
        ``(B,)`` float32 on the map's device.

    Example:
        >>> sal = torch.zeros(3, 1, 4, 4); sal[0, 0, 0, 0] = 1.0; sal[1, 0, 3, 3] = 1.0
        >>> brain = torch.zeros(1, 1, 4, 4, dtype=torch.bool); brain[..., :2, :2] = True
        >>> peak_outside_mask(sal, brain)
        tensor([0., 1., nan])
        >>> peak_outside_mask(sal, brain, margin=2.0)  # (3, 3) is 2.2 voxels from the mask
        tensor([0., 1., nan])
    """
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"peak_outside_mask: margin is a number of voxels >= 0; got {margin!r}.")
    if margin > 0:
        mask = distance_to_mask(mask) <= margin
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pointing_game: the map of sample")  # blank maps are nan here
        missed = (~pointing_game(saliency, mask)).float()
    blank = (plain_tensor(saliency).flatten(1) == 0).all(1).to(missed.device)
    return torch.where(blank, torch.full_like(missed, float("nan")), missed)


def outside_by_class(
    outside: torch.Tensor, peak_outside: torch.Tensor, classes: torch.Tensor | list[int]
) -> dict[int, dict[str, float]]:
    """Per explained class: how many maps (``maps``: the non-blank ones), their mean share outside the mask
    (``outside_mask``) and the share of them peaking outside (``peak_outside``); blank maps (``nan``) left out.

    Example:
        >>> by = outside_by_class(torch.tensor([0.1, 0.3, 0.6]), torch.tensor([0.0, 1.0, 1.0]), [0, 1, 1])
        >>> {k: round(v, 2) for k, v in by[1].items()}
        {'maps': 2.0, 'outside_mask': 0.45, 'peak_outside': 1.0}
    """
    classes = torch.as_tensor(classes).flatten().cpu()
    out: dict[int, dict[str, float]] = {}
    for c in sorted(set(classes.tolist())):
        of = classes == c
        shares, peaks = outside[of], peak_outside[of]
        shares, peaks = shares[~torch.isnan(shares)], peaks[~torch.isnan(peaks)]
        out[int(c)] = {
            "maps": float(peaks.numel()),
            "outside_mask": float(shares.mean()) if shares.numel() else float("nan"),
            "peak_outside": float(peaks.mean()) if peaks.numel() else 0.0,
        }
    return out


def summarize_outside(
    outside: torch.Tensor,
    peak_outside: torch.Tensor,
    threshold: float = 0.5,
    peak_threshold: float = 0.5,
    classes: torch.Tensor | list[int] | None = None,
) -> dict[str, float]:
    """The audit set's summary of the per-sample shares outside a subject mask, and the audit's alert.

    Args:
        outside: ``(N,)`` share of each map's mass outside the mask (``nan`` for a blank map, left out).
        peak_outside: ``(N,)`` as :func:`peak_outside_mask` gives it (``nan`` for a blank map, left out).
        threshold: the mean share outside above which the audit alerts.
        peak_threshold: the share of maps peaking outside above which the audit alerts.
        classes: ``(N,)`` the class each map explains; the alert then also looks at each class alone (a
            shortcut learned for one class of four moves a quarter of the audit's maps at most).

    Returns:
        ``outside_mask`` (mean share), ``outside_mask_max`` (worst sample), ``flagged`` (share of samples above
        ``threshold``), the three only when some map is not blank; ``peak_outside`` (share of non-blank maps
        peaking outside, 0.0 when all are blank); with ``classes``, ``outside_mask_class_max`` and
        ``peak_outside_class_max``: the worst class's (:func:`outside_by_class`); ``alert`` (1.0 when
        ``outside_mask > threshold`` or ``peak_outside > peak_threshold``, overall or for some class, else 0.0).

    Example:
        >>> s = summarize_outside(torch.tensor([0.2, 0.6, float("nan")]), torch.tensor([0.0, 1.0, float("nan")]))
        >>> {k: round(v, 2) for k, v in s.items()}
        {'outside_mask': 0.4, 'outside_mask_max': 0.6, 'flagged': 0.5, 'peak_outside': 0.5, 'alert': 0.0}
        >>> s = summarize_outside(torch.tensor([0.1, 0.1, 0.2, 0.3]), torch.tensor([0.0, 0.0, 1.0, 1.0]),
        ...                       classes=[0, 0, 1, 1])
        >>> s["peak_outside"], s["peak_outside_class_max"], s["alert"]
        (0.5, 1.0, 1.0)
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
    if classes is not None:
        by_class = outside_by_class(outside, peak_outside, classes).values()
        shares = [row["outside_mask"] for row in by_class if not math.isnan(row["outside_mask"])]
        if shares:
            summary["outside_mask_class_max"] = max(shares)
        summary["peak_outside_class_max"] = max(row["peak_outside"] for row in by_class)
        alert = (alert or summary.get("outside_mask_class_max", 0.0) > threshold
                 or summary["peak_outside_class_max"] > peak_threshold)
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
