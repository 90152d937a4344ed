"""Reading MRI as clinics store it (NIfTI, DICOM series, PNG/JPEG slices), exporting ClusCAM overlays and sending
them to a PACS.

Every reader returns geometry as MONAI does: a channel-first ``MetaTensor`` whose ``affine`` maps voxel
indices to RAS+ world millimetres. Writers keep that geometry so overlays land exactly on the scan.
"""

from __future__ import annotations

from .dicom import read_dicom
from .dicom_export import DicomOverlayFiles, save_dicom_overlay
from .dicom_write import write_dicom_series
from .export import OverlayFiles, save_overlay
from .loading import PICTURE_AFFINE, decode_picture, load_image
from .nifti import read_nifti, write_nifti
from .pacs import PacsDestination, PacsError, SendReport, send_dicom
from .preview import heat_colormap, overlay_preview
from .resample import to_original_grid
from .slicer import write_color_table

__all__ = [
    "DicomOverlayFiles",
    "OverlayFiles",
    "PICTURE_AFFINE",
    "PacsDestination",
    "PacsError",
    "SendReport",
    "decode_picture",
    "heat_colormap",
    "load_image",
    "overlay_preview",
    "read_dicom",
    "read_nifti",
    "save_dicom_overlay",
    "save_overlay",
    "send_dicom",
    "to_original_grid",
    "write_color_table",
    "write_dicom_series",
    "write_nifti",
]
