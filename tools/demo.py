"""The demo behind ``make demo``: real MRI slices and phantom volumes through the bundles, end to end.

1. 2D: the 16 real Alzheimer MRI slices shipped in ``bundles/alzheimer_mri_cluscam/sample_data/`` (4 per
   class, from the public dataset's test split, with their true classes in ``labels.csv``).
   3D: phantoms with known atrophy (``monai_cluscam.data``) written as NIfTI volumes and a DICOM series,
   each with its ground-truth atrophy mask and brain mask.
2. Explains them with each bundle in ``bundles/`` through ``monai_cluscam.run.explain_files`` (what
   ``monai-cluscam explain`` runs): the 2D bundle on the sample folder, the 3D bundle on the phantoms. It writes
   predictions, ClusCAM overlays on each input's own grid, 3D Slicer files and PNG previews.
3. Writes ``report.md``: for each real slice its true and predicted class, the prediction's probability,
   the overlay, the share of the map inside the brain (the slice's foreground) and on the black background, and
   whether its peak lies on the brain; for each phantom the
   share of the map inside the atrophy and outside the brain. Each share comes with what a uniform map
   would score. Then it prints a summary, where to look and how to open the overlays in 3D Slicer.

    python tools/demo.py [--output demo_output] [--overwrite]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from monai_cluscam.data import alzheimer_items, foreground_mask, make_phantom_dataset
from monai_cluscam.io import load_image
from monai_cluscam.metrics import attribution_outside_mask, background_mask, background_share, energy_pointing_game
from monai_cluscam.run import ExplainedInput, explain_files

ROOT = Path(__file__).resolve().parents[1]
SLICE_BUNDLE = ROOT / "bundles" / "alzheimer_mri_cluscam"
VOLUME_BUNDLE = ROOT / "bundles" / "phantom_volume_cluscam"
SAMPLES = SLICE_BUNDLE / "sample_data"
#: output folder of each group, and the bundle that explains it
GROUPS = {"slices": SLICE_BUNDLE, "volumes": VOLUME_BUNDLE, "dicom": VOLUME_BUNDLE}


def _plain(path: Path) -> torch.Tensor:
    """A file as a ``(1, 1, *spatial)`` tensor, trailing singleton axes of 2D NIfTI overlays dropped."""
    data = load_image(path).as_tensor()
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data[None].float()


def _share(cam: torch.Tensor, mask: torch.Tensor) -> float | None:
    """The share of the map's mass inside ``mask``; None for a blank map, which has no mass to share."""
    value = float(energy_pointing_game(cam, mask)[0]) if bool(cam.any()) else float("nan")
    return None if value != value else value


def _explain(name: str, inputs: list[str], bundle: Path, out: Path) -> dict[Path, ExplainedInput]:
    """Explain ``inputs`` with ``bundle`` into ``out``; the explained inputs by resolved path."""
    start = time.perf_counter()
    result = explain_files(inputs, out, bundle=bundle, overwrite=True)
    seconds = time.perf_counter() - start
    print(f"{name}: {len(result.explained)} inputs explained in {seconds:.1f} s with {bundle.name} "
          f"({len(result.failures)} failed)")
    for path, why in result.failures:
        print(f"  failed: {path}: {why}")
    return {item.input.resolve(): item for item in result.explained}


def _preview(item: ExplainedInput | None, out: Path, image: str) -> Path:
    """The PNG preview of ``image``'s overlay (where it would be when the input failed)."""
    files = [] if item is None else [f for f in item.files if f.suffix == ".png"]
    return files[0] if files else out / f"{Path(image).name}_cluscam.png"


def _prediction(item: ExplainedInput | None) -> tuple[str, float | None]:
    return ("failed", None) if item is None else (item.prediction, max(item.probabilities))


def _slice_rows(out: Path) -> list[dict]:
    """The real slices: truth from ``labels.csv``, prediction, overlay, the map's share inside the brain."""
    items = alzheimer_items(SAMPLES)  # reads SAMPLES/labels.csv
    predictions = _explain("slices", [str(SAMPLES)], SLICE_BUNDLE, out)
    rows = []
    for item in items:
        explained = predictions.get(Path(item["image"]).resolve())
        prediction, probability = _prediction(explained)
        row = {"input": Path(item["image"]).name, "truth": item["class_name"], "prediction": prediction,
               "probability": probability, "preview": _preview(explained, out, item["image"]).relative_to(out.parent),
               "in_brain": None, "in_brain_uniform": None, "on_background": None, "on_background_uniform": None,
               "peak_in_brain": None}
        if explained is not None:
            image = load_image(item["image"]).as_tensor().float()[None] / 255.0
            brain = foreground_mask(image[0])[None]
            cam = _plain(explained.overlay)
            row["in_brain"] = _share(cam, brain)
            row["in_brain_uniform"] = float(brain.float().mean())
            if row["in_brain"] is not None:
                row["on_background"] = float(background_share(cam, image)[0])
                row["on_background_uniform"] = float(background_mask(image).float().mean())
                row["peak_in_brain"] = bool(brain.flatten()[int(cam.flatten().argmax())])
        rows.append(row)
    return rows


def _make_phantoms(folder: Path) -> dict[str, list[dict]]:
    items = {
        "volumes": make_phantom_dataset(folder / "volumes", n_per_class=1, kind="volume", fmt="nifti", seed=200),
        "dicom": make_phantom_dataset(folder / "dicom", n_per_class=1, kind="volume", fmt="dicom", seed=300)[1:2],
    }
    for group in items.values():
        for item in group:
            for key in ("image", "mask", "brain_mask", "region_mask"):
                item[key] = str(Path(item[key]).resolve())
    return items


SCORES = ("in_atrophy", "in_region", "outside_brain",
          "in_atrophy_uniform", "in_region_uniform", "outside_brain_uniform")


def _score(item: dict, overlay: Path) -> dict[str, float | None]:
    cam = _plain(overlay)
    brain = _plain(Path(item["brain_mask"])) > 0
    mask = _plain(Path(item["mask"])) > 0
    region = _plain(Path(item["region_mask"])) > 0
    inside = float(energy_pointing_game(cam, mask)[0]) if bool(mask.any()) else None
    # what a uniform map would score: the chance level each share is to be read against
    chance = {"in_atrophy_uniform": float(mask.float().mean()) if inside is not None else None,
              "in_region_uniform": float(region.float().mean()),
              "outside_brain_uniform": 1.0 - float(brain.float().mean())}
    return {"in_atrophy": inside, "in_region": float(energy_pointing_game(cam, region)[0]),
            "outside_brain": float(attribution_outside_mask(cam, brain)[0]), **chance}


def _phantom_rows(name: str, items: list[dict], out: Path) -> list[dict]:
    predictions = _explain(name, [item["image"] for item in items], VOLUME_BUNDLE, out)
    rows = []
    for item in items:
        explained = predictions.get(Path(item["image"]).resolve())
        prediction, probability = _prediction(explained)
        row = {"group": name, "input": Path(item["image"]).name, "truth": item["class_name"],
               "prediction": prediction, "probability": probability,
               "preview": _preview(explained, out, item["image"]).relative_to(out.parent)}
        row.update(dict.fromkeys(SCORES) if explained is None else _score(item, explained.overlay))
        rows.append(row)
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _versus(value: float | None, uniform: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} ({_fmt(uniform, digits)})"


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _summary(rows: list[dict]) -> str:
    """One line on the real slices: accuracy, the mean shares of the maps inside the brain and on the background,
    and how many peak on the brain."""
    correct = sum(r["prediction"] == r["truth"] for r in rows)
    peaks = sum(bool(r["peak_in_brain"]) for r in rows)
    return (f"{correct} of {len(rows)} slices classified correctly (accuracy {correct / len(rows):.2f}); mean share "
            f"of the map inside the brain {_fmt(_mean([r['in_brain'] for r in rows]))} (a uniform map: "
            f"{_fmt(_mean([r['in_brain_uniform'] for r in rows]))}), on the background "
            f"{_fmt(_mean([r['on_background'] for r in rows]), 3)} (a uniform map: "
            f"{_fmt(_mean([r['on_background_uniform'] for r in rows]), 3)}); {peaks} of {len(rows)} maps peak on the "
            "brain")


def _report(slices: list[dict], phantoms: list[dict], out: Path, skipped: list[str]) -> Path:
    lines = ["# monai-cluscam demo", "", f"Made {time.strftime('%Y-%m-%d %H:%M')} by `make demo`."]
    if slices:
        lines += [
            "",
            f"## 2D: real MRI slices, bundle `{SLICE_BUNDLE.name}`",
            "",
            f"The {len(slices)} axial slices in `bundles/{SLICE_BUNDLE.name}/sample_data/`: 4 per class from the test "
            "split of the public Alzheimer_MRI dataset (Hugging Face `Falah/Alzheimer_MRI`, Apache-2.0, from OASIS "
            "scans; see that folder's README.md), not used to train the model. `p` is the predicted class's "
            "probability. `inside brain` is the share of the map's mass inside the brain (the slice's foreground, "
            "`monai_cluscam.data.foreground_mask`), `on background` the share on the black background more than 4 px "
            "from the brain (`monai_cluscam.metrics.readability.background_share`), where no masked copy can change "
            "the slice, so heat there could never be evidence; in brackets what a uniform map would score. `peak` "
            "says whether the map's hottest pixel lies on the brain. For research and teaching, not diagnosis.",
            "",
            "| file | truth | prediction | p | inside brain (uniform) | on background (uniform) | peak | overlay |",
            "|---|---|---|---:|---:|---:|---|---|",
        ]
        for r in slices:
            peak = "n/a" if r["peak_in_brain"] is None else ("brain" if r["peak_in_brain"] else "**background**")
            lines.append(f"| {r['input']} | {r['truth']} | {r['prediction']} | {_fmt(r['probability'])} | "
                         f"{_versus(r['in_brain'], r['in_brain_uniform'], 2)} | "
                         f"{_versus(r['on_background'], r['on_background_uniform'], 3)} | {peak} | "
                         f"![{r['input']}]({r['preview']}) |")
        lines += [
            "",
            f"Summary: {_summary(slices)}.",
            "",
            "Sixteen slices show the pipeline on real data; they are too few to measure accuracy, and the dataset's "
            "split is per slice, not per subject, so a neighbouring slice of the same scan may have been in training. "
            f"The test-set figures are in `bundles/{SLICE_BUNDLE.name}/docs/README.md`.",
        ]
    if phantoms:
        lines += [
            "",
            f"## 3D: phantom volumes and a DICOM series, bundle `{VOLUME_BUNDLE.name}`",
            "",
            "Synthetic phantoms from the MNI152 template with simulated atrophy (ventricles, medial temporal lobes); "
            "the masks are the ground truth of what was changed. `in atrophy` is the share of the map's mass inside "
            "the simulated atrophy (energy-based pointing game; n/a for Non_Demented, which has none); `in region` "
            "the share inside the anatomy atrophy is simulated in (lateral ventricles and medial temporal lobes, "
            "dilated: where the class is decided, for every class); `outside brain` the share outside the brain "
            "mask. In brackets, what a uniform map would score: a map does better than chance where its `in atrophy` "
            "and `in region` are above and its `outside brain` below the bracket. The bundle restricts its maps to "
            "the subject (its `foreground` setting).",
            "",
            "| input | truth | prediction | p | in atrophy (uniform) | in region (uniform) | outside brain (uniform) "
            "| preview |",
            "|---|---|---|---:|---:|---:|---:|---|",
        ]
        for r in phantoms:
            lines.append(
                f"| {r['group']}/{r['input']} | {r['truth']} | {r['prediction']} | {_fmt(r['probability'])} | "
                f"{_versus(r['in_atrophy'], r['in_atrophy_uniform'], 3)} | "
                f"{_versus(r['in_region'], r['in_region_uniform'], 3)} | "
                f"{_versus(r['outside_brain'], r['outside_brain_uniform'], 2)} | ![]({r['preview']}) |"
            )
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args()
    out = Path(args.output).resolve()
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            print(f"error: {out} is not empty; pass --overwrite (make demo does) or choose --output.", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True)

    slices, phantoms, skipped = [], [], []
    if (SLICE_BUNDLE / "models" / "model.pt").exists():
        slices = _slice_rows(out / "slices")
    else:
        skipped.append(f"slices ({SLICE_BUNDLE.name} has no trained model)")
    if (VOLUME_BUNDLE / "models" / "model.pt").exists():
        for name, items in _make_phantoms(out / "inputs").items():
            phantoms += _phantom_rows(name, items, out / name)
    else:
        skipped.append(f"volumes and dicom ({VOLUME_BUNDLE.name} has no trained model)")
    report = _report(slices, phantoms, out, skipped)

    if slices:
        print(f"\n2D, real slices: {_summary(slices)}")
    print(f"\nEverything is in {out}:")
    print(f"  report:    {report}  (predictions, overlays and scores in one page)")
    for name in GROUPS:
        if (out / name).exists():
            print(f"  {name + ':':10s} {out / name}/  (*_cluscam.nii.gz overlays, *.png previews, predictions.csv)")
    print("\nTo review an overlay in 3D Slicer, run")
    scripts = sorted(out.rglob("*_slicer.py"), key=lambda p: ("volumes" not in str(p), p))
    example = scripts[0] if scripts else "<name>_cluscam_slicer.py"
    print(f"  Slicer --python-script {example}")
    print("or, in Slicer's Python console (View > Python Console):")
    print(f"  p = r'{example}'; exec(open(p).read(), {{'__file__': p}})")
    print("It loads the scan and its overlay as a heat map; every overlay has its own *_slicer.py.")
    return 1 if any(r["prediction"] == "failed" for r in slices + phantoms) else 0


if __name__ == "__main__":
    sys.exit(main())
