"""Can a reader use the map? Its detail, and how much of it lies on the empty background around the subject.

- :func:`correlation_length`: the lag (in voxels) at which a map's radially averaged autocorrelation falls to
  one half; a map upsampled from a 4 x 4 layer of a 128 px slice has about 25 px, one from a 16 x 16 layer
  about 9 px.
- :func:`background_mask`: the empty background of an image, the voxels darker than ``level`` farther than
  ``margin`` voxels from the subject; what :func:`background_share` and :func:`peak_on_background` score.
- :func:`background_share` / :func:`peak_on_background`: the share of a map's mass on that background, and
  whether its peak lies there. On such a voxel a masked copy ``x * M`` equals ``x`` whatever ``M`` is, so heat
  there is upsampling, never evidence (see ``zero_unmaskable`` of :class:`~monai_cluscam.cam.BaseCAM`).

All take ``(B, 1, *spatial)`` maps, 2D or 3D, batched, on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_cluscam.data.masks import FOREGROUND_THRESHOLD, foreground_mask
from monai_cluscam.metrics.audit import peak_outside_mask
from monai_cluscam.metrics.localization import attribution_outside_mask
from monai_cluscam.utils import plain_tensor

__all__ = ["BACKGROUND_LEVEL", "BACKGROUND_MARGIN", "background_mask", "background_share", "correlation_length",
           "peak_on_background"]

#: grey value (of an image scaled to [0, 1]) below which a voxel counts as black: 2 of 255
BACKGROUND_LEVEL = 2 / 255
#: voxels of the black background closer than this to the subject are not counted as background
BACKGROUND_MARGIN = 4


def _maps(saliency: torch.Tensor, name: str) -> torch.Tensor:
    sal = plain_tensor(saliency)
    if sal.ndim not in (4, 5) or sal.shape[1] != 1:
        raise ValueError(f"{name}: saliency must be (B, 1, H, W) or (B, 1, H, W, D); got shape {tuple(sal.shape)}.")
    if not bool(torch.isfinite(sal).all()):
        raise ValueError(f"{name}: saliency contains NaN or Inf.")
    return sal.float()


def correlation_length(saliency: torch.Tensor, level: float = 0.5) -> torch.Tensor:
    """Per map, the smallest lag (in voxels, integer radii) at which the radially averaged autocorrelation of the
    mean-subtracted map falls below ``level`` (1 at lag 0). Small is detailed: a map of independent voxels has
    1; a map with one blob of radius ``r`` about ``r``. A constant map has no structure: ``nan``. Computed with
    zero padding (no wrap-around), so lags beyond the map's size are not seen; a map that never falls below
    ``level`` within half its smallest side gets ``inf``.

    Args:
        saliency: ``(B, 1, *spatial)`` maps.
        level: the autocorrelation level that defines the length, in ``(0, 1)``.

    Returns:
        ``(B,)`` float32 on the map's device.

    Example:
        >>> fine = torch.zeros(1, 1, 64, 64); fine[..., ::4, ::4] = 1.0  # a grid of dots 4 px apart
        >>> coarse = torch.zeros(1, 1, 64, 64); coarse[..., :32, :] = 1.0  # two halves
        >>> correlation_length(torch.cat([fine, coarse])).tolist()
        [1.0, 14.0]
    """
    if not 0 < level < 1:
        raise ValueError(f"correlation_length: level must be in (0, 1); got {level!r}.")
    sal = _maps(saliency, "correlation_length")[:, 0]
    spatial = tuple(sal.shape[1:])
    dims = tuple(range(1, sal.ndim))
    centred = sal - sal.mean(dim=dims, keepdim=True)
    padded = [2 * s for s in spatial]
    spectrum = torch.fft.rfftn(centred, s=padded, dim=dims)
    auto = torch.fft.irfftn(spectrum * spectrum.conj(), s=padded, dim=dims)
    zero_lag = auto.flatten(1)[:, :1]
    grids = torch.meshgrid(*[torch.fft.fftfreq(p, 1 / p, device=sal.device) for p in padded], indexing="ij")
    radius = torch.sqrt(sum(g * g for g in grids)).round().long().flatten()
    counts = torch.bincount(radius).clamp_min(1).float()
    profile = torch.stack([torch.bincount(radius, a) for a in auto.flatten(1)]) / counts  # (B, R)
    flat = zero_lag[:, 0] <= 1e-12
    profile = profile / zero_lag.clamp_min(1e-12)
    reach = min(spatial) // 2
    below = profile[:, : reach + 1] < level
    first = torch.where(below.any(1), below.float().argmax(1).float(), torch.full_like(zero_lag[:, 0], float("inf")))
    return torch.where(flat, torch.full_like(first, float("nan")), first)


def background_mask(image: torch.Tensor, level: float = BACKGROUND_LEVEL, margin: int = BACKGROUND_MARGIN,
                    threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """The empty background of each image: voxels below ``level`` in every channel and more than ``margin``
    voxels (chessboard distance) from the subject (:func:`~monai_cluscam.data.foreground_mask` at ``threshold``).

    Args:
        image: ``(B, C, *spatial)`` skull-stripped images scaled to [0, 1].
        level: the grey value below which a voxel is black.
        margin: voxels of black this close to the subject are left out (the brain's own dark rim).
        threshold: the subject's grey value, as in :func:`~monai_cluscam.data.foreground_mask`.

    Returns:
        ``(B, 1, *spatial)`` bool on the image's device.

    Example:
        >>> image = torch.zeros(1, 1, 32, 32); image[..., 8:24, 8:24] = 0.5
        >>> int(background_mask(image).sum())  # 32^2 minus the 24 x 24 square of the subject and its margin
        448
    """
    img = plain_tensor(image)
    if img.ndim not in (4, 5):
        raise ValueError(f"background_mask: image must be (B, C, H, W) or (B, C, H, W, D); got {tuple(img.shape)}.")
    if not isinstance(margin, int) or margin < 0:
        raise ValueError(f"background_mask: margin must be a non-negative int; got {margin!r}.")
    subject = torch.stack([foreground_mask(sample[:1], threshold) for sample in img]).float()
    pool = F.max_pool2d if img.ndim == 4 else F.max_pool3d
    near = pool(subject, 2 * margin + 1, stride=1, padding=margin) > 0 if margin else subject > 0
    dark = (img < level).all(1, keepdim=True)
    return dark & ~near


def background_share(saliency: torch.Tensor, image: torch.Tensor, **mask_args: float) -> torch.Tensor:
    """The share of each map's mass on :func:`background_mask` of ``image`` (0 for a map with none there; a
    uniform map gets the background's share of the image). ``nan`` for an all-zero map.

    Example:
        >>> image = torch.zeros(1, 1, 32, 32); image[..., 8:24, 8:24] = 0.5
        >>> round(float(background_share(torch.ones(1, 1, 32, 32), image)[0]), 3)  # 448 of 1024 voxels
        0.438
    """
    sal = _maps(saliency, "background_share")
    background = background_mask(image, **mask_args)
    if not bool((~background).any()):  # nothing but background
        return torch.where((sal.flatten(1) == 0).all(1), float("nan"), 1.0)
    return attribution_outside_mask(sal, ~background)


def peak_on_background(saliency: torch.Tensor, image: torch.Tensor, **mask_args: float) -> torch.Tensor:
    """1.0 where a map's maximum lies on :func:`background_mask` of ``image``, 0.0 elsewhere, ``nan`` for an
    all-zero map (ties: a peak shared with a voxel off the background counts as on it, as
    :func:`~monai_cluscam.metrics.localization.pointing_game` counts ties).

    Example:
        >>> image = torch.zeros(1, 1, 32, 32); image[..., 8:24, 8:24] = 0.5
        >>> sal = torch.zeros(2, 1, 32, 32); sal[0, 0, 16, 16] = 1.0; sal[1, 0, 0, 0] = 1.0
        >>> peak_on_background(sal, image.expand(2, -1, -1, -1)).tolist()
        [0.0, 1.0]
    """
    sal = _maps(saliency, "peak_on_background")
    return peak_outside_mask(sal, ~background_mask(image, **mask_args))
