"""Faults and hostile inputs on the command line: each gets a clear outcome and costs no other input its result."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import explain_args, read_csv, slices
from PIL import Image

from monai_cluscam import run
from monai_cluscam.cli import main
from monai_cluscam.io import write_dicom_series, write_nifti


def _failures(out: Path) -> dict[str, str]:
    return {r["file"]: r["error"] for r in read_csv(out / "failures.csv")}


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_hostile_slices_each_get_a_clear_outcome(bundle, tmp_path):
    data = slices(tmp_path / "in", 2)
    good = (data / "s0.png").read_bytes()
    (data / "corrupt.nii.gz").write_bytes(b"this is not gzip")
    (data / "truncated.png").write_bytes(good[:60])
    write_nifti(np.ones((20, 18, 12)), np.eye(4), data / "volume.nii.gz")  # 3D for a 2D model
    (data / "notes.txt").write_text("not an image")
    (data / "random.dcm").write_bytes(np.random.default_rng(2).bytes(600))  # makes the folder a DICOM "series"
    colour = np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(colour).save(data / "colour.png")
    escape = "..\\..\\..\\escape.png"  # a legal file name on Linux, a path on Windows
    long_names = ["L" * 200 + "_a.png", "L" * 200 + "_b.png"]  # equal in their first 200 characters
    for name in (escape, *long_names):  # a name starting with "." is hidden in a folder: it is given directly
        (data / name).write_bytes(good)
    too_long = tmp_path / ("x" * 300 + ".png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "readme.txt").write_text("x")
    (tmp_path / "list.txt").write_text("s0.png\n")
    with_nul = str(tmp_path / "bad\x00name.png")
    out = tmp_path / "out"
    before = _files_under(tmp_path)

    inputs = [data, tmp_path / "empty", tmp_path / "texts", tmp_path / "list.txt", with_nul, too_long, data / escape]
    assert main(explain_args(bundle, inputs, out)) == 1

    rows = read_csv(out / "predictions.csv")
    assert [Path(r["file"]).name for r in rows] == [*long_names, "s0.png", "s1.png", escape]
    expected = {
        str(data / "corrupt.nii.gz"): "ValueError: " + str(data / "corrupt.nii.gz") + " is not a readable NIfTI",
        str(data / "truncated.png"): "not a readable PNG/JPEG image",
        str(data): "is not a DICOM file",  # the would-be series fails; the pictures beside it do not
        str(data / "colour.png"): "has 3 channels after the bundle's preprocessing but the model takes 1",
        str(data / "volume.nii.gz"): "the image is 3D (spatial shape (20, 18, 12)) but the bundle's model takes 2D",
        str(tmp_path / "empty"): "holds no NIfTI, PNG/JPEG or DICOM image",
        str(tmp_path / "texts"): "holds no NIfTI, PNG/JPEG or DICOM image",
        str(tmp_path / "list.txt"): "unsupported format (not NIfTI, PNG/JPEG or DICOM)",
        with_nul.replace("\0", "\\0"): "is not a usable path (it holds a NUL character)",
        str(too_long): "is not a usable path (File name too long)",
    }
    failed = _failures(out)
    assert set(failed) == set(expected)
    for file, text in expected.items():
        assert text in failed[file], (file, failed[file])
    # hostile names give harmless names inside the output folder, one set of files per input
    written = _files_under(tmp_path) - before
    assert written and all(p.parent == out for p in written)
    assert (out / "escape_cluscam.nii.gz").exists() and (out / "escape_cluscam.json").exists()
    assert len(list(out.glob("*_cluscam.nii.gz"))) == 5
    assert max(len(p.name) for p in written) < 120


def test_hostile_volumes_each_get_a_clear_outcome(bundle3d, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "in"
    data.mkdir()
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    write_nifti(rng.random((20, 18, 12)), affine, data / "good.nii.gz")
    write_nifti(rng.random((20, 18, 12, 3)), affine, data / "dwi.nii.gz")
    write_nifti(rng.random((20, 18, 12, 2)), affine, data / "two_channel.nii.gz")
    write_nifti(np.full((20, 18, 12), np.nan), affine, data / "nan.nii.gz")
    slices(data, 1, prefix="slice")  # a 2D picture for a 3D model
    for uid in ("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"):
        write_dicom_series(rng.random((12, 10, 4)) * 100, affine, data / "two_series", series_uid=uid)
    hostile = data / "$(touch pwned)"  # a shell-looking folder name, DICOM fields that look like paths
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UID, and writes it
        write_dicom_series(
            rng.random((12, 10, 4)) * 100, affine, hostile, series_description="../../../../etc/passwd\0/x",
            patient_name="/root/../../x\0", patient_id="..\\..\\id", series_uid="../../../tmp/evil",
        )
    out = tmp_path / "out"
    before = _files_under(tmp_path)

    assert main(explain_args(bundle3d, [data], out)) == 1

    assert [Path(r["file"]).name for r in read_csv(out / "predictions.csv")] == ["good.nii.gz", hostile.name]
    failed = {Path(k).name: v for k, v in _failures(out).items()}
    assert "has 3 channels after the bundle's preprocessing but the model takes 1" in failed["dwi.nii.gz"]
    assert "A 4D NIfTI gives one channel per volume" in failed["dwi.nii.gz"]
    assert "has 2 channels" in failed["two_channel.nii.gz"]
    assert "4096 of 4096 values are NaN or infinite after the bundle's preprocessing" in failed["nan.nii.gz"]
    assert "holds 2 image series" in failed["two_series"] and "folder of its own" in failed["two_series"]
    assert "1.2.826.0.1.3680043.8.498.2" in failed["two_series"]
    assert "the image is 2D (spatial shape (48, 40)) but the bundle's model takes 3D images" in failed["slice0.png"]
    assert set(failed) == {"dwi.nii.gz", "two_channel.nii.gz", "nan.nii.gz", "two_series", "slice0.png"}
    written = _files_under(tmp_path) - before
    assert all(p.parent == out for p in written) and not (tmp_path / "pwned").exists()
    script = out / "touch_pwned_cluscam_slicer.py"
    text = script.read_text()
    compile(text, str(script), "exec")  # the metadata cannot break out of the script's strings
    assert "SERIES_UID = None" in text and "evil" not in text  # a UID that is not a UID is not used
    overlay = nib.load(out / "touch_pwned_cluscam.nii.gz")
    assert overlay.shape == (12, 10, 4)


def test_unwritable_output_is_a_usage_error(bundle, tmp_path, capsys):
    data = slices(tmp_path / "in", 1)
    assert main(explain_args(bundle, [data], Path("/proc/cluscam_out"))) == 2  # read-only even for root
    assert "Cannot create output folder /proc/cluscam_out" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(explain_args(bundle, [data], tmp_path / "file")) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(bundle, tmp_path, capsys):
    data = slices(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    assert main(explain_args(bundle, [data], out)) == 2
    assert "is not writable" in capsys.readouterr().err


def _full_disk_for(monkeypatch, marker: str) -> None:
    """Make every file whose temporary name holds ``marker`` fail as on a full disk (at fsync)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_costs_only_the_input_being_written(bundle, tmp_path, monkeypatch, capsys):
    data = slices(tmp_path / "in", 3)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _full_disk_for(patch, ".s1_cluscam")
        assert main(explain_args(bundle, [data], out)) == 1
    assert [Path(r["file"]).name for r in read_csv(out / "predictions.csv")] == ["s0.png", "s2.png"]
    assert "No space left on device" in _failures(out)[str(data / "s1.png")]
    assert not list(out.glob(".*")), "a temporary file was left behind"
    assert not (out / "s1_cluscam.json").exists()
    done = (out / "s0_cluscam.nii.gz").stat().st_mtime_ns

    assert main(explain_args(bundle, [data], out)) == 0  # space again: the rerun adds s1, keeps the others
    assert [Path(r["file"]).name for r in read_csv(out / "predictions.csv")] == ["s0.png", "s1.png", "s2.png"]
    assert (out / "s0_cluscam.nii.gz").stat().st_mtime_ns == done and not (out / "failures.csv").exists()

    with monkeypatch.context() as patch:  # the tables themselves cannot be written: a usage error, records kept
        _full_disk_for(patch, ".predictions.csv")
        assert main(explain_args(bundle, [data], out)) == 2
    assert "rerun the same command to write the tables" in capsys.readouterr().err
    assert len(read_csv(out / "predictions.csv")) == 3 and not list(out.glob(".*"))


def _tight_memory(monkeypatch, most: int) -> None:
    """Bundles whose network runs out of memory on batches of more than ``most`` images, as torch reports it."""
    real = run.load_bundle

    def load_bundle(*args, **kwargs):
        bundle = real(*args, **kwargs)

        def check(module, inputs):
            if inputs[0].shape[0] > most:
                raise RuntimeError(
                    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                    "tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)"
                )

        bundle.network.register_forward_pre_hook(check)
        return bundle

    monkeypatch.setattr(run, "load_bundle", load_bundle)


def test_out_of_memory_halves_the_chunk_or_says_what_to_do(bundle, tmp_path, monkeypatch, capsys):
    data = slices(tmp_path / "in", 1)
    assert main(explain_args(bundle, [data], tmp_path / "plain")) == 0
    with monkeypatch.context() as patch:
        _tight_memory(patch, most=2)  # the default chunk (K = 10 masked copies) does not fit; 2 do
        assert main(explain_args(bundle, [data], tmp_path / "tight")) == 0
    said = capsys.readouterr()
    assert "retrying with 5 masked copies" in said.out + said.err and "--batch-size 2" in said.out + said.err
    plain, tight = (nib.load(tmp_path / d / "s0_cluscam.nii.gz").get_fdata() for d in ("plain", "tight"))
    np.testing.assert_allclose(tight, plain, atol=1e-5)
    with monkeypatch.context() as patch:
        _tight_memory(patch, most=0)  # not even one image fits
        assert main(explain_args(bundle, [data], tmp_path / "none")) == 1
    reason = _failures(tmp_path / "none")[str(data / "s0.png")]
    assert reason.startswith("MemoryError: out of memory explaining an input of shape (1, 32, 32)")
    assert "even at one masked copy per forward pass" in reason and "smaller" in reason


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_weights_that_would_run_code_are_refused(bundle, tmp_path, capsys):
    import torch

    data = slices(tmp_path / "in", 1)
    marker = tmp_path / "code_ran"
    torch.save({"weight": _RunsCode(marker)}, bundle / "models" / "model.pt")
    assert main(explain_args(bundle, [data], tmp_path / "out")) == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "weights_only=True" in err and "state_dict()" in err
    (bundle / "models" / "model.pt").write_bytes(b"not a torch file")
    assert main(explain_args(bundle, [data], tmp_path / "out")) == 2
    assert "is not a readable torch weights file" in capsys.readouterr().err
