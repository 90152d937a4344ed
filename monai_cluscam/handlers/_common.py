"""What the handlers share: the network to explain, per-sample values read from an engine whether MONAI
decollated its batch or not, and sample names for logs and files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor, decollate_batch
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["Engine", "Events", "check_flags", "engine_network", "per_sample", "sample_name", "split_batch"]


def check_flags(**flags: object) -> None:
    """Refuse a switch that is not a bool: a bundle override such as ``--overwrite false`` reaches the handler as
    the string ``'false'``, which Python would take as true.

    Example:
        >>> check_flags(overwrite=False, dicom=True)
        >>> check_flags(overwrite="false")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: overwrite must be True or False; got 'false' (with python -m monai.bundle run, write ...
    """
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(
                f"{name} must be True or False; got {value!r} (with python -m monai.bundle run, write --{name} False "
                f"or --{name} True)."
            )


def engine_network(engine: Engine, network: nn.Module | None = None, network_key: str | int | None = None) -> nn.Module:
    """The network a handler explains: ``network`` when given, else the engine's ``network``, else one of an
    ``EnsembleEvaluator``'s ``networks`` picked by ``network_key`` (its prediction key such as ``"pred_1"``, or
    its index).

    Raises:
        ValueError: no network can be found, or ``network_key`` does not name one (the message lists them).
    """
    if network is not None:
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module; got {type(network).__name__}.")
        return network
    single = getattr(engine, "network", None)
    if isinstance(single, nn.Module) and network_key is None:
        return single
    networks = getattr(engine, "networks", None)
    if not networks:
        raise ValueError(
            f"{type(engine).__name__} has no `network` to explain; pass network=<the classifier> "
            '(in a bundle config "network": "@network").'
        )
    keys = list(getattr(engine, "pred_keys", range(len(networks))))
    if network_key is None:
        if len(networks) == 1:
            return networks[0]
        raise ValueError(
            f"the engine holds {len(networks)} networks; choose one with network_key= one of {keys} "
            f"(or an index 0..{len(networks) - 1}), or pass network=..."
        )
    if isinstance(network_key, int) and not isinstance(network_key, bool) and 0 <= network_key < len(networks):
        return networks[network_key]
    if network_key in keys:
        return networks[keys.index(network_key)]
    raise ValueError(
        f"network_key {network_key!r} names none of the engine's networks; use one of {keys} "
        f"or an index 0..{len(networks) - 1}."
    )


def split_batch(value: Any) -> list:
    """Per-sample items of a batched value: a tensor (a ``MetaTensor`` with per-sample metadata) or a list."""
    if isinstance(value, torch.Tensor):
        return list(decollate_batch(value, detach=True)) if value.ndim > 0 else [value]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def per_sample(engine: Engine, key: str) -> list | None:
    """The values under ``key`` for each sample of the current iteration, or None when absent.

    Reads ``engine.state.output`` first, then ``engine.state.batch``; each is either a list of per-sample
    dicts (MONAI's ``decollate=True``, the default) or one dict of batched values (``decollate=False``),
    which is split here, with per-sample metadata for a batched ``MetaTensor``.
    """
    for source in (engine.state.output, engine.state.batch):
        if isinstance(source, list) and source and all(isinstance(s, Mapping) for s in source):
            if all(key in s for s in source):
                return [s[key] for s in source]
        elif isinstance(source, Mapping) and key in source:
            return split_batch(source[key])
    return None


def sample_name(image: Any) -> str | None:
    """The file a sample came from (``filename_or_obj`` of its metadata), or None."""
    if not isinstance(image, MetaTensor):
        return None
    source = image.meta.get("filename_or_obj")
    if isinstance(source, (list, tuple)):
        source = source[0] if len(source) == 1 else None
    if isinstance(source, (str, os.PathLike)) and str(source):
        return str(source)
    return None
