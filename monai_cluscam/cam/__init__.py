"""Attribution methods: ClusCAM and the baselines it is measured against, and their registry (:mod:`.registry`)."""

from __future__ import annotations

from monai_cluscam.cam.base import BaseCAM, CAMState, InputPerturbationCAM
from monai_cluscam.cam.cluscam import ClusCAM, ClusCAMExplanation, NumClustersSelection, select_num_clusters
from monai_cluscam.cam.decomcam import DecomCAM
from monai_cluscam.cam.gradcam import GradCAM, GradCAMpp
from monai_cluscam.cam.occlusion import Occlusion
from monai_cluscam.cam.registry import (
    MethodSpec,
    canonical_name,
    method_label,
    method_names,
    method_spec,
    register_method,
    unregister_method,
)
from monai_cluscam.cam.rise import RISE
from monai_cluscam.cam.scorecam import ScoreCAM
from monai_cluscam.utils import masked_forward

__all__ = [
    "BaseCAM",
    "CAMState",
    "ClusCAM",
    "ClusCAMExplanation",
    "DecomCAM",
    "GradCAM",
    "GradCAMpp",
    "InputPerturbationCAM",
    "MethodSpec",
    "NumClustersSelection",
    "Occlusion",
    "RISE",
    "ScoreCAM",
    "canonical_name",
    "masked_forward",
    "method_label",
    "method_names",
    "method_spec",
    "register_method",
    "select_num_clusters",
    "unregister_method",
]
