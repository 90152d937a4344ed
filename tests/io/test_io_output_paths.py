"""save_overlay refuses a NIfTI file name as its folder; load_image reads a (H, W, 1) NIfTI as 2D for 2D models."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_cluscam.io import load_image, save_overlay, write_nifti


@pytest.mark.parametrize("target", ["x.nii.gz", "x.nii", "X.NII.GZ"])
def test_save_overlay_refuses_a_nifti_file_name(tmp_path, target):
    cam = MetaTensor(torch.rand(1, 4, 4, 4), affine=torch.eye(4), meta={"filename_or_obj": "t1.nii.gz"})
    with pytest.raises(ValueError, match="names a NIfTI file, but a folder is expected"):
        save_overlay(cam, tmp_path / "out" / target, preview=False)
    assert not (tmp_path / "out").exists()  # no folder named like a file
    (tmp_path / "made.nii").mkdir()  # a folder that exists is a folder, whatever its name
    assert save_overlay(cam, tmp_path / "made.nii", preview=False)[0].nifti.parent == (tmp_path / "made.nii")


def test_a_nifti_slice_is_2d_for_a_2d_model(tmp_path):
    affine = np.array([[-0.9, 0, 0, 10.0], [0, -1.1, 0, -5.0], [0, 0, 3.0, 40.0], [0, 0, 0, 1]])
    data = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    path = write_nifti(data, affine, tmp_path / "slice.nii.gz")
    assert tuple(load_image(path).shape) == (1, 3, 4, 1)  # as stored by default
    image = load_image(path, spatial_dims=2)
    assert tuple(image.shape) == (1, 3, 4) and tuple(image.meta["spatial_shape"]) == (3, 4)
    np.testing.assert_array_equal(image[0].numpy(), data[..., 0])
    np.testing.assert_allclose(image.affine.numpy(), affine)
    np.testing.assert_allclose(image.meta["original_affine"], affine)
    # the overlay of the 2D image lands back on the file's (H, W, 1) grid
    cam = MetaTensor(torch.rand(1, 3, 4), meta={k: v for k, v in image.meta.items() if k != "affine"})
    cam.affine = image.affine
    files = save_overlay(cam, tmp_path / "o")
    written = nib.load(files[0].nifti)
    assert written.shape == (3, 4, 1)
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    # volumes stay 3D; a slice whose plane is not axial cannot be placed by a 2D model
    volume = write_nifti(np.zeros((3, 4, 2), np.float32), affine, tmp_path / "volume.nii.gz")
    assert tuple(load_image(volume, spatial_dims=2).shape) == (1, 3, 4, 2)
    coronal = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    sideways = write_nifti(data, coronal, tmp_path / "coronal.nii.gz")
    with pytest.raises(ValueError, match="not axial"):
        load_image(sideways, spatial_dims=2)
