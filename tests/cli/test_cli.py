"""The command line, end to end on a small bundle made here."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
from cli_helpers import explain_args, read_csv, slices

from monai_cluscam.bundle import load_bundle
from monai_cluscam.cli import main


def test_explains_a_folder(bundle, tmp_path):
    data = slices(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert main(["explain", "--bundle", str(bundle), "--input", str(data), "--output", str(out), "--quiet"]) == 0
    rows = read_csv(out / "predictions.csv")
    assert [r["file"] for r in rows] == [str(data / f"s{i}.png") for i in range(3)]
    assert set(rows[0]) == {"file", "prediction", "low", "mid", "high"}
    for r in rows:
        probs = [float(r[c]) for c in ("low", "mid", "high")]
        assert abs(sum(probs) - 1) < 1e-4 and r["prediction"] == ["low", "mid", "high"][int(np.argmax(probs))]
    for i in range(3):
        assert (out / f"s{i}_cluscam.nii.gz").exists() and (out / f"s{i}_cluscam.png").exists()
    assert not (out / "failures.csv").exists()


def test_bad_inputs_are_listed_and_cost_nothing(bundle, tmp_path, capsys):
    data = slices(tmp_path / "in", 2)
    (data / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code = main(["explain", "--bundle", str(bundle), "--input", str(data), str(tmp_path / "nope.nii.gz"),
                 "--output", str(out), "--quiet"])
    assert code == 1
    assert [r["file"] for r in read_csv(out / "predictions.csv")] == [str(data / "s0.png"), str(data / "s1.png")]
    failed = {r["file"]: r["error"] for r in read_csv(out / "failures.csv")}
    assert set(failed) == {str(data / "broken.png"), str(tmp_path / "nope.nii.gz")}
    assert "not a readable PNG/JPEG" in failed[str(data / "broken.png")]
    assert "does not exist" in failed[str(tmp_path / "nope.nii.gz")]
    assert (out / "s0_cluscam.nii.gz").exists() and (out / "s1_cluscam.nii.gz").exists()
    assert "2 failed" in capsys.readouterr().out


def test_same_names_in_two_folders_do_not_collide(bundle, tmp_path):
    slices(tmp_path / "in" / "a", 1)
    slices(tmp_path / "in" / "b", 1, seed=1)
    out = tmp_path / "out"
    assert main(["explain", "--bundle", str(bundle), "--input", str(tmp_path / "in"), "--output", str(out),
                 "--quiet"]) == 0
    assert (out / "s0_cluscam.nii.gz").exists() and (out / "b_s0_cluscam.nii.gz").exists()


def test_method_and_k_options(bundle, tmp_path):
    data = slices(tmp_path / "in", 1)
    out = tmp_path / "out"
    args = ["explain", "--bundle", str(bundle), "--input", str(data), "--output", str(out), "--quiet"]
    assert main([*args, "--method", "gradcam"]) == 0
    assert main([*args, "--method", "gradcam", "--num-clusters", "5", "--overwrite"]) == 2
    assert main([*args, "--num-clusters", "4", "--overwrite"]) == 0


def test_k_comes_from_the_command_line_else_the_bundle(bundle, tmp_path, capsys):
    """The bundle's num_clusters is its ClusCAM K; --num-clusters overrides it; a bad value is named."""
    config_path = bundle / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "num_clusters": 3}))
    data = slices(tmp_path / "in", 1)
    ks, maps = {}, {}
    for name, extra in (("bundle", []), ("cli3", ["--num-clusters", "3"]), ("cli5", ["--num-clusters", "5"]),
                        ("gradcam", ["--method", "gradcam"])):
        out = tmp_path / name
        assert main(explain_args(bundle, [data], out, *extra)) == 0
        ks[name] = json.loads((out / "s0_cluscam.json").read_text())["settings"]["num_clusters"]
        maps[name] = np.asarray(nib.load(out / "s0_cluscam.nii.gz").dataobj)
    assert ks == {"bundle": 3, "cli3": 3, "cli5": 5, "gradcam": None}
    assert load_bundle(bundle, device="cpu").num_clusters == 3
    # the bundle's K reaches ClusCAM: its map is the map of K = 3, not of K = 5
    assert np.array_equal(maps["bundle"], maps["cli3"]) and not np.allclose(maps["bundle"], maps["cli5"])
    config_path.write_text(json.dumps({**config, "num_clusters": "ten"}))
    assert main(explain_args(bundle, [data], tmp_path / "bad")) == 2
    err = capsys.readouterr().err
    assert "num_clusters must be a positive int" in err and "inference.json" in err


def test_existing_outputs_are_not_overwritten(bundle, tmp_path, capsys):
    data = slices(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("keep me")
    assert main(["explain", "--bundle", str(bundle), "--input", str(data), "--output", str(out), "--quiet"]) == 2
    assert (out / "predictions.csv").read_text() == "keep me"
    assert "--overwrite" in capsys.readouterr().err


def test_missing_bundle_is_a_usage_error(tmp_path, capsys):
    code = main(["explain", "--bundle", str(tmp_path / "none"), "--input", str(tmp_path), "--output",
                 str(tmp_path / "o")])
    assert code == 2
    assert "configs/inference.json" in capsys.readouterr().err


def test_module_entry_point():
    cmd = [sys.executable, "-m", "monai_cluscam", "explain", "--help"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0 and "--bundle" in result.stdout
