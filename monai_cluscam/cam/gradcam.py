"""Grad-CAM and Grad-CAM++, batch-correct and without MONAI's map-inverting normaliser.

Each sample's gradient is taken for its own class (MONAI's ``GradCAM`` mixes classes across a
batch), and maps are ReLU'd and min-max normalised so that high means "important".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_cluscam.cam.base import BaseCAM

__all__ = ["GradCAM", "GradCAMpp"]


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., 2017): channel weights are the spatial mean of the class score's
    gradient; the map is ``ReLU(sum_c w_c A_c)``, upsampled and min-max normalised.

    The model's parameters are not touched: gradients are taken with ``torch.autograd.grad``
    w.r.t. the activations only, so no ``.grad`` is left behind.

    Example:
        >>> import torch
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=4)
        >>> GradCAM(net, target_layers="layer4")(torch.rand(2, 1, 32, 32), class_idx=[0, 3]).shape
        torch.Size([2, 1, 32, 32])
    """

    def _explain(self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None) -> torch.Tensor:
        acts, grads, _ = self._activations_and_gradients(x, class_idx)
        weights = self._channel_weights(acts, grads)
        sal = (weights.view(*weights.shape, *[1] * (acts.ndim - 2)) * acts).sum(1, keepdim=True)
        return self._finish(sal, x.shape[2:])

    def _activations_and_gradients(
        self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Activations and d(logit of each sample's class)/d(activations), both ``(B, C, *grid)``, and the classes.

        The summed score's gradient is each sample's own gradient, because samples do not interact
        in eval mode.
        """
        with torch.enable_grad():
            inp = x.detach().requires_grad_(True)
            logits, raw = self._capture(inp)
            classes = self._classes(logits, class_idx)
            score = logits.gather(1, classes[:, None]).sum()
            (grad,) = torch.autograd.grad(score, raw)
        size = x.shape[2:]
        return self._to_grid(raw.detach(), size).float(), self._to_grid(grad, size).float(), classes

    @staticmethod
    def _channel_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.flatten(2).mean(-1)


class GradCAMpp(GradCAM):
    """Grad-CAM++ (Chattopadhay et al., 2018): channel weights are positive gradients weighted by
    the closed-form ``alpha = g^2 / (2 g^2 + sum(A) g^3)``.

    Example:
        >>> import torch
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=4)
        >>> GradCAMpp(net, target_layers="layer4")(torch.rand(1, 1, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    @staticmethod
    def _channel_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g = grads.flatten(2)
        g2, g3 = g**2, g**3
        total = acts.flatten(2).sum(-1, keepdim=True)
        denom = 2 * g2 + total * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        return (alpha * g.clamp_min(0)).sum(-1)
