"""monai_cluscam.deploy without the SDK: the package imports, the operator says what to install, and the conversion
of a (slices, rows, columns) volume with the SDK's metadata keys onto the series' grid. The SDK itself is tested
in test_deploy_app.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from monai_cluscam.deploy import ClusCAMOperator, image_to_metatensor, link_series
from monai_cluscam.io import load_image, read_dicom, write_dicom_series
from monai_cluscam.io._geometry import LPS_TO_RAS

SHAPE = (9, 7, 5)  # columns, rows, slices


class _ArrayImage:
    """The two methods of the SDK's ``Image`` that the conversion uses (the SDK's class is a plain holder of an
    array and a dict): ``asnumpy()`` and ``metadata()``."""

    def __init__(self, array: np.ndarray, metadata: dict | None = None) -> None:
        self._array, self._metadata = array, metadata or {}

    def asnumpy(self) -> np.ndarray:
        return self._array

    def metadata(self) -> dict:
        return self._metadata


def _sdk_installed() -> bool:
    try:
        return importlib.util.find_spec("monai.deploy.core") is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture
def series(tmp_path):
    affine = np.diag([-1.25, 0.8, 2.5, 1.0])  # non-square pixels, a flipped axis
    affine[:3, 3] = [30.0, -12.0, 7.0]
    volume = np.random.default_rng(2).random(SHAPE) * 100
    write_dicom_series(volume, affine, tmp_path / "series", shuffle_names=True, seed=4)
    stacked = np.transpose(load_image(tmp_path / "series")[0].numpy(), (2, 1, 0))  # (slices, rows, columns)
    return tmp_path / "series", stacked


def _sdk_affine(folder) -> np.ndarray:
    """An LPS affine with the first slice's origin, as the SDK's dicom_affine_transform holds it."""
    return LPS_TO_RAS @ read_dicom(folder)[1]


@pytest.mark.skipif(_sdk_installed(), reason="the MONAI Deploy App SDK is installed")
def test_operator_without_the_sdk_names_the_extra(tmp_path):
    with pytest.raises(ImportError, match=r"monai-cluscam\[deploy\]"):
        ClusCAMOperator(None, bundle=tmp_path, output_folder=tmp_path)


def test_volume_in_series_order_becomes_the_loaders_tensor(series):
    folder, stacked = series
    tensor = image_to_metatensor(_ArrayImage(stacked, {"dicom_affine_transform": _sdk_affine(folder)}), folder)
    expected = load_image(folder)
    np.testing.assert_allclose(tensor.numpy(), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(tensor.affine.numpy(), expected.affine.numpy(), atol=1e-6)
    assert tensor.meta["original_channel_dim"] == 0 and tuple(tensor.meta["spatial_shape"]) == SHAPE


def test_volume_stacked_from_the_last_slice_is_turned_round(series):
    folder, stacked = series
    sdk = _sdk_affine(folder)
    sdk[:3, 3] += (SHAPE[2] - 1) * sdk[:3, 2]  # the metadata says: stacked from the last slice
    tensor = image_to_metatensor(_ArrayImage(stacked[::-1].copy(), {"dicom_affine_transform": sdk}), folder)
    np.testing.assert_allclose(tensor.numpy(), load_image(folder).numpy(), atol=1e-4)
    # without metadata the pixels decide
    tensor = image_to_metatensor(_ArrayImage(stacked[::-1].copy()), folder)
    np.testing.assert_allclose(tensor.numpy(), load_image(folder).numpy(), atol=1e-4)


def test_refuses_an_image_of_another_series(series):
    folder, stacked = series
    sdk = _sdk_affine(folder)
    sdk[:3, 3] += [0.0, 0.0, 40.0]
    with pytest.raises(ValueError, match="do not belong together"):
        image_to_metatensor(_ArrayImage(stacked, {"dicom_affine_transform": sdk}), folder)
    with pytest.raises(ValueError, match="not the size of the series"):
        image_to_metatensor(_ArrayImage(stacked[:, :, :-1]), folder)
    with pytest.raises(ValueError, match="one \\(slices, rows, columns\\) volume"):
        image_to_metatensor(_ArrayImage(stacked[0]), folder)
    with pytest.raises(ValueError, match="2D images but the series has 5 slices"):
        image_to_metatensor(_ArrayImage(stacked), folder, spatial_dims=2)


def test_one_slice_for_a_2d_model(tmp_path):
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    write_dicom_series(np.random.default_rng(3).random((6, 8, 1)) * 10, affine, tmp_path / "one")
    stacked = np.transpose(load_image(tmp_path / "one")[0].numpy(), (2, 1, 0))
    tensor = image_to_metatensor(_ArrayImage(stacked), tmp_path / "one", spatial_dims=2)
    assert tuple(tensor.shape) == (1, 6, 8) and tensor.affine.shape == (4, 4)


def test_link_series_holds_exactly_the_given_instances(series, tmp_path):
    import pydicom

    folder, _ = series
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())][:3]
    linked = link_series(datasets, tmp_path / "linked")
    assert sorted(pydicom.dcmread(p).SOPInstanceUID for p in linked.iterdir()) == sorted(
        ds.SOPInstanceUID for ds in datasets)
    in_memory = pydicom.dcmread(sorted(folder.iterdir())[0])
    in_memory.filename = None  # a dataset with no file is written out
    written = link_series([in_memory], tmp_path / "written")
    assert pydicom.dcmread(next(written.iterdir())).SOPInstanceUID == in_memory.SOPInstanceUID
    with pytest.raises(ValueError, match="no SOP instances"):
        link_series([], tmp_path / "empty")
