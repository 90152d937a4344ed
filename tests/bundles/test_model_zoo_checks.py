"""The checks the MONAI Model Zoo (github.com/Project-MONAI/model-zoo) runs on a bundle before it takes it,
run here on both bundles, offline.

What the Zoo runs (read from its ``ci/`` folder, workflows and CONTRIBUTING.md at commit dfae206, 2024-10-11):

- ``code-format-check.yml`` (Python 3.10.14): ``runtests.sh --codeformat`` over the whole repository: isort
  ``--check`` and ``black --skip-magic-trailing-comma --check`` with the settings of its ``setup.cfg`` and
  ``pyproject.toml`` (line length 120, isort's black profile, black targets py37-py39), flake8 with
  flake8-bugbear, -comprehensions, -executable and pep8-naming (its ``[flake8]`` section), and pytype.
- ``premerge-cpu.yml`` (Python 3.10.14), ``ci/run_premerge_cpu.sh``: for each changed bundle,
  ``get_bundle_requirements.py`` writes ``monai>=V rc1,<V+0.0.1`` (``ALLOW_MONAI_RC``), ``torch==``,
  ``numpy==`` and ``name==version`` for every ``required_packages_version`` / ``optional_packages_version``
  entry, and ``pip install --pre -r`` must install them; then ``verify_bundle.py -m min``: the files a bundle
  must have (``LICENSE``, ``configs/metadata.json``, ``models/model.pt`` or a ``large_files`` config,
  ``configs/inference.*``), ``version`` listed in ``changelog`` (and not a version the Zoo already released),
  and ``verify_metadata`` against the schema named in ``metadata.json`` (downloaded to ``eval/schema.json``).
- ``run_premerge_gpu.sh`` (the maintainers' ``/build``): ``verify_bundle.py`` in full mode adds
  ``verify_net_in_out`` and ``ckpt_export`` of ``network_def`` from the inference config (the property checks
  run only for bundles with ``supported_apps``, which these have not), then ``ci/unit_tests/test_<bundle>.py``
  when one exists (none for these bundles).
- CONTRIBUTING.md's rules, which its CI enforced until 2024 (``verify_bundle_keys``, removed from
  ``verify_bundle.py`` in commit 1e4463c) and its reviewers still ask for: the config keys below,
  ``docs/README.md`` after ``docs/readme_template.md``, ``docs/data_license.txt`` when the data has licence
  terms, no file over 25 MB, no personal paths in configs; and ``.pre-commit-config.yaml`` (pre-commit.ci):
  files end in one newline, no trailing whitespace or CR line ends, JSON in ``json.dumps(indent=4)`` layout,
  executables with a shebang, a module's docstring first.

The lint checks run when isort, black and flake8 (with its plugins) are installed (the ``test`` extra) and
skip otherwise. Whether the pins install on Python 3.10 needs the package index: set
``MONAI_CLUSCAM_ZOO_INDEX=1`` to ask it (``pip index versions``); offline, the pins are checked against
monai-cluscam's own requirements and the installed distributions. ``MONAI_ZOO_SCHEMA=<file>`` validates the
metadata against a downloaded copy of the Zoo's schema as well as against the rules below.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import pytest
import torch
from bundle_files import BUNDLES, REPO, bundle_parser

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
packaging_version = pytest.importorskip("packaging.version")
packaging_requirements = pytest.importorskip("packaging.requirements")
packaging_specifiers = pytest.importorskip("packaging.specifiers")

BUNDLE_PARAMS = pytest.mark.parametrize("bundle", list(BUNDLES.values()), ids=list(BUNDLES))

ZOO_PYTHON = "3.10.14"  # actions/setup-python in the Zoo's premerge-cpu.yml and code-format-check.yml
MAX_FILE_BYTES = 25 * 1024 * 1024  # CONTRIBUTING.md, "Model storage"

# The Zoo's lint settings (its setup.cfg [flake8] and [isort], pyproject.toml [tool.black]), restated.
ZOO_SETUP_CFG = textwrap.dedent(
    """\
    [flake8]
    select = B,C,E,F,N,P,T4,W,B9
    max_line_length = 120
    ignore = E203,E501,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419
    per_file_ignores = __init__.py: F401, __main__.py: F401

    [isort]
    known_first_party = models
    profile = black
    line_length = 120
    """
)
ZOO_BLACK_TOML = textwrap.dedent(
    """\
    [tool.black]
    line-length = 120
    target-version = ['py37', 'py38', 'py39']
    """
)
FLAKE8_PLUGINS = ("bugbear", "pep8ext_naming", "flake8_comprehensions", "flake8_executable")

# What the Zoo's metadata schema (meta_schema_20240725.json) requires, restated as a JSON schema: the keys it
# lists as required, their types, and the fields every tensor of network_data_format must describe.
_TENSOR = {
    "type": "object",
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"],
    "properties": {
        "type": {"type": "string"},
        "format": {"type": "string"},
        "num_channels": {"type": "integer"},
        "spatial_shape": {"type": "array", "items": {"type": ["string", "integer"]}},
        "dtype": {"type": "string"},
        "value_range": {"type": "array", "items": {"type": "number"}},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object"},
    },
}
_SCALAR = {"type": ["number", "string", "boolean"]}
_TEXT_KEYS = ("schema", "version", "monai_version", "pytorch_version", "numpy_version", "task", "description")
_TEXT_KEYS += ("authors", "copyright", "data_source", "data_type", "image_classes", "label_classes")
_TEXT_KEYS += ("pred_classes", "intended_use")
ZOO_METADATA_RULES = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": [
        "schema",
        "version",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    ],
    "properties": {
        **{key: {"type": "string"} for key in _TEXT_KEYS},
        "changelog": {"type": "object"},
        "required_packages_version": {"type": "object"},
        "optional_packages_version": {"type": "object"},
        "eval_metrics": {"type": "object"},
        "references": {"type": "array", "items": {"type": "string"}},
        "supported_apps": {"type": "object"},
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                part: {"type": "object", "additionalProperties": {"anyOf": [_SCALAR, _TENSOR]}}
                for part in ("inputs", "outputs", "post_processed_outputs")
            },
        },
    },
}

# docs/readme_template.md's sections (all but the optional Citation Info) and the License section its bundles add.
README_SECTIONS = (
    "Authors",
    "Tags",
    "Model Description",
    "Data",
    "Preprocessing",
    "Performance",
    "Additional Usage Steps",
    "System Configuration",
    "Limitations",
    "References",
    "License",
)


def _meta(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))


def _config(bundle: Path, name: str) -> dict:
    return json.loads((bundle / "configs" / name).read_text(encoding="utf-8"))


def _bundle_files(bundle: Path) -> list[Path]:
    """Every file the bundle would submit (not the caches git ignores)."""
    ignored = {"__pycache__", "eval"}
    return sorted(p for p in bundle.rglob("*") if p.is_file() and not ignored & set(p.relative_to(bundle).parts))


def _python_files(bundle: Path) -> list[Path]:
    return [p for p in _bundle_files(bundle) if p.suffix == ".py"]


def _find_config(bundle: Path, stem: str) -> Path | None:
    found = [bundle / "configs" / f"{stem}.{suffix}" for suffix in ("json", "yaml", "yml")]
    found = [p for p in found if p.is_file()]
    return found[0] if found else None


# --- files ---------------------------------------------------------------------------------------------


@BUNDLE_PARAMS
def test_required_and_preferred_files(bundle):
    assert (bundle / "LICENSE").is_file()
    assert (bundle / "configs" / "metadata.json").is_file()
    assert _find_config(bundle, "inference") is not None, "the Zoo wants configs/inference.json (or .yaml)"
    weights_listed = any(bundle.glob("large_files.*"))
    assert (bundle / "models" / "model.pt").is_file() or weights_listed, "models/model.pt or large_files.yml"
    # what the Zoo's README template, its workflows (configs/logging.conf) and CONTRIBUTING.md ask for
    assert (bundle / "docs" / "README.md").is_file()
    assert (bundle / "configs" / "logging.conf").is_file()
    assert (bundle / "docs" / "data_license.txt").is_file(), "both bundles use third-party data with terms"


@BUNDLE_PARAMS
def test_logging_conf_configures_logging(bundle):
    import logging
    import logging.config

    conf = bundle / "configs" / "logging.conf"
    assert conf.is_file()
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        logging.config.fileConfig(conf, disable_existing_loggers=False)
        assert root.level == logging.INFO and root.handlers
    finally:
        for handler in root.handlers:
            if handler not in saved[1]:
                root.removeHandler(handler)
        root.setLevel(saved[0])


@BUNDLE_PARAMS
def test_no_file_over_the_zoo_limit(bundle):
    big = [(p.relative_to(bundle), p.stat().st_size) for p in _bundle_files(bundle)]
    big = [(name, size) for name, size in big if size > MAX_FILE_BYTES]
    assert big == [], "files over 25 MB must be listed in large_files.yml with a download link instead"


# --- metadata ------------------------------------------------------------------------------------------


@BUNDLE_PARAMS
def test_version_is_in_the_changelog_and_the_newest(bundle):
    meta = _meta(bundle)
    Version = packaging_version.Version
    versions = [Version(v) for v in meta["changelog"]]
    assert meta["version"] in meta["changelog"], "the Zoo wants the bundle's version in its changelog"
    assert Version(meta["version"]) == max(versions)
    assert versions == sorted(versions, reverse=True), "changelog newest first"


@BUNDLE_PARAMS
@pytest.mark.filterwarnings("ignore:No hash value provided")
def test_metadata_against_the_zoo_schema(bundle, tmp_path):
    pytest.importorskip("jsonschema")
    from monai.bundle import verify_metadata

    meta = _meta(bundle)
    assert meta["schema"].startswith("https://") and meta["schema"].endswith(".json")
    schemas = [tmp_path / "schema.json"]
    schemas[0].write_text(json.dumps(ZOO_METADATA_RULES))
    if os.environ.get("MONAI_ZOO_SCHEMA"):
        schemas.append(Path(os.environ["MONAI_ZOO_SCHEMA"]))
    for schema in schemas:  # as verify_bundle.py does it, with the schema file already in place
        verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    assert meta.get("name"), "the Zoo's model browser shows metadata 'name'"


def test_zoo_schema_rules_reject_what_the_zoo_rejects(tmp_path):
    pytest.importorskip("jsonschema")
    from monai.bundle import verify_metadata

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(ZOO_METADATA_RULES))
    meta = _meta(BUNDLES["phantom_volume_cluscam"])
    del meta["required_packages_version"]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="required_packages_version"):
        verify_metadata(meta_file=str(broken), filepath=str(schema))


def zoo_requirements(meta: dict) -> list[str]:
    """The requirement lines the Zoo's ci/get_bundle_requirements.py writes for ``meta`` (ALLOW_MONAI_RC on,
    as its premerge scripts set it)."""
    major, minor, patch = (list(map(int, meta["monai_version"].split("."))) + [0, 0])[:3]
    lines = [f"monai>={meta['monai_version']}rc1,<{major}.{minor}.{patch + 1}"]
    lines += [f"torch=={meta['pytorch_version']}", f"numpy=={meta['numpy_version']}"]
    for key in ("optional_packages_version", "required_packages_version"):
        lines += [f"{name}=={version}" for name, version in meta.get(key, {}).items()]
    return lines


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@BUNDLE_PARAMS
def test_pins_fit_monai_cluscam_and_python_3_10(bundle):
    """Offline: every pin is a valid requirement; pins of monai-cluscam's own dependencies satisfy its ranges
    (else pip cannot install both); monai-cluscam is pinned at this checkout's version; and every pinned
    distribution installed here at the pinned version declares support for the Zoo's Python."""
    Requirement = packaging_requirements.Requirement
    project = _project()
    ranges = {Requirement(spec).name.lower(): Requirement(spec).specifier for spec in project["dependencies"]}
    pins = {}
    for line in zoo_requirements(_meta(bundle)):
        req = Requirement(line)
        pins[req.name.lower()] = req
    assert str(pins["monai-cluscam"].specifier) == f"=={project['version']}"
    zoo_python = packaging_version.Version(ZOO_PYTHON)
    assert zoo_python in packaging_specifiers.SpecifierSet(project["requires-python"])
    for name, req in pins.items():
        pinned = next(iter(req.specifier)).version if name != "monai" else _meta(bundle)["monai_version"]
        if name in ranges:
            assert ranges[name].contains(pinned, prereleases=True), f"{name} {pinned} is outside {ranges[name]}"
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist.version.split("+")[0] == pinned and dist.metadata.get("Requires-Python"):
            supported = packaging_specifiers.SpecifierSet(dist.metadata["Requires-Python"])
            assert zoo_python in supported, f"{name}=={pinned} needs Python {supported}; the Zoo runs {ZOO_PYTHON}"


def _pins() -> list[tuple[str, str]]:
    seen = {}
    for bundle in BUNDLES.values():
        for line in zoo_requirements(_meta(bundle)):
            name = packaging_requirements.Requirement(line).name
            seen[line] = name
    return sorted((name, line) for line, name in seen.items())


@pytest.mark.skipif(os.environ.get("MONAI_CLUSCAM_ZOO_INDEX") != "1", reason="asks the package index")
@pytest.mark.parametrize(("name", "line"), _pins(), ids=[line for _, line in _pins()])
def test_pin_is_on_the_index_for_python_3_10(name, line):
    """``pip index versions`` for the Zoo's Python: the pinned release must be offered as a wheel."""
    command = [sys.executable, "-m", "pip", "index", "versions", name, "--pre", "--python-version", "3.10"]
    out = subprocess.run(command + ["--only-binary=:all:"], capture_output=True, text=True, timeout=300)
    if name == "monai-cluscam" and "No matching distribution" in out.stderr:
        pytest.xfail("monai-cluscam is not on PyPI yet: publish it before submitting the bundles to the Zoo")
    assert out.returncode == 0, out.stderr[-2000:]
    listed = re.search(r"Available versions: (.*)", out.stdout)
    offered = [v.strip() for v in listed.group(1).split(",")] if listed else re.findall(r"\((.+?)\)", out.stdout)[:1]
    req = packaging_requirements.Requirement(line)
    assert any(req.specifier.contains(v, prereleases=True) for v in offered), f"{line}: offered {offered[:10]}"


# --- config keys ---------------------------------------------------------------------------------------


def _check_section(config: dict, section: str, runner: str, runner_metric: str) -> list[str]:
    """CONTRIBUTING.md's rules for a ``train`` or ``validate`` section; the problems found."""
    part = config[section]
    problems = [f"{section}#{key} missing" for key in (runner, "dataset", "handlers") if key not in part]
    if problems:
        return problems
    if runner == "trainer" and "max_epochs" not in part["trainer"]:
        problems.append("train#trainer#max_epochs missing")
    if "data" not in part["dataset"]:
        problems.append(f"{section}#dataset#data missing")
    for holder, argument, key in (
        (runner, "postprocessing", "postprocessing"),
        ("dataset", "transform", "preprocessing"),
        (runner, "inferer", "inferer"),
        (runner, runner_metric, "key_metric"),
    ):
        if argument in part[holder] and key not in part:
            problems.append(f"{section}#{holder} uses {argument!r}: define {section}#{key}")
    return problems


def _validation_handler_problems(config: dict) -> list[str]:
    problems = []
    for handler in config.get("train", {}).get("handlers", []):
        if str(handler.get("_target_", "")).split(".")[-1] == "ValidationHandler":
            if handler.get("interval") != "@val_interval" or "val_interval" not in config:
                problems.append("ValidationHandler's interval must be '@val_interval', defined at the top level")
    return problems


@BUNDLE_PARAMS
def test_inference_config_keys(bundle):
    config = _config(bundle, "inference.json")
    missing = [k for k in ("bundle_root", "device", "network_def", "inferer", "output_dir") if k not in config]
    assert missing == []


@BUNDLE_PARAMS
def test_train_config_keys(bundle):
    config = _config(bundle, "train.json")
    problems = [f"{k} missing" for k in ("bundle_root", "device", "dataset_dir", "output_dir") if k not in config]
    if "train" in config:
        problems += _check_section(config, "train", "trainer", "key_train_metric")
    if "validate" in config:
        problems += _check_section(config, "validate", "evaluator", "key_val_metric")
    problems += _validation_handler_problems(config)
    assert problems == []


@BUNDLE_PARAMS
def test_dataset_dir_parses(bundle):
    for name in ("train.json", "inference.json"):
        assert isinstance(bundle_parser(bundle, name).get_parsed_content("dataset_dir"), str)


def test_key_rules_catch_a_missing_key():
    config = _config(BUNDLES["phantom_volume_cluscam"], "train.json")
    del config["validate"]["preprocessing"]
    config["train"]["handlers"][1]["interval"] = 1
    problems = _check_section(config, "validate", "evaluator", "key_val_metric") + _validation_handler_problems(config)
    assert len(problems) == 2 and "validate#preprocessing" in problems[0]


@BUNDLE_PARAMS
def test_configs_hold_no_personal_paths(bundle):
    for path in (bundle / "configs").glob("*.json"):
        assert not re.search(r"/home/|/Users/|[A-Z]:\\\\Users", path.read_text(encoding="utf-8")), path.name


# --- network: verify_net_in_out, ckpt_export ------------------------------------------------------------


@BUNDLE_PARAMS
def test_verify_net_in_out_as_the_zoo_calls_it(bundle):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
        device="cpu",
    )


@pytest.fixture(scope="module", params=list(BUNDLES), ids=list(BUNDLES))
def exported(request, tmp_path_factory) -> tuple[Path, Path]:
    """``(bundle, model.ts)``: the bundle's checkpoint exported by MONAI's ckpt_export, as the Zoo does it."""
    from monai.bundle import ckpt_export

    bundle = BUNDLES[request.param]
    target = tmp_path_factory.mktemp(request.param) / "verify_model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(target),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
    )
    return bundle, target


def _input(bundle: Path) -> torch.Tensor:
    image = _meta(bundle)["network_data_format"]["inputs"]["image"]
    torch.manual_seed(0)
    return torch.rand(1, image["num_channels"], *image["spatial_shape"])


def test_ckpt_export_gives_the_eager_networks_output(exported):
    from monai_cluscam.bundle import load_bundle

    bundle, target = exported
    scripted = torch.jit.load(str(target), map_location="cpu").eval()
    eager = load_bundle(bundle, device="cpu").network
    x = _input(bundle)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), rtol=1e-4, atol=1e-5)


# --- explaining a TorchScript export: refused, with what to use instead ----------------------------------


def test_explainer_refuses_the_export(exported):
    from monai_cluscam import ClusCAM

    bundle, target = exported
    scripted = torch.jit.load(str(target), map_location="cpu")
    layers = bundle_parser(bundle, "inference.json")["target_layers"]
    with pytest.raises(ValueError, match=r"TorchScript module \(ResNet\).*eager network.*models/model\.pt"):
        ClusCAM(scripted, target_layers=layers)


def _copy_bundle(bundle: Path, root: Path) -> Path:
    copy = root / bundle.name
    (copy / "models").mkdir(parents=True)
    (copy / "configs").mkdir()
    for path in (bundle / "configs").iterdir():
        (copy / "configs" / path.name).write_bytes(path.read_bytes())
    return copy


def test_a_torchscript_network_def_loads_but_only_output_methods_explain_it(exported, tmp_path):
    """``network_def`` of ``$torch.jit.load(...)``, the Zoo's recipe for running a model.ts: the bundle loads,
    ClusCAM refuses the network when it is built, and RISE, which reads only the output, explains it."""
    from monai_cluscam import ClusCAM
    from monai_cluscam.bundle import load_bundle
    from monai_cluscam.cam import RISE

    bundle, target = exported
    copy = _copy_bundle(bundle, tmp_path)
    (copy / "models" / "model.pt").symlink_to(bundle / "models" / "model.pt")
    config = _config(copy, "inference.json")
    config["network_def"] = f"$torch.jit.load({str(target)!r})"
    (copy / "configs" / "inference.json").write_text(json.dumps(config, indent=4) + "\n")
    loaded = load_bundle(copy, device="cpu")
    assert isinstance(loaded.network, torch.jit.ScriptModule)
    with pytest.raises(ValueError, match=r"TorchScript module.*'rise' and 'occlusion'"):
        ClusCAM(loaded.network, target_layers=loaded.target_layers)
    x = _input(bundle)
    saliency = RISE(loaded.network, num_masks=8, batch_size=8)(x)
    assert saliency.shape == (1, 1, *x.shape[2:]) and torch.isfinite(saliency).all()


def test_load_bundle_refuses_a_torchscript_archive_as_model_pt(exported, tmp_path):
    from monai_cluscam.bundle import load_bundle

    bundle, target = exported
    copy = _copy_bundle(bundle, tmp_path)
    (copy / "models" / "model.pt").symlink_to(target)
    with pytest.raises(ValueError, match=r"is a TorchScript archive.*network_def.*state_dict\(\)"):
        load_bundle(copy, device="cpu")


def test_bundle_run_with_the_export_stops_before_the_first_input(exported, tmp_path):
    """CONTRIBUTING.md's way to run a model.ts: CheckpointLoader off, ``network_def`` = ``torch.jit.load``.
    The ClusCAM handler refuses when the run starts, before any input is read or any file written."""
    import nibabel as nib
    import numpy as np

    bundle, target = exported
    if bundle.name == "alzheimer_mri_cluscam":
        image = next((bundle / "sample_data").glob("*.png"))
    else:
        image = tmp_path / "volume.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), image)
    parser = bundle_parser(bundle, "inference.json")
    parser["network_def"] = f"$torch.jit.load({str(target)!r})"
    parser["data"] = [{"image": str(image), "label": -1}]
    parser["output_dir"], parser["device"] = str(tmp_path / "out"), "$torch.device('cpu')"
    loader = next(i for i, h in enumerate(parser["handlers"]) if h["_target_"] == "CheckpointLoader")
    parser[f"handlers#{loader}#_disabled_"] = True
    evaluator = parser.get_parsed_content("evaluator")
    with pytest.raises(ValueError, match=r"TorchScript module.*eager network"):
        evaluator.run()
    assert not (tmp_path / "out" / "predictions.csv").exists()


# --- lint, as code-format-check.yml runs it ---------------------------------------------------------------


def _zoo_lint_settings(tmp_path: Path) -> Path:
    (tmp_path / "setup.cfg").write_text(ZOO_SETUP_CFG)
    (tmp_path / "pyproject.toml").write_text(ZOO_BLACK_TOML)
    return tmp_path


def _run_tool(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def _files_to_lint(bundle: Path) -> list[str]:
    files = [str(p) for p in _python_files(bundle)]
    if not files:
        pytest.skip(f"{bundle.name} has no Python files to lint")
    return files


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (the project's test extra installs it)")


@BUNDLE_PARAMS
def test_isort_at_the_zoo_settings(bundle, tmp_path):
    """isort with the Zoo's settings file; it sorts monai_cluscam and the bundle's scripts as third-party
    packages, as it does in the Zoo's repository (where neither is under the repository root)."""
    _require("isort")
    settings = _zoo_lint_settings(tmp_path)
    files = _files_to_lint(bundle)
    out = _run_tool(["isort", "--check-only", "--diff", "--settings-path", str(settings), *files])
    assert out.returncode == 0, out.stdout + out.stderr


@BUNDLE_PARAMS
def test_black_at_the_zoo_settings(bundle, tmp_path):
    _require("black")
    settings = _zoo_lint_settings(tmp_path) / "pyproject.toml"
    files = _files_to_lint(bundle)
    out = _run_tool(["black", "--config", str(settings), "--skip-magic-trailing-comma", "--check", "--diff", *files])
    assert out.returncode == 0, out.stdout + out.stderr


@BUNDLE_PARAMS
def test_flake8_at_the_zoo_settings(bundle, tmp_path):
    _require("flake8")
    for plugin in FLAKE8_PLUGINS:
        _require(plugin)
    settings = _zoo_lint_settings(tmp_path) / "setup.cfg"
    files = _files_to_lint(bundle)
    out = _run_tool(["flake8", "--config", str(settings), "--count", "--statistics", *files])
    assert out.returncode == 0, out.stdout + out.stderr


@BUNDLE_PARAMS
def test_scripts_parse_as_python_3_10(bundle):
    for path in _python_files(bundle):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))


def test_lint_catches_unsorted_imports(tmp_path):
    _require("isort")
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nimport os\n")
    out = _run_tool(["isort", "--check-only", "--settings-path", str(_zoo_lint_settings(tmp_path)), str(bad)])
    assert out.returncode != 0


# --- pre-commit hooks (.pre-commit-config.yaml) ------------------------------------------------------------

_BINARY = {".pt", ".ts", ".png", ".jpg", ".jpeg", ".nii", ".gz", ".dcm"}


def _docstring_not_first(source: str) -> bool:
    """check-docstring-first's rule: a string token at column 0 counts as a module docstring, and must come
    before any code and only once (so a string under a constant, an "attribute docstring", fails it)."""
    skip = {tokenize.COMMENT, tokenize.ENDMARKER, tokenize.NEWLINE, tokenize.NL, tokenize.ENCODING}
    docstring = code = False
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and token.start[1] == 0:
            if docstring or code:
                return True
            docstring = True
        elif token.type not in skip:
            code = True
    return False


@BUNDLE_PARAMS
def test_text_files_as_the_zoo_pre_commit_hooks_want(bundle):
    problems = []
    for path in _bundle_files(bundle):
        if path.suffix.lower() in _BINARY:
            continue
        raw = path.read_bytes()
        name = str(path.relative_to(bundle))
        if raw and (not raw.endswith(b"\n") or raw.endswith(b"\n\n")):
            problems.append(f"{name}: must end in exactly one newline")
        if b"\r" in raw:
            problems.append(f"{name}: CR line ends")
        if any(line != line.rstrip() for line in raw.decode("utf-8").split("\n")):
            problems.append(f"{name}: trailing whitespace")
        if path.suffix == ".json" and raw.decode("utf-8") != json.dumps(json.loads(raw), indent=4) + "\n":
            problems.append(f"{name}: not in json.dumps(indent=4) layout (pretty-format-json)")
        if os.access(path, os.X_OK) and not raw.startswith(b"#!"):
            problems.append(f"{name}: executable without a shebang")
        if path.suffix == ".py":
            if _docstring_not_first(raw.decode("utf-8")):
                problems.append(f"{name}: module docstring not first (check-docstring-first)")
    assert problems == []


# --- the model card ---------------------------------------------------------------------------------------


def _headings(text: str) -> list[str]:
    titles = []
    for line in text.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            title = match.group(1).replace("*", "").strip()
            titles.append(re.sub(r"\s*\(optional\)$", "", title, flags=re.IGNORECASE).lower())
    return titles


@BUNDLE_PARAMS
def test_readme_follows_the_zoo_template(bundle):
    text = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    meta = _meta(bundle)
    assert text.splitlines()[0] == f"# {meta['name']}", "title: the metadata's name"
    headings = _headings(text)
    missing = [s for s in README_SECTIONS if s.lower() not in headings]
    assert missing == []
    order = [headings.index(s.lower()) for s in README_SECTIONS]
    assert order == sorted(order), "sections in the template's order"
    # what the Zoo asks a README to say: the measured metrics of metadata.json, and TorchScript support
    for name, value in meta["eval_metrics"].items():
        assert f"{value:.3f}" in text, f"eval_metrics {name} = {value} is not in the README"
    assert "TorchScript" in text


def test_the_2d_model_card_keeps_its_results():
    text = (BUNDLES["alzheimer_mri_cluscam"] / "docs" / "README.md").read_text(encoding="utf-8")
    headings = _headings(text)
    for kept in ("explanations", "training", "evaluation", "test results"):
        assert kept in headings
    for measured in ("48 min 18 s", "| accuracy | **0.983** (944 / 960)", "0.039 against 1.636", "| 35 | 1.00 |"):
        assert measured in text
