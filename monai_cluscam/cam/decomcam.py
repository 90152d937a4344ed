"""DecomCAM: decompose the class-weighted activations by SVD into orthogonal sub-saliency maps and
integrate them by how well each, used as a mask, keeps the class score."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from monai_cluscam.cam.base import BaseCAM, CAMState
from monai_cluscam.cam.gradcam import GradCAM
from monai_cluscam.utils import blur, minmax_normalize

__all__ = ["DecomCAM"]


class DecomCAM(BaseCAM):
    """DecomCAM (Yang et al., 2024).

    Channel weights are Grad-CAM's; the ``top_channels`` highest-weighted channels, each scaled by
    its weight, form a (positions x channels) matrix whose centred truncated SVD gives
    ``num_components`` orthogonal sub-saliency maps (per-position component scores, clamped at 0).
    Each map, min-max normalised, keeps the input where it is high and a blurred input elsewhere;
    the class probability of each such input, divided by the largest, weighs the maps (weights
    below ``min_weight`` are dropped); the weighted sum is ReLU'd and min-max normalised.

    Args:
        nn_module, target_layers, reshape_transform, batch_size, progress: as
            :class:`~monai_cluscam.cam.base.BaseCAM`.
        top_channels: channels kept by Grad-CAM weight (``p``).
        num_components: sub-saliency maps (``n``), at most the rank of the matrix.
        min_weight: relative weights below this are dropped.
        blur_sigma: Gaussian sigma (voxels) of the blurred baseline; None uses 1/20 of the
            smallest spatial size (at least 1).

    Example:
        >>> import torch
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=4)
        >>> DecomCAM(net, target_layers="layer4")(torch.rand(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    needs_gradients = True

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: str | nn.Module | Sequence[str | nn.Module],
        top_channels: int = 500,
        num_components: int = 10,
        min_weight: float = 1e-3,
        blur_sigma: float | None = None,
        batch_size: int | None = None,
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        progress: bool = False,
        zero_unmaskable: bool | None = None,
    ) -> None:
        super().__init__(nn_module, target_layers, reshape_transform, batch_size, progress, zero_unmaskable)
        for name, value in (("top_channels", top_channels), ("num_components", num_components)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        if blur_sigma is not None and not blur_sigma > 0:
            raise ValueError(f"blur_sigma must be > 0 or None; got {blur_sigma!r}.")
        self.top_channels = top_channels
        self.num_components = num_components
        self.min_weight = min_weight
        self.blur_sigma = blur_sigma

    def maps(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        """The ``n`` orthogonal sub-saliency maps, min-max normalised: ``(B, n, *grid)``."""
        acts = state.activations
        b, c, *grid = acts.shape
        weights = GradCAM.channel_weights(acts, state.gradients)
        p = min(self.top_channels, c)
        top = weights.topk(p, dim=1).indices
        chosen = acts.flatten(2).gather(1, top[..., None].expand(b, p, acts[0, 0].numel()))
        matrix = (chosen * weights.gather(1, top)[..., None]).transpose(1, 2)  # (B, positions, p)
        matrix = matrix - matrix.mean(1, keepdim=True)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        n = min(self.num_components, s.shape[1])
        scores = u[:, :, :n] * s[:, None, :n]  # (B, positions, n)
        # An SVD component's sign is arbitrary: orient each so its channel loadings sum positive.
        sign = torch.where(vh[:, :n].sum(-1) < 0, -1.0, 1.0)
        maps = (scores * sign[:, None, :]).clamp_min(0).transpose(1, 2).reshape(b, n, *grid)
        return minmax_normalize(maps, start_dim=2)[0]

    def baseline(self, x: torch.Tensor) -> torch.Tensor:
        """The blurred input: where a map is low, the masked copy shows this."""
        return blur(x, self.blur_sigma or max(1.0, min(x.shape[2:]) / 20))

    def weigh(self, scores: torch.Tensor, state: CAMState) -> torch.Tensor:
        """Class probabilities relative to the largest; those below ``min_weight`` are dropped."""
        rel = scores / scores.amax(1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
        return torch.where(rel < self.min_weight, torch.zeros_like(rel), rel)
