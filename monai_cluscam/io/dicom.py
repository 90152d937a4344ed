"""DICOM reading with explicit, checked geometry (writing: :mod:`monai_cluscam.io.dicom_write`).

Reading does not rely on MONAI's ``PydicomReader``: that reader drops ``ImageOrientationPatient`` when its
decimal strings exceed DICOM's 16-character DS limit (which real scanners and converters produce) and then
silently falls back to an identity orientation. Here the raw DS strings are parsed directly, slices are
sorted by their position along the slice normal (never by file name), and any missing or inconsistent
geometry raises an error that names the file.

Conventions: a volume's voxel axes are ``(column, row, slice)`` of the DICOM pixel grid, as in MONAI's
DICOM readers, and affines map voxel indices to RAS+ world millimetres (DICOM itself stores LPS+).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ._geometry import lps_to_ras

__all__ = ["ORTHOGONALITY_TOLERANCE", "read_dicom"]

_TAG_IOP = 0x00200037
_TAG_IPP = 0x00200032
_TAG_PIXEL_SPACING = 0x00280030
_TAG_SLOPE = 0x00281053
_TAG_INTERCEPT = 0x00281052
_TAG_THICKNESS = 0x00180050
_TAG_SPACING_BETWEEN = 0x00180088

#: Files in a series folder that are never DICOM (NIfTI, pictures): left out of the series.
_OTHERS = (".nii", ".nii.gz", ".png", ".jpg", ".jpeg")
#: Direction cosines this close count as orthogonal / parallel.
ORTHOGONALITY_TOLERANCE = 1e-3
_SPACING_REL_TOL = 0.01
_SPACING_ABS_TOL = 0.01


def _raw_floats(ds: Dataset, tag: int) -> list[float] | None:
    """Parse a DS element from its raw text, whatever its length; None when absent or empty."""
    if tag not in ds:
        return None
    elem = ds.get_item(tag)
    value = elem.value
    if value is None:
        return None
    if isinstance(value, bytes):
        text = value.decode("ascii", errors="replace")
        parts = [p for p in (s.strip(" \x00") for s in text.split("\\"))]
    elif isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        parts = [str(v).strip() for v in value]
    else:
        parts = [p.strip() for p in str(value).split("\\")]
    if not parts or all(p == "" for p in parts):
        return None
    try:
        return [float(p) for p in parts]
    except ValueError as err:
        raise ValueError(f"tag ({tag >> 16:04X},{tag & 0xFFFF:04X}) holds non-numeric text {parts!r}") from err


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


@dataclass
class _Slice:
    """One 2D image (a single-frame file or a frame of a multi-frame file) with its geometry."""

    name: str
    iop: list[float] | None
    ipp: list[float] | None
    pixel_spacing: list[float] | None
    thickness: float | None
    slope: float
    intercept: float
    pixels: Any


def _decode_pixels(ds: Dataset, source: str) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ValueError(f"{source} holds no pixel data; it is not an image (remove it from the input).")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(
            f"{source}: colour DICOM (SamplesPerPixel={ds.SamplesPerPixel}) is not supported; "
            "convert it to greyscale first."
        )
    try:
        return np.asarray(ds.pixel_array)
    except Exception as err:
        raise ValueError(
            f"{source}: cannot decode the pixel data ({err}). The file may be truncated or use a compressed "
            "transfer syntax without a decoder; install pylibjpeg/gdcm or decompress it "
            "(e.g. gdcmconv --raw)."
        ) from err


def _slices_of(ds: Dataset, source: str) -> list[_Slice]:
    """Split a dataset into 2D slices with geometry (one for classic files, one per frame otherwise)."""
    try:
        slope = (_raw_floats(ds, _TAG_SLOPE) or [1.0])[0]
        intercept = (_raw_floats(ds, _TAG_INTERCEPT) or [0.0])[0]
        thickness = (_raw_floats(ds, _TAG_SPACING_BETWEEN) or _raw_floats(ds, _TAG_THICKNESS) or [None])[0]
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if n_frames == 1:
            return [
                _Slice(
                    name=source,
                    iop=_raw_floats(ds, _TAG_IOP),
                    ipp=_raw_floats(ds, _TAG_IPP),
                    pixel_spacing=_raw_floats(ds, _TAG_PIXEL_SPACING),
                    thickness=thickness,
                    slope=slope,
                    intercept=intercept,
                    pixels=lambda: _decode_pixels(ds, source),
                )
            ]
        shared = _first_item(ds, "SharedFunctionalGroupsSequence") or Dataset()
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
        if len(per_frame) != n_frames:
            raise ValueError(
                f"{source}: multi-frame file without per-frame positions (PerFrameFunctionalGroupsSequence); "
                "convert it to single-frame files (e.g. with dcmtk/dicom3tools) first."
            )
        frames: list[_Slice] = []
        for index, frame in enumerate(per_frame):

            def lookup(seq_name: str, tag: int, frame: Dataset = frame) -> list[float] | None:
                for group in (frame, shared):
                    item = _first_item(group, seq_name)
                    if item is not None and tag in item:
                        return _raw_floats(item, tag)
                return None

            transform = _first_item(frame, "PixelValueTransformationSequence") or _first_item(
                shared, "PixelValueTransformationSequence"
            )
            f_slope = (_raw_floats(transform, _TAG_SLOPE) or [slope])[0] if transform else slope
            f_icpt = (_raw_floats(transform, _TAG_INTERCEPT) or [intercept])[0] if transform else intercept
            frames.append(
                _Slice(
                    name=f"{source} frame {index + 1}",
                    iop=lookup("PlaneOrientationSequence", _TAG_IOP) or _raw_floats(ds, _TAG_IOP),
                    ipp=lookup("PlanePositionSequence", _TAG_IPP),
                    pixel_spacing=lookup("PixelMeasuresSequence", _TAG_PIXEL_SPACING)
                    or _raw_floats(ds, _TAG_PIXEL_SPACING),
                    thickness=(
                        lookup("PixelMeasuresSequence", _TAG_SPACING_BETWEEN)
                        or lookup("PixelMeasuresSequence", _TAG_THICKNESS)
                        or [thickness]
                    )[0],
                    slope=f_slope,
                    intercept=f_icpt,
                    pixels=lambda index=index: _decode_pixels(ds, source)[index],
                )
            )
        return frames
    except ValueError as err:
        if str(err).startswith(source):
            raise
        raise ValueError(f"{source}: malformed geometry or rescale field ({err}); fix or remove the file.") from err


def _orientation(sl: _Slice) -> tuple[np.ndarray, np.ndarray]:
    if sl.iop is None or len(sl.iop) != 6:
        raise ValueError(
            f"{sl.name}: ImageOrientationPatient (0020,0037) is missing or does not hold 6 numbers "
            f"({sl.iop}); the slice orientation is unknown. Fix the header (it must not default to identity)."
        )
    row, col = np.asarray(sl.iop[:3]), np.asarray(sl.iop[3:])
    for vec in (row, col):
        if not 0.5 < np.linalg.norm(vec) < 1.5:
            raise ValueError(f"{sl.name}: ImageOrientationPatient {sl.iop} does not hold unit vectors.")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    if abs(float(row @ col)) > 1e-2:
        raise ValueError(f"{sl.name}: ImageOrientationPatient {sl.iop} holds non-orthogonal directions.")
    return row, col


def _assemble(slices: list[_Slice], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Sort slices along the normal, check the grid, and return (volume (cols, rows[, n]), RAS affine)."""
    row_cos, col_cos = _orientation(slices[0])
    for sl in slices[1:]:
        r, c = _orientation(sl)
        tol = ORTHOGONALITY_TOLERANCE
        if not (np.allclose(r, row_cos, atol=tol) and np.allclose(c, col_cos, atol=tol)):
            raise ValueError(
                f"{source}: slices have different orientations ({slices[0].name} vs {sl.name}); the series "
                "mixes several stacks. Split it and load one stack at a time."
            )
    for sl in slices:
        if sl.ipp is None or len(sl.ipp) != 3:
            raise ValueError(
                f"{sl.name}: ImagePositionPatient (0020,0032) is missing or does not hold 3 numbers; "
                "the slice position is unknown. Fix the header before loading."
            )
        if sl.pixel_spacing is None or len(sl.pixel_spacing) != 2 or min(sl.pixel_spacing) <= 0:
            raise ValueError(
                f"{sl.name}: PixelSpacing (0028,0030) is missing or invalid ({sl.pixel_spacing}); the pixel "
                "size is unknown. Fix the header before loading."
            )
        if not np.allclose(sl.pixel_spacing, slices[0].pixel_spacing, rtol=1e-4):
            raise ValueError(f"{source}: slices have different PixelSpacing ({slices[0].name} vs {sl.name}).")
    normal = np.cross(row_cos, col_cos)
    order = sorted(range(len(slices)), key=lambda i: float(normal @ np.asarray(slices[i].ipp)))
    slices = [slices[i] for i in order]
    positions = np.asarray([sl.ipp for sl in slices], dtype=np.float64)
    row_spacing, col_spacing = slices[0].pixel_spacing

    if len(slices) > 1:
        gaps = np.diff(positions @ normal)
        if np.min(gaps) < 1e-3:
            dup = next(i for i, g in enumerate(gaps) if g < 1e-3)
            raise ValueError(
                f"{source}: {slices[dup].name} and {slices[dup + 1].name} lie at the same position; the "
                "series holds several volumes (echoes, time points or repeats). Split it and load one "
                "volume at a time."
            )
        median = float(np.median(gaps))
        if np.max(np.abs(gaps - median)) > max(_SPACING_REL_TOL * median, _SPACING_ABS_TOL):
            raise ValueError(
                f"{source}: non-uniform slice spacing (gaps between {gaps.min():.4g} and "
                f"{gaps.max():.4g} mm); slices are missing or the stack is irregular. Complete the series "
                "or resample it first."
            )
        step = (positions[-1] - positions[0]) / (len(slices) - 1)
        expected = positions[0] + np.outer(np.arange(len(slices)), step)
        if np.max(np.linalg.norm(positions - expected, axis=1)) > max(_SPACING_REL_TOL * median, _SPACING_ABS_TOL):
            raise ValueError(
                f"{source}: slice positions do not lie on a straight, regular line; the series is irregular "
                "and cannot be stored as one volume. Resample it first."
            )
    else:
        step = normal * float(slices[0].thickness or 1.0)

    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing
    lps[:3, 1] = col_cos * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]

    planes = []
    shape = None
    for sl in slices:
        pix = np.asarray(sl.pixels(), dtype=np.float32)
        if pix.ndim != 2:
            raise ValueError(f"{sl.name}: expected a 2D greyscale frame, got pixel array shape {pix.shape}.")
        if shape is not None and pix.shape != shape:
            raise ValueError(f"{source}: slices have different sizes ({shape} vs {pix.shape} in {sl.name}).")
        shape = pix.shape
        planes.append((pix * np.float32(sl.slope) + np.float32(sl.intercept)).T)
    volume = np.stack(planes, axis=-1)
    return volume, lps_to_ras(lps)


def _read_dataset(path: Path) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path)
    except InvalidDicomError as err:
        raise ValueError(
            f"{path} is not a DICOM file ({err}); remove it from the input or pass the right path."
        ) from err
    except Exception as err:
        raise ValueError(f"{path}: the DICOM file is corrupt or truncated ({err}); replace or remove it.") from err


def _series_listing(groups: dict[str, list[tuple[Path, Dataset]]]) -> str:
    lines = []
    for uid, members in groups.items():
        description = str(members[0][1].get("SeriesDescription", "") or "")
        lines.append(f"  - {uid!s} ({description!r}, {len(members)} files)")
    return "\n".join(lines)


def read_dicom(path: str | os.PathLike, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a DICOM series folder or a single (multi-frame) DICOM file.

    Args:
        path: a folder holding the files of one or more series (only its top level is read; NIfTI and PNG/JPEG
            files there are left out), or one file.
        series_uid: SeriesInstanceUID to load when the folder holds several series.

    Returns:
        ``(volume, affine, meta)``: a float32 array ``(columns, rows[, slices])`` with RescaleSlope/Intercept
        applied (a single-frame file gives a 2D array), its 4x4 voxel-to-RAS affine, and a dict with
        ``SeriesInstanceUID``, ``SeriesDescription``, ``Modality`` and ``dicom_files`` (slice order).

    Raises:
        FileNotFoundError: ``path`` does not exist or the folder holds no files.
        ValueError: unreadable files, several series without ``series_uid``, or missing/inconsistent
            geometry (orientation, position, spacing, duplicate or irregular slices).

    Example:
        >>> import tempfile, numpy as np
        >>> from monai_cluscam.io import write_dicom_series
        >>> folder = tempfile.mkdtemp()
        >>> _ = write_dicom_series(np.ones((4, 5, 3)), np.diag([2.0, 2.0, 3.0, 1.0]), folder)
        >>> volume, affine, meta = read_dicom(folder)
        >>> volume.shape, float(affine[2, 2])
        ((4, 5, 3), 3.0)
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"DICOM path {path} does not exist; check the path.")
    if path.is_file():
        ds = _read_dataset(path)
        slices = _slices_of(ds, str(path))
        volume, affine = _assemble(slices, str(path))
        if len(slices) == 1:
            volume = volume[..., 0]
        return volume, affine, _meta_of(ds, [path])

    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR" and not p.name.lower().endswith(_OTHERS)
    )
    if not files:
        raise FileNotFoundError(f"DICOM folder {path} holds no files; pass the folder that holds the series.")
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for file in files:
        ds = _read_dataset(file)
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise ValueError(
                f"{file} has no SeriesInstanceUID: it is truncated or not a DICOM image object; replace or remove it."
            )
        groups.setdefault(uid, []).append((file, ds))
    images = {uid: members for uid, members in groups.items() if any("Rows" in ds for _, ds in members)}
    if not images:
        raise ValueError(f"DICOM folder {path} holds no image files (no Rows/Columns); pass an image series.")
    if series_uid is not None:
        if series_uid not in groups:
            raise ValueError(
                f"Series {series_uid!r} is not in {path}; the series found are:\n{_series_listing(groups)}"
            )
        members = groups[series_uid]
    elif len(images) > 1:
        raise ValueError(
            f"DICOM folder {path} holds {len(images)} image series; pass series_uid=... to pick one (on the "
            f"command line: move each series into a folder of its own) of:\n"
            f"{_series_listing(images)}"
        )
    else:
        members = next(iter(images.values()))
    incomplete = [str(file) for file, ds in members if "Rows" not in ds or "PixelData" not in ds]
    if incomplete:
        raise ValueError(
            f"{incomplete[0]} belongs to the series but holds no image (truncated or not an image file; "
            f"{len(incomplete)} such files); replace or remove it."
        )

    slices: list[_Slice] = []
    owners: dict[int, Path] = {}
    for file, ds in members:
        for sl in _slices_of(ds, str(file)):
            owners[id(sl)] = file
            slices.append(sl)
    volume, affine = _assemble(slices, str(path))
    normal = np.cross(*_orientation(slices[0]))
    ordered = sorted(slices, key=lambda s: float(normal @ np.asarray(s.ipp)))
    return volume, affine, _meta_of(members[0][1], [owners[id(s)] for s in ordered])


def _meta_of(ds: Dataset, files: Sequence[Path]) -> dict:
    return {
        "SeriesInstanceUID": str(ds.get("SeriesInstanceUID", "") or ""),
        "SeriesDescription": str(ds.get("SeriesDescription", "") or ""),
        "Modality": str(ds.get("Modality", "") or ""),
        "dicom_files": [str(f) for f in files],
    }
