"""The benchmark scripts' smoke runs (``--quick``) on generated slices, so that the scripts do not rot."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
CLASSES = ["Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented"]


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> tuple[Path, Path]:
    """The data layout the benchmarks read: held-out 128 x 128 brain-like PNG slices named by class at the root
    (one per class) and a training split with one folder per class under ``train/``, whose validation slices a
    split file lists."""
    root = tmp_path_factory.mktemp("alzheimer")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:128j, -1:1:128j]
    validation = []
    for i, name in enumerate(CLASSES):
        head = (xx / 0.7) ** 2 + (yy / 0.85) ** 2 < 1
        ventricles = (xx / (0.1 + 0.05 * i)) ** 2 + (yy / 0.3) ** 2 < 1
        for where in (root / f"{i:06d}_{name}.png", root / "train" / name / "v.png"):
            img = np.where(head & ~ventricles, 150, 10) + rng.normal(0, 8, head.shape)
            where.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(where)
        validation.append(f"{name}/v.png")
    split = root / "split.json"
    split.write_text(json.dumps({"validation": validation[2:3]}))
    return root, split


def assert_k_rule(selection: dict, candidates: list[int]) -> None:
    """The benchmark reports ``select_num_clusters``'s curve over ``candidates`` and its choice: the smallest
    candidate whose value is within 5% (the default tolerance) of the curve's rise of its top."""
    curve = selection["mean_score_diffs"]
    assert selection["candidates"] == candidates and len(curve) == len(candidates)
    top, bottom = max(curve), min(curve)
    within = [k for k, v in zip(candidates, curve, strict=True) if v >= top - 0.05 * (top - bottom)]
    assert selection["chosen"] == within[0]


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(BENCHMARKS))
    import ablation
    import faithfulness

    yield faithfulness, ablation
    sys.path.remove(str(BENCHMARKS))


def test_faithfulness_quick(scripts, slices, tmp_path):
    faithfulness, _ = scripts
    data, split = slices
    out = faithfulness.main(["--quick", "--data", str(data), "--split", str(split), "--output", str(tmp_path)])
    report = json.loads((out / "faithfulness.json").read_text())
    rows = report["faithfulness_2d"]["methods"]
    assert set(rows) == {*faithfulness.METHODS, faithfulness.AUTO, "random"}
    for row in rows.values():
        assert all(math.isfinite(row[key]) for key, _, _ in faithfulness.METRICS)
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
    assert_k_rule(report["faithfulness_2d"]["k_selection"], [2, 5])
    for table in report["faithfulness_2d"]["wins"].values():
        assert set(table) == set(faithfulness.BASELINES)
    assert set(report["localisation_3d"]["methods"]) == {*faithfulness.METHODS, "random"}
    table = (out / "faithfulness.md").read_text()
    assert all(f"| {faithfulness.LABELS[m]} |" in table for m in faithfulness.METHODS)
    for png in ("faithfulness_curves.png", "faithfulness_gallery.png", "faithfulness_phantoms.png"):
        assert (out / png).stat().st_size > 1000


def test_faithfulness_other_layer_some_methods_2d_only(scripts, slices, tmp_path):
    faithfulness, _ = scripts
    data, split = slices
    out = faithfulness.main(["--quick", "--data", str(data), "--split", str(split), "--output", str(tmp_path),
                             "--layer", "layer4", "--methods", "scorecam", "--no-3d"])
    report = json.loads((out / "faithfulness.json").read_text())
    assert "localisation_3d" not in report and not (out / "faithfulness_phantoms.png").exists()
    f2d = report["faithfulness_2d"]
    assert f2d["target_layer"] == "layer4" and set(f2d["methods"]) == {"cluscam", faithfulness.AUTO, "scorecam",
                                                                        "random"}
    assert set(f2d["wins"]["cluscam"]) == {"scorecam"}
    table = (out / "faithfulness.md").read_text()
    assert "from `layer4`" in table and "Localisation" not in table and "| Score-CAM |" in table
    with pytest.raises(SystemExit):
        faithfulness.main(["--quick", "--data", str(data), "--output", str(tmp_path), "--methods", "gradcam,nope"])
    out = faithfulness.main(["--quick", "--data", str(data), "--split", str(split), "--output", str(tmp_path / "3d"),
                             "--methods", "gradcam", "--layer-3d", "layer2"])
    l3d = json.loads((out / "faithfulness.json").read_text())["localisation_3d"]
    assert l3d["target_layer"] == "layer2" and set(l3d["methods"]) == {"cluscam", "gradcam", "random"}


def test_ablation_quick(scripts, slices, tmp_path):
    _, ablation = scripts
    data, split = slices
    out = ablation.main(["--quick", "--data", str(data), "--split", str(split), "--output", str(tmp_path)])
    res = json.loads((out / "ablation.json").read_text())["results"]
    expected = {"K=2", "K=10", "K=10 r=0.0", "K=10 tau=2.0", "K=10 soft", "K=10 layer4", "K=10 blur"}
    assert expected <= set(res["variants"])
    assert res["variants"]["K=10 blur"]["group"] == "baseline"
    assert res["recombination_check_max_abs"] <= 1e-5
    assert_k_rule(res["k_selection"], [2, 5])
    assert set(res["stage_seconds"]) == {"2d", "3d"}
    assert "| K=10 soft |" in (out / "ablation.md").read_text()


def test_faithfulness_exits_clearly_without_data(scripts, tmp_path):
    faithfulness, _ = scripts
    with pytest.raises(SystemExit, match="does not exist"):
        faithfulness.main(["--quick", "--data", str(tmp_path / "absent"), "--output", str(tmp_path)])


def test_speed_quick(tmp_path):
    """Every method and sweep of the scaling study at tiny sizes: times, ratios, memory, the skip rule."""
    sys.path.insert(0, str(BENCHMARKS))  # the measuring processes import the script too
    try:
        import speed

        out = speed.main(["--quick", "--output", str(tmp_path), "--max-call-seconds", "2"])
        for bad in (["--repeats", "0"], ["--sweeps", "size,nope"], ["--dims", "4"]):
            with pytest.raises(SystemExit):
                speed.main(["--quick", "--output", str(tmp_path / "bad"), *bad])
        assert not (tmp_path / "bad").exists()
        # a measuring process that raises, or dies, is reported, not waited for
        context = multiprocessing.get_context("forkserver")
        with pytest.raises(RuntimeError, match="ValueError: nope"):
            speed._in_child(context, speed.forward_passes, "nope", {}, 1)
        with pytest.raises(RuntimeError, match="died without an answer"):
            speed._in_child(context, os._exit, 3)
    finally:
        sys.path.remove(str(BENCHMARKS))
    report = json.loads((out / "speed.json").read_text())
    rows = report["rows"]
    sizes = {(r["dims"], r["method"]) for r in rows if "size" in r["sweeps"]}
    assert {(d, m) for d in (2, 3) for m in ("floor", "cluscam", "gradcam", "gradcam++", "decomcam", "scorecam",
                                             "occlusion", "rise")} <= sizes
    for r in rows:
        if "skipped" in r:  # only the expensive methods are ever skipped, and only over the limit
            assert r["method"] in speed.EXPENSIVE and r["estimate_s"] > 2
            continue
        assert r["median_s"] > 0 and r["peak_mb"] >= r["setup_mb"] > 0
        if r["method"] == "floor":
            assert r["x_floor"] == 1
    # RISE's 1001 passes cannot fit in 2 s on any case here: the skip rule is exercised
    assert any("skipped" in r for r in rows if r["method"] == "rise")
    assert {r["k"] for r in rows if "k" in r["sweeps"]} == set(speed.QUICK["ks"])
    assert {r["batch"] for r in rows if "batch" in r["sweeps"]} == {1, 2}
    assert set(report["summary"]) == {"2d", "3d"}
    table = (out / "speed.md").read_text()
    assert all(f"| {speed.LABELS[m]} |" in table for m in speed.SWEEP_METHODS["size"][1:-1])
    assert "| case | floor (K+1 passes) | ClusCAM |\n" in table  # the K table: only ClusCAM and its floor
    assert "*est." in table
    assert (out / "speed_scaling.png").stat().st_size > 10_000 and not (out / "speed.partial.json").exists()


def test_localisation_3d_quick(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import localisation_3d

        out = localisation_3d.main(["--quick", "--output", str(tmp_path)])
    finally:
        sys.path.remove(str(BENCHMARKS))
    res = json.loads((out / "localisation_3d.json").read_text())["results"]
    names = ["ClusCAM K=4 zero", "ClusCAM K=4 blur", "Score-CAM", "Grad-CAM", "Grad-CAM++"]
    expected = {f"{n}, layer2{w}" for n in names for w in ("", ", in brain")} | {"bundle setting"}
    assert set(res["methods"]) == expected
    uniform = res["uniform_region_energy_pointing_game"]
    for name, row in res["methods"].items():
        assert bool(row["foreground"]) == name.endswith("in brain") or name == "bundle setting"
        assert 0 <= row["energy_pointing_game"] <= 1 and 0 <= row["outside_brain"] <= row["outside_brain_max"] <= 1
        assert 0 <= row["region_energy_pointing_game"] <= 1 and 0 <= row["region_pointing_game"] <= 1
        assert row["region_ratio_to_uniform"] == pytest.approx(row["region_energy_pointing_game"] / uniform)
        assert 0 <= row["peak_in_brain"] <= 1
    own = res["bundle_setting"]
    assert res["methods"]["bundle setting"]["arguments"]["num_clusters"] == (own["num_clusters"] or 10)
    assert 0 < res["uniform_energy_pointing_game"] < 0.2 and 0.3 < res["uniform_outside_brain"] < 0.9
    assert res["uniform_energy_pointing_game"] < uniform < 0.2
    assert_k_rule(res["k_selection"], [2, 4])
    assert "| Score-CAM, layer2, in brain |" in (out / "localisation_3d.md").read_text()
    assert (out / "localisation_3d_montage.png").stat().st_size > 1000


def test_sanity_quick(slices, tmp_path):
    """The sanity-check benchmark: the cascade and the shuffled-label comparison for each method and both
    model-blind controls (which must fail), the tables and the figure."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import sanity

        data, split = slices
        out = sanity.main(["--quick", "--data", str(data), "--split", str(split), "--output", str(tmp_path),
                           "--methods", "cluscam,Grad-CAM,occlusion"])
        with pytest.raises(SystemExit):
            sanity.main(["--quick", "--data", str(data), "--output", str(tmp_path), "--methods", "gradcam,nope"])
    finally:
        sys.path.remove(str(BENCHMARKS))
    report = json.loads((out / "sanity.json").read_text())["results"]
    assert report["steps"] == ["fc", "layer4"]
    assert list(report["methods"]) == ["cluscam", "gradcam", "occlusion", "intensity", "edges"]
    assert report["methods"]["occlusion"]["images"] == 1 and report["methods"]["gradcam"]["images"] == 2
    for name in ("intensity", "edges"):
        for check in ("cascading", "shuffled_labels"):
            assert report["methods"][name][check]["final_spearman"] == pytest.approx(1.0)
            assert not report["methods"][name][check]["passed"]
    assert (tmp_path / "shuffled_labels.pt").exists() and report["shuffled_label_model"]["slices"] == 4
    table = (out / "sanity.md").read_text()
    assert "| Grad-CAM | " in table and "| edge detector (control) | 1.00 (1.00) | 1.00 (1.00) | no |" in table
    assert (out / "sanity_cascade.png").stat().st_size > 1000


def test_sanity_3d_quick(tmp_path):
    """The 3D sanity checks on the controlled-truth model (trained in the output folder by the smoke run)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import sanity

        out = sanity.main(["--quick", "--controlled-3d", "--output", str(tmp_path),
                           "--methods", "cluscam,gradcam,cluscam_blur"])
    finally:
        sys.path.remove(str(BENCHMARKS))
    report = json.loads((out / "sanity_3d.json").read_text())["results"]
    assert report["target_layer"] == "layer2" and report["steps"] == ["fc", "layer4"]
    assert list(report["methods"]) == ["cluscam", "gradcam", "cluscam_blur", "intensity", "edges"]
    assert report["methods"]["cluscam_blur"]["label"] == "ClusCAM, blurred baseline"
    for name in ("intensity", "edges"):  # blind to the model: identical maps, in 3D too
        for check in ("cascading", "shuffled_labels"):
            assert report["methods"][name][check]["final_spearman"] == pytest.approx(1.0)
    assert (tmp_path / "controlled_3d_model.pt").exists() and (tmp_path / "shuffled_labels_3d.pt").exists()
    assert report["shuffled_label_model"]["slices"] == 8
    assert "2 held-out test volumes" in (out / "sanity_3d.md").read_text()
    assert (out / "sanity_3d_cascade.png").stat().st_size > 1000


def test_sanity_bundle_3d_quick(tmp_path):
    """The 3D sanity checks on the 3D bundle's classifier: its layer, its K with the blurred baseline."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import sanity

        out = sanity.main(["--quick", "--bundle-3d", "--output", str(tmp_path), "--methods", "cluscam_blur"])
    finally:
        sys.path.remove(str(BENCHMARKS))
    report = json.loads((out / "sanity_bundle_3d.json").read_text())
    res, bundle = report["results"], json.loads((BENCHMARKS.parent / "bundles" / "phantom_volume_cluscam" / "configs"
                                                 / "inference.json").read_text())
    assert res["unit"] == "volumes" and res["target_layer"] == bundle["target_layers"]
    assert res["methods"]["cluscam_blur"]["label"] == f"ClusCAM, blurred baseline, K = {bundle['num_clusters']}"
    assert res["methods"]["edges"]["cascading"]["final_spearman"] == pytest.approx(1.0)
    assert (tmp_path / "shuffled_labels_bundle_3d.pt").exists() and res["images"] == 2
    assert "2 held-out test volumes" in (out / "sanity_bundle_3d.md").read_text()
