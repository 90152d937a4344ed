"""The alzheimer_mri_cluscam bundle: metadata and network checks offline, config parsing, the committed
weights, inference end to end on generated slices, and the measured accuracy on the real held-out slices."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_files import bundle_parser, bundle_script
from PIL import Image

from monai_cluscam.io import CLASS_NAMES, load_image

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "alzheimer_mri_cluscam"
CONFIGS = BUNDLE / "configs"
MODEL = BUNDLE / "models" / "model.pt"
DATA = REPO.parent / "shared" / "data" / "alzheimer_mri"

# Measured on the 144 held-out test slices with the committed model (see the bundle's docs/README.md);
# the test allows one more mistake than measured, so a broken model or preprocessing fails.
MEASURED_TEST = {"accuracy": 94 / 144, "balanced_accuracy": 0.5547}


def _bundle_module(name: str):
    return bundle_script(BUNDLE, name)


def _parser(*configs: str):
    return bundle_parser(BUNDLE, *configs)


def _run_bundle(*configs: str, **overrides: str) -> subprocess.CompletedProcess:
    files = [str(CONFIGS / c) for c in configs]
    config_file = files[0] if len(files) == 1 else json.dumps(files)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file, "--bundle_root", str(BUNDLE)]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_configs_parse_and_committed_weights_load():
    infer = _parser("inference.json")
    evaluate = _parser("train.json", "evaluate.json")
    assert evaluate["eval_part"] == "test"
    assert "CheckpointSaver" not in json.dumps(evaluate["validate#handlers"]), "evaluation must not save weights"

    net = infer.get_parsed_content("network_def")
    state = torch.load(MODEL, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    assert MODEL.stat().st_size < 5 * 2**20
    layer = dict(net.named_modules())[infer["target_layers"]]
    seen = []
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        logits = net.eval()(torch.rand(2, 1, 128, 128))
    hook.remove()
    assert logits.shape == (2, len(CLASS_NAMES))
    assert len(seen[0]) == 4 and min(seen[0][2:]) >= 4, f"target layer gives no usable feature map: {seen[0]}"


def test_split_is_stratified_disjoint_and_names_only():
    split = json.loads((CONFIGS / "split.json").read_text())
    parts = [set(split[p]) for p in ("train", "validation", "test")]
    assert sum(len(p) for p in parts) == 960 == len(set.union(*parts))
    for names in parts:
        assert all("/" not in n and n.endswith(".png") for n in names)
        labels = {n.rsplit(".", 1)[0].split("_", 1)[1] for n in names}
        assert labels == set(CLASS_NAMES), "every part holds every class"


def test_data_helpers(tmp_path):
    data = _bundle_module("data")
    pixels = np.zeros((8, 8), np.uint8)
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for name in ("b.png", "a_Mild_Demented.png"):
        Image.fromarray(pixels).save(unlabelled / name)
    items = data.inference_items(unlabelled)
    assert [Path(i["image"]).name for i in items] == ["a_Mild_Demented.png", "b.png"]
    assert {i["label"] for i in items} == {data.UNLABELLED}

    folders = tmp_path / "kaggle"
    for cls in ("MildDemented", "NonDemented"):
        (folders / cls).mkdir(parents=True)
        Image.fromarray(pixels).save(folders / cls / "x.jpg")
    assert [i["label"] for i in data.inference_items(folders)] == [0, 2]

    weights = data.class_weights([{"label": c} for c in (0, 0, 0, 1, 2, 3)])
    assert torch.allclose(weights, torch.tensor([0.5, 1.5, 1.5, 1.5]))
    with pytest.raises(ValueError, match="every class"):
        data.class_weights([{"label": 0}])


def test_inference_end_to_end(tmp_path):
    """Unlabelled slices of two sizes: one CSV row and one overlay per input, on the input's own grid."""
    pytest.importorskip("ignite")
    slices = tmp_path / "slices"
    slices.mkdir()
    yy, xx = np.mgrid[:128, :128]
    tissue = (yy - 64) ** 2 / 55**2 + (xx - 64) ** 2 / 45**2 < 1
    ventricles = (yy - 64) ** 2 + (xx - 64) ** 2 < 12**2
    brain = tissue * 140 - ventricles * 100
    sizes = {"slice_a.png": (128, 128), "slice_b.png": (128, 128), "wide_slice.jpg": (160, 120)}
    for name, (width, height) in sizes.items():
        Image.fromarray(brain.astype(np.uint8)).resize((width, height)).save(slices / name)
    out = tmp_path / "out"
    _run_bundle("inference.json", dataset_dir=slices, output_dir=out, num_clusters=4)

    with open(out / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["file", "prediction", *CLASS_NAMES]
    assert sorted(Path(r["file"]).name for r in rows) == sorted(sizes)
    for row in rows:
        probs = [float(row[c]) for c in CLASS_NAMES]
        assert row["prediction"] == CLASS_NAMES[int(np.argmax(probs))]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    for name, (width, height) in sizes.items():
        stem = name.rsplit(".", 1)[0]
        overlay = out / "overlays" / f"{stem}_cluscam.nii.gz"
        for suffix in ("_cluscam.png", "_cluscam_heat.ctbl", "_cluscam_slicer.py"):
            assert (out / "overlays" / f"{stem}{suffix}").is_file()
        written = nib.load(overlay)
        image = load_image(slices / name)
        assert written.shape[:2] == (width, height) == tuple(image.shape[1:])
        np.testing.assert_allclose(written.affine, image.affine.numpy(), atol=1e-6)
        values = np.asarray(written.dataobj)
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() > 0
    assert len(list((out / "overlays").glob("*_cluscam.nii.gz"))) == len(sizes)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real Alzheimer MRI slices not found at {DATA}")
def test_committed_model_on_held_out_test_slices(tmp_path):
    pytest.importorskip("ignite")
    _run_bundle("train.json", "evaluate.json", dataset_dir=DATA, output_dir=tmp_path)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["n"] == 144
    assert report["accuracy"] >= MEASURED_TEST["accuracy"] - 1.5 / 144
    assert report["balanced_accuracy"] >= MEASURED_TEST["balanced_accuracy"] - 0.02
    assert sum(map(sum, report["confusion_matrix"])) == 144


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real Alzheimer MRI slices not found at {DATA}")
def test_nearest_neighbour_report_splits_held_out_slices_by_neighbour_distance():
    report = _bundle_module("nearest_neighbours").nearest_neighbour_report(str(DATA), "test")
    assert report["slices"] == report["near"]["slices"] + report["far"]["slices"] == 144
    # The docs' claim: a near training neighbour (another slice of the same scan) carries the label.
    assert report["near"]["slices"] >= 30 and report["near"]["accuracy"] >= 0.95
    assert report["far"]["accuracy"] < report["near"]["accuracy"] - 0.3
    everything_near = _bundle_module("nearest_neighbours").nearest_neighbour_report(str(DATA), "test", near=10.0)
    assert everything_near["far"]["slices"] == 0 and everything_near["near"]["accuracy"] == report["accuracy"]
