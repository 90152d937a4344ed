"""The pipeline every attribution method runs, written once in :class:`BaseCAM`:

``x -> forward_pass (hooks on the target layers: logits, classes, activations[, gradients]; one state a layer)
-> maps (the K maps the method weighs) -> weights (for perturbation methods: score each map as an input mask
with the shared batched masked forward pass, then weigh the scores) -> combine (weighted sum) -> finish
(ReLU, upsample; several layers: the geometric mean of their min-max maps; zero where masking cannot change the
input, and outside the foreground; min-max)``.

A method file supplies only its maps and how scores become weights. :class:`InputPerturbationCAM` is the
base of the methods that read no layer (RISE, occlusion). Layer lookup and hooks live in
:mod:`monai_cluscam.cam.layers`, the general torch helpers in :mod:`monai_cluscam.utils`; both are importable
from here too.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

# Layer lookup and the general torch helpers live in cam.layers and monai_cluscam.utils; they stay importable here.
from monai_cluscam.cam.layers import (
    LayerArg,
    LayerCapture,
    refuse_torchscript,
    resolve_layer,
    resolve_layers,
    tokens_to_grid,
)
from monai_cluscam.utils import (
    MaskProvider,
    auto_batch_size,
    blur,
    class_scores,
    eval_mode,
    forward_logits,
    masked_forward,
    minmax_normalize,
    model_device,
    plain_tensor,
    resolve_classes,
    spatial_dims_of,
    upsample,
    upsampled_masks,
)

__all__ = [
    "BASELINES",
    "BaseCAM",
    "CAMState",
    "SCORES",
    "UNMASKABLE_TOLERANCE",
    "unmaskable_voxels",
    "InputPerturbationCAM",
    "MaskProvider",
    "SharedMasks",
    "auto_batch_size",
    "blur",
    "eval_mode",
    "foreground_threshold",
    "forward_logits",
    "input_baseline",
    "masked_forward",
    "minmax_normalize",
    "resolve_classes",
    "resolve_layer",
    "resolve_layers",
    "tokens_to_grid",
    "upsample",
    "upsampled_masks",
    "weighted_sum",
]

#: What masked-out voxels become (the ``baseline=`` option): zeros as published, the input blurred (sigma 1/20 of
#: its smallest side, at least one voxel), or each channel's mean.
BASELINES = ("zero", "blur", "mean")

#: How a masked copy is scored: the softmax probability of the explained class, the change of its logit from the
#: unmasked input's (ClusCAM's ``d_k`` as published), or the change of its log-probability (the logit less the
#: log-sum-exp of all logits: a mask that raises every class alike does not count).
SCORES = ("probability", "logit_change", "log_probability_change")

#: A voxel whose every channel lies within this share of the sample's intensity range of the masking baseline
#: counts as unmaskable: 10 grey values of 255 on an 8-bit slice, the level the compression noise and ringing of
#: the empty background reach on the Alzheimer MRI slices (99.9 % of the far background is at most 4 of 255, the
#: ring around the brain at most 10), while brain tissue lies above it (under 0.001 % of the brain below it).
UNMASKABLE_TOLERANCE = 0.04


def unmaskable_voxels(
    x: torch.Tensor, baseline: torch.Tensor | None = None, tolerance: float = UNMASKABLE_TOLERANCE
) -> torch.Tensor:
    """``(B, 1, *spatial)`` bool: the voxels of ``x`` that masking towards ``baseline`` (None: zeros) cannot change,
    where every channel lies within ``tolerance`` of the sample's intensity range both of the baseline and of the
    sample's minimum: the empty background.

    Example:
        >>> unmaskable_voxels(torch.tensor([[[[0.0, 0.005], [0.5, 1.0]]]])).flatten().tolist()
        [True, True, False, False]
    """
    diff = x.abs() if baseline is None else (x - baseline).abs()
    flat = x.flatten(1)
    low = flat.amin(1).view(-1, *[1] * (x.ndim - 1))
    tol = tolerance * (flat.amax(1).view_as(low) - low)
    return ((diff <= tol) & (x - low <= tol)).all(1, keepdim=True)


class SharedMasks(Protocol):
    """Masks made on demand and shared by every sample (RISE): ``len(masks)`` of them, ``masks(idx, device)``
    returns ``(len(idx), 1, *spatial)`` masks at input resolution. Used instead of a ``(B, K, *grid)`` tensor
    when holding all of them at once would not fit (3D volumes)."""

    def __len__(self) -> int: ...

    def __call__(self, idx: torch.Tensor, device: torch.device) -> torch.Tensor: ...


@dataclass
class CAMState:
    """What one call computed, stage by stage; the last call's is ``cam.state_``.

    Attributes:
        input_size: spatial size of the input.
        logits: ``(B, num_classes)`` from the explanation's own forward pass.
        classes: ``(B,)`` the explained class of each sample.
        activations: ``(B, C, *grid)`` float32 feature maps of the target layer; None for methods that read
            no layer.
        gradients: ``(B, C, *grid)`` gradient of each sample's class logit w.r.t. ``activations`` for gradient
            methods, else None.
        maps: the ``K`` maps the method weighs, ``(B, K, *grid)``, or :class:`SharedMasks`.
        scores: ``(B, K)`` score of each map used as an input mask (perturbation methods), else None.
        weights: ``(B, K)`` the weight of each map in the sum.
        details: method-specific intermediates (ClusCAM: ``channel_labels``).
        layer_name: the layer these activations come from.
    """

    input_size: tuple[int, ...]
    logits: torch.Tensor
    classes: torch.Tensor
    activations: torch.Tensor | None = None
    gradients: torch.Tensor | None = None
    maps: torch.Tensor | SharedMasks | None = None
    scores: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    details: dict[str, Any] = field(default_factory=dict)
    layer_name: str = ""

    @property
    def class_logits(self) -> torch.Tensor:
        """``(B,)`` the unmasked input's logit of the explained class."""
        return class_scores(self.logits.float(), self.classes)


def input_baseline(x: torch.Tensor, kind: str) -> torch.Tensor | None:
    """The baseline named ``kind`` (one of ``BASELINES``) for inputs ``x`` ``(B, C, *spatial)``; None for zeros.

    Example:
        >>> input_baseline(torch.arange(4.0).view(1, 1, 2, 2), "mean").flatten().tolist()
        [1.5, 1.5, 1.5, 1.5]
    """
    if kind == "zero":
        return None
    if kind == "blur":
        return blur(x, max(1.0, min(x.shape[2:]) / 20))
    if kind == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x)
    raise ValueError(f"unknown baseline {kind!r}; choose one of {BASELINES}.")


def foreground_threshold(foreground: object) -> float | None:
    """The grey value a ``foreground=`` switch stands for (see :meth:`BaseCAM.__call__`): None for None and False,
    :data:`~monai_cluscam.data.FOREGROUND_THRESHOLD` for True, a finite number as it is.

    Raises:
        ValueError: anything else (a string such as ``'false'``, NaN), naming the choices.

    Example:
        >>> foreground_threshold(True), foreground_threshold(0.15), foreground_threshold(False)
        (0.04, 0.15, None)
    """
    if foreground is None or foreground is False:
        return None
    if foreground is True:
        from monai_cluscam.data.masks import FOREGROUND_THRESHOLD

        return FOREGROUND_THRESHOLD
    if isinstance(foreground, (int, float)) and math.isfinite(foreground):
        return float(foreground)
    raise ValueError(
        f"foreground must be True, False, a finite grey value or a mask tensor; got {foreground!r} (in a bundle "
        "config or with python -m monai.bundle run: true/false there are strings, write True, False or a number)."
    )


def weighted_sum(weights: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[b, k] * maps[b, k]``: ``(B, K)`` and ``(B, K, *grid)`` give ``(B, 1, *grid)``.

    Example:
        >>> weighted_sum(torch.tensor([[1.0, 2.0]]), torch.ones(1, 2, 3, 3)).flatten().tolist()[:2]
        [3.0, 3.0]
    """
    return (weights.view(*weights.shape, *[1] * (maps.ndim - 2)) * maps).sum(1, keepdim=True)


class BaseCAM:
    """Base class of the attribution methods: owns the model, the target layers, validation, the pipeline
    and the output contract.

    Contract of ``cam(x, class_idx)``: ``x`` is ``(B, C, H, W)`` or ``(B, C, H, W, D)``, finite and
    floating point, on the model's device; the result is ``(B, 1, *spatial)`` in ``[0, 1]`` on
    ``x.device`` with ``x.dtype``, a ``MetaTensor`` carrying ``x``'s metadata when ``x`` is one.
    The model is left as found: train/eval flags restored, hooks removed, parameters untouched.

    The pipeline (see the module docstring) runs :meth:`forward_pass`, then for each target layer
    :meth:`saliency`, which calls the hooks a method supplies: :meth:`maps` (default: the layer's channels) and
    :meth:`weights` (default: :meth:`score` each map as an input mask, then :meth:`weigh` the scores); then
    :meth:`combine`, and :meth:`finish`. Class attributes tune the shared steps: ``needs_gradients`` (the forward
    pass also takes the class logit's gradient), ``records_layers`` (the forward pass records the target layers
    with forward hooks, so a TorchScript model, which takes none, is refused when the explainer is built),
    ``perturbs_input`` (the method scores masked copies of the input, so ``zero_unmaskable`` is on by default),
    ``score_kind`` (one of ``SCORES``), ``normalize_masks``
    (min-max each map before masking with it), ``per_sample_forward`` (one forward pass per sample, so a batch
    equals its single calls bit for bit).

    **Several layers.** ``target_layers=["layer2", "layer3", "layer4"]`` explains from each layer on its own
    (its own maps, scores and weights; a fine layer gives detail, a deep one the class evidence) and fuses the
    per-layer maps, each ReLU'd, upsampled to the input and min-max normalised, by their geometric mean: a voxel
    is salient when it is salient at every depth. The layers are recorded in one forward pass.

    **Unmaskable voxels.** A masked copy is ``x * m + b * (1 - m)`` with the method's baseline ``b`` (zeros unless
    it says otherwise). Where ``x`` equals ``b`` (the black background of a skull-stripped scan, for zeros), no
    mask changes the copy, so no masked pass can tell anything about that voxel: heat there is upsampling, never
    evidence. With ``zero_unmaskable`` such voxels of empty background (every channel within
    :data:`UNMASKABLE_TOLERANCE` of the sample's intensity range of ``b`` and of the sample's minimum) get no
    attribution, before the final min-max. An input that equals its
    baseline everywhere (a blank slice) gets an all-zero map and a warning.

    Args:
        nn_module: the classifier.
        target_layers: the layer whose activations are used (a name as in ``named_modules()``, or the module
            itself), or a list of them (see *Several layers*).
        reshape_transform: turns a layer's output into ``(B, C, *grid)`` for unusual layouts;
            by default tokens ``(B, N, D)`` are placed on the patch grid, leading extra tokens dropped.
        batch_size: masked copies per forward pass (perturbation methods); None picks a chunk of
            about 4 MiB of input.
        progress: show a progress bar over the masked forward passes.
        zero_unmaskable: give no attribution to voxels that masking cannot change (see *Unmaskable voxels*);
            None (default): on for the methods that perturb the input (``perturbs_input``), off for gradient ones.

    After a call, ``states_`` holds every stage's result (:class:`CAMState`, one per target layer), ``state_`` the
    first layer's, and ``logits_`` the model's ``(B, num_classes)`` output for ``x`` from the explanation's own
    forward pass, so a caller that also wants the prediction needs no extra pass.
    """

    needs_gradients: bool = False
    records_layers: bool = True
    perturbs_input: bool = True
    score_kind: str = "probability"
    normalize_masks: bool = False
    per_sample_forward: bool = False

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: LayerArg,
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        zero_unmaskable: bool | None = None,
    ) -> None:
        if not isinstance(nn_module, nn.Module):
            raise ValueError(f"nn_module must be a torch.nn.Module; got {type(nn_module).__name__}.")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}.")
        if zero_unmaskable is not None and not isinstance(zero_unmaskable, bool):
            raise ValueError(f"zero_unmaskable must be True, False or None; got {zero_unmaskable!r}.")
        self.nn_module = nn_module
        self.target_layers = target_layers
        if self.records_layers:  # forward hooks, which TorchScript modules do not take: refuse them now
            refuse_torchscript(nn_module)
        self.layers = resolve_layers(nn_module, target_layers)
        if self.records_layers:
            refuse_torchscript(nn_module, *(module for _, module in self.layers))
        self.layer_name = "+".join(name for name, _ in self.layers)
        self.reshape_transform = reshape_transform
        self.batch_size = batch_size
        self.progress = progress
        self.zero_unmaskable = zero_unmaskable
        self.states_: list[CAMState] = []

    @property
    def state_(self) -> CAMState | None:
        """The first target layer's :class:`CAMState` of the last call (None before the first call)."""
        return self.states_[0] if self.states_ else None

    @property
    def logits_(self) -> torch.Tensor | None:
        """The model's ``(B, num_classes)`` output for the last call's input (None before the first call)."""
        return None if self.state_ is None else self.state_.logits

    def __call__(
        self,
        x: torch.Tensor,
        class_idx: int | Sequence[int] | torch.Tensor | None = None,
        foreground: torch.Tensor | bool | float | None = None,
    ) -> torch.Tensor:
        """Explain ``x`` for ``class_idx``: None (each sample's predicted class), an int, or one per sample.

        ``foreground`` restricts the map to the subject: a mask ``(B or 1, 1, *spatial)`` (bool or in ``[0, 1]``),
        or ``True`` / a grey value to make it from ``x`` (:func:`monai_cluscam.data.foreground_mask` of each
        sample's first channel: voxels above the value, :data:`~monai_cluscam.data.FOREGROUND_THRESHOLD` for
        ``True``, enclosed holes filled; for skull-stripped images scaled to [0, 1]). The map is multiplied by it
        before the min-max, so nothing outside it is highlighted. Off by default: the training audit needs to
        see what lies outside the brain.
        """
        data = self._check_input(x)
        keep = self._check_foreground(foreground, data)
        with eval_mode(self.nn_module):
            self.states_ = self.forward_pass(data, class_idx)
            sals = [self.saliency(data, state) for state in self.states_]
        size = self.states_[0].input_size
        if len(sals) > 1:  # the geometric mean of the layers' maps, each in [0, 1]
            fused = torch.stack([self.finish(sal, size) for sal in sals]).clamp_min(0).log().mean(0).exp()
            sals = [fused]
        unmaskable = self.unmaskable(data) if self._zeroes_unmaskable() else None
        if unmaskable is not None:
            keep = (~unmaskable).float() if keep is None else keep * (~unmaskable)
        return self._wrap(self.finish(sals[0], size, keep).to(dtype=data.dtype), x)

    # --- the pipeline's stages ----------------------------------------------------------------
    def forward_pass(self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None) -> list[CAMState]:
        """One forward pass of ``x`` recording the target layers (and, when ``needs_gradients``, the gradient of
        each sample's class logit with respect to each): one :class:`CAMState` per layer, which the other stages
        fill in."""
        size = tuple(x.shape[2:])
        names = [name for name, _ in self.layers]
        if self.needs_gradients:
            with torch.enable_grad():
                logits, raws = self._capture(x.detach().requires_grad_(True))
                classes = resolve_classes(logits, class_idx)
                grads = torch.autograd.grad(class_scores(logits, classes).sum(), raws)
            return [
                CAMState(size, logits.detach(), classes, activations=self._to_grid(raw.detach(), size).float(),
                         gradients=self._to_grid(grad, size).float(), layer_name=name)
                for name, raw, grad in zip(names, raws, grads, strict=True)
            ]
        with torch.inference_mode():
            if self.per_sample_forward:
                # a batched convolution differs from a single one in the last bits; per sample, a sample's
                # explanation is the one it gets alone
                passes = [self._capture(x[i : i + 1]) for i in range(x.shape[0])]
                logits = torch.cat([p[0] for p in passes])
                raws = [torch.cat([p[1][j] for p in passes]) for j in range(len(names))]
            else:
                logits, raws = self._capture(x)
            acts = [self._to_grid(raw, size).float() for raw in raws]
        classes = resolve_classes(logits, class_idx)
        return [CAMState(size, logits, classes, activations=a, layer_name=n) for n, a in zip(names, acts, strict=True)]

    def saliency(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        """``(B, 1, *grid)`` map of one layer before :meth:`finish`: :meth:`maps`, then :meth:`weights`, then
        :meth:`combine`."""
        state.maps = self.maps(x, state)
        state.weights = self.weights(x, state)
        return self.combine(state.weights, state.maps)

    def maps(self, x: torch.Tensor, state: CAMState) -> torch.Tensor | SharedMasks:
        """The ``K`` maps the method weighs; by default the target layer's channels."""
        return state.activations

    def weights(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        """``(B, K)`` weights of ``state.maps``; by default :meth:`score` them as input masks and :meth:`weigh`."""
        state.scores = self.score(x, state, state.maps)
        return self.weigh(state.scores, state)

    def baseline(self, x: torch.Tensor) -> torch.Tensor | None:
        """What masked-out voxels become; None (zeros) unless a method says otherwise."""
        return None

    def unmaskable(self, x: torch.Tensor) -> torch.Tensor | None:
        """``(B, 1, *spatial)`` bool: the voxels of empty background that no mask can change, where every channel
        of ``x`` lies within :data:`UNMASKABLE_TOLERANCE` of the sample's intensity range both of :meth:`baseline`
        and of the sample's minimum (:func:`unmaskable_voxels`); None where a method cannot say. (Smooth tissue
        equals a blurred baseline too, but it is tissue: its attribution is the region's, so it is not zeroed.)

        Example:
            >>> from monai.networks.nets import resnet18
            >>> cam = BaseCAM(resnet18(spatial_dims=2, n_input_channels=1, num_classes=2), "layer4")
            >>> cam.unmaskable(torch.tensor([[[[0.0, 0.005], [0.5, 1.0]]]])).flatten().tolist()
            [True, True, False, False]
        """
        return unmaskable_voxels(x, self.baseline(x))

    def _zeroes_unmaskable(self) -> bool:
        return self.perturbs_input if self.zero_unmaskable is None else self.zero_unmaskable

    def score(self, x: torch.Tensor, state: CAMState, masks: torch.Tensor | SharedMasks) -> torch.Tensor:
        """``(B, K)`` score of each masked copy ``x * m + baseline * (1 - m)`` for each sample's class, by
        ``score_kind``: the class probability, or the change of the class logit from the unmasked input's.
        All copies go through :func:`~monai_cluscam.utils.masked_forward` in chunks of ``batch_size``."""
        if isinstance(masks, torch.Tensor):
            count = masks.shape[1]
            provider = upsampled_masks(masks, x.shape[2:], normalize=True) if self.normalize_masks else masks
        else:
            count = len(masks)

            def provider(_samples: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                return masks(idx, x.device)

        outputs = masked_forward(
            self.nn_module,
            x,
            provider,
            num_masks=count,
            baseline=self.baseline(x),
            batch_size=self.batch_size,
            progress=self.progress,
        )
        if self.score_kind == "probability":
            return class_scores(outputs.softmax(-1), state.classes)
        if self.score_kind == "logit_change":
            return class_scores(outputs, state.classes) - state.class_logits[:, None]
        if self.score_kind == "log_probability_change":
            base = class_scores(state.logits.float().log_softmax(-1), state.classes)
            return class_scores(outputs.float().log_softmax(-1), state.classes) - base[:, None]
        raise ValueError(f"{type(self).__name__}.score_kind is {self.score_kind!r}; choose one of {SCORES}.")

    def weigh(self, scores: torch.Tensor, state: CAMState) -> torch.Tensor:
        """How scores become weights; by default the scores themselves."""
        return scores

    def combine(self, weights: torch.Tensor, maps: torch.Tensor | SharedMasks) -> torch.Tensor:
        """The weighted sum of the maps, ``(B, 1, *grid)``."""
        return weighted_sum(weights, maps)

    def finish(self, sal: torch.Tensor, size: Sequence[int], foreground: torch.Tensor | None = None) -> torch.Tensor:
        """ReLU, upsample ``(B, 1, *grid)`` to ``size``, multiply by ``foreground`` (the voxels that may hold
        attribution) when given, and min-max each map. A map that is flat before the multiplication, or that has
        no voxel left after it, becomes zeros, with a warning naming the cause."""
        sal = upsample(F.relu(sal.float()), size)
        flat = sal.flatten(1)
        constant = flat.amax(1) == flat.amin(1)
        self._warn_blank(constant, f"the map is constant (the activations of {self.layer_name!r} or the scores do "
                         "not vary). Check the input is not blank, or try another target layer")
        if foreground is not None:
            empty = (foreground.flatten(1) == 0).all(1).expand_as(constant) & ~constant
            self._warn_blank(empty, "no voxel may hold attribution: the input equals the masking baseline "
                             "everywhere (a blank or all-background image) or the foreground mask is empty. Check "
                             "the input")
            sal = sal * foreground
            flat = sal.flatten(1)
            vanished = (flat.amax(1) == flat.amin(1)) & ~constant & ~empty
            self._warn_blank(vanished, "the map is zero wherever attribution is allowed (inside the foreground, "
                             "where masking changes the input)")
            constant = constant | empty | vanished
        sal = minmax_normalize(sal)[0]
        return torch.where(constant.view(-1, *[1] * (sal.ndim - 1)), torch.zeros_like(sal), sal)

    def _warn_blank(self, blank: torch.Tensor, why: str) -> None:
        if bool(blank.any()):
            idx = torch.nonzero(blank).flatten().tolist()
            warnings.warn(f"{type(self).__name__}: sample(s) {idx}: {why}; returning an all-zero map for them.",
                          stacklevel=4)

    # --- checks and helpers -------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor (B, C, *spatial); got {type(x).__name__}.")
        data = plain_tensor(x)
        if data.ndim not in (4, 5):
            hint = " Add a batch dimension with x[None]." if data.ndim in (3,) else ""
            raise ValueError(
                f"x must be (B, C, H, W) for 2D or (B, C, H, W, D) for 3D; got shape {tuple(data.shape)}.{hint}"
            )
        if not data.is_floating_point():
            raise ValueError(f"x must be floating point; got {data.dtype}. Convert it with x.float().")
        expected = spatial_dims_of(self.nn_module)
        if expected is not None and expected != data.ndim - 2:
            raise ValueError(
                f"the model takes {expected}D inputs but x has {data.ndim - 2} spatial dims "
                f"(shape {tuple(data.shape)})."
            )
        finite = torch.isfinite(data.flatten(1)).all(1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            raise ValueError(f"x contains NaN or Inf in sample(s) {bad}; clean or drop them before explaining.")
        flat = data.flatten(1)
        constant = (flat.amax(1) == flat.amin(1)).nonzero().flatten().tolist()
        if constant:
            warnings.warn(
                f"{type(self).__name__}: sample(s) {constant} of x are constant images; an explanation of a "
                "blank input carries no information about the anatomy. Check the loading and preprocessing.",
                stacklevel=3,
            )
        device = model_device(self.nn_module, default=None)
        if device is not None and device != data.device:
            raise ValueError(f"the model is on {device} but x is on {data.device}; move them to the same device.")
        return data

    @staticmethod
    def _check_foreground(foreground: torch.Tensor | bool | float | None, x: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(foreground, torch.Tensor):
            threshold = foreground_threshold(foreground)
            if threshold is None:
                return None
            from monai_cluscam.data.masks import foreground_mask

            return torch.stack([foreground_mask(sample[:1], threshold) for sample in x]).float()
        mask = plain_tensor(foreground)
        b, spatial = x.shape[0], tuple(x.shape[2:])
        if mask.ndim != x.ndim or mask.shape[0] not in (1, b) or mask.shape[1] != 1 or tuple(mask.shape[2:]) != spatial:
            raise ValueError(
                f"foreground has shape {tuple(mask.shape)}; expected ({b} or 1, 1, *{spatial}), one mask per sample "
                "on the input's grid."
            )
        if mask.device != x.device:
            raise ValueError(f"foreground is on {mask.device} but x is on {x.device}; move them to the same device.")
        return mask.float()

    def _capture(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One forward pass of ``x`` recording the target layers: ``(logits, raw activations of each layer)``.

        Gradients flow when the caller enables them (gradient methods); the others run it under
        ``torch.inference_mode()``.
        """
        with LayerCapture([module for _, module in self.layers]) as capture:
            logits = forward_logits(self.nn_module, x)
        missing = [name for (name, _), value in zip(self.layers, capture.values, strict=True) if value is None]
        if missing:
            raise ValueError(f"target layer {', '.join(map(repr, missing))} was not run by the model's forward pass.")
        return logits, capture.values

    def _to_grid(self, acts: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
        if self.reshape_transform is not None:
            grid = self.reshape_transform(acts)
            if grid.ndim != len(spatial) + 2:
                raise ValueError(
                    f"reshape_transform returned shape {tuple(grid.shape)}; expected (B, C, *grid) "
                    f"with {len(spatial)} spatial dims."
                )
            return grid
        return tokens_to_grid(acts, spatial)

    @staticmethod
    def _wrap(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, MetaTensor):
            return maps
        out = MetaTensor(maps, meta=x.meta, applied_operations=x.applied_operations)
        out.is_batch = x.is_batch
        return out


class InputPerturbationCAM(BaseCAM):
    """Base of the methods that perturb the input itself and read no layer's activations (RISE, occlusion).

    ``target_layers`` is accepted so that every method shares the call shape (``make_explainer(net, "rise",
    "layer4")``, a handler's ``target_layers``), and is ignored: these maps depend on the model's output only.

    Args:
        nn_module: the classifier.
        target_layers: ignored.
        batch_size: perturbed copies per forward pass; None picks about 4 MiB of input per pass.
        progress: show a progress bar over the perturbed forward passes.
        zero_unmaskable: give no attribution to voxels that masking cannot change (see :class:`BaseCAM`); None
            (default): on.
    """

    records_layers = False  # no hooks: a TorchScript model is explained as it is

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: object = None,
        batch_size: int | None = None,
        progress: bool = False,
        zero_unmaskable: bool | None = None,
    ) -> None:
        super().__init__(nn_module, nn_module, None, batch_size, progress, zero_unmaskable)
        self.target_layers = target_layers
        self.layer_name = "the input"

    def forward_pass(self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None) -> list[CAMState]:
        """The unperturbed forward pass: logits and classes, no activations."""
        with torch.inference_mode():
            logits = forward_logits(self.nn_module, x).float()
        return [CAMState(tuple(x.shape[2:]), logits, resolve_classes(logits, class_idx), layer_name="the input")]
