"""Data lists for the bundle: the training split of ``train/`` (with checks that run before any training), the
test slices, and inference input. Class weights and the training audit's fixed set come from the package
(``monai_cluscam.data.class_weights``, ``monai_cluscam.data.per_class``)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

from monai_cluscam.data import CLASS_NAMES, UNLABELLED, alzheimer_items
from monai_cluscam.io.loading import PICTURE_SUFFIXES
from PIL import Image, UnidentifiedImageError

__all__ = ["evaluation_items", "held_out_items", "inference_items", "split_items"]

#: The parts of ``train/`` that ``configs/split.json`` defines: ``validation`` is listed, ``train`` is the rest.
PARTS = ("train", "validation")


def _relative(path: str | os.PathLike, root: Path) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


def _check_folder_labels(items: list[dict], root: Path) -> None:
    """A label file beside class folders must agree with the folder each file sits in."""
    disagree = []
    for item in items:
        folder = Path(item["image"]).parent.name
        key = re.sub(r"[^a-z]", "", folder.lower())
        named = [i for i, name in enumerate(CLASS_NAMES) if re.sub(r"[^a-z]", "", name.lower()) == key]
        if named and named[0] != item["label"]:
            disagree.append(f"{_relative(item['image'], root)} (label {item['class_name']}, folder {folder})")
    if disagree:
        raise ValueError(
            f"{root}: the label file disagrees with the class folders for {len(disagree)} slices (first: "
            f"{disagree[:3]}); fix labels.csv or move the files before training."
        )


def _check_readable(items: list[dict]) -> None:
    bad = []
    for item in items:
        try:
            with Image.open(item["image"]) as picture:
                picture.load()
        except (OSError, UnidentifiedImageError, ValueError) as err:
            bad.append(f"{item['image']} ({type(err).__name__}: {err})")
    if bad:
        raise ValueError(
            f"{len(bad)} training images cannot be read (first: {bad[:3]}); replace or remove them before training."
        )


def _check_classes(counts: Counter, where: str) -> None:
    missing = [name for label, name in enumerate(CLASS_NAMES) if counts[label] == 0]
    if missing:
        raise ValueError(
            f"{where} has no slices of {missing}; every class in {list(CLASS_NAMES)} needs slices "
            "(check the folder names and the split file)."
        )


def split_items(train_dir: str | os.PathLike, split_file: str | os.PathLike, part: str) -> list[dict]:
    """The ``part`` (``"train"`` or ``"validation"``) of the training folder, checked before training starts.

    ``train_dir`` is the dataset's training split in any folder layout ``alzheimer_items`` reads (one folder
    per class, as in Kaggle and ``shared/data/alzheimer_mri/train``). ``split_file`` lists the validation
    slices as paths relative to ``train_dir``; every other slice is for training.

    Raises:
        FileNotFoundError: ``train_dir`` is missing, or lacks slices that the split lists.
        ValueError: a class has no slices (in the folder or in the part), a label file disagrees with the class
            folders, an image cannot be read, or the part is empty; the message names the file or class.
        KeyError: ``part`` is not one of :data:`PARTS`.

    Example:
        >>> import json, tempfile, numpy as np
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for c, name in enumerate(CLASS_NAMES):
        ...     (root / name).mkdir()
        ...     for i in range(2):
        ...         Image.fromarray(np.full((8, 8), c, np.uint8)).save(root / name / f"{i}.png")
        >>> split = root / "split.json"
        >>> _ = split.write_text(json.dumps({"validation": [f"{n}/0.png" for n in CLASS_NAMES]}))
        >>> [len(split_items(root, split, part)) for part in PARTS]
        [4, 4]
    """
    if part not in PARTS:
        raise KeyError(f"part must be one of {PARTS}; got {part!r}.")
    root = Path(train_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"training folder {root} does not exist; pass the dataset's train/ folder (one folder per class)."
        )
    items = alzheimer_items(root)
    _check_folder_labels(items, root)
    _check_classes(Counter(item["label"] for item in items), str(root))
    split = json.loads(Path(split_file).read_text(encoding="utf-8"))
    held = split.get("validation")
    if not held:
        raise ValueError(f"{split_file} lists no validation slices; regenerate it with scripts/make_split.py.")
    by_name = {_relative(item["image"], root): item for item in items}
    missing = [name for name in held if name not in by_name]
    if missing:
        raise FileNotFoundError(
            f"{root} lacks {len(missing)} slices of the validation split (first: {missing[:3]}); point train_dir at "
            "the training split the split file was made from, or regenerate it with scripts/make_split.py."
        )
    held_set = set(held)
    if part == "validation":
        chosen = [by_name[n] for n in held]
    else:
        chosen = [item for n, item in by_name.items() if n not in held_set]
    if not chosen:
        raise ValueError(f"the {part!r} part of {root} is empty; regenerate the split with scripts/make_split.py.")
    _check_classes(Counter(item["label"] for item in chosen), f"the {part!r} part of {root}")
    _check_readable(chosen)
    return chosen


def held_out_items(dataset_dir: str | os.PathLike) -> list[dict]:
    """The held-out test slices: ``dataset_dir/labels.csv`` with ``slices/`` as in ``shared/data/alzheimer_mri``,
    or any labelled layout ``alzheimer_items`` reads.

    Raises:
        ValueError: a class has no test slices.
    """
    items = alzheimer_items(dataset_dir)
    _check_classes(Counter(item["label"] for item in items), str(dataset_dir))
    return items


def _names_a_class(path: Path) -> bool:
    key = re.sub(r"[^a-z]", "", path.name.rsplit(".", 1)[0].lower())
    return any(key.endswith(re.sub(r"[^a-z]", "", name.lower())) for name in CLASS_NAMES)


def inference_items(dataset_dir: str | os.PathLike) -> list[dict]:
    """Items to explain: any labelled layout ``alzheimer_items`` reads, or a flat folder of PNG/JPEG slices
    whose names do not all end in a class name (then every item has ``label`` ``UNLABELLED`` (-1) and an empty
    ``class_name``).
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


def evaluation_items(
    dataset_dir: str | os.PathLike, train_dir: str | os.PathLike, split_file: str | os.PathLike, part: str
) -> list[dict]:
    """The slices ``configs/evaluate.json`` scores: ``"test"`` (the held-out slices of ``dataset_dir``) or
    ``"validation"`` (the validation part of ``train_dir``).

    Raises:
        ValueError: ``part`` is neither.
    """
    if part == "test":
        return held_out_items(dataset_dir)
    if part == "validation":
        return split_items(train_dir, split_file, "validation")
    raise ValueError(f"eval_part must be 'test' or 'validation'; got {part!r}.")
