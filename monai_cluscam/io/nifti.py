"""NIfTI reading and writing with nibabel, keeping sform and qform consistent."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from ._geometry import check_affine
from .files import atomic_write

__all__ = ["read_nifti", "write_nifti"]


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI-1/2 file (``.nii`` or ``.nii.gz``) as float32 data and its voxel-to-RAS affine.

    The affine is nibabel's choice: the sform when its code is set, else the qform, else (with a warning,
    because the file then states no world position) the voxel sizes from ``pixdim``.

    Args:
        path: the file.

    Returns:
        ``(data, affine)``: the array in file order (scaled by ``scl_slope``/``scl_inter``) and a 4x4 affine.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable NIfTI image (damaged or truncated header or data), or its affine
            is singular or not finite.
        MemoryError: the data does not fit in memory.

    Example:
        >>> import tempfile, numpy as np
        >>> path = tempfile.mkdtemp() + "/a.nii.gz"
        >>> path = write_nifti(np.zeros((2, 3, 4)), np.diag([2.0, 2.0, 2.0, 1.0]), path)
        >>> data, affine = read_nifti(path)
        >>> data.shape, float(affine[0, 0])
        ((2, 3, 4), 2.0)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"NIfTI file {path} does not exist; check the path.")
    try:
        img = nib.load(path)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ImageFileError(f"nibabel read it as {type(img).__name__}, not NIfTI")
        data = np.asarray(img.get_fdata(dtype=np.float32))
        header = img.header
        unplaced = int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0
        affine = img.affine
    except MemoryError:
        raise
    except Exception as err:  # a damaged header or data stream makes nibabel raise many types
        raise ValueError(
            f"{path} is not a readable NIfTI file ({type(err).__name__}: {err}); re-export or replace it."
        ) from err
    if unplaced:
        warnings.warn(
            f"{path}: neither sform nor qform is set, so the file states no world position; using the voxel "
            "sizes only. Overlays will align with this file but not with other scans of the patient.",
            UserWarning,
            stacklevel=2,
        )
    return data, check_affine(affine, path)


def write_nifti(
    volume: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    *,
    dtype: np.dtype | type = np.float32,
    overwrite: bool = False,
) -> Path:
    """Write ``volume`` as NIfTI-1 with both sform and qform set to ``affine`` (code 1, "scanner").

    The write is atomic (temporary file in the same folder, then a rename); ``.nii.gz`` is compressed.

    Args:
        volume: array in voxel order of ``affine`` (2D-5D).
        affine: 4x4 voxel-to-RAS affine.
        path: target ending in ``.nii`` or ``.nii.gz``.
        dtype: stored data type.
        overwrite: replace an existing file; otherwise an existing file raises ``FileExistsError``.

    Returns:
        The written path.

    Example:
        >>> import tempfile, numpy as np
        >>> write_nifti(np.zeros((2, 3, 4)), np.eye(4), tempfile.mkdtemp() + "/a.nii").name
        'a.nii'
    """
    path = Path(path).expanduser()
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"write_nifti: {path} must end in .nii or .nii.gz.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"write_nifti: folder {path.parent} does not exist; create it first.")
    aff = check_affine(affine, "write_nifti affine")
    img = nib.Nifti1Image(np.asarray(volume, dtype=dtype), aff)
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    payload = img.to_bytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    return atomic_write(path, lambda stream: stream.write(payload), overwrite=overwrite)
