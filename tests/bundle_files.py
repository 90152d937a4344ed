"""Paths and config access shared by the bundle tests: each bundle's configs, its scripts, and a parser."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {name: REPO / "bundles" / name for name in ("alzheimer_mri_cluscam", "phantom_volume_cluscam")}


def bundle_parser(bundle: Path, *configs: str) -> ConfigParser:
    """The bundle's configs (later ones override earlier ones) with its metadata and ``bundle_root`` set."""
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in configs])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    return parser


def bundle_script(bundle: Path, name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` of the bundle under a private name (no ``sys.path`` change): both
    bundles have a ``scripts`` package, which one process cannot import twice."""
    spec = importlib.util.spec_from_file_location(f"_{bundle.name}_{name}", bundle / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
