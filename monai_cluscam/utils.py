"""Torch helpers shared by the attribution methods (:mod:`monai_cluscam.cam`), the metrics, the handlers
and the CLI, each written once: plain tensors out of MetaTensors, the model's device and input
dimensionality, class scores and classes, resizing, blurring, and the batched masked forward pass.

Nothing here knows about target layers or activations; that is :mod:`monai_cluscam.cam.base`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

__all__ = [
    "MaskProvider",
    "auto_batch_size",
    "blur",
    "class_scores",
    "eval_mode",
    "first_conv",
    "forward_logits",
    "interpolation_mode",
    "masked_forward",
    "minmax_normalize",
    "model_device",
    "plain_tensor",
    "resolve_classes",
    "spatial_dims_of",
    "upsample",
    "upsampled_masks",
]

#: ``masks(sample_idx, mask_idx) -> (n, 1 or C, *spatial)`` masks at input resolution for the given pairs.
MaskProvider = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Input elements per chunk of masked forward passes when ``batch_size`` is None (4 MiB of float32): on CPU,
#: larger batches of 3D volumes run slower per copy and cost memory; 2D slices still batch by dozens.
_AUTO_CHUNK_ELEMENTS = 2**20

_CPU = torch.device("cpu")

#: (Bi/tri)linear interpolation mode of ``F.interpolate`` by number of spatial dims.
_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}

#: Convolutions whose input dimensionality :func:`spatial_dims_of` reads (a 1D convolution is skipped).
_SPATIAL_CONVS = (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d)


def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` without MONAI metadata: a ``MetaTensor``'s plain tensor (same storage), any other tensor as it is.

    Example:
        >>> type(plain_tensor(MetaTensor(torch.zeros(2)))).__name__
        'Tensor'
    """
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def model_device(model: nn.Module, default: torch.device | None = _CPU) -> torch.device | None:
    """Device of the model's first parameter, or ``default`` (CPU unless given) when it has none.

    Example:
        >>> model_device(nn.Linear(2, 1)), model_device(nn.ReLU()), model_device(nn.ReLU(), default=None)
        (device(type='cpu'), device(type='cpu'), None)
    """
    param = next(model.parameters(), None)
    return param.device if param is not None else default


def first_conv(model: nn.Module, kinds: type | tuple[type, ...] = _SPATIAL_CONVS) -> nn.Module | None:
    """The model's first submodule (in ``model.modules()`` order) that is one of ``kinds``, or None.

    ``len(conv.kernel_size)`` is its number of spatial dims.

    Example:
        >>> net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Conv3d(4, 2, 3))
        >>> first_conv(net).in_channels, first_conv(net, (nn.Conv1d, nn.Conv3d)).in_channels
        (4, 1)
    """
    return next((m for m in model.modules() if isinstance(m, kinds)), None)


def spatial_dims_of(model: nn.Module) -> int | None:
    """Spatial dims of the model's first 2D or 3D (transposed) convolution, or None when it has none
    (e.g. a linear patch embedding).

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2)
        >>> spatial_dims_of(net), spatial_dims_of(nn.Linear(2, 1))
        (3, None)
    """
    conv = first_conv(model)
    return None if conv is None else len(conv.kernel_size)


def interpolation_mode(spatial_dims: int) -> str:
    """The ``F.interpolate`` mode for (bi/tri)linear resizing of maps with ``spatial_dims`` spatial axes.

    Example:
        >>> interpolation_mode(2), interpolation_mode(3)
        ('bilinear', 'trilinear')
    """
    return _LINEAR_MODES[spatial_dims]


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
    return F.interpolate(t, size=tuple(size), mode=interpolation_mode(len(size)), align_corners=False)


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


def class_scores(outputs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Each sample's score of its own class: ``outputs`` ``(B, num_classes)`` gives ``(B,)``, and the
    outputs of masked copies ``(B, K, num_classes)`` give ``(B, K)``.

    Example:
        >>> class_scores(torch.tensor([[0.25, 0.75], [0.5, 0.5]]), torch.tensor([1, 0])).tolist()
        [0.75, 0.5]
        >>> class_scores(torch.arange(12.0).view(2, 3, 2), torch.tensor([0, 1])).tolist()
        [[0.0, 2.0, 4.0], [7.0, 9.0, 11.0]]
    """
    index = classes.view(-1, *[1] * (outputs.ndim - 1)).expand(*outputs.shape[:-1], 1)
    return outputs.gather(-1, index)[..., 0]


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
