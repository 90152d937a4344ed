"""Reruns into the same output folder resume: complete inputs are kept, a run killed midway loses nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from cli_helpers import CLASSES, assert_same_results, explain_args, read_csv, slices
from PIL import Image

from monai_cluscam.cli import main


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_rerun_keeps_complete_inputs_and_redoes_missing_ones(bundle, tmp_path, capsys):
    data = slices(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert main(explain_args(bundle, [data], out)) == 0
    table, first = (out / "predictions.csv").read_text(), _mtimes(out)
    record = json.loads((out / "s0_cluscam.json").read_text())
    assert record["file"] == str(data / "s0.png") and record["prediction"] in CLASSES
    assert set(record["files"]) == {f"s0_cluscam{end}" for end in (".nii.gz", "_heat.ctbl", "_slicer.py", ".png")}
    capsys.readouterr()

    assert main(explain_args(bundle, [data], out)) == 0
    assert "2 of them were explained by an earlier run" in capsys.readouterr().out
    assert (out / "predictions.csv").read_text() == table
    assert {k: v for k, v in _mtimes(out).items() if k != "predictions.csv"} == {
        k: v for k, v in first.items() if k != "predictions.csv"
    }

    (out / "s1_cluscam.png").unlink()  # an incomplete input is explained again, the complete one is kept
    assert main(explain_args(bundle, [data], out)) == 0
    assert (out / "s1_cluscam.png").exists() and (out / "predictions.csv").read_text() == table
    assert _mtimes(out)["s0_cluscam.nii.gz"] == first["s0_cluscam.nii.gz"]

    forged = dict(record, files=["../../../etc/passwd"])  # a record naming files outside the folder is not trusted
    (out / "s0_cluscam.json").write_text(json.dumps(forged))
    (out / "s1_cluscam.json").write_text("{half a rec")  # nor is one that does not parse
    capsys.readouterr()
    assert main(explain_args(bundle, [data], out)) == 0
    assert "explained by an earlier run" not in capsys.readouterr().out
    assert json.loads((out / "s0_cluscam.json").read_text())["files"] == record["files"]
    assert json.loads((out / "s1_cluscam.json").read_text())["file"] == str(data / "s1.png")

    # other settings: the earlier results are not silently mixed in nor replaced
    before = _mtimes(out)["s0_cluscam.nii.gz"]
    assert main(explain_args(bundle, [data], out, "--method", "gradcam")) == 1
    reasons = [r["error"] for r in read_csv(out / "failures.csv")]
    assert len(reasons) == 2 and all("pass --overwrite" in r and "'method': 'cluscam'" in r for r in reasons)
    assert _mtimes(out)["s0_cluscam.nii.gz"] == before
    assert main(explain_args(bundle, [data], out, "--method", "gradcam", "--overwrite")) == 0
    assert json.loads((out / "s0_cluscam.json").read_text())["settings"]["method"] == "gradcam"
    assert not (out / "failures.csv").exists()

    inside = data / "out"  # an output folder inside the input folder: its overlays are not taken for scans
    assert main(explain_args(bundle, [data], inside)) == 0 and main(explain_args(bundle, [data], inside)) == 0
    assert len(read_csv(inside / "predictions.csv")) == 2


# A run of the command line that is killed (SIGKILL: no clean-up runs) just before the preview of s1 gets
# its final name: its temporary file is complete but never renamed.
KILLED_RUN = """
import os, signal, sys
rename = os.replace
def replace(src, dst, *args, **kwargs):
    if str(dst).endswith("s1_cluscam.png"):
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(src, dst, *args, **kwargs)
os.replace = replace
from monai_cluscam.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_killed_midway_leaves_no_partial_file_and_loses_nothing(bundle, tmp_path):
    data = slices(tmp_path / "in", 3)
    reference = tmp_path / "reference"
    assert main(explain_args(bundle, [data], reference)) == 0
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, *explain_args(bundle, [data], out)], timeout=300)
    assert killed.returncode == -signal.SIGKILL

    assert (out / "s0_cluscam.json").exists() and (out / "s1_cluscam.nii.gz").exists()
    assert not (out / "s1_cluscam.json").exists() and not (out / "s1_cluscam.png").exists()
    assert not (out / "predictions.csv").exists() and len(list(out.glob(".s1_cluscam.png.*.tmp"))) == 1
    for path in out.glob("*_cluscam.nii.gz"):  # every file under its final name is whole
        assert np.isfinite(nib.load(path).get_fdata()).all()
    for path in out.glob("*_cluscam.png"):
        Image.open(path).load()
    kept = _mtimes(out)

    assert main(explain_args(bundle, [data], out)) == 0
    assert not list(out.glob(".*")), "the killed run's temporary file was not cleared"
    assert_same_results(out, reference)
    assert {k: v for k, v in _mtimes(out).items() if k.startswith("s0_")} == {
        k: v for k, v in kept.items() if k.startswith("s0_")
    }
