"""The DICOM objects of one explanation: the Parametric Map of the map and the RGB Secondary Capture series that
shows it over the scan (built with highdicom), both in the scan's Study and Frame of Reference."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.valuerep import format_number_as_ds

from .dicom_source import Source, anatomy, fit, geometry
from .preview import colour_bar, heat_colormap

__all__ = ["CAPTION", "parametric_map", "secondary_captures", "set_identity"]

CAPTION = "Research explanation - not for diagnosis"
"""Burned into every Secondary Capture image (and stored in its ImageComments)."""

_MAX_ALPHA = 0.65
_MIN_CAPTURE_WIDTH = 256  # pixels: the caption and the colour bar stay legible on small matrices
_BAND = 40  # pixels below the image for the colour bar (26) and the caption
_SERIES_NUMBERS = {"parametric_map": 9001, "secondary_capture": 9002}


def _frames_along_the_normal(pm: Dataset) -> None:
    """Store the frames ascending along the slice normal (row x column direction), the order that readers which
    stack frames in file order (dcmqi, and so 3D Slicer's loader) assume; highdicom sorts them the other way
    (along column x row). Each frame keeps its own position and dimension index, so the object stays the same."""
    items = list(pm.PerFrameFunctionalGroupsSequence)
    orientation = np.asarray(
        pm.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64
    )
    normal = np.cross(orientation[:3], orientation[3:])
    heights = [float(np.asarray(i.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64) @ normal)
               for i in items]
    if len(items) < 2 or heights[0] < heights[-1]:
        return
    frames = np.frombuffer(pm.FloatPixelData, dtype="<f4").reshape(len(items), int(pm.Rows), int(pm.Columns))
    pm.FloatPixelData = np.ascontiguousarray(frames[::-1]).tobytes()
    pm.PerFrameFunctionalGroupsSequence = items[::-1]


def parametric_map(
    hd, source: Source, data: np.ndarray, method: dict[str, str], identity: dict, body_part: str, version: str
) -> Dataset:
    """The Parametric Map of ``data`` (on the scan's grid) with the method's identification (``version``: the
    package's)."""
    orientation, spacing, step = geometry(source)
    label = method["method"]
    part, region = anatomy(hd, source, body_part)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ATTRIBUTION",
        lut_explanation=fit(f"{label} attribution: 0 none to 1 most, where the model looked",
                             "attribution: 0 none to 1 most, where the model looked"),
        unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
        value_range=(float(data.min()), float(data.max())),
        slope=1.0,
        intercept=0.0,
    )
    pm = hd.pm.ParametricMap(
        source_images=source.slices,
        pixel_array=np.transpose(data, (2, 1, 0)).astype(np.float32),  # (slices, rows, columns)
        series_instance_uid=hd.UID(),
        series_number=_SERIES_NUMBERS["parametric_map"],
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="monai-cluscam",
        manufacturer_model_name=fit(label, label),
        software_versions=version,
        device_serial_number="none",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label="ATTRIBUTION",
        content_description=fit(f"{label} explanation (research, not for diagnosis)",
                                 "explanation (research, not for diagnosis)"),
        content_creator_name="monai-cluscam^",
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=spacing, slice_thickness=step, spacing_between_slices=step
        ),
        plane_orientation=hd.PlaneOrientationSequence("PATIENT", orientation),
        plane_positions=[hd.PlanePositionSequence("PATIENT", list(ds.ImagePositionPatient)) for ds in source.slices],
        series_description=fit(f"{label} attribution map", "attribution map"),
    )
    pm.BodyPartExamined = part
    frame_anatomy = Dataset()  # the Frame Anatomy functional group (type 1 in the Parametric Map IOD)
    frame_anatomy.AnatomicRegionSequence = [region]
    frame_anatomy.FrameLaterality = "U"
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [frame_anatomy]
    _frames_along_the_normal(pm)
    # the Algorithm Identification macro, in the standard attribute that names a derived image's algorithm
    pm.DerivationAlgorithmSequence = hd.AlgorithmIdentificationSequence(
        name=fit(label, label),
        family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
        version=version,
        source="monai-cluscam",
        parameters={key: value for key, value in method.items() if key != "method"} or None,
    )
    set_identity(pm, identity)
    return pm


def _patient_orientation(direction: np.ndarray) -> str:
    """The DICOM patient-orientation letter of a direction in LPS (its dominant axis)."""
    axis = int(np.argmax(np.abs(direction)))
    return ("LR", "PA", "HF")[axis][0 if direction[axis] > 0 else 1]


def _band(width: int, label: str) -> Image.Image:
    """The package's 0-1 colour bar and, under it, the caption: the strip under each captured image."""
    bar = colour_bar(width)
    band = Image.new("RGB", (width, _BAND), (0, 0, 0))
    band.paste(bar, (0, 0))
    ImageDraw.Draw(band).text(
        (4, bar.height), f"{CAPTION} ({label})", fill=(255, 255, 255), font=ImageFont.load_default()
    )
    return band


def _captures(source: Source, data: np.ndarray, label: str) -> tuple[np.ndarray, int]:
    """RGB images ``(slices, rows', columns', 3)`` of the map blended over the scan, and the upscaling factor."""
    scan = np.transpose(source.volume, (2, 1, 0)).astype(np.float32)  # (slices, rows, columns)
    heat = np.clip(np.transpose(data, (2, 1, 0)), 0.0, 1.0)
    lo, hi = np.percentile(scan, [0.5, 99.5])
    grey = 0.85 * np.clip((scan - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    colours = heat_colormap(256).astype(np.float32)[np.round(heat * 255).astype(int)] / 255.0
    alpha = _MAX_ALPHA * heat[..., None]
    rgb = np.round(255 * (grey[..., None] * (1 - alpha) + colours * alpha)).astype(np.uint8)
    rows, columns = rgb.shape[1:3]
    factor = max(1, -(-_MIN_CAPTURE_WIDTH // columns))
    band = _band(columns * factor, label)
    pictures = []
    for plane in rgb:
        canvas = Image.new("RGB", (columns * factor, rows * factor + _BAND))
        canvas.paste(Image.fromarray(plane).resize((columns * factor, rows * factor), Image.Resampling.BILINEAR))
        canvas.paste(band, (0, rows * factor))
        pictures.append(np.asarray(canvas))
    return np.stack(pictures), factor


def _ds(values) -> list[str]:
    """Numbers as DICOM decimal strings of at most 16 characters."""
    return [format_number_as_ds(float(v)) for v in values]


def secondary_captures(
    hd, source: Source, data: np.ndarray, label: str, identity: dict, body_part: str
) -> list[Dataset]:
    """One RGB Secondary Capture per scan slice: the scan with the map blended in, the colour bar and the caption,
    each pixel where the scan's pixel is."""
    orientation, (row_spacing, column_spacing), step = geometry(source)
    along_row, along_column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    pictures, factor = _captures(source, data, label)
    # upscaling by `factor` keeps pixel centres on the scan's grid: the first one moves half a pixel less a
    # half of a new pixel towards the corner
    shift = (0.5 / factor - 0.5) * (column_spacing * along_row + row_spacing * along_column)
    series_uid = hd.UID()
    part, _ = anatomy(hd, source, body_part)
    captures = []
    for index, (picture, ref) in enumerate(zip(pictures, source.slices, strict=True)):
        sc = hd.sc.SCImage(
            pixel_array=picture,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=identity["StudyInstanceUID"],
            series_instance_uid=series_uid,
            series_number=_SERIES_NUMBERS["secondary_capture"],
            sop_instance_uid=hd.UID(),
            instance_number=index + 1,
            manufacturer="monai-cluscam",
            pixel_spacing=(row_spacing / factor, column_spacing / factor),
            patient_orientation=(_patient_orientation(along_row), _patient_orientation(along_column)),
            series_description=fit(f"{label} overlay (research, not for diagnosis)",
                                    "overlay (research, not for diagnosis)"),
        )
        sc.PixelSpacing = _ds((row_spacing / factor, column_spacing / factor))
        sc.ImagePositionPatient = _ds(np.asarray(ref.ImagePositionPatient, dtype=np.float64) + shift)
        sc.ImageOrientationPatient = _ds(orientation)
        sc.FrameOfReferenceUID = ref.FrameOfReferenceUID
        sc.PositionReferenceIndicator = ""
        sc.SliceThickness = _ds([step])[0]
        sc.BodyPartExamined = part
        sc.BurnedInAnnotation = "YES"
        sc.ImageComments = CAPTION
        item = Dataset()
        item.ReferencedSOPClassUID = ref.SOPClassUID
        item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        sc.SourceImageSequence = [item]
        set_identity(sc, identity)
        captures.append(sc)
    return captures


def set_identity(ds: Dataset, identity: dict) -> None:
    """Give a derived object the scan's patient and study identity."""
    for keyword, value in identity.items():
        setattr(ds, keyword, value)
