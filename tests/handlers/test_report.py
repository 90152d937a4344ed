"""The classification report the bundles' evaluate configs attach."""

from __future__ import annotations

import json

import torch
from ignite.engine import Engine
from ignite.metrics import ConfusionMatrix

from monai_cluscam.handlers import ClassificationReport, summarize_confusion


def test_summary_of_a_confusion_matrix():
    report = summarize_confusion(torch.tensor([[3, 1, 0], [0, 0, 0], [1, 0, 4]]), ["a", "b", "c"])
    assert report["accuracy"] == 7 / 9
    assert report["recall"] == {"a": 0.75, "b": None, "c": 0.8}  # a class that never occurs has no recall
    assert report["balanced_accuracy"] == (0.75 + 0.8) / 2


def test_report_written_after_an_evaluation(tmp_path):
    preds = torch.tensor([[9.0, 0, 0], [0, 9.0, 0], [0, 9.0, 0], [0, 0, 9.0]])
    labels = torch.tensor([0, 1, 2, 2])
    engine = Engine(lambda e, batch: batch)
    ConfusionMatrix(num_classes=3).attach(engine, "confusion_matrix")
    ClassificationReport(tmp_path / "out", ["a", "b", "c"]).attach(engine)
    engine.run([(preds, labels)])
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["accuracy"] == 0.75 and report["recall"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
