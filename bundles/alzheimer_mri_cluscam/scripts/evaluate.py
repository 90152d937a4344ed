"""The bundle's test report: accuracy, balanced accuracy, recall per class, the confusion matrix, calibration,
and accuracy on the test slices that no training slice resembles.

The dataset names no subjects and its split is per slice, so most test slices have a neighbouring slice of the
same scan among the training slices. For every evaluated slice the report finds the training slice with the
highest pixel correlation (Pearson, on the preprocessed images average-pooled to 32 x 32, which the JPEG noise
of the training files does not blur; ``novel_full_resolution`` repeats it at 128 x 128) and scores the slices
below ``novelty_threshold`` (0.99) separately: those measure recognising scans the model has barely seen. It
also gives the label of that nearest training slice as a baseline (a 1-nearest-neighbour lookup).

Run through ``configs/evaluate.json`` (merged over ``train.json``); the result is ``<output_dir>/metrics.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from monai.utils import convert_to_tensor
from monai_cluscam.handlers import summarize_confusion
from monai_cluscam.io.files import atomic_write, check_writable_dir, mark_output_dir
from monai_cluscam.metrics import expected_calibration_error
from torch import nn

__all__ = ["NOVELTY_GRID", "evaluate", "nearest_correlation"]

#: Side of the average-pooled grid on which slices are compared to find a test slice's nearest training slice.
NOVELTY_GRID = 32


def _images(items: Sequence[dict], transform) -> torch.Tensor:
    """The preprocessed images of ``items`` as one plain ``(N, C, *spatial)`` tensor."""
    return torch.stack([convert_to_tensor(transform(dict(item))["image"], track_meta=False).float() for item in items])


def nearest_correlation(
    images: torch.Tensor, references: torch.Tensor, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image ``(N, ...)`` the highest Pearson correlation with any of ``references`` ``(M, ...)`` and
    that reference's index.

    Example:
        >>> refs = torch.stack([torch.arange(16.0), torch.arange(16.0).flip(0)])
        >>> corr, index = nearest_correlation(2 * refs[1:] + 3, refs)
        >>> round(float(corr[0]), 4), int(index[0])
        (1.0, 1)
    """

    def unit(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).double()
        x = x - x.mean(1, keepdim=True)
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)

    refs = unit(references)
    best, index = [], []
    for start in range(0, images.shape[0], chunk):
        corr = unit(images[start : start + chunk]) @ refs.T
        value, where = corr.max(1)
        best.append(value)
        index.append(where)
    return torch.cat(best).float(), torch.cat(index)


def _scores(probabilities: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict:
    k = len(class_names)
    confusion = torch.bincount(labels * k + probabilities.argmax(1), minlength=k * k).reshape(k, k)
    return summarize_confusion(confusion, class_names)


def evaluate(
    network: nn.Module,
    ckpt_path: str | os.PathLike,
    items: Sequence[dict],
    train_items: Sequence[dict],
    transform,
    output_dir: str | os.PathLike,
    class_names: Sequence[str],
    device: torch.device | str = "cpu",
    novelty_threshold: float = 0.99,
) -> dict:
    """Score the network of ``ckpt_path`` on ``items``; write and return the report (see the module docstring)."""
    network.load_state_dict(torch.load(ckpt_path, map_location=device, weights_only=True))
    network.eval()
    images = _images(items, transform)
    labels = torch.tensor([int(item["label"]) for item in items])
    with torch.no_grad():
        logits = torch.cat([network(images[i : i + 128].to(device)).float().cpu() for i in range(0, len(images), 128)])
    probabilities = logits.softmax(1)
    report = _scores(probabilities, labels, class_names)
    report["ece"] = expected_calibration_error(probabilities, labels)
    report["nll"] = float(nn.functional.cross_entropy(logits, labels))
    report["mean_confidence"] = float(probabilities.max(1).values.mean())

    train_images = _images(train_items, transform)
    train_labels = torch.tensor([int(item["label"]) for item in train_items])
    report["novelty_threshold"] = novelty_threshold
    for key, size in (("novel", NOVELTY_GRID), ("novel_full_resolution", None)):
        pool = (lambda x: x) if size is None else (lambda x, s=size: nn.functional.adaptive_avg_pool2d(x, s))
        correlation, nearest = nearest_correlation(pool(images), pool(train_images))
        novel = correlation < novelty_threshold
        part = _scores(probabilities[novel], labels[novel], class_names) if novel.any() else {"n": 0}
        part["nearest_neighbour_accuracy"] = (
            float((train_labels[nearest][novel] == labels[novel]).double().mean()) if novel.any() else None
        )
        part["nearest_correlation_quantiles"] = {
            str(q): float(correlation.quantile(q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)
        }
        report[key] = part
    payload = (json.dumps(report, indent=4) + "\n").encode()
    out = check_writable_dir(output_dir)
    atomic_write(out / "metrics.json", lambda stream: stream.write(payload), overwrite=True)
    mark_output_dir(out)
    print(
        f"accuracy {report['accuracy']:.4f}, balanced accuracy {report['balanced_accuracy']:.4f} on {report['n']} "
        f"slices; ECE {report['ece']:.4f}; on the {report['novel']['n']} slices whose nearest training slice "
        f"correlates below {novelty_threshold}: accuracy {report['novel'].get('accuracy', float('nan')):.4f}; "
        f"recall {report['recall']}; confusion (rows true, columns predicted) {report['confusion_matrix']}",
        flush=True,
    )
    return report
