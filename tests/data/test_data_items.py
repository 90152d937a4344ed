"""Item lists of any data set (images under folders, class weights, a fixed set per class) and phantom data sets
made in memory: the general helpers the bundles' configs use from the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from monai_cluscam.data import (
    CLASS_NAMES,
    UNLABELLED,
    LoadPhantomd,
    class_weights,
    image_items,
    per_class,
    phantom_items,
)
from monai_cluscam.io import write_nifti


def test_phantom_items_and_load_phantomd():
    items = phantom_items(n_per_class=1, seed=1, shapes=(24, 32))
    assert [i["label"] for i in items] == [0, 1, 2, 3] * 2 and [i["shape"] for i in items] == [24] * 4 + [32] * 4
    assert len({i["seed"] for i in items + phantom_items(n_per_class=1, seed=2, shapes=(24, 32))}) == 16
    assert items == phantom_items(n_per_class=1, seed=1, shapes=(24, 32))
    volume = LoadPhantomd()(items[5])["image"]
    assert volume.shape == (1, 32, 32, 32) and np.allclose(volume.affine[0, 0], 6.0)
    assert torch.equal(volume, LoadPhantomd()(items[5])["image"]), "phantoms are deterministic"


def test_image_items_label_from_class_folders(tmp_path):
    (tmp_path / "images" / "Mild_Demented").mkdir(parents=True)
    write_nifti(np.zeros((4, 4, 4)), np.eye(4), tmp_path / "images" / "Mild_Demented" / "a.nii.gz")
    write_nifti(np.zeros((4, 4, 4)), np.eye(4), tmp_path / "b.nii")
    found = image_items(tmp_path, CLASS_NAMES)
    assert sorted((Path(i["image"]).name, i["label"]) for i in found) == [("a.nii.gz", 0), ("b.nii", UNLABELLED)]
    with pytest.raises(FileNotFoundError, match="no NIfTI"):
        image_items(tmp_path / "missing", CLASS_NAMES)


def test_class_weights_and_per_class():
    weights = class_weights([{"label": c} for c in (0, 0, 0, 1, 2, 3)], num_classes=4)
    assert torch.allclose(weights, torch.tensor([0.5, 1.5, 1.5, 1.5]))
    assert torch.allclose(
        class_weights([{"label": c} for c in (0, 0, 0, 1, 2, 3)], num_classes=4, power=0.5), weights.sqrt()
    )
    with pytest.raises(ValueError, match="every class"):
        class_weights([{"label": 0}], num_classes=4)
    items = [{"label": 1, "n": 0}, {"label": 0, "n": 1}, {"label": 1, "n": 2}, {"label": 1, "n": 3}]
    assert [i["n"] for i in per_class(items, 2, num_classes=2)] == [1, 0, 2]
