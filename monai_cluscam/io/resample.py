"""Bring a map of a preprocessed image back onto the grid its scan was loaded on."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample

from ._geometry import check_affine

__all__ = ["to_original_grid"]


def _as_int_tuple(value: object) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(torch.as_tensor(value).cpu()).ravel())


def to_original_grid(image: MetaTensor, mode: str = "bilinear") -> MetaTensor:
    """Resample a channel-first ``MetaTensor`` from its current grid back to the grid it was loaded on.

    Preprocessing (``Orientationd``, ``Spacingd``, ``Resized``, ``CropForegroundd``, ``SpatialPadd``, ...)
    keeps ``affine`` up to date while ``original_affine`` and ``spatial_shape`` describe the file, so
    resampling from the one to the other undoes any chain of such transforms; voxels outside the cropped
    field of view become 0. Without ``original_affine``/``spatial_shape`` the image is returned unchanged.

    Args:
        image: ``(C, *spatial)`` with MONAI metadata.
        mode: interpolation (``"bilinear"`` or ``"nearest"``).

    Example:
        >>> import numpy as np, torch
        >>> from monai.data import MetaTensor
        >>> meta = {"original_affine": np.eye(4), "spatial_shape": np.array([4, 4])}
        >>> small = MetaTensor(torch.ones(1, 2, 2), affine=torch.diag(torch.tensor([2.0, 2.0, 1, 1])), meta=meta)
        >>> tuple(to_original_grid(small).shape)
        (1, 4, 4)
    """
    original = image.meta.get("original_affine")
    shape = image.meta.get("spatial_shape")
    if original is None or shape is None:
        return image
    target = check_affine(np.asarray(torch.as_tensor(original).cpu(), dtype=np.float64), "original_affine")
    size = _as_int_tuple(shape)
    if len(size) != image.ndim - 1:
        raise ValueError(
            f"spatial_shape {size} does not match the map's {image.ndim - 1} spatial dims; pass the map as "
            "(1, *spatial) with the metadata of the image it explains."
        )
    current = np.asarray(image.affine.cpu(), dtype=np.float64)
    if tuple(image.shape[1:]) == size and np.allclose(current, target, atol=1e-6):
        return image
    resampler = SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float64)
    out = resampler(image, dst_affine=torch.as_tensor(target), spatial_size=size)
    return out.to(torch.float32)
