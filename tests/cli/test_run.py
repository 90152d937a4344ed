"""``monai_cluscam.run.explain_files`` called from Python: what the command line does, as a result object."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_helpers import CLASSES, NET, assert_same_results, explain_args, outputs_of, read_csv, slices
from monai.networks.nets import ResNet

from monai_cluscam.bundle import load_bundle
from monai_cluscam.cli import main
from monai_cluscam.io import load_image
from monai_cluscam.run import RECORD_SUFFIX, explain_files


def test_a_bundle_folder_gives_what_the_command_line_gives(bundle, tmp_path):
    data = slices(tmp_path / "in", 3)
    (data / "broken.png").write_bytes(b"not a png")
    assert main(explain_args(bundle, [data], tmp_path / "cli")) == 1
    out = tmp_path / "py"
    messages: list[str] = []

    result = explain_files(data, out, bundle=bundle, device="cpu", progress=False, log=messages.append)

    assert result.output_dir == out.resolve() and result.method == "cluscam" and result.class_names == CLASSES
    assert [item.input for item in result.explained] == [data / f"s{i}.png" for i in range(3)]
    assert result.failures == [(str(data / "broken.png"), result.failures[0][1])]
    assert "not a readable PNG/JPEG" in result.failures[0][1] and result.failures_csv == out.resolve() / "failures.csv"
    assert messages == [f"failed: {data / 'broken.png'}: {result.failures[0][1]}"]
    assert_same_results(out, tmp_path / "cli")
    assert read_csv(out / "failures.csv") == read_csv(tmp_path / "cli" / "failures.csv")
    rows = read_csv(result.predictions_csv)
    for item, row in zip(result.explained, rows, strict=True):
        assert row["file"] == str(item.input) and row["prediction"] == item.prediction
        np.testing.assert_allclose([float(row[c]) for c in CLASSES], item.probabilities, atol=1e-6)
        assert item.prediction == CLASSES[int(np.argmax(item.probabilities))] and not item.reused
        assert [f.name for f in item.files] == [
            f"{item.input.stem}_cluscam{end}" for end in (".nii.gz", "_heat.ctbl", "_slicer.py", ".png")
        ]
        assert all(f.is_file() for f in item.files) and item.overlay == item.files[0]
        record = json.loads((out / f"{item.input.stem}{RECORD_SUFFIX}").read_text())
        assert record["settings"]["bundle"] == str(bundle.resolve()) and record["settings"]["method"] == "cluscam"
        assert record["probabilities"] == list(item.probabilities)


def test_a_rerun_resumes_and_a_loaded_bundle_works_too(bundle, tmp_path):
    data = slices(tmp_path / "in", 2)
    out = tmp_path / "out"
    first = explain_files([data / "s0.png"], out, bundle=bundle, device="cpu", progress=False)
    kept = outputs_of(out)
    loaded = load_bundle(bundle, device="cpu")
    again = explain_files(data, out, bundle=loaded, progress=False)
    assert [item.reused for item in again.explained] == [True, False] and again.reused == 1
    assert again.explained[0] == replace(first.explained[0], reused=True)  # read back from its record
    assert {k: v for k, v in outputs_of(out).items() if k.startswith("s0_")} == {
        k: v for k, v in kept.items() if k.startswith("s0_")
    }
    assert again.failures == [] and again.failures_csv is None and not (out / "failures.csv").exists()
    gradcam = explain_files(data, out, bundle=loaded, method="Grad-CAM", progress=False, log=lambda _: None)
    assert gradcam.method == "gradcam" and not gradcam.explained and len(gradcam.failures) == 2
    assert all("pass --overwrite" in why for _, why in gradcam.failures)


def test_a_network_with_its_preprocessing(tmp_path):
    data = slices(tmp_path / "in", 2)
    torch.manual_seed(0)
    net = ResNet(**{k: v for k, v in NET.items() if k != "_target_"})

    def scaled(item: dict) -> dict:
        image = load_image(item["image"])
        return {"image": image / 255.0}

    result = explain_files(
        [data],
        tmp_path / "out",
        network=net,
        preprocessing=scaled,
        class_names=CLASSES,
        target_layers="layer3",
        num_clusters=4,
        preview=False,
        progress=False,
    )
    assert [item.input.name for item in result.explained] == ["s0.png", "s1.png"] and not result.failures
    assert all(len(item.files) == 3 for item in result.explained)  # no preview
    overlay = nib.load(result.explained[0].overlay)
    assert overlay.shape == (48, 40, 1)  # on the slice's own grid
    record = json.loads((tmp_path / "out" / f"s0{RECORD_SUFFIX}").read_text())
    assert record["settings"] == {
        "bundle": None,
        "class_names": CLASSES,
        "method": "cluscam",
        "num_clusters": 4,
        "target_layer": "layer3",
    }
    assert Path(read_csv(result.predictions_csv)[1]["file"]) == data / "s1.png"


def test_usage_errors_raise(bundle, tmp_path):
    data = slices(tmp_path / "in", 1)
    with pytest.raises(ValueError, match="not both"):
        explain_files(data, tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="class_names"):
        explain_files(data, tmp_path / "o", network=torch.nn.Linear(2, 2), progress=False)
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain_files(data, tmp_path / "o", bundle=bundle, method="nope", progress=False)
    with pytest.raises(ValueError, match="does not take num_clusters"):
        explain_files(data, tmp_path / "o", bundle=bundle, method="gradcam", num_clusters=3, progress=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "predictions.csv").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a monai-cluscam table"):
        explain_files(data, tmp_path / "taken", bundle=bundle, progress=False)
    assert (tmp_path / "taken" / "predictions.csv").read_text() == "keep me"


def _framed_slices(folder: Path, n: int) -> Path:
    """PNG slices whose subject (random grey values 60..255) sits inside a black frame 8 pixels wide."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        pixels = np.zeros((40, 48), np.uint8)
        pixels[8:-8, 8:-8] = rng.integers(60, 255, (24, 32), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"f{i}.png")
    return folder


def test_the_bundles_baseline_and_foreground_settings(bundle, tmp_path):
    data = _framed_slices(tmp_path / "in", 2)
    configured = tmp_path / "configured"
    configured.mkdir()
    for part in ("configs", "models"):
        (configured / part).mkdir()
        for f in (bundle / part).iterdir():
            (configured / part / f.name).write_bytes(f.read_bytes())
    config = json.loads((configured / "configs" / "inference.json").read_text())
    (configured / "configs" / "inference.json").write_text(
        json.dumps({**config, "baseline": "blur", "foreground": True})
    )
    assert (load_bundle(configured).baseline, load_bundle(configured).foreground) == ("blur", True)

    def maps(result):
        return [np.asarray(nib.load(item.overlay).dataobj) for item in result.explained]

    from_config = explain_files(data, tmp_path / "a", bundle=configured, device="cpu", progress=False)
    given = explain_files(data, tmp_path / "b", bundle=bundle, baseline="blur", foreground=True, progress=False)
    plain = explain_files(data, tmp_path / "c", bundle=bundle, progress=False)
    for a, b, c in zip(maps(from_config), maps(given), maps(plain), strict=True):
        np.testing.assert_array_equal(a, b)
        frame = np.ones(a.shape, bool)
        frame[3:-3, 3:-3] = False  # well outside the subject, beyond the resampling's reach
        # restricted to the subject; the plain map has none there either: black, so no mask can change it
        assert a[frame].max() == 0 and a.max() > 0.5 and c[frame].max() == 0 and c.max() > 0.5
    record = json.loads((tmp_path / "a" / f"f0{RECORD_SUFFIX}").read_text())
    assert record["settings"]["baseline"] == "blur" and record["settings"]["foreground"] is True
    assert "baseline" not in json.loads((tmp_path / "c" / f"f0{RECORD_SUFFIX}").read_text())["settings"]
    # the command line overrides the bundle's settings
    assert main(explain_args(configured, [data], tmp_path / "d", "--baseline", "zero", "--no-foreground")) == 0
    for c, d in zip(
        maps(plain),
        [np.asarray(nib.load(tmp_path / "d" / f"f{i}_cluscam.nii.gz").dataobj) for i in range(2)],
        strict=True,
    ):
        np.testing.assert_array_equal(c, d)
    assert main(explain_args(bundle, [data], tmp_path / "e", "--foreground", "0.5")) == 0
    strict = np.asarray(nib.load(tmp_path / "e" / "f0_cluscam.nii.gz").dataobj)
    assert strict[frame].max() == 0 and (strict > 0).sum() < (maps(plain)[0] > 0).sum()
    (configured / "configs" / "inference.json").write_text(json.dumps({**config, "foreground": "false"}))
    with pytest.raises(ValueError, match=r"inference.json: foreground must be True, False, .*got 'false'"):
        load_bundle(configured)
    with pytest.raises(ValueError, match="foreground must be True, False, a finite grey value"):
        explain_files(data, tmp_path / "g", bundle=bundle, foreground="false", progress=False)
    assert not (tmp_path / "g").exists()  # refused before anything was written
    (configured / "configs" / "inference.json").write_text(json.dumps({**config, "baseline": "noise"}))
    with pytest.raises(ValueError, match=r"baseline must be one of .* \(baseline of .*inference.json\)"):
        explain_files(data, tmp_path / "h", bundle=configured, progress=False)
    with pytest.raises(ValueError, match="method 'gradcam' does not take baseline"):
        explain_files(data, tmp_path / "f", bundle=bundle, method="gradcam", baseline="blur", progress=False)


def test_several_target_layers_from_the_command_line(bundle, tmp_path):
    data = slices(tmp_path / "in", 1)
    assert main(explain_args(bundle, [data], tmp_path / "o", "--target-layer", "layer2, layer3")) == 0
    record = json.loads((tmp_path / "o" / f"s0{RECORD_SUFFIX}").read_text())
    assert record["settings"]["target_layer"] == ["layer2", "layer3"]
    given = explain_files([data], tmp_path / "p", bundle=bundle, target_layers=["layer2", "layer3"], progress=False)
    single = explain_files([data], tmp_path / "q", bundle=bundle, target_layers="layer3", progress=False)
    fused = np.asarray(nib.load(tmp_path / "o" / "s0_cluscam.nii.gz").dataobj)
    np.testing.assert_array_equal(fused, np.asarray(nib.load(given.explained[0].overlay).dataobj))
    assert not np.array_equal(fused, np.asarray(nib.load(single.explained[0].overlay).dataobj))
    assert main(explain_args(bundle, [data], tmp_path / "r", "--target-layer", "layer2,layer9")) != 0
