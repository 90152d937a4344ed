"""Temperature scaling of the trained network, folded into its last layer: the last step of training.

``calibrate`` loads the kept checkpoint, fits one temperature ``T`` on the validation slices
(:func:`monai_cluscam.metrics.fit_temperature`), divides the weights and bias of the network's final linear
layer by ``T`` and writes the checkpoint back, so the shipped weights give calibrated probabilities with the
same network definition and the same predictions. ``calibration.json`` beside the checkpoint records ``T``,
the validation ECE and negative log-likelihood before and after.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from monai_cluscam.io.files import atomic_write
from monai_cluscam.metrics import expected_calibration_error, fit_temperature
from torch import nn

__all__ = ["calibrate", "predict"]


def predict(network: nn.Module, dataloader, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, labels)`` of every batch of ``dataloader`` (dicts with ``image`` and ``label``), in eval mode."""
    was_training = network.training
    network.eval()
    logits, labels = [], []
    with torch.no_grad():
        for batch in dataloader:
            logits.append(network(torch.as_tensor(batch["image"]).to(device)).float().cpu())
            labels.append(torch.as_tensor(batch["label"]).long().reshape(-1))
    network.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def _last_linear(network: nn.Module) -> nn.Linear:
    layers = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("the network has no nn.Linear layer to fold the temperature into.")
    return layers[-1]


def calibrate(network: nn.Module, ckpt_path: str | os.PathLike, dataloader, device: torch.device | str = "cpu") -> dict:
    """Fit the temperature on ``dataloader`` (validation), fold it into ``ckpt_path`` and return the record."""
    ckpt_path = Path(ckpt_path)
    network.load_state_dict(torch.load(ckpt_path, map_location=device, weights_only=True))
    logits, labels = predict(network, dataloader, device)
    temperature = fit_temperature(logits, labels)
    calibrated = logits / temperature
    record = {
        "temperature": temperature,
        "validation_slices": int(labels.numel()),
        "validation_accuracy": float((logits.argmax(1) == labels).double().mean()),
        "validation_ece_before": expected_calibration_error(logits.softmax(1), labels),
        "validation_ece_after": expected_calibration_error(calibrated.softmax(1), labels),
        "validation_nll_before": float(nn.functional.cross_entropy(logits, labels)),
        "validation_nll_after": float(nn.functional.cross_entropy(calibrated, labels)),
    }
    last = _last_linear(network)
    with torch.no_grad():
        last.weight.div_(temperature)
        if last.bias is not None:
            last.bias.div_(temperature)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    atomic_write(ckpt_path, lambda stream: torch.save(state, stream), overwrite=True)
    payload = (json.dumps(record, indent=4) + "\n").encode()
    atomic_write(ckpt_path.with_name("calibration.json"), lambda stream: stream.write(payload), overwrite=True)
    print("calibration:", json.dumps(record))
    return record
