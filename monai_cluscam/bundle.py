"""Load a classifier bundle for explanation: its network with trained weights, its preprocessing, its
class names and the layer ClusCAM explains from.

A bundle here is a MONAI bundle folder whose ``configs/inference.json`` defines ``network_def`` and
``preprocessing`` (a dictionary transform that turns ``{"image": path}`` into a channel-first image),
and optionally ``target_layers``, ``num_clusters`` and ``class_names``; ``configs/metadata.json`` names the classes in
``network_data_format.outputs.pred.channel_def`` when ``class_names`` is absent; the weights are the
state dict in ``models/model.pt``, loaded with ``torch.load(weights_only=True)``.

A TorchScript export of a bundle (``models/model.ts`` from MONAI's ``ckpt_export``, loaded by a ``network_def``
of ``$torch.jit.load(...)``) can be explained only by the methods that read the model's output alone (``rise``,
``occlusion``): the others record the target layers with forward hooks, which TorchScript modules do not take,
and refuse such a network when they are built, naming the eager network and the state dict to use instead.
A TorchScript archive in place of the state dict ``models/model.pt`` is refused here.

Bundle configs execute code (``$`` expressions, ``_target_`` imports): load bundles from trusted
sources only.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from torch import nn

from monai_cluscam.cam.base import foreground_threshold

__all__ = ["BundleModel", "load_bundle"]


@dataclass
class BundleModel:
    """What :func:`load_bundle` returns.

    Attributes:
        network: the classifier in eval mode, on ``device``.
        preprocessing: ``{"image": path} -> {"image": MetaTensor (C, *spatial), ...}``.
        target_layers: the layer the bundle explains from, or its list of layers (each explained on its own, the
            maps fused; see :class:`~monai_cluscam.cam.BaseCAM`).
        class_names: one name per network output.
        device: where the network lives.
        root: the bundle folder.
        num_clusters: the bundle's ClusCAM ``K`` (its config's ``num_clusters``, checked by
            :class:`~monai_cluscam.ClusCAM`); None: the package default.
        baseline: what the bundle's ClusCAM masks out to (its config's ``baseline``: ``"zero"``, ``"blur"`` or
            ``"mean"``); None: the package default (zeros, as published).
        foreground: whether the bundle's maps are restricted to the subject (its config's ``foreground``: a bool
            or a grey value, see :meth:`monai_cluscam.cam.BaseCAM.__call__`); False by default.
    """

    network: nn.Module
    preprocessing: Callable[[dict], dict]
    target_layers: str | list[str]
    class_names: list[str]
    device: torch.device
    root: Path
    num_clusters: int | None = None
    baseline: str | None = None
    foreground: bool | float = False


def load_bundle(bundle_dir: str | os.PathLike, device: str | torch.device | None = None) -> BundleModel:
    """Read a bundle folder into a :class:`BundleModel`.

    Args:
        bundle_dir: the bundle folder (holding ``configs/`` and ``models/``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when available.

    Raises:
        FileNotFoundError: the folder, ``configs/inference.json`` or ``models/model.pt`` is missing.
        ValueError: the config lacks ``network_def`` or ``preprocessing``, the classes cannot be named,
            the weights file is damaged or holds more than tensors (``weights_only=True`` refuses it),
            the weights do not fit the network, or the weights file is a TorchScript archive (the message
            names what to put there instead).

    Example:
        >>> bundle = load_bundle("bundles/alzheimer_mri_cluscam", device="cpu")  # doctest: +SKIP
        >>> bundle.class_names  # doctest: +SKIP
        ['Mild_Demented', 'Moderate_Demented', 'Non_Demented', 'Very_Mild_Demented']
    """
    root = Path(bundle_dir).expanduser().resolve()
    config = root / "configs" / "inference.json"
    weights = root / "models" / "model.pt"
    for required in (root, config, weights):
        if not required.exists():
            raise FileNotFoundError(
                f"{required} does not exist; a bundle folder holds configs/inference.json and models/model.pt."
            )
    device = torch.device(device) if device is not None else _default_device()
    parser = ConfigParser()
    parser.read_config(str(config))
    metadata = root / "configs" / "metadata.json"
    if metadata.exists():
        parser.read_meta(str(metadata))
    parser["bundle_root"] = str(root)
    for key in ("network_def", "preprocessing"):
        if key not in parser:
            raise ValueError(f"{config} defines no {key!r}; the explainer needs the network and its preprocessing.")

    network = parser.get_parsed_content("network_def")
    if _is_torchscript_archive(weights):
        raise ValueError(
            f"{weights} is a TorchScript archive (torch.jit.save, MONAI's ckpt_export), not a state dict: the "
            f"eager network of 'network_def' in {config} is what the explainers need (they record its layers with "
            "forward hooks, which TorchScript modules do not take), and models/model.pt holds its weights. Put the "
            "network's state_dict() there (torch.save(network.state_dict(), path)) and keep the export elsewhere "
            "(models/model.ts) for predictions."
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
        if not refused:
            raise ValueError(f"{weights} is not a readable torch weights file ({err}); replace it.") from err
        raise ValueError(
            f"{weights} holds more than tensors: loading it would run code ({refused[0]}). Weights are loaded with "
            "torch.load(weights_only=True), which refuses that; save the model's state_dict() instead."
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise ValueError(f"{weights} is not a readable torch weights file ({err}); replace it.") from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{weights} does not fit the network defined in {config}: {err}") from err
    network = network.to(device).eval()

    class_names = parser.get("class_names") if "class_names" in parser else _channel_def(parser)
    if not class_names:
        raise ValueError(
            f"cannot name the classes: define 'class_names' in {config} or "
            "network_data_format.outputs.pred.channel_def in configs/metadata.json."
        )
    num_clusters = parser.get_parsed_content("num_clusters") if "num_clusters" in parser else None
    return BundleModel(
        network=network,
        preprocessing=parser.get_parsed_content("preprocessing"),
        target_layers=parser.get("target_layers", "layer4"),
        class_names=[str(c) for c in class_names],
        device=device,
        root=root,
        num_clusters=num_clusters,
        baseline=parser.get_parsed_content("baseline") if "baseline" in parser else None,
        foreground=_foreground(parser, config),
    )


def _is_torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a zip archive written by ``torch.jit.save`` (it holds TorchScript code; a file of
    ``torch.save`` holds only pickled data and tensors)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(name.endswith("constants.pkl") or "/code/" in name for name in names)


def _foreground(parser: ConfigParser, config: Path) -> bool | float:
    """The config's ``foreground`` setting, checked (False when absent)."""
    value = parser.get_parsed_content("foreground") if "foreground" in parser else False
    try:
        foreground_threshold(value)
    except ValueError as err:
        raise ValueError(f"{config}: {err}") from err
    return value


def _channel_def(parser: ConfigParser) -> list[str] | None:
    try:
        channels = parser["_meta_"]["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError):
        return None
    return [channels[k] for k in sorted(channels, key=int)]


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
