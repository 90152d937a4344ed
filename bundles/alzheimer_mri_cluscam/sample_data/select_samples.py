"""Re-create this folder's 16 demo slices from the dataset's test split, byte for byte.

    python bundles/alzheimer_mri_cluscam/sample_data/select_samples.py [--source ../shared/data/alzheimer_mri]

The rule: for each class, the 4 files of ``labels.csv`` (the 960-slice test split) whose SHA-256 of
``"cluscam-demo:" + file`` is smallest. It depends on the file names only, on no random generator, so
it gives the same 16 files on any machine. The files are copied unchanged and ``labels.csv`` is rewritten.
With ``--check`` nothing is written: the folder is compared with what the rule selects.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSES = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
PER_CLASS = 4


def select(labels_csv: Path) -> list[tuple[str, str]]:
    """``(file, label)`` of the chosen slices, ``file`` as ``labels_csv`` lists it, in class order."""
    with labels_csv.open(newline="") as stream:
        rows = [(row["file"], row["label"]) for row in csv.DictReader(stream)]
    chosen = []
    for label in CLASSES:
        files = sorted(
            (f for f, lab in rows if lab == label),
            key=lambda f: hashlib.sha256(f"cluscam-demo:{f}".encode()).hexdigest(),
        )
        chosen += [(f, label) for f in sorted(files[:PER_CLASS])]
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=HERE.parents[2].parent / "shared" / "data" / "alzheimer_mri",
        help="folder holding labels.csv and slices/ (the test split)",
    )
    parser.add_argument("--check", action="store_true", help="compare this folder with the rule's choice")
    args = parser.parse_args()
    chosen = select(args.source / "labels.csv")
    if args.check:
        with (HERE / "labels.csv").open(newline="") as stream:
            here = [(row["file"], row["label"]) for row in csv.DictReader(stream)]
        expected = [(Path(f).name, label) for f, label in chosen]
        same = here == expected and all(
            (HERE / Path(f).name).read_bytes() == (args.source / f).read_bytes() for f, _ in chosen
        )
        print("sample_data matches the rule" if same else "sample_data differs from the rule")
        return 0 if same else 1
    for old in HERE.glob("*.png"):
        old.unlink()
    with (HERE / "labels.csv").open("w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["file", "label"])
        for file, label in chosen:
            shutil.copyfile(args.source / file, HERE / Path(file).name)
            writer.writerow([Path(file).name, label])
    print(f"copied {len(chosen)} slices from {args.source} into {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
