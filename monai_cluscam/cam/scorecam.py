"""Score-CAM: every channel of the target layer is a mask; the exact, slow relative of ClusCAM."""

from __future__ import annotations

from monai_cluscam.cam.base import BaseCAM

__all__ = ["ScoreCAM"]


class ScoreCAM(BaseCAM):
    """Score-CAM (Wang et al., 2020): each channel map, upsampled and min-max normalised, masks the
    input; the class probability of each masked input weighs that channel; the map is
    ``ReLU(sum_c w_c A_c)`` min-max normalised. ``C + 1`` forward passes, chunked by ``batch_size``.

    Everything is :class:`~monai_cluscam.cam.base.BaseCAM`'s pipeline: the maps are the channels, scored
    as min-max normalised masks by class probability, and the scores are the weights.

    Args: as :class:`~monai_cluscam.cam.base.BaseCAM`.

    Example:
        >>> import torch
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=4)
        >>> ScoreCAM(net, target_layers="layer4")(torch.rand(1, 1, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    normalize_masks = True
