"""ROAD (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022):
remove the most relevant voxels first and fill them by noisy linear imputation, so that the removal itself
leaves no shape for the classifier to read (a hole of zeros, as in deletion, is a pattern of its own).

The imputed value of a removed voxel is the weighted mean of its neighbours (weight 1/6 for a face neighbour,
1/12 for a diagonal one, as ROAD's imputer has), removed neighbours included, so removed regions are filled
smoothly from their rim; plus Gaussian noise. ROAD solves this linear system exactly with a sparse solver; here
it is solved iteratively (Jacobi sweeps from a normalised-convolution start), which reaches the same fill to
within a few grey values on 128 px slices and runs batched on any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from monai_cluscam.utils import blur, class_scores, eval_mode, forward_logits, plain_tensor, resolve_classes

__all__ = ["ROAD_FRACTIONS", "RoadCurve", "noisy_linear_imputation", "road_curve"]

#: shares of the voxels removed at each step of the curve
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class RoadCurve:
    """Result of :func:`road_curve`: ``auc`` ``(B,)`` (mean class probability over the fractions; low is faithful
    for the most-relevant-first order), ``curve`` ``(B, F)`` and the ``fractions`` removed."""

    auc: torch.Tensor
    curve: torch.Tensor
    fractions: torch.Tensor


def _neighbour_kernel(dims: int, channels: int, device: torch.device) -> torch.Tensor:
    offsets = torch.stack(torch.meshgrid(*[torch.arange(3)] * dims, indexing="ij"), -1).reshape(-1, dims) - 1
    kernel = torch.zeros([3] * dims)
    for off in offsets:
        order = int(off.abs().sum())
        if order == 1:
            kernel[tuple(off + 1)] = 1 / 6
        elif order > 1:
            kernel[tuple(off + 1)] = 1 / 12
    return kernel.expand(channels, 1, *kernel.shape).contiguous().to(device)


def noisy_linear_imputation(
    x: torch.Tensor, removed: torch.Tensor, noise: float = 0.01, iterations: int = 60, seed: int = 0
) -> torch.Tensor:
    """Fill the ``removed`` voxels of ``x`` by the weighted mean of their neighbours plus Gaussian noise.

    Args:
        x: ``(B, C, *spatial)`` images.
        removed: ``(B, 1, *spatial)`` bool, the voxels to fill.
        noise: standard deviation of the noise added to the filled voxels, in the image's units.
        iterations: Jacobi sweeps after a normalised-convolution start.
        seed: seed of the noise.

    Example:
        >>> x = torch.linspace(0, 1, 16).repeat(1, 1, 16, 1)  # a ramp along the columns
        >>> hole = torch.zeros(1, 1, 16, 16, dtype=torch.bool); hole[..., 6:10, 6:10] = True
        >>> filled = noisy_linear_imputation(x, hole, noise=0.0, iterations=200)
        >>> bool((filled - x).abs().max() < 0.02)  # the ramp continues through the hole
        True
    """
    dims = x.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    kernel = _neighbour_kernel(dims, x.shape[1], x.device)
    keep = (~removed).to(x.dtype)
    # start: the blurred image of the kept voxels, normalised by the blurred kept mask
    sigma = max(1.0, min(x.shape[2:]) / 16)
    start = blur(x * keep, sigma) / blur(keep, sigma).clamp_min(1e-6)
    value = torch.where(removed.expand_as(x), start, x)
    ones = torch.ones_like(x[:, :1]).expand_as(x)
    weight = conv(F.pad(ones, [1] * (2 * dims)), kernel, groups=x.shape[1])  # the neighbour weights inside the image
    for _ in range(iterations):
        mean = conv(F.pad(value, [1] * (2 * dims)), kernel, groups=x.shape[1]) / weight
        value = torch.where(removed.expand_as(x), mean, x)
    if noise > 0:
        g = torch.Generator(device="cpu").manual_seed(seed)
        value = value + removed.expand_as(x) * noise * torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    return value


def road_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    most_relevant_first: bool = True,
    noise: float = 0.01,
    seed: int = 0,
) -> RoadCurve:
    """ROAD: the class probability after removing each share of ``fractions`` of the voxels, in order of
    decreasing saliency (``most_relevant_first``, "MoRF": a low AUC is faithful) or increasing ("LeRF": a high one
    is), each removal filled by :func:`noisy_linear_imputation`. Ties in saliency go to the lower flat index.

    Args:
        model: the classifier.
        x: ``(B, C, *spatial)`` inputs.
        saliency: ``(B, 1, *spatial)`` maps (only their order counts).
        class_idx: None (predicted class on ``x``), an int, or one per sample.
        fractions: the shares removed, each in ``(0, 1)``.
        most_relevant_first: MoRF (default) or LeRF order.
        noise: the imputation's noise, in the image's units.
        seed: seed of the noise.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        >>> out = road_curve(net, torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), fractions=(0.25, 0.5))
        >>> out.curve.shape, out.auc.shape
        (torch.Size([2, 2]), torch.Size([2]))
    """
    x, sal = plain_tensor(x).float(), plain_tensor(saliency).float()
    if sal.shape[0] != x.shape[0] or tuple(sal.shape[2:]) != tuple(x.shape[2:]) or sal.shape[1] != 1:
        raise ValueError(f"road_curve: saliency {tuple(sal.shape)} does not fit x {tuple(x.shape)}; expected "
                         f"({x.shape[0]}, 1, *{tuple(x.shape[2:])}).")
    if not fractions or any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"road_curve: fractions must be shares in (0, 1); got {list(fractions)!r}.")
    b, n = x.shape[0], sal[0].numel()
    flat = sal.flatten(1)
    order = torch.argsort(-flat if most_relevant_first else flat, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=x.device).expand(b, n))
    probs = []
    with eval_mode(model), torch.inference_mode():
        classes = resolve_classes(forward_logits(model, x), class_idx)
        for i, fraction in enumerate(fractions):
            removed = (rank < int(round(fraction * n))).view_as(sal)
            filled = noisy_linear_imputation(x, removed, noise=noise, seed=seed + i)
            probs.append(class_scores(forward_logits(model, filled).float().softmax(-1), classes))
    curve = torch.stack(probs, 1)
    return RoadCurve(auc=curve.mean(1), curve=curve, fractions=torch.tensor(list(fractions)))
