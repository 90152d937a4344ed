"""The command line: ``monai-cluscam explain --bundle DIR --input PATH [PATH ...] --output DIR``.

Each input (a slice, a NIfTI volume, a DICOM series folder, or a folder of them) is preprocessed as
the bundle says, classified, explained, and written as an overlay on its own grid (NIfTI, 3D Slicer
colour table and load script, PNG preview) with a record of its prediction (``<name>_cluscam.json``).
``predictions.csv`` gets one row per explained input.
An input that fails is listed on screen and in ``failures.csv`` and costs no other input its result;
the exit status is then 1 (2 for a usage error, 0 when every input was explained).

A rerun into the same folder resumes: inputs whose record and overlay files are all there are not explained
again (unless ``--overwrite``), and their predictions still appear in ``predictions.csv``. Every file is
written to a temporary name and renamed, so a run killed midway leaves no half-written file.

Under ``torchrun --nproc_per_node=N -m monai_cluscam explain ...`` the N processes share the inputs and
rank 0 writes the one ``predictions.csv`` (and ``failures.csv``) in input order (see
:mod:`monai_cluscam.distributed`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import torch
from torch import nn

from monai_cluscam.bundle import load_bundle
from monai_cluscam.cam.registry import method_names, method_spec
from monai_cluscam.distributed import Cohort, cohort, cohort_device
from monai_cluscam.io import load_image, save_overlay
from monai_cluscam.io.files import atomic_write, check_writable_dir, mark_output_dir, safe_stem
from monai_cluscam.io.inputs import find_inputs
from monai_cluscam.io.predictions import write_predictions
from monai_cluscam.transforms import make_explainer
from monai_cluscam.utils import auto_batch_size, first_conv

__all__ = ["main"]

#: Each explained input's record, beside its overlay: ``<name>_cluscam.json``, written last.
RECORD_SUFFIX = "_cluscam.json"
#: The merged tables and the header each starts with (a file that starts otherwise is not replaced).
TABLES = {"predictions.csv": "file,prediction", "failures.csv": "file,error"}


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
    explain.add_argument("--target-layer", default=None, help="layer to explain from (default: the bundle's)")
    explain.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    explain.add_argument("--batch-size", type=int, default=None, help="masked copies per forward pass")
    explain.add_argument("--overwrite", action="store_true", help="explain every input again, replacing outputs")
    explain.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _method_name(value: str) -> str:
    """``--method``'s value as its registry's canonical name; an unknown name is left for argparse's choices."""
    try:
        return method_spec(value).name
    except ValueError:
        return value


def _explain(args: argparse.Namespace) -> int:
    if args.num_clusters is not None and args.method != "cluscam":
        print("error: --num-clusters applies to --method cluscam only.", file=sys.stderr)
        return 2
    device = cohort_device(args.device)
    with cohort(device) as group:
        return _run(args, group, device)


def _run(args: argparse.Namespace, group: Cohort, device: torch.device) -> int:
    plan = group.broadcast(_plan(args) if group.is_main else None)
    if isinstance(plan, str):
        if group.is_main:
            print(f"error: {plan}", file=sys.stderr)
        return 2
    inputs, skipped, out = plan
    bundle = load_bundle(args.bundle, device=device)
    layer = args.target_layer or bundle.target_layers
    method_args = {"batch_size": args.batch_size}
    # K: the command line's, else the bundle's own (its config's num_clusters), else the package default
    num_clusters = args.num_clusters
    from_bundle = num_clusters is None and args.method == "cluscam" and bundle.num_clusters is not None
    if from_bundle:
        num_clusters = bundle.num_clusters
    if num_clusters is not None:
        method_args["num_clusters"] = num_clusters
    try:
        cam = make_explainer(bundle.network, args.method, layer, **method_args)
    except ValueError as err:
        where = f" (num_clusters of {bundle.root / 'configs' / 'inference.json'})" if from_bundle else ""
        raise ValueError(f"{err}{where}") from err
    settings = {
        "bundle": str(bundle.root),
        "class_names": bundle.class_names,
        "method": args.method,
        "num_clusters": num_clusters,
        "target_layer": layer,
    }
    names = _unique_names(inputs)
    takes = _model_input(bundle.network)

    results: list[tuple[int, list[float] | None, str | None, bool]] = []
    mine = group.shard(range(len(inputs)))
    desc = f"explaining (rank {group.rank})" if group.world_size > 1 else "explaining"
    progress = _progress(mine, disable=args.quiet, desc=desc)
    for index in progress:
        path = inputs[index]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                probs, reused = _explain_or_reuse(path, names[index], bundle, cam, out, settings, takes, args)
            for w in caught:
                progress.write(f"warning: {path}: {w.message}")
            results.append((index, probs, None, reused))
        except Exception as err:  # one bad input must not cost the others their results
            reason = _reason(err)
            results.append((index, None, reason, False))
            progress.write(f"failed: {path}: {reason}")

    merged = sorted(r for part in group.gather(results) for r in part)
    rows = [(str(inputs[i]), torch.tensor(probs)) for i, probs, why, _ in merged if why is None]
    failures = [(str(p), why) for p, why in skipped] + [(str(inputs[i]), why) for i, _, why, _ in merged if why]
    if not group.is_main:
        return 1 if failures else 0
    try:
        write_predictions(out / "predictions.csv", rows, bundle.class_names, overwrite=True)
        if failures:
            _write_failures(out / "failures.csv", failures)
        else:
            (out / "failures.csv").unlink(missing_ok=True)
    except OSError as err:
        print(
            f"error: cannot write predictions.csv/failures.csv in {out} ({err}); the overlays and their records are "
            "kept: free space or fix the permissions, then rerun the same command to write the tables.",
            file=sys.stderr,
        )
        return 2
    reused = sum(r[3] for r in merged)
    print(f"explained {len(rows)} of {len(rows) + len(failures)} inputs with {args.method}; outputs in {out}")
    if reused:
        print(f"  {reused} of them were explained by an earlier run into this folder (--overwrite redoes them)")
    print(f"  predictions: {out / 'predictions.csv'}")
    if failures:
        print(f"  {len(failures)} failed, listed in {out / 'failures.csv'}:")
        for path, why in failures:
            print(f"    {path}: {why}")
    if rows:
        print("  3D Slicer: in Slicer's Python console, exec(open('<file>_slicer.py').read()) opens an overlay")
    return 1 if failures else 0


def _plan(args: argparse.Namespace) -> tuple[list[Path], list[tuple[Path, str]], Path] | str:
    """Rank 0's part before any work: the inputs, the output folder checked and cleaned; a usage error as text."""
    try:
        out = check_writable_dir(args.output)
    except (OSError, ValueError) as err:
        return str(err)
    mark_output_dir(out)
    # results are not scans: this run's output folder inside an input folder, an earlier run's or a bundle's
    # output folder, overlays and previews given as files are left out (and said so)
    left_out: list[tuple[Path, str]] = []
    inputs, skipped = find_inputs(args.input, exclude=[out], left_out=left_out)
    for path, why in left_out:
        print(f"note: {path}: {why}", file=sys.stderr)
    for table, header in TABLES.items():
        if (out / table).exists() and not args.overwrite and not _starts_with(out / table, header):
            return f"{out / table} exists and is not a monai-cluscam table; pass --overwrite or choose another --output"
    for stale in out.glob(".*.tmp"):  # temporary files of a run killed midway: never renamed, never complete
        if "_cluscam" in stale.name or stale.name.startswith(tuple(f".{t}." for t in TABLES)):
            stale.unlink(missing_ok=True)
    return inputs, skipped, out


def _starts_with(path: Path, header: str) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as stream:
            return stream.readline().startswith(header)
    except OSError:
        return False


def _explain_or_reuse(
    path: Path, name: str, bundle, cam, out: Path, settings: dict, takes: tuple | None, args: argparse.Namespace
) -> tuple[list[float], bool]:
    """The input's probabilities, and whether they come from a complete earlier run (nothing recomputed)."""
    record = out / f"{name}{RECORD_SUFFIX}"
    source = str(path.resolve())
    if not args.overwrite and (previous := _read_record(record)) is not None:
        if previous["input"] != source or previous["settings"] != settings:
            raise FileExistsError(
                f"{record} holds the result of {previous['input']} with {previous['settings']}, not of this input "
                "with these settings; pass --overwrite to replace it or choose another --output."
            )
        complete = all((out / f).exists() for f in previous["files"]) and (args.no_preview or previous["preview"])
        if complete:
            return previous["probabilities"], True
    record.unlink(missing_ok=True)  # the outputs are about to change: no record may vouch for them meanwhile
    probs, files = _explain_one(path, bundle, cam, out, name, takes, args)
    entry = {
        "input": source,
        "file": str(path),
        "settings": settings,
        "probabilities": probs,
        "prediction": bundle.class_names[max(range(len(probs)), key=probs.__getitem__)],
        "files": files,
        "preview": not args.no_preview,
    }
    payload = json.dumps(entry, indent=1).encode()
    atomic_write(record, lambda stream: stream.write(payload), overwrite=True)
    return probs, False


def _read_record(record: Path) -> dict | None:
    """An earlier run's record of an input, or None when there is none or it is unreadable."""
    try:
        entry = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = {"input", "settings", "probabilities", "files", "preview"}
    if not isinstance(entry, dict) or not keys <= set(entry):
        return None
    files, probabilities = entry["files"], entry["probabilities"]
    if not isinstance(files, list) or not files or not isinstance(probabilities, list):
        return None
    if not probabilities or not all(isinstance(p, float) for p in probabilities):
        return None
    if any(not isinstance(f, str) or f in ("", ".", "..") or Path(f).name != f for f in files):
        return None  # only plain names inside the output folder are trusted
    return entry


def _explain_one(
    path: Path, bundle, cam, out: Path, name: str, takes: tuple[int, int] | None, args: argparse.Namespace
) -> tuple[list[float], list[str]]:
    channels, dims = takes or (None, None)
    # a 2D slice stored as NIfTI (H, W, 1), as this package writes slices, is 2D for a 2D model
    source = load_image(path, spatial_dims=2) if dims == 2 and _is_nifti_slice(path) else str(path)
    try:
        data = bundle.preprocessing({"image": source})
    except Exception as err:
        _check_dims(_loaded_shape(path, dims), dims, err)
        raise
    image = data["image"]
    _check_dims(getattr(image, "meta", {}).get("spatial_shape"), dims)
    if channels is not None and image.shape[0] != channels:
        raise ValueError(
            f"the image has {image.shape[0]} channels after the bundle's preprocessing but the model takes "
            f"{channels}. A 4D NIfTI gives one channel per volume and a colour picture three: extract the volume "
            "you mean (or convert the picture to greyscale) and pass that file."
        )
    finite = torch.isfinite(torch.as_tensor(image))
    if not bool(finite.all()):
        raise ValueError(
            f"{int((~finite).sum())} of {finite.numel()} values are NaN or infinite after the bundle's preprocessing "
            "(the file stores them, or the preprocessing divided by zero); a map of them would mean nothing. "
            "Fix or drop the image."
        )
    x = image[None].to(bundle.device)
    maps = _explain_within_memory(cam, x, args)  # the predicted class; its own forward pass gives the prediction
    probs = cam.logits_.float().softmax(1)[0].cpu()
    written = save_overlay(maps, out, image=image, name=name, overwrite=True, preview=not args.no_preview)[0]
    files = [written.nifti, written.color_table, written.slicer_script, written.preview]
    return [float(p) for p in probs], [f.name for f in files if f is not None]


def _explain_within_memory(cam, x: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """``cam(x)``; when memory runs out, again with half as many masked copies per forward pass, down to one."""
    chunk = min(args.batch_size or auto_batch_size(x), getattr(cam, "num_clusters", None) or auto_batch_size(x))
    try:
        while True:
            try:
                return cam(x)
            except Exception as err:
                if not _out_of_memory(err):
                    raise
                if x.device.type == "cuda":
                    torch.cuda.empty_cache()
                # a method without masked forward passes (Grad-CAM) gains nothing from a smaller chunk
                if chunk <= 1 or not method_spec(args.method).masked_passes:
                    raise MemoryError(
                        f"out of memory explaining an input of shape {tuple(x.shape[1:])} on {x.device}, even at one "
                        f"masked copy per forward pass ({str(err).splitlines()[0]}). Run fewer processes per machine, "
                        "use a device with more memory (--device cpu when a GPU ran out), or a bundle whose "
                        "preprocessing makes the image smaller."
                    ) from err
                chunk = max(1, chunk // 2)
                warnings.warn(
                    f"out of memory; retrying with {chunk} masked copies per forward pass (--batch-size {chunk} "
                    "starts there).",
                    ResourceWarning,
                    stacklevel=2,
                )
                cam.batch_size = chunk
    finally:
        cam.batch_size = args.batch_size


def _out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory"))


def _model_input(network: nn.Module) -> tuple[int, int] | None:
    """The channels and spatial dimensions the network's first convolution takes (None when it has none)."""
    conv = first_conv(network, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    return None if conv is None else (int(conv.in_channels), len(conv.kernel_size))


def _is_nifti_slice(path: Path) -> bool:
    """Whether ``path`` is a NIfTI file of shape ``(H, W, 1)`` (only its header is read)."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return False
    try:
        shape = nib.load(path).shape
    except Exception:  # unreadable: the preprocessing reports it
        return False
    return len(shape) == 3 and shape[2] == 1 and shape[0] > 1 and shape[1] > 1


def _loaded_shape(path: Path, dims: int | None = None) -> tuple[int, ...] | None:
    """The spatial shape of the image as read from the file, or None when it cannot be read."""
    try:
        return tuple(load_image(path, spatial_dims=dims).shape[1:])
    except Exception:  # only a diagnosis: the preprocessing's own error stands
        return None


def _check_dims(shape: object, dims: int | None, cause: BaseException | None = None) -> None:
    """Raise when an image of spatial ``shape`` (as read from its file) does not have the model's ``dims``."""
    if shape is None or dims is None:
        return
    found = len(_as_tuple(shape))
    if found != dims:
        raise ValueError(
            f"the image is {found}D (spatial shape {_as_tuple(shape)}) but the bundle's model takes {dims}D images; "
            f"pass {dims}D images (2D: PNG/JPEG slices, single DICOM files, 2D NIfTI; 3D: NIfTI volumes, DICOM "
            f"series folders) or use a {found}D bundle."
        ) from cause


def _as_tuple(shape: object) -> tuple[int, ...]:
    return tuple(int(n) for n in torch.as_tensor(shape).flatten().tolist())


def _reason(err: BaseException) -> str:
    """The error that started it: MONAI wraps a transform's error in "applying transform ..." errors."""
    while err.__cause__ is not None and str(err).startswith("applying transform"):
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


def _unique_names(inputs: Sequence[Path]) -> list[str]:
    """One output name per input, all different and unchanged by :func:`safe_stem` (so the files get them).

    An input's own name; its folder's name prepended when another input took it; then a number.
    """
    used: set[str] = set()
    names = []
    for path in inputs:
        stem = _stable_stem(path.name)
        if stem in used:
            stem = _stable_stem(f"{path.parent.name}_{path.name}")
        base, number = stem, 1
        while stem in used:
            number += 1
            stem = _stable_stem(f"{base[:70]}_{number}")
        used.add(stem)
        names.append(stem)
    return names


def _stable_stem(text: str) -> str:
    stem = safe_stem(text)
    while (again := safe_stem(stem)) != stem:
        stem = again
    return stem


def _write_failures(path: Path, failures: list[tuple[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "error"])
    writer.writerows((file.replace("\0", "\\0"), why.replace("\0", "\\0")) for file, why in failures)
    payload = text.getvalue().encode()
    atomic_write(path, lambda stream: stream.write(payload), overwrite=True)


def _progress(items: Sequence, disable: bool, desc: str = "explaining"):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="input", disable=disable, file=sys.stderr)


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
