"""DICOM export of explanations for PACS viewers: a Parametric Map and an RGB Secondary Capture series.

:func:`save_dicom_overlay` writes, for one map, into ``<output_dir>/<name>_<method>_dicom/``:

* ``map/parametric_map.dcm``: the map as float32 frames (DICOM Parametric Map, built with ``highdicom``) in the
  scan's Study and Frame of Reference, one frame per scan slice at that slice's position and orientation,
  with a real-world value mapping that names the values and the algorithm's identification;
* ``overlay/IM00001.dcm``, ...: one RGB Secondary Capture per scan slice (the scan with the map blended in,
  a colour bar and the burned-in caption "Research explanation - not for diagnosis"), in anatomical order,
  with the slice geometry (position, orientation, pixel spacing, Frame of Reference) that lets viewers
  scroll it together with the scan;
* ``report/report.dcm``: with a prediction, a Structured Report of the classification
  (:mod:`monai_cluscam.io.dicom_report`);
* ``scan/``: the scan itself as a DICOM series in a new Study, when it is not DICOM already (NIfTI, PNG) or
  when de-identified output is asked for.

The objects are built in :mod:`monai_cluscam.io.dicom_objects` from the scan as
:mod:`monai_cluscam.io.dicom_source` reads it. Only the attributes a derived series needs to belong to the study
(patient and study identity) are copied from the scan; ``deidentify=True`` replaces those too (see
:func:`save_dicom_overlay`).
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
from pydicom.dataset import Dataset

from . import dicom_objects as objects
from .dicom import read_dicom
from .dicom_objects import CAPTION
from .dicom_report import classification_report
from .dicom_source import ANATOMY, IDENTIFYING_UIDS, IDENTITY, as_volume, map_grid, onto_grid, read_source
from .dicom_write import write_dicom_series
from .files import atomic_write, check_writable_dir, input_path, mark_output_dir, safe_stem
from .loading import PICTURE_SUFFIXES, load_image
from .resample import to_original_grid

__all__ = ["ANATOMY", "CAPTION", "DicomOverlayFiles", "dicom_folder", "save_dicom_overlay"]

logger = logging.getLogger(__name__)


_NIFTI_SUFFIXES = (".nii", ".nii.gz")


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


# ------------------------------------------------------------------------------------------ the scan and names
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
    grid = map_grid(attribution, image)
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
            src = read_source(path, series_uid)
        else:
            if _is_dicom(path):
                volume, affine, scan_meta = read_dicom(path, series_uid=series_uid)
                first = pydicom.dcmread(scan_meta["dicom_files"][0], stop_before_pixels=True)
                removed = tuple(k for k in IDENTITY if str(first.get(k, "") or "")) + IDENTIFYING_UIDS
            else:
                volume, affine = _scan_of(image, path)
            volume, affine = as_volume(volume, affine)
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
            src = read_source(scan_dir, None)
            if removed:
                logger.info("De-identified DICOM output in %s: dropped or replaced %s.", folder, ", ".join(removed))

        data, data_affine = as_volume(np.asarray(grid[0], dtype=np.float32), np.asarray(grid.affine, dtype=np.float64))
        data = onto_grid(data, data_affine, src.affine, src.volume.shape)
        identity = {k: src.slices[0].data_element(k).value for k in IDENTITY if k in src.slices[0]}
        pm_path = None
        if parametric_map:
            (folder / "map").mkdir()
            pm = objects.parametric_map(hd, src, data, method, identity, body_part, _package_version())
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
            captures = objects.secondary_captures(hd, src, data, method["method"], identity, body_part)
            for index, sc in enumerate(captures):
                sc_paths.append(_save(sc, sc_dir / f"IM{index + 1:05d}.dcm"))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return DicomOverlayFiles(folder, pm_path, tuple(sc_paths), tuple(scan_files), removed, report_path)
