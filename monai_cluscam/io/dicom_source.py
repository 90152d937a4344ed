"""The scan series as the DICOM objects derived from it see it, and the map brought onto its grid.

:func:`read_source` reads a DICOM series into a :class:`Source` (a reference dataset per slice: identity,
references and geometry only, nothing else of the scan); :func:`map_grid` and :func:`onto_grid` bring an explained
map back to the scan's own voxel grid and slice order; :func:`geometry` and :func:`anatomy` give the plane and the
anatomy the derived objects share with the scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset

from .dicom import read_dicom
from .resample import to_original_grid

__all__ = ["ANATOMY", "IDENTIFYING_UIDS", "IDENTITY", "Source", "anatomy", "as_volume", "fit", "geometry", "map_grid",
           "onto_grid", "read_source", "reference"]

#: Patient and study identity: the only attributes copied from the scan into the derived series.
IDENTITY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


#: What a derived object needs of each source slice to reference it and to share its geometry.
_REFERENCE = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Rows",
    "Columns",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "BodyPartExamined",
    "AnatomicRegionSequence",
)


#: UIDs that identify the scan's records; de-identified output gets new ones.
IDENTIFYING_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


#: ``body_part=`` (DICOM's BodyPartExamined) -> the SNOMED CT code of the map's Frame Anatomy, when the scan
#: names neither
ANATOMY = {"BRAIN": ("12738006", "SCT", "Brain"), "HEAD": ("69536005", "SCT", "Head")}


@dataclass
class Source:
    """A DICOM scan series as the derived objects see it: slice references, geometry and pixel values."""

    slices: list[Dataset]  # one reference dataset per slice (only _REFERENCE + IDENTITY), along the normal
    volume: np.ndarray  # (columns, rows, slices), rescaled values
    affine: np.ndarray  # voxel-to-RAS


def map_grid(attribution: MetaTensor | torch.Tensor | np.ndarray, image: MetaTensor | None) -> MetaTensor:
    """One ``(1, *spatial)`` map with metadata, finite, on the grid its scan was loaded on."""
    if not isinstance(attribution, MetaTensor):
        if not isinstance(image, MetaTensor):
            raise ValueError(
                "The attribution holds no geometry (it is not a MetaTensor); pass the MetaTensor returned by "
                "the explainer, or image=<the MetaTensor it explains>."
            )
        attribution = MetaTensor(torch.as_tensor(np.asarray(attribution)), meta={**image.meta, "affine": image.affine})
    attribution = attribution.detach().cpu()
    if attribution.ndim in (4, 5) and attribution.shape[0] == 1 and attribution.shape[1] == 1:
        attribution = attribution[0]  # a batch of one
    if attribution.affine.ndim == 3:
        attribution.affine = attribution.affine[0]
    if attribution.ndim not in (3, 4) or attribution.shape[0] != 1:
        raise ValueError(
            f"save_dicom_overlay writes one map at a time, shaped (1, *spatial) with 2 or 3 spatial dims; got "
            f"{tuple(attribution.shape)}. Call it once per sample (monai.data.decollate_batch splits a batch)."
        )
    if not torch.isfinite(attribution.as_tensor()).all():
        raise ValueError(
            "The attribution holds NaN or infinite values (a failed explanation gets a NaN map); nothing was "
            "written. Explain the image again, or leave this sample out."
        )
    return to_original_grid(attribution.float())


def as_volume(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 2D grid ``(I, J)`` as a one-slice volume ``(I, J, 1)`` whose third axis is the unit slice normal."""
    if array.ndim == 3:
        return array, affine
    affine = np.array(affine, dtype=np.float64)
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    affine[:3, 2] = normal / np.linalg.norm(normal)
    return array[..., None], affine


def onto_grid(data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Reorder a volume's axes (transpose and flips, exact) so it lies on the target grid, or say why not."""
    to_target = np.linalg.inv(target_affine) @ affine  # map voxel -> target voxel
    linear = to_target[:3, :3].copy()
    for axis in range(3):
        if data.shape[axis] == 1:  # a single slice has no spacing of its own to compare
            linear[:, axis] /= np.linalg.norm(linear[:, axis])
    owner = np.abs(linear).argmax(axis=0)  # target axis of each map axis
    signs = np.sign(linear[owner, np.arange(3)])
    permutation = np.zeros((3, 3))
    permutation[owner, np.arange(3)] = signs
    order = np.argsort(owner)
    start = to_target[:3, 3] + linear @ np.where(signs < 0, np.asarray(data.shape) - 1, 0)
    if (
        sorted(owner.tolist()) != [0, 1, 2]
        or not np.allclose(linear, permutation, atol=1e-3)
        or not np.allclose(start, 0.0, atol=1e-2)
        or tuple(data.shape[a] for a in order) != tuple(shape)
    ):
        raise ValueError(
            f"The map's grid (shape {data.shape}, after undoing the preprocessing) is not the scan's grid "
            f"(shape {tuple(shape)}): the map was computed on another scan, or its metadata lost "
            "original_affine/spatial_shape. Pass the source series that was explained, and the map with the "
            "metadata of the image it explains."
        )
    flipped = np.flip(data, axis=tuple(int(a) for a in np.flatnonzero(signs < 0)))
    return np.ascontiguousarray(np.transpose(flipped, order))


def reference(ds: Dataset) -> Dataset:
    """A copy of a slice's identity, reference and geometry attributes: nothing else leaves the source."""
    out = Dataset()
    for keyword in (*IDENTITY, *_REFERENCE):
        if keyword in ds:
            setattr(out, keyword, ds.data_element(keyword).value)
    for keyword in IDENTITY:
        if keyword not in out and keyword != "IssuerOfPatientID":
            setattr(out, keyword, "")  # type 2 in the derived objects: present, maybe empty
    return out


def read_source(path: Path, series_uid: str | None) -> Source:
    volume, affine, meta = read_dicom(path, series_uid=series_uid)
    files = [Path(f) for f in meta["dicom_files"]]
    if len(set(files)) != len(files):
        raise ValueError(
            f"{path}: the scan is a multi-frame (enhanced) DICOM file; DICOM overlays reference single-frame "
            "series only. Convert it to single-frame files first (e.g. dcmtk's dcmconv / emf2sf)."
        )
    slices = [reference(pydicom.dcmread(f, stop_before_pixels=True)) for f in files]
    frames = {str(ds.get("FrameOfReferenceUID", "") or "") for ds in slices}
    if "" in frames:
        raise ValueError(
            f"{path}: the series has no FrameOfReferenceUID (0020,0052) in every file, so no viewer can place a "
            'derived series on it. Add one to the series (e.g. dcmodify -i "(0020,0052)=<a new UID>"), or pass '
            "deidentify=True, which writes a copy of the scan with a Frame of Reference of its own."
        )
    if len(frames) > 1:
        raise ValueError(
            f"{path}: the series' files name {len(frames)} different FrameOfReferenceUIDs; they are not one "
            "volume. Split the series, or pass deidentify=True to write a consistent copy of the scan."
        )
    if volume.ndim == 2:
        volume = volume[..., None]
    return Source(slices=slices, volume=volume, affine=affine)


def geometry(source: Source) -> tuple[list[float], tuple[float, float], float]:
    """(ImageOrientationPatient, PixelSpacing (row, column), spacing between slices) of the source."""
    first = source.slices[0]
    orientation = [float(v) for v in first.ImageOrientationPatient]
    spacing = (float(first.PixelSpacing[0]), float(first.PixelSpacing[1]))
    step = float(np.linalg.norm(source.affine[:3, 2]))
    return orientation, spacing, step


def anatomy(hd, source: Source, body_part: str) -> tuple[str, object]:
    """(BodyPartExamined, the Frame Anatomy's region code): the scan's own when it names them, else ``body_part``'s."""
    first = source.slices[0]
    part = str(first.get("BodyPartExamined", "") or "").strip() or body_part
    regions = first.get("AnatomicRegionSequence")
    if regions:
        item = regions[0]
        return part, hd.sr.CodedConcept(item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning)
    code = ANATOMY.get(part.upper()) or ANATOMY.get(body_part.upper())
    if code is None:
        raise ValueError(
            f"The scan names no anatomic region and body_part={part!r} is not one of {sorted(ANATOMY)}; pass "
            "body_part='BRAIN' (or 'HEAD'), or add the region to monai_cluscam.io.dicom_source.ANATOMY."
        )
    return part, hd.sr.CodedConcept(*code)


def fit(text: str, short: str, limit: int = 64) -> str:
    """``text`` when it fits DICOM's ``limit`` characters (LO), else ``short`` (cut only if that too is long)."""
    return text if len(text) <= limit else short[:limit]
