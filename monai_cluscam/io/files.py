"""File-system helpers shared by the readers, the writers and the run pipeline: atomic writes, safe output names
and the marker of output folders."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "OUTPUT_MARKER",
    "atomic_write",
    "check_writable_dir",
    "input_path",
    "is_dicom_result",
    "is_output_dir",
    "mark_output_dir",
    "safe_stem",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".dcm", ".ima", ".mgz", ".nrrd")
#: Endings of a single image file: a folder path that ends so was meant as a file name.
_FILE_ENDINGS = (".nii", ".nii.gz")

#: Written into every folder this package writes results to (overlays, previews, predictions); searching for
#: inputs (``find_inputs``) leaves the results in such a folder out, so they are never explained as scans.
OUTPUT_MARKER = "monai-cluscam-output.txt"
_MARKER_TEXT = (
    "This folder holds results written by monai-cluscam (overlays, previews, Slicer files, predictions).\n"
    "When searching folders for scans, monai-cluscam leaves out the files it wrote here.\n"
)


def safe_stem(name: object, default: str = "image", max_len: int = 80) -> str:
    """Turn an arbitrary name (path, DICOM field, ...) into a harmless file-name stem.

    Only the last path component is kept, a known image suffix is dropped, every character outside
    ``[A-Za-z0-9._-]`` becomes ``_`` and leading dots are removed, so the result can never name a parent
    folder, a hidden file or an absolute path.

    Args:
        name: anything with a string form; ``None`` or an empty result gives ``default``.
        default: stem used when nothing usable is left.
        max_len: the stem is cut to this many characters.

    Returns:
        A non-empty stem such as ``"brain_T1"``.

    Example:
        >>> safe_stem("/data/../../etc/passwd")
        'passwd'
        >>> safe_stem("scan 01.nii.gz")
        'scan_01'
    """
    text = "" if name is None else str(name)
    text = text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    lowered = text.lower()
    for suffix in _KNOWN_SUFFIXES:
        if lowered.endswith(suffix) and len(text) > len(suffix):
            text = text[: -len(suffix)]
            break
    text = _UNSAFE.sub("_", text).lstrip(".")
    text = text[:max_len].strip("_")
    return text or default


def input_path(meta: dict) -> Path | None:
    """The existing file or folder an image was read from (its ``filename_or_obj``), resolved; else None."""
    source = meta.get("filename_or_obj")
    if isinstance(source, (list, tuple)):
        source = source[0] if source else None
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        return None
    path = Path(source).expanduser()
    return path.resolve() if path.exists() else None


def check_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` when needed and make sure files can be written there.

    Raises:
        NotADirectoryError: ``folder`` exists but is a file.
        ValueError: ``folder`` does not exist and its name ends in ``.nii``/``.nii.gz`` (a file name).
        PermissionError: the folder cannot be created or written to.
    """
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"Output path {path} exists and is not a folder; pass a folder path instead.")
    if not path.exists() and path.name.lower().endswith(_FILE_ENDINGS):
        raise ValueError(
            f"Output path {path} names a NIfTI file, but a folder is expected (several files are written there); "
            f"pass a folder such as {path.parent / 'overlays'} instead."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"Cannot create output folder {path} ({err}); choose a folder you can write to.") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"Output folder {path} is not writable; choose a folder you can write to.")
    return path.resolve()


def mark_output_dir(folder: str | os.PathLike) -> None:
    """Write :data:`OUTPUT_MARKER` into ``folder`` (once), so input searches leave its results out.

    Best effort: a folder that cannot take the marker still gets the results.
    """
    marker = Path(folder) / OUTPUT_MARKER
    if marker.exists():
        return
    try:
        atomic_write(marker, lambda stream: stream.write(_MARKER_TEXT.encode()), overwrite=True)
    except OSError:
        pass


def is_output_dir(folder: Path) -> bool:
    """Whether ``folder`` holds :data:`OUTPUT_MARKER` (results of this package were written there)."""
    return (folder / OUTPUT_MARKER).is_file()


def is_dicom_result(folder: Path) -> bool:
    """Whether ``folder`` is a DICOM result folder of this package (``<name>_<method>_dicom``): it lies in a folder
    holding :data:`OUTPUT_MARKER` (or, written by earlier versions, holds the marker itself). The folder
    holds DICOM files only, so a PACS import tool (``dcmsend +sd +r``) reads every file in it."""
    return folder.name.endswith("_dicom") and (is_output_dir(folder.parent) or is_output_dir(folder))


def atomic_write(target: str | os.PathLike, write: Callable[[BinaryIO], None], *, overwrite: bool = False) -> Path:
    """Write a file atomically: ``write`` fills a temporary file in the same folder, then it is renamed.

    Args:
        target: final path of the file.
        write: callable receiving an open binary file object.
        overwrite: replace an existing ``target``; when False an existing file raises ``FileExistsError``.

    Returns:
        The path written.
    """
    target = Path(target)
    if not overwrite and target.exists():
        raise FileExistsError(
            f"{target} already exists; remove it, pick another output folder, or pass overwrite=True."
        )
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return target
