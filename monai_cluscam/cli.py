"""The command line: ``monai-cluscam explain --bundle DIR --input PATH [PATH ...] --output DIR``.

Argument parsing and the summary on screen; the work is :func:`monai_cluscam.run.explain_files`. Each input
(a slice, a NIfTI volume, a DICOM series folder, or a folder of them) is preprocessed as the bundle says,
classified, explained, and written as an overlay on its own grid (NIfTI, 3D Slicer colour table and load script,
PNG preview) with a record of its prediction (``<name>_cluscam.json``); with ``--dicom`` also as DICOM that a
PACS shows on the scan (``<name>_<method>_dicom/``). ``predictions.csv`` gets one row per
explained input. An input that fails is listed on screen and in ``failures.csv`` and costs no other input its
result; the exit status is then 1 (2 for a usage error, 0 when every input was explained).

A rerun into the same folder resumes (``--overwrite`` explains everything again). Under
``torchrun --nproc_per_node=N -m monai_cluscam explain ...`` the N processes share the inputs and rank 0 writes
the one ``predictions.csv`` (and ``failures.csv``) in input order.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from monai_cluscam.cam.base import BASELINES
from monai_cluscam.cam.registry import method_names, method_spec
from monai_cluscam.data.masks import FOREGROUND_THRESHOLD
from monai_cluscam.run import ExplainResult, explain_files

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-cluscam", description="ClusCAM explanations for MONAI classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser(
        "explain",
        help="classify and explain images with a bundle; write overlays and predictions.csv",
        description="Classify and explain images with a MONAI classifier bundle. Under torchrun the processes "
        "share the inputs. A rerun into the same --output skips the inputs already explained.",
    )
    explain.add_argument("--bundle", required=True, help="bundle folder (configs/inference.json, models/model.pt)")
    explain.add_argument("--input", required=True, nargs="+", help="image files, DICOM series folders, or folders")
    explain.add_argument("--output", required=True, help="output folder (created if needed)")
    explain.add_argument(
        "--method",
        default="cluscam",
        type=_method_name,
        choices=sorted(method_names()),
        help="attribution method (or an alias: grad-cam++, gradcam++, ...; any case)",
    )
    explain.add_argument(
        "--num-clusters", type=int, default=None, help="ClusCAM's K (default: the bundle's num_clusters, else 10)"
    )
    explain.add_argument(
        "--baseline",
        default=None,
        choices=list(BASELINES),
        help="what ClusCAM's masked copies hold where a cluster is off: zero (as published), blur or mean "
        "(default: the bundle's baseline, else zero)",
    )
    explain.add_argument(
        "--foreground",
        nargs="?",
        const=True,
        default=None,
        type=_grey_value,
        metavar="GREY",
        help="restrict the maps to the subject: voxels of the preprocessed image above GREY (default "
        f"{FOREGROUND_THRESHOLD}), enclosed holes filled (default: the bundle's foreground setting, else off)",
    )
    explain.add_argument("--no-foreground", dest="foreground", action="store_false", help="never restrict the maps")
    explain.add_argument("--target-layer", default=None,
                         help="layer to explain from, or several separated by commas (layer2,layer3,layer4: each "
                              "explained on its own, the maps fused; default: the bundle's)")
    explain.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    explain.add_argument("--batch-size", type=int, default=None, help="masked copies per forward pass")
    explain.add_argument("--overwrite", action="store_true", help="explain every input again, replacing outputs")
    explain.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    explain.add_argument(
        "--dicom",
        action="store_true",
        help="also write DICOM for a PACS: a Parametric Map and a colour overlay series in the scan's Study "
        "(the scan too when it is NIfTI or PNG/JPEG), in <name>_<method>_dicom/",
    )
    explain.add_argument(
        "--deidentify",
        action="store_true",
        help="with --dicom: de-identified DICOM (the scan copied into a new Study, no names, no dates, new patient ID)",
    )
    explain.add_argument(
        "--send",
        metavar="URL",
        default=None,
        help="with --dicom: store every DICOM object at this PACS's DICOMweb root (STOW-RS), e.g. "
        "http://localhost:8042/dicom-web; out/dicom_sent.json records what it accepted, a rerun sends what is missing",
    )
    explain.add_argument(
        "--send-aet",
        metavar="AET@HOST:PORT",
        default=None,
        help="with --dicom: the same by DIMSE C-STORE, e.g. ORTHANC@127.0.0.1:4242 (calling AE title MONAICLUSCAM)",
    )
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _grey_value(value: str) -> float:
    try:
        grey = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a grey value such as 0.04; got {value!r}") from None
    if not math.isfinite(grey):
        raise argparse.ArgumentTypeError(f"expected a finite grey value; got {value!r}")
    return grey


def _method_name(value: str) -> str:
    """``--method``'s value as its registry's canonical name; an unknown name is left for argparse's choices."""
    try:
        return method_spec(value).name
    except ValueError:
        return value


def _layers(value: str | None) -> str | list[str] | None:
    """``--target-layer``: one name, or several separated by commas (a list)."""
    if value is None or "," not in value:
        return value
    return [name.strip() for name in value.split(",") if name.strip()]


def _explain(args: argparse.Namespace) -> int:
    if args.num_clusters is not None and args.method != "cluscam":
        print("error: --num-clusters applies to --method cluscam only.", file=sys.stderr)
        return 2
    if args.baseline is not None and args.method != "cluscam":
        print("error: --baseline applies to --method cluscam only.", file=sys.stderr)
        return 2
    if args.deidentify and not args.dicom:
        print("error: --deidentify applies to the DICOM output; pass --dicom with it.", file=sys.stderr)
        return 2
    if (args.send or args.send_aet) and not args.dicom:
        print("error: --send and --send-aet store the DICOM output; pass --dicom with them.", file=sys.stderr)
        return 2
    result = explain_files(
        args.input,
        args.output,
        bundle=args.bundle,
        target_layers=_layers(args.target_layer),
        method=args.method,
        num_clusters=args.num_clusters,
        baseline=args.baseline,
        foreground=args.foreground,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        preview=not args.no_preview,
        dicom=args.dicom,
        deidentify=args.deidentify,
        send=args.send,
        send_aet=args.send_aet,
        progress=not args.quiet,
    )
    if result.rank == 0:  # under torchrun the others say nothing
        _summary(result)
    return 1 if result.failures or result.send_failures else 0


def _summary(result: ExplainResult) -> None:
    out, done = result.output_dir, len(result.explained)
    print(f"explained {done} of {done + len(result.failures)} inputs with {result.method}; outputs in {out}")
    if result.reused:
        print(f"  {result.reused} of them were explained by an earlier run into this folder (--overwrite redoes them)")
    print(f"  predictions: {result.predictions_csv}")
    if result.failures:
        print(f"  {len(result.failures)} failed, listed in {result.failures_csv}:")
        for path, why in result.failures:
            print(f"    {path}: {why}")
    if result.explained:
        print("  3D Slicer: Slicer --python-script <file>_slicer.py opens an overlay on its scan")
    folders = sorted({item.dicom[0].relative_to(out).parts[0] for item in result.explained if item.dicom})
    if folders:
        print(f"  DICOM: {len(folders)} folders <name>_<method>_dicom/ to import into a PACS (e.g. {folders[0]})")
    for report in result.sent:
        print(f"  sent to {report.destination}: {len(report.sent)} objects"
              + (f" ({len(report.already)} sent before, not again)" if report.already else ""))
    for destination, why in result.send_failures:
        print(f"  NOT all sent to {destination}: {why}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``monai-cluscam`` and ``python -m monai_cluscam``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _explain(args)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
