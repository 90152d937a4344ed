"""What every attribution method shares: layer lookup, activation hooks, token-to-grid reshaping,
input and class validation, the batched masked forward pass, and output wrapping.

The flow of every method is ``x -> forward with a hook on the target layer -> activations -> masks ->
masked_forward -> map``; a method file only says how masks are made and weighted.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

__all__ = [
    "BaseCAM",
    "MaskProvider",
    "auto_batch_size",
    "blur",
    "eval_mode",
    "forward_logits",
    "masked_forward",
    "minmax_normalize",
    "resolve_classes",
    "resolve_layer",
    "tokens_to_grid",
    "upsample",
    "upsampled_masks",
]

#: ``masks(sample_idx, mask_idx) -> (n, 1 or C, *spatial)`` masks at input resolution for the given pairs.
MaskProvider = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Input elements per chunk of masked forward passes when ``batch_size`` is None (4 MiB of float32): on CPU,
#: larger batches of 3D volumes run slower per copy and cost memory; 2D slices still batch by dozens.
_AUTO_CHUNK_ELEMENTS = 2**20


def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` and return its class scores ``(B, num_classes)``.

    Models whose forward returns a tuple or list (MONAI's ``ViT`` returns ``(logits, hidden_states)``)
    contribute their first element.
    """
    out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model must return class scores of shape (B, num_classes) (or a tuple whose first item is); "
            f"got {shape}. Wrap the model so that its forward returns logits."
        )
    return out


def resolve_layer(model: nn.Module, layer: str | nn.Module | Sequence[str | nn.Module]) -> tuple[str, nn.Module]:
    """Find the target layer of ``model`` by dotted name (as in ``model.named_modules()``) or by module.

    Raises:
        ValueError: the name does not exist (the message lists close matches), or more than one
            layer was given.

    Example:
        >>> from monai.networks.nets import resnet18
        >>> resolve_layer(resnet18(spatial_dims=2, n_input_channels=1, num_classes=2), "layer4")[0]
        'layer4'
    """
    if isinstance(layer, Sequence) and not isinstance(layer, str):
        if len(layer) != 1:
            raise ValueError(f"give exactly one target layer; got {len(layer)}: {list(layer)!r}.")
        layer = layer[0]
    named = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise ValueError("the target layer module given is not a submodule of the model.")
    if not isinstance(layer, str):
        raise ValueError(f"target_layers must be a layer name or an nn.Module; got {type(layer).__name__}.")
    if layer in named and layer != "":
        return layer, named[layer]
    close = difflib.get_close_matches(layer, [n for n in named if n], n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(repr(c) for c in close)}." if close else ""
    top = ", ".join(repr(n) for n, _ in model.named_children())
    raise ValueError(f"target layer {layer!r} does not exist in {type(model).__name__}.{hint} Top-level layers: {top}.")


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


def minmax_normalize(t: torch.Tensor, start_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalise each slice ``t[i, ...]`` flattened from ``start_dim``; constant slices are left as they are.

    Returns:
        The normalised tensor and a boolean tensor (shape ``t.shape[:start_dim]``) marking constant slices.
    """
    flat = t.flatten(start_dim)
    lo = flat.amin(-1, keepdim=True)
    hi = flat.amax(-1, keepdim=True)
    span = hi - lo
    constant = span[..., 0] <= 0
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), flat)
    return out.view_as(t), constant


def upsample(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(B, C, *spatial)`` maps to ``size`` with (bi/tri)linear interpolation, ``align_corners=False``."""
    if tuple(t.shape[2:]) == tuple(size):
        return t
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(t, size=tuple(size), mode=mode, align_corners=False)


def upsampled_masks(maps: torch.Tensor, size: Sequence[int], normalize: bool = False) -> MaskProvider:
    """A :data:`MaskProvider` over ``maps`` ``(B, K, *s)``: each requested map is upsampled to ``size``
    (and min-max normalised after upsampling when ``normalize``), one chunk at a time."""

    def provide(sample_idx: torch.Tensor, mask_idx: torch.Tensor) -> torch.Tensor:
        chunk = upsample(maps[sample_idx, mask_idx].unsqueeze(1).float(), size)
        return minmax_normalize(chunk)[0] if normalize else chunk

    return provide


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(B, C, *spatial)`` over its spatial axes (edge-replicating), for blurred baselines.

    Example:
        >>> blur(torch.ones(1, 1, 8, 8), sigma=2.0).allclose(torch.ones(1, 1, 8, 8))
        True
    """
    radius = max(1, int(math.ceil(3 * sigma)))
    grid = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    b, c, *spatial = x.shape
    dims = len(spatial)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    out = x.reshape(b * c, 1, *spatial)
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = kernel.numel()
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out.reshape(b, c, *spatial)


def auto_batch_size(x: torch.Tensor) -> int:
    """Masked copies per forward pass when the caller does not choose: about 4 MiB of input per chunk."""
    return max(1, _AUTO_CHUNK_ELEMENTS // max(1, x[0].numel()))


def masked_forward(
    model: nn.Module,
    x: torch.Tensor,
    masks: torch.Tensor | MaskProvider,
    num_masks: int | None = None,
    baseline: torch.Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Score many masked copies of each input in chunks: the one mechanism every perturbation method
    and perturbation metric in this package uses.

    The masked copy ``k`` of sample ``b`` is ``x[b] * m + baseline[b] * (1 - m)`` with
    ``m = masks(b, k)`` (so with no baseline, ``x[b] * m``). Runs under ``torch.inference_mode()``.

    Args:
        model: the classifier; its output (or the first item of a tuple output) is ``(B, num_classes)``.
        x: ``(B, C, *spatial)`` inputs.
        masks: ``(B, K, *s)`` maps, upsampled to ``spatial`` one chunk at a time, or a
            :data:`MaskProvider` returning masks at input resolution for the requested pairs.
        num_masks: ``K``; required when ``masks`` is a provider.
        baseline: what masked-out voxels become, broadcastable to ``x``; zeros when None.
        batch_size: masked copies per forward pass; when None, about 4 MiB of input per pass.
        progress: show a progress bar over the chunks.

    Returns:
        ``(B, K, num_classes)`` model outputs, float32, on ``x.device``.

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3).eval()
        >>> masked_forward(net, torch.rand(2, 1, 32, 32), torch.rand(2, 5, 4, 4)).shape
        torch.Size([2, 5, 3])
    """
    b = x.shape[0]
    spatial = x.shape[2:]
    if isinstance(masks, torch.Tensor):
        num_masks = masks.shape[1]
        masks = upsampled_masks(masks, spatial)
    elif num_masks is None:
        raise ValueError("num_masks is required when masks is a callable.")
    if baseline is not None:
        baseline = baseline.expand_as(x)
    chunk = batch_size or auto_batch_size(x)
    total = b * num_masks
    pairs = torch.arange(total, device=x.device)
    outputs = []
    starts = range(0, total, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="masked forward passes", unit="chunk", leave=False)
    with torch.inference_mode():
        for start in starts:
            idx = pairs[start : start + chunk]
            s_idx, m_idx = idx // num_masks, idx % num_masks
            m = masks(s_idx, m_idx).to(x.dtype)
            xs = x[s_idx]
            inputs = xs * m if baseline is None else xs * m + baseline[s_idx] * (1 - m)
            outputs.append(forward_logits(model, inputs).float())
    return torch.cat(outputs).view(b, num_masks, -1)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the call and restore each one's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def resolve_classes(
    logits: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None
) -> torch.Tensor:
    """The class explained for each sample: ``class_idx`` as given (None: each sample's argmax of ``logits``).

    Raises:
        ValueError: not one class per sample, or a class outside ``0..num_classes-1``.

    Example:
        >>> resolve_classes(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), None).tolist()
        [1, 0]
    """
    b, n = logits.shape
    if class_idx is None:
        return logits.argmax(1)
    if isinstance(class_idx, torch.Tensor):
        classes = class_idx.detach().flatten().long().to(logits.device)
    elif isinstance(class_idx, int):
        classes = torch.full((b,), class_idx, dtype=torch.long, device=logits.device)
    elif isinstance(class_idx, Sequence) and not isinstance(class_idx, str):
        classes = torch.tensor([int(c) for c in class_idx], dtype=torch.long, device=logits.device)
    else:
        raise ValueError(f"class_idx must be None, an int or one int per sample; got {class_idx!r}.")
    if classes.numel() == 1 and b > 1:
        classes = classes.expand(b)
    if classes.numel() != b:
        raise ValueError(f"class_idx has {classes.numel()} entries for a batch of {b}; give one per sample.")
    if bool(((classes < 0) | (classes >= n)).any()):
        raise ValueError(f"class_idx {classes.tolist()} out of range: the model has {n} classes (0..{n - 1}).")
    return classes


class _Capture:
    """Forward hook that records the target layer's output (the first item of a tuple output).

    The model continues with a copy, so in-place operations after the layer (``ReLU(inplace=True)``)
    cannot change the recorded activations, and no ``inplace`` flag needs to be touched.
    """

    def __init__(self, module: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: object, output: object) -> object:
        if isinstance(output, torch.Tensor):
            self.value = output
            return output.clone()
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            self.value = output[0]
            return type(output)([output[0].clone(), *output[1:]])
        raise ValueError(f"the target layer returned {type(output).__name__}; expected a tensor.")

    def remove(self) -> None:
        self._handle.remove()


class BaseCAM:
    """Base class of the attribution methods: owns the model, the target layer, validation and the
    output contract; a subclass implements :meth:`_explain`.

    Contract of ``cam(x, class_idx)``: ``x`` is ``(B, C, H, W)`` or ``(B, C, H, W, D)``, finite and
    floating point, on the model's device; the result is ``(B, 1, *spatial)`` in ``[0, 1]`` on
    ``x.device`` with ``x.dtype``, a ``MetaTensor`` carrying ``x``'s metadata when ``x`` is one.
    The model is left as found: train/eval flags restored, hooks removed, parameters untouched.

    Args:
        nn_module: the classifier.
        target_layers: name of the layer whose activations are used (as in ``named_modules()``),
            or the module itself.
        reshape_transform: turns the layer's output into ``(B, C, *grid)`` for unusual layouts;
            by default tokens ``(B, N, D)`` are placed on the patch grid, leading extra tokens dropped.
        batch_size: masked copies per forward pass (perturbation methods); None picks a chunk of
            about 4 MiB of input.
        progress: show a progress bar over the masked forward passes.

    After a call, ``logits_`` holds the model's ``(B, num_classes)`` output for ``x`` from the
    explanation's own forward pass, so a caller that also wants the prediction needs no extra pass.
    """

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: str | nn.Module | Sequence[str | nn.Module],
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        if not isinstance(nn_module, nn.Module):
            raise ValueError(f"nn_module must be a torch.nn.Module; got {type(nn_module).__name__}.")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}.")
        self.nn_module = nn_module
        self.layer_name, self.layer = resolve_layer(nn_module, target_layers)
        self.reshape_transform = reshape_transform
        self.batch_size = batch_size
        self.progress = progress
        self.logits_: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Explain ``x`` for ``class_idx``: None (each sample's predicted class), an int, or one per sample."""
        data = self._check_input(x)
        with eval_mode(self.nn_module):
            maps = self._explain(data, class_idx)
        return self._wrap(maps.to(dtype=data.dtype), x)

    def _explain(self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    # --- shared steps -------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor (B, C, *spatial); got {type(x).__name__}.")
        data = x.as_tensor() if isinstance(x, MetaTensor) else x
        if data.ndim not in (4, 5):
            hint = " Add a batch dimension with x[None]." if data.ndim in (3,) else ""
            raise ValueError(
                f"x must be (B, C, H, W) for 2D or (B, C, H, W, D) for 3D; got shape {tuple(data.shape)}.{hint}"
            )
        if not data.is_floating_point():
            raise ValueError(f"x must be floating point; got {data.dtype}. Convert it with x.float().")
        expected = _model_spatial_dims(self.nn_module)
        if expected is not None and expected != data.ndim - 2:
            raise ValueError(
                f"the model takes {expected}D inputs but x has {data.ndim - 2} spatial dims "
                f"(shape {tuple(data.shape)})."
            )
        finite = torch.isfinite(data.flatten(1)).all(1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            raise ValueError(f"x contains NaN or Inf in sample(s) {bad}; clean or drop them before explaining.")
        flat = data.flatten(1)
        constant = (flat.amax(1) == flat.amin(1)).nonzero().flatten().tolist()
        if constant:
            warnings.warn(
                f"{type(self).__name__}: sample(s) {constant} of x are constant images; an explanation of a "
                "blank input carries no information about the anatomy. Check the loading and preprocessing.",
                stacklevel=3,
            )
        param = next(self.nn_module.parameters(), None)
        if param is not None and param.device != data.device:
            raise ValueError(
                f"the model is on {param.device} but x is on {data.device}; move them to the same device."
            )
        return data

    def _capture(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass of ``x`` recording the target layer: ``(logits, raw activations)``.

        Gradients flow when the caller enables them (Grad-CAM); perturbation methods call it under
        ``torch.inference_mode()``.
        """
        capture = _Capture(self.layer)
        try:
            logits = forward_logits(self.nn_module, x)
        finally:
            capture.remove()
        if capture.value is None:
            raise ValueError(f"target layer {self.layer_name!r} was not run by the model's forward pass.")
        return logits, capture.value

    def _classes(self, logits: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None) -> torch.Tensor:
        """Record the explanation's own forward pass output as ``logits_`` and resolve the classes."""
        self.logits_ = logits.detach()
        return resolve_classes(logits, class_idx)

    def _to_grid(self, acts: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
        if self.reshape_transform is not None:
            grid = self.reshape_transform(acts)
            if grid.ndim != len(spatial) + 2:
                raise ValueError(
                    f"reshape_transform returned shape {tuple(grid.shape)}; expected (B, C, *grid) "
                    f"with {len(spatial)} spatial dims."
                )
            return grid
        return tokens_to_grid(acts, spatial)

    def _finish(self, sal: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """ReLU, upsample ``(B, 1, *grid)`` to ``size`` and min-max each map; a flat map becomes zeros."""
        sal = upsample(F.relu(sal.float()), size)
        sal, constant = minmax_normalize(sal)
        if bool(constant.any()):
            idx = torch.nonzero(constant).flatten().tolist()
            warnings.warn(
                f"{type(self).__name__}: the map of sample(s) {idx} is constant (the activations of "
                f"{self.layer_name!r} or the scores do not vary); returning an all-zero map for them. "
                "Check the input is not blank, or try another target layer.",
                stacklevel=4,
            )
            sal = torch.where(constant.view(-1, *[1] * (sal.ndim - 1)), torch.zeros_like(sal), sal)
        return sal

    @staticmethod
    def _wrap(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, MetaTensor):
            return maps
        out = MetaTensor(maps, meta=x.meta, applied_operations=x.applied_operations)
        out.is_batch = x.is_batch
        return out


def _model_spatial_dims(model: nn.Module) -> int | None:
    """Spatial dims of the model's first convolution, or None when it has none (e.g. a linear patch embedding)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            return 2
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            return 3
    return None
