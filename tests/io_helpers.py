"""Shared helpers for the io tests: oblique geometries, phantoms with a blob, world-coordinate checks."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from scipy.spatial.transform import Rotation

SHAPE = (40, 36, 24)
BLOB_VOXEL = np.array([29, 10, 15])


def oblique_affine(spacing=(1.0, 1.2, 2.0), angles=(20.0, -15.0, 30.0), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    """A rotated, anisotropic voxel-to-RAS affine."""
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def phantom(shape=SHAPE, blob=BLOB_VOXEL) -> np.ndarray:
    """An ellipsoidal 'head' (value 100) with a bright Gaussian blob (peak ~500) off-centre."""
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    centre = (np.asarray(shape) - 1) / 2
    radii = np.asarray(shape) * 0.45
    head = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) < 1
    blob_values = np.exp(-sum((g - b) ** 2 for g, b in zip(grid, blob, strict=True)) / (2 * 1.5**2))
    return 100.0 * head + 400.0 * blob_values


def overlay_centre_world(path) -> np.ndarray:
    """World (RAS mm) centroid of the voxels above half the maximum of an overlay NIfTI."""
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float64)
    mask = data >= 0.5 * data.max()
    idx = np.argwhere(mask)
    weights = data[mask]
    centre = (idx * weights[:, None]).sum(axis=0) / weights.sum()
    return (img.affine @ np.r_[centre, np.zeros(4 - 1 - centre.size), 1.0])[:3]


def lands_on(path, world: np.ndarray, tolerance_mm: float) -> bool:
    """True when the overlay's hot spot lies within ``tolerance_mm`` of ``world``."""
    return bool(np.linalg.norm(overlay_centre_world(path) - np.asarray(world)) <= tolerance_mm)


def smooth_map(image: MetaTensor) -> MetaTensor:
    """A smooth map with one off-centre peak, on the grid of ``image`` (maybe preprocessed)."""
    g = torch.Generator().manual_seed(0)
    values = torch.rand(1, *[max(2, n // 4) for n in image.shape[1:]], generator=g)[None]
    mode = "bilinear" if image.ndim == 3 else "trilinear"
    smooth = torch.nn.functional.interpolate(values, size=tuple(image.shape[1:]), mode=mode)[0]
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return MetaTensor(smooth, meta=dict(image.meta))


def values_on_grid(values: np.ndarray, affine: np.ndarray, target: nib.Nifti1Image) -> np.ndarray:
    """``values`` (voxel grid ``affine``) at the voxels of ``target``: the grids must coincide up to axis order
    and direction."""
    to_source = np.linalg.inv(affine) @ target.affine
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in target.shape[:3]], indexing="ij"), -1).reshape(-1, 3)
    index = grid @ to_source[:3, :3].T + to_source[:3, 3]
    assert np.abs(index - np.round(index)).max() < 1e-2, "the grids do not coincide"
    index = np.round(index).astype(int)
    assert (index >= 0).all() and (index < np.asarray(values.shape[:3])).all(), "the map lies elsewhere"
    return values[tuple(index.T)].reshape(target.shape[:3])
