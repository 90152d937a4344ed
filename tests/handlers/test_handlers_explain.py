"""ClusCAMHandler inside real MONAI evaluators: maps per sample, overlays, failures isolated, configuration errors."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from handler_helpers import items, meta_image, tiny_net
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import EnsembleEvaluator, SupervisedEvaluator

from monai_cluscam import ClusCAM, GradCAM
from monai_cluscam.handlers import ClusCAMHandler

CPU = torch.device("cpu")


class Collect:
    """Records ``engine.state.output`` at every ITERATION_COMPLETED."""

    def __init__(self) -> None:
        self.outputs: list = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self.outputs.append(e.state.output))

    @property
    def samples(self) -> list[dict]:
        return [o for batch in self.outputs for o in batch]


def _loader(data: list[dict], batch_size: int = 3) -> DataLoader:
    return DataLoader(Dataset(data), batch_size=batch_size)


def test_evaluator_stores_maps_with_metadata_and_writes_overlays(tmp_path, caplog):
    net = tiny_net()
    data = items(5)
    # listed first, the collector still sees the maps: the handler runs on MODEL_COMPLETED, before any
    # ITERATION_COMPLETED handler or metric
    collect = Collect()
    handler = ClusCAMHandler(target_layers="features", num_clusters=4, output_dir=tmp_path / "cam", preview=False)
    evaluator = SupervisedEvaluator(CPU, _loader(data), net, val_handlers=[collect, handler])
    with caplog.at_level("INFO"):
        evaluator.run()
    assert "iteration 2: explained 2 of 2 samples" in caplog.text
    assert f"0 sample(s) failed; overlays in {tmp_path / 'cam'}" in caplog.text

    samples = collect.samples
    assert len(samples) == 5 and not handler.failures and evaluator.state.cam_failures == 0
    expected = ClusCAM(net, "features", num_clusters=4)(torch.stack([d["image"].as_tensor() for d in data]))
    for i, sample in enumerate(samples):
        cam = sample["cam"]
        assert isinstance(cam, MetaTensor) and cam.shape == (1, 32, 32)
        assert cam.meta["filename_or_obj"] == f"/data/scan_{i:02d}.nii.gz"
        assert torch.allclose(cam.affine, data[i]["image"].affine.to(cam.affine.dtype))
        assert torch.allclose(cam.as_tensor(), expected[i], atol=1e-6)
        written = nib.load(tmp_path / "cam" / f"scan_{i:02d}_cluscam.nii.gz")
        assert written.shape == (32, 32, 1)
        np.testing.assert_allclose(written.affine, data[i]["image"].meta["original_affine"], atol=1e-5)
        np.testing.assert_allclose(np.asarray(written.dataobj)[..., 0], expected[i, 0].numpy(), atol=1e-5)


def test_bad_sample_is_recorded_and_the_others_explained(tmp_path, caplog):
    net = tiny_net()
    data = items(4)
    data[2]["image"] = MetaTensor(torch.full((1, 32, 32), float("nan")), meta=data[2]["image"].meta)
    collect = Collect()
    handler = ClusCAMHandler(target_layers="features", num_clusters=4, output_dir=tmp_path, preview=False)
    evaluator = SupervisedEvaluator(CPU, _loader(data, batch_size=4), net, val_handlers=[handler, collect])
    with caplog.at_level("ERROR"):
        evaluator.run()

    assert evaluator.state.cam_failures == 1
    (failure,) = handler.failures
    assert (failure.file, failure.index, failure.stage) == ("/data/scan_02.nii.gz", 2, "explain")
    assert "NaN" in failure.error and "scan_02" in caplog.text
    samples = collect.samples
    assert torch.isnan(samples[2]["cam"]).all()
    for i in (0, 1, 3):
        assert torch.isfinite(samples[i]["cam"]).all()
        assert (tmp_path / f"scan_{i:02d}_cluscam.nii.gz").exists()
    assert not (tmp_path / "scan_02_cluscam.nii.gz").exists()


def test_write_failure_is_recorded_and_nothing_overwritten(tmp_path):
    net = tiny_net()
    existing = tmp_path / "scan_01_cluscam.nii.gz"
    existing.write_bytes(b"keep me")
    handler = ClusCAMHandler(target_layers="features", num_clusters=4, output_dir=tmp_path, preview=False)
    SupervisedEvaluator(CPU, _loader(items(3)), net, val_handlers=[handler]).run()
    assert [(f.file, f.stage) for f in handler.failures] == [("/data/scan_01.nii.gz", "write")]
    assert "already exists" in handler.failures[0].error
    assert existing.read_bytes() == b"keep me"
    assert (tmp_path / "scan_00_cluscam.nii.gz").exists() and (tmp_path / "scan_02_cluscam.nii.gz").exists()


def test_without_decollation_the_maps_are_batched():
    net = tiny_net()
    handler = ClusCAMHandler(target_layers="features", num_clusters=4, output_key="saliency")
    evaluator = SupervisedEvaluator(CPU, _loader(items(3)), net, val_handlers=[handler], decollate=False)
    evaluator.run()
    cam = evaluator.state.output["saliency"]
    assert isinstance(cam, MetaTensor) and cam.shape == (3, 1, 32, 32) and cam.is_batch
    assert list(cam.meta["filename_or_obj"]) == [f"/data/scan_{i:02d}.nii.gz" for i in range(3)]
    assert evaluator.state.saliency_failures == 0


def test_class_from_label_or_fixed_and_baseline_method():
    net = tiny_net()
    data = items(3)
    x = torch.stack([d["image"].as_tensor() for d in data])
    labels = [int(d["label"]) for d in data]
    for class_idx, expected_classes in (("label", labels), (2, [2, 2, 2])):
        collect = Collect()
        handler = ClusCAMHandler(method="gradcam", target_layers="features", class_idx=class_idx)
        SupervisedEvaluator(CPU, _loader(data), net, val_handlers=[handler, collect]).run()
        expected = GradCAM(net, "features")(x, expected_classes)
        got = torch.stack([s["cam"].as_tensor() for s in collect.samples])
        assert torch.allclose(got, expected, atol=1e-6), class_idx


def test_foreground_restricts_the_maps_to_the_subject():
    net = tiny_net()
    data = items(3)
    for d in data:
        d["image"][:, :, :10] = 0.0  # the left third is background
    x = torch.stack([d["image"].as_tensor() for d in data])
    collect = Collect()
    handler = ClusCAMHandler(target_layers="features", num_clusters=4, foreground=True, baseline="blur")
    SupervisedEvaluator(CPU, _loader(data), net, val_handlers=[handler, collect]).run()
    got = torch.stack([s["cam"].as_tensor() for s in collect.samples])
    expected = ClusCAM(net, "features", num_clusters=4, baseline="blur")(x, foreground=True)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[..., :10].abs().max() == 0 and got.flatten(1).amax(1).tolist() == [1.0, 1.0, 1.0]


def test_ensemble_evaluator_explains_the_chosen_network():
    nets = [tiny_net(seed=0), tiny_net(seed=1)]
    data = items(3)
    x = torch.stack([d["image"].as_tensor() for d in data])
    for key, index in (("pred_1", 1), (0, 0)):
        collect = Collect()
        handler = ClusCAMHandler(target_layers="features", network_key=key, num_clusters=4)
        evaluator = EnsembleEvaluator(CPU, _loader(data), nets, val_handlers=[handler, collect])
        evaluator.run()
        expected = ClusCAM(nets[index], "features", num_clusters=4)(x)
        got = torch.stack([s["cam"].as_tensor() for s in collect.samples])
        assert torch.allclose(got, expected, atol=1e-6)
        assert set(collect.samples[0]) >= {"pred_0", "pred_1", "cam"}
    with pytest.raises(ValueError, match=r"choose one with network_key= one of \['pred_0', 'pred_1'\]"):
        EnsembleEvaluator(CPU, _loader(data), nets, val_handlers=[ClusCAMHandler(target_layers="features")]).run()
    with pytest.raises(ValueError, match="network_key 'pred_7' names none"):
        handler = ClusCAMHandler(target_layers="features", network_key="pred_7")
        EnsembleEvaluator(CPU, _loader(data), nets, val_handlers=[handler]).run()


def test_3d_volumes_and_epoch_folder(tmp_path):
    net = tiny_net(spatial_dims=3)
    data = items(2, size=(16, 16, 12))
    collect = Collect()
    handler = ClusCAMHandler(
        target_layers="features", num_clusters=3, output_dir=str(tmp_path / "epoch_{epoch:02d}"), preview=False
    )
    SupervisedEvaluator(CPU, _loader(data), net, val_handlers=[handler, collect]).run()
    assert [tuple(s["cam"].shape) for s in collect.samples] == [(1, 16, 16, 12)] * 2
    assert sorted(p.name for p in (tmp_path / "epoch_01").glob("*.nii.gz")) == [
        "scan_00_cluscam.nii.gz",
        "scan_01_cluscam.nii.gz",
    ]


def test_unnamed_images_get_distinct_overlay_names(tmp_path):
    net = tiny_net()
    data = [{"image": torch.rand(1, 32, 32), "label": torch.tensor(0)} for _ in range(4)]
    handler = ClusCAMHandler(target_layers="features", num_clusters=4, output_dir=tmp_path, preview=False)
    SupervisedEvaluator(CPU, _loader(data, batch_size=2), net, val_handlers=[handler]).run()
    assert not handler.failures
    assert len(list(tmp_path.glob("*_cluscam.nii.gz"))) == 4


def test_plain_ignite_engine_with_a_given_network():
    net = tiny_net()

    def step(engine, batch):
        return {"image": batch["image"], "pred": net(batch["image"])}

    engine = Engine(step)
    ClusCAMHandler(network=net, target_layers="features", num_clusters=4).attach(engine)
    engine.run([{"image": torch.rand(2, 1, 32, 32)}])
    assert engine.state.output["cam"].shape == (2, 1, 32, 32)


def test_from_a_bundle_config(tmp_path):
    config = {
        "network": {"_target_": "handler_helpers.TinyNet"},
        "handler": {
            "_target_": "monai_cluscam.handlers.ClusCAMHandler",
            "method": "cluscam",
            "target_layers": "features",
            "num_clusters": 3,
            "output_dir": str(tmp_path),
            "preview": False,
        },
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "$torch.device('cpu')",
            "val_data_loader": "$[{'image': torch.rand(2, 1, 32, 32), 'label': torch.tensor([0, 1])}]",
            "network": "@network",
            "val_handlers": ["@handler"],
        },
    }
    parser = ConfigParser(config)
    evaluator = parser.get_parsed_content("evaluator")
    evaluator.run()
    assert [tuple(o["cam"].shape) for o in evaluator.state.output] == [(1, 32, 32)] * 2
    assert len(list(tmp_path.glob("*.nii.gz"))) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "lime"}, "unknown explanation method 'lime'; choose one of 'cluscam', "),
        ({"num_cluster": 4}, "method 'cluscam' does not take num_cluster; its parameters are num_clusters"),
        ({"method": "gradcam", "num_clusters": 4}, "method 'gradcam' does not take num_clusters"),
        ({"class_idx": "argmax"}, "class_idx must be one of"),
        ({"output_dir": "out/{run}"}, "only placeholder allowed is {epoch}"),
        ({"foreground": "false"}, "foreground must be True, False, a finite grey value or a mask tensor; got 'false'"),
        ({"overwrite": "false"}, r"overwrite must be True or False; got 'false' \(with python -m monai.bundle run"),
        ({"dicom": "true", "output_dir": "out"}, "dicom must be True or False; got 'true'"),
    ],
)
def test_configuration_errors_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClusCAMHandler(target_layers="features", **kwargs)


def test_configuration_errors_before_any_sample():
    net = tiny_net()
    with pytest.raises(ValueError, match="target layer 'layer4' does not exist in TinyNet"):
        SupervisedEvaluator(CPU, _loader(items(2)), net, val_handlers=[ClusCAMHandler()]).run()
    with pytest.raises(ValueError, match="has no `network` to explain"):
        ClusCAMHandler(target_layers="features").attach(engine := Engine(lambda e, b: b))
        engine.run([{"image": torch.rand(1, 1, 32, 32)}])
    with pytest.raises(ValueError, match="no 'img' in the engine output"):
        handler = ClusCAMHandler(target_layers="features", image_key="img")
        SupervisedEvaluator(CPU, _loader(items(2)), net, val_handlers=[handler]).run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = [{"image": meta_image(0)[None]}]  # no label: class_idx="label" cannot work
        handler = ClusCAMHandler(target_layers="features", class_idx="label", label_key="target")
        with pytest.raises(ValueError, match="no per-sample 'target'"):
            SupervisedEvaluator(CPU, data, net, val_handlers=[handler]).run()


def test_metrics_read_the_maps():
    """key_metric/additional_metrics update on ITERATION_COMPLETED, after the maps are stored."""
    from ignite.metrics import Average

    net = tiny_net()
    mean_map = Average(output_transform=lambda out: torch.stack([o["cam"].as_tensor().mean() for o in out]).mean())
    handler = ClusCAMHandler(target_layers="features", num_clusters=4)
    evaluator = SupervisedEvaluator(
        CPU, _loader(items(4)), net, key_val_metric={"mean_map": mean_map}, val_handlers=[handler]
    )
    evaluator.run()
    assert 0.0 < evaluator.state.metrics["mean_map"] < 1.0


def test_dicom_option_writes_dicom_beside_the_overlays(tmp_path):
    handler = ClusCAMHandler(target_layers="features", num_clusters=3, output_dir=tmp_path, preview=False, dicom=True)
    SupervisedEvaluator(CPU, _loader(items(2)), tiny_net(), val_handlers=[handler]).run()
    assert not handler.failures
    for i in range(2):
        folder = tmp_path / f"scan_{i:02d}_ClusCAM_dicom"
        assert (tmp_path / f"scan_{i:02d}_cluscam.nii.gz").is_file()
        pm = pydicom.dcmread(folder / "map" / "parametric_map.dcm")
        scan = pydicom.dcmread(next((folder / "scan").iterdir()))
        assert pm.DerivationAlgorithmSequence[0].AlgorithmName == "ClusCAM"
        assert (pm.StudyInstanceUID, pm.FrameOfReferenceUID) == (scan.StudyInstanceUID, scan.FrameOfReferenceUID)
        assert len(list((folder / "overlay").iterdir())) == 1
    with pytest.raises(ValueError, match="pass output_dir"):
        ClusCAMHandler(target_layers="features", dicom=True)
