"""The DICOM outputs read by the tools clinics and researchers use, not by this package: dicom3tools' IOD checker
(``dciodvfy``) and dcmqi's Parametric Map reader (``paramap2itkimage``, what 3D Slicer's loader runs). Each test
runs when its tool is installed and skips cleanly when not (``.ci/run`` installs dicom3tools; dcmqi is in the
test extra)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from io_helpers import oblique_affine, phantom, smooth_map, values_on_grid
from monai.transforms import Compose, Orientation, Spacing
from PIL import Image

from monai_cluscam.io import load_image, save_dicom_overlay, save_overlay, write_dicom_series, write_nifti
from monai_cluscam.io.files import OUTPUT_MARKER

SHAPE = (20, 18, 10)
BLOB = np.array([13, 5, 6])
AFFINE = oblique_affine(spacing=(1.1, 1.3, 2.2))
METHOD = {"method": "ClusCAM", "layer": "layer4", "num_clusters": 10}


def _tool(name: str) -> str | None:
    """The path of a command-line tool: on PATH, or beside this Python (a package's console script)."""
    found = shutil.which(name)
    if found is None:
        candidate = Path(sys.executable).parent / name
        found = str(candidate) if candidate.is_file() else None
    return found


def _export(tmp_path: Path, kind: str):
    """(the DICOM result, the NIfTI overlay's path) of one map of an oblique input: a DICOM series with shuffled
    file names or a NIfTI volume, preprocessed (reoriented, resampled) before it is explained."""
    if kind == "dicom":
        write_dicom_series(phantom(SHAPE, BLOB), AFFINE, tmp_path / "series", shuffle_names=True, seed=1,
                           patient_id="PAT-1")
        source = tmp_path / "series"
    else:
        source = write_nifti(phantom(SHAPE, BLOB), AFFINE, tmp_path / "scan.nii.gz")
    image = load_image(source)
    prepared = Compose([Orientation(axcodes="RAS"), Spacing(pixdim=(1.5, 1.5, 1.5))])(image)
    cam = smooth_map(prepared)
    result = save_dicom_overlay(cam, prepared, tmp_path / "out", method_info=METHOD)
    overlay = save_overlay(cam, tmp_path / "nifti", image=prepared, preview=False)[0]
    return result, overlay.nifti


def _errors(path: Path, tool: str) -> list[str]:
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
def test_dciodvfy_finds_no_error_in_the_map_the_overlay_and_the_written_scan(tmp_path, kind):
    tool = _tool("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    result, _ = _export(tmp_path, kind)
    checked = [result.parametric_map, result.secondary_capture[0], result.secondary_capture[-1]]
    if kind == "nifti":
        checked.append(result.scan[0])
    for path in checked:
        assert _errors(path, tool) == [], path
    # the written scan carries a window over its values, so a viewer opens it with the tissue visible
    if kind == "nifti":
        scan = pydicom.dcmread(result.scan[0])
        values = phantom(SHAPE, BLOB)
        assert float(scan.WindowWidth) > 0.5 * (values.max() - values.min()) * 0.5
        assert scan.BodyPartExamined == "BRAIN" and scan.PatientPosition == ""


def test_dciodvfy_finds_no_error_in_a_png_slice_written_as_dicom(tmp_path):
    tool = _tool("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    picture = np.zeros((30, 40), dtype=np.uint8)
    picture[5:25, 5:35] = 90
    Image.fromarray(picture).save(tmp_path / "slice.png")
    image = load_image(tmp_path / "slice.png")
    result = save_dicom_overlay(smooth_map(image), image, tmp_path / "out")
    for path in (result.scan[0], result.parametric_map, result.secondary_capture[0]):
        assert _errors(path, tool) == [], path


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
def test_dcmqi_reads_the_map_onto_the_overlay(tmp_path, kind):
    tool = _tool("paramap2itkimage")
    if tool is None:
        pytest.skip("dcmqi (pip install dcmqi, in the test extra) is not installed")
    result, overlay = _export(tmp_path, kind)
    out = tmp_path / "dcmqi"
    out.mkdir()
    run = subprocess.run([tool, "--inputDICOM", str(result.parametric_map), "--outputDirectory", str(out),
                          "-t", "nifti"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    (read,) = [p for p in out.iterdir() if p.name.endswith((".nii", ".nii.gz"))]
    dcmqi = nib.load(read)
    reference = nib.load(overlay)
    ours = np.asarray(reference.dataobj, dtype=np.float64).squeeze()
    theirs = values_on_grid(np.asarray(dcmqi.dataobj, dtype=np.float64).squeeze(), dcmqi.affine, reference)
    r = np.corrcoef(theirs.ravel(), ours.ravel())[0, 1]
    assert r > 0.99995, r  # 1.0000 to four decimals: the same values at the same places
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_the_result_folder_holds_dicom_only_and_unrelated_inputs_get_their_own_patient(tmp_path):
    ids = []
    for value in (90, 120):
        picture = np.zeros((30, 40), dtype=np.uint8)
        picture[5:25, 5:35] = value
        Image.fromarray(picture).save(tmp_path / f"slice{value}.png")
        image = load_image(tmp_path / f"slice{value}.png")
        result = save_dicom_overlay(smooth_map(image), image, tmp_path / "out")
        ids.append(pydicom.dcmread(result.scan[0]).PatientID)
        # every file is DICOM (a PACS import tool reads them all); the marker lies in the output folder
        files = [p for p in result.folder.rglob("*") if p.is_file()]
        assert files and all(pydicom.misc.is_dicom(p) for p in files)
        assert (tmp_path / "out" / OUTPUT_MARKER).is_file()
    assert ids[0] != ids[1] and all(i.startswith("MCC-") and len(i) == 16 for i in ids)
    # the same file again gets the same patient
    image = load_image(tmp_path / "slice90.png")
    again = save_dicom_overlay(smooth_map(image), image, tmp_path / "again")
    assert pydicom.dcmread(again.scan[0]).PatientID == ids[0]


def test_dcmsend_reads_every_file_of_a_result_folder(tmp_path):
    tool = _tool("dcmsend")
    if tool is None:
        pytest.skip("dcmsend (Debian package dcmtk) is not installed")
    result, _ = _export(tmp_path, "nifti")
    # no peer listens on this port: every file must be read as DICOM before the association fails
    run = subprocess.run([tool, "-v", "+sd", "+r", "127.0.0.1", "1", str(result.folder)], capture_output=True,
                         text=True, timeout=60)
    text = run.stdout + run.stderr
    # a non-DICOM file halts dcmsend before it connects ("bad DICOM file: ..."); DICOM only reaches the network
    assert "bad DICOM file" not in text and "cannot add DICOM file" not in text, text
    assert "starting association" in text, text


def test_dciodvfy_finds_no_error_in_the_report(tmp_path):
    tool = _tool("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    write_dicom_series(phantom(SHAPE, BLOB), AFFINE, tmp_path / "series", patient_id="PAT-2")
    image = load_image(tmp_path / "series")
    prediction = {"class_names": ["a", "b"], "probabilities": [0.3, 0.7], "model": {"name": "m", "version": "1"}}
    result = save_dicom_overlay(smooth_map(image), image, tmp_path / "out", method_info=METHOD, prediction=prediction)
    assert result.report is not None and result.report in result.paths
    assert _errors(result.report, tool) == []
