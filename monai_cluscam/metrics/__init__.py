"""Faithfulness and localisation metrics for saliency maps, 2D and 3D alike: plain functions on tensors and
MONAI metrics (``metric(y_pred=saliency, y=images_or_masks)``), ROAD (:mod:`monai_cluscam.metrics.road`), how
readable a map is (its detail and its share on the empty background, :mod:`monai_cluscam.metrics.readability`),
the training audit's summaries
(:mod:`monai_cluscam.metrics.audit`) and the sanity checks of a method, whether its map depends on the model at
all (:mod:`monai_cluscam.metrics.sanity`). Their Ignite handlers for MONAI's engines live in
:mod:`monai_cluscam.handlers` (this package never imports Ignite)."""

from __future__ import annotations

from monai_cluscam.metrics.audit import (
    coarse_maps,
    distance_to_mask,
    map_correlation,
    outside_by_class,
    peak_margin,
    peak_outside_mask,
    peak_voxels,
    subject_mask,
    summarize_outside,
)
from monai_cluscam.metrics.base import SaliencyMetric
from monai_cluscam.metrics.calibration import expected_calibration_error, fit_temperature
from monai_cluscam.metrics.faithfulness import (
    AverageDropMetric,
    AverageGainMetric,
    ConfidenceScores,
    DeletionAUCMetric,
    IncreaseInConfidenceMetric,
    InsertionAUCMetric,
    PerturbationCurve,
    average_drop,
    average_gain,
    confidence_scores,
    deletion_curve,
    increase_in_confidence,
    insertion_curve,
)
from monai_cluscam.metrics.localization import (
    AttributionOutsideMaskMetric,
    EnergyPointingGameMetric,
    PointingGameMetric,
    attribution_outside_mask,
    energy_pointing_game,
    pointing_game,
)
from monai_cluscam.metrics.readability import (
    background_mask,
    background_share,
    correlation_length,
    peak_on_background,
)
from monai_cluscam.metrics.road import RoadCurve, noisy_linear_imputation, road_curve
from monai_cluscam.metrics.sanity import (
    SanityCheckResult,
    cascade_layers,
    cascade_steps_to,
    cascading_randomization,
    compare_models,
    plot_sanity_checks,
    spearman_correlation,
    structural_similarity,
)

__all__ = [
    "AttributionOutsideMaskMetric",
    "AverageDropMetric",
    "AverageGainMetric",
    "ConfidenceScores",
    "DeletionAUCMetric",
    "EnergyPointingGameMetric",
    "IncreaseInConfidenceMetric",
    "InsertionAUCMetric",
    "PerturbationCurve",
    "PointingGameMetric",
    "RoadCurve",
    "SaliencyMetric",
    "SanityCheckResult",
    "attribution_outside_mask",
    "average_drop",
    "average_gain",
    "background_mask",
    "background_share",
    "cascade_layers",
    "cascade_steps_to",
    "cascading_randomization",
    "coarse_maps",
    "compare_models",
    "confidence_scores",
    "correlation_length",
    "deletion_curve",
    "distance_to_mask",
    "energy_pointing_game",
    "expected_calibration_error",
    "fit_temperature",
    "increase_in_confidence",
    "insertion_curve",
    "map_correlation",
    "noisy_linear_imputation",
    "outside_by_class",
    "peak_margin",
    "peak_on_background",
    "peak_outside_mask",
    "peak_voxels",
    "plot_sanity_checks",
    "pointing_game",
    "road_curve",
    "spearman_correlation",
    "structural_similarity",
    "subject_mask",
    "summarize_outside",
]
