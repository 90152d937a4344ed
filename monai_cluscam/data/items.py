"""MONAI-style item lists, whatever the data set: the images found under folders (labelled by a class-named
folder, else unlabelled), class weights for a weighted loss, and a fixed number of items per class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_cluscam.io.inputs import find_inputs

__all__ = ["UNLABELLED", "class_weights", "image_items", "label_from_folder", "per_class"]

UNLABELLED = -1
"""Label of an item whose class is unknown (an image to explain, not to score)."""


def label_from_folder(path: str | os.PathLike, class_names: Sequence[str]) -> int:
    """The index in ``class_names`` of the folder holding ``path`` or of the folder above it (as in
    ``images/<class>/...``, which ``make_phantom_dataset`` and the Kaggle layout write), else :data:`UNLABELLED`.

    Example:
        >>> label_from_folder("images/Non_Demented/phantom_0000/1.dcm", ["Mild_Demented", "Non_Demented"])
        1
        >>> label_from_folder("scans/brain.nii.gz", ["Mild_Demented", "Non_Demented"])
        -1
    """
    names = list(class_names)
    for folder in [p.name for p in Path(path).parents][:2]:
        if folder in names:
            return names.index(folder)
    return UNLABELLED


def image_items(
    sources: str | os.PathLike | Sequence[str | os.PathLike], class_names: Sequence[str] = ()
) -> list[dict]:
    """One item ``{"image": path, "label": int}`` per image file or DICOM series folder found under ``sources``
    (:func:`monai_cluscam.io.inputs.find_inputs`: files and folders, searched recursively, results this package
    wrote left out); the label comes from a folder named after a class (:func:`label_from_folder`) or is
    :data:`UNLABELLED`.

    Raises:
        FileNotFoundError: nothing to read was found (the message says why for each source).

    Example:
        >>> import tempfile, numpy as np
        >>> from monai_cluscam.io import write_nifti
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "Non_Demented").mkdir()
        >>> _ = write_nifti(np.zeros((4, 4, 4)), np.eye(4), root / "Non_Demented" / "a.nii.gz")
        >>> [item["label"] for item in image_items(root, ["Mild_Demented", "Non_Demented"])]
        [1]
    """
    given = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    found, skipped = find_inputs(given)
    if not found:
        reasons = "; ".join(f"{p}: {why}" for p, why in skipped) or "no input given"
        raise FileNotFoundError(f"no NIfTI volume or DICOM series to explain ({reasons}).")
    return [{"image": str(path), "label": label_from_folder(path, class_names)} for path in found]


def class_weights(items: Sequence[dict], num_classes: int, power: float = 1.0) -> torch.Tensor:
    """Class weights ``(n / (num_classes * n_c)) ** power`` for a weighted cross-entropy: ``power=1`` is inverse
    frequency, ``0.5`` its square root (milder on a rare class).

    Raises:
        ValueError: a class has no item (its weight would be infinite).

    Example:
        >>> class_weights([{"label": 0}, {"label": 0}, {"label": 1}, {"label": 1}], num_classes=2).tolist()
        [1.0, 1.0]
    """
    counts = torch.bincount(torch.tensor([item["label"] for item in items]), minlength=num_classes).float()
    if (counts == 0).any():
        raise ValueError(f"every class needs training items; counts per class: {counts.tolist()}.")
    return (counts.sum() / (num_classes * counts)) ** power


def per_class(items: Sequence[dict], count: int, num_classes: int) -> list[dict]:
    """The first ``count`` items of each class ``0 .. num_classes - 1``, in class order: a fixed set (a training
    audit's, say).

    Example:
        >>> [i["label"] for i in per_class([{"label": 1}, {"label": 0}, {"label": 1}, {"label": 1}], 2, 2)]
        [0, 1, 1]
    """
    return [item for label in range(num_classes) for item in [i for i in items if i["label"] == label][:count]]
