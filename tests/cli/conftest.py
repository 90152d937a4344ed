"""Fixtures of the command-line tests: a tiny 2D classifier bundle made on the spot."""

from __future__ import annotations

import pytest
from cli_helpers import make_bundle


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")
