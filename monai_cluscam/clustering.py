"""Seeded, batched k-means++ in torch, on any device.

Each sample of a batch is clustered independently with its own generator seeded by ``seed``, so a
sample gets the same clusters whether it is explained alone or inside a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["KMeansResult", "kmeans"]


@dataclass
class KMeansResult:
    """Result of :func:`kmeans`.

    Attributes:
        centroids: ``(B, K, F)`` cluster centres.
        labels: ``(B, N)`` index of the centre each point belongs to.
        n_iter: ``(B,)`` Lloyd iterations run for each sample.
    """

    centroids: torch.Tensor
    labels: torch.Tensor
    n_iter: torch.Tensor


def _sq_distances(points: torch.Tensor, centres: torch.Tensor, point_norms: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(B, N, K)`` between ``(B, N, F)`` points and ``(B, K, F)`` centres,
    given the points' squared norms ``(B, N, 1)``."""
    d = torch.baddbmm(point_norms, points, centres.transpose(1, 2), alpha=-2.0)
    return d.add_((centres * centres).sum(-1).unsqueeze(1)).clamp_min_(0.0)


def _kmeans_plusplus(points: torch.Tensor, point_norms: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Greedy k-means++ seeding: at each step draw ``2 + log(K)`` candidates by D^2 sampling and keep
    the one that lowers the inertia most."""
    b, n, _ = points.shape
    trials = 2 + int(math.log(k))
    # The draws are scikit-learn's for ``KMeans(init="k-means++", random_state=seed)``, made on the host
    # per sample: identical on every device and at every batch position.
    draws = []
    for _ in range(b):
        rs = np.random.RandomState(seed)
        first = int(rs.choice(n, p=np.full(n, 1.0 / n)))
        uniform = np.stack([rs.uniform(size=trials) for _ in range(1, k)]) if k > 1 else np.zeros((0, trials))
        draws.append((first, uniform))
    first = torch.tensor([f for f, _ in draws], device=points.device)
    uniform = torch.from_numpy(np.stack([u for _, u in draws])).to(points.device)  # (B, K-1, trials)

    rows = torch.arange(b, device=points.device)
    centres = points.new_empty(b, k, points.shape[-1])
    centres[:, 0] = points[rows, first]
    closest = _sq_distances(points, centres[:, :1], point_norms)[..., 0].double()  # (B, N)
    for c in range(1, k):
        cum = closest.cumsum(-1)
        total = cum[:, -1:]
        targets = uniform[:, c - 1] * total
        cand = torch.searchsorted(cum, targets).clamp_(max=n - 1)  # (B, trials)
        # Where every point already coincides with a centre, D^2 sampling is undefined: take points in order.
        degenerate = total[:, 0] <= 0
        if degenerate.any():
            cand[degenerate] = c % n
        cand_pts = points[rows[:, None], cand]  # (B, trials, F)
        d_cand = _sq_distances(points, cand_pts, point_norms).double()  # (B, N, trials)
        pot = torch.minimum(d_cand, closest[..., None]).sum(1)  # (B, trials)
        best = pot.argmin(-1)
        centres[:, c] = cand_pts[rows, best]
        closest = torch.minimum(closest, d_cand[rows, :, best])
    return centres


def kmeans(
    points: torch.Tensor, num_clusters: int, seed: int = 0, max_iter: int = 300, tol: float = 1e-4
) -> KMeansResult:
    """Cluster each sample's points with k-means++ seeding and Lloyd iterations.

    Args:
        points: ``(B, N, F)``: for each of ``B`` samples, ``N`` points of ``F`` features.
        num_clusters: number of clusters ``K`` (``1 <= K <= N``).
        seed: seed of the k-means++ draws; the same seed gives the same clusters.
        max_iter: most Lloyd iterations.
        tol: stop when the centres move (summed squared shift) less than ``tol`` times the mean
            per-feature variance of the points, as scikit-learn does.

    Returns:
        :class:`KMeansResult` with ``(B, K, F)`` centroids and ``(B, N)`` labels, on ``points.device``.

    Example:
        >>> import torch
        >>> pts = torch.cat([torch.zeros(5, 2), torch.ones(5, 2)])[None]
        >>> res = kmeans(pts, 2, seed=0)
        >>> sorted(res.centroids[0, :, 0].tolist())
        [0.0, 1.0]
    """
    if points.ndim != 3:
        raise ValueError(f"points must be (B, N, F); got shape {tuple(points.shape)}.")
    b, n, f = points.shape
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be between 1 and the number of points ({n}); got {num_clusters}.")
    points = points.float()
    threshold = tol * points.var(dim=1, unbiased=False).mean(-1)  # (B,)
    norms = (points * points).sum(-1, keepdim=True)
    centres = _kmeans_plusplus(points, norms, num_clusters, seed)
    active = torch.ones(b, dtype=torch.bool, device=points.device)
    n_iter = torch.zeros(b, dtype=torch.long, device=points.device)
    labels = _sq_distances(points, centres, norms).argmin(-1)
    for _ in range(max_iter):
        one_hot = torch.nn.functional.one_hot(labels, num_clusters).to(points.dtype)  # (B, N, K)
        counts = one_hot.sum(1)  # (B, K)
        sums = torch.bmm(one_hot.transpose(1, 2), points)
        new = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], centres)
        empty = counts == 0
        if empty.any():
            new = _relocate_empty(points, new, labels, empty)
        shift = ((new - centres) ** 2).sum((1, 2))
        centres = torch.where(active[:, None, None], new, centres)
        n_iter += active.long()
        labels = _sq_distances(points, centres, norms).argmin(-1)
        active = active & (shift > threshold)
        if not active.any():
            break
    return KMeansResult(centroids=centres, labels=labels, n_iter=n_iter)


def _relocate_empty(
    points: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, empty: torch.Tensor
) -> torch.Tensor:
    """Move empty clusters onto the points farthest from their centres (as scikit-learn does)."""
    centres = centres.clone()
    for i in torch.nonzero(empty.any(1)).flatten().tolist():
        far = ((points[i] - centres[i][labels[i]]) ** 2).sum(-1).argsort(descending=True, stable=True)
        slots = torch.nonzero(empty[i]).flatten()
        centres[i, slots] = points[i, far[: len(slots)]]
    return centres
