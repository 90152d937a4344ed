"""The shortcut audit benchmark's smoke run (``--quick``) on the real training slices: both trainings of the bundle's
recipe, the audits and the report. Skipped when the data set is absent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
DATA = REPO.parent / "shared" / "data" / "alzheimer_mri"


@pytest.fixture(scope="module")
def shortcut_audit():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import shortcut_audit

        yield shortcut_audit
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_marker_is_burnt_into_the_background_corner(shortcut_audit):
    import numpy as np

    picture = np.zeros((128, 128), np.uint8)
    marked = shortcut_audit.mark(picture)
    lo, hi = shortcut_audit.MARKER_AT, shortcut_audit.MARKER_AT + shortcut_audit.MARKER_SIZE
    assert (marked[lo:hi, lo:hi] == 255).all() and marked.sum() == 255 * shortcut_audit.MARKER_SIZE**2
    assert picture.sum() == 0, "the input is left as it is"


@pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"real Alzheimer MRI slices not found at {DATA}")
def test_shortcut_audit_quick(shortcut_audit, tmp_path):
    out = shortcut_audit.main(["--quick", "--output", str(tmp_path)])
    assert out == tmp_path
    report = json.loads((tmp_path / "shortcut_audit.json").read_text())
    res, cfg = report["results"], report["settings"]
    assert res["runs"] == ["clean", "shortcut"] and res["shortcut_class"] == "Mild_Demented"
    # the audit is the bundle's handler as train.json configures it
    assert res["audit_handler_config"]["_target_"] == "monai_cluscam.handlers.AttributionAuditHandler"
    assert res["audit_handler_config"]["class_idx"] == "label"
    for name in res["runs"]:
        run = res[name]
        assert run["train_slices"] == 4 * 4 and run["audit_slices"] == 2 * 4
        assert [row["epoch"] for row in run["epochs"]] == list(range(1, cfg["epochs"] + 1))
        for row in run["epochs"]:
            assert row["audited"] and 0 <= row["val_accuracy"] <= 1
            assert {"outside_mask", "peak_outside", "peak_outside_class_max", "alert"} <= set(row["audit"])
            assert row["audit_seconds"] > 0 and row["audit_cost"] == pytest.approx(
                row["audit_seconds"] / row["train_seconds"])
            assert len(row["audit_samples"]) == 8 and all("peak_voxel" in s for s in row["audit_samples"])
        reliance = run["marker_reliance"]
        assert set(reliance) == {"without_marker", "with_marker"}
    for key in ("as_shipped", "with_marker"):
        assert set(res["shipped"][key]["audit"]) >= {"outside_mask", "peak_outside", "alert"}
    # the audit set of the shortcut run holds the marked slices: their masks hold the marker, the subject does not
    marked = [s for s in res["shortcut"]["epochs"][0]["audit_samples"] if s["label"] == 0]
    assert marked and all(s["name"].endswith(".png") for s in marked)
    table = (tmp_path / "shortcut_audit.md").read_text()
    assert "| model | epoch | val acc |" in table
    for name in res["runs"]:
        for epoch in (1, 2):
            assert f"| {name} | {epoch} |" in table
    assert "| as the bundle builds it |" in table and "shortcut_audit.png" in table
    assert (tmp_path / "shortcut_audit.png").stat().st_size > 1000
    # the marked copies were temporary; the audit's overlays are in the work folder
    assert list((tmp_path / "shortcut_audit_work" / "shortcut" / "audit" / "epoch_0002").glob("*_cluscam.png"))
