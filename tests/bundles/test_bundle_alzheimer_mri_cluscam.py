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

from monai_cluscam.data import CLASS_NAMES
from monai_cluscam.io import load_image

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "alzheimer_mri_cluscam"
CONFIGS = BUNDLE / "configs"
MODEL = BUNDLE / "models" / "model.pt"
DATA = REPO.parent / "shared" / "data" / "alzheimer_mri"

# Measured on the 960 held-out test slices with the committed model (see the bundle's docs/README.md); the
# test allows one more mistake than measured, so a broken model or preprocessing fails.
MEASURED_TEST = {"accuracy": 944 / 960, "balanced_accuracy": 0.9585, "ece": 0.0136, "novel_accuracy": 78 / 91}
TRAIN = DATA / "train"


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
    train = _parser("train.json")
    evaluate = _parser("train.json", "evaluate.json")
    assert evaluate["eval_part"] == "test"
    assert "CheckpointSaver" not in json.dumps(evaluate.get("run")), "evaluation must not save weights"
    assert infer["network_def"] == train["network_def"], "inference must build the network that training trains"

    net = infer.get_parsed_content("network_def")
    state = torch.load(MODEL, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    assert MODEL.stat().st_size < 25 * 2**20
    layers = infer["target_layers"]
    seen = []
    hooks = [dict(net.named_modules())[name].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
             for name in layers]
    with torch.no_grad():
        logits = net.eval()(torch.rand(2, 1, 128, 128))
    for hook in hooks:
        hook.remove()
    assert logits.shape == (2, len(CLASS_NAMES))
    channels = [shape[1] for shape in seen]
    # ClusCAM's 1 + K per layer passes must cost a tenth of Score-CAM's 1 + sum of C on the shipped layers, and
    # the finest layer must be finer than the 4 x 4 grid of layer4
    passes = 1 + infer["num_clusters"] * len(layers)
    assert 10 * passes <= 1 + sum(channels), (channels, infer["num_clusters"])
    assert min(shape[-1] for shape in seen) == 4 and max(shape[-1] for shape in seen) >= 16


def test_split_is_stratified_and_names_only():
    split = json.loads((CONFIGS / "split.json").read_text())
    assert list(split) == ["validation"]
    held = split["validation"]
    assert len(held) == len(set(held)) == 512
    per_class = {name: sum(p.split("/")[0] == name for p in held) for name in CLASS_NAMES}
    # 10 % of each class of the 5,120-slice training split (724, 49, 2,566, 1,781 slices)
    assert per_class == {"Mild_Demented": 72, "Moderate_Demented": 5, "Non_Demented": 257, "Very_Mild_Demented": 178}
    assert all(p.count("/") == 1 and p.endswith(".jpg") for p in held)


def _class_folders(root: Path, per_class: int = 3) -> Path:
    for c, name in enumerate(CLASS_NAMES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8), 10 * c + i, np.uint8)).save(root / name / f"{i}.png")
    return root


def _split(root: Path, names: list[str]) -> Path:
    path = root.parent / f"{root.name}_split.json"
    path.write_text(json.dumps({"validation": names}))
    return path


def test_split_items_parts_are_disjoint_and_cover_the_folder(tmp_path):
    data = _bundle_module("data")
    root = _class_folders(tmp_path / "train")
    split = _split(root, [f"{name}/0.png" for name in CLASS_NAMES])
    train, validation = (data.split_items(root, split, part) for part in ("train", "validation"))
    assert [Path(i["image"]).name for i in validation] == ["0.png"] * 4
    assert [i["label"] for i in validation] == [0, 1, 2, 3]
    assert len(train) == 8 and not {i["image"] for i in train} & {i["image"] for i in validation}
    assert data.evaluation_items(tmp_path, root, split, "validation") == validation
    with pytest.raises(ValueError, match="eval_part"):
        data.evaluation_items(tmp_path, root, split, "train")


@pytest.mark.parametrize(
    "fault, message",
    [
        ("missing class", r"no slices of \['Moderate_Demented'\]"),
        ("unreadable image", r"cannot be read.*1\.png"),
        ("labels disagree", r"disagrees with the class folders.*Non_Demented/2\.png"),
        ("empty split", "lists no validation slices"),
        ("class absent from a part", r"the 'validation' part .* no slices of"),
        ("split names missing files", r"lacks 1 slices of the validation split.*gone\.png"),
        ("no folder", "does not exist"),
    ],
)
def test_split_items_refuses_bad_training_data_before_training(tmp_path, fault, message):
    """Each fault is named (file or class) before any training starts; nothing is skipped silently."""
    data = _bundle_module("data")
    root = _class_folders(tmp_path / "train")
    names = [f"{name}/0.png" for name in CLASS_NAMES]
    if fault == "missing class":
        for f in (root / "Moderate_Demented").iterdir():
            f.unlink()
        (root / "Moderate_Demented").rmdir()
        names.remove("Moderate_Demented/0.png")
    elif fault == "unreadable image":
        (root / "Mild_Demented" / "1.png").write_bytes(b"not a picture")
    elif fault == "labels disagree":
        rows = [f"{name}/{i}.png,{name}" for name in CLASS_NAMES for i in range(3)]
        rows[rows.index("Non_Demented/2.png,Non_Demented")] = "Non_Demented/2.png,Mild_Demented"
        (root / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    elif fault == "empty split":
        names = []
    elif fault == "class absent from a part":
        names.remove("Mild_Demented/0.png")
    elif fault == "split names missing files":
        names.append("Mild_Demented/gone.png")
    elif fault == "no folder":
        root = tmp_path / "absent"
    part = "validation" if fault == "class absent from a part" else "train"
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        data.split_items(root, _split(tmp_path / "train", names), part)


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

    with pytest.raises(ValueError, match="no slices of"):
        data.held_out_items(unlabelled.parent / "kaggle")


def test_calibration_folds_the_temperature_into_the_last_layer(tmp_path):
    """The shipped weights carry the fitted temperature: logits divided by T, predictions unchanged."""
    calibrate = _bundle_module("calibrate")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    with torch.no_grad():
        net[-1].weight.mul_(20.0)  # an overconfident network
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    images = torch.randn(200, 1, 4, 4)
    with torch.no_grad():
        before = net(images)
    labels = torch.where(torch.rand(200) < 0.7, before.argmax(1), torch.randint(0, 4, (200,)))
    loader = [{"image": images[i : i + 50], "label": labels[i : i + 50]} for i in range(0, 200, 50)]
    record = calibrate.calibrate(net, ckpt, loader)

    assert record["temperature"] > 1.5 and record["validation_nll_after"] < record["validation_nll_before"]
    assert json.loads((tmp_path / "calibration.json").read_text()) == record
    reloaded = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    reloaded.load_state_dict(torch.load(ckpt, weights_only=True))
    with torch.no_grad():
        after = reloaded(images)
    torch.testing.assert_close(after, before / record["temperature"], rtol=1e-4, atol=1e-4)
    assert torch.equal(after.argmax(1), before.argmax(1))


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
        if (width, height) == (128, 128):  # the network's grid: the min-max normalised map itself
            assert values.min() == 0 and values.max() == 1
        else:  # resampled: interpolation keeps the map's range, near its ends (a sharp peak shares its top)
            assert 0 <= values.min() < 0.05 and 0.8 < values.max() <= 1
    assert len(list((out / "overlays").glob("*_cluscam.nii.gz"))) == len(sizes)


@pytest.mark.skipif(not TRAIN.is_dir(), reason=f"real Alzheimer MRI slices not found at {DATA}")
def test_committed_model_on_held_out_test_slices(tmp_path):
    _run_bundle("train.json", "evaluate.json", dataset_dir=DATA, output_dir=tmp_path)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["n"] == 960 and sum(map(sum, report["confusion_matrix"])) == 960
    assert report["accuracy"] >= MEASURED_TEST["accuracy"] - 1.5 / 960
    assert report["balanced_accuracy"] >= MEASURED_TEST["balanced_accuracy"] - 0.02
    assert report["ece"] <= MEASURED_TEST["ece"] + 0.01
    novel = report["novel"]
    assert 0 < novel["n"] < 960 and novel["accuracy"] >= MEASURED_TEST["novel_accuracy"] - 1.5 / novel["n"]
    # the quantiles run over all test slices: most have a close training neighbour, some do not
    assert novel["nearest_correlation_quantiles"]["0.05"] < 0.99 < novel["nearest_correlation_quantiles"]["0.5"]
    assert report["novel_full_resolution"]["n"] >= novel["n"], "JPEG noise lowers full-resolution correlation"
