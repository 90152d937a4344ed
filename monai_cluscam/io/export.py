"""Export ClusCAM maps as NIfTI overlays that land exactly on the original scan, with 3D Slicer helpers.

For every map :func:`save_overlay` writes, in one output folder:

* ``<name>_cluscam.nii.gz``: the map as float32 on the original scan's grid (sform and qform, code 1);
* ``<name>_cluscam_heat.ctbl``: a 256-entry heat colour table for 3D Slicer;
* ``<name>_cluscam_slicer.py``: a script for Slicer's Python console that loads the scan (when its path is
  known) and the overlay, and shows the overlay in heat colours over the scan at opacity 0.4;
* ``<name>_cluscam.png``: a preview (a blended slice for 2D, a montage of axial slices for 3D).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.transforms import SpatialResample
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_write, check_writable_dir, mark_output_dir, safe_stem
from ._geometry import check_affine
from .loading import load_image
from .nifti import write_nifti

__all__ = [
    "OverlayFiles",
    "heat_colormap",
    "overlay_preview",
    "save_overlay",
    "to_original_grid",
    "write_color_table",
]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class OverlayFiles:
    """Paths written by :func:`save_overlay` for one map (``preview`` is None when previews are off)."""

    nifti: Path
    color_table: Path
    slicer_script: Path
    preview: Path | None


def heat_colormap(n: int = 256) -> np.ndarray:
    """A black-red-yellow heat colour map as an ``(n, 3)`` uint8 array (no white, so it stands out on grey).

    Example:
        >>> lut = heat_colormap()
        >>> lut.shape, lut[0].tolist(), lut[-1].tolist()
        ((256, 3), [0, 0, 0], [255, 255, 0])
    """
    t = np.linspace(0.0, 1.0, n)
    rgb = np.stack([np.clip(2.0 * t, 0.0, 1.0), np.clip(2.0 * t - 1.0, 0.0, 1.0), np.zeros_like(t)], axis=1)
    return np.round(rgb * 255).astype(np.uint8)


def write_color_table(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the heat colour map as a 3D Slicer colour table (``index name R G B A`` per line).

    Entry 0 is fully transparent so that zero-valued voxels do not tint the scan.

    Example:
        >>> import tempfile
        >>> path = write_color_table(tempfile.mkdtemp() + "/heat.ctbl")
        >>> path.read_text().splitlines()[-1]
        '255 heat_255 255 255 0 255'
    """
    lines = ["# 3D Slicer colour table: ClusCAM heat map (0 = transparent)", "# 256 values"]
    for index, (r, g, b) in enumerate(heat_colormap(256).tolist()):
        lines.append(f"{index} heat_{index:03d} {r} {g} {b} {0 if index == 0 else 255}")
    payload = ("\n".join(lines) + "\n").encode()
    return atomic_write(Path(path), lambda stream: stream.write(payload), overwrite=overwrite)


def _as_int_tuple(value: object) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(torch.as_tensor(value).cpu()).ravel())


def to_original_grid(image: MetaTensor, mode: str = "bilinear") -> MetaTensor:
    """Resample a channel-first ``MetaTensor`` from its current grid back to the grid it was loaded on.

    Preprocessing (``Orientationd``, ``Spacingd``, ``Resized``, ``CropForegroundd``, ``SpatialPadd``, ...)
    keeps ``affine`` up to date while ``original_affine`` and ``spatial_shape`` describe the file, so
    resampling from the one to the other undoes any chain of such transforms; voxels outside the cropped
    field of view become 0. Without ``original_affine``/``spatial_shape`` the image is returned unchanged.

    Args:
        image: ``(C, *spatial)`` with MONAI metadata.
        mode: interpolation (``"bilinear"`` or ``"nearest"``).

    Example:
        >>> import numpy as np, torch
        >>> from monai.data import MetaTensor
        >>> meta = {"original_affine": np.eye(4), "spatial_shape": np.array([4, 4])}
        >>> small = MetaTensor(torch.ones(1, 2, 2), affine=torch.diag(torch.tensor([2.0, 2.0, 1, 1])), meta=meta)
        >>> tuple(to_original_grid(small).shape)
        (1, 4, 4)
    """
    original = image.meta.get("original_affine")
    shape = image.meta.get("spatial_shape")
    if original is None or shape is None:
        return image
    target = check_affine(np.asarray(torch.as_tensor(original).cpu(), dtype=np.float64), "original_affine")
    size = _as_int_tuple(shape)
    if len(size) != image.ndim - 1:
        raise ValueError(
            f"spatial_shape {size} does not match the map's {image.ndim - 1} spatial dims; pass the map as "
            "(1, *spatial) with the metadata of the image it explains."
        )
    current = np.asarray(image.affine.cpu(), dtype=np.float64)
    if tuple(image.shape[1:]) == size and np.allclose(current, target, atol=1e-6):
        return image
    resampler = SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float64)
    out = resampler(image, dst_affine=torch.as_tensor(target), spatial_size=size)
    return out.to(torch.float32)


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
    return shape is not None and attribution.ndim == len(_as_int_tuple(shape)) + 2


def _normalise(scan: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(scan, [0.5, 99.5]) if scan.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((scan - lo) / (hi - lo), 0.0, 1.0)


def _blend(grey: np.ndarray, heat: np.ndarray, max_alpha: float) -> np.ndarray:
    """Blend a [0, 1] grey image with a [0, 1] map coloured by :func:`heat_colormap` (alpha ~ map)."""
    lut = heat_colormap(256).astype(np.float32) / 255.0
    colours = lut[np.round(np.clip(heat, 0, 1) * 255).astype(int)]
    alpha = (max_alpha * np.clip(heat, 0, 1))[..., None]
    rgb = grey[..., None] * (1.0 - alpha) + colours * alpha
    return np.round(rgb * 255).astype(np.uint8)


def _upscale(rgb: np.ndarray, width_mm: float, height_mm: float, target: int) -> Image.Image:
    scale = target / max(width_mm, height_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    return Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)


def _colour_bar(width: int) -> Image.Image:
    bar = Image.new("RGB", (width, 26), (0, 0, 0))
    strip = np.repeat(heat_colormap(256)[None], 10, axis=0)
    bar.paste(Image.fromarray(strip).resize((width - 40, 10)), (20, 2))
    draw = ImageDraw.Draw(bar)
    font = ImageFont.load_default()
    draw.text((4, 12), "0", fill=(220, 220, 220), font=font)
    draw.text((width - 14, 12), "1", fill=(220, 220, 220), font=font)
    return bar


def overlay_preview(
    attribution: np.ndarray,
    affine: np.ndarray,
    scan: np.ndarray | None = None,
    *,
    max_alpha: float = 0.65,
    max_tiles: int = 12,
) -> Image.Image:
    """Render a map over a scan: one blended slice for 2D, a montage of axial slices for 3D.

    2D images are shown as stored (``(width, height)`` axes, as for pictures and DICOM). 3D volumes are
    reoriented to the closest RAS axes and shown in radiological convention (patient's right on the left,
    anterior up), with physical pixel aspect; the tiles are spread over the slices where the scan or the map
    has content, always including the slice holding the map's peak.

    Args:
        attribution: map on the scan's grid, 2D ``(W, H)`` or 3D; values in [0, 1].
        affine: 4x4 voxel-to-RAS affine of that grid.
        scan: the scan on the same grid (grey background); black when None.
        max_alpha: opacity of the map where it equals 1.
        max_tiles: most slices in a 3D montage.

    Example:
        >>> import numpy as np
        >>> overlay_preview(np.random.rand(16, 12), np.eye(4)).size[0] >= 256
        True
    """
    heat = np.asarray(attribution, dtype=np.float32)
    grey = np.zeros_like(heat) if scan is None else 0.85 * _normalise(np.asarray(scan, dtype=np.float32))
    aff = np.asarray(affine, dtype=np.float64)
    sizes = np.linalg.norm(aff[:3, :3], axis=0)
    if heat.ndim == 3 and heat.shape[2] == 1:
        heat, grey = heat[..., 0], grey[..., 0]
    if heat.ndim == 2:
        rgb = _blend(grey.T, heat.T, max_alpha)
        tile = _upscale(rgb, heat.shape[0] * sizes[0], heat.shape[1] * sizes[1], 384)
        canvas = Image.new("RGB", (tile.width, tile.height + 26))
        canvas.paste(tile, (0, 0))
        canvas.paste(_colour_bar(tile.width), (0, tile.height))
        return canvas
    if heat.ndim != 3:
        raise ValueError(f"overlay_preview expects a 2D or 3D map, got shape {heat.shape}.")
    ornt = nib.orientations.io_orientation(aff)
    heat = nib.orientations.apply_orientation(heat, ornt)
    grey = nib.orientations.apply_orientation(grey, ornt)
    zooms = np.empty(3)
    zooms[ornt[:, 0].astype(int)] = sizes
    content = np.flatnonzero(((grey > 0.05) | (heat > 0.05)).any(axis=(0, 1)))
    first, last = (int(content[0]), int(content[-1])) if content.size else (0, heat.shape[2] - 1)
    peak = int(np.unravel_index(int(np.argmax(heat)), heat.shape)[2])
    spread = np.round(np.linspace(first, last, max(1, max_tiles - 1))).astype(int).tolist()
    picks = sorted(set(spread) | {peak})
    tiles = [
        _upscale(
            _blend(grey[:, :, k].T[::-1, ::-1], heat[:, :, k].T[::-1, ::-1], max_alpha),
            heat.shape[0] * zooms[0],
            heat.shape[1] * zooms[1],
            192,
        )
        for k in picks
    ]
    columns = min(4, len(tiles))
    rows = -(-len(tiles) // columns)
    tw, th = tiles[0].size
    canvas = Image.new("RGB", (columns * tw, rows * th + 26))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, (k, tile) in enumerate(zip(picks, tiles, strict=True)):
        x, y = (index % columns) * tw, (index // columns) * th
        canvas.paste(tile, (x, y))
        draw.text((x + 3, y + 2), f"z={k}", fill=(200, 200, 200), font=font)
    canvas.paste(_colour_bar(canvas.width), (0, rows * th))
    return canvas


def _slicer_script(
    scan: str | None, series_uid: str | None, overlay: Path, color_table: Path, name: str, opacity: float
) -> str:
    return f'''"""Show a ClusCAM overlay over its scan in 3D Slicer.

Paste into Slicer's Python console (View > Python Console): exec(open(r"<this file>").read()),
or run: Slicer --python-script <this file>
"""

import os

import slicer

SCAN = {scan!r}
SERIES_UID = {series_uid!r}
OVERLAY = {str(overlay)!r}
COLOR_TABLE = {str(color_table)!r}
NAME = {name!r}
OPACITY = {float(opacity)!r}


def load_scan():
    """Load the scan: a DICOM series through Slicer's DICOM database, any other file directly."""
    if SCAN is None or not os.path.exists(SCAN):
        return None
    if SERIES_UID and os.path.isdir(SCAN):
        from DICOMLib import DICOMUtils

        with DICOMUtils.TemporaryDICOMDatabase() as database:
            DICOMUtils.importDicom(SCAN, database)
            node_ids = DICOMUtils.loadSeriesByUID([SERIES_UID])
        return slicer.mrmlScene.GetNodeByID(node_ids[0]) if node_ids else None
    return slicer.util.loadVolume(SCAN)


scan_node = load_scan()
overlay_node = slicer.util.loadVolume(OVERLAY, properties={{"name": NAME}})
color_node = slicer.util.loadColorTable(COLOR_TABLE)
display = overlay_node.GetDisplayNode()
display.SetAndObserveColorNodeID(color_node.GetID())
display.AutoWindowLevelOff()
display.SetWindowLevelMinMax(0.0, 1.0)
if scan_node is None:
    slicer.util.setSliceViewerLayers(background=overlay_node, fit=True)
else:
    slicer.util.setSliceViewerLayers(
        background=scan_node, foreground=overlay_node, foregroundOpacity=OPACITY, fit=True
    )
'''


def _input_path(meta: dict) -> Path | None:
    source = meta.get("filename_or_obj")
    if isinstance(source, (list, tuple)):
        source = source[0] if source else None
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        return None
    path = Path(source).expanduser()
    return path.resolve() if path.exists() else None


def _background(sample: MetaTensor, scan_path: Path | None, image: MetaTensor | None) -> np.ndarray | None:
    """The scan on the overlay's grid: the original file when it loads, else the given image, else None."""
    candidates = []
    if scan_path is not None:
        uid = sample.meta.get("SeriesInstanceUID")
        uid = uid if isinstance(uid, str) and uid else None
        dims = 2 if sample.ndim == 3 else None  # a 2D map of a slice stored as NIfTI (H, W, 1)
        candidates.append(lambda: load_image(scan_path, series_uid=uid, spatial_dims=dims))
    if image is not None:
        candidates.append(lambda: image)
    for candidate in candidates:
        try:
            scan = candidate()
            grey = MetaTensor(scan[:1].as_tensor().float(), affine=scan.affine)
            resampler = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float64)
            grey = resampler(grey, dst_affine=sample.affine, spatial_size=tuple(sample.shape[1:]))
            return np.asarray(grey[0].detach().cpu(), dtype=np.float32)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            warnings.warn(f"Preview without this scan background ({err}).", UserWarning, stacklevel=3)
    return None


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
) -> list[OverlayFiles]:
    """Write ClusCAM maps as NIfTI overlays on the original scan's grid, plus Slicer files and previews.

    ``attribution`` is what the explainer returns: a ``MetaTensor`` ``(1, *spatial)`` for one map or
    ``(B, 1, *spatial)`` batched as MONAI collates it (``is_batch=True``, affine ``(B, 4, 4)``); each sample
    gives one set of files. With ``resample=True`` each map is first brought back from its current affine to
    the grid the scan was loaded on (``original_affine`` + ``spatial_shape``), which undoes reorientation,
    resampling, resizing, cropping and padding; voxels outside a cropped field of view become 0. Values are
    written as they are (float32); previews clip them to [0, 1].

    File names derive from ``filename_or_obj`` (or ``name``), sanitised so nothing in metadata can steer a
    path out of ``output_dir``. Nothing is overwritten unless ``overwrite=True``, and the scan itself never:
    writing into a DICOM series folder or onto the input file is refused. All files are written atomically.

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

    Returns:
        One :class:`OverlayFiles` per map.

    Raises:
        ValueError: no geometry, a wrong shape, non-finite values, a target that is the input itself, or an
            ``output_dir`` that does not exist and ends in ``.nii``/``.nii.gz`` (a file name, not a folder).
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
    samples = _split(attribution, image)
    images: list[MetaTensor | None] = [None] * len(samples)
    if isinstance(image, MetaTensor):
        batched_image = image.is_batch or image.affine.ndim == 3
        images = decollate_batch(image, detach=True) if batched_image else [image]
        if len(images) != len(samples):
            raise ValueError(f"image holds {len(images)} samples but the attribution {len(samples)}.")
    out = check_writable_dir(output_dir)
    tag = safe_stem(suffix, default="cluscam")

    plans = []
    used: set[str] = set()
    for index, sample in enumerate(samples):
        scan_path = _input_path(sample.meta)
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
        targets = {
            "nifti": out / f"{stem}_{tag}.nii.gz",
            "color_table": out / f"{stem}_{tag}_heat.ctbl",
            "slicer_script": out / f"{stem}_{tag}_slicer.py",
            "preview": out / f"{stem}_{tag}.png" if preview else None,
        }
        for target in targets.values():
            if target is None:
                continue
            if target.parent.resolve() != out:
                raise ValueError(f"Refusing to write {target} outside {out}.")
            if scan_path is not None and target.resolve() == scan_path:
                raise ValueError(f"Refusing to overwrite the input {scan_path}; choose another output folder.")
            if target.exists() and not overwrite:
                raise FileExistsError(
                    f"{target} already exists; pass overwrite=True or choose another output folder "
                    "(nothing was written)."
                )
        plans.append((sample, images[index], scan_path, stem, targets))

    mark_output_dir(out)  # input searches leave the overlays and previews out
    written = []
    for sample, sample_image, scan_path, stem, targets in plans:
        grid = to_original_grid(sample) if resample else sample
        affine = np.asarray(grid.affine.cpu(), dtype=np.float64)
        data = np.asarray(grid[0].detach().cpu(), dtype=np.float32)
        write_nifti(data[..., None] if data.ndim == 2 else data, affine, targets["nifti"], overwrite=overwrite)
        write_color_table(targets["color_table"], overwrite=overwrite)
        uid = sample.meta.get("SeriesInstanceUID")
        script = _slicer_script(
            str(scan_path) if scan_path is not None else None,
            uid if isinstance(uid, str) and _UID.match(uid) else None,
            targets["nifti"],
            targets["color_table"],
            f"{stem}_{tag}",
            opacity,
        )
        atomic_write(targets["slicer_script"], lambda s, t=script: s.write(t.encode()), overwrite=overwrite)
        if targets["preview"] is not None:
            background = _background(grid, scan_path, sample_image)
            picture = overlay_preview(data, affine, background)
            atomic_write(targets["preview"], lambda s, p=picture: p.save(s, format="PNG"), overwrite=overwrite)
        written.append(
            OverlayFiles(targets["nifti"], targets["color_table"], targets["slicer_script"], targets["preview"])
        )
    return written
