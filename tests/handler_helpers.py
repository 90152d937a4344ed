"""Shared helpers for the handler and transform tests: tiny networks, images with metadata, synthetic brains."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

SIZE = 32


class TinyNet(nn.Module):
    """A small CNN for 2D or 3D inputs; ``features`` is the layer to explain (``width`` channels at half size)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        self.body = nn.Sequential(conv(in_channels, width, 3, padding=1), nn.ReLU(), pool(2))
        self.features = nn.Sequential(conv(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.body(x)).flatten(2).mean(-1))


def tiny_net(seed: int = 0, **kwargs: int) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kwargs).eval()


def meta_image(index: int, size: tuple[int, ...] = (SIZE, SIZE), seed: int = 0) -> MetaTensor:
    """A ``(1, *size)`` image with an anisotropic, shifted affine and a file name, as a loader gives it."""
    g = torch.Generator().manual_seed(seed * 1000 + index)
    affine = np.diag([0.9, 1.1, 2.0, 1.0])
    affine[:3, 3] = [index, -5.0, 3.0]
    meta = {
        "filename_or_obj": f"/data/scan_{index:02d}.nii.gz",
        "original_affine": affine.copy(),
        "spatial_shape": np.array(size),
    }
    return MetaTensor(torch.rand(1, *size, generator=g), affine=torch.as_tensor(affine), meta=meta)


def items(n: int, size: tuple[int, ...] = (SIZE, SIZE), num_classes: int = 3) -> list[dict]:
    """``n`` samples ``{"image", "label"}`` with metadata, labels cycling through the classes."""
    return [{"image": meta_image(i, size), "label": torch.tensor(i % num_classes)} for i in range(n)]


# --- synthetic brains for the audit --------------------------------------------------------------
_YY, _XX = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
#: an elliptic "brain" covering 56% of the image, clear of the top-left corner
BRAIN = (((_YY - 18) / 13) ** 2 + ((_XX - 16.5) / 14) ** 2) <= 1


def brains(n: int, shortcut: bool, seed: int, positives_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (n, 1, 32, 32), labels (n,))``: a brain of uninformative random texture on a dark background.

    Class 1 differs only by a bright 6x6 marker in the background's top-left corner when ``shortcut`` (a
    burnt-in label), else by a bright 5x5 lesion at a random place inside the brain. Classes alternate, or
    are all 1 with ``positives_only``.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.ones(n, dtype=torch.long) if positives_only else torch.arange(n) % 2
    texture = 0.4 + 0.4 * torch.rand(n, 1, SIZE, SIZE, generator=g)
    images = torch.where(BRAIN, texture, torch.zeros(())) + 0.05 * torch.rand(n, 1, SIZE, SIZE, generator=g)
    for i in torch.nonzero(labels).flatten().tolist():
        if shortcut:
            images[i, 0, 1:7, 1:7] = 1.0
        else:
            cy = int(torch.randint(13, 23, (1,), generator=g))
            cx = int(torch.randint(11, 22, (1,), generator=g))
            images[i, 0, cy - 2 : cy + 3, cx - 2 : cx + 3] = 1.2
    return images, labels


class BrainNet(nn.Module):
    """Two conv-BN-ReLU-pool blocks, a ``features`` layer (32 channels at 8x8), global max pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(block(1, 8), block(8, 16))
        self.features = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.body(x)).amax((2, 3)))
