"""``torchrun --nproc_per_node=2 -m monai_cluscam explain``: two CPU processes (gloo) share the inputs and give
what one process gives, in one predictions.csv, resuming an earlier partial run."""

from __future__ import annotations

import os
import subprocess
import sys

from cli_helpers import assert_same_results, explain_args, read_csv, slices

from monai_cluscam.cli import main


def test_two_processes_match_one_and_resume_a_partial_run(bundle, tmp_path):
    data = slices(tmp_path / "in", 5)
    (data / "broken.png").write_bytes(b"not a png")
    one = tmp_path / "one"
    assert main(explain_args(bundle, [data], one)) == 1
    two = tmp_path / "two"
    assert main(explain_args(bundle, [data / "s0.png", data / "s3.png"], two)) == 0  # an earlier, partial run
    kept = {p.name: p.stat().st_mtime_ns for p in two.iterdir() if p.name.startswith(("s0_", "s3_"))}

    args = [a for a in explain_args(bundle, [data], two) if a != "--quiet"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    launch += ["-m", "monai_cluscam"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([*launch, *args], capture_output=True, text=True, timeout=400, env=env)

    assert "explaining (rank 0)" in run.stderr and "explaining (rank 1)" in run.stderr, run.stderr[-3000:]
    assert run.returncode == 1, run.stderr[-3000:]  # an input failed: the status says so
    assert "2 of them were explained by an earlier run" in run.stdout
    assert len(read_csv(two / "predictions.csv")) == 5
    assert_same_results(two, one)
    assert read_csv(two / "failures.csv") == read_csv(one / "failures.csv")
    assert "not a readable PNG/JPEG" in read_csv(two / "failures.csv")[0]["error"]
    assert {p.name: p.stat().st_mtime_ns for p in two.iterdir() if p.name.startswith(("s0_", "s3_"))} == kept
    assert not list(two.glob(".*")), "temporary or part files left behind"
