"""Turn the paths a user gives (files, folders of slices, DICOM series folders) into a list of inputs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "find_inputs", "is_dicom_file"]

#: Suffixes read as images (NIfTI, PNG/JPEG, single DICOM files); DICOM series are folders.
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".png", ".jpg", ".jpeg", ".dcm")


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or a file carrying the DICOM preamble marker ``DICM`` at byte 128."""
    if path.name.lower().endswith(".dcm"):
        return True
    try:
        with path.open("rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def find_inputs(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand ``paths`` into images to explain, in a stable order.

    A file is one input. A folder that directly holds DICOM files is one input (a series); any other
    folder is searched recursively for image files (NIfTI, PNG/JPEG) and DICOM series folders. Hidden
    files and folders are ignored.

    Returns:
        The inputs, and the paths given that yielded nothing, each with the reason (missing, empty,
        not an image).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.png").write_bytes(b""), (d / "notes.txt").write_text("x")
        >>> found, skipped = find_inputs([d, d / "missing.nii"])
        >>> [p.name for p in found], [(p.name, why) for p, why in skipped]
        (['a.png'], [('missing.nii', 'does not exist')])
    """
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            skipped.append((path, "does not exist"))
        elif path.is_file():
            add(path)
        else:
            before = len(found)
            _walk(path, add)
            if len(found) == before:
                skipped.append((path, "holds no NIfTI, PNG/JPEG or DICOM image"))
    return found, skipped


def _walk(folder: Path, add) -> None:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    dicom = [p for p in files if not _is_image_file(p) or p.name.lower().endswith(".dcm")]
    if any(is_dicom_file(p) for p in dicom):
        add(folder)
        return
    for path in files:
        if _is_image_file(path):
            add(path)
    for sub in entries:
        if sub.is_dir():
            _walk(sub, add)
