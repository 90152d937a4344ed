"""``make demo`` end to end: the 16 real sample slices through the 2D bundle, phantoms through the 3D bundle."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_cluscam.data import foreground_mask
from monai_cluscam.io import load_image
from monai_cluscam.metrics import background_mask

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "bundles" / "alzheimer_mri_cluscam" / "sample_data"
CLASSES = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
SHARE = re.compile(r"([\d.]+) \(([\d.]+)\)")


def _labels() -> dict[str, str]:
    with (SAMPLES / "labels.csv").open(newline="") as stream:
        return {row["file"]: row["label"] for row in csv.DictReader(stream)}


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _array(path: Path) -> np.ndarray:
    """A written image, map or mask as a float array without its channel and singleton axes."""
    return np.squeeze(load_image(path).as_tensor().numpy()).astype(np.float64)


def _share(heat: np.ndarray, mask: np.ndarray) -> float:
    """The share of the map's mass inside ``mask``, computed here from the files."""
    return float((heat * mask).sum() / heat.sum())


def test_sample_data_is_16_real_slices_4_per_class():
    labels = _labels()
    assert len(labels) == 16 and sorted(labels.values()) == sorted(CLASSES * 4)
    images = sorted(p.name for p in SAMPLES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    assert images == sorted(labels)  # every listed file is there, and no other image
    notice = (SAMPLES / "README.md").read_text()
    for needed in ("Falah/Alzheimer_MRI", "Apache-2.0", "OASIS", "data_license.txt", "not for diagnosis"):
        assert needed in notice


def test_demo_explains_real_slices_and_phantoms(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--output", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2D, real slices:" in done.stdout and str(out / "report.md") in done.stdout
    report = (out / "report.md").read_text()
    two_d, three_d = report.split("\n## 3D")

    # 2D: one row per real slice, with its true class, the prediction, p, the shares inside the brain and on the
    # background, where the map peaks, the overlay
    labels = _labels()
    rows = [_cells(line) for line in two_d.splitlines() if line.startswith("| ") and _cells(line)[0] in labels]
    assert sorted(r[0] for r in rows) == sorted(labels)
    with (out / "slices" / "predictions.csv").open(newline="") as stream:
        predicted = {Path(r["file"]).name: r for r in csv.DictReader(stream)}
    in_brain = []
    for file, truth, prediction, p, share, on_background, peak, overlay in rows:
        assert truth == labels[file] and prediction in CLASSES
        probabilities = {c: float(predicted[file][c]) for c in CLASSES}
        assert float(p) == round(max(probabilities.values()), 2)
        assert predicted[file]["prediction"] == prediction and probabilities[prediction] == max(probabilities.values())
        inside, uniform = map(float, SHARE.fullmatch(share).groups())
        preview = out / re.fullmatch(r"!\[.*\]\((.+)\)", overlay).group(1)
        assert preview.parent == out / "slices" and preview.stat().st_size > 1000
        # the shares recomputed from the written overlay and the slice's foreground (the brain)
        heat = _array(preview.with_name(preview.name.replace(".png", ".nii.gz")))
        brain = np.squeeze(foreground_mask(torch.from_numpy(_array(SAMPLES / file))[None] / 255.0).numpy())
        assert inside == pytest.approx(_share(heat, brain), abs=0.0051)
        assert uniform == pytest.approx(brain.mean(), abs=0.0051)
        assert 0.2 < uniform < 0.8  # the brain is a good part of the slice, not all of it
        in_brain.append(_share(heat, brain))
        background = background_mask(torch.from_numpy(_array(SAMPLES / file))[None, None] / 255.0)[0, 0].numpy()
        off, off_uniform = map(float, SHARE.fullmatch(on_background).groups())
        assert off == pytest.approx(_share(heat, background), abs=0.00051) and off == 0.0  # no heat on the black
        assert off_uniform == pytest.approx(background.mean(), abs=0.00051) and off_uniform > 0.2
        # every map peaks on the brain, never on the background or at the image's border
        assert peak == "brain" and bool(brain.flatten()[int(heat.argmax())])
    correct = sum(r[1] == r[2] for r in rows)
    summary = re.search(r"Summary: (\d+) of 16 slices classified correctly \(accuracy ([\d.]+)\); mean share of the "
                        r"map inside the brain ([\d.]+)", two_d)
    assert summary and int(summary.group(1)) == correct and float(summary.group(2)) == round(correct / 16, 2)
    assert float(summary.group(3)) == pytest.approx(np.mean(in_brain), abs=0.0051)

    # 3D: the phantom volumes and the DICOM series, scored against their ground truth and chance
    rows = [_cells(line) for line in three_d.splitlines() if re.match(r"\| (volumes|dicom)/", line)]
    assert sum(r[0].startswith("volumes/") for r in rows) == 4 and sum(r[0].startswith("dicom/") for r in rows) == 1
    phantoms = {}
    for group in ("volumes", "dicom"):
        folder = out / "inputs" / group
        for item in json.loads((folder / "dataset.json").read_text())["items"]:
            phantoms[f"{group}/{Path(item['image']).name}"] = {
                k: folder / item[k] for k in ("mask", "brain_mask", "region_mask")}
    for row in rows:
        assert row[2] != "failed"
        group, name = row[0].split("/")
        heat = _array(out / group / f"{name.removesuffix('.nii.gz')}_cluscam.nii.gz")
        brain = _array(phantoms[row[0]]["brain_mask"]) > 0
        share, uniform = map(float, SHARE.fullmatch(row[6]).groups())  # outside brain, against a uniform map
        assert share == pytest.approx(_share(heat, ~brain), abs=0.0051)
        assert uniform == pytest.approx(1 - brain.mean(), abs=0.0051)
        region = _array(phantoms[row[0]]["region_mask"]) > 0  # in the atrophy region, for every class
        share, uniform = map(float, SHARE.fullmatch(row[5]).groups())
        assert share == pytest.approx(_share(heat, region), abs=0.00051)
        assert uniform == pytest.approx(region.mean(), abs=0.00051) and 0 < uniform < 0.1
        if row[1] != "Non_Demented":  # atrophic phantoms: in atrophy, against the atrophy's share of the image
            atrophy = _array(phantoms[row[0]]["mask"]) > 0
            share, uniform = map(float, SHARE.fullmatch(row[4]).groups())
            assert share == pytest.approx(_share(heat, atrophy), abs=0.00051)
            assert uniform == pytest.approx(atrophy.mean(), abs=0.00051) and 0 < uniform < 0.2
        preview = out / re.search(r"!\[\]\((.+)\)", row[7]).group(1)
        assert preview.stat().st_size > 1000
    assert len(list((out / "volumes").glob("*_cluscam.nii.gz"))) == 4
