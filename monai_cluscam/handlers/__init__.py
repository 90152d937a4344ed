"""Ignite handlers for MONAI workflows: explain during evaluation, save predictions, audit during training,
and the faithfulness and localisation metrics (re-exported from :mod:`monai_cluscam.metrics`)."""

from __future__ import annotations

from monai_cluscam.handlers.audit import AttributionAuditHandler, AttributionAuditWarning
from monai_cluscam.handlers.explain import ClusCAMHandler, ExplanationFailure
from monai_cluscam.handlers.prediction_saver import PredictionSaver
from monai_cluscam.handlers.report import ClassificationReport, summarize_confusion
from monai_cluscam.metrics.handlers import (
    AttributionOutsideMask,
    AverageDrop,
    AverageGain,
    DeletionAUC,
    EnergyPointingGame,
    IncreaseInConfidence,
    InsertionAUC,
    PointingGame,
)

__all__ = [
    "AttributionAuditHandler",
    "AttributionAuditWarning",
    "AttributionOutsideMask",
    "AverageDrop",
    "AverageGain",
    "ClassificationReport",
    "ClusCAMHandler",
    "DeletionAUC",
    "EnergyPointingGame",
    "ExplanationFailure",
    "IncreaseInConfidence",
    "InsertionAUC",
    "PointingGame",
    "PredictionSaver",
    "summarize_confusion",
]
