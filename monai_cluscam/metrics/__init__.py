"""Faithfulness and localisation metrics for saliency maps, 2D and 3D alike."""

from __future__ import annotations

from monai_cluscam.metrics.localization import attribution_outside_mask, energy_pointing_game, pointing_game

__all__ = ["attribution_outside_mask", "energy_pointing_game", "pointing_game"]
