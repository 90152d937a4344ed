"""Data for the bundle: seeded phantom volumes made on the fly for training and evaluation, and inference inputs.

Training and evaluation volumes are brain phantoms of ``monai_cluscam.data.make_phantom``, made in memory
(nothing is written to disk) by :class:`LoadPhantomd` from the small records of :func:`phantom_items`:
one subset per grid in ``shapes`` (48, 64 and 96 voxels over the 192 mm field of view, that is 4, 3 and
2 mm voxels), so the network learns on the resampling the preprocessing does at inference. The same
arguments give the same volumes, bit for bit; other seeds give other subjects.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
from monai.transforms import Transform

from monai_cluscam.data import CLASS_NAMES, make_phantom
from monai_cluscam.io.inputs import find_inputs

__all__ = ["UNLABELLED", "LoadPhantomd", "class_from_path", "inference_items", "phantom_items"]

UNLABELLED = -1
"""Label of an inference input whose class is unknown."""


def phantom_items(n_per_class: int, seed: int, shapes: Sequence[int] = (64,)) -> list[dict]:
    """Records of ``n_per_class`` phantoms per class and per grid in ``shapes``: ``{"image": None,
    "label", "class_name", "seed", "shape"}``, classes interleaved (0, 1, 2, 3, 0, ...), grids one after
    the other. Phantom seeds are drawn from ``numpy.random.SeedSequence([seed, grid index])``, so every
    record is another subject and data sets of different ``seed`` do not share subjects.

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
    """Dictionary transform: put the phantom a record of :func:`phantom_items` describes under ``key``, as a
    channel-first ``MetaTensor`` with its scanner affine (what ``load_image`` returns for the same phantom
    written to NIfTI). Deterministic and a MONAI ``Transform``, so ``CacheDataset`` keeps its result.

    Args:
        key: where the volume goes.
        fov_mm: field of view of every grid, in mm.
    """

    def __init__(self, key: Hashable = "image", fov_mm: float = 192.0) -> None:
        self.key = key
        self.fov_mm = float(fov_mm)

    def __call__(self, data: dict) -> dict:
        phantom = make_phantom(data["label"], data["seed"], kind="volume", shape=data["shape"], fov_mm=self.fov_mm)
        out = dict(data)
        out[self.key] = phantom.as_metatensor("image")
        return out


def class_from_path(path: str | os.PathLike) -> int:
    """The class index named by the input's folder (``make_phantom_dataset`` writes ``images/<class>/...``),
    else :data:`UNLABELLED`."""
    parents = [p.name for p in Path(path).parents][:2]
    for name in parents:
        if name in CLASS_NAMES:
            return CLASS_NAMES.index(name)
    return UNLABELLED


def inference_items(dataset_dir: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict]:
    """One item ``{"image": path, "label": int}`` per NIfTI volume or DICOM series folder found under
    ``dataset_dir`` (``monai_cluscam.io.inputs.find_inputs``); the label comes from a class-named folder
    (see :func:`class_from_path`) or is :data:`UNLABELLED`.

    Raises:
        FileNotFoundError: nothing to read was found.
    """
    given = [dataset_dir] if isinstance(dataset_dir, (str, os.PathLike)) else list(dataset_dir)
    found, skipped = find_inputs(given)
    if not found:
        reasons = "; ".join(f"{p}: {why}" for p, why in skipped) or "no input given"
        raise FileNotFoundError(f"no NIfTI volume or DICOM series to explain ({reasons}).")
    return [{"image": str(path), "label": class_from_path(path)} for path in found]
