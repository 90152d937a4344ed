"""Shared test fixtures: small MONAI networks and a classifier whose evidence region is known."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from toy_models import RegionClassifier

#: not collected for doctests (it has none): a conftest of a subfolder without ``__init__.py`` takes the module name
#: ``conftest`` first, and collecting this file as a module would then clash with it
collect_ignore = ["conftest.py"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alzheimer_mri"


@pytest.fixture
def region_model_2d() -> RegionClassifier:
    return RegionClassifier(2).eval()


@pytest.fixture
def resnet2d() -> nn.Module:
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    return resnet10(spatial_dims=2, n_input_channels=1, num_classes=4).eval()


@pytest.fixture
def resnet3d() -> nn.Module:
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    return resnet10(spatial_dims=3, n_input_channels=1, num_classes=3).eval()


@pytest.fixture
def vit2d() -> nn.Module:
    from monai.networks.nets import ViT

    torch.manual_seed(0)
    return ViT(
        in_channels=1, img_size=(32, 32), patch_size=(8, 8), spatial_dims=2, classification=True,
        num_classes=3, hidden_size=48, mlp_dim=96, num_layers=2, num_heads=4,
    ).eval()
