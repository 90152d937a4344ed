"""ExplainClusCAM / ClusCAMd: the explanation as MONAI transforms, alone and in an evaluator's post-processing."""

from __future__ import annotations

import pytest
import torch
from handler_helpers import items, meta_image, tiny_net
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd, AsDiscreted, Compose

from monai_cluscam import ClusCAM, ScoreCAM
from monai_cluscam.transforms import ClusCAMd, ExplainClusCAM, class_index_of, make_explainer, resolve_method


def test_array_transform_keeps_metadata_and_matches_the_method():
    net = tiny_net()
    image = meta_image(3)
    cam = ExplainClusCAM(net, target_layers="features", num_clusters=4)(image)
    assert isinstance(cam, MetaTensor) and cam.shape == (1, 32, 32)
    assert cam.meta["filename_or_obj"] == image.meta["filename_or_obj"]
    assert torch.equal(cam.affine, image.affine)
    expected = ClusCAM(net, "features", num_clusters=4)(image.as_tensor()[None])[0]
    assert torch.allclose(cam.as_tensor(), expected)
    fixed = ExplainClusCAM(net, method="scorecam", target_layers="features")(image.as_tensor(), class_idx=2)
    assert isinstance(fixed, MetaTensor)
    assert torch.allclose(fixed.as_tensor(), ScoreCAM(net, "features")(image.as_tensor()[None], 2)[0])


def test_dict_transform_in_evaluator_postprocessing():
    net = tiny_net()
    data = items(4)
    post = Compose(
        [
            Activationsd("pred", softmax=True),
            ClusCAMd("image", network=net, target_layers="features", class_key="pred", num_clusters=4),
            AsDiscreted("pred", argmax=True),
        ]
    )
    outputs = []
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), DataLoader(Dataset(data), batch_size=2), net, postprocessing=post
    )
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.extend(e.state.output))
    evaluator.run()
    x = torch.stack([d["image"].as_tensor() for d in data])
    expected = ClusCAM(net, "features", num_clusters=4)(x)
    for i, out in enumerate(outputs):
        assert isinstance(out["cam"], MetaTensor) and out["cam"].shape == (1, 32, 32)
        assert out["cam"].meta["filename_or_obj"] == data[i]["image"].meta["filename_or_obj"]
        assert torch.allclose(out["cam"].as_tensor(), expected[i], atol=1e-6)


def test_dict_transform_classes_keys_and_3d():
    net = tiny_net(spatial_dims=3)
    vol = meta_image(0, size=(16, 16, 8))
    data = {"t1": vol, "t2": vol.clone(), "label": torch.tensor([1])}
    t = ClusCAMd(
        ["t1", "t2"],
        network=net,
        target_layers="features",
        output_keys=["cam1", "cam2"],
        class_key="label",
        num_clusters=4,
    )
    out = t(data)
    expected = ClusCAM(net, "features", num_clusters=4)(vol.as_tensor()[None], 1)[0]
    assert out["cam1"].shape == (1, 16, 16, 8) and torch.allclose(out["cam1"].as_tensor(), expected)
    assert torch.allclose(out["cam2"].as_tensor(), expected)
    assert out["t1"] is vol  # inputs untouched
    fixed = ClusCAMd("t1", network=net, target_layers="features", class_idx=2, class_key="label", num_clusters=4)(data)
    expected = ClusCAM(net, "features", num_clusters=4)(vol.as_tensor()[None], 2)[0]
    assert torch.allclose(fixed["cam"].as_tensor(), expected)
    skipped = ClusCAMd(
        ["t1", "t3"],
        network=net,
        target_layers="features",
        output_keys=["a", "b"],
        allow_missing_keys=True,
        num_clusters=4,
    )
    assert "a" in skipped(data) and "b" not in skipped(data)


def test_from_a_bundle_config():
    parser = ConfigParser(
        {
            "network": {"_target_": "handler_helpers.TinyNet"},
            "explain": {
                "_target_": "monai_cluscam.transforms.ClusCAMd",
                "keys": "image",
                "network": "@network",
                "target_layers": "features",
                "num_clusters": 3,
            },
        }
    )
    out = parser.get_parsed_content("explain")({"image": torch.rand(1, 32, 32)})
    assert out["cam"].shape == (1, 32, 32)


def test_errors():
    net = tiny_net()
    with pytest.raises(ValueError, match="unknown explanation method 'clus'; choose one of 'cluscam', 'scorecam'"):
        ExplainClusCAM(net, method="clus", target_layers="features")
    with pytest.raises(ValueError, match="'decomcam' does not take num_clusters; its parameters are top_channels"):
        resolve_method("decomcam", {"num_clusters": 3})
    with pytest.raises(ValueError, match='no network to explain.*"@network"'):
        make_explainer(None, target_layers="features")
    with pytest.raises(ValueError, match="target layer 'layer4' does not exist in TinyNet"):
        ClusCAMd("image", network=net)
    with pytest.raises(ValueError, match="one output key per image key"):
        ClusCAMd(["a", "b"], network=net, target_layers="features")
    explain = ClusCAMd("image", network=net, target_layers="features", class_key="pred")
    with pytest.raises(KeyError, match="class_key 'pred' is not in the data"):
        explain({"image": torch.rand(1, 32, 32)})
    with pytest.raises(ValueError, match="one channel-first sample.*got shape \\(2, 1, 8, 32, 32\\)"):
        ExplainClusCAM(net, target_layers="features")(torch.rand(2, 1, 8, 32, 32))
    with pytest.raises(ValueError, match="the model takes 2D inputs but x has 3 spatial dims"):
        ExplainClusCAM(net, target_layers="features")(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="not a class index"):
        class_index_of(torch.tensor([0.7]))
    assert class_index_of(torch.tensor([[0.0, 0.0, 1.0]])) == 2
