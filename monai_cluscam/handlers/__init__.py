"""Ignite handlers for MONAI workflows: explain during evaluation, save predictions, audit during training."""

from __future__ import annotations

from monai_cluscam.handlers.audit import AttributionAuditHandler, AttributionAuditWarning
from monai_cluscam.handlers.explain import ClusCAMHandler, ExplanationFailure
from monai_cluscam.handlers.prediction_saver import PredictionSaver

__all__ = [
    "AttributionAuditHandler",
    "AttributionAuditWarning",
    "ClusCAMHandler",
    "ExplanationFailure",
    "PredictionSaver",
]
