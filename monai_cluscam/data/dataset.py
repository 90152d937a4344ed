"""Writing phantoms to disk (NIfTI, PNG or DICOM) and whole labelled phantom datasets; or phantom datasets made
in memory, for training without files: the records of :func:`phantom_items`, made into volumes by
:class:`LoadPhantomd`.

Layout written by :func:`make_phantom_dataset` (``<ext>`` is ``.nii.gz`` or ``.png``)::

    out_dir/
        images/<Class_Name>/phantom_0000<ext>       # DICOM: images/<Class_Name>/phantom_0000/ (a series)
        masks/<Class_Name>/phantom_0000<ext>        # DICOM: NIfTI .nii.gz
        brain_masks/<Class_Name>/phantom_0000<ext>  # DICOM: NIfTI .nii.gz
        region_masks/<Class_Name>/phantom_0000<ext> # where atrophy is simulated (Phantom.region_mask); DICOM: NIfTI
        dataset.json                                # parameters and the items, paths relative to out_dir

``images/`` alone mirrors the Kaggle Alzheimer MRI layout (one folder per class), so the readers of that
dataset (``monai_cluscam.data.alzheimer_items``) accept it too.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
from monai.transforms import Transform
from PIL import Image

from monai_cluscam.io import write_dicom_series, write_nifti

from .phantom import (
    CLASS_NAMES,
    DEFAULT_FOV_MM,
    KINDS,
    Phantom,
    _check_choice,
    _check_seed,
    make_phantom,
)

__all__ = ["FORMATS", "LoadPhantomd", "make_phantom_dataset", "phantom_items", "save_phantom"]

FORMATS = ("nifti", "png", "dicom")
"""File formats: NIfTI (``.nii.gz``), 8-bit PNG (slices only) and DICOM series (image only)."""

_MAX_PER_CLASS = 100_000
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_FIELDS = ("image", "mask", "brain_mask", "region_mask")


def _check_format(fmt: object, kind: str) -> str:
    fmt = _check_choice("fmt", fmt, FORMATS)
    if fmt == "png" and kind != "slice":
        raise ValueError("fmt 'png' stores 2D slices only; use kind='slice', or fmt 'nifti' or 'dicom' for volumes.")
    return fmt


def _suffix(fmt: str, field: str) -> str:
    if fmt == "png":
        return ".png"
    if fmt == "dicom" and field == "image":
        return ""
    return ".nii.gz"


def _spatial_3d(phantom: Phantom, array: np.ndarray) -> np.ndarray:
    """Channel-first phantom array as the 3D array whose axes are ``phantom.affine``'s voxel axes."""
    return array[0] if phantom.kind == "volume" else array[0][..., None]


def _png(array: np.ndarray, path: Path, rescale: bool) -> None:
    values = np.asarray(array, dtype=np.float64)
    if rescale:
        peak = float(values.max())
        values = values * (255.0 / peak) if peak > 0 else values
    Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8).T).save(path)


def _write_field(phantom: Phantom, field: str, path: Path, fmt: str, overwrite: bool) -> Path:
    array = getattr(phantom, field)
    if fmt == "dicom" and field == "image":
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists; pass overwrite=True or another folder.")
            for old in path.glob("*.dcm"):
                old.unlink()
        description = f"monai-cluscam phantom {phantom.class_name} seed {phantom.seed}"
        write_dicom_series(_spatial_3d(phantom, array), phantom.affine, path, series_description=description)
        return path
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True or another folder.")
    if fmt == "png":
        _png(array[0], path, rescale=field == "image")
        return path
    dtype = np.float32 if field == "image" else np.uint8
    return write_nifti(_spatial_3d(phantom, array), phantom.affine, path, dtype=dtype, overwrite=overwrite)


def save_phantom(
    phantom: Phantom,
    folder: str | os.PathLike,
    name: str = "phantom",
    *,
    fmt: str = "nifti",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write a phantom's image, mask and brain mask into ``folder``.

    Files are ``<name>``, ``<name>_mask`` and ``<name>_brain_mask`` with the format's suffix:

    * ``"nifti"``: ``.nii.gz`` with sform and qform set to :attr:`Phantom.affine` (code 1); the image as
      float32, masks as uint8. Slices are stored as one-slice volumes ``(W, H, 1)``.
    * ``"png"`` (slices only): 8-bit greyscale in radiological view (anterior up, patient's right on the
      left). The image is rescaled so that its maximum is 255 (like the Alzheimer dataset's pictures);
      masks keep their values (0/1/2 and 0/1). ``monai_cluscam.io.load_image`` reads them back in the
      array order of :attr:`Phantom.image`. PNG carries no geometry.
    * ``"dicom"``: the image as an MR DICOM series in the folder ``<name>`` (``monai_cluscam.io``'s
      ``write_dicom_series``: int16 with rescale slope/intercept, exact geometry); masks as NIfTI.

    Args:
        phantom: from :func:`~monai_cluscam.data.make_phantom`.
        folder: output folder, created if needed.
        name: file name stem (letters, digits, ``.``, ``_`` and ``-`` only).
        fmt: one of :data:`FORMATS`.
        overwrite: replace existing files; otherwise an existing target raises ``FileExistsError``.

    Returns:
        ``{"image": path, "mask": path, "brain_mask": path}``.

    Raises:
        ValueError: unknown ``fmt``, PNG for a volume, or a bad ``name``.
        FileExistsError: a target exists and ``overwrite`` is False.

    Example:
        >>> import tempfile
        >>> from monai_cluscam.data import make_phantom
        >>> p = make_phantom(0, seed=1, kind="slice", shape=(32, 32))
        >>> sorted(save_phantom(p, tempfile.mkdtemp(), fmt="png"))
        ['brain_mask', 'image', 'mask', 'region_mask']
    """
    fmt = _check_format(fmt, phantom.kind)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"Bad name {name!r}: use letters, digits, '.', '_' and '-' only (e.g. 'phantom_0001').")
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    stems = {"image": name, "mask": f"{name}_mask", "brain_mask": f"{name}_brain_mask",
             "region_mask": f"{name}_region_mask"}
    return {
        field: _write_field(phantom, field, folder / (stems[field] + _suffix(fmt, field)), fmt, overwrite)
        for field in _FIELDS
    }


def make_phantom_dataset(
    out_dir: str | os.PathLike,
    n_per_class: int = 4,
    *,
    kind: str = "slice",
    fmt: str = "nifti",
    seed: int = 0,
    shape: int | Sequence[int] | None = None,
    fov_mm: float | Sequence[float] = DEFAULT_FOV_MM,
    slice_mm: float | None = None,
    noise: str = "rician",
    overwrite: bool = False,
) -> list[dict]:
    """Write ``n_per_class`` phantoms of each class of :data:`CLASS_NAMES` and return MONAI-style items.

    Items are interleaved by class (labels 0, 1, 2, 3, 0, 1, ...), so every prefix is balanced. Phantom
    ``i`` is ``make_phantom(item["label"], item["seed"], ...)``, its seed drawn from ``seed`` (the same
    ``seed`` writes the same dataset); subjects differ between items. The layout is described in the
    module docstring; ``dataset.json`` records the parameters and the items with relative paths.

    Args:
        out_dir: output folder, created if needed.
        n_per_class: phantoms per class (at least 1).
        kind: ``"slice"`` or ``"volume"``.
        fmt: ``"nifti"``, ``"png"`` (slices only) or ``"dicom"`` (see :func:`save_phantom`).
        seed: master seed.
        shape: spatial shape, see :func:`~monai_cluscam.data.make_phantom`.
        fov_mm: field of view in mm.
        slice_mm: MNI height of slices.
        noise: ``"rician"`` or ``"gaussian"``.
        overwrite: replace files of an earlier run; otherwise existing targets raise ``FileExistsError``.

    Returns:
        ``[{"image": str, "label": int, "mask": str, "brain_mask": str, "region_mask": str, "class_name": str,
        "seed": int}]``
        with absolute paths (``image`` is a series folder for DICOM).

    Raises:
        ValueError: a bad ``n_per_class``, ``kind``, ``fmt``, ``seed`` or phantom argument.
        FileExistsError: a target exists and ``overwrite`` is False.

    Example:
        >>> import tempfile
        >>> items = make_phantom_dataset(tempfile.mkdtemp(), n_per_class=1, kind="slice", shape=32)
        >>> [item["label"] for item in items], items[0]["image"].endswith(".nii.gz")
        ([0, 1, 2, 3], True)
    """
    if (
        not isinstance(n_per_class, numbers.Integral)
        or isinstance(n_per_class, bool)
        or not 1 <= n_per_class <= _MAX_PER_CLASS
    ):
        raise ValueError(f"n_per_class must be an integer in [1, {_MAX_PER_CLASS}], got {n_per_class!r}.")
    kind = _check_choice("kind", kind, KINDS)
    fmt = _check_format(fmt, kind)
    seed = _check_seed(seed)
    out_dir = Path(out_dir).expanduser().resolve()
    count = int(n_per_class) * len(CLASS_NAMES)
    seeds = np.random.SeedSequence(seed).generate_state(count).tolist()
    options = {"kind": kind, "shape": shape, "fov_mm": fov_mm, "slice_mm": slice_mm, "noise": noise}
    manifest_path = out_dir / "dataset.json"
    if manifest_path.exists() and not overwrite:
        raise FileExistsError(f"{manifest_path} already exists; pass overwrite=True or another folder.")
    items = []
    for index, item_seed in enumerate(seeds):
        label = index % len(CLASS_NAMES)
        class_name = CLASS_NAMES[label]
        phantom = make_phantom(label, item_seed, **options)
        name = f"phantom_{index:04d}"
        paths = {}
        for field, sub in zip(_FIELDS, ("images", "masks", "brain_masks", "region_masks"), strict=True):
            folder = out_dir / sub / class_name
            folder.mkdir(parents=True, exist_ok=True)
            paths[field] = _write_field(phantom, field, folder / (name + _suffix(fmt, field)), fmt, overwrite)
        items.append(
            {
                "image": str(paths["image"]),
                "label": label,
                "mask": str(paths["mask"]),
                "brain_mask": str(paths["brain_mask"]),
                "region_mask": str(paths["region_mask"]),
                "class_name": class_name,
                "seed": int(item_seed),
            }
        )
    manifest = {
        "generator": "monai_cluscam.data.make_phantom_dataset",
        "seed": seed,
        "n_per_class": int(n_per_class),
        "kind": kind,
        "fmt": fmt,
        "shape": list(phantom.image.shape[1:]),
        "fov_mm": np.asarray(fov_mm, dtype=float).tolist(),
        "slice_mm": slice_mm,
        "noise": noise,
        "class_names": list(CLASS_NAMES),
        "items": [
            {key: (os.path.relpath(value, out_dir) if key in _FIELDS else value) for key, value in item.items()}
            for item in items
        ],
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return items


def phantom_items(n_per_class: int, seed: int, shapes: Sequence[int] = (64,)) -> list[dict]:
    """Records of ``n_per_class`` phantoms per class and per grid in ``shapes``: ``{"image": None,
    "label", "class_name", "seed", "shape"}``, classes interleaved (0, 1, 2, 3, 0, ...), grids one after
    the other. Phantom seeds are drawn from ``numpy.random.SeedSequence([seed, grid index])``, so every
    record is another subject and data sets of different ``seed`` do not share subjects. Nothing is made
    yet: :class:`LoadPhantomd` makes each record's volume.

    Example:
        >>> items = phantom_items(n_per_class=1, seed=5, shapes=(16, 24))
        >>> [i["label"] for i in items], [i["shape"] for i in items][::4], len({i["seed"] for i in items})
        ([0, 1, 2, 3, 0, 1, 2, 3], [16, 24], 8)
    """
    if int(n_per_class) < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class!r}.")
    items = []
    for index, shape in enumerate(shapes):
        count = int(n_per_class) * len(CLASS_NAMES)
        seeds = np.random.SeedSequence([int(seed), index]).generate_state(count).tolist()
        for i, item_seed in enumerate(seeds):
            label = i % len(CLASS_NAMES)
            items.append(
                {
                    "image": None,
                    "label": label,
                    "class_name": CLASS_NAMES[label],
                    "seed": int(item_seed),
                    "shape": int(shape),
                }
            )
    return items


class LoadPhantomd(Transform):
    """Dictionary transform: put the phantom volume a record of :func:`phantom_items` describes under ``key``,
    as a channel-first ``MetaTensor`` with its scanner affine (what ``load_image`` returns for the same phantom
    written to NIfTI). Deterministic and a MONAI ``Transform``, so ``CacheDataset`` keeps its result.

    Args:
        key: where the volume goes.
        fov_mm: field of view of every grid, in mm.
    """

    def __init__(self, key: Hashable = "image", fov_mm: float = DEFAULT_FOV_MM) -> None:
        self.key = key
        self.fov_mm = float(fov_mm)

    def __call__(self, data: dict) -> dict:
        phantom = make_phantom(data["label"], data["seed"], kind="volume", shape=data["shape"], fov_mm=self.fov_mm)
        out = dict(data)
        out[self.key] = phantom.as_metatensor("image")
        return out
