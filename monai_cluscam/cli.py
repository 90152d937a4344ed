"""The command line: ``monai-cluscam explain --bundle DIR --input PATH [PATH ...] --output DIR``.

Each input (a slice, a NIfTI volume, a DICOM series folder, or a folder of them) is preprocessed as
the bundle says, classified, explained, and written as an overlay on its own grid (NIfTI, 3D Slicer
colour table and load script, PNG preview). ``predictions.csv`` gets one row per explained input.
An input that fails is listed on screen and in ``failures.csv`` and costs no other input its result;
the exit status is then 1 (2 for a usage error, 0 when every input was explained).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_cluscam.bundle import load_bundle
from monai_cluscam.io import save_overlay
from monai_cluscam.io._files import atomic_write, check_writable_dir, safe_stem
from monai_cluscam.io.inputs import find_inputs
from monai_cluscam.io.predictions import write_predictions
from monai_cluscam.transforms import METHODS, make_explainer

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-cluscam", description="ClusCAM explanations for MONAI classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser(
        "explain",
        help="classify and explain images with a bundle; write overlays and predictions.csv",
        description="Classify and explain images with a MONAI classifier bundle.",
    )
    explain.add_argument("--bundle", required=True, help="bundle folder (configs/inference.json, models/model.pt)")
    explain.add_argument("--input", required=True, nargs="+", help="image files, DICOM series folders, or folders")
    explain.add_argument("--output", required=True, help="output folder (created if needed)")
    explain.add_argument("--method", default="cluscam", choices=sorted(METHODS), help="attribution method")
    explain.add_argument("--num-clusters", type=int, default=None, help="ClusCAM's K (default 10)")
    explain.add_argument("--target-layer", default=None, help="layer to explain from (default: the bundle's)")
    explain.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    explain.add_argument("--batch-size", type=int, default=None, help="masked copies per forward pass")
    explain.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    explain.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _explain(args: argparse.Namespace) -> int:
    inputs, skipped = find_inputs(args.input)
    out = check_writable_dir(args.output)
    targets = [out / "predictions.csv", out / "failures.csv"]
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        print(f"error: {existing[0]} exists; pass --overwrite or choose another --output.", file=sys.stderr)
        return 2
    bundle = load_bundle(args.bundle, device=args.device)
    method_args = {"batch_size": args.batch_size}
    if args.num_clusters is not None:
        if args.method != "cluscam":
            print("error: --num-clusters applies to --method cluscam only.", file=sys.stderr)
            return 2
        method_args["num_clusters"] = args.num_clusters
    cam = make_explainer(bundle.network, args.method, args.target_layer or bundle.target_layers, **method_args)

    rows: list[tuple[str, torch.Tensor]] = []
    failures: list[tuple[str, str]] = [(str(p), why) for p, why in skipped]
    names: set[str] = set()
    progress = _progress(inputs, disable=args.quiet)
    for path in progress:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                probs = _explain_one(path, bundle, cam, out, _unique_name(path, names), args)
            for w in caught:
                progress.write(f"warning: {path}: {w.message}")
            rows.append((str(path), probs))
        except Exception as err:  # one bad input must not cost the others their results
            reason = _reason(err)
            failures.append((str(path), reason))
            progress.write(f"failed: {path}: {reason}")

    write_predictions(out / "predictions.csv", rows, bundle.class_names, overwrite=True)
    if failures:
        _write_failures(out / "failures.csv", failures)
    elif (out / "failures.csv").exists():
        (out / "failures.csv").unlink()
    print(f"explained {len(rows)} of {len(rows) + len(failures)} inputs with {args.method}; outputs in {out}")
    print(f"  predictions: {out / 'predictions.csv'}")
    if failures:
        print(f"  {len(failures)} failed, listed in {out / 'failures.csv'}:")
        for path, why in failures:
            print(f"    {path}: {why}")
    if rows:
        print("  3D Slicer: in Slicer's Python console, exec(open('<file>_slicer.py').read()) opens an overlay")
    return 1 if failures else 0


def _explain_one(path: Path, bundle, cam, out: Path, name: str, args: argparse.Namespace) -> torch.Tensor:
    data = bundle.preprocessing({"image": str(path)})
    image = data["image"]
    x = image[None].to(bundle.device)
    maps = cam(x)  # the predicted class; the explanation's own forward pass gives the prediction
    probs = cam.logits_.float().softmax(1)[0]
    save_overlay(maps, out, image=image, name=name, overwrite=args.overwrite, preview=not args.no_preview)
    return probs.cpu()


def _reason(err: BaseException) -> str:
    """The error that started it: MONAI wraps a transform's error in "applying transform ..." errors."""
    while err.__cause__ is not None and str(err).startswith("applying transform"):
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


def _unique_name(path: Path, used: set[str]) -> str:
    """The input's name, with its folder's name prepended when another input already took it."""
    stem = safe_stem(path.name)
    if stem in used:
        stem = safe_stem(f"{path.parent.name}_{path.name}")
    while stem in used:
        stem = f"{stem}_"
    used.add(stem)
    return stem


def _write_failures(path: Path, failures: list[tuple[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "error"])
    writer.writerows(failures)
    payload = text.getvalue().encode()
    atomic_write(path, lambda stream: stream.write(payload), overwrite=True)


def _progress(items: list, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc="explaining", unit="input", disable=disable, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``monai-cluscam`` and ``python -m monai_cluscam``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _explain(args)
    except (FileNotFoundError, ValueError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
