"""Sanity checks for saliency methods (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): does a
method's map depend on the model it claims to explain?

- :func:`cascading_randomization`: re-initialise the model's layers one after another, from the output layer
  down, explain the same inputs with the same method and settings after each step, and compare every map with
  the trained model's map. ``cascade=False`` gives the paper's independent variant (one layer at a time).
- :func:`compare_models`: the maps of two models of the same inputs, e.g. a trained model against the same
  architecture trained on shuffled labels (the paper's data randomisation test).
- :func:`spearman_correlation` and :func:`structural_similarity`: the per-sample measures both use.

Both compare the maps where masking can change the input (``region="maskable"``, the default): the empty
background, where the perturbation methods give no attribution whatever the model
(:func:`~monai_cluscam.cam.base.unmaskable_voxels`), would otherwise count as agreement between any two maps.
``region="image"`` compares the whole image.

A method whose maps survive the destruction of what the model learned is explaining the input, not the model
(an edge detector passes as a saliency method to the eye). Both checks return a :class:`SanityCheckResult`
(per-step, per-sample values, a summary, a pass/fail verdict and a figure like the paper's) and work for 2D and
3D inputs and every method of the package, by name (:mod:`monai_cluscam.cam.registry`) or as a factory
``callable(model) -> explainer``, where an explainer is called as ``explainer(x, class_idx=classes)`` and
returns ``(B, 1, *spatial)`` maps.

The verdict: a method **passes** when the mean Spearman rank correlation between the trained model's maps and
the maps at the last step (the fully randomised model, or the other model) is below ``threshold``
(:data:`DEFAULT_THRESHOLD`, 0.5: after randomisation at most a weak monotone relation to the original ranking
may remain; a model-independent method scores 1.0). The threshold is a convention, not the paper's: read the
per-step curve too.

The caller's model is never changed: the randomisation runs on a deep copy (twice the model's memory while it
runs). A handler can run a cheap check with ``num_steps=1`` or ``2`` (the output layers only), a few inputs and
``keep_maps=False``.
"""

from __future__ import annotations

import copy
import difflib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.metrics.regression import compute_ssim_and_cs
from scipy.stats import rankdata
from torch import nn

from monai_cluscam.cam.base import unmaskable_voxels
from monai_cluscam.cam.registry import method_spec
from monai_cluscam.metrics.audit import map_correlation
from monai_cluscam.utils import eval_mode, forward_logits, plain_tensor, resolve_classes

__all__ = [
    "DEFAULT_THRESHOLD",
    "REGIONS",
    "SanityCheckResult",
    "cascade_layers",
    "cascade_steps_to",
    "cascading_randomization",
    "compare_models",
    "plot_sanity_checks",
    "spearman_correlation",
    "structural_similarity",
]

#: The pass/fail line: a method passes when the mean rank correlation at the last step is below it.
DEFAULT_THRESHOLD = 0.5
#: ``region=``: where the checks compare the maps
REGIONS = ("maskable", "image")

Explainer = Callable[..., torch.Tensor]
"""Called as ``explainer(x, class_idx=classes)``; returns ``(B, 1, *spatial)`` (or ``(B, *spatial)``) maps."""

MethodLike = str | Callable[[nn.Module], Explainer]


# --- the measures -----------------------------------------------------------------------------------------
def _pair(a: torch.Tensor, b: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 1, *spatial)`` float maps, checked to match and be finite."""
    a, b = plain_tensor(a).detach(), plain_tensor(b).detach()
    if a.shape != b.shape or a.ndim < 3:
        raise ValueError(
            f"{name}: the maps must share one shape (B, 1, *spatial) or (B, *spatial); got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )
    if a.ndim == 3 or a.shape[1] != 1:
        a, b = a[:, None], b[:, None]
    for t in (a, b):
        if not bool(torch.isfinite(t).all()):
            bad = torch.nonzero(~torch.isfinite(t.flatten(1)).all(1)).flatten().tolist()
            raise ValueError(f"{name}: the maps of sample(s) {bad} contain NaN or Inf.")
    return a.float(), b.to(a.device).float()


def spearman_correlation(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (ties get their average rank).

    A constant map has no ranking: its correlation with a non-constant map is 0 (nothing of the ranking survived)
    and with another constant map 1 (neither points anywhere).

    Args:
        a: ``(B, 1, *spatial)`` or ``(B, *spatial)`` maps.
        b: maps of the same shape.
        mask: ``(B or 1, 1, *spatial)`` bool, the voxels to compare (a sample whose mask is empty is compared
            over the whole image); None compares every voxel.

    Returns:
        ``(B,)`` float32 in ``[-1, 1]`` on ``a``'s device.

    Raises:
        ValueError: the shapes differ or a map holds NaN or Inf.

    Example:
        >>> a = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
        >>> spearman_correlation(a, a ** 2), spearman_correlation(a, -a)
        (tensor([1.]), tensor([-1.]))
    """
    a, b = _pair(a, b, "spearman_correlation")
    keep = _region(mask, a)
    if keep is None:
        return _spearman(a.flatten(1), b.flatten(1)).to(a.device)
    rho = [_spearman(u.flatten()[k][None], v.flatten()[k][None]) for u, v, k in zip(a, b, keep, strict=True)]
    return torch.cat(rho).to(a.device)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N,)`` Spearman rank correlation of the rows of two ``(N, V)`` tensors."""
    ra, rb = (torch.from_numpy(rankdata(t.cpu().double().numpy(), axis=1)) for t in (a, b))
    rho = map_correlation(ra, rb)  # nan where a map is constant
    both_flat = (ra == ra[:, :1]).all(1) & (rb == rb[:, :1]).all(1)
    return torch.where(torch.isnan(rho), both_flat.double(), rho).float()


def _region(mask: torch.Tensor | None, maps: torch.Tensor) -> torch.Tensor | None:
    """``(B, V)`` bool of the voxels to compare for ``(B, 1, *spatial)`` maps (a sample's empty mask: all voxels),
    or None for all voxels of every sample."""
    if mask is None:
        return None
    keep = plain_tensor(mask).to(device=maps.device, dtype=torch.bool)
    if keep.ndim == maps.ndim - 1:
        keep = keep[:, None]
    if keep.shape[1:] != maps.shape[1:] or keep.shape[0] not in (1, maps.shape[0]):
        raise ValueError(f"the mask's shape {tuple(mask.shape)} does not fit maps of shape {tuple(maps.shape)}.")
    keep = keep.expand_as(maps).flatten(1)
    return keep | ~keep.any(1, keepdim=True)


def structural_similarity(
    a: torch.Tensor, b: torch.Tensor, win_size: int = 7, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """SSIM of each pair of maps, each map min-max normalised to ``[0, 1]`` first (a constant map becomes zeros).

    MONAI's SSIM (:func:`monai.metrics.regression.compute_ssim_and_cs`, as :class:`~monai.metrics.SSIMMetric`)
    with a Gaussian window (sigma 1.5) of ``win_size`` voxels per axis, shrunk to the smallest axis (and kept
    odd) for small maps, averaged over the window centres (those in ``mask`` when given); 2D and 3D alike.

    Args:
        a: ``(B, 1, *spatial)`` or ``(B, *spatial)`` maps with 2 or 3 spatial axes.
        b: maps of the same shape.
        win_size: the window's width per axis.
        mask: ``(B or 1, 1, *spatial)`` bool, the voxels whose windows count (a sample with none in the valid
            window centres is averaged over all of them); None counts every window.

    Returns:
        ``(B,)`` float32 in ``[-1, 1]`` on ``a``'s device; 1 for maps equal after normalisation.

    Raises:
        ValueError: the shapes differ, a map holds NaN or Inf, or the maps are not 2D or 3D.

    Example:
        >>> a = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> structural_similarity(a, 3 * a + 1)
        tensor([1., 1.])
    """
    a, b = _pair(a, b, "structural_similarity")
    dims = a.ndim - 2
    if dims not in (2, 3):
        raise ValueError(f"structural_similarity: maps must be 2D or 3D; got {dims} spatial axes.")
    win = min(win_size, *a.shape[2:])
    win -= 1 - win % 2
    full, _ = compute_ssim_and_cs(_unit_range(a), _unit_range(b), dims, [win] * dims, [1.5] * dims, data_range=1.0)
    keep = _region(mask, a)
    if keep is None:
        return full.flatten(1).mean(1).float()
    pad = (win - 1) // 2
    centres = keep.view(a.shape)[(slice(None), slice(None), *[slice(pad, pad + n) for n in full.shape[2:]])]
    centres = centres.flatten(1) | ~centres.flatten(1).any(1, keepdim=True)
    return ((full.flatten(1) * centres).sum(1) / centres.sum(1)).float()


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low, span = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True)
    return ((flat - low) / torch.where(span > 0, span, 1.0)).view_as(maps)


# --- the result -----------------------------------------------------------------------------------------
@dataclass
class SanityCheckResult:
    """The maps of a method before and after a randomisation, compared step by step and sample by sample.

    Attributes:
        check: ``"cascading"`` (layers randomised cumulatively, top down), ``"independent"`` (one layer at a
            time) or ``"models"`` (another model, :func:`compare_models`).
        method: the method's label (``"Grad-CAM"``) or the factory's name.
        steps: what each step changed: the layer re-initialised at that step (cumulatively for ``"cascading"``),
            or the other model's name.
        spearman: ``(S, B)`` Spearman rank correlation of each step's map with the original map.
        ssim: ``(S, B)`` SSIM of each step's map with the original map (both min-max normalised).
        flat: ``(S, B)`` bool, the step's map is constant (the method found nothing to show).
        class_idx: ``(B,)`` the class explained, the same at every step.
        original_maps: ``(B, 1, *spatial)`` the maps of the trained model.
        maps: ``(S, B, 1, *spatial)`` the maps at each step, or None when not kept.
        threshold: the pass/fail line of :attr:`passed`.
    """

    check: str
    method: str
    steps: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor
    flat: torch.Tensor
    class_idx: torch.Tensor
    original_maps: torch.Tensor
    maps: torch.Tensor | None
    threshold: float

    @property
    def passed(self) -> bool:
        """True when the mean rank correlation at the last step is below :attr:`threshold`: the maps changed
        with the model."""
        return float(self.spearman[-1].mean()) < self.threshold

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: the verdict and, per step, the mean and standard deviation over the samples of
        each measure and the number of constant maps."""
        rows = []
        for i, step in enumerate(self.steps):
            rho, ssim = self.spearman[i].double(), self.ssim[i].double()
            rows.append({
                "step": step,
                "spearman_mean": float(rho.mean()),
                "spearman_std": float(rho.std()) if rho.numel() > 1 else 0.0,
                "ssim_mean": float(ssim.mean()),
                "ssim_std": float(ssim.std()) if ssim.numel() > 1 else 0.0,
                "flat_maps": int(self.flat[i].sum()),
            })
        return {
            "check": self.check,
            "method": self.method,
            "samples": int(self.spearman.shape[1]),
            "threshold": self.threshold,
            "final_spearman": rows[-1]["spearman_mean"],
            "final_ssim": rows[-1]["ssim_mean"],
            "passed": self.passed,
            "steps": rows,
        }

    def plot(
        self, path: str | Path | None = None, images: torch.Tensor | None = None, samples: Sequence[int] = (0,)
    ) -> Any:
        """A figure like the paper's: per sample a row with the input (when ``images`` is given), the original
        map and the map after each step, titled with its rank correlation. 3D maps are shown on the axial slice
        (last axis) through the original map's peak. Needs matplotlib and :attr:`maps`.

        Args:
            path: where to save it as PNG (None: not saved).
            images: the explained inputs ``(B, C, *spatial)``, shown (first channel) under the maps.
            samples: the samples to show, one row each.

        Returns:
            the matplotlib ``Figure``.
        """
        title = (f"{self.method}: {self.check} check ({'passed' if self.passed else 'FAILED'}, "
                 f"threshold rho < {self.threshold})")
        return _figure([(self, s, f"sample {s}") for s in samples], images, title, path)


def plot_sanity_checks(
    results: Sequence[SanityCheckResult],
    sample: int = 0,
    images: torch.Tensor | None = None,
    path: str | Path | None = None,
    title: str = "",
) -> Any:
    """One figure of several checks of the same inputs and steps (e.g. every method's cascading randomisation):
    a row per result, for one sample, laid out as :meth:`SanityCheckResult.plot` does, each row labelled with its
    method and verdict. Needs matplotlib and the results' maps.

    Raises:
        ValueError: the results' steps differ, or a result has no maps.
    """
    if len({tuple(r.steps) for r in results}) > 1:
        raise ValueError("plot_sanity_checks: the results must share their steps; plot them separately.")
    rows = [(r, sample, f"{r.method}\n{'passed' if r.passed else 'FAILED'}") for r in results]
    return _figure(rows, images, title, path)


def _figure(rows: list[tuple[SanityCheckResult, int, str]], images: torch.Tensor | None, title: str,
            path: str | Path | None) -> Any:
    """Rows of (result, sample, row label): the input, the original map, then each step's map with its rho."""
    if any(r.maps is None for r, _, _ in rows):
        raise ValueError("plotting needs the maps of every step; run the check with keep_maps=True.")
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("the sanity-check figures need matplotlib: pip install 'monai-cluscam[plots]'.") from err

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["original", *rows[0][0].steps]
    offset = int(images is not None)
    fig, axes = plt.subplots(len(rows), len(columns) + offset, squeeze=False,
                             figsize=(1.6 * (len(columns) + offset), 1.8 * len(rows)))
    for row, (result, s, label) in enumerate(rows):
        stack = [result.original_maps[s, 0], *(m[s, 0] for m in result.maps)]
        cut = _slicer(result.original_maps[s, 0])
        origin = "upper" if result.original_maps.ndim == 4 else "lower"
        background = None if images is None else plain_tensor(images)[s, 0].detach().float().cpu()[cut].numpy()
        if background is not None:
            axes[row, 0].imshow(background.T, cmap="gray", origin=origin)
            axes[row, 0].set_title("input" if row == 0 else "", fontsize=7)
        for col, (name, sal) in enumerate(zip(columns, stack, strict=True)):
            ax = axes[row, col + offset]
            if background is not None:
                ax.imshow(background.T, cmap="gray", origin=origin)
            ax.imshow(_unit_range(sal.float().cpu()[None])[0][cut].numpy().T, cmap="jet", vmin=0, vmax=1,
                      alpha=0.5 if background is not None else 1.0, origin=origin)
            rho = "" if col == 0 else f"\nrho {float(result.spearman[col - 1, s]):.2f}"
            ax.set_title((name if row == 0 else "") + rho, fontsize=7)
        axes[row, 0].set_ylabel(label, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _slicer(sal: torch.Tensor) -> tuple:
    """Index of the 2D view of a map: all of a 2D map, the axial slice through a 3D map's peak."""
    if sal.ndim == 2:
        return (slice(None), slice(None))
    z = int(torch.nonzero(sal == sal.max())[0, -1])
    return (slice(None), slice(None), z)


# --- running the method ---------------------------------------------------------------------------------
def _factory(method: MethodLike, target_layers: Any, method_args: dict) -> tuple[Callable[[nn.Module], Explainer],
                                                                                  str]:
    """The explainer factory and its label, from a registered name (with the layer and settings) or a callable."""
    if isinstance(method, str):
        from monai_cluscam.transforms import make_explainer, resolve_method

        spec = method_spec(method)  # an unknown name: ValueError listing the registered ones
        resolve_method(spec.name, method_args)  # a setting the method does not take: ValueError listing its own
        if target_layers is None:
            raise ValueError(f"method {spec.name!r} needs target_layers, the layer to explain from (e.g. 'layer4').")
        return (lambda model: make_explainer(model, spec.name, target_layers, **method_args)), spec.label
    if callable(method):
        if target_layers is not None or method_args:
            raise ValueError(
                "target_layers and method settings go with a method name; a factory callable(model) -> explainer "
                f"builds its explainer itself (got target_layers={target_layers!r}, settings {sorted(method_args)})."
            )
        return method, getattr(method, "__name__", type(method).__name__)
    raise ValueError(f"method must be a registered method name or a callable(model) -> explainer; got {method!r}.")


def _check_input(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5) or not x.is_floating_point():
        raise ValueError(
            "x must be a float tensor (B, C, H, W) or (B, C, H, W, D) of the inputs to explain; got "
            + (f"shape {tuple(x.shape)}, dtype {x.dtype}." if isinstance(x, torch.Tensor) else f"{type(x).__name__}.")
        )
    return x


def _classes(model: nn.Module, x: torch.Tensor, class_idx: Any) -> torch.Tensor:
    """The class to explain for each sample: ``class_idx``, else the model's prediction."""
    with torch.no_grad(), eval_mode(model):
        return resolve_classes(forward_logits(model, x), class_idx)


def _explain(factory: Callable[[nn.Module], Explainer], model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
             quiet: bool) -> torch.Tensor:
    """``(B, 1, *spatial)`` float maps of ``x`` by a fresh explainer of ``model``; ``quiet`` silences the
    explainer's warnings (flat maps are expected from a randomised model and are counted instead)."""
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        maps = plain_tensor(factory(model)(x, class_idx=classes)).detach()
    expected = (x.shape[0], 1, *x.shape[2:])
    if maps.ndim == x.ndim - 1:
        maps = maps[:, None]
    if tuple(maps.shape) != expected:
        raise ValueError(f"the explainer returned maps of shape {tuple(maps.shape)}; expected {expected}.")
    return maps.float()


def _compared(x: torch.Tensor, region: str) -> torch.Tensor | None:
    """The voxels the checks compare (see the module's notes), or None for all."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}; got {region!r}.")
    return None if region == "image" else ~unmaskable_voxels(x)


def _finish(check: str, label: str, steps: list[str], original: torch.Tensor, maps: list[torch.Tensor],
            classes: torch.Tensor, threshold: float, keep_maps: bool, mask: torch.Tensor | None) -> SanityCheckResult:
    return SanityCheckResult(
        check=check,
        method=label,
        steps=steps,
        spearman=torch.stack([spearman_correlation(original, m, mask) for m in maps]),
        ssim=torch.stack([structural_similarity(original, m, mask=mask) for m in maps]),
        flat=torch.stack([m.flatten(1).amax(1) == m.flatten(1).amin(1) for m in maps]),
        class_idx=classes,
        original_maps=original,
        maps=torch.stack(maps) if keep_maps else None,
        threshold=threshold,
    )


# --- the layers and their randomisation -----------------------------------------------------------------
def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def cascade_layers(model: nn.Module) -> list[str]:
    """The default cascade of :func:`cascading_randomization`: the model's child modules that hold parameters,
    output layer first.

    Descends through wrappers with a single parameterised child (``nn.Sequential(net)``); the order is the
    registration order reversed, which for MONAI's networks (ResNet, DenseNet, ViT, ...) runs from the output
    layer to the input. Pass ``layers=`` for another order or a finer cascade. Parameters held directly by the
    model itself are not in the cascade.

    Raises:
        ValueError: no child module holds parameters.

    Example:
        >>> from monai.networks.nets import resnet10
        >>> cascade_layers(resnet10(spatial_dims=2, n_input_channels=1, num_classes=2))
        ['fc', 'layer4', 'layer3', 'layer2', 'layer1', 'bn1', 'conv1']
    """
    prefix, module = "", model
    while True:
        children = [(name, child) for name, child in module.named_children() if _has_parameters(child)]
        if len(children) != 1 or any(True for _ in module.parameters(recurse=False)):
            break
        prefix, module = f"{prefix}{children[0][0]}.", children[0][1]
    if not children:
        raise ValueError(
            f"{type(model).__name__} has no sub-module with parameters to randomise; pass layers=[...] naming "
            "modules that hold parameters."
        )
    return [prefix + name for name, _ in reversed(children)]


def cascade_steps_to(model: nn.Module, target_layers: str | Sequence[str]) -> int:
    """How many steps of :func:`cascade_layers` re-initialise everything from the output down to the layer that
    holds ``target_layers`` (the explained layer; of several, the deepest in the cascade, i.e. the shallowest in the
    network), that layer included: the cascade that a map computed from that layer must not survive. A layer
    outside the cascade gives 1 (the output layer only).

    Example:
        >>> from monai.networks.nets import resnet10
        >>> net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=2)
        >>> cascade_steps_to(net, "layer4"), cascade_steps_to(net, "layer3.0.conv1")
        (2, 3)
        >>> cascade_steps_to(net, ["layer2", "layer4"])  # down to the shallowest of several
        4
    """
    names = [target_layers] if isinstance(target_layers, str) else [str(t) for t in target_layers]
    steps = [1]
    for step, name in enumerate(cascade_layers(model), start=1):
        if any(t == name or t.startswith(name + ".") for t in names):
            steps.append(step)
    return max(steps)


def _resolve_layers(model: nn.Module, layers: Sequence[str] | None, num_steps: int | None) -> list[str]:
    chosen = cascade_layers(model) if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    if not chosen:
        raise ValueError("layers is empty; name at least one layer to randomise, or pass None for the default.")
    modules = dict(model.named_modules())
    with_parameters = [name for name, m in modules.items() if name and _has_parameters(m)]
    for name in chosen:
        if name not in modules:
            close = difflib.get_close_matches(str(name), with_parameters, n=3, cutoff=0.5)
            shown = ", ".join(map(repr, with_parameters[:40])) + (
                f", ... ({len(with_parameters) - 40} more)" if len(with_parameters) > 40 else "")
            raise ValueError(
                f"layer {name!r} does not exist in {type(model).__name__}"
                + (f"; close matches: {', '.join(map(repr, close))}" if close else "")
                + f". Layers with parameters (the default cascade is {_cascade_or_none(model)}): {shown}."
            )
        if not _has_parameters(modules[name]):
            raise ValueError(f"layer {name!r} of {type(model).__name__} has no parameters to randomise.")
    if num_steps is not None:
        if not isinstance(num_steps, int) or not 1 <= num_steps <= len(chosen):
            raise ValueError(f"num_steps must be an int from 1 to {len(chosen)} (the layers {chosen}); "
                             f"got {num_steps!r}.")
        chosen = chosen[:num_steps]
    return chosen


def _cascade_or_none(model: nn.Module) -> list[str] | None:
    """:func:`cascade_layers`, or None for a model that has none (for error messages)."""
    try:
        return cascade_layers(model)
    except ValueError:
        return None


def _randomize(layer: nn.Module, seed: int) -> None:
    """Re-initialise every parameter of ``layer`` in place, seeded, leaving the global random state as it was:
    a sub-module with ``reset_parameters`` (convolutions, linear layers, norms, which also reset their running
    statistics) uses it; other parameters are redrawn from a normal distribution with their own standard
    deviation (1 for a single value or a constant tensor)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for module in layer.modules():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                continue
            for p in own:
                std = float(p.float().std()) if p.numel() > 1 else 0.0
                p.normal_(0.0, std if std > 0 else 1.0)


# --- the checks -----------------------------------------------------------------------------------------
def cascading_randomization(
    model: nn.Module,
    x: torch.Tensor,
    method: MethodLike,
    target_layers: str | Sequence[str] | None = None,
    *,
    layers: Sequence[str] | None = None,
    num_steps: int | None = None,
    cascade: bool = True,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    keep_maps: bool = True,
    region: str = "maskable",
    **method_args: Any,
) -> SanityCheckResult:
    """The model parameter randomisation test: re-initialise layers from the output down and watch the maps.

    On a deep copy of ``model``: explain ``x`` (the original maps), then for each layer of the cascade in turn
    re-initialise its parameters (seeded; as :func:`torch.nn.Module.reset_parameters` does, so a randomised
    layer is a freshly initialised one) and explain ``x`` again with a fresh explainer of the same method and
    settings, for the same classes. With ``cascade=True`` the randomisation accumulates (the last step is the
    fully randomised model when the cascade covers every layer); with ``cascade=False`` each step randomises
    only its own layer. Every step's map is compared with the original one by :func:`spearman_correlation` and
    :func:`structural_similarity`.

    Args:
        model: the trained classifier; left unchanged (parameters, buffers, train/eval flags).
        x: ``(B, C, H, W)`` or ``(B, C, H, W, D)`` inputs on the model's device; a few are enough.
        method: a registered method name (``"cluscam"``, ``"gradcam"``, ...; any case, aliases too), or a
            factory ``callable(model) -> explainer`` for anything else.
        target_layers: the layer to explain from, with a method name (not with a factory).
        layers: the modules to randomise, in this order (names as in ``model.named_modules()``); default
            :func:`cascade_layers` (the model's top-level layers, output first).
        num_steps: randomise only the first ``num_steps`` layers of the cascade (a cheap check, e.g. in a
            training handler: 1 or 2 steps touch the output layers only).
        cascade: accumulate the randomisation (the paper's cascading test) or randomise one layer at a time
            (its independent test).
        class_idx: the class to explain per sample (an int, B ints or a tensor); default the trained model's
            prediction, kept for every step.
        seed: seeds the re-initialisation (step ``i`` uses ``seed + i``); the global random state is restored.
        threshold: the pass/fail line of :attr:`SanityCheckResult.passed`.
        keep_maps: keep every step's maps in the result (needed by :meth:`SanityCheckResult.plot`).
        region: ``"maskable"`` compares the maps where masking can change the input (not the empty background),
            ``"image"`` everywhere (see the module's notes).
        method_args: the method's own settings (``num_clusters=10``, ``batch_size=64``, ...).

    Returns:
        a :class:`SanityCheckResult` with one step per randomised layer.

    Raises:
        ValueError: an unknown method (the registered names are listed), a setting the method does not take, a
            layer that does not exist (the layers with parameters are listed) or holds no parameters, a bad
            ``num_steps``, an unknown ``region``, or inputs that are not a float batch.

    Example:
        >>> from monai.networks.nets import resnet10
        >>> net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=2).eval()
        >>> x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> result = cascading_randomization(net, x, "gradcam", "layer3", num_steps=2)
        >>> result.steps, tuple(result.spearman.shape)
        (['fc', 'layer4'], (2, 2))
        >>> intensity = lambda model: (lambda x, class_idx=None: x)  # ignores the model: must fail
        >>> cascading_randomization(net, x, intensity).passed
        False
    """
    factory, label = _factory(method, target_layers, method_args)
    x = _check_input(x)
    compared = _compared(x, region)
    chosen = _resolve_layers(model, layers, num_steps)
    work = copy.deepcopy(model)
    pristine = None if cascade else copy.deepcopy(work.state_dict())
    classes = _classes(work, x, class_idx)
    original = _explain(factory, work, x, classes, quiet=False)
    maps = []
    for i, name in enumerate(chosen):
        if pristine is not None:
            work.load_state_dict(pristine)
        _randomize(work.get_submodule(name), seed + i)
        maps.append(_explain(factory, work, x, classes, quiet=True))
    del work
    return _finish("cascading" if cascade else "independent", label, chosen, original, maps, classes, threshold,
                   keep_maps, compared)


def compare_models(
    model: nn.Module,
    other: nn.Module,
    x: torch.Tensor,
    method: MethodLike,
    target_layers: str | Sequence[str] | None = None,
    *,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    name: str = "other model",
    threshold: float = DEFAULT_THRESHOLD,
    keep_maps: bool = True,
    region: str = "maskable",
    **method_args: Any,
) -> SanityCheckResult:
    """The data randomisation test: the maps of ``model`` against those of ``other`` (e.g. the same architecture
    trained on shuffled labels), same inputs, method, settings and classes.

    Args:
        model: the trained classifier (its maps are the original ones).
        other: the model to compare with; it must have the layer ``target_layers`` names.
        x: ``(B, C, H, W)`` or ``(B, C, H, W, D)`` inputs on the models' device.
        method: a registered method name or a factory ``callable(model) -> explainer``.
        target_layers: the layer to explain from, with a method name.
        class_idx: the class to explain per sample; default ``model``'s prediction, used for both models.
        name: the label of ``other`` in the result (its one step).
        threshold: the pass/fail line of :attr:`SanityCheckResult.passed`.
        keep_maps: keep ``other``'s maps in the result (for :meth:`SanityCheckResult.plot`).
        region: where the maps are compared, as in :func:`cascading_randomization`.
        method_args: the method's own settings.

    Returns:
        a :class:`SanityCheckResult` with one step, ``other``.

    Raises:
        ValueError: as :func:`cascading_randomization`.

    Example:
        >>> from monai.networks.nets import resnet10
        >>> _ = torch.manual_seed(0)
        >>> a, b = (resnet10(spatial_dims=2, n_input_channels=1, num_classes=2).eval() for _ in range(2))
        >>> x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> result = compare_models(a, b, x, "gradcam", "layer3", name="shuffled labels")
        >>> result.steps, tuple(result.ssim.shape)
        (['shuffled labels'], (1, 2))
    """
    factory, label = _factory(method, target_layers, method_args)
    x = _check_input(x)
    compared = _compared(x, region)
    classes = _classes(model, x, class_idx)
    original = _explain(factory, model, x, classes, quiet=False)
    maps = [_explain(factory, other, x, classes, quiet=True)]
    return _finish("models", label, [name], original, maps, classes, threshold, keep_maps, compared)
