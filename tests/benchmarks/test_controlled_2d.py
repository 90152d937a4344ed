"""The controlled-truth 2D benchmark's smoke run (``--quick``) on the real slices: planting, training, every
method, the ClusCAM sweep, the miss analysis and the report. Skipped when the slices are absent."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "alzheimer_mri"

pytestmark = pytest.mark.skipif(not (DATA / "train").is_dir() or not (DATA / "labels.csv").is_file(),
                                reason=f"the Alzheimer MRI slices are not at {DATA}")


@pytest.fixture(scope="module")
def controlled_2d():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import controlled_2d

        yield controlled_2d
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_planted_lesion_lies_inside_the_brain(controlled_2d):
    import numpy as np
    import torch

    from monai_cluscam.data import foreground_mask

    data = controlled_2d.slice_set("test", 4)
    assert data["label"].tolist() == [0, 1] * 4
    for i in range(0, 8, 2):
        clean, lesioned, mask = data["image"][i], data["image"][i + 1], data["mask"][i + 1]
        changed = (lesioned - clean).abs() > 0
        assert torch.equal(changed, mask) and torch.equal(data["mask"][i], mask)  # where the image changed
        assert bool(foreground_mask(clean)[mask].all())  # inside the brain
        draw = data["draws"][i // 2]
        lo, hi = controlled_2d.RADIUS_PX
        assert lo <= draw["radius"] <= hi
        area = int(mask.sum())
        assert np.pi * (draw["radius"] - 0.5) ** 2 < area < np.pi * (draw["radius"] + 1) ** 2
        assert float(lesioned[mask].max()) == pytest.approx(draw["level"], rel=1e-5)  # the disc's level


def test_controlled_2d_quick(controlled_2d, tmp_path):
    out = controlled_2d.main(["--quick", "--output", str(tmp_path)])
    first = (out / "controlled_2d_model.pt").stat().st_mtime_ns
    controlled_2d.main(["--quick", "--output", str(tmp_path), "--train-only"])  # reuses the weights
    assert (out / "controlled_2d_model.pt").stat().st_mtime_ns == first
    res = json.loads((out / "controlled_2d.json").read_text())["results"]
    assert res["explained_images"] == 3 and 0 <= res["accuracy"]["test"] <= 1
    assert set(res["test_by_layer"]) == set(controlled_2d.ROWS)
    for method, rows in res["test_by_layer"].items():
        s = rows["layer3"]
        assert 0 <= s["pointing_game"] <= s["pointing_game_dilated_2px"] <= 1
        assert math.isnan(s["energy_pointing_game"]) or 0 <= s["energy_pointing_game"] <= 1
        passes = s["forward_passes_per_image"]  # the layer's 64 channels, K = 10 clusters, one pass for gradients
        assert passes == {"cluscam": 11, "scorecam": 65, "gradcam": 1, "gradcampp": 1}[method.split("-")[0]]
    assert 0 < res["uniform"]["energy_pointing_game"] < 0.01
    assert res["recombination_check_max_abs"] <= 1e-4
    sweep = res["cluscam_sweep"]
    assert {(r["variant"], r["k"], r["temperature"]) for r in sweep.values()} == {
        (v, k, t) for v in controlled_2d.VARIANTS for k in (2, 5) for t in (0.5, 1.0)}
    assert all(r["forward_passes_per_image"] == r["k"] + 1 for r in sweep.values())
    summary = res["misses"]["published"]["layer3"]["summary"]
    assert summary["hits"]["count"] + summary["misses"]["count"] == 3
    table = (out / "controlled_2d.md").read_text()
    assert "| Score-CAM | layer3* |" in table and "tau 1.0" in table and "| on lesion |" in table
    assert (out / "controlled_2d.png").stat().st_size > 1000
    assert (out / "controlled_2d_montage.png").stat().st_size > 1000
