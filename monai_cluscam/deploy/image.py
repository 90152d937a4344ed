"""The MONAI Deploy App SDK's ``Image`` of a DICOM series as the ``MetaTensor`` a bundle's preprocessing takes.

Nothing here imports the SDK: an ``Image`` is used through its documented methods only (``asnumpy()``, an array
``(slices, rows, columns)`` as ``DICOMSeriesToVolumeOperator`` stacks it, and ``metadata()``), and a series through
its SOP instances' pydicom datasets.

The geometry is not taken from the SDK's affine. ``DICOMSeriesToVolumeOperator`` (SDK 4.0.0) multiplies the row
direction cosine by ``PixelSpacing[0]`` and the column direction cosine by ``PixelSpacing[1]``, but
``PixelSpacing[0]`` is the distance between rows, which lies along the *column* direction: for pixels that are not
square its ``nifti_affine_transform`` has the two in-plane spacings swapped, and a map placed with it would be
stretched off the scan. The voxel-to-RAS affine is instead read from the series' own attributes by
:func:`monai_cluscam.io.read_dicom`, the reader that :func:`~monai_cluscam.io.save_dicom_overlay` places the map
with, so the classifier's input and the written map share one grid. The SDK's metadata is still checked against
it: its slice origin says in which order the SDK stacked the slices.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import SpaceKeys
from pydicom.dataset import Dataset

from monai_cluscam.io import read_dicom
from monai_cluscam.io._geometry import LPS_TO_RAS

__all__ = ["image_to_metatensor", "link_series"]

logger = logging.getLogger(__name__)

#: How far (mm) the SDK's slice origin may lie from the series' first slice and still name it.
_ORIGIN_TOL_MM = 1e-2


def link_series(datasets: Sequence[Dataset], folder: str | os.PathLike) -> Path:
    """Put exactly the given SOP instances in ``folder`` (created), one file each: a symbolic link to the file a
    dataset was read from, a copy where links cannot be made, or the dataset written out when it has no file.

    The SDK's DICOM loader reads a whole folder tree and may leave instances out (duplicates of a slice position
    with a lower AcquisitionNumber); a folder holding only the selected series' instances is what
    :func:`~monai_cluscam.io.read_dicom` and :func:`~monai_cluscam.io.save_dicom_overlay` read as that series.

    Returns:
        The folder.
    """
    if not datasets:
        raise ValueError("the selected series holds no SOP instances; there is nothing to explain.")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for index, ds in enumerate(datasets):
        target = out / f"IM{index + 1:05d}.dcm"
        source = getattr(ds, "filename", None)
        if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
            try:
                target.symlink_to(Path(source).resolve())
            except OSError:  # no symbolic links here (some Windows accounts): a copy reads the same
                shutil.copyfile(source, target)
        else:
            ds.save_as(target, enforce_file_format=True)
    return out


def image_to_metatensor(image: object, source: str | os.PathLike, *, spatial_dims: int = 3) -> MetaTensor:
    """The SDK's ``Image`` of the series in ``source`` as a channel-first ``MetaTensor`` on the series' RAS grid.

    The array ``(slices, rows, columns)`` becomes ``(1, columns, rows, slices)``, the axis order and affine that
    :func:`~monai_cluscam.io.load_image` gives the same folder, with the metadata it sets (``filename_or_obj`` is
    ``source``, so the map written from it references these slices). The pixel values are the SDK's (RescaleSlope
    and RescaleIntercept applied; the SDK also applies a presentation LUT, which inverts a MONOCHROME1 series: a
    warning says when its values differ from the stored ones).

    Args:
        image: the ``Image`` that ``DICOMSeriesToVolumeOperator`` made of the series.
        source: a folder holding the series' instances and nothing else (see :func:`link_series`).
        spatial_dims: 2 for a 2D model: a one-slice series then gives ``(1, columns, rows)`` with its 4x4 affine,
            as a single DICOM file loads.

    Raises:
        ValueError: the ``Image`` is not a ``(slices, rows, columns)`` array of the series' size, its metadata
            places the slices in neither order of the series, the series' geometry is broken (the message of
            :func:`~monai_cluscam.io.read_dicom`), or a 2D model is given a series of several slices.
    """
    volume, affine, meta = read_dicom(source)
    meta.pop("dicom_files")
    if volume.ndim == 2:
        volume = volume[..., None]
    pixels = np.asarray(image.asnumpy())
    if pixels.ndim != 3:
        raise ValueError(
            f"the SDK's Image holds an array of shape {pixels.shape}; DICOMSeriesToVolumeOperator gives one "
            "(slices, rows, columns) volume per series. Pass the Image of one greyscale series."
        )
    array = np.ascontiguousarray(np.transpose(pixels, (2, 1, 0)), dtype=np.float32)
    if array.shape != volume.shape:
        raise ValueError(
            f"the SDK's Image (columns, rows, slices = {array.shape}) is not the size of the series in {source} "
            f"({volume.shape}); pass the Image and the selected series it was made of."
        )
    array = _in_series_order(array, volume, affine, _metadata(image))
    if not np.allclose(array, volume, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(volume).max()))):
        logger.warning(
            "The SDK's pixel values differ from the series' stored values with RescaleSlope/Intercept (a modality "
            "or presentation LUT, or a MONOCHROME1 series the SDK inverted); the classifier sees the SDK's values."
        )
    if spatial_dims == 2:
        if array.shape[2] != 1:
            raise ValueError(
                f"the bundle's model takes 2D images but the series has {array.shape[2]} slices; select a "
                "one-slice series (DICOMSeriesSelectorOperator's rules) or use a 3D bundle."
            )
        array = array[..., 0]
    spatial = np.asarray(array.shape, dtype=np.int64)
    meta.update(
        {
            "filename_or_obj": str(source),
            "original_affine": np.asarray(affine, dtype=np.float64).copy(),
            "spatial_shape": spatial,
            "space": SpaceKeys.RAS,
            "original_channel_dim": 0,
        }
    )
    return MetaTensor(torch.as_tensor(array[None]), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _metadata(image: object) -> dict:
    getter = getattr(image, "metadata", None)
    meta = getter() if callable(getter) else None
    return meta if isinstance(meta, dict) else {}


def _in_series_order(array: np.ndarray, volume: np.ndarray, affine: np.ndarray, metadata: dict) -> np.ndarray:
    """The SDK's volume with its slices in the series' order (ascending along the slice normal, as ``volume``).

    The SDK's ``dicom_affine_transform`` (LPS) holds the position of the slice it stacked first; where it has none
    (one slice, or another producer), the pixels decide.
    """
    slices = array.shape[2]
    if slices == 1:
        return array
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    first, last = lps[:3, 3], lps[:3, 3] + (slices - 1) * lps[:3, 2]
    sdk_affine = metadata.get("dicom_affine_transform")
    if sdk_affine is not None and np.shape(sdk_affine) == (4, 4):
        origin = np.asarray(sdk_affine, dtype=np.float64)[:3, 3]
        _note_affine_difference(np.asarray(sdk_affine, dtype=np.float64), lps)
        if np.allclose(origin, first, atol=_ORIGIN_TOL_MM):
            return array
        if np.allclose(origin, last, atol=_ORIGIN_TOL_MM):
            return np.ascontiguousarray(array[..., ::-1])
        raise ValueError(
            f"the SDK's Image starts at {origin.round(3).tolist()} (LPS mm), neither the first "
            f"({first.round(3).tolist()}) nor the last ({last.round(3).tolist()}) slice of the series; the Image "
            "and the selected series do not belong together."
        )
    forward = float(np.abs(array - volume).mean())
    backward = float(np.abs(array[..., ::-1] - volume).mean())
    return array if forward <= backward else np.ascontiguousarray(array[..., ::-1])


def _note_affine_difference(sdk_affine: np.ndarray, lps: np.ndarray) -> None:
    """Say when the SDK's own affine is not the series' (its in-plane spacings swapped: pixels not square)."""
    if np.allclose(sdk_affine[:3, :3], lps[:3, :3], atol=1e-4):
        return
    swapped = np.allclose(np.linalg.norm(sdk_affine[:3, :2], axis=0), np.linalg.norm(lps[:3, :2], axis=0)[::-1])
    logger.info(
        "The SDK's dicom_affine_transform differs from the series' geometry%s; the map is placed with the "
        "geometry read from ImageOrientationPatient, ImagePositionPatient and PixelSpacing.",
        " (its in-plane spacings are swapped: the pixels are not square)" if swapped else "",
    )
