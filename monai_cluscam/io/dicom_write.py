"""Writing a volume as an MR DICOM series with exact, possibly oblique, geometry (test data, and the scan of a
non-DICOM input that the DICOM results refer to). :func:`~monai_cluscam.io.read_dicom` reads it back."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from ._geometry import check_affine, lps_to_ras
from .dicom import ORTHOGONALITY_TOLERANCE
from .files import atomic_write, check_writable_dir, safe_stem

__all__ = ["write_dicom_series"]


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
    if abs(float(row_cos @ col_cos)) > ORTHOGONALITY_TOLERANCE:
        raise ValueError(
            "write_dicom_series: the affine's first two columns are not orthogonal; DICOM pixel grids cannot "
            "be sheared. Resample the volume to an orthogonal grid first."
        )
    normal = np.cross(row_cos, col_cos)
    if abs(abs(float(normal @ slice_step)) / slice_spacing - 1.0) > ORTHOGONALITY_TOLERANCE:
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
