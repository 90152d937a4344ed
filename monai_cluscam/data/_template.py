"""The MNI152 template packaged inside ``nilearn`` and the maps derived from it, loaded once per process.

Only files that ship inside the installed ``nilearn`` wheel are read; nothing is fetched. The template is
the skull-stripped ICBM152 2009a symmetric T1 at 1 mm (``mni_icbm152_t1_tal_nlin_sym_09a_converted``).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

__all__ = ["BRAIN_THRESHOLD", "CSF_THRESHOLD", "FAR_MM", "MNI_T1_FILE", "Template", "load_template", "template_path"]

MNI_T1_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
"""File name of the T1 template inside ``nilearn/datasets/data``."""

BRAIN_THRESHOLD = 0.05
"""Template intensity (0..1) above which a voxel is brain (every brain voxel of the template is above)."""

CSF_THRESHOLD = 0.45
"""Template intensity (0..1) below which a voxel inside the brain counts as CSF rather than tissue."""

FAR_MM = 100.0
"""Distance given to voxels outside the region where a distance map is computed ("far from everything")."""

_VENTRICLE_SEEDS_MM = ((6.0, 2.0, 16.0), (-6.0, 2.0, 16.0))
_VENTRICLE_BOX_MM = ((-32.0, 32.0), (-50.0, 35.0), (-5.0, 40.0))
_VENTRICLE_MARGIN_MM = 15.0
_MTL_BOX_MM = ((-55.0, 55.0), (-65.0, 15.0), (-45.0, 20.0))
_CROP_MARGIN = 6


@dataclass(frozen=True)
class Template:
    """Template maps on a 1 mm grid cropped around the brain (all arrays share ``affine``).

    Attributes:
        t1: T1 intensity scaled to 0..1; the template is skull-stripped, so it is 0 outside the brain and at
            least :data:`BRAIN_THRESHOLD` inside (CSF included).
        ventricle_distance: mm from each voxel to the lateral ventricles (0 inside), ``FAR_MM`` outside the
            periventricular box.
        tissue_depth: mm from each tissue voxel to the nearest CSF or background voxel (0 on CSF and
            background), ``FAR_MM`` outside the medial temporal box.
        ventricles: lateral ventricle mask (bool).
        ventricle_extent_mm: ``(lo, hi)`` MNI corners of the ventricles' bounding box.
        affine: voxel-to-MNI affine (RAS mm).
        csf_value: T1 intensity given to tissue replaced by CSF.
    """

    t1: np.ndarray
    ventricle_distance: np.ndarray
    tissue_depth: np.ndarray
    ventricles: np.ndarray
    ventricle_extent_mm: tuple[np.ndarray, np.ndarray]
    affine: np.ndarray
    csf_value: float


def template_path(name: str = MNI_T1_FILE) -> Path:
    """Path of a file packaged in ``nilearn/datasets/data`` (found without importing ``nilearn``).

    Raises:
        RuntimeError: ``nilearn`` is not installed or the file is missing from it.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The MNI152 template comes from the 'nilearn' package; install nilearn>=0.10.")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the installed nilearn; reinstall nilearn>=0.10.")
    return path


def _box_slices(affine: np.ndarray, box_mm: tuple, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Voxel slices covering an axis-aligned MNI box on a grid with a diagonal affine."""
    out = []
    for axis, (lo, hi) in enumerate(box_mm):
        step, origin = affine[axis, axis], affine[axis, 3]
        a, b = sorted(((lo - origin) / step, (hi - origin) / step))
        out.append(slice(max(int(np.floor(a)), 0), min(int(np.ceil(b)) + 1, shape[axis])))
    return tuple(out)


def _ventricles(t1: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Lateral ventricles: dark connected components in a central box that hold the seed points."""
    box = _box_slices(affine, _VENTRICLE_BOX_MM, t1.shape)
    csf = np.zeros(t1.shape, dtype=bool)
    csf[box] = (t1[box] < CSF_THRESHOLD) & brain[box]
    labels, _ = ndi.label(csf)
    inverse = np.linalg.inv(affine)
    keep = []
    for seed in _VENTRICLE_SEEDS_MM:
        centre = np.rint(inverse[:3, :3] @ seed + inverse[:3, 3]).astype(int)
        lo, hi = centre - 4, centre + 5
        window = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        darkest = np.unravel_index(np.argmin(t1[window]), t1[window].shape)
        label = labels[tuple(lo + np.asarray(darkest))]
        if label == 0:
            raise RuntimeError("No ventricle found at the seed point; the packaged MNI152 template is unexpected.")
        keep.append(label)
    return np.isin(labels, keep)


def _distance_in_box(inside: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """Euclidean distance (1 mm voxels) to the nearest ``False`` voxel, computed in ``box`` only."""
    out = np.full(inside.shape, FAR_MM, dtype=np.float32)
    out[box] = ndi.distance_transform_edt(inside[box])
    return out


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Load the packaged T1 template and derive the brain, ventricle and depth maps (cached).

    Returns:
        The cached :class:`Template`.
    """
    image = nib.load(template_path())
    raw = np.asarray(image.dataobj)
    inside = raw > 0
    extent = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    lo = np.maximum([e[0] - _CROP_MARGIN for e in extent], 0)
    hi = np.minimum([e[-1] + _CROP_MARGIN + 1 for e in extent], raw.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    t1 = raw[crop].astype(np.float32) / float(raw.max())
    affine = image.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ lo
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise RuntimeError("The packaged MNI152 template is expected on a 1 mm RAS grid.")
    brain = t1 > 0
    if np.any(t1[brain] < BRAIN_THRESHOLD):
        raise RuntimeError("The packaged MNI152 template is expected to be skull-stripped with a clean background.")
    ventricles = _ventricles(t1, brain, affine)
    near_ventricles = _box_slices(
        affine,
        tuple((a - _VENTRICLE_MARGIN_MM, b + _VENTRICLE_MARGIN_MM) for a, b in _VENTRICLE_BOX_MM),
        t1.shape,
    )
    tissue = brain & (t1 >= CSF_THRESHOLD)
    core = ndi.binary_erosion(ventricles[near_ventricles])
    csf_value = float(np.percentile(t1[near_ventricles][core], 25))
    corners = np.argwhere(ventricles) @ affine[:3, :3].T + affine[:3, 3]
    return Template(
        t1=t1,
        ventricle_distance=_distance_in_box(~ventricles, near_ventricles),
        tissue_depth=_distance_in_box(tissue, _box_slices(affine, _MTL_BOX_MM, t1.shape)),
        ventricles=ventricles,
        ventricle_extent_mm=(corners.min(0), corners.max(0)),
        affine=affine,
        csf_value=csf_value,
    )
