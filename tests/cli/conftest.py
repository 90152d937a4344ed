"""Fixtures of the command-line tests: tiny 2D and 3D classifier bundles made on the spot."""

from __future__ import annotations

import pytest
from cli_helpers import make_bundle


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


@pytest.fixture
def bundle3d(tmp_path):
    return make_bundle(tmp_path / "bundle3d", spatial_dims=3)
