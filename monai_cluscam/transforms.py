"""MONAI transforms that explain a classifier's prediction, for pipelines and bundle post-processing.

* :class:`ExplainClusCAM` (array transform): one channel-first image ``(C, *spatial)`` in, its map
  ``(1, *spatial)`` out, a ``MetaTensor`` carrying the image's metadata (affine included).
* :class:`ClusCAMd` (dictionary twin, also named :class:`ExplainClusCAMd`): reads ``keys``, writes
  the maps under ``output_keys``, for a bundle's ``postprocessing`` chain after decollation.

The names keep clear of the method class :class:`monai_cluscam.ClusCAM`: the transforms run ClusCAM by
default and any baseline by name (``method="gradcam"``, ...), through :func:`make_explainer`, which
the handlers in :mod:`monai_cluscam.handlers` share.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple
from torch import nn

from monai_cluscam.cam.base import BaseCAM
from monai_cluscam.cam.registry import METHODS, method_spec
from monai_cluscam.utils import plain_tensor

__all__ = [
    "METHODS",
    "ClusCAMd",
    "ExplainClusCAM",
    "ExplainClusCAMd",
    "class_index_of",
    "make_explainer",
    "method_info",
    "resolve_method",
    "wrap_like",
]

# METHODS (canonical name -> class) is the registry's own dict, re-exported: methods registered with
# monai_cluscam.cam.registry.register_method appear in it, and the transforms and handlers accept them.


def resolve_method(method: str, method_args: Mapping[str, object] | None = None) -> type[BaseCAM]:
    """The attribution class named ``method`` (a name or alias in the registry, :mod:`monai_cluscam.cam.registry`),
    after checking it takes every parameter in ``method_args``.

    Needs no network, so configuration errors surface when a transform or handler is built.

    Raises:
        ValueError: an unknown method (the message lists the valid ones) or a parameter the method does
            not take (the message lists those it does).

    Example:
        >>> resolve_method("GradCAM").__name__
        'GradCAM'
    """
    spec = method_spec(method)
    name, cls = spec.name, spec.cls
    fixed = ("self", "nn_module", "target_layers")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in fixed]
    unknown = sorted(set(method_args or {}) - set(accepted))
    if unknown:
        raise ValueError(
            f"method {name!r} does not take {', '.join(unknown)}; its parameters are {', '.join(accepted)}."
        )
    return cls


def make_explainer(
    network: nn.Module | None,
    method: str = "cluscam",
    target_layers: str | Sequence[str] = "layer4",
    **method_args: object,
) -> BaseCAM:
    """Build an attribution method from config-friendly values: a method name, a layer name and its parameters.

    Args:
        network: the classifier to explain.
        method: one of :data:`METHODS` (``"cluscam"``, ``"scorecam"``, ``"gradcam"``, ``"gradcampp"``,
            ``"decomcam"``, ``"rise"``, ``"occlusion"``, or a method added with
            :func:`~monai_cluscam.cam.registry.register_method`) or an alias, case-insensitive.
        target_layers: name of the layer to explain from, as in ``network.named_modules()``, or a list of them.
        method_args: the method's own parameters, e.g. ``num_clusters``, ``drop_ratio``, ``temperature``,
            ``cluster_resolution``, ``batch_size``, ``seed`` for ClusCAM.

    Raises:
        ValueError: an unknown method (the message lists the valid ones), no network, a parameter the
            method does not take (the message lists those it does), or an unknown layer.

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> type(make_explainer(net, "cluscam", "layer4", num_clusters=4)).__name__
        'ClusCAM'
    """
    cls = resolve_method(method, method_args)
    if network is None:
        raise ValueError(
            'no network to explain: pass network=<the classifier> (in a bundle config: "network": "@network").'
        )
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module; got {type(network).__name__}.")
    return cls(network, target_layers, **method_args)


#: The settings of an explainer that its DICOM Parametric Map records (those it has).
_RECORDED = ("num_clusters", "temperature", "drop_ratio", "cluster_resolution")


def method_info(method: str, explainer: BaseCAM) -> dict[str, object]:
    """The method's label, layer and settings, as :func:`~monai_cluscam.io.save_overlay` records them in DICOM.

    (The package version is recorded there too, as the algorithm's version.)

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> info = method_info("cluscam", make_explainer(net, "cluscam", "layer4", num_clusters=4))
        >>> info["method"], info["layer"], info["num_clusters"], info["cluster_resolution"]
        ('ClusCAM', 'layer4', 4, 'feature')
    """
    info: dict[str, object] = {"method": method_spec(method).label, "layer": explainer.layer_name}
    info.update({key: getattr(explainer, key) for key in _RECORDED if hasattr(explainer, key)})
    return info


def class_index_of(value: object) -> int:
    """The class a value designates: its argmax when it holds several scores (logits, probabilities,
    one-hot), the value itself when it holds one integral number (a label, or ``AsDiscrete(argmax=True)``).

    Example:
        >>> class_index_of(torch.tensor([0.1, 2.0, -1.0])), class_index_of(torch.tensor([3])), class_index_of(2)
        (1, 3, 2)
    """
    t = torch.as_tensor(value).detach()
    if t.numel() == 0:
        raise ValueError("cannot take a class from an empty value.")
    if t.numel() > 1:
        return int(t.flatten().argmax())
    v = float(t.flatten()[0])
    if not v.is_integer() or v < 0:
        raise ValueError(f"a single value {v!r} is not a class index; give the class index or one score per class.")
    return int(v)


def wrap_like(data: torch.Tensor, image: torch.Tensor) -> MetaTensor:
    """``data`` as a ``MetaTensor`` carrying ``image``'s metadata and applied operations (same grid)."""
    if isinstance(image, MetaTensor):
        return MetaTensor(data, meta=dict(image.meta), applied_operations=list(image.applied_operations))
    return MetaTensor(data)


def _check_sample(img: torch.Tensor, key: Hashable | None = None) -> torch.Tensor:
    where = f" under key {key!r}" if key is not None else ""
    if not isinstance(img, torch.Tensor):
        raise ValueError(f"the image{where} must be a torch.Tensor (C, *spatial); got {type(img).__name__}.")
    if img.ndim not in (3, 4):
        raise ValueError(
            f"the image{where} must be one channel-first sample (C, H, W) or (C, H, W, D), as after decollation; "
            f"got shape {tuple(img.shape)}."
        )
    return img


class ExplainClusCAM(Transform):
    """Explain one image with ClusCAM (or a baseline): ``(C, *spatial)`` in, ``(1, *spatial)`` map in
    ``[0, 1]`` out, a ``MetaTensor`` with the image's metadata so that it lands on the image's grid.

    Args:
        network: the classifier (in a bundle config ``"@network"``), on the image's device.
        method: ``"cluscam"`` (default) or another name in :data:`~monai_cluscam.transforms.METHODS`
            (``"scorecam"``, ``"gradcam"``, ``"gradcampp"``, ``"decomcam"``, ``"rise"``, ``"occlusion"``).
        target_layers: name of the layer to explain from (as in ``network.named_modules()``), or a list of them.
        method_args: the method's parameters (``num_clusters``, ``drop_ratio``, ``temperature``,
            ``cluster_resolution``, ``batch_size``, ``seed``, ...), checked against the method.

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> explain = ExplainClusCAM(net, target_layers="layer4", num_clusters=4)
        >>> explain(torch.rand(1, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    def __init__(
        self, network: nn.Module, method: str = "cluscam", target_layers: str | Sequence[str] = "layer4",
        **method_args: object,
    ) -> None:
        self.explainer = make_explainer(network, method, target_layers, **method_args)

    def __call__(self, img: torch.Tensor, class_idx: int | None = None) -> MetaTensor:
        """Explain ``img`` for ``class_idx`` (None: the network's predicted class)."""
        img = _check_sample(img)
        return wrap_like(self.explainer(plain_tensor(img)[None], class_idx)[0], img)


class ClusCAMd(MapTransform):
    """Dictionary twin of :class:`ExplainClusCAM`, for a bundle's ``postprocessing`` chain.

    Each image under ``keys`` (one channel-first sample, as after decollation) is explained; the map is
    written under the matching ``output_keys`` as a ``MetaTensor`` with the image's metadata. The class
    is, in order of precedence: ``class_idx`` when given; else the class held under ``class_key`` (argmax
    of a prediction, or a label index); else the network's own prediction.

    Args:
        keys: keys of the images to explain.
        network: the classifier (``"@network"``).
        method: ``"cluscam"`` (default) or a baseline, see :data:`METHODS`.
        target_layers: name of the layer to explain from, or a list of them.
        output_keys: where the maps go, one per key.
        class_key: key of the prediction (or label) giving the class; None explains the network's prediction.
        class_idx: a fixed class to explain for every sample.
        allow_missing_keys: skip absent keys instead of raising.
        method_args: the method's parameters (``num_clusters``, ``drop_ratio``, ...).

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> t = ClusCAMd("image", network=net, target_layers="layer4", class_key="pred", num_clusters=4)
        >>> out = t({"image": torch.rand(1, 32, 32), "pred": torch.tensor([0.2, 0.8])})
        >>> out["cam"].shape
        torch.Size([1, 32, 32])
    """

    def __init__(
        self,
        keys: KeysCollection,
        network: nn.Module,
        method: str = "cluscam",
        target_layers: str | Sequence[str] = "layer4",
        output_keys: KeysCollection = "cam",
        class_key: str | None = None,
        class_idx: int | None = None,
        allow_missing_keys: bool = False,
        **method_args: object,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = ensure_tuple(output_keys)
        if len(self.output_keys) != len(self.keys):
            raise ValueError(
                f"give one output key per image key: keys {list(self.keys)} but output_keys {list(self.output_keys)}."
            )
        if class_idx is not None and (not isinstance(class_idx, int) or class_idx < 0):
            raise ValueError(f"class_idx must be a non-negative int or None; got {class_idx!r}.")
        self.class_key = class_key
        self.class_idx = class_idx
        self.explain = ExplainClusCAM(network, method, target_layers, **method_args)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        class_idx = self.class_idx
        if class_idx is None and self.class_key is not None:
            if self.class_key not in d:
                raise KeyError(
                    f"class_key {self.class_key!r} is not in the data (keys: {list(d)}); set class_key=None to "
                    "explain the network's prediction."
                )
            class_idx = class_index_of(d[self.class_key])
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.explain(_check_sample(d[key], key), class_idx)
        return d


ExplainClusCAMd = ClusCAMd
