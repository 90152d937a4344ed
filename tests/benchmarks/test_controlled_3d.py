"""The controlled-truth 3D benchmark's smoke run (``--quick``): training, every method and variant, the report."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_controlled_3d_quick(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import controlled_3d

        out = controlled_3d.main(["--quick", "--output", str(tmp_path)])
        first = (out / "controlled_3d_model.pt").stat().st_mtime_ns
        controlled_3d.main(["--quick", "--output", str(tmp_path), "--train-only"])  # reuses the weights
        assert (out / "controlled_3d_model.pt").stat().st_mtime_ns == first
        # another training seed: its own weights file, other weights
        controlled_3d.main(["--quick", "--output", str(tmp_path), "--train-only", "--seed", "3", "--model", "masking"])
        import torch

        seeded = torch.load(out / "controlled_3d_model_seed3.pt", weights_only=True)
        base = torch.load(out / "controlled_3d_model.pt", weights_only=True)
        assert seeded.keys() == base.keys() and not torch.equal(seeded["conv1.weight"], base["conv1.weight"])
    finally:
        sys.path.remove(str(BENCHMARKS))
    res = json.loads((out / "controlled_3d.json").read_text())["results"]
    assert set(res["accuracy"]) == set(controlled_3d.MODELS) and res["explained_volumes"] == 2
    assert set(res["test_by_layer"]) == set(controlled_3d.METHODS)
    assert set(res["best_layer_on_validation"].values()) == {"layer2"}
    for rows in res["test_by_layer"].values():
        s = rows["layer2"]
        assert 0 <= s["pointing_game"] <= 1 and (math.isnan(s["energy_pointing_game"])
                                                 or 0 <= s["energy_pointing_game"] <= 1)
    assert 0 < res["uniform"]["energy_pointing_game"] < 0.05
    assert res["recombination_check_max_abs"] <= 1e-4
    assert {(r["baseline"], r["temperature"]) for r in res["cluscam_sweep"].values()} == {
        (b, t) for b in controlled_3d.BASELINES for t in (0.5, 1.0)}
    table = (out / "controlled_3d.md").read_text()
    assert "| Score-CAM | layer2* |" in table and "| 2 | blur |" in table and "tau 1.0" in table
    assert (out / "controlled_3d_k_tau.png").stat().st_size > 1000
    from PIL import Image

    montage = Image.open(out / "controlled_3d_montage.png")  # the scan and five maps side by side
    assert montage.width > 4 * montage.height
