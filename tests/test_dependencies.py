"""pyproject.toml declares every third-party package monai_cluscam imports, and nothing it does not use."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
#: Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"PIL": "pillow", "ignite": "pytorch-ignite", "sklearn": "scikit-learn",
                 "dicomweb_client": "dicomweb-client"}
#: Packages of another distribution inside an import name: ``monai.deploy`` is the MONAI Deploy App SDK's.
SUBPACKAGES = {"monai.deploy": "monai-deploy-app-sdk"}
#: Declared but never imported, with the reason they are needed at run time.
NOT_IMPORTED = {
    "nilearn": "its packaged MNI152 template file is read from disk (monai_cluscam/data/_template.py)",
    "pyarrow": "pandas.read_parquet's engine (monai_cluscam/data/alzheimer.py)",
    "fire": "python -m monai.bundle run, which runs the shipped bundles",
    "einops": "MONAI's ViT, which the package explains (a transformer's tokens on their patch grid), imports it",
}


def _imported() -> set[str]:
    names = set()
    for path in (ROOT / "monai_cluscam").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(_top(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(_top(node.module))
    return names - set(sys.stdlib_module_names) - {"monai_cluscam", "__future__"}


def _top(module: str) -> str:
    """The import's top-level name, or the distribution of a subpackage that another distribution ships."""
    for package, distribution in SUBPACKAGES.items():
        if module == package or module.startswith(f"{package}."):
            return distribution
    return module.split(".")[0]


def _names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower() for spec in specs}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return _names(project["dependencies"])


def _extras() -> dict[str, set[str]]:
    """The optional extras a user installs for a feature (``dicom``, ``plots``); ``test`` is the developers'."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    return {name: _names(specs) for name, specs in extras.items() if name != "test"}


def test_imports_are_declared_and_declared_packages_used():
    imported = {DISTRIBUTIONS.get(name, name).lower() for name in _imported()}
    declared = _declared()
    optional = set().union(*_extras().values())
    assert imported - declared - optional == set(), "imported by monai_cluscam but declared nowhere in pyproject"
    assert declared - imported - set(NOT_IMPORTED) == set(), "declared but never used"
    for extra, names in _extras().items():  # each extra brings at least one package the package imports
        assert names & imported, f"extra {extra!r} declares nothing monai_cluscam imports"
    assert "scipy" in declared  # monai_cluscam.data uses scipy.ndimage at run time


def test_metrics_never_import_ignite():
    """The metrics are plain tensors in, numbers out: their Ignite handlers live in monai_cluscam.handlers."""
    offending = []
    for path in (ROOT / "monai_cluscam" / "metrics").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offending += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "ignite"
                          or n.startswith(("monai.handlers", "monai.engines", "monai_cluscam.handlers"))]
    assert offending == []
