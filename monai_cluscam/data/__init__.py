"""Synthetic data with ground truth: MNI152 brain phantoms with simulated atrophy or one focal lesion.

``make_phantom`` builds one phantom (3D volume or 2D axial slice) with the mask of what was changed, the
anatomical region atrophy is simulated in and a brain mask; ``make_focal_phantom`` builds a controlled-truth
phantom whose class (lesion or none) is decided by one focal lesion and nothing else;
``make_phantom_dataset`` writes a labelled set of atrophy phantoms (NIfTI, PNG or DICOM) and returns
MONAI-style items. Everything is seeded and nothing is downloaded: the template ships inside ``nilearn``.
``foreground_mask`` gives the brain mask of a real skull-stripped image (the training audit and the demo use it).
``phantom_items`` and ``LoadPhantomd`` make a phantom data set in memory, for training without files.

Data sets and item lists: ``alzheimer_items`` reads the Alzheimer MRI slice dataset in its published
layouts; ``image_items``, ``class_weights`` and ``per_class`` make and weigh the item lists of any data set.
"""

from __future__ import annotations

from .alzheimer import alzheimer_items, class_index
from .dataset import FORMATS, LoadPhantomd, make_phantom_dataset, phantom_items, save_phantom
from .focal import FOCAL_CLASS_NAMES, LESION_CONTRAST, LESION_RADIUS_MM, make_focal_phantom
from .items import UNLABELLED, class_weights, image_items, label_from_folder, per_class
from .masks import FOREGROUND_THRESHOLD, foreground_mask
from .phantom import (
    CLASS_NAMES,
    DEFAULT_FOV_MM,
    DEFAULT_SHAPES,
    DEFAULT_SLICE_MM,
    HIPPOCAMPUS_AXES_MM,
    KINDS,
    MASK_MEDIAL_TEMPORAL,
    MASK_VENTRICLES,
    MEDIAL_TEMPORAL_LOSS_MM,
    MEDIAL_TEMPORAL_SIGMA_MM,
    NOISE_MODELS,
    REGION_MARGIN_MM,
    SEVERITY,
    VENTRICLE_GROWTH_MM,
    Phantom,
    class_label,
    make_phantom,
)

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_FOV_MM",
    "DEFAULT_SHAPES",
    "DEFAULT_SLICE_MM",
    "FOCAL_CLASS_NAMES",
    "FORMATS",
    "FOREGROUND_THRESHOLD",
    "HIPPOCAMPUS_AXES_MM",
    "KINDS",
    "LESION_CONTRAST",
    "LESION_RADIUS_MM",
    "MASK_MEDIAL_TEMPORAL",
    "MASK_VENTRICLES",
    "MEDIAL_TEMPORAL_LOSS_MM",
    "MEDIAL_TEMPORAL_SIGMA_MM",
    "NOISE_MODELS",
    "REGION_MARGIN_MM",
    "SEVERITY",
    "UNLABELLED",
    "VENTRICLE_GROWTH_MM",
    "LoadPhantomd",
    "Phantom",
    "alzheimer_items",
    "class_index",
    "class_label",
    "class_weights",
    "foreground_mask",
    "image_items",
    "label_from_folder",
    "make_focal_phantom",
    "make_phantom",
    "make_phantom_dataset",
    "per_class",
    "phantom_items",
    "save_phantom",
]
