"""What every bundle of the repository promises: metadata valid against its own schema (offline), the
classes named in label order everywhere, and a network that maps the declared input to the declared output."""

from __future__ import annotations

import json

import pytest
from bundle_files import BUNDLES, bundle_parser

from monai_cluscam.data import CLASS_NAMES

pytestmark = pytest.mark.parametrize("bundle", list(BUNDLES.values()), ids=list(BUNDLES))


@pytest.mark.filterwarnings("ignore:No hash value provided")
def test_verify_metadata_offline(bundle):
    pytest.importorskip("jsonschema")
    from monai.bundle import verify_metadata

    # an existing schema file is used as it is: nothing is downloaded
    verify_metadata(
        meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(bundle / "configs" / "metadata_schema.json")
    )


@pytest.mark.filterwarnings("ignore:No hash value provided")
def test_schema_rejects_metadata_without_class_names(bundle, tmp_path):
    pytest.importorskip("jsonschema")
    from monai.bundle import verify_metadata

    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="channel_def"):
        verify_metadata(meta_file=str(broken), filepath=str(bundle / "configs" / "metadata_schema.json"))


def test_metadata_and_configs_name_the_classes_in_label_order(bundle):
    pred = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]
    assert [pred["channel_def"][str(i)] for i in range(len(CLASS_NAMES))] == list(CLASS_NAMES)
    assert pred["num_channels"] == len(CLASS_NAMES)
    for config in ("train.json", "inference.json"):
        assert tuple(bundle_parser(bundle, config)["class_names"]) == CLASS_NAMES


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_verify_net_in_out(bundle, config):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / config),
        device="cpu",
    )


def test_training_and_inference_build_the_same_network(bundle):
    train, infer = bundle_parser(bundle, "train.json"), bundle_parser(bundle, "inference.json")
    assert train["network_def"] == infer["network_def"], "training and inference must build the same network"


def test_inference_config_with_dicom_true_parses(bundle, tmp_path):
    parser = bundle_parser(bundle, "inference.json")
    assert parser["dicom"] is False  # off by default
    parser["dicom"], parser["output_dir"] = True, str(tmp_path)
    index = next(i for i, h in enumerate(parser["handlers"]) if h["_target_"].endswith("ClusCAMHandler"))
    handler = parser.get_parsed_content(f"handlers#{index}")
    assert handler.dicom is True and handler.output_dir.startswith(str(tmp_path))
