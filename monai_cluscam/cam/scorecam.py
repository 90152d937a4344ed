"""Score-CAM: every channel of the target layer is a mask; the exact, slow relative of ClusCAM."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_cluscam.cam.base import BaseCAM
from monai_cluscam.utils import masked_forward, upsampled_masks

__all__ = ["ScoreCAM"]


class ScoreCAM(BaseCAM):
    """Score-CAM (Wang et al., 2020): each channel map, upsampled and min-max normalised, masks the
    input; the class probability of each masked input weighs that channel; the map is
    ``ReLU(sum_c w_c A_c)`` min-max normalised. ``C + 1`` forward passes, chunked by ``batch_size``.

    Args: as :class:`~monai_cluscam.cam.base.BaseCAM`.

    Example:
        >>> import torch
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=4)
        >>> ScoreCAM(net, target_layers="layer4")(torch.rand(1, 1, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    def _explain(self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None) -> torch.Tensor:
        size = x.shape[2:]
        with torch.inference_mode():
            logits, raw = self._capture(x)
            classes = self._classes(logits, class_idx)
            acts = self._to_grid(raw, size).float()
        b, c = acts.shape[:2]
        outputs = masked_forward(
            self.nn_module,
            x,
            upsampled_masks(acts, size, normalize=True),
            num_masks=c,
            batch_size=self.batch_size,
            progress=self.progress,
        )
        weights = outputs.softmax(-1).gather(2, classes.view(b, 1, 1).expand(b, c, 1))[..., 0]
        sal = (weights.view(b, c, *[1] * (acts.ndim - 2)) * acts).sum(1, keepdim=True)
        return self._finish(sal, size)
