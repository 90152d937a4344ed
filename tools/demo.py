"""The demo behind ``make demo``: phantom brain slices and volumes through the bundles, end to end.

1. Writes phantoms with known atrophy (``monai_cluscam.data``): PNG slices, NIfTI volumes and a DICOM
   series, each with its ground-truth atrophy mask and brain mask.
2. Runs ``monai-cluscam explain`` with each bundle found in ``bundles/``: predictions, ClusCAM overlays
   on each input's own grid, 3D Slicer files and PNG previews.
3. Scores every overlay against the ground truth (share of the map inside the atrophy, share outside
   the brain) and writes ``report.md``, then prints where to look and how to open the overlays in Slicer.

    python tools/demo.py [--output demo_output] [--per-class 2] [--overwrite]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import torch

from monai_cluscam.cli import main as cli_main
from monai_cluscam.data import CLASS_NAMES, make_phantom_dataset
from monai_cluscam.io import load_image
from monai_cluscam.io._files import safe_stem
from monai_cluscam.metrics import attribution_outside_mask, energy_pointing_game

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {
    "slices": ROOT / "bundles" / "alzheimer_mri_cluscam",
    "volumes": ROOT / "bundles" / "phantom_volume_cluscam",
    "dicom": ROOT / "bundles" / "phantom_volume_cluscam",
}


def _plain(path: Path) -> torch.Tensor:
    """A file as a ``(1, 1, *spatial)`` tensor, trailing singleton axes of 2D NIfTI overlays dropped."""
    data = load_image(path).as_tensor()
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data[None].float()


def _make_inputs(folder: Path, per_class: int) -> dict[str, list[dict]]:
    items = {
        "slices": make_phantom_dataset(folder / "slices", n_per_class=per_class, kind="slice", fmt="png", seed=100),
        "volumes": make_phantom_dataset(folder / "volumes", n_per_class=1, kind="volume", fmt="nifti", seed=200),
        "dicom": make_phantom_dataset(folder / "dicom", n_per_class=1, kind="volume", fmt="dicom", seed=300)[1:2],
    }
    for group in items.values():
        for item in group:
            for key in ("image", "mask", "brain_mask"):
                item[key] = str(Path(item[key]).resolve())
    return items


SCORES = ("in_atrophy", "outside_brain", "in_atrophy_uniform", "outside_brain_uniform")


def _score(item: dict, overlay: Path) -> dict[str, float | None]:
    cam = _plain(overlay)
    brain = _plain(Path(item["brain_mask"])) > 0
    mask = _plain(Path(item["mask"])) > 0
    inside = float(energy_pointing_game(cam, mask)[0]) if bool(mask.any()) else None
    # what a uniform map would score: the chance level each share is to be read against
    chance = {"in_atrophy_uniform": float(mask.float().mean()) if inside is not None else None,
              "outside_brain_uniform": 1.0 - float(brain.float().mean())}
    return {"in_atrophy": inside, "outside_brain": float(attribution_outside_mask(cam, brain)[0]), **chance}


def _run_group(name: str, items: list[dict], bundle: Path, out: Path) -> list[dict]:
    inputs = [item["image"] for item in items]
    start = time.perf_counter()
    code = cli_main(["explain", "--bundle", str(bundle), "--input", *inputs, "--output", str(out), "--overwrite"])
    seconds = time.perf_counter() - start
    print(f"{name}: {len(inputs)} inputs explained in {seconds:.1f} s (exit status {code})")
    with (out / "predictions.csv").open() as f:
        predictions = {row["file"]: row for row in csv.DictReader(f)}
    rows = []
    for item in items:
        pred = predictions.get(item["image"])
        stem = safe_stem(Path(item["image"]).name)
        overlay = out / f"{stem}_cluscam.nii.gz"
        row = {"group": name, "input": Path(item["image"]).name, "truth": item["class_name"],
               "prediction": pred["prediction"] if pred else "failed",
               "probability": float(pred[pred["prediction"]]) if pred else None,
               "preview": (out / f"{stem}_cluscam.png").relative_to(out.parent), "slicer": overlay.name}
        row.update(_score(item, overlay) if pred and overlay.exists() else dict.fromkeys(SCORES))
        rows.append(row)
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _versus(value: float | None, uniform: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} ({_fmt(uniform, digits)})"


def _report(rows: list[dict], out: Path, skipped: list[str]) -> Path:
    lines = [
        "# monai-cluscam demo",
        "",
        f"Made {time.strftime('%Y-%m-%d %H:%M')} by `make demo`. Inputs are synthetic phantoms from the MNI152 "
        "template with simulated atrophy (ventricles, medial temporal lobes); the masks are the ground truth "
        "of what was changed. Classes: " + ", ".join(CLASS_NAMES) + ".",
        "",
        "`in atrophy` is the share of the map's mass inside the simulated atrophy (energy-based pointing "
        "game; n/a for Non_Demented, which has none); `outside brain` the share outside the brain mask. In "
        "brackets, what a uniform map would score: a map does better than chance where its `in atrophy` is "
        "above and its `outside brain` below the bracket.",
        "",
        "| input | truth | prediction | p | in atrophy (uniform) | outside brain (uniform) | preview |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['group']}/{r['input']} | {r['truth']} | {r['prediction']} | {_fmt(r['probability'])} | "
            f"{_versus(r['in_atrophy'], r['in_atrophy_uniform'], 3)} | "
            f"{_versus(r['outside_brain'], r['outside_brain_uniform'], 2)} | ![]({r['preview']}) |"
        )
    lines += ["", "The 2D bundle was trained on real MRI slices, not on phantoms: its predictions on phantom "
              "slices show the pipeline at work, not its accuracy (see the bundle's docs/README.md)."]
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--per-class", type=int, default=2, help="phantom slices per class")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args()
    out = Path(args.output).resolve()
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            print(f"error: {out} is not empty; pass --overwrite (make demo does) or choose --output.", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True)

    items = _make_inputs(out / "inputs", args.per_class)
    rows, skipped = [], []
    for name, bundle in BUNDLES.items():
        if not (bundle / "models" / "model.pt").exists():
            skipped.append(f"{name} ({bundle.name} has no trained model)")
            continue
        rows += _run_group(name, items[name], bundle, out / name)
    report = _report(rows, out, skipped)

    print(f"\nEverything is in {out}:")
    print(f"  report:    {report}  (predictions, localisation scores and previews in one page)")
    for name in BUNDLES:
        if (out / name).exists():
            print(f"  {name + ':':10s} {out / name}/  (*_cluscam.nii.gz overlays, *.png previews, predictions.csv)")
    print("\nTo review an overlay in 3D Slicer: open Slicer's Python console (View > Python Console) and run")
    scripts = sorted(out.rglob("*_slicer.py"), key=lambda p: ("volumes" not in str(p), p))
    example = scripts[0] if scripts else "<name>_cluscam_slicer.py"
    print(f"  exec(open(r'{example}').read())")
    print("It loads the scan and its overlay as a heat map; every overlay has its own *_slicer.py.")
    return 1 if any(r["prediction"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
