"""DICOM export of explanations for PACS viewers: a Parametric Map and an RGB Secondary Capture series.

:func:`save_dicom_overlay` writes, for one map, into ``<output_dir>/<name>_<method>_dicom/``:

* ``map/parametric_map.dcm``: the map as float32 frames (DICOM Parametric Map, built with ``highdicom``) in the
  scan's Study and Frame of Reference, one frame per scan slice at that slice's position and orientation,
  with a real-world value mapping that names the values and the algorithm's identification;
* ``overlay/IM00001.dcm``, ...: one RGB Secondary Capture per scan slice (the scan with the map blended in,
  a colour bar and the burned-in caption "Research explanation - not for diagnosis"), in anatomical order,
  with the slice geometry (position, orientation, pixel spacing, Frame of Reference) that lets viewers
  scroll it together with the scan;
* ``scan/``: the scan itself as a DICOM series in a new Study, when it is not DICOM already (NIfTI, PNG) or
  when de-identified output is asked for.

Only the attributes a derived series needs to belong to the study (patient and study identity) are copied
from the scan; ``deidentify=True`` replaces those too (see :func:`save_dicom_overlay`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.valuerep import format_number_as_ds

from .dicom import read_dicom, write_dicom_series
from .dicom_report import classification_report
from .files import atomic_write, check_writable_dir, input_path, mark_output_dir, safe_stem
from .loading import PICTURE_SUFFIXES, load_image
from .preview import colour_bar, heat_colormap
from .resample import to_original_grid

__all__ = ["ANATOMY", "CAPTION", "DicomOverlayFiles", "dicom_folder", "save_dicom_overlay"]

logger = logging.getLogger(__name__)

CAPTION = "Research explanation - not for diagnosis"
"""Burned into every Secondary Capture image (and stored in its ImageComments)."""

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
_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MAX_ALPHA = 0.65
_MIN_CAPTURE_WIDTH = 256  # pixels: the caption and the colour bar stay legible on small matrices
_BAND = 40  # pixels below the image for the colour bar (26) and the caption
_SERIES_NUMBERS = {"parametric_map": 9001, "secondary_capture": 9002}
#: ``body_part=`` (DICOM's BodyPartExamined) -> the SNOMED CT code of the map's Frame Anatomy, when the scan
#: names neither
ANATOMY = {"BRAIN": ("12738006", "SCT", "Brain"), "HEAD": ("69536005", "SCT", "Head")}


@dataclass(frozen=True)
class DicomOverlayFiles:
    """What :func:`save_dicom_overlay` wrote for one map.

    Attributes:
        folder: the folder holding everything below (``<output_dir>/<name>_<method>_dicom``).
        parametric_map: the Parametric Map file, or None when not asked for.
        secondary_capture: the colour overlay files, one per scan slice in anatomical order (empty when not
            asked for).
        scan: the scan written as a DICOM series (non-DICOM inputs, de-identified output); empty otherwise.
        removed: with ``deidentify=True``, the keywords of the source's identifying attributes that were
            dropped or replaced (values are never reported); empty otherwise.
        report: the Structured Report of the classification, when ``prediction`` was given.
    """

    folder: Path
    parametric_map: Path | None
    secondary_capture: tuple[Path, ...]
    scan: tuple[Path, ...]
    removed: tuple[str, ...]
    report: Path | None = None

    @property
    def paths(self) -> list[Path]:
        """Every file written, the scan first."""
        return [*self.scan, *([self.parametric_map] if self.parametric_map else []), *self.secondary_capture,
                *([self.report] if self.report else [])]


@dataclass
class _Source:
    """A DICOM scan series as the derived objects see it: slice references, geometry and pixel values."""

    slices: list[Dataset]  # one reference dataset per slice (only _REFERENCE + IDENTITY), along the normal
    volume: np.ndarray  # (columns, rows, slices), rescaled values
    affine: np.ndarray  # voxel-to-RAS


def _package_version() -> str:
    from monai_cluscam import __version__  # here, not at import: the package imports this module

    return __version__


def _highdicom():
    try:
        import highdicom
    except ImportError as err:
        raise ImportError(
            "DICOM overlays need the optional package highdicom: pip install 'monai-cluscam[dicom]'."
        ) from err
    return highdicom


# ---------------------------------------------------------------------------------------------- the map
def _map_grid(attribution: MetaTensor | torch.Tensor | np.ndarray, image: MetaTensor | None) -> MetaTensor:
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


def _as_volume(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 2D grid ``(I, J)`` as a one-slice volume ``(I, J, 1)`` whose third axis is the unit slice normal."""
    if array.ndim == 3:
        return array, affine
    affine = np.array(affine, dtype=np.float64)
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    affine[:3, 2] = normal / np.linalg.norm(normal)
    return array[..., None], affine


def _onto_grid(data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
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


# ------------------------------------------------------------------------------------------- the source
def _reference(ds: Dataset) -> Dataset:
    """A copy of a slice's identity, reference and geometry attributes: nothing else leaves the source."""
    out = Dataset()
    for keyword in (*IDENTITY, *_REFERENCE):
        if keyword in ds:
            setattr(out, keyword, ds.data_element(keyword).value)
    for keyword in IDENTITY:
        if keyword not in out and keyword != "IssuerOfPatientID":
            setattr(out, keyword, "")  # type 2 in the derived objects: present, maybe empty
    return out


def _read_source(path: Path, series_uid: str | None) -> _Source:
    volume, affine, meta = read_dicom(path, series_uid=series_uid)
    files = [Path(f) for f in meta["dicom_files"]]
    if len(set(files)) != len(files):
        raise ValueError(
            f"{path}: the scan is a multi-frame (enhanced) DICOM file; DICOM overlays reference single-frame "
            "series only. Convert it to single-frame files first (e.g. dcmtk's dcmconv / emf2sf)."
        )
    slices = [_reference(pydicom.dcmread(f, stop_before_pixels=True)) for f in files]
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
    return _Source(slices=slices, volume=volume, affine=affine)


def _scan_of(image: MetaTensor | None, path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The scan (first channel) and its affine on the grid it was loaded on, for a non-DICOM input."""
    if path is not None:
        scan = load_image(path)
    elif isinstance(image, MetaTensor):
        scan = to_original_grid(image.detach().cpu().float())
    else:
        raise ValueError(
            "The scan's file is not known (no filename_or_obj); pass image=<the MetaTensor explained> so its "
            "pixels can be written as a DICOM series."
        )
    return np.asarray(scan[0], dtype=np.float32), np.asarray(scan.affine, dtype=np.float64)


def _input_path(source: str | os.PathLike | None, meta: dict) -> Path | None:
    if source is None:
        return input_path(meta)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"source {path} does not exist; pass the scan's DICOM folder or file.")
    return path.resolve()


def dicom_folder(output_dir: str | os.PathLike, name: object, method: str, scan: Path | None) -> Path:
    """The folder :func:`save_dicom_overlay` writes a map of ``scan`` into: ``<output_dir>/<name>_<method>_dicom``.

    ``name`` and ``method`` pass through ``safe_stem``. Raises ``ValueError`` when writing there would touch the
    scan: ``output_dir`` is, or lies inside, the scan's DICOM folder, or the scan lies inside the result folder
    (an earlier result's ``scan/`` series, which replacing the folder would delete).
    """
    wanted = Path(output_dir).expanduser().resolve()
    if _is_dicom(scan):
        holder = scan if scan.is_dir() else scan.parent
        if wanted == holder or holder in wanted.parents:
            raise ValueError(
                f"Output folder {wanted} is the scan's DICOM folder {holder} or lies inside it; writing there "
                "would add foreign files to the series. Choose another output folder."
            )
    folder = wanted / f"{safe_stem(name, default='image')}_{safe_stem(method, default='cam')}_dicom"
    if scan is not None and (scan == folder or folder in scan.parents):
        raise ValueError(
            f"The scan {scan} lies in the DICOM result folder {folder}, which this output would replace; explain "
            "the original scan, or choose another output folder."
        )
    return folder


def _is_dicom(path: Path | None) -> bool:
    return path is not None and (path.is_dir() or not path.name.lower().endswith((*_NIFTI_SUFFIXES, *PICTURE_SUFFIXES)))


def _anonymous_id() -> str:
    return f"ANON-{secrets.token_hex(6).upper()}"


def _pseudonym(path: Path | None, volume: np.ndarray) -> str:
    """A PatientID for a scan written from a non-DICOM input: from the file's bytes (the pixels without a file),
    so two inputs share it only when they are the same data."""
    digest = hashlib.sha256()
    if path is not None and path.is_file():
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(np.ascontiguousarray(volume, dtype=np.float32).tobytes())
    return f"MCC-{digest.hexdigest()[:12].upper()}"


# ------------------------------------------------------------------------------------------ the objects
def _geometry(source: _Source) -> tuple[list[float], tuple[float, float], float]:
    """(ImageOrientationPatient, PixelSpacing (row, column), spacing between slices) of the source."""
    first = source.slices[0]
    orientation = [float(v) for v in first.ImageOrientationPatient]
    spacing = (float(first.PixelSpacing[0]), float(first.PixelSpacing[1]))
    step = float(np.linalg.norm(source.affine[:3, 2]))
    return orientation, spacing, step


def _fit(text: str, short: str, limit: int = 64) -> str:
    """``text`` when it fits DICOM's ``limit`` characters (LO), else ``short`` (cut only if that too is long)."""
    return text if len(text) <= limit else short[:limit]


def _frames_along_the_normal(pm: Dataset) -> None:
    """Store the frames ascending along the slice normal (row x column direction), the order that readers which
    stack frames in file order (dcmqi, and so 3D Slicer's loader) assume; highdicom sorts them the other way
    (along column x row). Each frame keeps its own position and dimension index, so the object stays the same."""
    items = list(pm.PerFrameFunctionalGroupsSequence)
    orientation = np.asarray(
        pm.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64
    )
    normal = np.cross(orientation[:3], orientation[3:])
    heights = [float(np.asarray(i.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64) @ normal)
               for i in items]
    if len(items) < 2 or heights[0] < heights[-1]:
        return
    frames = np.frombuffer(pm.FloatPixelData, dtype="<f4").reshape(len(items), int(pm.Rows), int(pm.Columns))
    pm.FloatPixelData = np.ascontiguousarray(frames[::-1]).tobytes()
    pm.PerFrameFunctionalGroupsSequence = items[::-1]


def _anatomy(hd, source: _Source, body_part: str) -> tuple[str, object]:
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
            "body_part='BRAIN' (or 'HEAD'), or add the region to monai_cluscam.io.dicom_export.ANATOMY."
        )
    return part, hd.sr.CodedConcept(*code)


def _parametric_map(
    hd, source: _Source, data: np.ndarray, method: dict[str, str], identity: dict, body_part: str
) -> Dataset:
    orientation, spacing, step = _geometry(source)
    label = method["method"]
    part, region = _anatomy(hd, source, body_part)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ATTRIBUTION",
        lut_explanation=_fit(f"{label} attribution: 0 none to 1 most, where the model looked",
                             "attribution: 0 none to 1 most, where the model looked"),
        unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
        value_range=(float(data.min()), float(data.max())),
        slope=1.0,
        intercept=0.0,
    )
    pm = hd.pm.ParametricMap(
        source_images=source.slices,
        pixel_array=np.transpose(data, (2, 1, 0)).astype(np.float32),  # (slices, rows, columns)
        series_instance_uid=hd.UID(),
        series_number=_SERIES_NUMBERS["parametric_map"],
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="monai-cluscam",
        manufacturer_model_name=_fit(label, label),
        software_versions=_package_version(),
        device_serial_number="none",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label="ATTRIBUTION",
        content_description=_fit(f"{label} explanation (research, not for diagnosis)",
                                 "explanation (research, not for diagnosis)"),
        content_creator_name="monai-cluscam^",
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=spacing, slice_thickness=step, spacing_between_slices=step
        ),
        plane_orientation=hd.PlaneOrientationSequence("PATIENT", orientation),
        plane_positions=[hd.PlanePositionSequence("PATIENT", list(ds.ImagePositionPatient)) for ds in source.slices],
        series_description=_fit(f"{label} attribution map", "attribution map"),
    )
    pm.BodyPartExamined = part
    anatomy = Dataset()  # the Frame Anatomy functional group (type 1 in the Parametric Map IOD)
    anatomy.AnatomicRegionSequence = [region]
    anatomy.FrameLaterality = "U"
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
    _frames_along_the_normal(pm)
    # the Algorithm Identification macro, in the standard attribute that names a derived image's algorithm
    pm.DerivationAlgorithmSequence = hd.AlgorithmIdentificationSequence(
        name=_fit(label, label),
        family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
        version=_package_version(),
        source="monai-cluscam",
        parameters={key: value for key, value in method.items() if key != "method"} or None,
    )
    _set_identity(pm, identity)
    return pm


def _patient_orientation(direction: np.ndarray) -> str:
    """The DICOM patient-orientation letter of a direction in LPS (its dominant axis)."""
    axis = int(np.argmax(np.abs(direction)))
    return ("LR", "PA", "HF")[axis][0 if direction[axis] > 0 else 1]


def _band(width: int, label: str) -> Image.Image:
    """The package's 0-1 colour bar and, under it, the caption: the strip under each captured image."""
    bar = colour_bar(width)
    band = Image.new("RGB", (width, _BAND), (0, 0, 0))
    band.paste(bar, (0, 0))
    ImageDraw.Draw(band).text(
        (4, bar.height), f"{CAPTION} ({label})", fill=(255, 255, 255), font=ImageFont.load_default()
    )
    return band


def _captures(source: _Source, data: np.ndarray, label: str) -> tuple[np.ndarray, int]:
    """RGB images ``(slices, rows', columns', 3)`` of the map blended over the scan, and the upscaling factor."""
    scan = np.transpose(source.volume, (2, 1, 0)).astype(np.float32)  # (slices, rows, columns)
    heat = np.clip(np.transpose(data, (2, 1, 0)), 0.0, 1.0)
    lo, hi = np.percentile(scan, [0.5, 99.5])
    grey = 0.85 * np.clip((scan - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    colours = heat_colormap(256).astype(np.float32)[np.round(heat * 255).astype(int)] / 255.0
    alpha = _MAX_ALPHA * heat[..., None]
    rgb = np.round(255 * (grey[..., None] * (1 - alpha) + colours * alpha)).astype(np.uint8)
    rows, columns = rgb.shape[1:3]
    factor = max(1, -(-_MIN_CAPTURE_WIDTH // columns))
    band = _band(columns * factor, label)
    pictures = []
    for plane in rgb:
        canvas = Image.new("RGB", (columns * factor, rows * factor + _BAND))
        canvas.paste(Image.fromarray(plane).resize((columns * factor, rows * factor), Image.Resampling.BILINEAR))
        canvas.paste(band, (0, rows * factor))
        pictures.append(np.asarray(canvas))
    return np.stack(pictures), factor


def _ds(values) -> list[str]:
    """Numbers as DICOM decimal strings of at most 16 characters."""
    return [format_number_as_ds(float(v)) for v in values]


def _secondary_captures(
    hd, source: _Source, data: np.ndarray, label: str, identity: dict, body_part: str
) -> list[Dataset]:
    orientation, (row_spacing, column_spacing), step = _geometry(source)
    along_row, along_column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    pictures, factor = _captures(source, data, label)
    # upscaling by `factor` keeps pixel centres on the scan's grid: the first one moves half a pixel less a
    # half of a new pixel towards the corner
    shift = (0.5 / factor - 0.5) * (column_spacing * along_row + row_spacing * along_column)
    series_uid = hd.UID()
    part, _ = _anatomy(hd, source, body_part)
    captures = []
    for index, (picture, ref) in enumerate(zip(pictures, source.slices, strict=True)):
        sc = hd.sc.SCImage(
            pixel_array=picture,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=identity["StudyInstanceUID"],
            series_instance_uid=series_uid,
            series_number=_SERIES_NUMBERS["secondary_capture"],
            sop_instance_uid=hd.UID(),
            instance_number=index + 1,
            manufacturer="monai-cluscam",
            pixel_spacing=(row_spacing / factor, column_spacing / factor),
            patient_orientation=(_patient_orientation(along_row), _patient_orientation(along_column)),
            series_description=_fit(f"{label} overlay (research, not for diagnosis)",
                                    "overlay (research, not for diagnosis)"),
        )
        sc.PixelSpacing = _ds((row_spacing / factor, column_spacing / factor))
        sc.ImagePositionPatient = _ds(np.asarray(ref.ImagePositionPatient, dtype=np.float64) + shift)
        sc.ImageOrientationPatient = _ds(orientation)
        sc.FrameOfReferenceUID = ref.FrameOfReferenceUID
        sc.PositionReferenceIndicator = ""
        sc.SliceThickness = _ds([step])[0]
        sc.BodyPartExamined = part
        sc.BurnedInAnnotation = "YES"
        sc.ImageComments = CAPTION
        item = Dataset()
        item.ReferencedSOPClassUID = ref.SOPClassUID
        item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        sc.SourceImageSequence = [item]
        _set_identity(sc, identity)
        captures.append(sc)
    return captures


def _set_identity(ds: Dataset, identity: dict) -> None:
    for keyword, value in identity.items():
        setattr(ds, keyword, value)


def _save(ds: Dataset, target: Path) -> Path:
    return atomic_write(target, lambda stream: ds.save_as(stream, enforce_file_format=True))


# ----------------------------------------------------------------------------------------------- the API
def save_dicom_overlay(
    attribution: MetaTensor | torch.Tensor | np.ndarray,
    image: MetaTensor | None,
    output_dir: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    method_info: dict | None = None,
    deidentify: bool = False,
    parametric_map: bool = True,
    secondary_capture: bool = True,
    name: str | None = None,
    patient_id: str | None = None,
    patient_name: str | None = None,
    body_part: str = "BRAIN",
    prediction: dict | None = None,
) -> DicomOverlayFiles:
    """Write one explanation as DICOM that a PACS viewer shows on the scan: a Parametric Map and colour overlays.

    The map is first brought back to the grid its scan was loaded on (``to_original_grid``: undoes
    reorientation, resampling, resizing, cropping, padding), then onto the scan series' own slice order.
    Everything lands in a new folder ``<output_dir>/<name>_<method>_dicom/`` (refused when it exists):

    * ``map/parametric_map.dcm``: float32 frames, one per scan slice, each at that slice's position and
      orientation; same Study and Frame of Reference as the scan, a new Series; a real-world value mapping
      labelled ``ATTRIBUTION``; ``DerivationAlgorithmSequence`` (the Algorithm Identification macro) with the
      method, the package version and ``method_info``'s other entries (layer, K, temperature, ...) as
      parameters.
    * ``overlay/IM00001.dcm``, ...: one RGB Secondary Capture per scan slice, in anatomical order (along the
      slice normal): the scan with the map blended in heat colours, a 0-1 colour bar and the caption
      :data:`CAPTION` burned in (``BurnedInAnnotation`` YES), upscaled to at least 256 pixels wide, with
      ``ImagePositionPatient``/``ImageOrientationPatient``/``PixelSpacing``/``FrameOfReferenceUID`` that put
      every pixel where the scan's pixel is, so viewers sync scrolling.
    * ``report/report.dcm``: with ``prediction``, a Comprehensive SR of the classification and its
      explanation (:func:`~monai_cluscam.io.dicom_report.classification_report`).
    * ``scan/``: the scan as an MR DICOM series in a new Study (patient fields from ``patient_id`` /
      ``patient_name``, else a pseudonym from the input file and no name), when the input is not DICOM (NIfTI,
      PNG/JPEG) or ``deidentify=True``; the map and overlays then reference this series.

    Privacy: from a DICOM scan only patient and study identity (:data:`IDENTITY`) and slice references are
    copied. ``deidentify=True`` copies none of the identity: a copy of the scan is written in a new Study with
    new UIDs, a new patient ID (``patient_id`` or a random ``ANON-...``), no names and no dates; the keywords of
    what was dropped or replaced are logged and returned in ``removed``. File and folder names come from
    ``name`` or the input's file name through ``safe_stem``, never from DICOM fields unsanitised.

    Args:
        attribution: one map ``(1, *spatial)`` (or a batch of one), a ``MetaTensor`` with the metadata of the
            image it explains (``original_affine``, ``spatial_shape``, ``filename_or_obj``).
        image: the explained ``MetaTensor``: metadata when ``attribution`` has none, and the scan's pixels
            when its file cannot be read. May be None.
        output_dir: folder for the results (created if needed); not the scan's own folder.
        source: the scan's DICOM series folder or file; by default the image's ``filename_or_obj`` (a NIfTI
            or PNG/JPEG path there makes the scan be written as DICOM).
        method_info: ``{"method": "ClusCAM", "layer": "layer4", "num_clusters": 10, "temperature": 0.5, ...}``;
            ``method`` names the values, the rest become algorithm parameters. Default ``{"method": "ClusCAM"}``.
        deidentify: write de-identified output (see above).
        parametric_map: write the Parametric Map.
        secondary_capture: write the colour overlay series.
        name: base of the folder name (sanitised); from the input's file name by default.
        patient_id: PatientID of a scan written here (non-DICOM input, or the pseudonym with ``deidentify``);
            by default a pseudonym made from the input file's content (``MCC-`` and 12 hex digits of its
            SHA-256), so unrelated inputs never share a patient and a rerun on the same file keeps its ID.
        patient_name: PatientName of a scan written here from a non-DICOM input (never with ``deidentify``).
        body_part: BodyPartExamined of the written objects and the map's Frame Anatomy (a key of
            :data:`ANATOMY`) when the scan names neither; a DICOM scan's own values win.
        prediction: ``{"class_names": [...], "probabilities": [...], "model": {"name": ..., "version": ...}}``:
            also write ``report/report.dcm``, a Structured Report of the classification (the predicted class,
            every probability, the model, the method and its settings, the research statement, references to the
            scan's slices and to the map; :mod:`monai_cluscam.io.dicom_report`).

    Returns:
        A :class:`DicomOverlayFiles` (its ``paths`` lists every file written).

    Raises:
        ImportError: highdicom is not installed (``pip install 'monai-cluscam[dicom]'``).
        ValueError: a map that is not finite or not one sample; a map whose grid is not the scan's; a source
            series without a consistent FrameOfReferenceUID, with irregular slice spacing or other broken
            geometry; an output folder that is, or lies inside, the scan's folder.
        FileExistsError: the result folder exists already.

    Example:
        >>> import tempfile, numpy as np, torch
        >>> from monai.data import MetaTensor
        >>> from monai_cluscam.io import load_image, write_dicom_series
        >>> scan_dir, out_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
        >>> _ = write_dicom_series(np.random.rand(8, 8, 3) * 100, np.diag([1.0, 1.0, 2.0, 1.0]), scan_dir)
        >>> image = load_image(scan_dir)
        >>> cam = MetaTensor(torch.rand(1, 8, 8, 3), meta=image.meta)  # the map, with the scan's metadata
        >>> files = save_dicom_overlay(cam, image, out_dir, method_info={"method": "ClusCAM", "num_clusters": 10})
        >>> files.parametric_map.name, len(files.secondary_capture)
        ('parametric_map.dcm', 3)
    """
    hd = _highdicom()
    grid = _map_grid(attribution, image)
    meta = dict(grid.meta)
    method = {str(k): str(v) for k, v in (method_info or {}).items()}
    method.setdefault("method", "ClusCAM")
    path = _input_path(source, meta)
    folder = dicom_folder(output_dir, name if name is not None else meta.get("filename_or_obj"), method["method"], path)
    out = check_writable_dir(output_dir)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; remove it or choose another output folder.")
    folder.mkdir()
    # the marker says "results, not scans" (input searches leave the result folder and its series out); the
    # result folder itself holds DICOM only, so PACS import tools can read every file in it
    mark_output_dir(out)
    try:  # a failure leaves no folder behind: no half-written result, and a retry finds the way free
        removed: tuple[str, ...] = ()
        scan_files: list[Path] = []
        series_uid = meta.get("SeriesInstanceUID") if isinstance(meta.get("SeriesInstanceUID"), str) else None
        if _is_dicom(path) and not deidentify:
            src = _read_source(path, series_uid)
        else:
            if _is_dicom(path):
                volume, affine, scan_meta = read_dicom(path, series_uid=series_uid)
                first = pydicom.dcmread(scan_meta["dicom_files"][0], stop_before_pixels=True)
                removed = tuple(k for k in IDENTITY if str(first.get(k, "") or "")) + _UIDS
            else:
                volume, affine = _scan_of(image, path)
            volume, affine = _as_volume(volume, affine)
            scan_dir = folder / "scan"
            scan_dir.mkdir()
            scan_files = write_dicom_series(
                volume,
                affine,
                scan_dir,
                series_description="Scan (written by monai-cluscam)",
                patient_id=patient_id or (_anonymous_id() if deidentify else _pseudonym(path, volume)),
                patient_name="" if deidentify else (patient_name or ""),
                body_part=body_part,
            )
            src = _read_source(scan_dir, None)
            if removed:
                logger.info("De-identified DICOM output in %s: dropped or replaced %s.", folder, ", ".join(removed))

        data, data_affine = _as_volume(np.asarray(grid[0], dtype=np.float32), np.asarray(grid.affine, dtype=np.float64))
        data = _onto_grid(data, data_affine, src.affine, src.volume.shape)
        identity = {k: src.slices[0].data_element(k).value for k in IDENTITY if k in src.slices[0]}
        pm_path = None
        if parametric_map:
            (folder / "map").mkdir()
            pm = _parametric_map(hd, src, data, method, identity, body_part)
            pm_path = _save(pm, folder / "map" / "parametric_map.dcm")
        report_path = None
        if prediction is not None:
            (folder / "report").mkdir()
            report = classification_report(
                hd, sources=src.slices, parametric_map=pm if parametric_map else None,
                class_names=list(prediction["class_names"]), probabilities=list(prediction["probabilities"]),
                model={k: str(v) for k, v in (prediction.get("model") or {}).items()}, method=method,
                software_version=_package_version(),
            )
            report_path = _save(report, folder / "report" / "report.dcm")
        sc_paths: list[Path] = []
        if secondary_capture:
            sc_dir = folder / "overlay"
            sc_dir.mkdir()
            for index, sc in enumerate(_secondary_captures(hd, src, data, method["method"], identity, body_part)):
                sc_paths.append(_save(sc, sc_dir / f"IM{index + 1:05d}.dcm"))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return DicomOverlayFiles(folder, pm_path, tuple(sc_paths), tuple(scan_files), removed, report_path)
