"""``make demo`` end to end (with one phantom slice per class): both bundles, the report and its chance levels."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_and_reports_against_chance(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--output", str(out), "--per-class", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if re.match(r"\| (slices|volumes|dicom)/", line)]
    assert sum(r.startswith("| slices/") for r in rows) == 4
    assert sum(r.startswith("| volumes/") for r in rows) == 4 and sum(r.startswith("| dicom/") for r in rows) == 1
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] != "failed"
        # outside brain, against a uniform map's share: both in [0, 1]
        share, uniform = map(float, re.fullmatch(r"([\d.]+) \(([\d.]+)\)", cells[5]).groups())
        assert 0 <= share <= 1 and 0 < uniform < 1
        if cells[1] != "Non_Demented":  # atrophic phantoms: in atrophy, against the atrophy's share of the image
            share, uniform = map(float, re.fullmatch(r"([\d.]+) \(([\d.]+)\)", cells[4]).groups())
            assert 0 <= share <= 1 and 0 < uniform < 0.2
        preview = out / re.search(r"!\[\]\((.+)\)", cells[6]).group(1)
        assert preview.stat().st_size > 1000
    assert len(list((out / "volumes").glob("*_cluscam.nii.gz"))) == 4
