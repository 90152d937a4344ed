"""Ignite handlers for MONAI workflows: explain during evaluation, save predictions, audit during training."""

from __future__ import annotations

from monai_cluscam.handlers.explain import ClusCAMHandler, ExplanationFailure

__all__ = ["ClusCAMHandler", "ExplanationFailure"]
