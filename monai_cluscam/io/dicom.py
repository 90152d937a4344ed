"""DICOM reading and writing with explicit, checked geometry.

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
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from ._geometry import check_affine, lps_to_ras
from .files import atomic_write, check_writable_dir, safe_stem

__all__ = ["read_dicom", "write_dicom_series"]

_TAG_IOP = 0x00200037
_TAG_IPP = 0x00200032
_TAG_PIXEL_SPACING = 0x00280030
_TAG_SLOPE = 0x00281053
_TAG_INTERCEPT = 0x00281052
_TAG_THICKNESS = 0x00180050
_TAG_SPACING_BETWEEN = 0x00180088

#: Files in a series folder that are never DICOM (NIfTI, pictures): left out of the series.
_OTHERS = (".nii", ".nii.gz", ".png", ".jpg", ".jpeg")
_ORTHO_TOL = 1e-3
_SPACING_REL_TOL = 0.01
_SPACING_ABS_TOL = 0.01


# --------------------------------------------------------------------------------------------- writing
def _ds(value: float) -> str:
    """Format a number as a valid DICOM decimal string (at most 16 characters)."""
    return format_number_as_ds(float(value))


def _choose_rescale(volume: np.ndarray, rescale: tuple[float, float] | None) -> tuple[float, float]:
    """Pick (slope, intercept) so that ``(volume - intercept) / slope`` fits in int16."""
    if rescale is not None:
        slope, intercept = (float(v) for v in rescale)
        if not np.isfinite(slope) or slope == 0 or not np.isfinite(intercept):
            raise ValueError(f"rescale={rescale!r}: the slope must be finite and non-zero, the intercept finite.")
        return float(_ds(slope)), float(_ds(intercept))
    lo, hi = float(volume.min()), float(volume.max())
    if np.all(np.equal(np.round(volume), volume)) and lo >= -32768 and hi <= 32767:
        return 1.0, 0.0
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    slope = float(_ds(slope))
    intercept = float(_ds(lo + 32768.0 * slope))
    return slope, intercept


def _slice_dataset(
    pixels: np.ndarray,
    *,
    position: np.ndarray,
    orientation: np.ndarray,
    pixel_spacing: tuple[float, float],
    slice_spacing: float,
    slice_location: float,
    instance_number: int,
    slope: float,
    intercept: float,
    uids: dict[str, str],
    series_description: str,
    patient_id: str,
    patient_name: str,
    window: tuple[float, float],
    body_part: str,
) -> Dataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.Modality = "MR"
    ds.Manufacturer = "monai-cluscam"
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.SeriesDescription = series_description
    ds.InstanceNumber = instance_number
    ds.BodyPartExamined = body_part
    ds.PatientPosition = ""  # type 2C: how the patient lay is not known for a written scan
    ds.PositionReferenceIndicator = ""
    ds.ScanningSequence = "RM"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.EchoTrainLength = 1
    ds.EchoTime = ""  # type 2: present, empty (not known)
    ds.RepetitionTime = ""
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in orientation]
    ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
    ds.SliceThickness = _ds(slice_spacing)
    ds.SpacingBetweenSlices = _ds(slice_spacing)
    ds.SliceLocation = _ds(slice_location)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = _ds(slope)
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleType = "US"
    ds.WindowCenter = _ds(window[0])
    ds.WindowWidth = _ds(window[1])
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def write_dicom_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: str | os.PathLike,
    *,
    series_uid: str | None = None,
    series_description: str = "monai-cluscam series",
    shuffle_names: bool = False,
    patient_id: str = "ANONYMOUS",
    patient_name: str = "Anonymous^",
    study_uid: str | None = None,
    rescale: tuple[float, float] | None = None,
    seed: int | None = None,
    body_part: str = "",
) -> list[Path]:
    """Write a 3D array as an MR DICOM series, one file per slice, with exact (possibly oblique) geometry.

    The voxel axes ``(i, j, k)`` of ``volume`` become (column, row, slice) of the DICOM grid, so
    ``load_image`` on the folder returns the same array and affine (up to int16 quantisation and a
    reversal of ``k`` when the third affine column points against the in-plane normal). The affine's first
    two columns must be orthogonal (DICOM cannot store sheared pixel grids) and the third must be parallel
    to their cross product. Values are stored as signed 16-bit integers with ``RescaleSlope`` /
    ``RescaleIntercept``, with a window (``WindowCenter`` / ``WindowWidth``) over the 0.5-99.5 percentiles of the
    values so a viewer opens it with the tissue visible; DS fields are written within the 16-character limit;
    the MR acquisition attributes that are not known (``EchoTime``, ``RepetitionTime``, ``PatientPosition``)
    are present and empty, as DICOM allows for type 2. Existing files are never
    overwritten and every file is written atomically.

    Args:
        volume: 3D array ``(I, J, K)`` of real values.
        affine: 4x4 voxel-to-RAS affine (NIfTI/MONAI convention, millimetres).
        folder: output folder, created if needed; may already hold other series.
        series_uid: SeriesInstanceUID to use; a new UID is generated when None.
        series_description: SeriesDescription (0008,103E).
        shuffle_names: give files random names, so that the name order differs from the slice order;
            otherwise files are named ``S<last 8 digits of the series UID>_IM<slice number>.dcm``.
        patient_id: PatientID (0010,0020).
        patient_name: PatientName (0010,0010); the default is a one-component name written as DICOM asks
            (a trailing caret).
        study_uid: StudyInstanceUID; generated when None.
        rescale: ``(slope, intercept)`` mapping stored integers to values; chosen automatically when None
            (identity for integer data that fits in int16, else the full int16 range).
        seed: seed of the random file names (only with ``shuffle_names``).
        body_part: BodyPartExamined (0018,0015), e.g. ``"BRAIN"``; empty when unknown.

    Returns:
        The written files, in slice order (``k = 0, 1, ...``).

    Raises:
        ValueError: the volume is not 3D or not finite, the affine is malformed or sheared, or ``rescale``
            cannot represent the values in int16.
        FileExistsError: a target file already exists.

    Example:
        >>> import tempfile, numpy as np
        >>> files = write_dicom_series(np.zeros((4, 5, 3)), np.eye(4), tempfile.mkdtemp())
        >>> len(files)
        3
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"write_dicom_series expects a 3D volume (I, J, K), got shape {vol.shape}.")
    if not np.issubdtype(vol.dtype, np.number) or np.iscomplexobj(vol):
        raise ValueError(f"write_dicom_series expects real numbers, got dtype {vol.dtype}.")
    vol = vol.astype(np.float64)
    if not np.all(np.isfinite(vol)):
        raise ValueError("write_dicom_series: the volume holds NaN or infinite values; replace them first.")
    aff = check_affine(affine, "write_dicom_series affine")
    lps = lps_to_ras(aff)
    col_step, row_step, slice_step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    col_spacing, row_spacing, slice_spacing = (float(np.linalg.norm(v)) for v in (col_step, row_step, slice_step))
    row_cos, col_cos = col_step / col_spacing, row_step / row_spacing
    if abs(float(row_cos @ col_cos)) > _ORTHO_TOL:
        raise ValueError(
            "write_dicom_series: the affine's first two columns are not orthogonal; DICOM pixel grids cannot "
            "be sheared. Resample the volume to an orthogonal grid first."
        )
    normal = np.cross(row_cos, col_cos)
    if abs(abs(float(normal @ slice_step)) / slice_spacing - 1.0) > _ORTHO_TOL:
        raise ValueError(
            "write_dicom_series: the affine's third column is not perpendicular to the slice plane (a gantry "
            "tilt/shear); resample the volume to an orthogonal grid first."
        )

    slope, intercept = _choose_rescale(vol, rescale)
    stored = np.round((vol - intercept) / slope)
    if stored.min() < -32768.5 or stored.max() > 32767.5:
        raise ValueError(
            f"write_dicom_series: rescale (slope={slope}, intercept={intercept}) maps the values "
            f"[{vol.min()}, {vol.max()}] outside int16; choose another rescale or pass rescale=None."
        )
    stored = np.clip(stored, -32768, 32767).astype(np.int16)
    low, high = (float(v) for v in np.percentile(vol, [0.5, 99.5]))
    if high <= low:
        low, high = float(vol.min()), float(vol.max()) + 1.0
    window = ((low + high) / 2, high - low)

    out = check_writable_dir(folder)
    uids = {
        "study": study_uid or generate_uid(),
        "series": series_uid or generate_uid(),
        "frame": generate_uid(),
    }
    n_slices = vol.shape[2]
    if shuffle_names:
        rng = np.random.default_rng(seed)
        names: list[str] = []
        while len(set(names)) != n_slices or (n_slices > 1 and sorted(names) == names):
            names = [f"{int(v):012x}.dcm" for v in rng.integers(0, 16**12, size=n_slices)]
    else:
        series_tag = safe_stem(uids["series"].replace(".", "")[-8:], default="series")
        names = [f"S{series_tag}_IM{k + 1:05d}.dcm" for k in range(n_slices)]
    targets = [out / name for name in names]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise FileExistsError(
            f"write_dicom_series would overwrite {existing[:3]} in {out}; write to an empty folder instead."
        )

    orientation = np.concatenate([row_cos, col_cos])
    written: list[Path] = []
    for k, target in enumerate(targets):
        position = lps[:3, 3] + k * slice_step
        ds = _slice_dataset(
            stored[:, :, k].T,
            position=position,
            orientation=orientation,
            pixel_spacing=(row_spacing, col_spacing),
            slice_spacing=slice_spacing,
            slice_location=float(normal @ position),
            instance_number=k + 1,
            slope=slope,
            intercept=intercept,
            uids=uids,
            series_description=series_description,
            patient_id=patient_id,
            patient_name=patient_name,
            window=window,
            body_part=body_part,
        )
        written.append(atomic_write(target, lambda stream, ds=ds: ds.save_as(stream, enforce_file_format=True)))
    return written


# --------------------------------------------------------------------------------------------- reading
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
        if not (np.allclose(r, row_cos, atol=_ORTHO_TOL) and np.allclose(c, col_cos, atol=_ORTHO_TOL)):
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
