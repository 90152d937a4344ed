"""ClusCAM: cluster the target layer's channel maps into K meta-representations and weigh each by how
much masking the input with it changes the class logit."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from monai_cluscam.cam.base import BASELINES, BaseCAM, CAMState, input_baseline
from monai_cluscam.clustering import kmeans
from monai_cluscam.utils import minmax_normalize, upsample

__all__ = ["ClusCAM", "ClusCAMExplanation", "NumClustersSelection", "select_num_clusters"]

_RESOLUTIONS = ("feature", "input")
#: ``centroids=``: how a cluster's meta-representation is made from its channels (see :class:`ClusCAM`)
CENTROIDS = ("mean", "normalized", "weighted")
#: ``scoring=`` -> the shared pipeline's score kind: ``d_k`` as the change of the class logit (published) or of
#: the class log-probability
_SCORINGS = {"logit": "logit_change", "log_probability": "log_probability_change"}


@dataclass
class ClusCAMExplanation:
    """The parts of the last ClusCAM explanation, for inspection (``cam.explanation_``).

    Attributes:
        class_idx: ``(B,)`` explained class of each sample.
        base_scores: ``(B,)`` logit of that class for the unmasked input.
        cluster_maps: ``(B, K, *s)`` the meta-representations (cluster centroids, values in ``[0, 1]``)
            at the clustering resolution (feature map or input); see :meth:`cluster_maps_at_input`.
        channel_labels: ``(B, C)`` the cluster each channel of the target layer fell in.
        score_diffs: ``(B, K)`` ``logit_c(x * M_k) - logit_c(x)`` for each cluster.
        weights: ``(B, K)`` the weights after pruning and the temperature softmax (pruned ones are 0).
        input_size: spatial size of the input.
    """

    class_idx: torch.Tensor
    base_scores: torch.Tensor
    cluster_maps: torch.Tensor
    channel_labels: torch.Tensor
    score_diffs: torch.Tensor
    weights: torch.Tensor
    input_size: tuple[int, ...]

    def cluster_maps_at_input(self) -> torch.Tensor:
        """The ``(B, K, *spatial)`` meta-representations at input resolution: the masks that were scored."""
        return upsample(self.cluster_maps, self.input_size)


class ClusCAM(BaseCAM):
    """ClusCAM (gradient-free, cluster-based class activation maps).

    The three stages are public, for studies that recombine them: :meth:`cluster` (normalise and
    group the channel maps), :meth:`score` (the masked forward passes) and :meth:`weigh` (pruning and
    the temperature softmax); :meth:`finish` turns the weighted sum into the map.

    For each sample: forward once, recording the target layer's ``C`` channel maps; min-max
    normalise each; group them with seeded k-means++ into ``K`` clusters, each made one map (the
    meta-representations ``M_k``: the published k-means centroid with ``centroids="mean"``, by default the
    members weighted by their activation range); score each with one masked forward pass,
    ``d_k = logit_c(x * M_k) - logit_c(x)``; drop the ``floor(drop_ratio * K)`` lowest; weigh the rest by
    ``softmax(d / temperature)``; the map is ``ReLU(sum_k w_k M_k)`` min-max normalised. ``K + 1`` forward
    passes in all, no backward pass.

    Args:
        nn_module: the classifier (CNN, or a transformer whose forward may return a tuple).
        target_layers: name (as in ``named_modules()``) or module of the layer to explain from, or a list of
            them: each layer is clustered and scored on its own (``K`` clusters a layer) and the maps are fused
            by their geometric mean (see :class:`~monai_cluscam.cam.base.BaseCAM`).
        num_clusters: ``K`` (per layer); clamped (with a warning) to the layer's channel count.
        drop_ratio: share of the lowest-scoring clusters pruned, in ``[0, 1)``.
        temperature: softmax temperature ``> 0``; below 1 sharpens the weights.
        cluster_resolution: ``"feature"`` (default) normalises and clusters the channel maps at the
            layer's own resolution and upsamples only the K centroids: fast, and the way to fit 3D
            volumes in memory. ``"input"`` upsamples every channel map to the input size first, as
            the published algorithm does.
        baseline: what the masked-out part of the input becomes: ``"zero"`` (default, as published:
            ``x * M_k``), ``"blur"`` (the blurred input) or ``"mean"`` (each channel's mean); see ``BASELINES``.
        centroids: how a cluster becomes the map that is scored and summed: ``"weighted"`` (default: the
            channels averaged weighted by their activation range ``max - min``, i.e. in the layer's own units, so
            a channel that barely responds, whose min-max map is amplified noise, adds little; then min-max
            normalised); ``"mean"`` (as published: the k-means centroid, the mean of its channels' min-max maps);
            ``"normalized"`` (that mean, min-max normalised, so the masked copy keeps the input unchanged at the
            centroid's peak). With the mean, a small detector merged with channels that peak elsewhere is
            diluted: on its lesion the centroid is about ``1 / n`` of ``n`` members, the copy ``x * M_k`` dims the
            lesion until the model no longer sees it, and the cluster is scored low and pruned (a 3-6 px lesion
            on real slices: pointing game 0.70 with the mean, 1.00 weighted; on the 2D bundle's test slices the
            weighted maps are also the more faithful, ``benchmarks/results/readability.md``).
        scoring: what ``d_k`` measures: ``"logit"`` (default, as published: ``logit_c(x * M_k) - logit_c(x)``) or
            ``"log_probability"`` (the same for ``log softmax_c``, so a mask that raises every class alike scores
            nothing).
        batch_size: masked copies per forward pass; None picks about 4 MiB of input per pass.
        seed: seed of the k-means++ draws; each sample uses it, so a batch equals its single calls.
        reshape_transform: turns the layer's output into ``(B, C, *grid)`` for unusual token layouts.
        progress: show a progress bar over the masked forward passes.
        zero_unmaskable: no attribution where masking cannot change the input (the black background, for the
            zero baseline); None (default): on. False gives the published algorithm's map.

    Example:
        >>> import torch
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=4)
        >>> cam = ClusCAM(net, target_layers="layer4", num_clusters=5)
        >>> cam(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
        >>> cam.explanation_.weights.shape
        torch.Size([2, 5])
    """

    score_kind = "logit_change"
    per_sample_forward = True

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: str | nn.Module | Sequence[str | nn.Module],
        num_clusters: int = 10,
        drop_ratio: float = 0.5,
        temperature: float = 0.5,
        cluster_resolution: str = "feature",
        baseline: str = "zero",
        scoring: str = "logit",
        centroids: str = "weighted",
        batch_size: int | None = None,
        seed: int = 0,
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        progress: bool = False,
        zero_unmaskable: bool | None = None,
    ) -> None:
        super().__init__(nn_module, target_layers, reshape_transform, batch_size, progress, zero_unmaskable)
        if not isinstance(num_clusters, int) or num_clusters < 1:
            raise ValueError(f"num_clusters must be a positive int; got {num_clusters!r}.")
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"drop_ratio must be in [0, 1) (share of clusters pruned); got {drop_ratio!r}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature!r}.")
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}; got {baseline!r}.")
        if scoring not in _SCORINGS:
            raise ValueError(f"scoring must be one of {tuple(_SCORINGS)}; got {scoring!r}.")
        if centroids not in CENTROIDS:
            raise ValueError(f"centroids must be one of {CENTROIDS}; got {centroids!r}.")
        if cluster_resolution not in _RESOLUTIONS:
            raise ValueError(f"cluster_resolution must be one of {_RESOLUTIONS}; got {cluster_resolution!r}.")
        self.num_clusters = num_clusters
        self.drop_ratio = drop_ratio
        self.temperature = temperature
        self.cluster_resolution = cluster_resolution
        self.mask_baseline = baseline
        self.scoring = scoring
        self.centroids = centroids
        self.score_kind = _SCORINGS[scoring]
        self.seed = seed

    def maps(self, x: torch.Tensor, state: CAMState) -> torch.Tensor:
        """The meta-representations of :meth:`cluster`, the maps ClusCAM scores and weighs."""
        centroids, labels = self.cluster(state.activations, state.input_size, state.layer_name)
        state.details["channel_labels"] = labels
        return centroids

    def cluster(
        self, activations: torch.Tensor, input_size: Sequence[int], layer_name: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: min-max normalise each channel map and group them with seeded k-means++; the centroids as
        ``centroids=`` says.

        Args:
            activations: ``(B, C, *grid)`` feature maps of the target layer.
            input_size: spatial size of the input (the clustering resolution when ``cluster_resolution``
                is ``"input"``).
            layer_name: the layer they come from, for messages.

        Returns:
            ``(centroids, labels)``: the ``(B, K, *s)`` meta-representations (values in ``[0, 1]``) and the
            ``(B, C)`` cluster of each channel. ``K`` is ``num_clusters``, at most ``C``.
        """
        with torch.inference_mode():
            acts = upsample(activations, input_size) if self.cluster_resolution == "input" else activations
            b, c, *grid = acts.shape
            k = self.num_clusters
            if k > c:
                warnings.warn(
                    f"num_clusters={k} exceeds the {c} channels of {layer_name or self.layer_name!r}; using {c} "
                    "clusters.",
                    stacklevel=4,
                )
                k = c
            channels = minmax_normalize(acts, start_dim=2)[0].flatten(2)
            clusters = kmeans(channels, k, seed=self.seed)
            centroids = clusters.centroids
            if self.centroids == "weighted":
                flat = acts.flatten(2).float()
                members = F.one_hot(clusters.labels, k).to(channels.dtype)  # (B, C, K)
                members = members * (flat.amax(2) - flat.amin(2))[..., None]  # each channel's activation range
                total = members.sum(1)[..., None]  # (B, K, 1)
                weighted = torch.bmm(members.transpose(1, 2), channels) / total.clamp_min(torch.finfo(total.dtype).tiny)
                centroids = torch.where(total > 0, weighted, centroids)  # a cluster of flat channels: its mean
            if self.centroids != "mean":
                centroids = minmax_normalize(centroids, start_dim=2)[0]
        return centroids.view(b, k, *grid), clusters.labels

    def baseline(self, x: torch.Tensor) -> torch.Tensor | None:
        """The masked input's baseline chosen by ``baseline=`` (None: zeros, as published)."""
        return input_baseline(x, self.mask_baseline)

    # Stage 2, the score differences d_k = logit_c(x * M_k) - logit_c(x), is BaseCAM.score with
    # score_kind "logit_change": one masked forward pass per cluster, batched.

    def weigh(self, scores: torch.Tensor, state: CAMState | None = None) -> torch.Tensor:
        """Stage 3: prune the ``floor(drop_ratio * K)`` lowest score differences, then ``softmax(d / temperature)``.

        Example:
            >>> from monai.networks.nets import resnet18
            >>> cam = ClusCAM(resnet18(spatial_dims=2, n_input_channels=1, num_classes=2), "layer4", drop_ratio=0.5)
            >>> cam.weigh(torch.tensor([[0.0, 1.0, 2.0, 3.0]])).tolist()[0][:2]
            [0.0, 0.0]
        """
        k = scores.shape[1]
        n_drop = int(self.drop_ratio * k)
        pruned = scores.clone()
        if n_drop > 0:
            lowest = scores.argsort(dim=1, stable=True)[:, :n_drop]
            pruned.scatter_(1, lowest, float("-inf"))
        return F.softmax(pruned / self.temperature, dim=1)

    @property
    def explanation_(self) -> ClusCAMExplanation | None:
        """The parts of the last explanation (None before the first call); with several target layers, the
        first layer's (all of them: :attr:`explanations_`)."""
        return self._explanation(self.state_)

    @property
    def explanations_(self) -> list[ClusCAMExplanation]:
        """The parts of the last explanation, one per target layer."""
        return [self._explanation(state) for state in self.states_]

    @staticmethod
    def _explanation(state: CAMState | None) -> ClusCAMExplanation | None:
        if state is None or state.weights is None:
            return None
        return ClusCAMExplanation(
            class_idx=state.classes,
            base_scores=state.class_logits,
            cluster_maps=state.maps,
            channel_labels=state.details["channel_labels"],
            score_diffs=state.scores,
            weights=state.weights,
            input_size=state.input_size,
        )


@dataclass
class NumClustersSelection:
    """Result of :func:`select_num_clusters`.

    Attributes:
        candidates: the K values tried, ascending.
        mean_score_diffs: for each K, the mean over samples of ``(1/K) sum_k d_k``.
        num_clusters: the chosen K: the smallest whose mean difference is within ``tolerance`` of
            the total rise from the plateau.
    """

    candidates: list[int]
    mean_score_diffs: list[float]
    num_clusters: int


def select_num_clusters(
    nn_module: nn.Module,
    target_layers: str | nn.Module,
    data: Iterable[torch.Tensor | dict],
    candidates: Sequence[int] = (5, 10, 20, 30, 50, 75, 100),
    tolerance: float = 0.05,
    image_key: str = "image",
    progress: bool = True,
    **cam_kwargs: object,
) -> NumClustersSelection:
    """Choose K from data, as ClusCAM's authors describe: over a validation set, the mean of
    ``(1/K) sum_k d_k`` rises with K and levels off; take the K where it levels off.

    Args:
        nn_module: the classifier.
        target_layers: the layer ClusCAM explains from.
        data: batches ``(B, C, *spatial)``, or dicts holding them under ``image_key`` (a MONAI loader).
        candidates: K values to try; those above the layer's channel count are dropped.
        tolerance: K is the smallest candidate whose curve value is within ``tolerance`` times the
            curve's total rise of its highest value.
        image_key: key of the image in dict batches.
        progress: show a progress bar over the batches.
        cam_kwargs: other :class:`ClusCAM` arguments (``drop_ratio``, ``cluster_resolution``, ...).

    Returns:
        :class:`NumClustersSelection`.

    Example:
        >>> import torch
        >>> from monai.networks.nets import resnet18
        >>> _ = torch.manual_seed(7)
        >>> net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2).eval()
        >>> x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> sel = select_num_clusters(net, "layer4", [x], candidates=(2, 4, 8, 16, 32), tolerance=0.25,
        ...                           progress=False, centroids="mean")  # the published algorithm's curve
        >>> curve = sel.mean_score_diffs  # rises with K and levels off
        >>> [round(v, 3) for v in curve]
        [-0.12, -0.115, -0.113, -0.105, -0.103]
        >>> top, bottom = max(curve), min(curve)  # within 0.25 of the rise of the top: K = 16 and 32; take the smaller
        >>> [k for k, v in zip(sel.candidates, curve) if v >= top - 0.25 * (top - bottom)], sel.num_clusters
        ([16, 32], 16)
    """
    ks = sorted({int(k) for k in candidates})
    if not ks or ks[0] < 1:
        raise ValueError(f"candidates must be positive ints; got {list(candidates)!r}.")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1); got {tolerance!r}.")
    cams = {k: ClusCAM(nn_module, target_layers, num_clusters=k, **cam_kwargs) for k in ks}
    sums = dict.fromkeys(ks, 0.0)
    count = 0
    batches = data
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(data, desc="choosing K", unit="batch")
    channels = None
    for batch in batches:
        x = batch[image_key] if isinstance(batch, dict) else batch
        for k, cam in cams.items():
            if channels is not None and k > channels:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cam(x)
            exp = cam.explanation_
            channels = exp.channel_labels.shape[1]
            sums[k] += float(exp.score_diffs.mean(1).sum())
        count += x.shape[0]
    if count == 0:
        raise ValueError("data yielded no samples; give at least one batch.")
    ks = [k for k in ks if channels is None or k <= channels]
    curve = [sums[k] / count for k in ks]
    top, bottom = max(curve), min(curve)
    chosen = next(k for k, v in zip(ks, curve, strict=True) if v >= top - tolerance * (top - bottom))
    return NumClustersSelection(candidates=ks, mean_score_diffs=curve, num_clusters=chosen)
