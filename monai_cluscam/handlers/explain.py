"""Explain every batch of a MONAI evaluator with ClusCAM (or a baseline) and keep or export the maps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor, list_data_collate
from monai.engines import IterationEvents, Workflow
from torch import nn

from monai_cluscam.cam.base import foreground_threshold
from monai_cluscam.handlers._common import Engine, Events, check_flags, engine_network, per_sample, sample_name
from monai_cluscam.io import save_overlay
from monai_cluscam.io.pacs import SENT_RECORD, PacsDestination, PacsError, referenced_source_files, send_dicom
from monai_cluscam.transforms import class_index_of, make_explainer, method_info, resolve_method, wrap_like
from monai_cluscam.utils import model_device, plain_tensor

__all__ = ["ClusCAMHandler", "ExplanationFailure"]

_CLASS_SOURCES = ("pred", "label")


@dataclass(frozen=True)
class ExplanationFailure:
    """One sample that could not be explained or written.

    Attributes:
        file: the sample's ``filename_or_obj``, or None when it has none.
        epoch: engine epoch.
        iteration: engine iteration.
        index: position of the sample in its batch.
        stage: ``"explain"``, ``"write"`` or ``"send"`` (the PACS refused the sample's DICOM or was down; the
            files are on disk and ``dicom_sent.json`` beside them records what went).
        error: the exception's type and message.
    """

    file: str | None
    epoch: int
    iteration: int
    index: int
    stage: str
    error: str


class ClusCAMHandler:
    """Explain each batch of a ``SupervisedEvaluator`` or ``EnsembleEvaluator``, store the maps in the engine
    output, and optionally write overlays on the original scan's grid.

    Event order. MONAI workflows decollate the batch (``decollate=True``, the default) and run
    ``postprocessing`` on ``IterationEvents.MODEL_COMPLETED``; ``key_metric``/``additional_metrics`` update on
    ``Events.ITERATION_COMPLETED``. This handler runs on ``MODEL_COMPLETED`` too, after those (it is attached
    later), so it sees the post-processed output, and the maps are in place before the metrics and every
    ``ITERATION_COMPLETED`` handler read them. On an engine without MONAI's iteration events it runs on
    ``ITERATION_COMPLETED``; put it before the handlers that read the maps.

    Output. With ``decollate=True`` ``engine.state.output`` is a list of per-sample dicts, and each gets
    ``output_key``: a ``(1, *spatial)`` ``MetaTensor`` with its image's metadata. With ``decollate=False`` the
    output dict gets a batched ``(B, 1, *spatial)`` ``MetaTensor``. The map of a sample that failed is NaN
    everywhere, so it can never pass for an explanation.

    Failures. The batch is explained at once; if that raises, each sample is explained alone, so one bad
    sample (NaN image, unreadable label, ...) costs only itself. A failure to explain or to write a sample is
    logged (error level, with the file name) and appended to :attr:`failures`; ``engine.state`` counts them
    under ``<output_key>_failures`` for the current run. Configuration errors (unknown method, parameter,
    layer or network) raise when the handler is built or attached, never per sample.

    Args:
        method: ``"cluscam"`` (default) or another name in :data:`~monai_cluscam.transforms.METHODS`
            (``"scorecam"``, ``"gradcam"``, ``"gradcampp"``, ``"decomcam"``, ``"rise"``, ``"occlusion"``).
        target_layers: name of the layer to explain from, as in ``network.named_modules()``, or a list of them.
        network: the network to explain; by default the engine's ``network``.
        network_key: with an ``EnsembleEvaluator``: which of its ``networks``, by prediction key
            (``"pred_0"``, ...) or index.
        class_idx: the class to explain: ``"pred"`` (default, the explained network's predicted class, the
            argmax of its prediction), ``"label"`` (the label under ``label_key``), or a fixed class index.
        image_key: key of the image in the engine output (or batch).
        label_key: key of the label, for ``class_idx="label"``.
        output_key: key under which the maps are stored.
        output_dir: when given, overlays are written there by :func:`monai_cluscam.io.save_overlay`;
            ``{epoch}`` in it is replaced by the engine epoch (``"runs/cam/epoch_{epoch:04d}"``).
        overwrite: replace existing overlay files (else an existing file makes that sample a failure).
        preview: also write PNG previews.
        resample: write overlays on the grid the scan was loaded on (else on the model's grid).
        dicom: also write each overlay as DICOM for a PACS (``<name>_<method>_dicom/`` in ``output_dir``: a
            Parametric Map and a colour overlay series in the scan's Study, the scan itself when it is not DICOM;
            :func:`monai_cluscam.io.save_dicom_overlay`); needs ``output_dir`` and highdicom.
        deidentify: with ``dicom``: de-identified DICOM (a copy of the scan in a new Study, no names, no dates).
        send: with ``dicom``: store each sample's DICOM at this PACS's DICOMweb root (STOW-RS, e.g.
            ``http://localhost:8042/dicom-web``) as it is written; ``dicom_sent.json`` in the folder records what
            went (:func:`monai_cluscam.io.send_dicom`); a refusal makes that sample a ``"send"`` failure.
        send_aet: with ``dicom``: the same by C-STORE to ``AET@HOST:PORT``.
        foreground: restrict each map to the subject: True, or the grey value above which a voxel of the image is
            subject (see :meth:`monai_cluscam.cam.BaseCAM.__call__`). Off by default; keep it off to audit what a
            model uses outside the brain.
        method_args: the method's parameters (``num_clusters``, ``drop_ratio``, ``temperature``,
            ``cluster_resolution``, ``batch_size``, ``seed``, ...), checked against the method.

    Example:
        >>> from monai.engines import SupervisedEvaluator
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> data = [{"image": torch.rand(2, 1, 32, 32), "label": torch.tensor([0, 1])}]
        >>> handler = ClusCAMHandler(target_layers="layer4", num_clusters=4)
        >>> evaluator = SupervisedEvaluator(torch.device("cpu"), data, net, val_handlers=[handler])
        >>> evaluator.run()
        >>> [tuple(o["cam"].shape) for o in evaluator.state.output]
        [(1, 32, 32), (1, 32, 32)]
    """

    def __init__(
        self,
        method: str = "cluscam",
        target_layers: str | Sequence[str] = "layer4",
        network: nn.Module | None = None,
        network_key: str | int | None = None,
        class_idx: str | int = "pred",
        image_key: str = "image",
        label_key: str = "label",
        output_key: str = "cam",
        output_dir: str | os.PathLike | None = None,
        overwrite: bool = False,
        preview: bool = True,
        resample: bool = True,
        dicom: bool = False,
        deidentify: bool = False,
        send: str | None = None,
        send_aet: str | None = None,
        foreground: bool | float = False,
        **method_args: Any,
    ) -> None:
        resolve_method(method, method_args)
        check_flags(overwrite=overwrite, preview=preview, resample=resample, dicom=dicom, deidentify=deidentify)
        if dicom and output_dir is None:
            raise ValueError("dicom=True writes files: pass output_dir=<folder> with it.")
        if deidentify and not dicom:
            raise ValueError("deidentify applies to the DICOM output only; pass dicom=True with it.")
        if (send or send_aet) and not dicom:
            raise ValueError("send and send_aet store the DICOM output; pass dicom=True with them.")
        self.destinations = [PacsDestination.parse_url(send)] if send else []
        self.destinations += [PacsDestination.parse_aet(send_aet)] if send_aet else []
        foreground_threshold(foreground)  # a bad value raises here, before any sample
        if not (class_idx in _CLASS_SOURCES or (isinstance(class_idx, int) and class_idx >= 0)):
            raise ValueError(f"class_idx must be one of {_CLASS_SOURCES} or a class index >= 0; got {class_idx!r}.")
        if output_dir is not None:
            try:
                str(output_dir).format(epoch=0)
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(
                    f"output_dir {str(output_dir)!r} is not a valid folder template; the only placeholder allowed "
                    f"is {{epoch}} ({err!r})."
                ) from err
        self.method = method
        self.target_layers = target_layers
        self.network = network
        self.network_key = network_key
        self.class_idx = class_idx
        self.image_key = image_key
        self.label_key = label_key
        self.output_key = output_key
        self.output_dir = output_dir
        self.overwrite = overwrite
        self.preview = preview
        self.resample = resample
        self.dicom = dicom
        self.deidentify = deidentify
        self.send = send
        self.send_aet = send_aet
        self.foreground = foreground
        self.method_args = method_args
        self.failures: list[ExplanationFailure] = []
        self.explainer = None

    @property
    def _count_attr(self) -> str:
        return f"{self.output_key}_failures"

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``. The explainer is built here when ``network`` was given, else when the run
        starts (MONAI engines set their network after attaching their handlers); a configuration error
        raises then, before any sample is explained."""
        if self.network is not None:
            self._build(engine)
        setattr(engine.state, self._count_attr, 0)
        engine.add_event_handler(Events.STARTED, self._start)
        event = IterationEvents.MODEL_COMPLETED if isinstance(engine, Workflow) else Events.ITERATION_COMPLETED
        engine.add_event_handler(event, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._summary)

    def _build(self, engine: Engine) -> None:
        network = engine_network(engine, self.network, self.network_key)
        if self.explainer is None or self.explainer.nn_module is not network:
            self.explainer = make_explainer(network, self.method, self.target_layers, **self.method_args)

    def _start(self, engine: Engine) -> None:
        self._build(engine)
        setattr(engine.state, self._count_attr, 0)

    def _fail(self, engine: Engine, image: Any, index: int, stage: str, err: BaseException) -> None:
        failure = ExplanationFailure(
            file=sample_name(image),
            epoch=int(engine.state.epoch),
            iteration=int(engine.state.iteration),
            index=index,
            stage=stage,
            error=f"{type(err).__name__}: {err}",
        )
        self.failures.append(failure)
        setattr(engine.state, self._count_attr, getattr(engine.state, self._count_attr, 0) + 1)
        what = {"explain": "explain", "send": "send the DICOM of"}.get(stage, "write the overlay of")
        engine.logger.error(
            f"{type(self).__name__}: could not {what} {failure.file or 'an unnamed sample'} (epoch {failure.epoch}, "
            f"iteration {failure.iteration}, sample {index}): {failure.error}"
        )

    def _classes(self, engine: Engine, n: int) -> list[int | None]:
        if self.class_idx == "pred":
            return [None] * n
        if isinstance(self.class_idx, int):
            return [self.class_idx] * n
        labels = per_sample(engine, self.label_key)
        if labels is None or len(labels) != n:
            raise ValueError(
                f"class_idx='label' but the engine holds no per-sample {self.label_key!r}; set label_key, or use "
                "class_idx='pred'."
            )
        return labels

    def __call__(self, engine: Engine) -> None:
        """Explain the current batch, store the maps under ``output_key`` and write overlays."""
        images = per_sample(engine, self.image_key)
        if images is None:
            raise ValueError(
                f"{type(self).__name__}: no {self.image_key!r} in the engine output or batch; set image_key."
            )
        maps = self._explain(engine, images)
        output = engine.state.output
        if isinstance(output, list):
            for sample_output, cam in zip(output, maps, strict=True):
                sample_output[self.output_key] = cam
        elif isinstance(output, dict):
            output[self.output_key] = list_data_collate(maps)
        else:
            raise ValueError(
                f"{type(self).__name__}: engine.state.output is a {type(output).__name__}; expected MONAI's dict "
                "or list of dicts."
            )
        if self.output_dir is not None:
            self._write(engine, images, maps)
        ok = sum(1 for cam in maps if not bool(torch.isnan(cam).all()))
        engine.logger.info(
            f"{type(self).__name__}: epoch {engine.state.epoch} iteration {engine.state.iteration}: explained {ok} "
            f"of {len(maps)} samples."
        )

    def _explain(self, engine: Engine, images: list) -> list[MetaTensor]:
        n = len(images)
        device = model_device(self.explainer.nn_module)
        classes = self._classes(engine, n)
        try:
            indices = None if all(c is None for c in classes) else [class_index_of(c) for c in classes]
            batch = torch.stack([_plain(img) for img in images]).to(device)
            cams = self.explainer(batch, indices, foreground=self.foreground)
            return [wrap_like(cams[i], images[i]) for i in range(n)]
        except Exception as err:
            engine.logger.debug(
                f"{type(self).__name__}: the batch failed ({type(err).__name__}: {err}); explaining its samples one "
                "at a time."
            )
        out = []
        for i, img in enumerate(images):
            try:
                target = None if classes[i] is None else class_index_of(classes[i])
                cam = self.explainer(_plain(img)[None].to(device), target, foreground=self.foreground)[0]
            except Exception as err:
                self._fail(engine, img, i, "explain", err)
                cam = _nan_like(img)
            out.append(wrap_like(cam, img))
        return out

    def _write(self, engine: Engine, images: list, maps: list[MetaTensor]) -> None:
        folder = str(self.output_dir).format(epoch=engine.state.epoch)
        for i, (img, cam) in enumerate(zip(images, maps, strict=True)):
            if bool(torch.isnan(cam).all()):
                continue
            name = None if sample_name(img) else f"iteration{engine.state.iteration:06d}_{i}"
            try:
                (written,) = save_overlay(
                    cam,
                    folder,
                    image=img if isinstance(img, MetaTensor) else None,
                    name=name,
                    resample=self.resample,
                    preview=self.preview,
                    overwrite=self.overwrite,
                    formats=("nifti", "dicom") if self.dicom else ("nifti",),
                    method_info=method_info(self.method, self.explainer),
                    deidentify=self.deidentify,
                )
            except Exception as err:
                self._fail(engine, img, i, "write", err)
                continue
            files = list(written.dicom.paths) if written.dicom else []
            if files and written.dicom.parametric_map and not written.dicom.scan and sample_name(img):
                files = referenced_source_files(written.dicom.parametric_map, sample_name(img)) + files
            for destination in self.destinations if files else ():
                try:
                    send_dicom(files, destination, record=Path(folder) / SENT_RECORD)
                except PacsError as err:
                    self._fail(engine, img, i, "send", err)

    def _summary(self, engine: Engine) -> None:
        failed = getattr(engine.state, self._count_attr, 0)
        where = f"; overlays in {str(self.output_dir).format(epoch=engine.state.epoch)}" if self.output_dir else ""
        engine.logger.info(
            f"{type(self).__name__}: epoch {engine.state.epoch} explained with {self.method} "
            f"({self.target_layers}); {failed} sample(s) failed{where}."
        )


def _plain(img: Any) -> torch.Tensor:
    if not isinstance(img, torch.Tensor):
        raise ValueError(f"the image must be a torch.Tensor (C, *spatial); got {type(img).__name__}.")
    return plain_tensor(img)


def _nan_like(img: Any) -> torch.Tensor:
    if isinstance(img, torch.Tensor) and img.ndim >= 2:
        return torch.full((1, *img.shape[1:]), float("nan"), dtype=torch.float32, device=img.device)
    return torch.full((1,), float("nan"))
