"""The method registry: the built-in names, aliases and labels every caller reads, and a method of one's own
registered with one call, run end to end through the command line and the Ignite handler, then removed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_helpers import explain_args, make_bundle, read_csv, slices
from handler_helpers import items, tiny_net
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator

from monai_cluscam import GradCAMpp, register_method, unregister_method
from monai_cluscam.cam.base import BaseCAM, CAMState
from monai_cluscam.cam.registry import METHODS, canonical_name, method_label, method_names, method_spec
from monai_cluscam.cli import main
from monai_cluscam.handlers import ClusCAMHandler
from monai_cluscam.transforms import METHODS as TRANSFORM_METHODS
from monai_cluscam.transforms import make_explainer, resolve_method

README = Path(__file__).resolve().parents[2] / "README.md"
BUILT_IN = ["cluscam", "scorecam", "gradcam", "gradcampp", "decomcam", "rise", "occlusion"]


def blob(shape: tuple[int, ...]) -> torch.Tensor:
    """A Gaussian blob in the centre of a grid of ``shape``, peak 1."""
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
    return torch.exp(-sum(g**2 for g in grids) / 0.1)


class BlobCAM(BaseCAM):
    """A toy method written as a new method is: it supplies its maps (one centred blob, whatever the input)
    and their weights (1); the base class runs the forward pass, the sum and the normalisation. It scores no
    masked copy, so it says so (``perturbs_input``) and unmaskable voxels keep their attribution."""

    perturbs_input = False

    def maps(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        return blob(state.input_size).expand(x.shape[0], 1, *state.input_size).to(x.device)

    def weights(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        return torch.ones(x.shape[0], 1, device=x.device)


@pytest.fixture
def toy():
    before = dict(METHODS)
    spec = register_method("toy", BlobCAM, aliases=("toy-cam",), label="Toy blob")
    try:
        yield spec
    finally:
        unregister_method("toy")
    assert METHODS == before and "toy" not in method_names(aliases=True)


def test_built_in_methods_names_aliases_and_labels():
    assert method_names() == BUILT_IN and list(TRANSFORM_METHODS) == BUILT_IN
    assert TRANSFORM_METHODS is METHODS
    for alias in ("gradcam++", "Grad-CAM++", "GRADCAMPP", " gradcampp "):
        assert canonical_name(alias) == "gradcampp" and resolve_method(alias) is GradCAMpp
    assert {m: method_label(m) for m in BUILT_IN} == {
        "cluscam": "ClusCAM",
        "scorecam": "Score-CAM",
        "gradcam": "Grad-CAM",
        "gradcampp": "Grad-CAM++",
        "decomcam": "DecomCAM",
        "rise": "RISE",
        "occlusion": "Occlusion",
    }
    assert [m for m in BUILT_IN if not method_spec(m).masked_passes] == ["gradcam", "gradcampp"]


def test_readme_table_lists_every_name_and_alias():
    text = README.read_text()
    table = text[text.index("| class | name (aliases) |") :]
    table = table[: table.index("\n\n")]
    listed = set(re.findall(r"`([a-z+-]+)`", table))
    assert set(method_names(aliases=True)) <= listed


def test_registration_errors():
    with pytest.raises(ValueError, match="already registered: 'gradcam' \\(by 'gradcam'\\)"):
        register_method("GradCAM", BlobCAM)
    with pytest.raises(ValueError, match="'gradcam\\+\\+' \\(by 'gradcampp'\\)"):
        register_method("mine", BlobCAM, aliases=("gradcam++",))
    with pytest.raises(ValueError, match="subclass of monai_cluscam.cam.BaseCAM"):
        register_method("mine", torch.nn.Linear)
    with pytest.raises(ValueError, match="non-empty string"):
        register_method("", BlobCAM)
    with pytest.raises(ValueError, match="unknown explanation method 'mine'"):
        unregister_method("mine")
    assert method_names() == BUILT_IN


def test_registered_method_everywhere_and_gone_after(toy, tmp_path):
    assert toy.name == "toy" and toy.label == "Toy blob" and toy.aliases == ("toy-cam",)
    assert METHODS["toy"] is BlobCAM and method_spec("Toy-CAM") is toy
    cam = make_explainer(tiny_net(), "TOY", "features")
    assert isinstance(cam, BlobCAM)
    with pytest.raises(ValueError, match="method 'toy' does not take num_clusters; its parameters are"):
        resolve_method("toy", {"num_clusters": 3})


def test_registered_method_through_the_command_line(toy, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    data = slices(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert main(explain_args(bundle, [data], out, "--method", "toy")) == 0
    rows = read_csv(out / "predictions.csv")
    assert [r["file"] for r in rows] == [str(data / f"s{i}.png") for i in range(2)]
    for i in range(2):
        assert json.loads((out / f"s{i}_cluscam.json").read_text())["settings"]["method"] == "toy"
        heat = np.asarray(nib.load(out / f"s{i}_cluscam.nii.gz").dataobj).squeeze()
        assert heat.shape == (48, 40)  # back on the slice's own grid (x, y), peak in the middle
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        assert abs(peak[0] - 23.5) <= 2 and abs(peak[1] - 19.5) <= 2
        assert heat[0, 0] < 0.01 * heat.max()
    # the alias, any case, is recorded under the canonical name: a rerun reuses the outputs
    assert main(explain_args(bundle, [data], out, "--method", "Toy-CAM")) == 0
    assert json.loads((out / "s0_cluscam.json").read_text())["settings"]["method"] == "toy"
    with pytest.raises(SystemExit):  # --num-clusters stays ClusCAM's; an unknown name is a usage error
        main(explain_args(bundle, [data], tmp_path / "o2", "--method", "toy2"))
    assert main(explain_args(bundle, [data], tmp_path / "o3", "--method", "toy", "--num-clusters", "3")) == 2


def test_registered_method_through_the_handler(toy, tmp_path):
    data = items(3)
    handler = ClusCAMHandler(method="toy", target_layers="features", output_dir=tmp_path / "cam", preview=False)
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), DataLoader(Dataset(data), batch_size=2), tiny_net(), val_handlers=[handler]
    )
    evaluator.run()
    assert not handler.failures and evaluator.state.cam_failures == 0
    assert isinstance(handler.explainer, BlobCAM)
    outputs = evaluator.state.output
    expected = blob((32, 32))
    expected = (expected - expected.min()) / (expected.max() - expected.min())  # the base class's min-max
    assert len(outputs) == 1 and torch.allclose(outputs[0]["cam"].as_tensor()[0], expected, atol=1e-6)
    assert len(list((tmp_path / "cam").glob("*.nii.gz"))) == 3


def test_unregistered_method_is_refused_again():
    assert "toy" not in METHODS
    with pytest.raises(ValueError, match="unknown explanation method 'toy'"):
        ClusCAMHandler(method="toy", target_layers="features")
    with pytest.raises(SystemExit):
        main(["explain", "--bundle", "b", "--input", "i", "--output", "o", "--method", "toy"])
