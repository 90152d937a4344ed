"""From a file on disk to an overlay on the scan's grid: reading, explaining and exporting meet."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from PIL import Image
from toy_models import RegionClassifier

from monai_cluscam import ClusCAM
from monai_cluscam.io import load_image, save_overlay


def test_png_slice_to_overlay(tmp_path):
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[8:24, 8:24] = 200  # bright square in the evidence region (top-left: rows and columns < 32)
    pixels[40:56, 40:56] = 200
    path = tmp_path / "slice_Mild_Demented.png"
    Image.fromarray(pixels).save(path)
    original_bytes = path.read_bytes()

    image = load_image(path)
    maps = ClusCAM(RegionClassifier(2).eval(), "features", num_clusters=6)(image[None] / 255.0, class_idx=1)
    files = save_overlay(maps, tmp_path / "out", image=image)

    assert len(files) == 1 and files[0].nifti.name == "slice_Mild_Demented_cluscam.nii.gz"
    overlay = nib.load(files[0].nifti)
    assert np.allclose(overlay.affine, np.asarray(image.affine))
    data = np.asarray(overlay.dataobj)[..., 0]
    assert data.shape == tuple(image.shape[1:])
    # the overlay's peak sits on the square the classifier uses, in the image's own (width, height) layout
    col, row = np.unravel_index(int(np.argmax(data)), data.shape)
    assert 8 <= row < 24 and 8 <= col < 24
    assert torch.equal(torch.as_tensor(data), maps[0, 0].as_tensor())
    assert path.read_bytes() == original_bytes
