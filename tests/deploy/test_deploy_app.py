"""The MONAI Deploy application (examples/deploy_app/app.py) end to end with the real SDK: a DICOM folder in, the
Parametric Map, the colour overlays and the report out, on the input series' slices; and ClusCAMOperator's
conversion of the SDK's Image and its refusals. Skipped where monai-deploy-app-sdk is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("monai.deploy.core", reason="the MONAI Deploy App SDK (monai-deploy-app-sdk) is not installed")
hd = pytest.importorskip("highdicom")

from monai.deploy.core import Fragment  # noqa: E402
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator  # noqa: E402
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator  # noqa: E402
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from monai_cluscam.data import CLASS_NAMES, make_phantom  # noqa: E402
from monai_cluscam.deploy import ClusCAMOperator, image_to_metatensor, link_series  # noqa: E402
from monai_cluscam.io import load_image, write_dicom_series  # noqa: E402
from monai_cluscam.io.dicom_report import read_report  # noqa: E402
from monai_cluscam.run import explain_files  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "deploy_app" / "app.py"
BUNDLE = REPO / "bundles" / "phantom_volume_cluscam"
BUNDLE_2D = REPO / "bundles" / "alzheimer_mri_cluscam"
K = 6  # fewer clusters than the bundle's 20: the same code, a quicker test
SHAPE = (56, 64, 40)  # columns, rows, slices
SPACING = (3.2, 2.7, 3.6)  # column and row spacing differ: the SDK's own affine swaps them


def _read(path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _oblique(spacing, shape) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [14.0, -9.0, 21.0], degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2) + [4.0, -6.0, 9.0]
    return affine


@pytest.fixture(scope="module")
def dicom_input(tmp_path_factory) -> dict:
    """A DICOM folder as a PACS export gives it: an oblique MR series of non-square pixels with shuffled file
    names, two folders down, beside a CT series (which the application's rules leave out) and a text file."""
    root = tmp_path_factory.mktemp("deploy_input")
    mr = root / "study" / "mr_series"
    fov = [s * n for s, n in zip(SPACING, SHAPE, strict=True)]
    phantom = make_phantom("Moderate_Demented", seed=5, shape=SHAPE, fov_mm=fov)
    files = write_dicom_series(phantom.image[0], _oblique(SPACING, SHAPE), mr, shuffle_names=True, seed=3,
                               patient_id="PAT-7", patient_name="Doe^John")
    ct = root / "study" / "ct_series"
    study = _read(files[0]).StudyInstanceUID
    for path in write_dicom_series(np.random.default_rng(0).random((8, 8, 3)) * 100, np.diag([2.0, 2.0, 2.0, 1.0]),
                                   ct, study_uid=study):
        ds = _read(path)
        ds.Modality = "CT"
        ds.save_as(path)
    (root / "README.txt").write_text("not DICOM\n")
    sources = [_read(f) for f in files]
    return {"root": root, "mr": mr, "sources": {ds.SOPInstanceUID: ds for ds in sources}}


def _sdk_image(folder: Path, rules: str | None = None):
    """The SDK's own loading chain run in-process, as its operators' compute() runs it."""
    fragment = Fragment()
    loader = DICOMDataLoaderOperator(fragment, name="loader")
    selector = DICOMSeriesSelectorOperator(fragment, rules=rules or "", name="selector")
    to_volume = DICOMSeriesToVolumeOperator(fragment, name="to_volume")
    selection = selector.filter(json.loads(rules) if rules else None, loader.load_data_to_studies(folder))
    return to_volume.convert_to_image(selection), selection


MR_RULES = '{"selections": [{"name": "MR", "conditions": {"Modality": "(?i)MR"}}]}'


def test_sdk_image_becomes_the_metatensor_the_loader_reads(dicom_input, tmp_path):
    """The SDK's Image of the oblique, non-square series equals load_image of the series folder: same voxels,
    same axis order, same affine (the SDK's own nifti_affine_transform is not used)."""
    image, selection = _sdk_image(dicom_input["root"], MR_RULES)
    series = selection[0].selected_series[0].series
    datasets = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
    assert {ds.SOPInstanceUID for ds in datasets} == set(dicom_input["sources"])
    source = link_series(datasets, tmp_path / "linked")
    tensor = image_to_metatensor(image, source)
    expected = load_image(dicom_input["mr"])
    assert tuple(tensor.shape) == (1, *SHAPE)
    np.testing.assert_allclose(tensor.affine.numpy(), expected.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(tensor.numpy(), expected.numpy(), rtol=1e-5, atol=1e-3)
    assert tensor.meta["SeriesInstanceUID"] == series.SeriesInstanceUID
    assert tensor.meta["filename_or_obj"] == str(source)


def test_square_pixels_agree_with_the_sdks_own_affine(tmp_path):
    """Where the SDK's affine is right (square pixels), it is the one the conversion reads from the series: the
    axis order (columns, rows, slices) and the RAS convention are the SDK's."""
    affine = _oblique((2.0, 2.0, 3.0), (12, 10, 6))
    write_dicom_series(np.random.default_rng(1).random((12, 10, 6)) * 50, affine, tmp_path / "in", shuffle_names=True)
    image, selection = _sdk_image(tmp_path / "in")
    datasets = [s.get_native_sop_instance() for s in selection[0].selected_series[0].series.get_sop_instances()]
    tensor = image_to_metatensor(image, link_series(datasets, tmp_path / "linked"))
    np.testing.assert_allclose(tensor.affine.numpy(), image.metadata()["nifti_affine_transform"], atol=1e-4)
    np.testing.assert_allclose(tensor.affine.numpy(), affine, atol=1e-3)


@pytest.fixture(scope="module")
def app_run(dicom_input, tmp_path_factory) -> dict:
    """The example application run once with the SDK's local runner (the app as a script) on the DICOM folder."""
    work = tmp_path_factory.mktemp("deploy_run")
    out = work / "output"
    cmd = [sys.executable, str(APP), "-i", str(dicom_input["root"]), "-o", str(out), "-m", str(BUNDLE),
           "--num-clusters", str(K), "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1, sorted(p.name for p in out.iterdir())
    return {"out": out, "folder": folders[0], "log": done.stdout + done.stderr}


def test_app_writes_map_overlays_and_report_of_the_mr_series(app_run, dicom_input):
    sources = dicom_input["sources"]
    first = next(iter(sources.values()))
    folder = app_run["folder"]
    assert folder.name == f"{first.SeriesInstanceUID}_ClusCAM_dicom"
    assert sorted(p.name for p in folder.iterdir()) == ["map", "overlay", "report"]  # no scan copy: the input is DICOM
    overlays = sorted((folder / "overlay").glob("IM*.dcm"))
    assert len(overlays) == SHAPE[2]
    for path in [folder / "map" / "parametric_map.dcm", folder / "report" / "report.dcm", *overlays]:
        ds = _read(path)
        assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.PatientID == "PAT-7", path.name
        assert ds.SeriesInstanceUID != first.SeriesInstanceUID, path.name
    for path in overlays:
        ds = _read(path)
        assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in sources


def test_the_map_lies_on_the_input_series_slices(app_run, dicom_input):
    """One frame per input slice, each naming its slice and standing at its position, with its orientation and
    pixel spacing: the map's grid is the series' grid."""
    sources = dicom_input["sources"]
    first = next(iter(sources.values()))
    ds = _read(app_run["folder"] / "map" / "parametric_map.dcm")
    pm = hd.pm.ParametricMap.from_dataset(ds)
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert int(ds.NumberOfFrames) == SHAPE[2] and (ds.Rows, ds.Columns) == (SHAPE[1], SHAPE[0])
    shared = ds.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float),
                               np.asarray(first.ImageOrientationPatient, float), atol=1e-6)
    np.testing.assert_allclose(np.asarray(shared.PixelMeasuresSequence[0].PixelSpacing, float),
                               np.asarray(first.PixelSpacing, float), atol=1e-6)
    referenced = []
    for frame in ds.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float),
                                   np.asarray(sources[uid].ImagePositionPatient, float), atol=1e-4)
        referenced.append(uid)
    assert sorted(referenced) == sorted(sources)
    values = pm.pixel_array
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() > 0


def test_the_map_is_the_one_explain_files_writes_from_the_same_series(app_run, dicom_input, tmp_path):
    """The SDK's route (its loader, its Image, the operator) and the package's own (explain_files on the series
    folder) give the same map on every slice: the SDK's image reached the classifier on the scan's grid."""
    reference = explain_files(dicom_input["mr"], tmp_path / "ref", bundle=BUNDLE, num_clusters=K, device="cpu",
                              dicom=True, preview=False, progress=False)
    assert reference.failures == []
    (ref_map,) = [p for p in reference.explained[0].dicom if p.parent.name == "map"]

    def frames(path: Path) -> dict[str, np.ndarray]:
        ds = _read(path)
        pixels = hd.pm.ParametricMap.from_dataset(ds).pixel_array
        uids = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                for f in ds.PerFrameFunctionalGroupsSequence]
        return dict(zip(uids, pixels, strict=True))

    ours, theirs = frames(app_run["folder"] / "map" / "parametric_map.dcm"), frames(ref_map)
    assert sorted(ours) == sorted(theirs)
    for uid, values in ours.items():
        np.testing.assert_allclose(values, theirs[uid], atol=1e-5)
    report = read_report(_read(app_run["folder"] / "report" / "report.dcm"))
    assert report.predicted == reference.explained[0].prediction


def test_the_report_holds_the_prediction_and_references_the_series_and_map(app_run, dicom_input):
    report = read_report(_read(app_run["folder"] / "report" / "report.dcm"))
    pm = _read(app_run["folder"] / "map" / "parametric_map.dcm")
    assert report.predicted in CLASS_NAMES and set(report.probabilities) == set(CLASS_NAMES)
    assert report.predicted == max(report.probabilities, key=report.probabilities.get)
    assert sum(report.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert report.model == BUNDLE.name and report.method == "ClusCAM"
    assert report.parameters["num_clusters"] == str(K)
    assert report.parametric_map_uid == pm.SOPInstanceUID
    assert set(report.source_uids) == set(dicom_input["sources"])
    assert f"Explained the series: {report.predicted} (" in app_run["log"]


@pytest.fixture(scope="module")
def selected(dicom_input):
    return _sdk_image(dicom_input["root"], MR_RULES)


def test_operator_reruns_only_with_overwrite(selected, tmp_path):
    image, selection = selected
    operator = ClusCAMOperator(Fragment(), bundle=BUNDLE, output_folder=tmp_path, num_clusters=K, device="cpu",
                               name="cluscam")
    result = operator.explain(image, selection)
    assert result.files.parametric_map.exists() and len(result.files.secondary_capture) == SHAPE[2]
    assert result.prediction in CLASS_NAMES and result.paths
    before = result.files.parametric_map.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite"):
        operator.explain(image, selection)
    assert result.files.parametric_map.stat().st_mtime_ns == before  # the earlier result is left as it was
    operator.overwrite = True
    again = operator.explain(image, selection)
    assert again.files.folder == result.files.folder and again.probabilities == pytest.approx(result.probabilities)


def test_deidentified_results_name_nothing_of_the_source(selected, dicom_input, tmp_path):
    image, selection = selected
    first = next(iter(dicom_input["sources"].values()))
    operator = ClusCAMOperator(Fragment(), bundle=BUNDLE, output_folder=tmp_path, num_clusters=K, device="cpu",
                               deidentify=True, name="cluscam")
    result = operator.explain(image, selection)
    assert first.SeriesInstanceUID not in result.files.folder.name and result.files.folder.name.startswith("series-")
    assert len(result.files.scan) == SHAPE[2]  # a copy of the scan in a new Study, which the map references
    for path in result.paths:
        ds = _read(path)
        assert ds.StudyInstanceUID != first.StudyInstanceUID and ds.PatientID.startswith("ANON-"), path
        assert str(ds.get("PatientName", "")) == "" and "PAT-7" not in str(ds)
    assert set(read_report(_read(result.files.report)).source_uids).isdisjoint(dicom_input["sources"])


def test_operator_refuses_what_it_cannot_explain(selected, tmp_path):
    image, selection = selected
    flat = ClusCAMOperator(Fragment(), bundle=BUNDLE_2D, output_folder=tmp_path, device="cpu", name="flat")
    with pytest.raises(ValueError, match="2D images but the series has 40 slices"):
        flat.explain(image, selection)
    operator = ClusCAMOperator(Fragment(), bundle=BUNDLE, output_folder=tmp_path, num_clusters=K, device="cpu",
                               name="cluscam")
    with pytest.raises(ValueError, match="not an SDK Image"):
        operator.explain(None, selection)
    with pytest.raises(ValueError, match="no selected series"):
        operator.explain(image, [])
    assert not any(tmp_path.glob("*_dicom"))
    with pytest.raises(FileNotFoundError):
        ClusCAMOperator(Fragment(), bundle=tmp_path / "missing", output_folder=tmp_path, name="bad")


def test_app_without_a_bundle_says_how_to_pass_one(dicom_input, tmp_path):
    done = subprocess.run([sys.executable, str(APP), "-i", str(dicom_input["root"]), "-o", str(tmp_path / "o"),
                           "-m", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode != 0
    assert "not a bundle folder" in done.stderr and "-m" in done.stderr
