"""``ClassificationReport``: at the end of an evaluation, write accuracy, balanced accuracy, recall per class
and the confusion matrix to ``<output_dir>/metrics.json`` and print them (the bundles' ``evaluate.json``)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from monai_cluscam.io.files import atomic_write, check_writable_dir, mark_output_dir

__all__ = ["ClassificationReport", "summarize_confusion"]


def summarize_confusion(confusion: torch.Tensor, class_names: Sequence[str]) -> dict:
    """Scores of a confusion matrix (rows: true class, columns: prediction). The balanced accuracy is the
    mean recall over the classes that occur.

    Example:
        >>> r = summarize_confusion(torch.tensor([[2, 0], [1, 1]]), ["a", "b"])
        >>> r["accuracy"], r["balanced_accuracy"], r["recall"]
        (0.75, 0.75, {'a': 1.0, 'b': 0.5})
    """
    matrix = torch.as_tensor(confusion, dtype=torch.float64)
    support = matrix.sum(1)
    occurs = support > 0
    recall = matrix.diag() / support.clamp(min=1)
    return {
        "n": int(support.sum()),
        "accuracy": float(matrix.diag().sum() / matrix.sum().clamp(min=1)),
        "balanced_accuracy": float(recall[occurs].mean()) if bool(occurs.any()) else float("nan"),
        "recall": {n: (float(r) if o else None) for n, r, o in zip(class_names, recall, occurs, strict=True)},
        "support": {n: int(s) for n, s in zip(class_names, support, strict=True)},
        "classes": list(class_names),
        "confusion_matrix": matrix.long().tolist(),
    }


class ClassificationReport:
    """Event handler for an evaluator holding an ``ignite.metrics.ConfusionMatrix`` named ``metric_name``.

    Args:
        output_dir: folder of ``metrics.json`` (created if needed; the file is replaced atomically).
        class_names: one name per class, in label order.
        metric_name: the evaluator's confusion-matrix metric.
    """

    def __init__(
        self, output_dir: str | os.PathLike, class_names: Sequence[str], metric_name: str = "confusion_matrix"
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = [str(n) for n in class_names]
        self.metric_name = metric_name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.metric_name not in engine.state.metrics:
            raise KeyError(f"no metric {self.metric_name!r} on the evaluator (has {sorted(engine.state.metrics)}).")
        report = summarize_confusion(engine.state.metrics[self.metric_name], self.class_names)
        payload = (json.dumps(report, indent=2) + "\n").encode()
        out = check_writable_dir(self.output_dir)
        atomic_write(out / "metrics.json", lambda stream: stream.write(payload), overwrite=True)
        mark_output_dir(out)
        print(
            f"accuracy {report['accuracy']:.4f}, balanced accuracy {report['balanced_accuracy']:.4f} "
            f"on {report['n']} samples; recall {report['recall']}; "
            f"confusion (rows true, columns predicted) {report['confusion_matrix']}",
            flush=True,
        )
