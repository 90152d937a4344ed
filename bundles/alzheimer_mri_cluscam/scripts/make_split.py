"""Write ``configs/split.json``: the validation part of the dataset's training split, stratified per class.

Run once from the repository root (the committed split was made with the defaults)::

    python bundles/alzheimer_mri_cluscam/scripts/make_split.py ../shared/data/alzheimer_mri/train

Per class, 10 % of the training slices (at least 2) are held out for validation (model selection, the
calibration temperature, the number of clusters), drawn with a seeded generator; the rest are for training.
The test slices are a separate folder (``slices/`` with ``labels.csv``) and never enter the split. Only paths
relative to the training folder are stored, never images.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from monai_cluscam.data import CLASS_NAMES, alzheimer_items


def make_split(train_dir: str, fraction: float = 0.10, seed: int = 20261203) -> dict[str, list[str]]:
    """Validation paths (relative to ``train_dir``, sorted), ``fraction`` of each class and at least 2."""
    rng = random.Random(seed)
    root = Path(train_dir).resolve()
    by_class: dict[int, list[str]] = {label: [] for label in range(len(CLASS_NAMES))}
    for item in alzheimer_items(root):
        by_class[item["label"]].append(Path(item["image"]).resolve().relative_to(root).as_posix())
    held: list[str] = []
    for names in by_class.values():
        names = sorted(names)
        rng.shuffle(names)
        held += names[: max(2, round(fraction * len(names)))]
    return {"validation": sorted(held)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dir")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parents[1] / "configs" / "split.json"))
    args = parser.parse_args()
    split = make_split(args.train_dir)
    Path(args.output).write_text(json.dumps(split, indent=4) + "\n", encoding="utf-8")
    print({part: len(names) for part, names in split.items()})


if __name__ == "__main__":
    main()
