"""Data lists for the bundle: the committed train/validation/test split, class weights, and inference input."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from monai_cluscam.io import CLASS_NAMES, alzheimer_items
from monai_cluscam.io.loading import PICTURE_SUFFIXES

__all__ = ["class_weights", "inference_items", "split_items"]

UNLABELLED = -1
"""Label given to slices whose class is unknown (a plain folder of pictures at inference)."""


def split_items(dataset_dir: str | os.PathLike, split_file: str | os.PathLike, part: str) -> list[dict]:
    """The items of ``dataset_dir`` (any layout ``alzheimer_items`` reads) whose file names ``split_file``
    lists under ``part`` (``"train"``, ``"validation"`` or ``"test"``), in the split file's order.

    Raises:
        KeyError: ``part`` is not in the split file.
        FileNotFoundError: the dataset lacks slices that the split lists.
    """
    split = json.loads(Path(split_file).read_text(encoding="utf-8"))
    if part not in split:
        raise KeyError(f"{split_file} has no part {part!r}; expected one of {sorted(split)}.")
    by_name = {Path(item["image"]).name: item for item in alzheimer_items(dataset_dir)}
    missing = [name for name in split[part] if name not in by_name]
    if missing:
        raise FileNotFoundError(
            f"{dataset_dir} lacks {len(missing)} slices of the {part!r} split (first: {missing[:3]}); "
            "point dataset_dir at the Alzheimer MRI slices the split was made from."
        )
    return [by_name[name] for name in split[part]]


def class_weights(items: list[dict], num_classes: int = len(CLASS_NAMES)) -> torch.Tensor:
    """Inverse-frequency class weights ``n / (num_classes * n_c)`` for a weighted cross-entropy.

    Raises:
        ValueError: a class has no item (its weight would be infinite).
    """
    counts = torch.bincount(torch.tensor([item["label"] for item in items]), minlength=num_classes).float()
    if (counts == 0).any():
        raise ValueError(f"every class needs training items; counts per class: {counts.tolist()}.")
    return counts.sum() / (num_classes * counts)


def _names_a_class(path: Path) -> bool:
    key = re.sub(r"[^a-z]", "", path.name.rsplit(".", 1)[0].lower())
    return any(key.endswith(re.sub(r"[^a-z]", "", name.lower())) for name in CLASS_NAMES)


def inference_items(dataset_dir: str | os.PathLike) -> list[dict]:
    """Items to explain: any labelled layout ``alzheimer_items`` reads, or a flat folder of PNG/JPEG slices
    whose names do not all end in a class name (then every item has ``label`` -1 and an empty ``class_name``).
    """
    root = Path(dataset_dir).expanduser()
    if root.is_dir() and not (root / "labels.csv").is_file():
        pictures = sorted(
            p
            for p in root.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(PICTURE_SUFFIXES)
        )
        if pictures and not all(_names_a_class(p) for p in pictures):
            return [
                {"image": str(p.resolve()), "label": UNLABELLED, "class_name": "", "source": str(root)}
                for p in pictures
            ]
    return alzheimer_items(root)
