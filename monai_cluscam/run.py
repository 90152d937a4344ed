"""The batch pipeline: classify and explain many image files, write an overlay of each, and the tables.

:func:`explain_files` is what ``monai-cluscam explain`` runs (:mod:`monai_cluscam.cli` only parses its
arguments), and what a Python program calls to do the same. Each input (a slice, a NIfTI volume, a DICOM
series folder, or a folder of them) is preprocessed, classified, explained for its predicted class, and written
as an overlay on its own grid (NIfTI, 3D Slicer colour table and load script, PNG preview) with a record of its
prediction (``<name>_cluscam.json``); with ``dicom=True`` also as DICOM for a PACS (``<name>_<method>_dicom/``).
``predictions.csv`` gets one row per explained input. An input that fails is listed in ``failures.csv`` and
costs no other input its result. Out of memory, an input is explained again with half as many masked copies per
forward pass, down to one.

A rerun into the same folder resumes: inputs whose record and overlay files (and DICOM files, when asked for)
are all there are not explained again (unless ``overwrite``), and their predictions still appear in
``predictions.csv``. Every file is written
to a temporary name and renamed, so a run killed midway leaves no half-written file.

Under ``torchrun --nproc_per_node=N`` the N processes share the inputs and rank 0 writes the one
``predictions.csv`` (and ``failures.csv``) in input order (see :mod:`monai_cluscam.distributed`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import nibabel as nib
import torch
from torch import nn

from monai_cluscam.bundle import BundleModel, load_bundle
from monai_cluscam.cam.base import foreground_threshold
from monai_cluscam.cam.registry import method_spec
from monai_cluscam.distributed import cohort, cohort_device
from monai_cluscam.io import load_image, save_overlay
from monai_cluscam.io.files import atomic_write, check_writable_dir, mark_output_dir, safe_stem
from monai_cluscam.io.inputs import find_inputs
from monai_cluscam.io.pacs import (
    SENT_RECORD,
    PacsDestination,
    PacsError,
    SendReport,
    referenced_source_files,
    send_dicom,
)
from monai_cluscam.io.predictions import write_predictions
from monai_cluscam.transforms import make_explainer, method_info
from monai_cluscam.utils import auto_batch_size, first_conv, model_device

__all__ = ["RECORD_SUFFIX", "TABLES", "ExplainResult", "ExplainedInput", "explain_files"]

#: Each explained input's record, beside its overlay: ``<name>_cluscam.json``, written last.
RECORD_SUFFIX = "_cluscam.json"
#: The merged tables and the header each starts with (a file that starts otherwise is not replaced).
TABLES = {"predictions.csv": "file,prediction", "failures.csv": "file,error"}


@dataclass(frozen=True)
class ExplainedInput:
    """One input :func:`explain_files` explained.

    Attributes:
        input: the input as found (a file, or a DICOM series folder).
        probabilities: one per class, from the explanation's own forward pass.
        prediction: the name of the most probable class (the class explained).
        files: the overlay's files in the output folder (NIfTI, colour table, Slicer script, preview).
        reused: whether an earlier run into the same folder had explained it (nothing was recomputed).
        dicom: the DICOM files in ``<name>_<method>_dicom/`` (the scan when it was written, the Parametric Map,
            the colour overlays); empty when none were written.
    """

    input: Path
    probabilities: tuple[float, ...]
    prediction: str
    files: tuple[Path, ...]
    reused: bool
    dicom: tuple[Path, ...] = ()

    @property
    def overlay(self) -> Path:
        """The NIfTI overlay on the input's own grid."""
        return self.files[0]


@dataclass(frozen=True)
class ExplainResult:
    """What :func:`explain_files` did.

    Attributes:
        output_dir: the output folder (absolute).
        method: the method's canonical name.
        class_names: one per network output, the columns of ``predictions.csv``.
        explained: the inputs explained (or kept from an earlier run), in input order.
        failures: ``(input, reason)`` of each input that failed, in input order (paths that could not be read
            as inputs first).
        left_out: ``(path, why)`` of results this package wrote that the input search left out (not failures).
        predictions_csv: the table of ``explained``.
        failures_csv: the table of ``failures``; None when nothing failed (an earlier run's is removed).
        rank: this process's rank under ``torchrun`` (0 otherwise); rank 0 writes the tables.
        sent: with ``send``/``send_aet``, what each destination accepted (rank 0 sends).
        send_failures: ``(destination, reason)`` of each destination that refused objects or could not be
            reached; the files stay on disk and the same call again sends what is missing.
    """

    output_dir: Path
    method: str
    class_names: list[str]
    explained: list[ExplainedInput]
    failures: list[tuple[str, str]]
    left_out: list[tuple[Path, str]]
    predictions_csv: Path
    failures_csv: Path | None
    rank: int = 0
    sent: tuple[SendReport, ...] = ()
    send_failures: tuple[tuple[str, str], ...] = ()

    @property
    def reused(self) -> int:
        """How many inputs an earlier run into the same folder had explained."""
        return sum(item.reused for item in self.explained)


@dataclass(frozen=True)
class _Model:
    """The classifier as the pipeline uses it, from a bundle or from a network and its preprocessing."""

    network: nn.Module
    preprocessing: Callable[[dict], dict]
    class_names: list[str]
    target_layers: str | Sequence[str]
    bundle_k: int | None  # the bundle's num_clusters
    root: Path | None  # the bundle folder
    bundle_baseline: str | None = None  # the bundle's ClusCAM baseline
    bundle_foreground: bool | float = False  # the bundle's foreground restriction


@dataclass(frozen=True)
class _Options:
    method: str
    masked_passes: bool
    batch_size: int | None
    overwrite: bool
    preview: bool
    dicom: bool
    deidentify: bool
    foreground: bool | float = False


def explain_files(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    bundle: str | os.PathLike | BundleModel | None = None,
    network: nn.Module | None = None,
    preprocessing: Callable[[dict], dict] | None = None,
    class_names: Sequence[str] | None = None,
    target_layers: str | Sequence[str] | None = None,
    method: str = "cluscam",
    num_clusters: int | None = None,
    baseline: str | None = None,
    foreground: bool | float | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    preview: bool = True,
    dicom: bool = False,
    deidentify: bool = False,
    send: str | None = None,
    send_aet: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ExplainResult:
    """Classify and explain every image under ``inputs``; write the overlays, their records and the tables.

    The classifier is a bundle (``bundle``: its folder, or what :func:`~monai_cluscam.bundle.load_bundle`
    returned) or a network with its preprocessing (``network``, ``preprocessing``, ``class_names``,
    ``target_layers``). For each input the preprocessing turns ``{"image": path}`` into a channel-first image,
    the network's prediction is explained with ``method`` and the map is written with
    :func:`~monai_cluscam.io.save_overlay` on the input's own grid, then the input's record
    ``<name>_cluscam.json`` (its path, the settings, the probabilities, the files). ``predictions.csv`` lists the
    explained inputs, ``failures.csv`` the failed ones with the reason. Under ``torchrun`` (``WORLD_SIZE > 1``)
    the processes share the inputs and each returns the whole result.

    Args:
        inputs: files and folders (PNG/JPEG slices, NIfTI, DICOM files and series folders; folders searched
            recursively); results this package wrote are left out, and ``output_dir`` is never searched.
        output_dir: the output folder (created if needed).
        bundle: a bundle folder or a loaded bundle; its settings are the defaults of the arguments below.
        network: the classifier, when there is no bundle (it is used on ``device``, or where it is).
        preprocessing: ``{"image": path} -> {"image": MetaTensor (C, *spatial)}`` for ``network``; None reads
            the file with :func:`~monai_cluscam.io.load_image` and nothing more.
        class_names: one per network output (needed with ``network``).
        target_layers: the layer to explain from (default: the bundle's; needed with ``network``).
        method: a registered method name or alias (:mod:`monai_cluscam.cam.registry`), any case.
        num_clusters: ClusCAM's K (default: the bundle's ``num_clusters``, else the package default).
        baseline: what ClusCAM's masked copies hold where a cluster is off: ``"zero"`` (as published),
            ``"blur"`` or ``"mean"`` (default: the bundle's ``baseline``, else zeros).
        foreground: restrict each map to the subject (True, or the grey value above which a voxel of the
            preprocessed image is subject; see :meth:`~monai_cluscam.cam.BaseCAM.__call__`); default: the
            bundle's ``foreground``, else False.
        batch_size: masked copies per forward pass (None: sized to the input); halved when memory runs out.
        device: where a bundle folder is loaded (None: CUDA when available; under ``torchrun`` each process's
            own GPU), or where ``network`` is moved.
        overwrite: explain every input again, replacing its outputs; without it a rerun into the same folder
            keeps every input whose record and files are complete and whose settings match.
        preview: also write PNG previews.
        dicom: also write each explanation as DICOM for a PACS, in ``<name>_<method>_dicom/`` (a Parametric Map
            and a colour overlay series in the scan's Study; the scan itself as DICOM when it is a NIfTI or
            PNG/JPEG file; see :func:`~monai_cluscam.io.save_dicom_overlay`). A rerun with ``dicom`` after a run
            without it writes the missing DICOM. Needs highdicom (the ``dicom`` extra).
        deidentify: with ``dicom``: de-identified DICOM (a copy of the scan in a new Study, no names, no dates,
            a new patient ID).
        send: with ``dicom``: a PACS's DICOMweb root (``http://host:8042/dicom-web``) to store every DICOM object
            of the explained inputs at (STOW-RS), after the tables are written, with the input's own DICOM scan
            slices so the study opens complete; ``dicom_sent.json`` in the output folder records what it accepted,
            so a rerun sends only what is missing (the ``pacs`` extra).
        send_aet: with ``dicom``: the same by DIMSE C-STORE to ``AET@HOST:PORT`` (calling AE title
            ``MONAICLUSCAM``).
        progress: show a progress bar on stderr.
        log: called with each note (a result left out of the inputs), warning and failure as it happens;
            None writes them to stderr.

    Returns:
        An :class:`ExplainResult`: the explained inputs with their probabilities and files, the failures, the
        tables written.

    Raises:
        ValueError: bad arguments (an unknown method, a parameter the method does not take, neither or both of
            ``bundle`` and ``network``), an unusable ``output_dir`` or a bundle that cannot be loaded.
        OSError: ``output_dir`` cannot be written, holds a ``predictions.csv``/``failures.csv`` this package did
            not write (pass ``overwrite=True``), or the tables could not be written (the overlays and records
            are kept; the same call again writes them).

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from monai.networks.nets import resnet10
        >>> from PIL import Image
        >>> folder = Path(tempfile.mkdtemp())
        >>> for i in range(2):
        ...     pixels = np.random.default_rng(i).integers(0, 255, (32, 32), np.uint8)
        ...     Image.fromarray(pixels).save(folder / f"s{i}.png")
        >>> net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> result = explain_files(folder, folder / "out", network=net, class_names=["no", "yes"],
        ...                        target_layers="layer4", num_clusters=4, device="cpu", progress=False)
        >>> [(item.input.name, item.overlay.name) for item in result.explained], result.failures
        ([('s0.png', 's0_cluscam.nii.gz'), ('s1.png', 's1_cluscam.nii.gz')], [])
        >>> result.predictions_csv.read_text().splitlines()[0]
        'file,prediction,no,yes'
    """
    spec = method_spec(method)
    foreground_threshold(foreground)  # a bad value raises here, before any input
    if deidentify and not dicom:
        raise ValueError("deidentify applies to the DICOM output only; pass dicom=True with it (--dicom --deidentify).")
    if (send or send_aet) and not dicom:
        raise ValueError("send and send_aet store the DICOM output; pass dicom=True with them (--dicom --send URL).")
    destinations = [PacsDestination.parse_url(send)] if send else []  # bad addresses fail before any input
    destinations += [PacsDestination.parse_aet(send_aet)] if send_aet else []
    options = _Options(spec.name, spec.masked_passes, batch_size, overwrite, preview, dicom, deidentify)
    if (bundle is None) == (network is None):
        raise ValueError("pass a bundle (bundle=<folder or loaded bundle>) or a network (network=...), not both.")
    if network is not None and (not class_names or target_layers is None):
        raise ValueError("with network=..., pass class_names=[one per output] and target_layers=<layer name>.")
    if isinstance(bundle, BundleModel) or network is not None:
        net = bundle.network if isinstance(bundle, BundleModel) else network
        where = cohort_device(device) if device is not None else model_device(net)
    else:
        where = cohort_device(device)
    say = log or _to_stderr
    given = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    with cohort(where) as group:
        plan = group.broadcast(_plan(given, output_dir, overwrite) if group.is_main else None)
        if isinstance(plan, Exception):
            raise plan
        found, skipped, left_out, out = plan
        if group.is_main:
            for path, why in left_out:
                say(f"note: {path}: {why}")
        model = _model(bundle, network, preprocessing, class_names, target_layers, where)
        options = replace(options, foreground=model.bundle_foreground if foreground is None else foreground)
        cam, settings = _explainer(model, options, num_clusters, baseline)
        names = _unique_names(found)
        mine = group.shard(range(len(found)))
        desc = f"explaining (rank {group.rank})" if group.world_size > 1 else "explaining"
        done: list[tuple[int, ExplainedInput | None, str | None]] = []
        for index in _progress(mine, disable=not progress, desc=desc):
            path = found[index]
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    item = _explain_or_reuse(path, names[index], model, cam, out, settings, options)
                for w in caught:
                    say(f"warning: {path}: {w.message}")
                done.append((index, item, None))
            except Exception as err:  # one bad input must not cost the others their results
                reason = _reason(err)
                done.append((index, None, reason))
                say(f"failed: {path}: {reason}")
        merged = sorted((r for part in group.gather(done) for r in part), key=lambda r: r[0])
    explained = [item for _, item, _ in merged if item is not None]
    failures = [(str(p), why) for p, why in skipped] + [(str(found[i]), why) for i, _, why in merged if why]
    result = ExplainResult(
        out,
        options.method,
        model.class_names,
        explained,
        failures,
        left_out,
        out / "predictions.csv",
        out / "failures.csv" if failures else None,
        group.rank,
    )
    if group.is_main:
        _write_tables(result)
        if destinations:
            result = _send(result, destinations, say)
    return result


def _send(result: ExplainResult, destinations: list[PacsDestination], say: Callable[[str], None]) -> ExplainResult:
    """Store every explained input's DICOM at each destination, recording what went; a refusal is reported, not
    raised, so the results on disk and the other destinations are not lost."""
    files = []
    for item in result.explained:
        maps = [f for f in item.dicom if f.parent.name == "map"]
        if maps and not any(f.parent.name == "scan" for f in item.dicom):  # the input's own DICOM scan: send it too
            files += referenced_source_files(maps[0], item.input)
        files += list(item.dicom)
    reports, failures = [], []
    for destination in destinations:
        try:
            reports.append(send_dicom(files, destination, record=result.output_dir / SENT_RECORD))
        except PacsError as err:
            failures.append((destination.label, str(err)))
            say(f"failed: sending to {destination.label}: {err}")
    return replace(result, sent=tuple(reports), send_failures=tuple(failures))


def _to_stderr(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def _plan(
    inputs: list, output_dir: str | os.PathLike, overwrite: bool
) -> tuple[list[Path], list[tuple[Path, str]], list[tuple[Path, str]], Path] | Exception:
    """Rank 0's part before any work: the inputs, the output folder checked and cleaned; a usage error returned."""
    try:
        out = check_writable_dir(output_dir)
    except (OSError, ValueError) as err:
        return err
    mark_output_dir(out)
    # results are not scans: this run's output folder inside an input folder, an earlier run's or a bundle's
    # output folder, overlays and previews given as files are left out (and said so)
    left_out: list[tuple[Path, str]] = []
    found, skipped = find_inputs(inputs, exclude=[out], left_out=left_out)
    for table, header in TABLES.items():
        if (out / table).exists() and not overwrite and not _starts_with(out / table, header):
            return FileExistsError(
                f"{out / table} exists and is not a monai-cluscam table; pass --overwrite or choose another --output"
            )
    for stale in out.glob(".*.tmp"):  # temporary files of a run killed midway: never renamed, never complete
        if "_cluscam" in stale.name or stale.name.startswith(tuple(f".{t}." for t in TABLES)):
            stale.unlink(missing_ok=True)
    return found, skipped, left_out, out


def _starts_with(path: Path, header: str) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as stream:
            return stream.readline().startswith(header)
    except OSError:
        return False


def _model(
    bundle: str | os.PathLike | BundleModel | None,
    network: nn.Module | None,
    preprocessing: Callable[[dict], dict] | None,
    class_names: Sequence[str] | None,
    target_layers: str | Sequence[str] | None,
    device: torch.device,
) -> _Model:
    """The classifier on ``device``: the arguments given, else the bundle's settings."""
    if network is not None:
        return _Model(network.to(device), preprocessing or _read, list(class_names), target_layers, None, None)
    loaded = bundle if isinstance(bundle, BundleModel) else load_bundle(bundle, device=device)
    return _Model(
        loaded.network.to(device),
        preprocessing or loaded.preprocessing,
        list(class_names or loaded.class_names),
        target_layers or loaded.target_layers,
        loaded.num_clusters,
        loaded.root,
        loaded.baseline,
        loaded.foreground,
    )


def _model_card(model: _Model) -> dict[str, str]:
    """The model's name and version for the report: the bundle's folder name and its metadata's version, else the
    network's class."""
    if model.root is None:
        return {"name": type(model.network).__name__, "version": ""}
    try:
        meta = json.loads((model.root / "configs" / "metadata.json").read_text())
    except (OSError, ValueError):
        meta = {}
    return {"name": model.root.name, "version": str(meta.get("version", "")) if isinstance(meta, dict) else ""}


def _read(data: dict) -> dict:
    """The preprocessing of a network given without one: the image read from its file."""
    return {**data, "image": load_image(data["image"])}


def _explainer(model: _Model, options: _Options, num_clusters: int | None, baseline: str | None):
    """The method's explainer for the model, and the settings an input's record keeps (a rerun compares them)."""
    method_args = {"batch_size": options.batch_size}
    # K and the baseline: the ones given, else the bundle's own (its config's), else the package defaults
    from_bundle = num_clusters is None and options.method == "cluscam" and model.bundle_k is not None
    if from_bundle:
        num_clusters = model.bundle_k
    if num_clusters is not None:
        method_args["num_clusters"] = num_clusters
    baseline_from_bundle = baseline is None and options.method == "cluscam" and model.bundle_baseline is not None
    if baseline_from_bundle:
        baseline = model.bundle_baseline
    if baseline is not None:
        method_args["baseline"] = baseline
    try:
        cam = make_explainer(model.network, options.method, model.target_layers, **method_args)
    except ValueError as err:
        # name the bundle's setting only when the error is about it (not, say, a TorchScript network)
        ids = [name for name, used in (("num_clusters", from_bundle), ("baseline", baseline_from_bundle))
               if used and name in str(err)]
        where = f" ({' or '.join(ids)} of {model.root / 'configs' / 'inference.json'})" if ids else ""
        raise ValueError(f"{err}{where}") from err
    settings = {
        "bundle": None if model.root is None else str(model.root),
        "class_names": model.class_names,
        "method": options.method,
        "num_clusters": num_clusters,
        "target_layer": model.target_layers,
    }
    # recorded only when set, so the records of runs made before these options still match
    settings.update({k: v for k, v in (("baseline", baseline), ("foreground", options.foreground)) if v})
    return cam, settings


def _write_tables(result: ExplainResult) -> None:
    rows = [(str(item.input), torch.tensor(item.probabilities)) for item in result.explained]
    try:
        write_predictions(result.predictions_csv, rows, result.class_names, overwrite=True)
        if result.failures_csv is not None:
            _write_failures(result.failures_csv, result.failures)
        else:
            (result.output_dir / "failures.csv").unlink(missing_ok=True)
    except OSError as err:
        raise OSError(
            f"cannot write predictions.csv/failures.csv in {result.output_dir} ({err}); the overlays and their "
            "records are kept: free space or fix the permissions, then rerun the same command to write the tables."
        ) from err


def _explain_or_reuse(
    path: Path, name: str, model: _Model, cam, out: Path, settings: dict, options: _Options
) -> ExplainedInput:
    """The input explained, or taken from a complete earlier run's record (nothing recomputed)."""
    record = out / f"{name}{RECORD_SUFFIX}"
    source = str(path.resolve())
    if not options.overwrite and (previous := _read_record(record)) is not None:
        if previous["input"] != source or previous["settings"] != settings:
            raise FileExistsError(
                f"{record} holds the result of {previous['input']} with {previous['settings']}, not of this input "
                "with these settings; pass --overwrite to replace it or choose another --output."
            )
        kept = [f for f in previous["dicom"] if (out / f).exists()]
        complete = all((out / f).exists() for f in previous["files"]) and (not options.preview or previous["preview"])
        # DICOM asked for: all of it there, de-identified or not as asked (else it is written again)
        if options.dicom and not (kept and kept == previous["dicom"] and previous["deidentify"] == options.deidentify):
            complete = False
        if complete:
            return _explained(path, previous["probabilities"], model.class_names, out, previous["files"], True, kept)
    record.unlink(missing_ok=True)  # the outputs are about to change: no record may vouch for them meanwhile
    probs, files, dicom = _explain_one(path, model, cam, out, name, options)
    item = _explained(path, probs, model.class_names, out, files, False, dicom)
    entry = {
        "input": source,
        "file": str(path),
        "settings": settings,
        "probabilities": probs,
        "prediction": item.prediction,
        "files": files,
        "preview": options.preview,
        "dicom": dicom,
        "deidentify": options.deidentify,
    }
    payload = json.dumps(entry, indent=1).encode()
    atomic_write(record, lambda stream: stream.write(payload), overwrite=True)
    return item


def _explained(
    path: Path, probs: list[float], class_names: list[str], out: Path, files: list[str], reused: bool, dicom: list[str]
) -> ExplainedInput:
    prediction = class_names[max(range(len(probs)), key=probs.__getitem__)]
    return ExplainedInput(
        path, tuple(probs), prediction, tuple(out / f for f in files), reused, tuple(out / f for f in dicom)
    )


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
    # the DICOM files (records of older versions have none): relative paths inside the output folder only
    entry.setdefault("dicom", [])
    entry.setdefault("deidentify", False)
    if not isinstance(entry["dicom"], list) or not all(_inside(f) for f in entry["dicom"]):
        return None
    return entry


def _inside(file: object) -> bool:
    """Whether a record's DICOM entry is a relative path ``<folder>/.../<file>`` that stays in the output folder."""
    if not isinstance(file, str) or "\\" in file:
        return False
    parts = PurePosixPath(file).parts
    return len(parts) > 1 and not PurePosixPath(file).is_absolute() and not {"", ".", ".."} & set(parts)


def _explain_one(
    path: Path, model: _Model, cam, out: Path, name: str, options: _Options
) -> tuple[list[float], list[str], list[str]]:
    channels, dims = _model_input(model.network) or (None, None)
    # a 2D slice stored as NIfTI (H, W, 1), as this package writes slices, is 2D for a 2D model
    source = load_image(path, spatial_dims=2) if dims == 2 and _is_nifti_slice(path) else str(path)
    try:
        data = model.preprocessing({"image": source})
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
    x = image[None].to(model_device(model.network))
    maps = _explain_within_memory(cam, x, options)  # the predicted class; its own forward pass gives the prediction
    probs = cam.logits_.float().softmax(1)[0].cpu()
    written = save_overlay(
        maps,
        out,
        image=image,
        name=name,
        overwrite=True,
        preview=options.preview,
        formats=("nifti", "dicom") if options.dicom else ("nifti",),
        method_info=method_info(options.method, cam),
        deidentify=options.deidentify,
        prediction={"class_names": model.class_names, "probabilities": probs.tolist(), "model": _model_card(model)},
    )[0]
    files = [written.nifti, written.color_table, written.slicer_script, written.preview]
    dicom = [f.relative_to(out).as_posix() for f in written.dicom.paths] if written.dicom else []
    return [float(p) for p in probs], [f.name for f in files if f is not None], dicom


def _explain_within_memory(cam, x: torch.Tensor, options: _Options) -> torch.Tensor:
    """``cam(x)`` (restricted to ``options.foreground``); when memory runs out, again with half as many masked
    copies per forward pass, down to one."""
    chunk = min(options.batch_size or auto_batch_size(x), getattr(cam, "num_clusters", None) or auto_batch_size(x))
    try:
        while True:
            try:
                return cam(x, foreground=options.foreground)
            except Exception as err:
                if not _out_of_memory(err):
                    raise
                if x.device.type == "cuda":
                    torch.cuda.empty_cache()
                # a method without masked forward passes (Grad-CAM) gains nothing from a smaller chunk
                if chunk <= 1 or not options.masked_passes:
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
        cam.batch_size = options.batch_size


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
