"""Runs notebooks/quickstart.ipynb end to end (nbclient, this interpreter's ipykernel, cwd = repository root) and
checks what it produced: no cell failed, its figures are there, its metrics summary is complete and in range,
and the overlay it exported is a readable NIfTI on the phantom's grid."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import nbformat
import nibabel as nib
import numpy as np
import pytest
from nbclient import NotebookClient

from monai_cluscam.io import load_image

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
METRICS = (
    "average_drop",
    "increase_in_confidence",
    "average_gain",
    "deletion_auc",
    "insertion_auc",
    "energy_pointing_game",
    "pointing_game",
    "outside_brain",
)
CLASS_NAMES = {"Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented"}


def _stdout(cell: nbformat.NotebookNode) -> str:
    outputs = cell.get("outputs", [])
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")


def _array(path: Path) -> np.ndarray:
    """A written map or mask as a float array without its channel and singleton axes."""
    return np.squeeze(load_image(path).as_tensor().numpy()).astype(np.float64)


def test_quickstart_notebook_runs_and_reports_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel inherits it: the notebook's work folder lands here
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    # one extra cell, in memory only: which interpreter ran the notebook
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('KERNEL', sys.executable)"))
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError when a cell fails
    print(f"quickstart notebook executed in {time.perf_counter() - start:.1f} s")

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    kernel = _stdout(code_cells[-1]).split("KERNEL", 1)[1].strip()
    assert os.path.realpath(kernel) == os.path.realpath(sys.executable)

    images = [o for c in code_cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6, f"expected the notebook's figures, found {len(images)} images"

    summary_cells = [c for c in code_cells if "json.dumps(summary" in c.source]
    assert len(summary_cells) == 1
    summary = json.loads(_stdout(summary_cells[0]))
    work_dir = Path(summary["work_dir"])
    assert work_dir.parent == tmp_path
    for case in ("slice", "volume"):
        result = summary[case]
        assert result["predicted"] in CLASS_NAMES and result["truth"] == "Moderate_Demented"
        assert result["cluscam_seconds"] > 0
        # ClusCAM's localisation recomputed here from the exported overlay and the phantom's masks on disk
        folder, heat = work_dir / case, _array(Path(summary["overlays"][0 if case == "volume" else 2]))
        suffix = ".nii.gz" if case == "volume" else ".png"
        atrophy = _array(folder / f"phantom_{case}_mask{suffix}") > 0
        brain = _array(folder / f"phantom_{case}_brain_mask{suffix}") > 0
        assert result["chance"] == pytest.approx(atrophy.mean(), abs=1e-9)
        assert 0 < result["chance"] < 0.5  # the atrophy mask is neither empty nor most of the image
        expected = {"energy_pointing_game": (heat * atrophy).sum() / heat.sum(),
                    "outside_brain": (heat * ~brain).sum() / heat.sum()}
        assert {k: result["ClusCAM"][k] for k in expected} == pytest.approx(expected, abs=1e-4), case
        for method in ("ClusCAM", "Grad-CAM"):
            values = result[method]
            assert set(values) == set(METRICS), (case, method, values)
            assert all(math.isfinite(v) for v in values.values()), (case, method, values)
            assert 0 <= values["average_drop"] <= 100
            assert values["increase_in_confidence"] in (0.0, 100.0)
            assert 0 <= values["average_gain"] <= 100
            shares = () if method == "ClusCAM" else ("energy_pointing_game", "outside_brain")  # ClusCAM's: above
            for name in ("deletion_auc", "insertion_auc", *shares):
                assert 0 <= values[name] <= 1, (case, method, name, values[name])
            assert values["pointing_game"] in (0.0, 1.0)

    volume_overlay, slicer_script, slice_overlay = map(Path, summary["overlays"])
    assert volume_overlay.parent.parent == work_dir
    assert nib.load(volume_overlay).shape == (64, 64, 64)
    assert nib.load(slice_overlay).shape[:2] == (128, 128)
    assert repr(volume_overlay.name) in slicer_script.read_text()  # found beside the script, wherever it moves
