"""Helpers of the command-line tests: a tiny bundle, input slices, the CLI's tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.networks.nets import ResNet
from PIL import Image

NET = {"_target_": "ResNet", "block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64],
       "spatial_dims": 2, "n_input_channels": 1, "num_classes": 3}
CLASSES = ["low", "mid", "high"]


def make_bundle(root: Path, spatial_dims: int = 2) -> Path:
    """A bundle folder: a seeded ResNet on 32 x 32 slices (or 16^3 volumes), three classes, ``load_image``."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    net = dict(NET, spatial_dims=spatial_dims)
    if spatial_dims == 3:
        net["block_inplanes"] = [4, 8, 16, 32]
    config = {
        "imports": ["$from monai_cluscam.io import load_image"],
        "network_def": net,
        "target_layers": "layer3",
        "class_names": CLASSES,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Lambdad", "keys": "image", "func": "$load_image"},
                {"_target_": "ScaleIntensityd", "keys": "image"},
                {"_target_": "Resized", "keys": "image", "spatial_size": [32, 32] if spatial_dims == 2 else [16] * 3},
            ],
        },
    }
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    kwargs = {k: v for k, v in net.items() if k != "_target_"}
    torch.save(ResNet(**kwargs).state_dict(), root / "models" / "model.pt")
    return root


def slices(folder: Path, n: int, seed: int = 0, prefix: str = "s") -> Path:
    """``n`` random 40 x 48 greyscale PNG slices ``<prefix>0.png ...`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(folder / f"{prefix}{i}.png")
    return folder


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def explain_args(bundle: Path, inputs: list, out: Path, *extra: str) -> list[str]:
    """The argument list of ``monai-cluscam explain`` (quiet)."""
    return ["explain", "--bundle", str(bundle), "--input", *map(str, inputs), "--output", str(out), "--quiet", *extra]


def outputs_of(out: Path) -> dict[str, bytes]:
    """Every file in an output folder by name (hidden files included), with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def assert_same_results(out: Path, reference: Path) -> None:
    """Equal predictions.csv tables (names exact, probabilities within 1e-5) and equal overlays."""
    rows, expected = read_csv(out / "predictions.csv"), read_csv(reference / "predictions.csv")
    assert [(r["file"], r["prediction"]) for r in rows] == [(r["file"], r["prediction"]) for r in expected]
    for row, want in zip(rows, expected, strict=True):
        np.testing.assert_allclose([float(row[c]) for c in CLASSES], [float(want[c]) for c in CLASSES], atol=1e-5)
    overlays = sorted(p.name for p in reference.glob("*_cluscam.nii.gz"))
    assert overlays and sorted(p.name for p in out.glob("*_cluscam.nii.gz")) == overlays
    for name in overlays:
        np.testing.assert_allclose(nib.load(out / name).get_fdata(), nib.load(reference / name).get_fdata(), atol=1e-5)
