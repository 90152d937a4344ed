"""``ClassificationReport``: after an evaluation, write accuracy, balanced accuracy, per-class recall and the
confusion matrix to ``<output_dir>/metrics.json`` and log them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events

__all__ = ["ClassificationReport", "summarize_confusion"]


def summarize_confusion(confusion: torch.Tensor, class_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy (mean recall over the classes present) and per-class recall of a
    confusion matrix whose rows are true classes and columns predictions.

    Example:
        >>> report = summarize_confusion(torch.tensor([[3, 1], [0, 4]]), ["a", "b"])
        >>> report["accuracy"], report["balanced_accuracy"], report["recall"]
        (0.875, 0.875, {'a': 0.75, 'b': 1.0})
    """
    confusion = torch.as_tensor(confusion, dtype=torch.float64)
    support = confusion.sum(1)
    present = support > 0
    recall = torch.where(present, confusion.diag() / support.clamp(min=1), torch.nan)
    return {
        "n": int(support.sum()),
        "accuracy": float(confusion.diag().sum() / confusion.sum()),
        "balanced_accuracy": float(recall[present].mean()),
        "recall": {name: (None if torch.isnan(r) else float(r)) for name, r in zip(class_names, recall, strict=True)},
        "support": {name: int(s) for name, s in zip(class_names, support, strict=True)},
        "classes": list(class_names),
        "confusion_matrix": confusion.long().tolist(),
    }


class ClassificationReport:
    """Write the report of an evaluator's confusion-matrix metric when each evaluation completes.

    Args:
        output_dir: folder for ``metrics.json`` (created if needed).
        class_names: class names in label order.
        metric_name: name under which an ``ignite.metrics.ConfusionMatrix`` is attached to the evaluator.
    """

    def __init__(
        self, output_dir: str | os.PathLike, class_names: Sequence[str], metric_name: str = "confusion_matrix"
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.metric_name = metric_name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.metric_name not in engine.state.metrics:
            raise KeyError(
                f"the evaluator has no metric {self.metric_name!r}; attach an ignite.metrics.ConfusionMatrix "
                f"under that name (found {sorted(engine.state.metrics)})."
            )
        report = summarize_confusion(engine.state.metrics[self.metric_name], self.class_names)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        rows = "\n".join(
            f"  {name:>20s} {row}" for name, row in zip(self.class_names, report["confusion_matrix"], strict=True)
        )
        print(
            f"accuracy {report['accuracy']:.4f}, balanced accuracy {report['balanced_accuracy']:.4f} "
            f"on {report['n']} slices\nrecall per class: {report['recall']}\n"
            f"confusion matrix (rows: true class, columns: predicted):\n{rows}\n"
            f"written to {self.output_dir / 'metrics.json'}"
        )
