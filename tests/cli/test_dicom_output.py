"""``monai-cluscam explain --dicom``: DICOM a PACS shows on the scan, for DICOM, NIfTI and PNG inputs; records,
resume, and DICOM results never taken as inputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from cli_helpers import explain_args, read_csv, slices
from pydicom.uid import ParametricMapStorage, SecondaryCaptureImageStorage

from monai_cluscam.cli import main
from monai_cluscam.io import load_image, save_overlay, write_dicom_series, write_nifti
from monai_cluscam.io.files import OUTPUT_MARKER

AFFINE = np.array([[0.0, -1.2, 0.0, 30.0], [1.1, 0.0, 0.0, -20.0], [0.0, 0.0, 2.5, 10.0], [0, 0, 0, 1]])
SHAPE = (14, 12, 6)
FAST = ("--num-clusters", "3", "--no-preview")


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _series(folder: Path) -> list[Path]:
    volume = np.random.default_rng(0).random(SHAPE) * 100
    return write_dicom_series(volume, AFFINE, folder, shuffle_names=True, seed=2, patient_id="PAT-7")


def _check_result(folder: Path, source: pydicom.Dataset, slices_: int) -> None:
    """A Parametric Map and ``slices_`` colour captures, read back, in the source's Study and Frame of Reference."""
    pm = _read(folder / "map" / "parametric_map.dcm")
    assert pm.SOPClassUID == ParametricMapStorage and int(pm.NumberOfFrames) == slices_
    parsed = hd.pm.ParametricMap.from_dataset(pm)
    assert parsed.StudyInstanceUID == source.StudyInstanceUID
    assert parsed.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert parsed.SeriesInstanceUID != source.SeriesInstanceUID
    algorithm = pm.DerivationAlgorithmSequence[0]
    assert algorithm.AlgorithmName == "ClusCAM"
    parameters = algorithm.AlgorithmParameters
    assert "num_clusters=3" in parameters and "layer=layer3" in parameters and "temperature=0.5" in parameters
    captures = sorted((folder / "overlay").glob("IM*.dcm"))
    assert len(captures) == slices_
    for path in captures:
        sc = _read(path)
        assert sc.SOPClassUID == SecondaryCaptureImageStorage and sc.PhotometricInterpretation == "RGB"
        assert (sc.StudyInstanceUID, sc.FrameOfReferenceUID) == (source.StudyInstanceUID, source.FrameOfReferenceUID)


def test_dicom_series_explained_into_dicom_a_pacs_imports(bundle3d, tmp_path, capsys):
    data = tmp_path / "in"
    series = data / "series"
    source = _read(_series(series)[0])
    out = tmp_path / "out"
    assert main(explain_args(bundle3d, [data], out, "--dicom", *FAST)) == 0
    assert "DICOM: 1 folders <name>_<method>_dicom/ to import into a PACS (e.g. series_ClusCAM_dicom)" in (
        capsys.readouterr().out
    )
    folder = out / "series_ClusCAM_dicom"
    _check_result(folder, source, SHAPE[2])
    assert not (folder / "scan").exists()  # the scan is DICOM already: the results reference it
    record = json.loads((out / "series_cluscam.json").read_text())
    assert record["dicom"][0] == "series_ClusCAM_dicom/map/parametric_map.dcm" and len(record["dicom"]) == 8
    assert record["dicom"][-1] == "series_ClusCAM_dicom/report/report.dcm"  # the classification as an SR
    assert record["deidentify"] is False
    # a rerun reuses everything; the input folder with the earlier output in it, and that output given as an
    # input, yield the one series: DICOM results (the map, the overlays) are never scans
    first = (folder / "map" / "parametric_map.dcm").stat().st_mtime_ns
    again = tmp_path / "again"
    assert main(explain_args(bundle3d, [data], out, "--dicom", *FAST)) == 0
    assert (folder / "map" / "parametric_map.dcm").stat().st_mtime_ns == first
    assert main(explain_args(bundle3d, [data, out, folder / "overlay"], again, *FAST)) == 0
    assert [r["file"] for r in read_csv(again / "predictions.csv")] == [str(series)]
    assert f"note: {folder}: left out: monai-cluscam wrote it (DICOM results)" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["nifti", "png"])
def test_nifti_and_png_inputs_get_the_scan_written_as_dicom(bundle, bundle3d, tmp_path, kind):
    data = tmp_path / "in"
    if kind == "nifti":
        data.mkdir()
        write_nifti(np.random.default_rng(1).random(SHAPE).astype(np.float32), AFFINE, data / "vol.nii.gz")
        model, name, frames = bundle3d, "vol", SHAPE[2]
    else:
        slices(data, 1)
        model, name, frames = bundle, "s0", 1
    out = tmp_path / "out"
    assert main(explain_args(model, [data], out, "--dicom", *FAST)) == 0
    folder = out / f"{name}_ClusCAM_dicom"
    scan = sorted((folder / "scan").iterdir())
    assert len(scan) == frames
    _check_result(folder, _read(scan[0]), frames)
    # the scan series written there is no input either
    assert main(explain_args(model, [data, folder / "scan"], tmp_path / "again", *FAST)) == 0
    assert len(read_csv(tmp_path / "again" / "predictions.csv")) == 1


def test_resume_writes_missing_dicom_reuses_it_and_overwrite_replaces_it(bundle, tmp_path):
    data = slices(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert main(explain_args(bundle, [data], out, *FAST)) == 0
    assert not list(out.glob("*_dicom"))
    # a rerun with --dicom after a run without writes the missing DICOM, predictions unchanged
    table = (out / "predictions.csv").read_text()
    assert main(explain_args(bundle, [data], out, "--dicom", *FAST)) == 0
    assert (out / "predictions.csv").read_text() == table
    pm = out / "s0_ClusCAM_dicom" / "map" / "parametric_map.dcm"
    uid = _read(pm).SOPInstanceUID
    assert json.loads((out / "s1_cluscam.json").read_text())["dicom"]
    # a rerun reuses it; --overwrite replaces it; a result folder without its record (a run killed before the
    # record) is replaced too, no crash
    assert main(explain_args(bundle, [data], out, "--dicom", *FAST)) == 0
    assert _read(pm).SOPInstanceUID == uid
    assert main(explain_args(bundle, [data], out, "--dicom", "--overwrite", *FAST)) == 0
    assert _read(pm).SOPInstanceUID != uid
    (out / "s0_cluscam.json").unlink()
    assert main(explain_args(bundle, [data], out, "--dicom", *FAST)) == 0
    assert pm.is_file() and (out / "s0_cluscam.json").is_file()
    # de-identified output asked for: written again, the scan copied with a new patient ID
    assert main(explain_args(bundle, [data], out, "--dicom", "--deidentify", *FAST)) == 0
    assert json.loads((out / "s0_cluscam.json").read_text())["deidentify"] is True
    assert _read(pm).PatientID.startswith("ANON-")
    assert main(explain_args(bundle, [data], out, "--deidentify", *FAST)) == 2  # without --dicom: a usage error


def test_output_that_would_replace_an_input_series_is_refused(bundle, tmp_path):
    data = slices(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(explain_args(bundle, [data], out, "--dicom", *FAST)) == 0
    scan = out / "s0_ClusCAM_dicom" / "scan"
    image = load_image(scan)
    cam = image.clone() / image.max()
    with pytest.raises(ValueError, match="lies in the DICOM result folder"):
        save_overlay(cam, out, image=image, name="s0", formats=("dicom",), overwrite=True)
    assert len(list(scan.iterdir())) == 1 and (out / OUTPUT_MARKER).is_file()
    assert not (out / "s0_ClusCAM_dicom" / OUTPUT_MARKER).exists()  # the result folder holds DICOM only
    with pytest.raises(ValueError, match="formats must name"):
        save_overlay(cam, out, image=image, formats=("dcm",))
