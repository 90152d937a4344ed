"""DICOM overlays (Parametric Map + RGB Secondary Capture): attributes, geometry on oblique shuffled series,
2D and 3D non-DICOM inputs, privacy, and every bad input."""

from __future__ import annotations

import logging
import sys
import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from io_helpers import oblique_affine, phantom
from monai.data import MetaTensor
from monai.transforms import Compose, Orientation, Spacing
from PIL import Image
from pydicom.uid import ParametricMapStorage, SecondaryCaptureImageStorage

from monai_cluscam import __version__
from monai_cluscam.io import (
    DicomOverlayFiles,
    load_image,
    save_dicom_overlay,
    to_original_grid,
    write_dicom_series,
    write_nifti,
)
from monai_cluscam.io.dicom_export import CAPTION

SHAPE = (20, 18, 10)
BLOB = np.array([13, 5, 6])
AFFINE = oblique_affine(spacing=(1.1, 1.3, 2.2))
BLOB_RAS = (AFFINE @ np.r_[BLOB, 1.0])[:3]
METHOD = {"method": "ClusCAM", "layer": "layer4", "num_clusters": 10, "temperature": 0.5}
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])
SECRETS = {"InstitutionName": "St Example", "OperatorsName": "Smith^Op", "PatientAge": "071Y"}


def _read(path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _source(folder, volume=None, **extra):
    """An oblique series with shuffled file names, a patient, dates and attributes no derived series needs."""
    files = write_dicom_series(
        phantom(SHAPE, BLOB) if volume is None else volume,
        AFFINE,
        folder,
        shuffle_names=True,
        seed=1,
        patient_id="PAT-0042",
        patient_name="Doe^Jane",
    )
    for file in files:
        ds = _read(file)
        ds.PatientBirthDate, ds.StudyDate, ds.StudyTime = "19500101", "20260102", "101500"
        ds.AccessionNumber, ds.SeriesDescription = "ACC9", "../../etc/passwd"
        for keyword, value in {**SECRETS, **extra}.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.add_new(0x00091010, "LO", "private secret")
        ds.private_block(0x0009, "ACME", create=True).add_new(0x10, "LO", "private secret")
        ds.save_as(file)
    return files


def _blob_map(image: MetaTensor, world=BLOB_RAS, sigma_mm=3.0) -> MetaTensor:
    """A Gaussian map at a world position, on the (maybe preprocessed) grid of ``image``."""
    affine = np.asarray(image.affine, dtype=np.float64)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape[1:]], indexing="ij"), axis=-1)
    coords = np.concatenate([grid, np.zeros((*grid.shape[:-1], 3 - grid.shape[-1]))], axis=-1)
    world_grid = coords @ affine[:3, :3].T + affine[:3, 3]
    values = np.exp(-np.sum((world_grid - world) ** 2, axis=-1) / (2 * sigma_mm**2))
    return MetaTensor(torch.as_tensor(values[None], dtype=torch.float32), meta=dict(image.meta))


def _slice_geometry(ds):
    """(position, row direction, column direction, (row spacing, column spacing)) of a single-frame image."""
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    return np.asarray(ds.ImagePositionPatient, dtype=np.float64), iop[:3], iop[3:], np.asarray(ds.PixelSpacing, float)


def _sorted_sources(files):
    datasets = [_read(f) for f in files]
    _, row, col, _ = _slice_geometry(datasets[0])
    normal = np.cross(row, col)
    return sorted(datasets, key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, dtype=float)))


def _pm_peak_ras(path) -> np.ndarray:
    """World (RAS) position of the map's maximum, through highdicom's own geometry."""
    pm = hd.pm.ParametricMap.from_dataset(_read(path))
    volume = pm.get_volume()
    index = np.unravel_index(int(np.argmax(volume.array)), volume.array.shape)
    return (volume.affine @ np.r_[index, 1.0])[:3] * RAS_TO_LPS


def _sc_peak_ras(paths, rows: int) -> np.ndarray:
    """World (RAS) position of the reddest pixel (red minus blue: the heat colours have no blue) of a series."""
    best, where = -1.0, None
    for path in paths:
        ds = _read(path)
        rgb = ds.pixel_array[:rows].astype(np.float64)
        redness = rgb[..., 0] - rgb[..., 2]
        r, c = np.unravel_index(int(np.argmax(redness)), redness.shape)
        if redness[r, c] > best:
            position, row_dir, col_dir, (row_sp, col_sp) = _slice_geometry(ds)
            best, where = redness[r, c], position + c * col_sp * row_dir + r * row_sp * col_dir
    return where * RAS_TO_LPS


def _check_capture(ds, source, factor_rows):
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3 and ds.BitsAllocated == 8
    assert ds.BurnedInAnnotation == "YES" and ds.ImageComments == CAPTION
    for keyword in (
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "Modality",
        "ConversionType",
        "InstanceNumber",
        "PatientOrientation",
        "Rows",
        "Columns",
    ):
        assert keyword in ds, keyword
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    np.testing.assert_allclose(
        np.asarray(ds.ImageOrientationPatient, float), np.asarray(source.ImageOrientationPatient, float), atol=1e-6
    )
    caption = ds.pixel_array[factor_rows + 26 :]  # under the image and its colour bar
    assert (caption > 200).all(axis=-1).sum() > 100  # white text: the caption is burned in


@pytest.fixture(scope="module")
def oblique_export(tmp_path_factory):
    """A preprocessed (reoriented, resampled) image of an oblique shuffled series, explained and exported."""
    root = tmp_path_factory.mktemp("oblique")
    files = _source(root / "series")
    image = load_image(root / "series")
    prepared = Compose([Orientation(axcodes="RAS"), Spacing(pixdim=(1.5, 1.5, 1.5))])(image)
    cam = _blob_map(prepared)
    result = save_dicom_overlay(cam, prepared, root / "out", method_info=METHOD)
    return files, image, cam, result


def test_parametric_map_attributes_values_and_geometry(oblique_export):
    files, image, cam, result = oblique_export
    sources = _sorted_sources(files)
    ds = _read(result.parametric_map)
    assert ds.SOPClassUID == ParametricMapStorage and ds.Modality == "OT"
    for keyword in (
        "PatientID",
        "PatientName",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SeriesNumber",
        "InstanceNumber",
        "ContentLabel",
        "ContentQualification",
        "ImageType",
        "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence",
        "DimensionIndexSequence",
        "FloatPixelData",
        "NumberOfFrames",
        "Rows",
        "Columns",
        "ContentDate",
        "ContentTime",
    ):
        assert keyword in ds, keyword
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert ds.BitsAllocated == 32 and int(ds.NumberOfFrames) == SHAPE[2]
    shared = ds.SharedFunctionalGroupsSequence[0]
    mapping = shared.RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == "ATTRIBUTION" and "ClusCAM attribution" in mapping.LUTExplanation
    algorithm = ds.DerivationAlgorithmSequence[0]
    assert algorithm.AlgorithmName == "ClusCAM" and algorithm.AlgorithmVersion == __version__
    assert {"layer=layer4", "num_clusters=10", "temperature=0.5"} <= set(algorithm.AlgorithmParameters.split(","))
    # each frame sits where its source slice is, with the source's orientation and pixel spacing
    np.testing.assert_allclose(
        np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float),
        np.asarray(sources[0].ImageOrientationPatient, float),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(shared.PixelMeasuresSequence[0].PixelSpacing, float), np.asarray(sources[0].PixelSpacing, float)
    )
    # highdicom orders the frames itself; each names its source slice, and the values are the map brought back
    # to the scan's grid
    by_uid = {source.SOPInstanceUID: k for k, source in enumerate(sources)}
    expected = to_original_grid(cam)[0].numpy().transpose(2, 1, 0)
    frames = hd.pm.ParametricMap.from_dataset(ds).pixel_array
    seen = []
    for frame, values in zip(ds.PerFrameFunctionalGroupsSequence, frames, strict=True):
        k = by_uid[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose(
            np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float),
            np.asarray(sources[k].ImagePositionPatient, float),
            atol=1e-6,
        )
        np.testing.assert_allclose(values, expected[k], atol=1e-6)
        seen.append(k)
    assert sorted(seen) == list(range(SHAPE[2]))
    assert np.linalg.norm(_pm_peak_ras(result.parametric_map) - BLOB_RAS) < 1.5


def test_secondary_capture_series_lands_on_the_scan(oblique_export):
    files, image, cam, result = oblique_export
    sources = _sorted_sources(files)
    captures = [_read(p) for p in result.secondary_capture]
    assert len(captures) == SHAPE[2] and [ds.InstanceNumber for ds in captures] == list(range(1, SHAPE[2] + 1))
    assert len({ds.SeriesInstanceUID for ds in captures}) == 1
    others = (sources[0].SeriesInstanceUID, _read(result.parametric_map).SeriesInstanceUID)
    assert captures[0].SeriesInstanceUID not in others
    factor = captures[0].Columns // SHAPE[0]
    assert captures[0].Columns == SHAPE[0] * factor >= 256
    normal = np.cross(*_slice_geometry(captures[0])[1:3])
    heights = [float(normal @ _slice_geometry(ds)[0]) for ds in captures]
    assert heights == sorted(heights)  # anatomical order
    for ds, source in zip(captures, sources, strict=True):
        _check_capture(ds, source, SHAPE[1] * factor)
        # pixel centres of the upscaled image fall on the source's: source pixel (0, 0) is at
        # upscaled index (factor - 1) / 2 in both directions
        position, row_dir, col_dir, (row_sp, col_sp) = _slice_geometry(ds)
        centre = position + (factor - 1) / 2 * (col_sp * row_dir + row_sp * col_dir)
        np.testing.assert_allclose(centre, np.asarray(source.ImagePositionPatient, float), atol=1e-4)
        hd.imread(result.secondary_capture[0])  # highdicom reads it back
    assert np.linalg.norm(_sc_peak_ras(result.secondary_capture, SHAPE[1] * factor) - BLOB_RAS) < 1.5


def test_only_identity_is_copied_and_names_are_sanitised(oblique_export, tmp_path):
    files, image, cam, result = oblique_export
    assert result.folder.name == "series_ClusCAM_dicom" and result.scan == () and result.removed == ()
    assert result.paths == [result.parametric_map, *result.secondary_capture]
    source = _read(files[0])
    for path in [result.parametric_map, *result.secondary_capture]:
        ds = _read(path)
        for keyword in ("PatientID", "PatientName", "PatientBirthDate", "StudyDate", "AccessionNumber"):
            assert str(ds.get(keyword)) == str(source.get(keyword)), keyword
        assert not any(keyword in ds for keyword in SECRETS)
        assert not any(element.tag.is_private for element in ds)
        assert "passwd" not in str(ds.get("SeriesDescription"))
    # names come from `name` or the input's file name through safe_stem, never unsanitised
    again = save_dicom_overlay(cam, image, tmp_path, name="../../etc/evil name", secondary_capture=False)
    assert again.folder == tmp_path / "evil_name_ClusCAM_dicom"
    assert all(tmp_path in p.parents for p in again.paths)


def test_deidentified_output_drops_identity_and_says_what(tmp_path, caplog):
    files = _source(tmp_path / "series")
    image = load_image(tmp_path / "series")
    with caplog.at_level(logging.INFO, logger="monai_cluscam.io.dicom_export"):
        result = save_dicom_overlay(_blob_map(image), image, tmp_path / "out", deidentify=True)
    assert isinstance(result, DicomOverlayFiles) and len(result.scan) == SHAPE[2]
    assert {"PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber", "StudyInstanceUID"} <= set(
        result.removed
    )
    assert "PatientBirthDate" in caplog.text and "Doe" not in caplog.text
    source = _read(files[0])
    scan = _sorted_sources(result.scan)
    pm = _read(result.parametric_map)
    for ds in [*scan, pm, *(_read(p) for p in result.secondary_capture)]:
        assert str(ds.PatientName) == "" and ds.PatientID.startswith("ANON-") and ds.PatientID != "PAT-0042"
        assert not str(ds.get("PatientBirthDate", "")) and not str(ds.get("StudyDate", ""))
        assert not str(ds.get("AccessionNumber", ""))
        assert ds.StudyInstanceUID not in (source.StudyInstanceUID,) and ds.StudyInstanceUID == scan[0].StudyInstanceUID
        assert ds.FrameOfReferenceUID == scan[0].FrameOfReferenceUID != source.FrameOfReferenceUID
        assert not any(keyword in ds for keyword in SECRETS)
    assert len({ds.PatientID for ds in [*scan, pm]}) == 1
    # the same geometry as the original series
    positions = sorted(
        tuple(frame.PlanePositionSequence[0].ImagePositionPatient) for frame in pm.PerFrameFunctionalGroupsSequence
    )
    originals = sorted(tuple(ds.ImagePositionPatient) for ds in _sorted_sources(files))
    np.testing.assert_allclose(np.asarray(positions, float), np.asarray(originals, float), atol=1e-4)
    assert np.linalg.norm(_pm_peak_ras(result.parametric_map) - BLOB_RAS) < 1.5


def test_nifti_volume_is_written_as_dicom_too(tmp_path):
    path = write_nifti(phantom(SHAPE, BLOB), AFFINE, tmp_path / "t1 scan.nii.gz")
    image = load_image(path)
    result = save_dicom_overlay(_blob_map(image), image, tmp_path / "out", patient_id="P7", patient_name="Roe^R")
    assert result.folder.name == "t1_scan_ClusCAM_dicom" and len(result.scan) == SHAPE[2]
    scan = _sorted_sources(result.scan)
    assert {(ds.PatientID, str(ds.PatientName)) for ds in scan} == {("P7", "Roe^R")}
    reread = load_image(result.folder / "scan")
    np.testing.assert_allclose(reread[0].numpy(), image[0].numpy(), atol=0.02)
    pm = _read(result.parametric_map)
    assert pm.StudyInstanceUID == scan[0].StudyInstanceUID and pm.FrameOfReferenceUID == scan[0].FrameOfReferenceUID
    assert pm.PatientID == "P7"
    assert np.linalg.norm(_pm_peak_ras(result.parametric_map) - BLOB_RAS) < 1.5
    rows = _read(result.secondary_capture[0]).Columns // SHAPE[0] * SHAPE[1]
    assert np.linalg.norm(_sc_peak_ras(result.secondary_capture, rows) - BLOB_RAS) < 1.5


def test_png_slice_is_written_as_dicom_too(tmp_path):
    picture = np.zeros((30, 40), dtype=np.uint8)  # (rows, columns)
    picture[5:25, 5:35] = 90
    Image.fromarray(picture).save(tmp_path / "slice.png")
    image = load_image(tmp_path / "slice.png")  # (1, 40 columns, 30 rows), 1 mm pixels along LPS
    blob_world = (image.affine.numpy() @ np.array([28.0, 9.0, 0.0, 1.0]))[:3]
    result = save_dicom_overlay(_blob_map(image, world=blob_world, sigma_mm=2.0), image, tmp_path / "out")
    assert len(result.scan) == 1 and len(result.secondary_capture) == 1
    scan = _read(result.scan[0])
    assert scan.PatientID.startswith("MCC-")  # a pseudonym from the file, never one shared ID
    np.testing.assert_allclose(scan.pixel_array * float(scan.RescaleSlope) + float(scan.RescaleIntercept), picture)
    pm = _read(result.parametric_map)
    assert int(pm.NumberOfFrames) == 1 and (pm.Rows, pm.Columns) == (30, 40)
    values = hd.pm.ParametricMap.from_dataset(pm).pixel_array.reshape(30, 40)
    assert np.unravel_index(int(np.argmax(values)), values.shape) == (9, 28)
    capture = _read(result.secondary_capture[0])
    _check_capture(capture, scan, 30 * (capture.Columns // 40))
    assert np.linalg.norm(_sc_peak_ras(result.secondary_capture, 30 * (capture.Columns // 40)) - blob_world) < 1.0
    # a plain array takes its geometry from the image
    plain = _blob_map(image, world=blob_world, sigma_mm=2.0).numpy()
    again = save_dicom_overlay(plain, image, tmp_path / "plain", secondary_capture=False)
    np.testing.assert_array_equal(hd.pm.ParametricMap.from_dataset(_read(again.parametric_map)).pixel_array, values)


def test_bad_inputs_are_refused_with_the_way_out(tmp_path):
    _source(tmp_path / "series")
    image = load_image(tmp_path / "series")
    cam = _blob_map(image)
    with pytest.raises(ValueError, match="scan's DICOM folder"):
        save_dicom_overlay(cam, image, tmp_path / "series")
    with pytest.raises(ValueError, match="scan's DICOM folder"):
        save_dicom_overlay(cam, image, tmp_path / "series" / "overlays")
    assert not (tmp_path / "series" / "overlays").exists()
    nan = cam.clone()
    nan[0, 1, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN.*Explain the image again"):
        save_dicom_overlay(nan, image, tmp_path / "out")
    with pytest.raises(ValueError, match="one map at a time"):
        save_dicom_overlay(torch.cat([cam[None], cam[None]]), image, tmp_path / "out")
    other = MetaTensor(torch.rand(1, 8, 8, 4), affine=torch.eye(4), meta={"filename_or_obj": str(tmp_path / "series")})
    with pytest.raises(ValueError, match="not the scan's grid"):
        save_dicom_overlay(other, None, tmp_path / "out")
    save_dicom_overlay(cam, image, tmp_path / "out", parametric_map=False, secondary_capture=False)
    with pytest.raises(FileExistsError, match="already exists"):
        save_dicom_overlay(cam, image, tmp_path / "out")

    _source(tmp_path / "no_frame", FrameOfReferenceUID=None)
    image = load_image(tmp_path / "no_frame")
    cam = _blob_map(image)
    with pytest.raises(ValueError, match=r"no FrameOfReferenceUID \(0020,0052\).*deidentify=True"):
        save_dicom_overlay(cam, image, tmp_path / "out2")
    fixed = save_dicom_overlay(cam, image, tmp_path / "out2", deidentify=True, secondary_capture=False)
    assert _read(fixed.parametric_map).FrameOfReferenceUID == _read(fixed.scan[0]).FrameOfReferenceUID

    files = _source(tmp_path / "gap")
    image = load_image(tmp_path / "gap")
    files[4].unlink()  # a slice goes missing after the explanation
    with pytest.raises(ValueError, match="non-uniform slice spacing"):
        save_dicom_overlay(_blob_map(image), image, tmp_path / "out3")


def test_missing_highdicom_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(ImportError, match=r"monai-cluscam\[dicom\]"):
        save_dicom_overlay(MetaTensor(torch.rand(1, 4, 4, 2)), None, tmp_path)
