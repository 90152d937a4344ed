"""Results straight to a PACS, and the classification as a DICOM Structured Report: against a real Orthanc that
each test starts on loopback in a temporary folder (skipped cleanly when Orthanc is not installed), by DICOMweb
STOW-RS and by C-STORE; refusals and outages lose nothing and a rerun sends only what is missing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from io_helpers import oblique_affine, phantom, smooth_map, values_on_grid
from monai.transforms import Compose, Orientation, Spacing
from orthanc_server import running_orthanc

from monai_cluscam.io import PacsDestination, PacsError, load_image, save_overlay, send_dicom, write_dicom_series
from monai_cluscam.io.dicom_report import RESEARCH_STATEMENT, read_report
from monai_cluscam.io.pacs import SENT_RECORD, referenced_source_files

pytest.importorskip("dicomweb_client")
pytest.importorskip("pynetdicom")

SHAPE = (20, 18, 10)
BLOB = np.array([13, 5, 6])
AFFINE = oblique_affine(spacing=(1.1, 1.3, 2.2))
METHOD = {"method": "ClusCAM", "layer": "layer4", "num_clusters": 10}
PREDICTION = {"class_names": ["Mild", "Moderate", "Non", "VeryMild"], "probabilities": [0.1, 0.05, 0.8, 0.05],
              "model": {"name": "alzheimer_mri_cluscam", "version": "0.3.1"}}
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _read(path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


@pytest.fixture
def explained(tmp_path):
    """An oblique shuffled DICOM series, explained: the NIfTI overlay and the DICOM results with the report."""
    series = tmp_path / "series"
    write_dicom_series(phantom(SHAPE, BLOB), AFFINE, series, shuffle_names=True, seed=1, patient_id="PAT-3")
    image = load_image(series)
    prepared = Compose([Orientation(axcodes="RAS"), Spacing(pixdim=(1.5, 1.5, 1.5))])(image)
    written = save_overlay(smooth_map(prepared), tmp_path / "out", image=prepared, preview=False,
                           formats=("nifti", "dicom"), method_info=METHOD, prediction=PREDICTION)[0]
    return series, written


def test_the_report_reads_back_with_highdicom(explained):
    series, written = explained
    report_path = written.dicom.report
    assert report_path is not None and report_path in written.dicom.paths
    ds = _read(report_path)
    hd.sr.ComprehensiveSR.from_dataset(ds)  # highdicom accepts it as a Comprehensive SR
    report = read_report(ds)
    names, probs = PREDICTION["class_names"], PREDICTION["probabilities"]
    assert report.predicted == "Non" and report.probabilities == pytest.approx(dict(zip(names, probs, strict=True)))
    assert (report.model, report.model_version) == ("alzheimer_mri_cluscam", "0.3.1")
    assert report.method == "ClusCAM" and report.parameters == {"layer": "layer4", "num_clusters": "10"}
    assert report.statement == RESEARCH_STATEMENT and "not for diagnosis" in report.statement
    pm = _read(written.dicom.parametric_map)
    sources = [_read(p) for p in sorted(series.iterdir())]
    assert report.parametric_map_uid == pm.SOPInstanceUID
    assert sorted(report.source_uids) == sorted(s.SOPInstanceUID for s in sources)
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID and ds.PatientID == "PAT-3"
    # the scan's files the map references are what goes to a PACS with the results
    assert sorted(referenced_source_files(written.dicom.parametric_map, series)) == sorted(series.iterdir())


def test_sent_by_dicomweb_the_study_opens_complete_and_the_map_reads_back(explained, tmp_path):
    series, written = explained
    files = referenced_source_files(written.dicom.parametric_map, series) + written.dicom.paths
    with running_orthanc(tmp_path / "orthanc") as pacs:
        report = send_dicom(files, pacs.dicomweb)
        assert len(report.sent) == len(files) and report.already == []
        assert report.record == tmp_path / "out" / SENT_RECORD  # in the output folder, not among the DICOM
        source = _read(next(series.iterdir()))
        (study,) = pacs.get("/studies")
        tags = pacs.get(f"/studies/{study}")
        assert tags["MainDicomTags"]["StudyInstanceUID"] == source.StudyInstanceUID
        modalities = sorted(pacs.get(f"/series/{s}")["MainDicomTags"].get("Modality", "") for s in tags["Series"])
        assert modalities == ["MR", "OT", "OT", "SR"]  # the scan, the map and the colour overlay, the report
        # the map's values through DICOMweb, on the NIfTI overlay's grid
        from dicomweb_client.api import DICOMwebClient

        pm = _read(written.dicom.parametric_map)
        fetched = DICOMwebClient(pacs.dicomweb).retrieve_instance(pm.StudyInstanceUID, pm.SeriesInstanceUID,
                                                                  pm.SOPInstanceUID)
        volume = hd.pm.ParametricMap.from_dataset(fetched).get_volume()
        overlay = nib.load(written.nifti)
        theirs = values_on_grid(np.asarray(volume.array, dtype=np.float64), LPS @ volume.affine, overlay)
        ours = np.asarray(overlay.dataobj, dtype=np.float64)
        assert np.corrcoef(theirs.ravel(), ours.ravel())[0, 1] > 0.99995
        np.testing.assert_allclose(theirs, ours, atol=1e-5)
        sr = read_report(DICOMwebClient(pacs.dicomweb).retrieve_instance(
            pm.StudyInstanceUID, *(lambda d: (d.SeriesInstanceUID, d.SOPInstanceUID))(_read(written.dicom.report))))
        assert sr.predicted == "Non"
        # a rerun sends nothing twice
        again = send_dicom(files, pacs.dicomweb)
        assert again.sent == [] and len(again.already) == len(files)
        assert pacs.get("/statistics")["CountInstances"] == len(files)


def test_a_pacs_that_is_down_or_refuses_loses_nothing_and_a_rerun_sends_what_is_missing(explained, tmp_path):
    series, written = explained
    files = written.dicom.paths
    before = {p: p.read_bytes() for p in files}
    with pytest.raises(PacsError, match="run the same command again") as down:
        send_dicom(files, "http://127.0.0.1:9/dicom-web")
    assert "0 of" in str(down.value) and all(p.read_bytes() == before[p] for p in files)
    with running_orthanc(tmp_path / "strict", check_calling_aet=True) as strict:  # stores from listed senders only
        with pytest.raises(PacsError, match="ORTHANCTEST@127.0.0.1"):
            send_dicom(files, f"{strict.ae_title}@127.0.0.1:{strict.dicom_port}")
        assert strict.get("/statistics")["CountInstances"] == 0
    with running_orthanc(tmp_path / "orthanc") as pacs:
        with pytest.raises(PacsError, match="HTTP 404"):
            send_dicom(files, pacs.http + "/no-dicom-web-here")
        first = send_dicom(files[:3], pacs.dicomweb)  # as if the connection broke after three
        assert len(first.sent) == 3
        rest = send_dicom(files, pacs.dicomweb)
        assert len(rest.sent) == len(files) - 3 and len(rest.already) == 3
        assert pacs.get("/statistics")["CountInstances"] == len(files)
        record = json.loads((tmp_path / "out" / SENT_RECORD).read_text())
        assert len(record[pacs.dicomweb]) == len(files) and len(record) == 1  # the failed URLs recorded nothing
        # by C-STORE: the same objects, recorded apart
        aet = f"{pacs.ae_title}@127.0.0.1:{pacs.dicom_port}"
        stored = send_dicom(files, aet)
        assert len(stored.sent) == len(files) and send_dicom(files, aet).sent == []


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("localhost:8042/dicom-web", "has no scheme"),
        ("ftp://host/dicom-web", "not http"),
        ("http:///dicom-web", "names no host"),
        ("A_VERY_LONG_AE_TITLE@host:104", "not a DICOM AE title"),
        ("ORTHANC@host", "not AET@HOST:PORT"),
        ("ORTHANC@host:0", "not between 1 and 65535"),
    ],
)
def test_bad_destinations_are_refused_before_anything_is_sent(destination, message):
    parse = PacsDestination.parse_url if "@" not in destination else PacsDestination.parse_aet
    with pytest.raises(ValueError, match=message):
        parse(destination)


def test_the_cli_sends_a_dicom_series_explained_by_the_phantom_bundle(tmp_path):
    """The issue's user: explain --bundle bundles/phantom_volume_cluscam --input <DICOM folder> --dicom --send URL,
    then the study in the PACS holds the scan, the colour overlay, the map and the report."""
    from monai_cluscam.cli import main

    bundle = Path(__file__).resolve().parents[2] / "bundles" / "phantom_volume_cluscam"
    series = tmp_path / "series"
    write_dicom_series(phantom((40, 48, 40), np.array([20, 24, 20])), np.diag([3.0, 3.0, 3.0, 1.0]), series,
                       patient_id="PAT-9")
    out = tmp_path / "out"
    base = ["explain", "--bundle", str(bundle), "--input", str(series), "--output", str(out), "--quiet",
            "--no-preview", "--dicom", "--num-clusters", "3", "--device", "cpu"]
    with running_orthanc(tmp_path / "orthanc") as pacs:
        assert main([*base, "--send", pacs.dicomweb]) == 0
        (study,) = pacs.get("/studies")
        series_ids = pacs.get(f"/studies/{study}")["Series"]
        kinds = sorted(pacs.get(f"/series/{s}")["MainDicomTags"].get("Modality", "") for s in series_ids)
        assert kinds == ["MR", "OT", "OT", "SR"]  # the scan, the map and the colour overlay, the report
        assert pacs.get("/statistics")["CountInstances"] == 40 + 1 + 40 + 1
        record = json.loads((out / SENT_RECORD).read_text())
        assert len(record[pacs.dicomweb]) == 82
        assert main([*base, "--send", pacs.dicomweb]) == 0  # the rerun reuses the results and sends nothing again
        assert pacs.get("/statistics")["CountInstances"] == 82
    # the PACS is gone: the run still writes its results, says what did not go, and fails
    assert main([*base, "--overwrite", "--send", "http://127.0.0.1:9/dicom-web"]) == 1
    assert (out / "predictions.csv").is_file() and list(out.glob("*_dicom/map/parametric_map.dcm"))
