"""save_overlay: overlays land on the scan in world coordinates, through preprocessing, safely written."""

from __future__ import annotations

import ast
import os
import shutil
import sys
import types

import nibabel as nib
import numpy as np
import pytest
import torch
from io_helpers import BLOB_VOXEL, lands_on, oblique_affine, overlay_centre_world, phantom
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose, CropForeground, Orientation, Resize, Spacing, SpatialPad
from PIL import Image

from monai_cluscam.io import (
    heat_colormap,
    load_image,
    save_overlay,
    to_original_grid,
    write_dicom_series,
    write_nifti,
)

AFFINE = oblique_affine()
BLOB_WORLD = (AFFINE @ np.r_[BLOB_VOXEL, 1.0])[:3]
VOXEL_DIAGONAL = float(np.linalg.norm(np.linalg.norm(AFFINE[:3, :3], axis=0)))


def _fake_map(x: MetaTensor) -> MetaTensor:
    """A stand-in explainer: the normalised image, sharpened so the blob dominates; keeps x's metadata."""
    low, high = x.min(), x.max()
    return ((x - low) / (high - low)) ** 4


@pytest.fixture(scope="module")
def scan_nifti(tmp_path_factory):
    return write_nifti(phantom(), AFFINE, tmp_path_factory.mktemp("scan") / "brain T1.nii.gz")


@pytest.fixture(scope="module")
def scan_dicom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / "series"
    write_dicom_series(phantom(), AFFINE, folder, shuffle_names=True, seed=0, series_description="../../evil")
    return folder


def test_check_detects_a_flipped_axis(tmp_path, scan_nifti):
    """Negative control: the world check must fail when the overlay's geometry is wrong."""
    x = load_image(scan_nifti)
    good = save_overlay(_fake_map(x), tmp_path / "good", preview=False)[0]
    assert lands_on(good.nifti, BLOB_WORLD, VOXEL_DIAGONAL)
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, x.shape[1] - 1  # i -> (n - 1) - i: same field of view, mirrored content
    wrong = MetaTensor(_fake_map(x).as_tensor(), affine=torch.as_tensor(AFFINE @ flip), meta={"filename_or_obj": "x"})
    bad = save_overlay(wrong, tmp_path / "bad", preview=False)[0]
    assert not lands_on(bad.nifti, BLOB_WORLD, VOXEL_DIAGONAL)
    assert np.linalg.norm(overlay_centre_world(bad.nifti) - BLOB_WORLD) > 10


def test_nifti_through_resampling_pipeline(tmp_path, scan_nifti):
    x = load_image(scan_nifti)
    pipeline = Compose([Orientation(axcodes="RAS", labels=None), Spacing(pixdim=(2.0, 2.0, 2.0)), Resize((24, 24, 24))])
    y = pipeline(x)
    assert tuple(y.shape) == (1, 24, 24, 24)
    files = save_overlay(_fake_map(y), tmp_path)[0]
    overlay = nib.load(files.nifti)
    assert overlay.shape == phantom().shape and overlay.get_data_dtype() == np.float32
    np.testing.assert_allclose(overlay.get_sform(), AFFINE, atol=1e-5)
    np.testing.assert_allclose(overlay.get_qform(), AFFINE, atol=1e-5)
    assert int(overlay.header["sform_code"]) in (1, 2) and int(overlay.header["qform_code"]) in (1, 2)
    assert lands_on(files.nifti, BLOB_WORLD, VOXEL_DIAGONAL)
    assert files.nifti.name == "brain_T1_cluscam.nii.gz"


def test_dicom_through_cropping_pipeline(tmp_path, scan_dicom):
    x = load_image(scan_dicom)
    pipeline = Compose([CropForeground(select_fn=lambda v: v > 150, margin=3), SpatialPad((12, 12, 12))])
    y = pipeline(x)
    assert y.shape[1] < x.shape[1]  # really cropped
    files = save_overlay(_fake_map(y), tmp_path)[0]
    data = nib.load(files.nifti).get_fdata()
    assert data.shape == tuple(x.shape[1:])
    assert data[0, 0, 0] == 0 and data[-1, -1, -1] == 0  # outside the cropped field of view
    assert lands_on(files.nifti, BLOB_WORLD, VOXEL_DIAGONAL)
    assert files.nifti.parent == tmp_path and files.nifti.name == "series_cluscam.nii.gz"


def test_batch_writes_one_file_per_sample(tmp_path, scan_nifti, scan_dicom):
    pipeline = Compose([Orientation(axcodes="RAS", labels=None), Spacing(pixdim=(2.0, 2.0, 2.0)), Resize((20, 20, 20))])
    batch = list_data_collate([{"image": pipeline(load_image(p))} for p in (scan_nifti, scan_dicom)])["image"]
    assert batch.is_batch and batch.affine.shape == (2, 4, 4)
    cams = _fake_map(batch)
    files = save_overlay(cams, tmp_path, preview=False)
    assert [f.nifti.name for f in files] == ["brain_T1_cluscam.nii.gz", "series_cluscam.nii.gz"]
    assert all(lands_on(f.nifti, BLOB_WORLD, 2 * VOXEL_DIAGONAL) for f in files)


def test_2d_picture_overlay_and_preview(tmp_path):
    pixels = np.zeros((40, 30), np.uint8)
    pixels[8:32, 5:25] = 120
    pixels[10:14, 18:22] = 250
    Image.fromarray(pixels).save(tmp_path / "000001_Mild_Demented.png")
    x = load_image(tmp_path / "000001_Mild_Demented.png")
    y = Resize((16, 16))(x)
    files = save_overlay(_fake_map(y), tmp_path / "out")[0]
    overlay = nib.load(files.nifti)
    assert overlay.shape == (30, 40, 1)
    i, j, _ = np.unravel_index(np.argmax(overlay.get_fdata()), overlay.shape)
    assert 17 <= i <= 22 and 9 <= j <= 14  # (width, height) index of the bright square
    preview = Image.open(files.preview)
    assert preview.mode == "RGB" and preview.width >= 256
    rgb = np.asarray(preview.resize((30, 40)), dtype=float)  # back to picture layout (rows, columns)
    assert rgb[12, 20, 0] > rgb[12, 20, 2] + 30  # heat (red/yellow) over the bright square
    assert abs(rgb[25, 10, 0] - rgb[25, 10, 2]) < 30  # plain grey elsewhere


def test_3d_preview_is_a_montage_with_heat(tmp_path, scan_nifti):
    files = save_overlay(_fake_map(load_image(scan_nifti)), tmp_path)[0]
    preview = np.asarray(Image.open(files.preview), dtype=float)
    assert preview.shape[1] >= 4 * 150  # four tiles per row
    red_excess = preview[..., 0] - preview[..., 2]
    assert red_excess.max() > 80  # the map shows as heat
    assert (np.abs(red_excess) < 5).mean() > 0.5  # most of the montage is plain grey/black


def test_color_table_and_slicer_script(tmp_path, scan_dicom):
    files = save_overlay(_fake_map(load_image(scan_dicom)), tmp_path, preview=False)[0]
    rows = [line.split() for line in files.color_table.read_text().splitlines() if not line.startswith("#")]
    assert len(rows) == 256 and all(len(r) == 6 for r in rows)
    assert [int(v) for v in rows[255][2:5]] == heat_colormap()[255].tolist() and rows[0][5] == "0"
    tree = ast.parse(files.slicer_script.read_text())
    values = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    }
    assert values["SCAN_ABSOLUTE"] == str(scan_dicom.resolve())
    assert values["SCAN_RELATIVE"] == os.path.relpath(scan_dicom.resolve(), files.nifti.parent)
    assert values["SERIES_UID"] == load_image(scan_dicom).meta["SeriesInstanceUID"]
    assert values["OPACITY"] == 0.4
    assert "setSliceViewerLayers" in files.slicer_script.read_text()


class _FakeSlicer(types.ModuleType):
    """Stands in for 3D Slicer's ``slicer`` module: records what the script loads."""

    def __init__(self) -> None:
        super().__init__("slicer")
        self.loaded: list[str] = []
        node = types.SimpleNamespace(GetDisplayNode=lambda: types.SimpleNamespace(
            SetAndObserveColorNodeID=lambda _id: None, AutoWindowLevelOff=lambda: None,
            SetWindowLevelMinMax=lambda lo, hi: None), GetID=lambda: "node")
        self.util = types.SimpleNamespace(
            loadVolume=lambda path, properties=None: self.loaded.append(path) or node,
            loadColorTable=lambda path: self.loaded.append(path) or node,
            setSliceViewerLayers=lambda **kw: None)


def _run_script(path, monkeypatch) -> list[str]:
    fake = _FakeSlicer()
    monkeypatch.setitem(sys.modules, "slicer", fake)
    exec(compile(path.read_text(), str(path), "exec"), {"__file__": str(path)})
    return fake.loaded


def test_slicer_script_opens_a_moved_output_folder(tmp_path, monkeypatch):
    (tmp_path / "study").mkdir()
    scan = write_nifti(np.random.rand(6, 6, 4), np.eye(4), tmp_path / "study" / "scan.nii.gz")
    cam = MetaTensor(torch.rand(1, 6, 6, 4), affine=torch.eye(4), meta={"filename_or_obj": str(scan)})
    files = save_overlay(cam, tmp_path / "study" / "out", preview=False)[0]
    assert _run_script(files.slicer_script, monkeypatch) == [str(scan), str(files.nifti), str(files.color_table)]
    # the study folder moved (scan and results together): found beside the script, relative to it
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "study", moved)
    out = moved / "out"
    loaded = _run_script(out / files.slicer_script.name, monkeypatch)
    assert loaded == [str(moved / "scan.nii.gz"), str(out / files.nifti.name), str(out / files.color_table.name)]
    # the results moved alone: the overlay still opens, without the scan it cannot find
    alone = tmp_path / "alone"
    shutil.move(out, alone)
    assert _run_script(alone / files.slicer_script.name, monkeypatch) == [str(alone / files.nifti.name),
                                                                          str(alone / files.color_table.name)]


def test_hostile_names_stay_inside_output(tmp_path):
    source = '../../x"; import os; os.system("rm -rf /") #.nii.gz'
    cam = MetaTensor(torch.rand(1, 4, 4, 4), affine=torch.eye(4), meta={"filename_or_obj": source})
    files = save_overlay(cam, tmp_path / "out", preview=False)[0]
    for path in (files.nifti, files.color_table, files.slicer_script):
        assert path.parent == (tmp_path / "out").resolve()
        assert ".." not in path.name and "/" not in path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    compile(files.slicer_script.read_text(), "script", "exec")  # names cannot break out of string literals
    files = save_overlay(cam, tmp_path / "out2", name="../../../etc/passwd", preview=False)[0]
    assert files.nifti.parent == (tmp_path / "out2").resolve() and files.nifti.name == "passwd_cluscam.nii.gz"


def test_inputs_and_existing_outputs_are_never_overwritten(tmp_path, scan_dicom):
    source = write_nifti(np.ones((4, 4, 4)), np.eye(4), tmp_path / "scan.nii.gz")
    before = source.read_bytes()
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "scan_cluscam.nii.gz").symlink_to(source)  # the target resolves to the input
    cam = MetaTensor(torch.rand(1, 4, 4, 4), affine=torch.eye(4), meta={"filename_or_obj": str(source)})
    with pytest.raises(ValueError, match="overwrite the input"):
        save_overlay(cam, tmp_path / "links", overwrite=True, preview=False)
    assert source.read_bytes() == before
    with pytest.raises(ValueError, match="inside the input DICOM folder"):
        save_overlay(_fake_map(load_image(scan_dicom)), scan_dicom, preview=False)
    first = save_overlay(cam, tmp_path / "out", preview=False)[0]
    saved = first.nifti.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_overlay(cam * 0.5, tmp_path / "out", preview=False)
    assert first.nifti.read_bytes() == saved
    save_overlay(cam * 0.5, tmp_path / "out", preview=False, overwrite=True)
    assert first.nifti.read_bytes() != saved
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_unwritable_output(tmp_path, monkeypatch):
    cam = MetaTensor(torch.rand(1, 4, 4), affine=torch.eye(4), meta={"filename_or_obj": "a.png"})
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        save_overlay(cam, tmp_path / "file")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(PermissionError, match="not writable"):
        save_overlay(cam, tmp_path / "ro")


def test_bad_attributions(tmp_path):
    with pytest.raises(ValueError, match="no geometry"):
        save_overlay(np.zeros((1, 4, 4)), tmp_path)
    with pytest.raises(ValueError, match=r"\(1, \*spatial\)"):
        save_overlay(MetaTensor(torch.zeros(3, 4, 4), affine=torch.eye(4)), tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        save_overlay(MetaTensor(torch.full((1, 4, 4), float("nan")), affine=torch.eye(4)), tmp_path)
    assert list(tmp_path.iterdir()) == []
    image = MetaTensor(torch.zeros(1, 4, 4), affine=torch.diag(torch.tensor([2.0, 3, 1, 1])), meta={})
    files = save_overlay(np.ones((1, 4, 4)), tmp_path, image=image, preview=False)
    np.testing.assert_allclose(nib.load(files[0].nifti).affine, np.diag([2.0, 3, 1, 1]))


def test_to_original_grid_is_identity_on_loaded_images(scan_nifti):
    x = load_image(scan_nifti)
    assert to_original_grid(x) is x
