"""``ClusCAMOperator``: a MONAI Deploy App SDK operator that classifies the selected DICOM series with a bundle,
explains the prediction with ClusCAM (or another registered method) and writes the explanation as DICOM.

Where it sits in an application (``examples/deploy_app/app.py``)::

    DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator -> DICOMSeriesToVolumeOperator -> ClusCAMOperator
                                          \\______________ study_selected_series_list ______/

Named inputs:
    image: the ``Image`` that ``DICOMSeriesToVolumeOperator`` made of the selected series.
    study_selected_series_list: the selection of ``DICOMSeriesSelectorOperator``, for the series' own instances
        (the map and overlays reference them, and their attributes place the map).

Named output:
    result: a :class:`ClusCAMResult` (the prediction and the paths of the written files); no receiver is needed.

Into the application's output folder it writes ``<SeriesInstanceUID>_<method>_dicom/`` (de-identified:
``series-<digest of the UID>_<method>_dicom/``) with
``map/parametric_map.dcm`` (a Parametric Map of the attribution on the scan's slices), ``overlay/IM*.dcm`` (the
colour overlay series, RGB Secondary Captures) and ``report/report.dcm`` (a Comprehensive SR of the
classification), all in the scan's Study and Frame of Reference (:func:`monai_cluscam.io.save_dicom_overlay`).

The SDK (``pip install 'monai-cluscam[deploy]'``) is needed to build the operator; this module imports without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.transforms import Compose, LoadImage, LoadImaged
from torch import nn

from monai_cluscam.bundle import BundleModel, load_bundle
from monai_cluscam.cam.base import foreground_threshold
from monai_cluscam.cam.registry import method_spec
from monai_cluscam.deploy.image import image_to_metatensor, link_series
from monai_cluscam.io import DicomOverlayFiles, save_dicom_overlay
from monai_cluscam.io.dicom_export import dicom_folder
from monai_cluscam.transforms import make_explainer, method_info
from monai_cluscam.utils import first_conv, model_device

try:  # the SDK is an optional extra: without it the class is defined, and building one says what to install
    from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
except ImportError as err:  # pragma: no cover - depends on the environment
    _SDK_MISSING: ImportError | None = err
    Operator = object  # type: ignore[assignment,misc]
else:
    _SDK_MISSING = None

__all__ = ["ClusCAMOperator", "ClusCAMResult"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusCAMResult:
    """What :class:`ClusCAMOperator` emits for one series.

    Attributes:
        series_instance_uid: the explained series.
        prediction: the predicted class (the class explained).
        probabilities: each class's probability, in the bundle's class order.
        files: what :func:`~monai_cluscam.io.save_dicom_overlay` wrote (``folder``, ``parametric_map``,
            ``secondary_capture``, ``report``).
    """

    series_instance_uid: str
    prediction: str
    probabilities: dict[str, float]
    files: DicomOverlayFiles

    @property
    def paths(self) -> list[Path]:
        """Every file written: the map, the overlays, the report."""
        return self.files.paths


class ClusCAMOperator(Operator):
    """Classify a DICOM series with a bundle and write its ClusCAM explanation as DICOM (see the module doc).

    Args:
        fragment: the application (or fragment) the operator belongs to.
        *args: the SDK's conditions and resources, as for any operator.
        bundle: the bundle folder (``configs/inference.json``, ``models/model.pt``) or a loaded
            :class:`~monai_cluscam.bundle.BundleModel`; loaded here, so a bad bundle fails when the application is
            composed, before any DICOM is read.
        output_folder: where the results go (the application's output folder).
        method: the explanation method (``"cluscam"``, or another registered name such as ``"gradcam"``).
        num_clusters: ClusCAM's K; default: the bundle's ``num_clusters``, else the package default.
        baseline: ClusCAM's masking baseline; default: the bundle's, else zeros.
        foreground: restrict the map to the subject (True or a grey value); default: the bundle's setting.
        device: where the network runs (``"cpu"``, ``"cuda"``); None: CUDA when available.
        deidentify: write de-identified DICOM (a copy of the scan in a new Study, no names or dates).
        overwrite: replace the result folder of an earlier run on the same series; without it such a folder
            stops the run with ``FileExistsError`` and is left as it was.
        workdir: where the series' instances are linked while they are read (a temporary folder, removed
            after each series); None: the system's temporary folder.
        **kwargs: the SDK's operator keywords (``name=...``).

    Raises:
        ImportError: the MONAI Deploy App SDK is not installed.
        FileNotFoundError, ValueError: the bundle cannot be loaded, or the method or its settings are invalid.
    """

    INPUT_IMAGE = "image"
    INPUT_SERIES = "study_selected_series_list"
    OUTPUT_RESULT = "result"

    def __init__(
        self,
        fragment: Fragment,
        *args,
        bundle: str | os.PathLike | BundleModel,
        output_folder: str | os.PathLike,
        method: str = "cluscam",
        num_clusters: int | None = None,
        baseline: str | None = None,
        foreground: bool | float | None = None,
        device: str | torch.device | None = None,
        deidentify: bool = False,
        overwrite: bool = False,
        workdir: str | os.PathLike | None = None,
        **kwargs,
    ) -> None:
        if _SDK_MISSING is not None:
            raise ImportError(
                "ClusCAMOperator needs the MONAI Deploy App SDK: pip install 'monai-cluscam[deploy]' "
                f"(monai-deploy-app-sdk) ({_SDK_MISSING})."
            ) from _SDK_MISSING
        self.bundle = bundle if isinstance(bundle, BundleModel) else load_bundle(bundle, device=device)
        self.output_folder = Path(output_folder)
        self.method = method
        self.deidentify = deidentify
        self.overwrite = overwrite
        self.workdir = None if workdir is None else Path(workdir)
        self.foreground = self.bundle.foreground if foreground is None else foreground
        foreground_threshold(self.foreground)  # a bad value fails here, not on the first series
        self.explainer = make_explainer(self.bundle.network, method, self.bundle.target_layers, **_method_args(
            method, self.bundle, num_clusters, baseline))
        self.preprocessing = _without_loader(self.bundle.preprocessing)
        self.spatial_dims = _spatial_dims(self.bundle.network)
        # the SDK's Operator calls setup() from its constructor: everything above must exist by then
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_IMAGE)
        spec.input(self.INPUT_SERIES)
        spec.output(self.OUTPUT_RESULT).condition(ConditionType.NONE)  # a receiver is optional

    def compute(self, op_input, op_output, context) -> None:
        image = op_input.receive(self.INPUT_IMAGE)
        selection = op_input.receive(self.INPUT_SERIES)
        result = self.explain(image, selection)
        logger.info(
            "Explained the series: %s (%.3f); wrote %d DICOM files in %s",
            result.prediction, result.probabilities[result.prediction], len(result.paths), result.files.folder,
        )
        op_output.emit(result, self.OUTPUT_RESULT)

    def explain(self, image: object, study_selected_series_list: object) -> ClusCAMResult:
        """Classify and explain one series: what :meth:`compute` does, callable without running a graph.

        Args:
            image: the ``Image`` of the series (``DICOMSeriesToVolumeOperator``).
            study_selected_series_list: the ``StudySelectedSeries`` list the Image was made from.

        Raises:
            ValueError: no Image or no selected series, an Image of none of the selected series, broken series
                geometry, an image the model cannot take, or a map that is not finite.
            FileExistsError: the series' result folder exists (pass ``overwrite=True``).
        """
        if image is None or not hasattr(image, "asnumpy"):
            raise ValueError(
                f"{self.INPUT_IMAGE!r} received {type(image).__name__}, not an SDK Image: no series matched the "
                "selection rules, or DICOMSeriesToVolumeOperator's 'image' output is not connected here."
            )
        series = _series_of(image, study_selected_series_list)
        uid = str(series.SeriesInstanceUID)
        datasets = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
        # the result folder is named by the series; de-identified, by a digest of its UID (a rerun finds it again,
        # and the name does not give the source's UID away)
        name = f"series-{hashlib.sha256(uid.encode()).hexdigest()[:12]}" if self.deidentify else uid
        folder = dicom_folder(self.output_folder, name, method_info(self.method, self.explainer)["method"], None)
        if folder.exists() and not self.overwrite:
            raise FileExistsError(
                f"{folder} holds the result of an earlier run on series {uid}; remove it, pass overwrite=True "
                "(--overwrite in the example application) or choose another output folder."
            )
        workdir = None if self.workdir is None else str(self.workdir)
        with tempfile.TemporaryDirectory(prefix="cluscam-series-", dir=workdir) as scratch:
            source = link_series(datasets, Path(scratch) / "series")
            tensor = image_to_metatensor(image, source, spatial_dims=self.spatial_dims)
            x = self.preprocessing({"image": tensor})["image"]
            _check_input(x, self.bundle.network)
            maps = self.explainer(x[None].to(model_device(self.bundle.network)), foreground=self.foreground)
            probs = [float(p) for p in self.explainer.logits_.float().softmax(1)[0].cpu()]
            names = self.bundle.class_names
            if folder.exists():  # overwrite: only now, when the new result is about to be written
                shutil.rmtree(folder)
            files = save_dicom_overlay(
                maps,
                x,
                self.output_folder,
                source=source,
                method_info=method_info(self.method, self.explainer),
                deidentify=self.deidentify,
                name=name,
                prediction={"class_names": names, "probabilities": probs, "model": _model_card(self.bundle)},
            )
        prediction = names[max(range(len(probs)), key=probs.__getitem__)]
        return ClusCAMResult(uid, prediction, dict(zip(names, probs, strict=True)), files)


def _method_args(method: str, bundle: BundleModel, num_clusters: int | None, baseline: str | None) -> dict:
    """The explainer's settings: those given, else the bundle's own for ClusCAM (as ``monai-cluscam explain``)."""
    args: dict = {}
    cluscam = method_spec(method).name == "cluscam"
    k = num_clusters if num_clusters is not None else (bundle.num_clusters if cluscam else None)
    if k is not None:
        args["num_clusters"] = k
    chosen = baseline if baseline is not None else (bundle.baseline if cluscam else None)
    if chosen is not None:
        args["baseline"] = chosen
    return args


def _without_loader(preprocessing):
    """The bundle's preprocessing for an image already in memory: a leading ``LoadImage(d)`` left out (the
    package's own bundles read with ``load_image``, which passes a ``MetaTensor`` through)."""
    if isinstance(preprocessing, Compose) and preprocessing.transforms:
        if isinstance(preprocessing.transforms[0], (LoadImage, LoadImaged)):
            return Compose(list(preprocessing.transforms[1:]))
    return preprocessing


def _spatial_dims(network: nn.Module) -> int:
    conv = first_conv(network, (nn.Conv2d, nn.Conv3d))
    return 3 if conv is None else len(conv.kernel_size)


def _check_input(x: torch.Tensor, network: nn.Module) -> None:
    conv = first_conv(network, (nn.Conv2d, nn.Conv3d))
    if conv is not None and x.shape[0] != conv.in_channels:
        raise ValueError(
            f"the image has {x.shape[0]} channels after the bundle's preprocessing but the model takes "
            f"{conv.in_channels}."
        )
    finite = torch.isfinite(torch.as_tensor(x))
    if not bool(finite.all()):
        raise ValueError(
            f"{int((~finite).sum())} of {finite.numel()} values are NaN or infinite after the bundle's "
            "preprocessing; a map of them would mean nothing. Check the series."
        )


def _series_of(image: object, selection: object):
    """The selected ``DICOMSeries`` the Image was made of: the one its SeriesInstanceUID names, else the first
    selected series (the one ``DICOMSeriesToVolumeOperator`` converts)."""
    selected = [s for study in (selection or []) for s in getattr(study, "selected_series", [])]
    if not selected:
        raise ValueError(
            f"{ClusCAMOperator.INPUT_SERIES!r} holds no selected series; connect DICOMSeriesSelectorOperator's "
            "'study_selected_series_list' output to this operator."
        )
    meta = image.metadata() if callable(getattr(image, "metadata", None)) else {}
    wanted = (meta or {}).get("SeriesInstanceUID")
    if wanted:
        for item in selected:
            if str(item.series.SeriesInstanceUID) == str(wanted):
                return item.series
        raise ValueError(
            f"the Image is of series {wanted}, which is not among the selected series "
            f"({', '.join(str(s.series.SeriesInstanceUID) for s in selected)})."
        )
    return selected[0].series


def _model_card(bundle: BundleModel) -> dict[str, str]:
    """The bundle's name (its folder) and version (its metadata's) for the report."""
    try:
        meta = json.loads((bundle.root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    return {"name": bundle.root.name, "version": str(meta.get("version", "")) if isinstance(meta, dict) else ""}
