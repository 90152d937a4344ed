"""Export ClusCAM maps as NIfTI overlays that land exactly on the original scan, with 3D Slicer helpers.

For every map :func:`save_overlay` writes, in one output folder:

* ``<name>_cluscam.nii.gz``: the map as float32 on the original scan's grid (sform and qform, code 1);
* ``<name>_cluscam_heat.ctbl``: a 256-entry heat colour table for 3D Slicer;
* ``<name>_cluscam_slicer.py``: a script for Slicer's Python console that loads the scan (when its path is
  known) and the overlay, and shows the overlay in heat colours over the scan at opacity 0.4;
* ``<name>_cluscam.png``: a preview (a blended slice for 2D, a montage of axial slices for 3D);
* with ``formats=("nifti", "dicom")``, also ``<name>_<method>_dicom/``: a DICOM Parametric Map and a colour
  overlay series in the scan's Study and Frame of Reference (:func:`~monai_cluscam.io.save_dicom_overlay`).

The parts live beside this module: :mod:`.resample` (back to the original grid), :mod:`.preview` (PNG
rendering) and :mod:`.slicer` (colour table and script). Each file of an overlay is one entry of
``_ENDINGS`` and one step of ``_write``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch

from .dicom_export import DicomOverlayFiles, dicom_folder, save_dicom_overlay
from .files import atomic_write, check_writable_dir, input_path, is_dicom_result, mark_output_dir, safe_stem
from .nifti import write_nifti
from .preview import overlay_preview, preview_background
from .resample import to_original_grid
from .slicer import slicer_script, write_color_table

__all__ = ["FORMATS", "OverlayFiles", "save_overlay"]

#: What :func:`save_overlay` can write: the NIfTI overlay with its Slicer files, and the DICOM objects.
FORMATS = ("nifti", "dicom")
#: The files of one overlay, by :class:`OverlayFiles` field: how each name ends after ``<name>_<suffix>``.
_ENDINGS = {"nifti": ".nii.gz", "color_table": "_heat.ctbl", "slicer_script": "_slicer.py", "preview": ".png"}
#: The files of the NIfTI format.
_NIFTI_PARTS = ("nifti", "color_table", "slicer_script")


@dataclass(frozen=True)
class OverlayFiles:
    """Paths written by :func:`save_overlay` for one map.

    ``nifti``, ``color_table`` and ``slicer_script`` are None without the ``"nifti"`` format, ``preview`` when
    previews are off, ``dicom`` (the DICOM objects, see :class:`~monai_cluscam.io.DicomOverlayFiles`) without
    the ``"dicom"`` format.
    """

    nifti: Path | None
    color_table: Path | None
    slicer_script: Path | None
    preview: Path | None
    dicom: DicomOverlayFiles | None = None


@dataclass(frozen=True)
class _Plan:
    """One map to write: the map, the image it explains, the scan file, its name, its stem and its target files."""

    sample: MetaTensor
    image: MetaTensor | None
    scan_path: Path | None
    name: str
    stem: str
    targets: dict[str, Path]
    prediction: dict | None = None


def _split(attribution: MetaTensor | torch.Tensor | np.ndarray, image: MetaTensor | None) -> list[MetaTensor]:
    """Split an attribution (batched or not) into per-sample ``(1, *spatial)`` MetaTensors with metadata."""
    if not isinstance(attribution, MetaTensor):
        if not isinstance(image, MetaTensor):
            raise ValueError(
                "The attribution holds no geometry (it is not a MetaTensor); pass the MetaTensor returned by "
                "the explainer, or image=<the MetaTensor it explains>."
            )
        meta_source = image
        attribution = MetaTensor(torch.as_tensor(np.asarray(attribution)), meta=dict(meta_source.meta))
        attribution.affine = meta_source.affine
        attribution.is_batch = meta_source.is_batch
    batched = attribution.is_batch or attribution.affine.ndim == 3
    if batched:
        samples = decollate_batch(attribution, detach=True)
    elif _has_batch_axis(attribution):
        # a (B, 1, *spatial) map of ``image[None]``: every sample shares the one image's metadata
        samples = [attribution[i] for i in range(attribution.shape[0])]
    else:
        samples = [attribution]
    for sample in samples:
        if sample.ndim < 3 or sample.shape[0] != 1:
            raise ValueError(
                f"Expected maps shaped (1, *spatial) or (B, 1, *spatial) with 2 or 3 spatial dims, got "
                f"{tuple(attribution.shape)}."
            )
        if not torch.isfinite(sample.as_tensor()).all():
            raise ValueError("The attribution holds NaN or infinite values; nothing was written.")
    return samples


def _has_batch_axis(attribution: MetaTensor) -> bool:
    """Whether an unbatched MetaTensor is ``(B, 1, *spatial)``, not ``(1, *spatial)``, by its ``spatial_shape``."""
    shape = attribution.meta.get("spatial_shape")
    return shape is not None and attribution.ndim == torch.as_tensor(shape).numel() + 2


def save_overlay(
    attribution: MetaTensor | torch.Tensor | np.ndarray,
    output_dir: str | os.PathLike,
    *,
    image: MetaTensor | None = None,
    name: str | None = None,
    suffix: str = "cluscam",
    resample: bool = True,
    opacity: float = 0.4,
    preview: bool = True,
    overwrite: bool = False,
    formats: tuple[str, ...] = ("nifti",),
    method_info: dict | None = None,
    deidentify: bool = False,
    prediction: dict | Sequence[dict] | None = None,
) -> list[OverlayFiles]:
    """Write ClusCAM maps as NIfTI overlays on the original scan's grid, plus Slicer files and previews (and DICOM).

    ``attribution`` is what the explainer returns: a ``MetaTensor`` ``(1, *spatial)`` for one map or
    ``(B, 1, *spatial)`` batched as MONAI collates it (``is_batch=True``, affine ``(B, 4, 4)``); each sample
    gives one set of files. With ``resample=True`` each map is first brought back from its current affine to
    the grid the scan was loaded on (``original_affine`` + ``spatial_shape``), which undoes reorientation,
    resampling, resizing, cropping and padding; voxels outside a cropped field of view become 0. Values are
    written as they are (float32); previews clip them to [0, 1].

    File names derive from ``filename_or_obj`` (or ``name``), sanitised so nothing in metadata can steer a
    path out of ``output_dir``. Nothing is overwritten unless ``overwrite=True``, and the scan itself never:
    writing into a DICOM series folder or onto the input file is refused. All files are written atomically.

    With ``"dicom"`` in ``formats`` each map also gets ``<name>_<method>_dicom/`` from
    :func:`~monai_cluscam.io.save_dicom_overlay` (a Parametric Map and an RGB colour overlay series in the scan's
    Study and Frame of Reference; the scan itself as DICOM when it is a NIfTI or PNG/JPEG file), always on the
    scan's grid whatever ``resample`` says. ``overwrite=True`` replaces an existing such folder that this package
    wrote; a folder holding the input series is never replaced.

    Args:
        attribution: the maps, with the metadata of the explained image.
        output_dir: folder for the files (created if needed). A path ending in ``.nii``/``.nii.gz`` is refused
            (unless it is an existing folder): pass its folder, and ``name`` for the file names.
        image: the explained ``MetaTensor`` (same batching as ``attribution``); gives the metadata when
            ``attribution`` has none, and the preview background when the scan file cannot be loaded.
        name: base name for the files (sanitised; a batch appends ``_<index>``); from the input by default.
        suffix: added to every file name after the base name.
        resample: bring maps back to the original grid (else they are written on their current grid).
        opacity: foreground opacity set by the Slicer script.
        preview: also write PNG previews.
        overwrite: replace existing output files.
        formats: any of :data:`FORMATS`: ``"nifti"`` (the overlay, its Slicer files) and ``"dicom"``.
        method_info: for DICOM: the method's label and settings (``{"method": "ClusCAM", "layer": "layer4",
            "num_clusters": 10, ...}``), recorded in the Parametric Map; ``method`` also names the folder.
        deidentify: for DICOM: write de-identified output (see :func:`~monai_cluscam.io.save_dicom_overlay`).
        prediction: for DICOM: the classification to report in a Structured Report beside the map (one dict, or
            one per map; see :func:`~monai_cluscam.io.save_dicom_overlay`).

    Returns:
        One :class:`OverlayFiles` per map.

    Raises:
        ValueError: no geometry, a wrong shape, non-finite values, a target that is the input itself (or an
            input series inside a DICOM result folder), an unknown format, or an ``output_dir`` that does not
            exist and ends in ``.nii``/``.nii.gz`` (a file name, not a folder).
        ImportError: ``"dicom"`` without highdicom installed (``pip install 'monai-cluscam[dicom]'``).
        FileExistsError: an output exists and ``overwrite`` is False (nothing is written then).
        PermissionError: ``output_dir`` is not writable.

    Example:
        >>> import tempfile, numpy as np, torch
        >>> from monai.data import MetaTensor
        >>> cam = MetaTensor(torch.rand(1, 8, 8, 4), affine=torch.eye(4), meta={"filename_or_obj": "t1.nii.gz"})
        >>> files = save_overlay(cam, tempfile.mkdtemp(), preview=False)
        >>> files[0].nifti.name
        't1_cluscam.nii.gz'
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must name one or more of {FORMATS}; got {tuple(formats)!r}.")
    samples = _split(attribution, image)
    single = prediction is None or isinstance(prediction, dict)
    predictions = [prediction] * len(samples) if single else list(prediction)
    if len(predictions) != len(samples):
        raise ValueError(f"prediction holds {len(predictions)} entries but the attribution {len(samples)} maps.")
    images: list[MetaTensor | None] = [None] * len(samples)
    if isinstance(image, MetaTensor):
        batched_image = image.is_batch or image.affine.ndim == 3
        images = decollate_batch(image, detach=True) if batched_image else [image]
        if len(images) != len(samples):
            raise ValueError(f"image holds {len(images)} samples but the attribution {len(samples)}.")
    out = check_writable_dir(output_dir)
    tag = safe_stem(suffix, default="cluscam")
    parts = [*(_NIFTI_PARTS if "nifti" in formats else ()), *(("preview",) if preview else ())]
    label = str((method_info or {}).get("method", "ClusCAM"))

    plans = []
    used: set[str] = set()
    for index, sample in enumerate(samples):
        scan_path = input_path(sample.meta)
        if scan_path is not None and scan_path.is_dir() and (out == scan_path or scan_path in out.parents):
            raise ValueError(
                f"Output folder {out} is inside the input DICOM folder {scan_path}; writing there would add "
                "foreign files to the series. Choose another output folder."
            )
        if name is not None:
            stem = safe_stem(name) + (f"_{index}" if len(samples) > 1 else "")
        else:
            stem = safe_stem(sample.meta.get("filename_or_obj"), default=f"image_{index}")
        if stem in used:
            stem = f"{stem}_{index}"
        used.add(stem)
        targets = {part: out / f"{stem}_{tag}{_ENDINGS[part]}" for part in parts}
        if "dicom" in formats:
            targets["dicom"] = dicom_folder(out, stem, label, scan_path)
        for target in targets.values():
            if target.parent.resolve() != out:
                raise ValueError(f"Refusing to write {target} outside {out}.")
            if scan_path is not None and target.resolve() == scan_path:
                raise ValueError(f"Refusing to overwrite the input {scan_path}; choose another output folder.")
            if target.exists() and not overwrite:
                raise FileExistsError(
                    f"{target} already exists; pass overwrite=True or choose another output folder "
                    "(nothing was written)."
                )
        if "dicom" in targets and targets["dicom"].exists() and not is_dicom_result(targets["dicom"]):
            raise FileExistsError(
                f"{targets['dicom']} exists and monai-cluscam did not write it; it is never replaced. Move it away "
                "or choose another output folder (nothing was written)."
            )
        plans.append(_Plan(sample, images[index], scan_path, stem, f"{stem}_{tag}", targets, predictions[index]))

    mark_output_dir(out)  # input searches leave the overlays and previews out
    dicom = {"method_info": method_info, "deidentify": deidentify}
    return [_write(plan, resample=resample, opacity=opacity, overwrite=overwrite, dicom=dicom) for plan in plans]


def _write(plan: _Plan, *, resample: bool, opacity: float, overwrite: bool, dicom: dict) -> OverlayFiles:
    """Write one planned overlay's files: the map on its grid, the Slicer files, the preview, the DICOM objects."""
    grid = to_original_grid(plan.sample) if resample else plan.sample
    affine = np.asarray(grid.affine.cpu(), dtype=np.float64)
    data = np.asarray(grid[0].detach().cpu(), dtype=np.float32)
    targets = plan.targets
    if "nifti" in targets:
        write_nifti(data[..., None] if data.ndim == 2 else data, affine, targets["nifti"], overwrite=overwrite)
        write_color_table(targets["color_table"], overwrite=overwrite)
        scan = str(plan.scan_path) if plan.scan_path is not None else None
        uid = plan.sample.meta.get("SeriesInstanceUID")
        script = slicer_script(scan, uid, targets["nifti"], targets["color_table"], plan.stem, opacity)
        atomic_write(targets["slicer_script"], lambda s: s.write(script.encode()), overwrite=overwrite)
    if "preview" in targets:
        picture = overlay_preview(data, affine, preview_background(grid, plan.scan_path, plan.image))
        atomic_write(targets["preview"], lambda s: picture.save(s, format="PNG"), overwrite=overwrite)
    written = None
    if "dicom" in targets:
        shutil.rmtree(targets["dicom"], ignore_errors=True)  # only when overwriting: the plan checked that
        written = save_dicom_overlay(plan.sample, plan.image, targets["dicom"].parent, name=plan.name,
                                     prediction=plan.prediction, **dicom)
    return OverlayFiles(*(targets.get(part) for part in _ENDINGS), written)
