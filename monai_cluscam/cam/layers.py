"""Finding the layers a method explains from, and recording their outputs for one forward pass.

:func:`resolve_layers` turns the ``target_layers`` argument (a dotted name, a module, or a list of either) into
``(name, module)`` pairs; :class:`LayerCapture` hooks them for one pass and removes its hooks after;
:func:`tokens_to_grid` places a transformer's tokens on their patch grid.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["LayerCapture", "refuse_torchscript", "resolve_layer", "resolve_layers", "tokens_to_grid"]

LayerArg = str | nn.Module | Sequence[str | nn.Module]

TORCHSCRIPT_ADVICE = (
    "PyTorch cannot attach forward hooks to TorchScript modules ('register_forward_hook is not supported on "
    "ScriptModules'), and the explainers record the target layer with them. Explain the eager network instead: "
    "build it from the bundle's configs/inference.json 'network_def' and load the state dict models/model.pt "
    "(monai_cluscam.bundle.load_bundle(bundle_dir) and 'monai-cluscam explain --bundle DIR' do both). A TorchScript "
    "export (torch.jit.script or trace, MONAI's ckpt_export, a bundle's models/model.ts) still serves predictions, "
    "and the methods that read only the model's output, 'rise' and 'occlusion', explain it as it is."
)


def refuse_torchscript(model: nn.Module, *modules: nn.Module, what: str = "the model") -> None:
    """Raise when ``model`` or one of ``modules`` is a TorchScript module, which cannot be explained.

    Raises:
        ValueError: the message says why (no forward hooks on TorchScript) and what to use instead.

    Example:
        >>> scripted = torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 3)))
        >>> refuse_torchscript(scripted)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: the model is a TorchScript module (Sequential): PyTorch cannot attach forward hooks...
    """
    for item in (model, *modules):
        if isinstance(item, torch.jit.ScriptModule):
            kind = getattr(item, "original_name", type(item).__name__)
            where = what if item is model else "a target layer"
            raise ValueError(f"{where} is a TorchScript module ({kind}): {TORCHSCRIPT_ADVICE}")


def _one_layer(model: nn.Module, named: dict[str, nn.Module], layer: str | nn.Module) -> tuple[str, nn.Module]:
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise ValueError(
            f"the target layer module given ({type(layer).__name__}) is not a submodule of the model "
            f"({type(model).__name__}); give layers of the network being explained."
        )
    if not isinstance(layer, str):
        raise ValueError(f"target_layers must be a layer name or an nn.Module; got {type(layer).__name__}.")
    if layer in named and layer != "":
        return layer, named[layer]
    close = difflib.get_close_matches(layer, [n for n in named if n], n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(repr(c) for c in close)}." if close else ""
    top = ", ".join(repr(n) for n, _ in model.named_children())
    raise ValueError(f"target layer {layer!r} does not exist in {type(model).__name__}.{hint} Top-level layers: {top}.")


def resolve_layers(model: nn.Module, layers: LayerArg) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` of each target layer: one name or module, or a list of them (each once).

    Raises:
        ValueError: an empty list, a layer named twice, a name that does not exist (the message lists close
            matches), or a module of another network.

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> [name for name, _ in resolve_layers(net, ["layer2", net.layer4])]
        ['layer2', 'layer4']
    """
    items = list(layers) if isinstance(layers, Sequence) and not isinstance(layers, str) else [layers]
    if not items:
        raise ValueError("target_layers is empty; give a layer name (e.g. 'layer4') or a list of them.")
    named = dict(model.named_modules())
    found = [_one_layer(model, named, layer) for layer in items]
    names = [name for name, _ in found]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"target_layers names {repeated} more than once; give each layer once.")
    return found


def resolve_layer(model: nn.Module, layer: LayerArg) -> tuple[str, nn.Module]:
    """The one target layer of ``model``, by dotted name (as in ``model.named_modules()``) or by module.

    Raises:
        ValueError: as :func:`resolve_layers`, or more than one layer was given.

    Example:
        >>> from monai.networks.nets import resnet18
        >>> resolve_layer(resnet18(spatial_dims=2, n_input_channels=1, num_classes=2), "layer4")[0]
        'layer4'
    """
    found = resolve_layers(model, layer)
    if len(found) != 1:
        raise ValueError(f"give exactly one target layer; got {len(found)}: {[n for n, _ in found]!r}.")
    return found[0]


def tokens_to_grid(acts: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Turn a transformer layer's tokens ``(B, N, D)`` into a feature map ``(B, D, *grid)``.

    The patch grid is the one that tiles ``spatial_shape`` with cubic patches; the leading tokens
    that do not fit it (class or register tokens) are dropped. Feature maps ``(B, C, *spatial)``
    pass through unchanged.

    Example:
        >>> tokens_to_grid(torch.zeros(2, 1 + 16, 8), (32, 32)).shape
        torch.Size([2, 8, 4, 4])
    """
    dims = len(spatial_shape)
    if acts.ndim == dims + 2:
        return acts
    if acts.ndim == 3:
        b, n, d = acts.shape
        volume = math.prod(spatial_shape)
        for prefix in range(min(9, (n + 1) // 2)):  # a few leading class/register tokens, fewer than patches
            tokens = n - prefix
            patch = round((volume / tokens) ** (1.0 / dims))
            if patch >= 1 and all(s % patch == 0 for s in spatial_shape):
                grid = [s // patch for s in spatial_shape]
                if math.prod(grid) == tokens:
                    return acts[:, prefix:].transpose(1, 2).reshape(b, d, *grid)
        raise ValueError(
            f"cannot arrange {n} tokens on a patch grid of an input of size {tuple(spatial_shape)}; "
            "pass reshape_transform=callable(tokens) -> (B, D, *grid)."
        )
    raise ValueError(
        f"the target layer outputs shape {tuple(acts.shape)}; expected (B, C, *spatial) feature maps or "
        "(B, N, D) tokens. Choose another layer or pass reshape_transform."
    )


class LayerCapture:
    """Forward hooks that record the outputs of ``modules`` (the first item of a tuple output) for one pass;
    use it as a context manager, which removes the hooks on exit.

    The model continues with a copy, so in-place operations after a layer (``ReLU(inplace=True)``) cannot change
    the recorded activations, and no ``inplace`` flag needs to be touched.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True))
        >>> with LayerCapture([net[0]]) as capture:
        ...     _ = net(torch.randn(1, 1, 5, 5))
        >>> bool((capture.values[0] < 0).any())  # recorded before the in-place ReLU
        True
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        for module in modules:
            refuse_torchscript(module, what="a layer to record")
        self.values: list[torch.Tensor | None] = [None] * len(modules)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, index: int):
        def record(module: nn.Module, args: object, output: object) -> object:
            if isinstance(output, torch.Tensor):
                self.values[index] = output
                return output.clone()
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                self.values[index] = output[0]
                return type(output)([output[0].clone(), *output[1:]])
            raise ValueError(f"the target layer returned {type(output).__name__}; expected a tensor.")

        return record

    def __enter__(self) -> LayerCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
