"""How much of the held-out accuracy a plain nearest-neighbour lookup reaches, and why.

The slices carry no subject identifier, so the split is per slice: a held-out slice may have a slice of
the same scan (often the adjacent one) in the training part. This script finds, for every slice of a
held-out part, the closest training slice (Euclidean distance between the 32 x 32 average-pooled,
centred and unit-normalised images), predicts its label, and reports the accuracy overall and by how close
that neighbour is. Near neighbours agree on the label almost always; far ones about as often as chance
would over two dominant classes. Run from the repository root::

    python bundles/alzheimer_mri_cluscam/scripts/nearest_neighbours.py ../shared/data/alzheimer_mri [--part validation]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from monai_cluscam.io import load_image

BUNDLE = Path(__file__).resolve().parents[1]


def _features(items: list[dict], size: int = 32) -> torch.Tensor:
    images = torch.stack([load_image(item["image"]).as_tensor().float()[:1] for item in items])
    pooled = F.adaptive_avg_pool2d(images, size).flatten(1)
    pooled = pooled - pooled.mean(1, keepdim=True)
    return pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-8)


def nearest_neighbour_report(dataset_dir: str, part: str = "validation", near: float = 0.25) -> dict:
    """1-NN accuracy of ``part`` against the training part, split at neighbour distance ``near``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_alzheimer_bundle_data", BUNDLE / "scripts" / "data.py")
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    split = BUNDLE / "configs" / "split.json"
    train = data.split_items(dataset_dir, split, "train")
    held = data.split_items(dataset_dir, split, part)
    distance, index = torch.cdist(_features(held), _features(train)).min(1)
    truth = torch.tensor([item["label"] for item in held])
    pred = torch.tensor([item["label"] for item in train])[index]
    recalls = [float((pred[truth == c] == c).float().mean()) for c in truth.unique()]
    report = {
        "part": part,
        "slices": len(held),
        "accuracy": float((pred == truth).float().mean()),
        "balanced_accuracy": sum(recalls) / len(recalls),
    }
    for name, sel in (("near", distance < near), ("far", distance >= near)):
        report[name] = {
            "slices": int(sel.sum()),
            "accuracy": float((pred[sel] == truth[sel]).float().mean()) if sel.any() else None,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir")
    parser.add_argument("--part", default="validation", choices=("validation", "test"))
    parser.add_argument("--near", type=float, default=0.25, help="distance below which a neighbour counts as near")
    args = parser.parse_args()
    print(json.dumps(nearest_neighbour_report(args.dataset_dir, args.part, args.near), indent=1))


if __name__ == "__main__":
    main()
