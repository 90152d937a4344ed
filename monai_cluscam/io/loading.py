"""``load_image``: one entry point for NIfTI, DICOM (series folders and single files) and PNG/JPEG slices."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import SpaceKeys
from PIL import Image

from ._geometry import LPS_TO_RAS
from .dicom import read_dicom
from .nifti import read_nifti

__all__ = ["PICTURE_AFFINE", "PICTURE_SUFFIXES", "decode_picture", "load_image"]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File suffixes read as 2D pictures (case-insensitive)."""

MAX_PICTURE_PIXELS = 2**26
"""Most pixels a PNG/JPEG slice may have (8192 x 8192); a header claiming more is refused before decoding."""

PICTURE_AFFINE = LPS_TO_RAS.copy()
"""Voxel-to-RAS affine given to PNG/JPEG slices, which carry no geometry at all.

It is the placement ITK and 3D Slicer assume for a picture (1 mm pixels, first pixel at the origin, axes
along LPS), written in RAS: ``diag(-1, -1, 1, 1)``. Overlays exported for a picture therefore land on it
when both are opened in Slicer, but the affine says nothing about the patient.
"""


def _picture_array(img: Image.Image, source: str) -> np.ndarray:
    """Convert a PIL image to a channel-first array ``(C, width, height)``."""
    if img.mode in ("1", "L", "P", "LA", "PA"):
        arr = np.asarray(img.convert("L"), dtype=np.float32)[None]
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float32)[None]
    elif img.mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
        arr = np.moveaxis(rgb, -1, 0)
        if np.array_equal(arr[0], arr[1]) and np.array_equal(arr[0], arr[2]):
            arr = arr[:1]
    else:
        raise ValueError(f"{source}: unsupported picture mode {img.mode!r}; save it as 8-bit greyscale PNG.")
    return np.ascontiguousarray(np.swapaxes(arr, 1, 2))


def _open_picture(source: str, opener: object) -> np.ndarray:
    try:
        img = Image.open(opener)
    except MemoryError:
        raise
    except Exception as err:  # a damaged file makes PIL raise many types (OSError, SyntaxError, ...)
        raise ValueError(f"{source} is not a readable PNG/JPEG image ({err}); replace or remove it.") from err
    with img:
        if img.width * img.height > MAX_PICTURE_PIXELS:
            raise ValueError(
                f"{source} claims {img.width} x {img.height} pixels, more than a slice can have "
                f"({MAX_PICTURE_PIXELS}); the file is damaged or not a scan slice. Replace or remove it."
            )
        try:
            img.load()
        except MemoryError:
            raise
        except Exception as err:
            raise ValueError(f"{source} is not a readable PNG/JPEG image ({err}); replace or remove it.") from err
        return _picture_array(img, source)


def _meta_tensor(array: np.ndarray, affine: np.ndarray, source: str, extra: dict | None = None) -> MetaTensor:
    spatial = np.asarray(array.shape[1:], dtype=np.int64)
    meta = {
        "filename_or_obj": source,
        "original_affine": np.asarray(affine, dtype=np.float64).copy(),
        "spatial_shape": spatial,
        "space": SpaceKeys.RAS,
        "original_channel_dim": 0,
    }
    meta.update(extra or {})
    tensor = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))
    return MetaTensor(tensor, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def decode_picture(data: bytes, name: str = "picture") -> MetaTensor:
    """Decode PNG/JPEG bytes into a channel-first ``MetaTensor`` ``(C, width, height)``.

    The result matches ``load_image`` on the same picture saved as a file: greyscale (or colour with three
    equal channels) gives one channel, the affine is :data:`PICTURE_AFFINE`, and ``filename_or_obj`` is
    ``name``.

    Args:
        data: the encoded picture.
        name: recorded as ``filename_or_obj`` and used in error messages.

    Example:
        >>> import io, numpy as np
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.fromarray(np.zeros((8, 6), dtype=np.uint8)).save(buffer, format="PNG")
        >>> decode_picture(buffer.getvalue()).shape
        torch.Size([1, 6, 8])
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise ValueError(f"{name}: expected non-empty PNG/JPEG bytes, got {type(data).__name__}.")
    array = _open_picture(name, io.BytesIO(bytes(data)))
    return _meta_tensor(array, PICTURE_AFFINE, name)


def _as_slice(array: np.ndarray, affine: np.ndarray, file: Path) -> np.ndarray:
    """``(C, H, W, 1)`` as the 2D ``(C, H, W)``; its affine must place the slice through its first two axes."""
    in_plane = np.asarray(affine, dtype=np.float64)[:2, :2]
    if abs(np.linalg.det(in_plane)) < 1e-6 * max(1.0, float(np.abs(in_plane).max())) ** 2:
        raise ValueError(
            f"{file}: a single slice whose plane is not axial (its affine maps the in-plane axes onto the "
            "head-foot axis); a 2D model cannot place its overlay. Resample it to an axial slice first."
        )
    return array[..., 0]


def load_image(
    path: str | os.PathLike | MetaTensor, series_uid: str | None = None, *, spatial_dims: int | None = None
) -> MetaTensor:
    """Load an MRI image as a channel-first ``MetaTensor`` ``(C, *spatial)`` with a checked RAS affine.

    Supported inputs:

    * NIfTI (``.nii``, ``.nii.gz``), oblique included; the affine is nibabel's (sform, else qform). A 4D
      file ``(X, Y, Z, T)`` gives ``T`` channels.
    * A folder holding a DICOM series: slices are sorted along the slice normal (not by name), LPS is
      converted to RAS and RescaleSlope/Intercept applied; pass ``series_uid`` when the folder holds several
      series. Voxel axes are (column, row, slice).
    * A single DICOM file (2D gives a 2D image; an enhanced multi-frame file a volume).
    * PNG/JPEG slices: spatial axes ``(width, height)`` like MONAI's ``PILReader``; a picture has no
      geometry, so the affine is :data:`PICTURE_AFFINE` (what ITK/3D Slicer assume for pictures).
    * A ``MetaTensor`` (e.g. an item decoded from parquet by ``alzheimer_items``) is returned unchanged.

    The metadata holds ``affine``, ``original_affine``, ``spatial_shape``, ``filename_or_obj`` and
    ``space == "RAS"`` as MONAI's ``LoadImage`` sets them, plus ``original_channel_dim = 0`` (the result
    is already channel-first) and, for DICOM, ``SeriesInstanceUID``/``SeriesDescription``/``Modality``.
    In a dictionary pipeline use ``monai.transforms.Lambdad(keys="image", func=load_image)`` in place of
    ``LoadImaged`` + ``EnsureChannelFirstd``.

    Args:
        path: file or DICOM folder (or a ``MetaTensor``).
        series_uid: SeriesInstanceUID to pick in a folder with several series.
        spatial_dims: 2 for a 2D model: a NIfTI slice stored as ``(H, W, 1)`` (as :func:`save_overlay` and
            ``write_nifti`` store 2D images) is then read as the 2D image ``(C, H, W)``; its 4x4 affine is kept,
            so an overlay written back lands on the file's grid. None (default): as stored.

    Returns:
        The image as float32 ``MetaTensor``.

    Raises:
        FileNotFoundError: the path does not exist, or a folder is empty.
        ValueError: unreadable/corrupt/truncated files (whatever the reader library raised is chained as the
            cause), unsupported formats, several DICOM series without ``series_uid``, or missing/inconsistent
            geometry. A malformed geometry never becomes an identity. The loaders are fuzzed with random,
            truncated and corrupted bytes (``tests/io/test_fuzz_loaders.py``) to hold to this.
        MemoryError: the image does not fit in memory.

    Example:
        >>> import tempfile, numpy as np
        >>> from monai_cluscam.io import write_nifti
        >>> path = tempfile.mkdtemp() + "/t1.nii.gz"
        >>> path = write_nifti(np.zeros((4, 5, 6)), np.diag([1.0, 2.0, 3.0, 1.0]), path)
        >>> image = load_image(path)
        >>> tuple(image.shape), image.meta["space"] == "RAS", float(image.affine[2, 2])
        ((1, 4, 5, 6), True, 3.0)
    """
    if isinstance(path, MetaTensor):
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_image expects a path or a MetaTensor, got {type(path).__name__}.")
    file = Path(path).expanduser()
    source = str(file)
    if not file.exists():
        raise FileNotFoundError(f"Image path {file} does not exist; check the path.")
    if file.is_dir():
        volume, affine, extra = read_dicom(file, series_uid=series_uid)
        extra.pop("dicom_files")
        return _meta_tensor(volume[None], affine, source, extra)
    name = file.name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        data, affine = read_nifti(file)
        if data.ndim == 5 and data.shape[3] == 1:
            data = data[:, :, :, 0]
        if data.ndim in (2, 3):
            array = data[None]
        elif data.ndim == 4:
            array = np.moveaxis(data, -1, 0)
        else:
            raise ValueError(f"{file}: unsupported NIfTI shape {data.shape}; expected 2D, 3D or 4D data.")
        if spatial_dims == 2 and array.ndim == 4 and array.shape[3] == 1:
            array = _as_slice(array, affine, file)
        return _meta_tensor(array, affine, source)
    if name.endswith(PICTURE_SUFFIXES):
        return _meta_tensor(_open_picture(source, file), PICTURE_AFFINE, source)
    try:
        volume, affine, extra = read_dicom(file, series_uid=series_uid)
    except ValueError as err:
        if "is not a DICOM file" in str(err):
            raise ValueError(
                f"{file}: unsupported format (not NIfTI, PNG/JPEG or DICOM); convert it to NIfTI first."
            ) from err
        raise
    extra.pop("dicom_files")
    return _meta_tensor(volume[None], affine, source, extra)
