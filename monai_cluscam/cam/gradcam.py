"""Grad-CAM and Grad-CAM++, batch-correct and without MONAI's map-inverting normaliser.

Each sample's gradient is taken for its own class (MONAI's ``GradCAM`` mixes classes across a
batch), and maps are ReLU'd and min-max normalised so that high means "important".
"""

from __future__ import annotations

import torch

from monai_cluscam.cam.base import BaseCAM, CAMState

__all__ = ["GradCAM", "GradCAMpp"]


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., 2017): channel weights are the spatial mean of the class score's
    gradient; the map is ``ReLU(sum_c w_c A_c)``, upsampled and min-max normalised.

    The model's parameters are not touched: gradients are taken with ``torch.autograd.grad``
    w.r.t. the activations only, so no ``.grad`` is left behind. Each sample's gradient is of its own
    class's logit (the summed score's gradient is each sample's own, as samples do not interact in eval
    mode); the maps are the channels, weighted by :meth:`channel_weights`.

    Example:
        >>> import torch
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=4)
        >>> GradCAM(net, target_layers="layer4")(torch.rand(2, 1, 32, 32), class_idx=[0, 3]).shape
        torch.Size([2, 1, 32, 32])
    """

    needs_gradients = True
    perturbs_input = False

    def weights(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        """The channel weights, from the activations and the class logit's gradient."""
        return self.channel_weights(state.activations, state.gradients)

    @staticmethod
    def channel_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` Grad-CAM weights: the spatial mean of the gradient of each channel."""
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
    def channel_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` Grad-CAM++ weights: positive gradients weighted by ``alpha``."""
        g = grads.flatten(2)
        g2, g3 = g**2, g**3
        total = acts.flatten(2).sum(-1, keepdim=True)
        denom = 2 * g2 + total * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        return (alpha * g.clamp_min(0)).sum(-1)
