"""Turn the paths a user gives (files, folders of slices, DICOM series folders) into a list of inputs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .files import is_dicom_result, is_output_dir

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


#: Endings of the overlays and previews this package writes (``save_overlay``'s default suffix).
_OUTPUT_ENDINGS = ("_cluscam.nii.gz", "_cluscam.png")
#: Files ``save_overlay`` writes beside every overlay ``<base>.nii.gz`` (and preview ``<base>.png``).
_COMPANIONS = ("_heat.ctbl", "_slicer.py")


def _in_dicom_result(path: Path) -> bool:
    """Whether ``path`` is, or lies in, a DICOM result folder of ``save_dicom_overlay`` (``<name>_<method>_dicom``
    in a marked output folder; its ``scan/``, ``map/`` and ``overlay/`` series are results, not scans)."""
    return any(is_dicom_result(p) for p in (path, *list(path.parents)[:2]))


def _is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def _written_here(files: list[Path], marked: bool) -> set[Path]:
    """The overlays and previews among ``files`` (one folder's) that this package wrote.

    An image ``<base>.nii.gz``/``<base>.png`` with ``<base>_heat.ctbl`` or ``<base>_slicer.py`` beside it is
    a ``save_overlay`` output (whatever its suffix, even without a marker: results of older versions); in a
    marked output folder so is any ``*_cluscam.nii.gz``/``*_cluscam.png`` (a run killed before the rest).
    """
    names = {p.name for p in files}
    written = set()
    for path in files:
        lowered = path.name.lower()
        if not lowered.endswith((".nii.gz", ".nii", ".png")):
            continue
        base = path.name[: -len(".nii.gz")] if lowered.endswith(".nii.gz") else path.name.rsplit(".", 1)[0]
        if any(base + ending in names for ending in _COMPANIONS) or (marked and lowered.endswith(_OUTPUT_ENDINGS)):
            written.add(path)
    return written


def find_inputs(
    paths: Sequence[str | os.PathLike],
    *,
    exclude: Sequence[str | os.PathLike] = (),
    left_out: list[tuple[Path, str]] | None = None,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand ``paths`` into images to explain, in a stable order.

    A file is one input. A folder that directly holds DICOM files is one input (a series); NIfTI and PNG/JPEG
    files beside them are inputs of their own. Folders are searched recursively for image files and DICOM
    series folders. Hidden files and folders are ignored.

    Files this package wrote are never inputs: the overlays and previews of :func:`~monai_cluscam.io.save_overlay`
    (known by the ``<base>_heat.ctbl``/``<base>_slicer.py`` written beside them, and in a folder holding
    :data:`~monai_cluscam.io.files.OUTPUT_MARKER` by their ``_cluscam`` names) are left out, wherever they
    lie: an earlier run's output folder inside an input folder, a bundle's ``eval/overlays``, a given file. So are
    the DICOM result folders of :func:`~monai_cluscam.io.save_dicom_overlay` (``<name>_<method>_dicom/`` with the
    marker) and every series in them, the scan written there included.

    Args:
        paths: files and folders.
        exclude: folders not to search when met inside a given folder (the ``--output`` folder of a run);
            given directly, they are searched, less the files this package wrote.
        left_out: when given, gets one ``(folder or file, why)`` per place whose outputs were left out (a note,
            not a failure).

    Returns:
        The inputs, and the paths given that yielded nothing, each with the reason (missing, empty,
        not an image, not a usable path: a NUL character or a name too long, a folder that cannot be read).
        A path that held only files this package wrote is in neither list (it is noted in ``left_out``).

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
    notes: list[tuple[Path, str]] = []
    excluded = set()
    for folder in exclude:
        try:
            excluded.add(Path(folder).expanduser().resolve())
        except (OSError, ValueError):
            continue

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
            if _is_written_file(path):
                notes.append(
                    (path, "left out: monai-cluscam wrote it (an overlay, a preview, DICOM results), not a scan")
                )
            else:
                add(path)
        else:
            before, noted = len(found), len(notes)
            try:
                _walk(path, add, excluded, notes, top=True)
            except OSError as err:
                skipped.append((path, f"cannot be searched ({err}); check its permissions"))
                continue
            if len(found) == before and len(notes) == noted:
                skipped.append((path, "holds no NIfTI, PNG/JPEG or DICOM image"))
    if left_out is not None:
        left_out.extend(notes)
    return found, skipped


def _is_written_file(path: Path) -> bool:
    """Whether a file given directly is an overlay, a preview or a DICOM result this package wrote."""
    try:
        if _in_dicom_result(path.parent):
            return True
        companions = [p for p in path.parent.iterdir() if p.name.endswith(_COMPANIONS)]
        return path in _written_here([path, *companions], is_output_dir(path.parent))
    except OSError:
        return False


def _walk(folder: Path, add, excluded: set[Path], notes: list[tuple[Path, str]], top: bool = False) -> None:
    if not top and folder.resolve() in excluded:
        notes.append((folder, "left out: it is this run's output folder"))
        return
    if _in_dicom_result(folder):
        notes.append((folder, "left out: monai-cluscam wrote it (DICOM results), it is not a scan"))
        return
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    written = _written_here(files, is_output_dir(folder))
    if written:
        notes.append((folder, f"left out {len(written)} files monai-cluscam wrote there (overlays, previews)"))
    files = [p for p in files if p not in written]
    dicom = [p for p in files if not _is_image_file(p) or p.name.lower().endswith(".dcm")]
    series = any(is_dicom_file(p) for p in dicom)
    if series:
        add(folder)
    for path in files:
        if _is_image_file(path) and not (series and path.name.lower().endswith(".dcm")):
            add(path)
    for sub in entries:
        if sub.is_dir():
            _walk(sub, add, excluded, notes)
