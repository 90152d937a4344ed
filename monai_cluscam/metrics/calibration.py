"""Calibration of a classifier's probabilities: the expected calibration error, and temperature scaling.

A radiologist reads the probability next to a map, and the confidence-based faithfulness metrics (Average
Drop, Increase in Confidence, Average Gain) read it too: a network that says 1.0 on every slice makes them
tie across methods. Temperature scaling (Guo et al., ICML 2017) divides the logits by one scalar ``T`` fitted
on held-out data; it changes no prediction.
"""

from __future__ import annotations

import torch

__all__ = ["expected_calibration_error", "fit_temperature"]


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, num_bins: int = 15) -> float:
    """Expected calibration error: the confidence-weighted gap between confidence and accuracy.

    Samples are binned by their top probability into ``num_bins`` equal-width bins of ``(0, 1]``; the ECE is
    ``sum_b (n_b / n) |accuracy_b - confidence_b|``.

    Args:
        probabilities: ``(N, num_classes)`` class probabilities (rows sum to 1).
        labels: ``(N,)`` true classes.
        num_bins: number of confidence bins.

    Raises:
        ValueError: shapes disagree, there are no samples, or ``num_bins`` < 1.

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
        >>> round(expected_calibration_error(p, torch.tensor([0, 0, 0, 1])), 3)
        0.1
    """
    probabilities = torch.as_tensor(probabilities, dtype=torch.float64)
    labels = torch.as_tensor(labels).long().reshape(-1)
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.numel() or labels.numel() == 0:
        raise ValueError(
            f"expected (N, num_classes) probabilities and N labels with N > 0; got {tuple(probabilities.shape)} "
            f"and {labels.numel()} labels."
        )
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1; got {num_bins}.")
    confidence, prediction = probabilities.max(dim=1)
    correct = (prediction == labels.to(prediction.device)).double()
    bins = torch.clamp(torch.ceil(confidence * num_bins).long() - 1, 0, num_bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(num_bins):
        inside = bins == b
        if inside.any():
            ece += inside.double().mean() * (correct[inside].mean() - confidence[inside].mean()).abs()
    return float(ece)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature ``T`` that minimises the negative log-likelihood of ``softmax(logits / T)``.

    A log-spaced grid over ``bounds`` finds the basin, then a golden-section search refines it (the NLL is
    smooth and unimodal in ``log T``), so the result is deterministic and needs no learning rate.

    Args:
        logits: ``(N, num_classes)`` held-out logits (validation data, never the test set).
        labels: ``(N,)`` true classes.
        bounds: the range searched.

    Raises:
        ValueError: shapes disagree, the logits are not finite, or ``bounds`` is not ``0 < low < high``.

    Example:
        >>> _ = torch.manual_seed(0); labels = torch.randint(0, 3, (20000,))
        >>> z = torch.randn(20000, 3) + 2.0 * torch.nn.functional.one_hot(labels, 3)
        >>> # the calibrated logits of this toy are 2 z; logits 5 times too large want T = 5
        >>> 4.7 < fit_temperature(5.0 * 2.0 * z, labels) < 5.3
        True
    """
    logits = torch.as_tensor(logits, dtype=torch.float64)
    labels = torch.as_tensor(labels).long().reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.numel() or labels.numel() == 0:
        raise ValueError(f"expected (N, num_classes) logits and N labels; got {tuple(logits.shape)}, {labels.numel()}.")
    if not torch.isfinite(logits).all():
        raise ValueError("the logits hold NaN or Inf; check the network and its inputs before calibrating.")
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high; got {bounds}.")

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / float(torch.tensor(log_t).exp()), labels))

    grid = torch.linspace(torch.tensor(low).log(), torch.tensor(high).log(), 201).tolist()
    best = min(range(len(grid)), key=lambda i: nll(grid[i]))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (5**0.5 - 1) / 2
    for _ in range(60):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(c) < nll(d):
            b = d
        else:
            a = c
    return float(torch.tensor((a + b) / 2).exp())
