"""3D Slicer helpers for an overlay: the heat colour table and the script that loads a scan with its overlay."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .files import atomic_write
from .preview import heat_colormap

__all__ = ["slicer_script", "write_color_table"]

#: A DICOM UID: digits in dot-separated groups.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def write_color_table(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the heat colour map as a 3D Slicer colour table (``index name R G B A`` per line).

    Entry 0 is fully transparent so that zero-valued voxels do not tint the scan.

    Example:
        >>> import tempfile
        >>> path = write_color_table(tempfile.mkdtemp() + "/heat.ctbl")
        >>> path.read_text().splitlines()[-1]
        '255 heat_255 255 255 0 255'
    """
    lines = ["# 3D Slicer colour table: ClusCAM heat map (0 = transparent)", "# 256 values"]
    for index, (r, g, b) in enumerate(heat_colormap(256).tolist()):
        lines.append(f"{index} heat_{index:03d} {r} {g} {b} {0 if index == 0 else 255}")
    payload = ("\n".join(lines) + "\n").encode()
    return atomic_write(Path(path), lambda stream: stream.write(payload), overwrite=overwrite)


def slicer_script(
    scan: str | None, series_uid: object, overlay: Path, color_table: Path, name: str, opacity: float
) -> str:
    """The text of a script for Slicer's Python console that loads ``scan`` (a DICOM series by ``series_uid``,
    any other file directly; skipped when None or gone) and the ``overlay`` in the colours of ``color_table``,
    at ``opacity`` over the scan. Every value enters the script as a Python literal, and a ``series_uid`` that
    is not a DICOM UID is left out, so no metadata can break out of the script's strings.

    The script finds the overlay and the colour table beside itself, and the scan by its path relative to the
    script's folder (then by its absolute path), so an output folder moved with its scan, or alone, still opens.

    Example:
        >>> text = slicer_script(None, "../evil", Path("a.nii.gz"), Path("a.ctbl"), "a", 0.4)
        >>> compile(text, "a_slicer.py", "exec") is not None, "SERIES_UID = None" in text
        (True, True)
    """
    series_uid = series_uid if isinstance(series_uid, str) and _UID.match(series_uid) else None
    folder = Path(overlay).parent
    relative = None
    if scan is not None:
        try:
            relative = os.path.relpath(scan, folder)
        except ValueError:  # another drive (Windows)
            relative = None
    return f'''"""Show a ClusCAM overlay over its scan in 3D Slicer.

Run: Slicer --python-script <this file>, or paste into Slicer's Python console (View > Python Console):
path = r"<this file>"; exec(open(path).read(), {{"__file__": path}})
"""

import os

import slicer

HERE = os.path.dirname(os.path.abspath(globals().get("__file__") or {str(folder / "_")!r}))
SCAN_RELATIVE = {relative!r}  # from this script's folder
SCAN_ABSOLUTE = {scan!r}  # where the scan was when the overlay was written
SERIES_UID = {series_uid!r}
OVERLAY = os.path.join(HERE, {Path(overlay).name!r})
COLOR_TABLE = os.path.join(HERE, {Path(color_table).name!r})
NAME = {name!r}
OPACITY = {float(opacity)!r}


def find_scan():
    """The scan's path: relative to this script's folder, else where it was; None when neither exists."""
    for path in (SCAN_RELATIVE and os.path.join(HERE, SCAN_RELATIVE), SCAN_ABSOLUTE):
        if path and os.path.exists(path):
            return os.path.normpath(path)
    return None


def load_scan():
    """Load the scan: a DICOM series through Slicer's DICOM database, any other file directly."""
    scan = find_scan()
    if scan is None:
        return None
    if SERIES_UID and os.path.isdir(scan):
        from DICOMLib import DICOMUtils

        with DICOMUtils.TemporaryDICOMDatabase() as database:
            DICOMUtils.importDicom(scan, database)
            node_ids = DICOMUtils.loadSeriesByUID([SERIES_UID])
        return slicer.mrmlScene.GetNodeByID(node_ids[0]) if node_ids else None
    return slicer.util.loadVolume(scan)


if not os.path.exists(OVERLAY):
    raise FileNotFoundError(f"{{OVERLAY}} is not beside this script; keep the script in its output folder.")
scan_node = load_scan()
overlay_node = slicer.util.loadVolume(OVERLAY, properties={{"name": NAME}})
color_node = slicer.util.loadColorTable(COLOR_TABLE)
display = overlay_node.GetDisplayNode()
display.SetAndObserveColorNodeID(color_node.GetID())
display.AutoWindowLevelOff()
display.SetWindowLevelMinMax(0.0, 1.0)
if scan_node is None:
    slicer.util.setSliceViewerLayers(background=overlay_node, fit=True)
else:
    slicer.util.setSliceViewerLayers(
        background=scan_node, foreground=overlay_node, foregroundOpacity=OPACITY, fit=True
    )
'''
