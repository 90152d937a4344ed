"""Occlusion sensitivity through MONAI's ``OcclusionSensitivity``, as a map of this package: high where hiding
the region lowers the class score most."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.visualize import OcclusionSensitivity
from torch import nn

from monai_cluscam.cam.base import CAMState, InputPerturbationCAM
from monai_cluscam.utils import auto_batch_size, forward_logits

__all__ = ["Occlusion"]

_SCORES = ("probability", "logit")
_MODES = ("gaussian", "mean_patch", "mean_img")


class _Scores(nn.Module):
    """The model's class scores (first item of a tuple output), so MONAI's inferer sees a plain ``(B, N)`` tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_logits(self.model, x)


class Occlusion(InputPerturbationCAM):
    """Occlusion sensitivity (Zeiler and Fergus, 2014) computed by MONAI's
    :class:`monai.visualize.OcclusionSensitivity`, turned into a map of this package.

    A box of ``mask_size`` voxels slides over the input with ``overlap``; each occluded copy is scored, and
    MONAI blends the scores of the boxes covering each voxel. The map is the drop of the class score caused by
    occluding around each voxel, ``score_c(x) - score_c(x occluded there)``, ReLU'd and min-max normalised like
    every map of this package (MONAI's own output is the occluded score, low where the region matters).

    Two corrections to calling MONAI directly: its ``activate=True`` picks sigmoid or softmax by the *input's*
    channel count, so a one-channel MRI gets a sigmoid of multi-class logits; here the score is an explicit
    softmax probability (``score="probability"``) or the raw logit (``score="logit"``). And MONAI takes one
    sample per call: a batch is explained sample by sample, each for its own class, so a batch equals its
    single calls.

    Args:
        nn_module: the classifier.
        target_layers: ignored (occlusion reads no layer); accepted for the common call shape.
        mask_size: side of the occluding box in voxels, one value or one per spatial axis (clipped to the input).
        overlap: overlap of neighbouring boxes, in ``[0, 1)``; the stride is ``mask_size * (1 - overlap)``.
        mode: what the box does (MONAI's ``mode``): ``"gaussian"`` multiplies by one minus a Gaussian bump,
            ``"mean_patch"`` / ``"mean_img"`` replace it with the box's or the image's mean, a float with that value.
        score: ``"probability"`` (softmax of the class) or ``"logit"``.
        batch_size: occluded copies per forward pass; None picks about 4 MiB of input per pass.
        progress: show MONAI's progress bar.
        zero_unmaskable: no attribution where occluding cannot change the input (where it equals what the box
            puts there: zeros for ``"gaussian"``, the image's mean, the float); None (default): on. ``"mean_patch"``
            puts a different value in each box, so no voxel counts as unmaskable.

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3)
        >>> Occlusion(net, mask_size=8)(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: object = None,
        mask_size: int | Sequence[int] = 16,
        overlap: float = 0.5,
        mode: str | float = "gaussian",
        score: str = "probability",
        batch_size: int | None = None,
        progress: bool = False,
        zero_unmaskable: bool | None = None,
    ) -> None:
        super().__init__(nn_module, target_layers, batch_size, progress, zero_unmaskable)
        sizes = [mask_size] if isinstance(mask_size, int) else list(mask_size)
        if not sizes or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in sizes):
            raise ValueError(f"mask_size must be a positive int or one per spatial axis; got {mask_size!r}.")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1); got {overlap!r}.")
        if not isinstance(mode, float) and mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES} or a float; got {mode!r}.")
        if score not in _SCORES:
            raise ValueError(f"score must be one of {_SCORES}; got {score!r}.")
        self.mask_size = mask_size
        self.overlap = overlap
        self.mode = mode
        self.score = score

    def baseline(self, x: torch.Tensor) -> torch.Tensor | None:
        """What an occluding box puts in place of the input (``"mean_patch"``: the box's own mean, not one tensor)."""
        if isinstance(self.mode, float):
            return torch.full_like(x, self.mode)
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x) if self.mode == "mean_img" else None

    def unmaskable(self, x: torch.Tensor) -> torch.Tensor | None:
        """The voxels no box can change (none for ``"mean_patch"``); see :meth:`BaseCAM.unmaskable`."""
        return None if self.mode == "mean_patch" else super().unmaskable(x)

    def saliency(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        """The drop of the class score when the region around each voxel is occluded, ``(B, 1, *spatial)``.

        MONAI's sliding occluder makes the masks and blends their scores, so this replaces the maps/weights
        stages of :class:`~monai_cluscam.cam.base.BaseCAM` as a whole.
        """
        size = state.input_size
        sizes = [self.mask_size] * len(size) if isinstance(self.mask_size, int) else list(self.mask_size)
        if len(sizes) != len(size):
            raise ValueError(f"mask_size {self.mask_size!r} has {len(sizes)} values for {len(size)} spatial axes.")
        occlusion = OcclusionSensitivity(
            _Scores(self.nn_module),
            mask_size=[min(m, s) for m, s in zip(sizes, size, strict=True)],
            n_batch=self.batch_size or auto_batch_size(x),
            verbose=self.progress,
            mode=self.mode,
            overlap=self.overlap,
            activate=(lambda out: out.float().softmax(1)) if self.score == "probability" else False,
        )
        base = state.logits.softmax(1) if self.score == "probability" else state.logits
        maps = []
        with torch.inference_mode(), warnings.catch_warnings():
            # MONAI 1.6 indexes with lists, which torch deprecates; not this package's to fix
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            for i in range(x.shape[0]):
                occluded = occlusion(x[i : i + 1])[0]  # (1, num_classes, *spatial)
                c = int(state.classes[i])
                maps.append(base[i, c] - occluded[:, c : c + 1].float().as_tensor())
        return torch.cat(maps)
