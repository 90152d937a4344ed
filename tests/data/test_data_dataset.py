"""Phantom files: NIfTI/PNG/DICOM written, re-read with their geometry, datasets reproducible, errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_cluscam.data import CLASS_NAMES, alzheimer_items, make_phantom, make_phantom_dataset, save_phantom
from monai_cluscam.io import load_image


def _world_of_mask(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    voxels = np.argwhere(mask != 0)
    return (affine @ np.c_[voxels, np.ones(len(voxels))].T)[:3].T


@pytest.mark.parametrize(("kind", "shape"), [("volume", (36, 40, 32)), ("slice", (64, 48))], ids=["volume", "slice"])
def test_nifti_files_reread_with_nibabel_in_the_same_world_position(tmp_path, kind, shape):
    items = make_phantom_dataset(tmp_path, n_per_class=1, kind=kind, fmt="nifti", seed=5, shape=shape)
    assert [item["label"] for item in items] == [0, 1, 2, 3]
    for item in items:
        p = make_phantom(item["label"], item["seed"], kind=kind, shape=shape)
        assert item["class_name"] == CLASS_NAMES[item["label"]] == p.class_name
        assert f"/images/{p.class_name}/" in item["image"]
        image, mask, brain = (nib.load(item[key]) for key in ("image", "mask", "brain_mask"))
        spatial = shape if kind == "volume" else (*shape, 1)
        assert image.shape == mask.shape == spatial
        assert image.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
        for img in (image, mask, brain):
            np.testing.assert_allclose(img.affine, p.affine, atol=1e-5)
            assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
            np.testing.assert_allclose(img.get_qform(), p.affine, atol=1e-4)
        np.testing.assert_array_equal(image.get_fdata(dtype=np.float32).reshape(p.image.shape), p.image)
        np.testing.assert_array_equal(np.asarray(mask.dataobj).reshape(p.mask.shape), p.mask)
        np.testing.assert_array_equal(np.asarray(brain.dataobj).reshape(p.brain_mask.shape), p.brain_mask)
        region = nib.load(item["region_mask"])
        assert f"/region_masks/{p.class_name}/" in item["region_mask"] and region.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(region.dataobj).reshape(p.region_mask.shape), p.region_mask)
        np.testing.assert_allclose(region.affine, p.affine, atol=1e-5)
        file_world = _world_of_mask(np.asarray(mask.dataobj), mask.affine)
        if p.severity == 0:
            assert len(file_world) == 0
        else:
            assert len(file_world) > 0
            mni = (p.pose @ np.c_[file_world, np.ones(len(file_world))].T)[:3]
            assert np.all(np.abs(mni[0]) < 55) and np.all(mni[2] < 50)  # around ventricles and hippocampi


def test_same_seed_writes_the_same_dataset_and_another_seed_does_not(tmp_path):
    first = make_phantom_dataset(tmp_path / "a", n_per_class=1, kind="slice", shape=32, seed=9)
    again = make_phantom_dataset(tmp_path / "b", n_per_class=1, kind="slice", shape=32, seed=9)
    other = make_phantom_dataset(tmp_path / "c", n_per_class=1, kind="slice", shape=32, seed=10)
    manifest = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert manifest == json.loads((tmp_path / "b" / "dataset.json").read_text())
    assert manifest["items"][0]["image"] == "images/Mild_Demented/phantom_0000.nii.gz"
    assert (manifest["kind"], manifest["fmt"], manifest["shape"]) == ("slice", "nifti", [32, 32])
    for a, b, c in zip(first, again, other, strict=True):
        for key in ("image", "mask", "brain_mask"):
            with open(a[key], "rb") as fa, open(b[key], "rb") as fb:
                assert fa.read() == fb.read()
        assert a["seed"] == b["seed"] != c["seed"]
    assert len({item["seed"] for item in first}) == 4


def test_png_slices_read_back_in_picture_order(tmp_path):
    items = make_phantom_dataset(tmp_path, n_per_class=1, kind="slice", fmt="png", seed=1, shape=(48, 40))
    for item in items:
        p = make_phantom(item["label"], item["seed"], kind="slice", shape=(48, 40))
        picture = np.asarray(Image.open(item["image"]))
        assert picture.shape == (40, 48) and picture.dtype == np.uint8  # rows = height
        loaded = load_image(item["image"])
        assert tuple(loaded.shape) == (1, 48, 40)
        np.testing.assert_allclose(loaded.numpy(), p.image / p.image.max() * 255, atol=0.5 + 1e-4)
        np.testing.assert_array_equal(np.asarray(Image.open(item["mask"])).T, p.mask[0])
        np.testing.assert_array_equal(np.asarray(Image.open(item["brain_mask"])).T, p.brain_mask[0])
    found = alzheimer_items(tmp_path / "images")
    assert sorted((item["label"], item["image"]) for item in found) == sorted(
        (item["label"], item["image"]) for item in items
    )


@pytest.mark.parametrize(("kind", "shape"), [("volume", (24, 28, 20)), ("slice", (40, 40))], ids=["volume", "slice"])
def test_dicom_series_reread_with_the_phantom_geometry(tmp_path, kind, shape):
    p = make_phantom("Moderate_Demented", seed=2, kind=kind, shape=shape)
    paths = save_phantom(p, tmp_path, "case01", fmt="dicom")
    assert paths["image"].is_dir() and len(list(paths["image"].glob("*.dcm"))) == (shape[2] if kind == "volume" else 1)
    assert paths["mask"].name == "case01_mask.nii.gz"
    loaded = load_image(paths["image"])
    np.testing.assert_allclose(loaded.affine.numpy(), p.affine, atol=1e-4)
    values = loaded.numpy().reshape(p.image.shape)
    np.testing.assert_allclose(values, p.image, atol=1e-3 * float(p.image.max()))
    np.testing.assert_array_equal(np.asarray(nib.load(paths["mask"]).dataobj).reshape(p.mask.shape), p.mask)


def test_existing_files_need_overwrite(tmp_path):
    make_phantom_dataset(tmp_path, n_per_class=1, kind="slice", shape=16)
    with pytest.raises(FileExistsError, match="dataset.json already exists; pass overwrite=True"):
        make_phantom_dataset(tmp_path, n_per_class=1, kind="slice", shape=16)
    items = make_phantom_dataset(tmp_path, n_per_class=1, kind="slice", shape=16, overwrite=True)
    assert all(nib.load(item["image"]).shape == (16, 16, 1) for item in items)
    p = make_phantom(0, seed=0, kind="slice", shape=16)
    save_phantom(p, tmp_path / "one", "x", fmt="dicom")
    with pytest.raises(FileExistsError, match="already exists"):
        save_phantom(p, tmp_path / "one", "x", fmt="dicom")
    save_phantom(p, tmp_path / "one", "x", fmt="dicom", overwrite=True)
    assert len(list((tmp_path / "one" / "x").glob("*.dcm"))) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "jpeg"}, r"Unknown fmt 'jpeg'.*'nifti', 'png', 'dicom'"),
        ({"kind": "volume", "fmt": "png"}, r"fmt 'png' stores 2D slices only; use kind='slice'"),
        ({"kind": "cube"}, r"Unknown kind 'cube'.*'volume', 'slice'"),
        ({"n_per_class": 0}, r"n_per_class must be an integer in \[1, 100000\], got 0"),
        ({"n_per_class": 2.5}, r"n_per_class must be an integer"),
        ({"seed": -1}, r"seed must be a non-negative integer, got -1"),
        ({"shape": (8, 8, 8)}, r"Bad shape \(8, 8, 8\) for kind 'slice'"),
    ],
)
def test_bad_dataset_arguments_raise_before_writing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_phantom_dataset(tmp_path / "out", **({"n_per_class": 1} | kwargs))
    assert not any(path.is_file() for path in (tmp_path / "out").rglob("*"))


def test_save_phantom_rejects_bad_names_and_formats(tmp_path):
    p = make_phantom(0, seed=0, kind="volume", shape=16)
    with pytest.raises(ValueError, match=r"Bad name '../x'"):
        save_phantom(p, tmp_path, "../x")
    with pytest.raises(ValueError, match=r"fmt 'png' stores 2D slices only"):
        save_phantom(p, tmp_path, "x", fmt="png")
    paths = save_phantom(p, tmp_path, "x")
    assert sorted(path.name for path in paths.values()) == [
        "x.nii.gz", "x_brain_mask.nii.gz", "x_mask.nii.gz", "x_region_mask.nii.gz"]
