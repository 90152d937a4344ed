"""Brain masks of skull-stripped images, for the localisation metrics and the training audit."""

from __future__ import annotations

import torch
from monai.transforms import FillHoles

__all__ = ["FOREGROUND_THRESHOLD", "foreground_mask"]

FOREGROUND_THRESHOLD = 0.04
"""Grey value (of an image scaled to [0, 1]) above which a voxel of a skull-stripped scan counts as brain."""


def foreground_mask(image: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """The subject of a skull-stripped, channel-first image scaled to [0, 1]: voxels above ``threshold`` with
    enclosed holes (dark ventricles, sulci) filled, as a bool tensor of the image's shape on its device.

    Args:
        image: ``(C, *spatial)``, 2D or 3D, background near 0.
        threshold: grey value separating the subject from the background.

    Example:
        >>> image = torch.zeros(1, 16, 16)
        >>> image[:, 4:12, 4:12] = 0.5
        >>> image[:, 7:9, 7:9] = 0.0  # a dark ventricle inside the brain stays brain
        >>> int(foreground_mask(image).sum())
        64
    """
    image = torch.as_tensor(image)
    filled = FillHoles()((image > threshold).to(torch.uint8).cpu())
    return torch.as_tensor(filled).bool().to(image.device)
