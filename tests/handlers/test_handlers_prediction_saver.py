"""PredictionSaver: predictions.csv content, both output forms, atomic and never overwriting by accident."""

from __future__ import annotations

import csv

import pytest
import torch
from handler_helpers import items, tiny_net
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd

from monai_cluscam.handlers import PredictionSaver

CPU = torch.device("cpu")
NAMES = ["Mild", "Moderate", "Non"]


def _run(saver: PredictionSaver, n: int = 5, **evaluator_kwargs) -> None:
    loader = DataLoader(Dataset(items(n)), batch_size=2)
    SupervisedEvaluator(CPU, loader, tiny_net(), val_handlers=[saver], **evaluator_kwargs).run()


def _rows(path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.parametrize("decollate", [True, False])
def test_csv_holds_file_prediction_and_probabilities(tmp_path, decollate):
    saver = PredictionSaver(tmp_path, class_names=NAMES)
    _run(saver, decollate=decollate)
    rows = _rows(tmp_path / "predictions.csv")
    assert list(rows[0]) == ["file", "prediction", *NAMES]
    x = torch.stack([d["image"].as_tensor() for d in items(5)])
    with torch.no_grad():
        probs = tiny_net()(x).softmax(1)
    assert [r["file"] for r in rows] == [f"/data/scan_{i:02d}.nii.gz" for i in range(5)]
    for row, p in zip(rows, probs, strict=True):
        got = torch.tensor([float(row[name]) for name in NAMES])
        assert torch.allclose(got, p, atol=1e-6)
        assert row["prediction"] == NAMES[int(p.argmax())]
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_probabilities_from_postprocessing_and_default_names(tmp_path):
    saver = PredictionSaver(tmp_path, filename="out.csv", softmax=False)
    _run(saver, n=3, postprocessing=Activationsd("pred", softmax=True))
    rows = _rows(tmp_path / "out.csv")
    assert list(rows[0]) == ["file", "prediction", "class_0", "class_1", "class_2"]
    for row in rows:
        assert sum(float(row[f"class_{i}"]) for i in range(3)) == pytest.approx(1.0, abs=1e-5)


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("keep me\n")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        _run(PredictionSaver(tmp_path, class_names=NAMES))
    assert target.read_text() == "keep me\n"
    _run(PredictionSaver(tmp_path, class_names=NAMES, overwrite=True))
    assert len(_rows(target)) == 5


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="has 2 \\(\\['a', 'b'\\]\\)"):
        _run(PredictionSaver(tmp_path, class_names=["a", "b"]))
    assert not (tmp_path / "predictions.csv").exists()
    with pytest.raises(ValueError, match="distinct"):
        PredictionSaver(tmp_path, class_names=["a", "a"])
    with pytest.raises(ValueError, match="not 'file' or 'prediction'"):
        PredictionSaver(tmp_path, class_names=["file", "b"])
    with pytest.raises(ValueError, match="plain file name"):
        PredictionSaver(tmp_path, filename="../predictions.csv")
    with pytest.raises(ValueError, match="overwrite must be True or False; got 'false'"):
        PredictionSaver(tmp_path, overwrite="false")  # as `monai.bundle run --overwrite false` passes it
    with pytest.raises(ValueError, match="no 'logits' in the engine output"):
        _run(PredictionSaver(tmp_path / "x", pred_key="logits"))
