"""load_image on NIfTI and pictures, and the NIfTI writer."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
import torch
from io_helpers import oblique_affine
from monai.data import MetaTensor
from monai.transforms import LoadImage
from PIL import Image

from monai_cluscam.io import PICTURE_AFFINE, decode_picture, load_image, write_nifti


def test_oblique_nifti_matches_monai_loader(tmp_path):
    affine = oblique_affine()
    data = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    path = write_nifti(data, affine, tmp_path / "t1.nii.gz")
    header = nib.load(path).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    image = load_image(path)
    reference = LoadImage(image_only=True, ensure_channel_first=True)(path)
    assert tuple(image.shape) == (1, 5, 6, 7)
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-6)
    np.testing.assert_allclose(image.affine.numpy(), reference.affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(image.numpy(), reference.numpy())
    assert image.meta["filename_or_obj"] == str(path)
    assert list(image.meta["spatial_shape"]) == [5, 6, 7] and image.meta["space"] == "RAS"


def test_qform_only_nifti_uses_qform(tmp_path):
    affine = oblique_affine()
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None)
    img.set_qform(affine, code=1)
    img.set_sform(np.eye(4), code=0)
    nib.save(img, tmp_path / "q.nii")
    np.testing.assert_allclose(load_image(tmp_path / "q.nii").affine.numpy(), affine, atol=1e-5)


def test_nifti_without_geometry_codes_warns(tmp_path):
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "bare.nii")
    with pytest.warns(UserWarning, match="neither sform nor qform"):
        load_image(tmp_path / "bare.nii")


def test_4d_nifti_becomes_channels(tmp_path):
    path = write_nifti(np.zeros((3, 4, 5, 2)), np.eye(4), tmp_path / "dwi.nii.gz")
    assert tuple(load_image(path).shape) == (2, 3, 4, 5)


def test_corrupt_and_singular_nifti(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage that is not gzip")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        load_image(tmp_path / "bad.nii.gz")
    header = nib.Nifti1Header()
    header.set_data_shape((2, 2, 2))
    header.set_data_dtype(np.float32)
    header["sform_code"] = 1
    header["srow_x"], header["srow_y"], header["srow_z"] = [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), None, header), tmp_path / "s.nii")
    assert int(nib.load(tmp_path / "s.nii").header["sform_code"]) == 1
    with pytest.raises(ValueError, match="singular"):
        load_image(tmp_path / "s.nii")


def test_write_nifti_refuses_overwrite(tmp_path):
    path = write_nifti(np.ones((2, 2, 2)), np.eye(4), tmp_path / "a.nii")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_nifti(np.zeros((2, 2, 2)), np.eye(4), path)
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match=".nii"):
        write_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "a.img")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_png_layout_and_affine(tmp_path):
    pixels = np.zeros((12, 10), np.uint8)  # 12 rows (height), 10 columns (width)
    pixels[2, 7] = 255
    Image.fromarray(pixels).save(tmp_path / "slice.png")
    image = load_image(tmp_path / "slice.png")
    reference = LoadImage(image_only=True, ensure_channel_first=True)(tmp_path / "slice.png")
    assert tuple(image.shape) == tuple(reference.shape) == (1, 10, 12)  # (width, height) like PILReader
    np.testing.assert_array_equal(image.numpy(), reference.numpy())
    assert image[0, 7, 2] == 255
    np.testing.assert_array_equal(image.affine.numpy(), PICTURE_AFFINE)


def test_jpeg_and_grey_stored_as_rgb(tmp_path):
    grey = np.tile(np.arange(16, dtype=np.uint8) * 16, (8, 1))
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    assert tuple(load_image(tmp_path / "rgb.png").shape) == (1, 16, 8)
    Image.fromarray(grey).save(tmp_path / "g.jpg", quality=95)
    assert tuple(load_image(tmp_path / "g.jpg").shape) == (1, 16, 8)


def test_decode_picture_matches_file(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 255, (9, 7), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    (tmp_path / "p.png").write_bytes(buffer.getvalue())
    decoded = decode_picture(buffer.getvalue(), name="p")
    np.testing.assert_array_equal(decoded.numpy(), load_image(tmp_path / "p.png").numpy())
    with pytest.raises(ValueError, match="bytes"):
        decode_picture(b"")


def test_bad_pictures_and_formats(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="broken.png.*not a readable PNG/JPEG"):
        load_image(tmp_path / "broken.png")
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported format"):
        load_image(tmp_path / "table.csv")
    with pytest.raises(TypeError):
        load_image(42)


def test_meta_tensor_passes_through():
    tensor = MetaTensor(torch.zeros(1, 4, 4))
    assert load_image(tensor) is tensor
