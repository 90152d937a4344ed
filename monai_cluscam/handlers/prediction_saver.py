"""Write an evaluator's predictions to one CSV file: file, predicted class name, one probability per class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_cluscam.handlers._common import Engine, Events, check_flags, per_sample, sample_name
from monai_cluscam.io.files import check_writable_dir, mark_output_dir
from monai_cluscam.io.predictions import write_predictions

__all__ = ["PredictionSaver"]


class PredictionSaver:
    """Collect each sample's prediction during a run and write ``predictions.csv`` when it completes.

    Columns: ``file`` (the image's ``filename_or_obj``, empty when unknown), ``prediction`` (the name of
    the most probable class), then one probability column per class, named by ``class_names``. Rows keep
    the order of the data. The file is written atomically on ``Events.COMPLETED``, so a reader never sees
    half of it, and an existing file is refused at ``Events.STARTED`` unless ``overwrite=True``, before any
    work is done. Works with MONAI's ``decollate=True`` (list of per-sample dicts) and ``decollate=False``.
    Runs in one process (no gathering across distributed ranks).

    Args:
        output_dir: folder of the CSV file (created if needed).
        filename: name of the CSV file.
        class_names: the class names, in the network's output order; when None, ``class_0``, ``class_1``, ...
        image_key: key of the image whose metadata names the file.
        pred_key: key of the prediction: ``(num_classes,)`` scores per sample.
        softmax: turn the scores into probabilities with a softmax; set False when ``postprocessing`` already
            applies ``Activations(softmax=True)``.
        overwrite: replace an existing CSV file.

    Example:
        >>> import tempfile
        >>> from monai.engines import SupervisedEvaluator
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> saver = PredictionSaver(tempfile.mkdtemp(), class_names=["healthy", "atrophy"])
        >>> data = [{"image": torch.rand(2, 1, 32, 32), "label": torch.tensor([0, 1])}]
        >>> SupervisedEvaluator(torch.device("cpu"), data, net, val_handlers=[saver]).run()
        >>> saver.path.read_text().splitlines()[0]
        'file,prediction,healthy,atrophy'
    """

    def __init__(
        self,
        output_dir: str | os.PathLike = ".",
        filename: str = "predictions.csv",
        class_names: Sequence[str] | None = None,
        image_key: str = "image",
        pred_key: str = "pred",
        softmax: bool = True,
        overwrite: bool = False,
    ) -> None:
        check_flags(softmax=softmax, overwrite=overwrite)
        if not filename or Path(filename).name != filename:
            raise ValueError(f"filename must be a plain file name without folders; got {filename!r}.")
        if class_names is not None:
            names = [str(n) for n in class_names]
            clash = {"file", "prediction"} & set(names)
            if not names or len(set(names)) != len(names) or clash:
                raise ValueError(
                    f"class_names must be distinct, non-empty and not 'file' or 'prediction'; got {names}."
                )
        self.output_dir = output_dir
        self.filename = filename
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.image_key = image_key
        self.pred_key = pred_key
        self.softmax = softmax
        self.overwrite = overwrite
        self.rows: list[tuple[str, torch.Tensor]] = []

    @property
    def path(self) -> Path:
        """Where the CSV file is written."""
        return Path(self.output_dir).expanduser() / self.filename

    def attach(self, engine: Engine) -> None:
        """Collect on every ``ITERATION_COMPLETED``, write on ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _start(self, engine: Engine) -> None:
        check_writable_dir(self.output_dir)
        if self.path.exists() and not self.overwrite:
            raise FileExistsError(
                f"{self.path} already exists; pass overwrite=True or choose another output_dir (nothing was written)."
            )
        self.rows = []

    def __call__(self, engine: Engine) -> None:
        """Record the predictions of the current iteration."""
        preds = per_sample(engine, self.pred_key)
        if preds is None:
            raise ValueError(f"{type(self).__name__}: no {self.pred_key!r} in the engine output; set pred_key.")
        images = per_sample(engine, self.image_key) or [None] * len(preds)
        for image, pred in zip(images, preds, strict=True):
            scores = torch.as_tensor(pred).detach().float().flatten().cpu()
            self.rows.append((sample_name(image) or "", scores.softmax(0) if self.softmax else scores))

    def _names(self, num_classes: int) -> list[str]:
        if self.class_names is None:
            return [f"class_{i}" for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(
                f"the predictions hold {num_classes} values per sample but class_names has "
                f"{len(self.class_names)} ({self.class_names}); give one name per network output, and keep the "
                "prediction as per-class scores (no argmax in postprocessing)."
            )
        return self.class_names

    def _write(self, engine: Engine) -> None:
        sizes = {len(scores) for _, scores in self.rows}
        if len(sizes) > 1:
            raise ValueError(f"predictions of different lengths {sorted(sizes)}; cannot write one table.")
        names = self._names(sizes.pop() if sizes else len(self.class_names or []))
        write_predictions(self.path, self.rows, names, overwrite=self.overwrite)
        mark_output_dir(self.path.parent)
        engine.logger.info(f"{type(self).__name__}: wrote {len(self.rows)} predictions to {self.path}.")
