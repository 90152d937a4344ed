"""Attribution methods: ClusCAM and the baselines it is measured against."""

from __future__ import annotations

from monai_cluscam.cam.base import BaseCAM, masked_forward
from monai_cluscam.cam.cluscam import ClusCAM, ClusCAMExplanation, NumClustersSelection, select_num_clusters
from monai_cluscam.cam.decomcam import DecomCAM
from monai_cluscam.cam.gradcam import GradCAM, GradCAMpp
from monai_cluscam.cam.occlusion import Occlusion
from monai_cluscam.cam.rise import RISE, InputPerturbationCAM
from monai_cluscam.cam.scorecam import ScoreCAM

__all__ = [
    "BaseCAM",
    "ClusCAM",
    "ClusCAMExplanation",
    "DecomCAM",
    "GradCAM",
    "GradCAMpp",
    "InputPerturbationCAM",
    "NumClustersSelection",
    "Occlusion",
    "RISE",
    "ScoreCAM",
    "masked_forward",
    "select_num_clusters",
]
