"""Write ``configs/split.json``: a fixed, stratified train/validation/test split of the Alzheimer MRI slices.

Run once from the repository root (the committed split was made with the defaults)::

    python bundles/alzheimer_mri_cluscam/scripts/make_split.py ../shared/data/alzheimer_mri

Per class, 15 % of the slices (at least 2) go to validation and 15 % (at least 2) to test, drawn with a
seeded generator; the rest are for training. Only file names are stored, never images.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from monai_cluscam.io import CLASS_NAMES, alzheimer_items


def make_split(dataset_dir: str, fraction: float = 0.15, seed: int = 20240607) -> dict[str, list[str]]:
    """Split file names per class into train/validation/test; the result is sorted within each part."""
    rng = random.Random(seed)
    split: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    names_by_class: dict[int, list[str]] = {label: [] for label in range(len(CLASS_NAMES))}
    for item in alzheimer_items(dataset_dir):
        names_by_class[item["label"]].append(Path(item["image"]).name)
    for names in names_by_class.values():
        names = sorted(names)
        rng.shuffle(names)
        n_held = max(2, round(fraction * len(names)))
        split["test"] += names[:n_held]
        split["validation"] += names[n_held : 2 * n_held]
        split["train"] += names[2 * n_held :]
    return {part: sorted(names) for part, names in split.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parents[1] / "configs" / "split.json"))
    args = parser.parse_args()
    split = make_split(args.dataset_dir)
    Path(args.output).write_text(json.dumps(split, indent=1) + "\n", encoding="utf-8")
    print({part: len(names) for part, names in split.items()})


if __name__ == "__main__":
    main()
