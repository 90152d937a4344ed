"""RISE: random binary masks, upsampled with random shifts, weighted by the class probability of the masked input."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_cluscam.cam.base import CAMState, InputPerturbationCAM
from monai_cluscam.utils import auto_batch_size, interpolation_mode

__all__ = ["RISE"]


class RISE(InputPerturbationCAM):
    """RISE (Petsiuk et al., 2018): randomised input sampling for explanation.

    ``num_masks`` binary grids of ``grid_size`` cells per axis, each cell kept with probability ``keep_prob``,
    are upsampled (bi/trilinear) to ``(grid_size + 1)`` cells of ``ceil(size / grid_size)`` voxels and cropped at
    a random shift of less than one cell, so that the soft mask edges fall anywhere. The map is the mask average
    weighted by the class probability of each masked input, ``sum_i P_c(x * M_i) M_i / (N * keep_prob)``, then
    ReLU'd and min-max normalised like every map of this package.

    The masks are drawn from ``seed`` on the CPU (the same masks on every device and for every sample, so a
    batch equals its single calls) and are made one chunk at a time, for scoring and again for summing, so a 3D
    volume never holds all of them. ``num_masks + 1`` forward passes per input, scored through
    :func:`~monai_cluscam.utils.masked_forward`.

    Args:
        nn_module: the classifier.
        target_layers: ignored (RISE reads no layer); accepted for the common call shape.
        num_masks: ``N``, the number of random masks.
        grid_size: cells per spatial axis of the random grids (``s``).
        keep_prob: probability that a cell is kept (``p``), in ``(0, 1)``.
        seed: seed of the masks and shifts.
        batch_size: masked copies per forward pass; None picks about 4 MiB of input per pass.
        progress: show a progress bar over the masked forward passes.
        zero_unmaskable: no attribution where masking cannot change the input (zeros); None (default): on.

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3)
        >>> RISE(net, num_masks=50)(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: object = None,
        num_masks: int = 1000,
        grid_size: int = 8,
        keep_prob: float = 0.5,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
        zero_unmaskable: bool | None = None,
    ) -> None:
        super().__init__(nn_module, target_layers, batch_size, progress, zero_unmaskable)
        for name, value in (("num_masks", num_masks), ("grid_size", grid_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        if not 0.0 < keep_prob < 1.0:
            raise ValueError(f"keep_prob must be in (0, 1); got {keep_prob!r}.")
        self.num_masks = num_masks
        self.grid_size = grid_size
        self.keep_prob = keep_prob
        self.seed = seed

    def masks(self, size: Sequence[int]) -> _RandomMasks:
        """The random masks for inputs of spatial ``size``, made on demand (see :class:`_RandomMasks`)."""
        return _RandomMasks(self.num_masks, self.grid_size, self.keep_prob, self.seed, size)

    def maps(self, x: torch.Tensor, state: CAMState) -> _RandomMasks:
        """The random masks, shared by every sample and made one chunk at a time."""
        return self.masks(state.input_size)

    def combine(self, weights: torch.Tensor, maps: _RandomMasks) -> torch.Tensor:
        """``sum_i P_c(x * M_i) M_i / (N * keep_prob)``, summed one chunk of masks at a time."""
        b, n = weights.shape
        sal = torch.zeros(b, 1, *maps.size, device=weights.device)
        chunk = self.batch_size or max(1, auto_batch_size(sal) // max(1, b))
        for start in range(0, n, chunk):
            idx = torch.arange(start, min(n, start + chunk), device=weights.device)
            sal += torch.einsum("bn,n...->b...", weights[:, idx], maps(idx, weights.device))
        return sal / (n * self.keep_prob)


class _RandomMasks:
    """RISE's masks for one input size, drawn once (small grids and shifts) and upsampled on request.

    ``masks(idx, device)`` returns ``(len(idx), 1, *size)`` float32 masks in ``[0, 1]`` on ``device``.
    """

    def __init__(self, num_masks: int, grid_size: int, keep_prob: float, seed: int, size: Sequence[int]) -> None:
        dims = len(size)
        g = torch.Generator().manual_seed(int(seed))
        self.grids = (torch.rand(num_masks, 1, *[grid_size] * dims, generator=g) < keep_prob).float()
        self.cell = [math.ceil(s / grid_size) for s in size]
        self.shifts = torch.stack([torch.randint(0, c, (num_masks,), generator=g) for c in self.cell], 1)
        self.size = tuple(int(s) for s in size)
        self.mode = interpolation_mode(dims)

    def __len__(self) -> int:
        return self.grids.shape[0]

    def __call__(self, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        idx = idx.cpu()
        grids = self.grids[idx].to(device)
        big = [(g + 1) * c for g, c in zip(grids.shape[2:], self.cell, strict=True)]
        up = F.interpolate(grids, size=big, mode=self.mode, align_corners=False).clamp_(0, 1)
        out = torch.empty(len(idx), 1, *self.size, device=device)
        for i, shift in enumerate(self.shifts[idx].tolist()):
            window = tuple(slice(s, s + n) for s, n in zip(shift, self.size, strict=True))
            out[i] = up[(i, slice(None), *window)]
        return out
