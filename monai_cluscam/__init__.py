"""monai-cluscam: gradient-free, cluster-based explanations (ClusCAM) for MONAI classifiers."""

from __future__ import annotations

from monai_cluscam.cam import (
    RISE,
    BaseCAM,
    ClusCAM,
    ClusCAMExplanation,
    DecomCAM,
    GradCAM,
    GradCAMpp,
    NumClustersSelection,
    Occlusion,
    ScoreCAM,
    masked_forward,
    register_method,
    select_num_clusters,
    unregister_method,
)

__version__ = "0.1.0"

__all__ = [
    "BaseCAM",
    "ClusCAM",
    "ClusCAMExplanation",
    "DecomCAM",
    "GradCAM",
    "GradCAMpp",
    "NumClustersSelection",
    "Occlusion",
    "RISE",
    "ScoreCAM",
    "__version__",
    "masked_forward",
    "register_method",
    "select_num_clusters",
    "unregister_method",
]
