"""PNG previews of maps: the heat colour map, a map blended over its scan (a slice in 2D, a montage of axial
slices in 3D) with a colour bar, and the scan to show behind an overlay."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample
from PIL import Image, ImageDraw, ImageFont

from .loading import load_image

__all__ = ["colour_bar", "heat_colormap", "overlay_preview", "preview_background"]


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


def colour_bar(width: int) -> Image.Image:
    """The 0-1 heat colour bar, ``width`` pixels wide and 26 high, drawn under previews and DICOM overlays."""
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
        canvas.paste(colour_bar(tile.width), (0, tile.height))
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
    canvas.paste(colour_bar(canvas.width), (0, rows * th))
    return canvas


def preview_background(sample: MetaTensor, scan_path: Path | None, image: MetaTensor | None) -> np.ndarray | None:
    """The scan on the grid of the map ``sample`` (``(1, *spatial)``), as a preview's grey background: the
    original file ``scan_path`` when it loads, else ``image``, else None (each fallback with a warning)."""
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
