"""``predictions.csv``: one row per input, the predicted class and one probability column per class."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_cluscam.io.files import atomic_write

__all__ = ["write_predictions"]


def write_predictions(
    path: str | os.PathLike,
    rows: Sequence[tuple[str, torch.Tensor]],
    class_names: Sequence[str],
    overwrite: bool = False,
) -> Path:
    """Write ``rows`` of ``(file, probabilities)`` as a CSV table, atomically.

    Columns: ``file``, ``prediction`` (the name of the most probable class), then one column per class.

    Args:
        path: the CSV file.
        rows: file name and ``(num_classes,)`` probabilities for each input, in order.
        class_names: one name per probability.
        overwrite: replace an existing file.

    Raises:
        ValueError: a row whose probabilities do not match ``class_names``.
        FileExistsError: the file exists and ``overwrite`` is False.

    Example:
        >>> import tempfile, torch
        >>> rows = [("a.png", torch.tensor([0.2, 0.8]))]
        >>> p = write_predictions(tempfile.mkdtemp() + "/predictions.csv", rows, ["no", "yes"])
        >>> p.read_text().splitlines()
        ['file,prediction,no,yes', 'a.png,yes,0.200000,0.800000']
    """
    names = [str(n) for n in class_names]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "prediction", *names])
    for file, probs in rows:
        values = torch.as_tensor(probs).detach().float().flatten().cpu()
        if values.numel() != len(names):
            raise ValueError(
                f"{file}: {values.numel()} probabilities for {len(names)} class names ({names}); give one name per "
                "network output."
            )
        writer.writerow([file, names[int(values.argmax())], *(f"{float(p):.6f}" for p in values)])
    payload = text.getvalue().encode()
    return atomic_write(Path(path), lambda stream: stream.write(payload), overwrite=overwrite)
