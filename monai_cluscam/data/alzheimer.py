"""The Alzheimer MRI slice dataset in its three published layouts, as MONAI-style items.

Layouts recognised by :func:`alzheimer_items`:

(a) a flat folder of slices with a ``labels.csv`` (columns ``file,label``; the label is a class name and
    ``file`` is relative to the CSV's folder), or without a CSV, class names at the end of the file names
    (``000001_Mild_Demented.png``);
(b) one sub-folder per class (the Kaggle copy: ``MildDemented/``, ``NonDemented/``, ...);
(c) parquet file(s) with an ``image`` column holding ``{"bytes": <PNG/JPEG>}`` and an integer ``label``
    column (the Hugging Face copy).

Class names are matched case-insensitively, ignoring spaces, ``_`` and ``-``, so ``Mild_Demented``,
``MildDemented`` and ``mild demented`` are the same class. Labels follow :data:`CLASS_NAMES`.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from monai_cluscam.io.files import atomic_write, safe_stem
from monai_cluscam.io.loading import PICTURE_SUFFIXES, decode_picture

__all__ = ["CLASS_NAMES", "alzheimer_items", "class_index"]

CLASS_NAMES = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
"""Canonical class order: label ``i`` is ``CLASS_NAMES[i]``."""

_KEYS = {re.sub(r"[^a-z]", "", name.lower()): index for index, name in enumerate(CLASS_NAMES)}
# longest first, so that "...VeryMildDemented" is not taken for "...MildDemented"
_SUFFIX_ORDER = sorted(_KEYS, key=len, reverse=True)


def _key(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def class_index(name: str) -> int:
    """Label of a class name in any published spelling.

    Args:
        name: e.g. ``"Very_Mild_Demented"``, ``"VeryMildDemented"`` or ``"very mild demented"``.

    Raises:
        ValueError: the name is not one of the four classes.

    Example:
        >>> class_index("ModerateDemented"), class_index("non_demented")
        (1, 2)
    """
    index = _KEYS.get(_key(name))
    if index is None:
        raise ValueError(f"Unknown class name {name!r}; expected one of {', '.join(CLASS_NAMES)}.")
    return index


def _item(image: object, label: int, source: str) -> dict:
    return {"image": image, "label": label, "class_name": CLASS_NAMES[label], "source": source}


def _is_picture(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(PICTURE_SUFFIXES)


def _from_csv(csv_path: Path) -> list[dict]:
    base = csv_path.parent
    items, missing = [], []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
                raise ValueError(
                    f"{csv_path}: expected the columns 'file,label', found {reader.fieldnames}; fix the header."
                )
            for line, row in enumerate(reader, start=2):
                file, label = (row["file"] or "").strip(), (row["label"] or "").strip()
                if not file:
                    raise ValueError(f"{csv_path}, line {line}: the 'file' column is empty.")
                try:
                    index = int(label) if label.isdigit() else class_index(label)
                except ValueError as err:
                    raise ValueError(f"{csv_path}, line {line}: {err}") from err
                if not 0 <= index < len(CLASS_NAMES):
                    raise ValueError(f"{csv_path}, line {line}: label {index} is outside 0..3.")
                path = (base / file).resolve()
                if not path.is_file():
                    missing.append(str(path))
                items.append(_item(str(path), index, str(csv_path)))
    except UnicodeDecodeError as err:
        raise ValueError(f"{csv_path} is not a UTF-8 text CSV ({err}); re-save it as CSV.") from err
    if missing:
        raise FileNotFoundError(
            f"{csv_path} lists {len(missing)} missing files (first: {missing[:3]}); restore them or fix the CSV."
        )
    return items


def _from_class_folders(root: Path, folders: list[Path]) -> list[dict]:
    unknown = [f.name for f in folders if _key(f.name) not in _KEYS]
    if unknown:
        raise ValueError(
            f"{root}: sub-folders {unknown} are not class names; expected one folder per class among "
            f"{', '.join(CLASS_NAMES)} (Kaggle spellings such as 'MildDemented' are accepted)."
        )
    items = []
    for folder in sorted(folders):
        label = _KEYS[_key(folder.name)]
        items.extend(_item(str(p), label, str(folder)) for p in sorted(folder.rglob("*")) if _is_picture(p))
    return items


def _from_names(root: Path, pictures: list[Path]) -> list[dict]:
    items, unknown = [], []
    for path in pictures:
        stem = _key(path.name.rsplit(".", 1)[0])
        label = next((_KEYS[k] for k in _SUFFIX_ORDER if stem.endswith(k)), None)
        if label is None:
            unknown.append(path.name)
        else:
            items.append(_item(str(path), label, str(root)))
    if unknown:
        raise ValueError(
            f"{root}: {len(unknown)} file names do not end in a class name (first: {unknown[:3]}); add a "
            "labels.csv (columns file,label) or rename them like 000001_Mild_Demented.png."
        )
    return items


def _from_parquet(files: list[Path], extract_dir: Path | None) -> list[dict]:
    try:
        import pandas as pd
    except ImportError as err:
        raise ImportError("Reading parquet needs pandas and pyarrow: pip install pandas pyarrow") from err
    if extract_dir is not None:
        extract_dir = Path(extract_dir).expanduser()
        extract_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for file in files:
        try:
            frame = pd.read_parquet(file, columns=["image", "label"])
        except ImportError as err:
            raise ImportError(f"Reading {file} needs pyarrow: pip install pyarrow") from err
        except (KeyError, ValueError) as err:
            raise ValueError(
                f"{file}: expected parquet columns 'image' (PNG/JPEG bytes) and 'label' (0..3) ({err})."
            ) from err
        except Exception as err:
            raise ValueError(f"{file} is not a readable parquet file ({err}); replace it.") from err
        for row, (cell, label) in enumerate(zip(frame["image"], frame["label"], strict=True)):
            where = f"{file} row {row}"
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if not isinstance(data, (bytes, bytearray)):
                raise ValueError(f"{where}: 'image' holds no PNG/JPEG bytes ({type(cell).__name__}).")
            try:
                index = int(label)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: label {label!r} is not an integer 0..3.") from err
            if not 0 <= index < len(CLASS_NAMES):
                raise ValueError(f"{where}: label {index} is outside 0..3.")
            name = f"{safe_stem(file.name.split('.')[0])}_{row:06d}_{CLASS_NAMES[index]}"
            image = decode_picture(bytes(data), name=where)
            if extract_dir is None:
                image.meta["filename_or_obj"] = name
                items.append(_item(image, index, where))
                continue
            suffix = ".jpg" if bytes(data[:3]) == b"\xff\xd8\xff" else ".png"
            target = extract_dir / f"{name}{suffix}"
            if not target.exists():
                atomic_write(target, lambda stream, data=data: stream.write(bytes(data)))
            elif target.read_bytes() != bytes(data):
                raise FileExistsError(f"{target} exists with different content; extract to an empty folder instead.")
            items.append(_item(str(target), index, where))
    return items


def alzheimer_items(source: str | os.PathLike, *, extract_dir: str | os.PathLike | None = None) -> list[dict]:
    """List the Alzheimer MRI dataset as MONAI-style items, whatever layout it was published in.

    Each item is ``{"image": ..., "label": int, "class_name": str, "source": str}`` with labels following
    :data:`CLASS_NAMES`. For files, ``image`` is the absolute path (give it to ``load_image``). For
    parquet rows the pictures are decoded at once (to catch bad rows early): by default ``image`` is a
    ``MetaTensor`` ``(1, width, height)`` identical to what ``load_image`` gives for the same picture
    on disk (``load_image`` returns it unchanged, and its ``filename_or_obj`` is a readable stem such as
    ``train_000012_Mild_Demented`` that names exported overlays); with ``extract_dir`` the original
    bytes are written there as PNG/JPEG files and ``image`` is their path, so pipelines can stay path-based.

    Args:
        source: a folder in layout (a) or (b), a ``labels.csv``, a parquet file, or a folder holding parquet
            files (searched recursively, as in the Hugging Face copy's ``data/`` folder).
        extract_dir: where to write parquet pictures as files (parquet only).

    Returns:
        The items, in a stable order (CSV order, else sorted by path).

    Raises:
        FileNotFoundError: ``source`` or a listed file does not exist.
        ValueError: unknown class names, an empty dataset, unreadable CSV/parquet or undecodable pictures.

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "000001_Very_Mild_Demented.png")
        >>> [(item["label"], item["class_name"]) for item in alzheimer_items(root)]
        [(3, 'Very_Mild_Demented')]
    """
    root = Path(source).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"Dataset path {root} does not exist; check the path.")
    if extract_dir is not None and not (root.suffix == ".parquet" or root.is_dir()):
        raise ValueError("extract_dir only applies to parquet data.")
    if root.is_file():
        if root.name.lower().endswith(".csv"):
            items = _from_csv(root)
        elif root.name.lower().endswith(".parquet"):
            items = _from_parquet([root], None if extract_dir is None else Path(extract_dir))
        else:
            raise ValueError(f"{root}: expected a folder, a labels.csv or a .parquet file.")
    elif (root / "labels.csv").is_file():
        items = _from_csv(root / "labels.csv")
    else:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        pictures = sorted(p for p in root.iterdir() if _is_picture(p))
        parquet = sorted(p for p in root.rglob("*.parquet") if p.is_file())
        if parquet and not pictures:
            items = _from_parquet(parquet, None if extract_dir is None else Path(extract_dir))
        elif folders and not pictures:
            items = _from_class_folders(root, folders)
        elif pictures:
            items = _from_names(root, pictures)
        else:
            items = []
    if not items:
        raise ValueError(
            f"{root}: no images found; expected labelled PNG/JPEG slices (labels.csv, class folders or class "
            "names in file names) or parquet files with 'image' and 'label' columns."
        )
    return items
