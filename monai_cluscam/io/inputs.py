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

    A file is one input. A folder that directly holds DICOM files is one input (a series); NIfTI and PNG/JPEG
    files beside them are inputs of their own. Folders are searched recursively for image files and DICOM
    series folders. Hidden files and folders are ignored.

    Returns:
        The inputs, and the paths given that yielded nothing, each with the reason (missing, empty,
        not an image, not a usable path: a NUL character or a name too long, a folder that cannot be read).

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
        if "\0" in str(path):
            skipped.append((path, "is not a usable path (it holds a NUL character)"))
            continue
        try:
            exists, is_file = path.exists(), path.is_file()
        except OSError as err:  # a name too long for the file system, a loop of links
            skipped.append((path, f"is not a usable path ({err.strerror or err})"))
            continue
        if not exists:
            skipped.append((path, "does not exist"))
        elif is_file:
            add(path)
        else:
            before = len(found)
            try:
                _walk(path, add)
            except OSError as err:
                skipped.append((path, f"cannot be searched ({err}); check its permissions"))
                continue
            if len(found) == before:
                skipped.append((path, "holds no NIfTI, PNG/JPEG or DICOM image"))
    return found, skipped


def _walk(folder: Path, add) -> None:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    dicom = [p for p in files if not _is_image_file(p) or p.name.lower().endswith(".dcm")]
    series = any(is_dicom_file(p) for p in dicom)
    if series:
        add(folder)
    for path in files:
        if _is_image_file(path) and not (series and path.name.lower().endswith(".dcm")):
            add(path)
    for sub in entries:
        if sub.is_dir():
            _walk(sub, add)
