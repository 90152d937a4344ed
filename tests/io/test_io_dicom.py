"""DICOM writing and reading: oblique geometry, slice sorting, LPS/RAS, rescale, and every bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from io_helpers import oblique_affine
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from monai_cluscam.io import load_image, read_dicom, write_dicom_series

VOL = np.random.default_rng(0).normal(100.0, 30.0, size=(6, 7, 5))


def _rewrite(files, **changes):
    """Re-save DICOM files with some elements changed (None deletes) and validation relaxed."""
    old = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        for file in files:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(file)
                for keyword, value in changes.items():
                    tag = pydicom.datadict.tag_for_keyword(keyword)
                    if value is None:
                        del ds[tag]
                    else:
                        ds[tag] = DataElement(tag, pydicom.datadict.dictionary_VR(tag), value)
                ds.save_as(file)
    finally:
        config.settings.writing_validation_mode = old


def test_oblique_shuffled_round_trip(tmp_path):
    affine = oblique_affine(spacing=(0.9, 1.1, 2.5))
    files = write_dicom_series(VOL, affine, tmp_path, shuffle_names=True, seed=3)
    assert sorted(f.name for f in files) != [f.name for f in files]  # name order is not slice order
    image = load_image(tmp_path)
    assert tuple(image.shape) == (1, *VOL.shape)
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-6)
    np.testing.assert_allclose(image[0].numpy(), VOL, atol=0.01)  # int16 quantisation with rescale
    assert image.meta["space"] == "RAS"
    np.testing.assert_allclose(image.meta["original_affine"], affine, atol=1e-6)
    assert list(image.meta["spatial_shape"]) == list(VOL.shape)
    assert image.meta["filename_or_obj"] == str(tmp_path)


def test_lps_to_ras_on_axial_series(tmp_path):
    # axial RAS-oriented grid: DICOM must store LPS, i.e. x and y negated
    affine = np.diag([0.5, 0.7, 3.0, 1.0])
    affine[:3, 3] = [-30.0, 40.0, 5.0]
    files = write_dicom_series(VOL, affine, tmp_path)
    ds = pydicom.dcmread(files[0])
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], [-1, 0, 0, 0, -1, 0], atol=1e-9)
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [30.0, -40.0, 5.0])
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.7, 0.5])
    assert float(ds.SpacingBetweenSlices) == 3.0
    np.testing.assert_allclose(load_image(tmp_path).affine.numpy(), affine, atol=1e-9)


def test_reversed_slice_axis_keeps_world_positions(tmp_path):
    affine = oblique_affine()
    affine[:3, 2] *= -1  # third column against the in-plane normal: loader re-sorts along the normal
    write_dicom_series(VOL, affine, tmp_path)
    image = load_image(tmp_path)
    loaded = image.affine.numpy()
    for ijk in ([0, 0, 0], [5, 6, 4], [2, 3, 1]):
        k_loaded = VOL.shape[2] - 1 - ijk[2]
        np.testing.assert_allclose(loaded @ [ijk[0], ijk[1], k_loaded, 1], affine @ [*ijk, 1], atol=1e-6)
        assert abs(image[0, ijk[0], ijk[1], k_loaded].item() - VOL[tuple(ijk)]) < 0.01


def test_rescale_slope_intercept_applied(tmp_path):
    files = write_dicom_series(np.full((3, 3, 2), 7.0), np.eye(4), tmp_path, rescale=(0.5, -10.0))
    ds = pydicom.dcmread(files[0])
    assert ds.pixel_array[0, 0] == 34  # (7 - -10) / 0.5
    assert float(ds.RescaleSlope) == 0.5
    assert np.allclose(load_image(tmp_path).numpy(), 7.0)


def test_unique_sop_instance_uids_and_mr_storage(tmp_path):
    files = write_dicom_series(VOL, np.eye(4), tmp_path, series_description="T1 test", patient_id="P1")
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(files)
    assert {ds.SOPClassUID for ds in datasets} == {pydicom.uid.MRImageStorage}
    assert {ds.SeriesDescription for ds in datasets} == {"T1 test"}
    assert all(ds.PatientID == "P1" and ds.BitsAllocated == 16 for ds in datasets)


def test_long_decimal_strings_in_orientation(tmp_path):
    """IOP values longer than DICOM's 16-character DS limit must be parsed, not replaced by identity."""
    affine = oblique_affine(spacing=(0.9, 1.1, 2.5))
    files = write_dicom_series(VOL, affine, tmp_path)
    lps = np.diag([-1.0, -1, 1, 1]) @ affine
    iop = np.concatenate([lps[:3, 0] / 0.9, lps[:3, 1] / 1.1])
    text = "\\".join(f"{v:.17f}" for v in iop)
    assert max(len(part) for part in text.split("\\")) > 16
    _rewrite(files, ImageOrientationPatient=text)
    assert text.encode() in files[0].read_bytes()
    image = load_image(tmp_path)
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-6)
    single = load_image(files[0])
    np.testing.assert_allclose(single.affine.numpy()[:3, :2], affine[:3, :2], atol=1e-6)


def test_several_series_need_a_uid(tmp_path):
    write_dicom_series(VOL, np.eye(4), tmp_path, series_uid="1.2.3.4", series_description="first")
    write_dicom_series(2 * VOL, np.eye(4), tmp_path, series_uid="1.2.3.5", series_description="second")
    with pytest.raises(ValueError) as err:
        load_image(tmp_path)
    message = str(err.value)
    assert "1.2.3.4" in message and "1.2.3.5" in message and "'second'" in message and "5 files" in message
    assert "series_uid" in message
    second = load_image(tmp_path, series_uid="1.2.3.5")
    np.testing.assert_allclose(second[0].numpy(), 2 * VOL, atol=0.02)
    assert second.meta["SeriesInstanceUID"] == "1.2.3.5"
    with pytest.raises(ValueError, match="9.9.9"):
        load_image(tmp_path, series_uid="9.9.9")


@pytest.mark.parametrize("keyword", ["ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"])
def test_missing_geometry_is_refused(tmp_path, keyword):
    files = write_dicom_series(VOL, oblique_affine(), tmp_path)
    _rewrite(files[2:3], **{keyword: None})
    with pytest.raises(ValueError, match=keyword) as err:
        load_image(tmp_path)
    assert files[2].name in str(err.value)


def test_non_uniform_spacing_is_refused(tmp_path):
    files = write_dicom_series(VOL, np.eye(4), tmp_path)
    files[2].unlink()  # a missing slice
    with pytest.raises(ValueError, match="non-uniform slice spacing") as err:
        load_image(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_duplicate_positions_are_refused(tmp_path):
    write_dicom_series(VOL, np.eye(4), tmp_path / "a", series_uid="1.2.3")
    files = write_dicom_series(VOL, np.eye(4), tmp_path / "b", series_uid="1.2.3")
    files[0].rename(tmp_path / "a" / "extra.dcm")
    with pytest.raises(ValueError, match="same position"):
        load_image(tmp_path / "a")


def test_corrupt_and_foreign_files(tmp_path):
    files = write_dicom_series(VOL, np.eye(4), tmp_path / "series")
    (tmp_path / "series" / "notes.txt").write_text("not dicom")
    with pytest.raises(ValueError, match="notes.txt.*not a DICOM file"):
        load_image(tmp_path / "series")
    (tmp_path / "series" / "notes.txt").unlink()
    files[1].write_bytes(files[1].read_bytes()[:400])  # truncated
    with pytest.raises(ValueError, match=files[1].name):
        load_image(tmp_path / "series")


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no files"):
        load_image(tmp_path / "empty")


def test_single_2d_file(tmp_path):
    affine = oblique_affine()
    files = write_dicom_series(VOL, affine, tmp_path)
    image = load_image(files[3])
    assert tuple(image.shape) == (1, 6, 7)
    np.testing.assert_allclose(image.affine.numpy() @ [2, 5, 0, 1], affine @ [2, 5, 3, 1], atol=1e-6)
    np.testing.assert_allclose(image[0].numpy(), VOL[:, :, 3], atol=0.01)


def test_enhanced_multiframe_file(tmp_path):
    affine = oblique_affine()
    lps = np.diag([-1.0, -1, 1, 1]) @ affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = VOL.shape[1], VOL.shape[0], VOL.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    orient, measures = Dataset(), Dataset()
    orient.ImageOrientationPatient = [*(lps[:3, 0] / spacing[0]), *(lps[:3, 1] / spacing[1])]
    measures.PixelSpacing = [spacing[1], spacing[0]]
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orient]), Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    order = [3, 0, 4, 1, 2]  # frames stored out of order
    for k in order:
        frame, position = Dataset(), Dataset()
        position.ImagePositionPatient = list(lps[:3, 3] + k * lps[:3, 2])
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ints = np.round(VOL).astype(np.int16)
    ds.PixelData = np.stack([ints[:, :, k].T for k in order]).tobytes()
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    image = load_image(tmp_path / "enhanced.dcm")
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-5)
    np.testing.assert_array_equal(image[0].numpy(), ints)


def test_writer_rejects_bad_input(tmp_path):
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(ValueError, match="not orthogonal"):
        write_dicom_series(VOL, sheared, tmp_path)
    tilted = np.eye(4)
    tilted[0, 2] = 0.3
    with pytest.raises(ValueError, match="perpendicular"):
        write_dicom_series(VOL, tilted, tmp_path)
    with pytest.raises(ValueError, match="3D"):
        write_dicom_series(VOL[0], np.eye(4), tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        write_dicom_series(np.full((2, 2, 2), np.nan), np.eye(4), tmp_path)
    with pytest.raises(ValueError, match="outside int16"):
        write_dicom_series(VOL, np.eye(4), tmp_path, rescale=(0.001, 0.0))
    write_dicom_series(VOL, np.eye(4), tmp_path, series_uid="1.2.3")
    before = {f: f.read_bytes() for f in tmp_path.iterdir()}
    with pytest.raises(FileExistsError):
        write_dicom_series(2 * VOL, np.eye(4), tmp_path, series_uid="1.2.3")
    assert {f: f.read_bytes() for f in tmp_path.iterdir()} == before


def test_read_dicom_reports_slice_order(tmp_path):
    files = write_dicom_series(VOL, np.eye(4), tmp_path, shuffle_names=True, seed=1)
    _, _, meta = read_dicom(tmp_path)
    assert meta["dicom_files"] == [str(f) for f in files]
