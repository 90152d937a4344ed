"""Ignite handlers for MONAI workflows: explain during evaluation, save predictions, audit during training,
and the faithfulness and localisation metrics as Ignite handlers (:mod:`monai_cluscam.handlers.metrics`, over the
MONAI metrics of :mod:`monai_cluscam.metrics`, which never import Ignite)."""

from __future__ import annotations

from monai_cluscam.handlers.audit import AttributionAuditHandler, AttributionAuditWarning
from monai_cluscam.handlers.explain import ClusCAMHandler, ExplanationFailure
from monai_cluscam.handlers.metrics import (
    AttributionOutsideMask,
    AverageDrop,
    AverageGain,
    DeletionAUC,
    EnergyPointingGame,
    IncreaseInConfidence,
    InsertionAUC,
    PointingGame,
    SaliencyMetricHandler,
)
from monai_cluscam.handlers.prediction_saver import PredictionSaver
from monai_cluscam.handlers.report import ClassificationReport, summarize_confusion

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
    "SaliencyMetricHandler",
    "summarize_confusion",
]
