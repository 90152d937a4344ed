"""Affine helpers: LPS/RAS conversion and sanity checks that refuse malformed geometry."""

from __future__ import annotations

import numpy as np

__all__ = ["LPS_TO_RAS", "check_affine", "lps_to_ras", "world_of_voxel"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Flips x and y: DICOM's patient coordinates are LPS+, NIfTI/MONAI world coordinates are RAS+."""


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a 4x4 voxel-to-LPS affine to voxel-to-RAS (the operation is its own inverse)."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def check_affine(affine: object, source: object, *, spatial_dims: int = 3) -> np.ndarray:
    """Return ``affine`` as a float64 4x4 array, or raise ``ValueError`` naming ``source``.

    An affine is refused when it is not 4x4, holds NaN/inf, has a singular spatial part, or a last row
    other than ``[0, 0, 0, 1]``.
    """
    arr = np.asarray(affine, dtype=np.float64)
    if arr.shape != (4, 4):
        raise ValueError(f"{source}: expected a 4x4 affine, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{source}: the affine holds NaN or infinite values; the file's geometry is broken.")
    if not np.allclose(arr[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{source}: the affine's last row is {arr[3].tolist()}, expected [0, 0, 0, 1].")
    block = arr[:spatial_dims, :spatial_dims]
    if abs(np.linalg.det(block)) < 1e-12:
        raise ValueError(
            f"{source}: the affine is singular (zero voxel size or parallel axes); fix the file's geometry."
        )
    return arr


def world_of_voxel(affine: np.ndarray, ijk: object) -> np.ndarray:
    """Map voxel indices ``ijk`` (length 2 or 3) through a 4x4 affine to world coordinates (3,)."""
    idx = np.zeros(4)
    coords = np.asarray(ijk, dtype=np.float64).ravel()
    idx[: coords.size] = coords
    idx[3] = 1.0
    return (np.asarray(affine, dtype=np.float64) @ idx)[:3]
