"""Files this package wrote are never explained as scans; 2D slices stored as NIfTI (H, W, 1) are 2D."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from cli_helpers import explain_args, read_csv, slices
from monai.data import MetaTensor

from monai_cluscam.cli import main
from monai_cluscam.io import save_overlay, write_nifti
from monai_cluscam.io.files import OUTPUT_MARKER


def test_earlier_output_folders_inside_the_input_are_left_out(bundle, tmp_path, capsys):
    data = slices(tmp_path / "in", 3)
    # an earlier run's output folder inside the input folder, and overlays a bundle's handler wrote there
    assert main(explain_args(bundle, [data], data / "run1")) == 0
    assert (data / "run1" / OUTPUT_MARKER).is_file()
    cam = MetaTensor(torch.rand(1, 40, 48), affine=torch.eye(4), meta={"filename_or_obj": str(data / "s0.png")})
    save_overlay(cam, data / "eval" / "overlays", suffix="audit")
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(explain_args(bundle, [data], out)) == 0  # was 1: the overlays and previews failed as scans
    assert [r["file"] for r in read_csv(out / "predictions.csv")] == [str(data / f"s{i}.png") for i in range(3)]
    assert not (out / "failures.csv").exists()
    err = capsys.readouterr().err
    assert f"note: {data / 'run1'}: left out 6 files monai-cluscam wrote" in err
    assert f"note: {data / 'eval' / 'overlays'}: left out 2 files" in err
    # overlays given as files, and an output folder given as a folder, are left out too (not failures)
    given = [data / "s1.png", data / "run1" / "s0_cluscam.nii.gz", data / "run1" / "s0_cluscam.png", data / "eval"]
    assert main(explain_args(bundle, given, tmp_path / "out2")) == 0
    assert [r["file"] for r in read_csv(tmp_path / "out2" / "predictions.csv")] == [str(data / "s1.png")]


def test_this_runs_output_folder_inside_the_input_is_left_out(bundle, tmp_path, capsys):
    data = slices(tmp_path / "in", 2)
    inside = data / "results"
    assert main(explain_args(bundle, [data], inside)) == 0
    # a scan put into the output folder later is still not searched there: the folder is this run's results
    slices(inside, 1, prefix="late")
    capsys.readouterr()
    assert main(explain_args(bundle, [data], inside)) == 0
    assert len(read_csv(inside / "predictions.csv")) == 2
    assert f"note: {inside}: left out: it is this run's output folder" in capsys.readouterr().err
    # the output folder given as the input: the scans in it count, the results never
    assert main(explain_args(bundle, [inside], inside)) == 0
    assert [r["file"] for r in read_csv(inside / "predictions.csv")] == [str(inside / "late0.png")]


def test_a_2d_slice_stored_as_nifti_is_2d(bundle, tmp_path):
    rng = np.random.default_rng(0)
    affine = np.array([[-0.9, 0, 0, 10.0], [0, -1.1, 0, -5.0], [0, 0, 3.0, 40.0], [0, 0, 0, 1]])
    (tmp_path / "in").mkdir()
    scan = write_nifti(rng.random((40, 48, 1)).astype(np.float32), affine, tmp_path / "in" / "slice.nii.gz")
    out = tmp_path / "out"
    assert main(explain_args(bundle, [scan], out)) == 0  # was 1: "the image is 3D ... takes 2D images"
    assert not (out / "failures.csv").exists()
    overlay = nib.load(out / "slice_cluscam.nii.gz")
    assert overlay.shape == (40, 48, 1)  # on the input's grid
    np.testing.assert_allclose(overlay.affine, affine, atol=1e-5)
    assert float(np.asarray(overlay.dataobj).max()) > 0
    # its own overlay, explained again by name, is left out; the slice beside it is still explained
    assert main(explain_args(bundle, [out / "slice_cluscam.nii.gz", scan], tmp_path / "again")) == 0
    assert [r["file"] for r in read_csv(tmp_path / "again" / "predictions.csv")] == [str(scan)]
