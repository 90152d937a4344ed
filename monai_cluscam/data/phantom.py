"""Brain phantoms with simulated Alzheimer-like atrophy and the ground truth of what was changed.

Every phantom is the MNI152 T1 template packaged in ``nilearn`` (read from disk, never downloaded), seen
through a random pose, with atrophy whose strength follows the class, then a random intensity scaling,
bias field and noise:

* **Ventricular enlargement**: periventricular tissue within ``r`` mm of the lateral ventricles becomes
  CSF; ``r`` grows with severity (:data:`VENTRICLE_GROWTH_MM`, times a random factor in 0.8-1.2).
* **Medial temporal atrophy**: along each hippocampus (a segment from head to tail in MNI space,
  :data:`HIPPOCAMPUS_AXES_MM`, with a Gaussian fall-off of :data:`MEDIAL_TEMPORAL_SIGMA_MM`) tissue
  within ``r`` mm of CSF or the brain surface becomes CSF: the structure shrinks and the surrounding CSF
  spaces widen; ``r`` follows :data:`MEDIAL_TEMPORAL_LOSS_MM` with a random factor per hemisphere.

Severity is 0 (``Non_Demented``), 1 (``Very_Mild_Demented``), 2 (``Mild_Demented``) and 3
(``Moderate_Demented``). The ``seed`` alone fixes the subject: pose, intensity, bias field, noise and the
per-phantom atrophy factors. Two phantoms with the same seed and different labels therefore differ only
where atrophy was simulated, and ``mask`` is nonzero exactly there (``Non_Demented`` has an empty mask).
``region_mask`` is the anatomy that atrophy may change, whatever the class: the lateral ventricles and the
medial temporal lobes (every voxel the strongest atrophy could change), dilated by :data:`REGION_MARGIN_MM`.

**Pose** is applied to the data, not hidden in the affine: the scanner grid is fixed and axis-aligned
(RAS, centred on the world origin, ``fov_mm`` wide), and the head inside it is rotated (up to 8 degrees
about each axis), shifted (up to 6 mm) and scaled (0.95-1.05 per axis). ``Phantom.pose`` maps scanner
millimetres to MNI millimetres; masks are resampled through the same pose, so image and masks always
agree. Intensities are randomised independently of the label (global scale 0.6-1.4, gamma 0.8-1.25,
smooth multiplicative bias field, Rician or Gaussian noise of 1-3.5 % of the scale), so global
intensity does not give the class away.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import SpaceKeys
from scipy import ndimage as ndi

from monai_cluscam.data.alzheimer import CLASS_NAMES

from ._template import BRAIN_THRESHOLD, FAR_MM, load_template

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_FOV_MM",
    "DEFAULT_SHAPES",
    "DEFAULT_SLICE_MM",
    "HIPPOCAMPUS_AXES_MM",
    "KINDS",
    "MASK_MEDIAL_TEMPORAL",
    "MASK_VENTRICLES",
    "MEDIAL_TEMPORAL_LOSS_MM",
    "MEDIAL_TEMPORAL_SIGMA_MM",
    "NOISE_MODELS",
    "REGION_MARGIN_MM",
    "SEVERITY",
    "VENTRICLE_GROWTH_MM",
    "Phantom",
    "class_label",
    "make_phantom",
]

SEVERITY = {"Non_Demented": 0, "Very_Mild_Demented": 1, "Mild_Demented": 2, "Moderate_Demented": 3}
"""Atrophy severity (0 none ... 3 strongest) of each class name."""

KINDS = ("volume", "slice")
"""Phantom kinds: a 3D volume ``(1, X, Y, Z)`` or a 2D axial slice ``(1, W, H)``."""

NOISE_MODELS = ("rician", "gaussian")
"""Noise models: Rician (magnitude MRI, positive background) or additive Gaussian."""

DEFAULT_SHAPES = {"volume": (96, 96, 96), "slice": (128, 128)}
"""Default spatial shape of each kind (128 x 128 slices match the Alzheimer MRI dataset)."""

DEFAULT_FOV_MM = 192.0
"""Default field of view (mm) along every axis; voxel size is ``fov_mm / shape``."""

DEFAULT_SLICE_MM = 12.0
"""Default MNI height (z, mm) of axial slices: through the bodies of the lateral ventricles."""

VENTRICLE_GROWTH_MM = (0.0, 1.5, 3.0, 5.0)
"""Ventricular enlargement (mm of periventricular tissue turned to CSF) per severity 0..3."""

MEDIAL_TEMPORAL_LOSS_MM = (0.0, 2.0, 3.5, 5.5)
"""Medial temporal tissue loss (mm eroded from the CSF/surface side) per severity 0..3."""

HIPPOCAMPUS_AXES_MM = (((24.0, -10.0, -22.0), (28.0, -38.0, 2.0)), ((-24.0, -10.0, -22.0), (-28.0, -38.0, 2.0)))
"""Hippocampal long axes (head, tail) in MNI mm, right then left hemisphere."""

MEDIAL_TEMPORAL_SIGMA_MM = 8.0
"""Gaussian fall-off (mm) of medial temporal atrophy around each hippocampal axis."""

MASK_VENTRICLES = 1
"""``Phantom.mask`` value where ventricular enlargement changed the image."""

MASK_MEDIAL_TEMPORAL = 2
"""``Phantom.mask`` value where medial temporal atrophy changed the image."""

REGION_MARGIN_MM = 4.0
"""Dilation (mm) of the anatomical atrophy region (``Phantom.region_mask``) beyond the largest change."""

_BRAIN_CENTRE_MNI = np.array([0.0, -17.0, 5.0])
_MAX_ROTATION_DEG = 8.0
_MAX_SHIFT_MM = 6.0
_SCALE_RANGE = (0.95, 1.05)
_SLICE_JITTER_MM = 3.0
_ATROPHY_FACTOR_RANGE = (0.8, 1.2)
_INTENSITY_SCALE_RANGE = (0.6, 1.4)
_GAMMA_RANGE = (0.8, 1.25)
_BIAS_STD = 0.12
_NOISE_RANGE = (0.01, 0.035)
_CHANGE_TOLERANCE = 0.02
_ROI_CUTOFF = 0.05
_SHAPE_RANGE = {"volume": (8, 256), "slice": (8, 1024)}
_FOV_RANGE_MM = (50.0, 400.0)
_SLICE_RANGE_MM = (-40.0, 60.0)


@dataclass(frozen=True)
class Phantom:
    """One phantom: image, ground truth and geometry.

    Attributes:
        image: float32 ``(1, X, Y, Z)`` for volumes, ``(1, W, H)`` for slices.
        mask: uint8, same shape: 0 where the image equals the ``Non_Demented`` phantom of the same seed
            (and other arguments), :data:`MASK_VENTRICLES` / :data:`MASK_MEDIAL_TEMPORAL` where that
            atrophy changed it. All zero for ``Non_Demented``.
        brain_mask: uint8, same shape, 1 inside the brain (CSF spaces included).
        region_mask: uint8, same shape, the anatomy the class-deciding change lies in, for every class alike:
            for atrophy phantoms :data:`MASK_VENTRICLES` around the lateral ventricles and
            :data:`MASK_MEDIAL_TEMPORAL` in the medial temporal lobes (see :func:`_atrophy_region`), inside
            the brain.
        label: class index into :data:`CLASS_NAMES`.
        class_name: ``CLASS_NAMES[label]``.
        severity: 0..3, see :data:`SEVERITY`.
        affine: 4x4 voxel-to-RAS affine (mm). Volumes: voxel axes along +x, +y, +z. Slices: a one-slice
            volume ``(W, H, 1)`` whose first axis runs from the patient's right to left and second from
            anterior to posterior, i.e. the array is what ``monai_cluscam.io.load_image`` (and MONAI's
            ``PILReader``) returns for a radiological-view picture of the slice.
        pose: 4x4 map from scanner (world) mm to MNI mm of this phantom's head.
        kind: ``"volume"`` or ``"slice"``.
        seed: the seed it was made with.
    """

    image: np.ndarray
    mask: np.ndarray
    brain_mask: np.ndarray
    region_mask: np.ndarray
    label: int
    class_name: str
    severity: int
    affine: np.ndarray
    pose: np.ndarray
    kind: str
    seed: int

    def as_metatensor(self, field: str = "image") -> MetaTensor:
        """``image``, ``mask``, ``brain_mask`` or ``region_mask`` as a MONAI ``MetaTensor`` carrying :attr:`affine`.

        Args:
            field: which array to wrap.

        Returns:
            A float32 ``MetaTensor`` (``(1, *spatial)``) with ``affine``, ``spatial_shape``, ``space``
            ``"RAS"`` and ``label`` in its metadata.

        Raises:
            ValueError: ``field`` is not one of the four arrays.

        Example:
            >>> p = make_phantom("Non_Demented", seed=0, kind="slice", shape=(32, 32))
            >>> tuple(p.as_metatensor().shape)
            (1, 32, 32)
        """
        fields = ("image", "mask", "brain_mask", "region_mask")
        if field not in fields:
            raise ValueError(f"Unknown phantom field {field!r}; expected one of {', '.join(fields)}.")
        array = getattr(self, field)
        meta = {
            "filename_or_obj": f"phantom_{self.class_name}_seed{self.seed}_{field}",
            "original_affine": self.affine.copy(),
            "spatial_shape": np.asarray(array.shape[1:], dtype=np.int64),
            "space": SpaceKeys.RAS,
            "original_channel_dim": 0,
            "label": self.label,
        }
        tensor = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))
        return MetaTensor(tensor, affine=torch.as_tensor(self.affine, dtype=torch.float64), meta=meta)


def class_label(label: int | str) -> int:
    """Class index of ``label`` given as an index (0..3) or a name from :data:`CLASS_NAMES`.

    Raises:
        ValueError: unknown index or name.

    Example:
        >>> class_label("Non_Demented"), class_label(1)
        (2, 1)
    """
    if isinstance(label, str):
        if label in CLASS_NAMES:
            return CLASS_NAMES.index(label)
    elif isinstance(label, numbers.Integral) and not isinstance(label, bool):
        if 0 <= int(label) < len(CLASS_NAMES):
            return int(label)
    allowed = ", ".join(f"{i} ({name})" for i, name in enumerate(CLASS_NAMES))
    raise ValueError(f"Unknown label {label!r}; expected a class index or name: {allowed}.")


def _check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}.")
    return value


def _check_seed(seed: object) -> int:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def _check_shape(shape: int | Sequence[int] | None, kind: str) -> tuple[int, ...]:
    ndim = len(DEFAULT_SHAPES[kind])
    if shape is None:
        return DEFAULT_SHAPES[kind]
    values = [shape] * ndim if isinstance(shape, numbers.Integral) else shape
    lo, hi = _SHAPE_RANGE[kind]
    try:
        out = tuple(int(v) for v in values)
        valid = (
            not isinstance(shape, str)
            and len(out) == ndim
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and lo <= v <= hi for v in values)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            f"Bad shape {shape!r} for kind {kind!r}: expected {ndim} integers in [{lo}, {hi}] "
            f"(e.g. {DEFAULT_SHAPES[kind]}) or one integer used for every axis."
        )
    return out


def _check_fov(fov_mm: float | Sequence[float], ndim: int) -> np.ndarray:
    values = [fov_mm] * ndim if isinstance(fov_mm, numbers.Real) else fov_mm
    lo, hi = _FOV_RANGE_MM
    try:
        out = np.array([float(v) for v in values])
        valid = not isinstance(fov_mm, str) and out.shape == (ndim,) and bool(np.all((out >= lo) & (out <= hi)))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"Bad fov_mm {fov_mm!r}: expected one number or {ndim} numbers in [{lo}, {hi}] mm.")
    return out


def _check_slice_mm(slice_mm: float | None) -> float:
    if slice_mm is None:
        return DEFAULT_SLICE_MM
    lo, hi = _SLICE_RANGE_MM
    if not isinstance(slice_mm, numbers.Real) or not lo <= float(slice_mm) <= hi:
        raise ValueError(f"Bad slice_mm {slice_mm!r}: expected an MNI height in [{lo}, {hi}] mm or None.")
    return float(slice_mm)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _grid_affine(kind: str, shape: tuple[int, ...], fov: np.ndarray, height: float) -> np.ndarray:
    """Voxel-to-scanner affine of the output grid, centred on the world origin."""
    spacing = fov / np.asarray(shape)
    affine = np.eye(4)
    if kind == "volume":
        affine[:3, :3] = np.diag(spacing)
        affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * spacing
    else:
        affine[:3, :3] = np.diag([-spacing[0], -spacing[1], float(spacing.min())])
        affine[:3, 3] = [(shape[0] - 1) / 2 * spacing[0], (shape[1] - 1) / 2 * spacing[1], height]
    return affine


Box = tuple[slice, slice, slice]


def _grid_box(voxel_to_space: np.ndarray, lo: np.ndarray, hi: np.ndarray, grid_shape: tuple[int, ...]) -> Box:
    """Smallest block of the grid holding every voxel that ``voxel_to_space`` maps into the box [lo, hi]."""
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    voxels = (np.linalg.inv(voxel_to_space) @ corners.T)[:3]
    start = np.clip(np.floor(voxels.min(1)).astype(int), 0, grid_shape)
    stop = np.clip(np.ceil(voxels.max(1)).astype(int) + 1, 0, grid_shape)
    return tuple(slice(int(a), int(max(a, b))) for a, b in zip(start, stop, strict=True))


def _mapped(matrix: np.ndarray, box: Box) -> list[np.ndarray]:
    """``matrix @ (i, j, k, 1)`` for every voxel of ``box``, one float32 array per output row."""
    axes = [np.arange(s.start, s.stop, dtype=np.float32) for s in box]
    grids = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
    return [
        (matrix[row, 0] * grids[0] + matrix[row, 1] * grids[1] + matrix[row, 2] * grids[2] + matrix[row, 3]).astype(
            np.float32
        )
        for row in range(3)
    ]


def _sample(volume: np.ndarray, voxel_to_template: np.ndarray, box: Box, grid_shape: tuple, fill: float) -> np.ndarray:
    """Trilinear samples of a template map at the voxels of ``box``; ``fill`` on the rest of the grid."""
    out = np.full(grid_shape, fill, dtype=np.float32)
    if all(s.stop > s.start for s in box):
        out[box] = ndi.map_coordinates(
            volume,
            _mapped(voxel_to_template, box),
            order=1,
            mode="constant",
            cval=fill,
            prefilter=False,
            output=np.float32,
        )
    return out


def _medial_temporal_radius(mni: list[np.ndarray], loss_mm: float, factors: np.ndarray) -> np.ndarray:
    """Tissue loss radius (mm) at each point: largest over the two hemispheres' hippocampal capsules."""
    radius = np.zeros(mni[0].shape, dtype=np.float32)
    for (head, tail), factor in zip(HIPPOCAMPUS_AXES_MM, factors, strict=True):
        head_v, axis = np.asarray(head), np.asarray(tail) - np.asarray(head)
        rel = [mni[d] - np.float32(head_v[d]) for d in range(3)]
        t = np.clip(sum(rel[d] * np.float32(axis[d]) for d in range(3)) / np.float32(axis @ axis), 0, 1)
        dist2 = sum((rel[d] - t * np.float32(axis[d])) ** 2 for d in range(3))
        weight = np.exp(dist2 * np.float32(-0.5 / MEDIAL_TEMPORAL_SIGMA_MM**2))
        weight[weight < _ROI_CUTOFF] = 0
        np.maximum(radius, weight * np.float32(loss_mm * factor), out=radius)
    return radius


def _atrophy(
    t1: np.ndarray, voxel_to_mni: np.ndarray, severity: int, factors: np.ndarray, edge: float
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the atrophy of ``severity`` to sampled template intensities; return them and the mask.

    Tissue within the (per-point) radius of the ventricles or, near the hippocampi, of CSF/the surface is
    pulled towards CSF intensity over a ramp of ``edge`` mm. Changes smaller than the tolerance are dropped,
    so that the mask is nonzero exactly where the intensities differ.
    """
    template = load_template()
    grid_shape = t1.shape
    to_template = np.linalg.inv(template.affine) @ voxel_to_mni
    ventricle_mm = VENTRICLE_GROWTH_MM[severity] * factors[0]
    margin = max(VENTRICLE_GROWTH_MM) * _ATROPHY_FACTOR_RANGE[1] + 2.0
    lo, hi = template.ventricle_extent_mm
    box = _grid_box(voxel_to_mni, lo - margin, hi + margin, grid_shape)
    distance = _sample(template.ventricle_distance, to_template, box, grid_shape, FAR_MM)
    w_ventricles = np.clip((np.float32(ventricle_mm) - distance) / np.float32(edge), 0, 1) * (distance > 0)

    axes = np.asarray(HIPPOCAMPUS_AXES_MM).reshape(-1, 3)
    reach = MEDIAL_TEMPORAL_SIGMA_MM * np.sqrt(2 * np.log(1 / _ROI_CUTOFF))
    box = _grid_box(voxel_to_mni, axes.min(0) - reach, axes.max(0) + reach, grid_shape)
    w_temporal = np.zeros(grid_shape, dtype=np.float32)
    if all(s.stop > s.start for s in box):
        radius = _medial_temporal_radius(_mapped(voxel_to_mni, box), MEDIAL_TEMPORAL_LOSS_MM[severity], factors[1:])
        depth = _sample(template.tissue_depth, to_template, box, grid_shape, FAR_MM)[box]
        w_temporal[box] = np.clip((radius - depth) / np.float32(edge), 0, 1) * (depth > 0)

    delta = -np.maximum(w_ventricles, w_temporal) * np.maximum(t1 - np.float32(template.csf_value), 0)
    changed = delta < -_CHANGE_TOLERANCE
    kind = np.where(w_ventricles >= w_temporal, MASK_VENTRICLES, MASK_MEDIAL_TEMPORAL)
    return np.where(changed, t1 + delta, t1), np.where(changed, kind, 0).astype(np.uint8)


def _atrophy_region(t1: np.ndarray, voxel_to_mni: np.ndarray, brain: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Where atrophy is simulated, independent of the class: the lateral ventricles with every voxel the
    strongest atrophy (severity 3, largest random factors) could change, each structure dilated by
    :data:`REGION_MARGIN_MM` and kept inside ``brain``; labelled as ``Phantom.mask`` is."""
    strongest = np.full(3, _ATROPHY_FACTOR_RANGE[1])
    _, changed = _atrophy(t1, voxel_to_mni, len(VENTRICLE_GROWTH_MM) - 1, strongest, max(1.0, float(spacing.min())))
    template = load_template()
    box = tuple(slice(0, n) for n in t1.shape)
    to_template = np.linalg.inv(template.affine) @ voxel_to_mni
    distance = _sample(template.ventricle_distance, to_template, box, t1.shape, FAR_MM)
    region = np.zeros(t1.shape, dtype=np.uint8)
    for value, core in ((MASK_MEDIAL_TEMPORAL, changed == MASK_MEDIAL_TEMPORAL),
                        (MASK_VENTRICLES, (changed == MASK_VENTRICLES) | (distance <= 0.5))):
        if core.any():
            near = ndi.distance_transform_edt(~core, sampling=spacing) <= REGION_MARGIN_MM
            region[near & (brain > 0)] = value
    return region


def _bias_field(scanner: list[np.ndarray], coefficients: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field ``exp(polynomial of degree 2)`` in scanner coordinates (per 100 mm)."""
    u = [c * np.float32(0.01) for c in scanner]
    terms = [u[0], u[1], u[2], u[0] * u[0], u[1] * u[1], u[2] * u[2], u[0] * u[1], u[0] * u[2], u[1] * u[2]]
    return np.exp(sum(np.float32(c) * term for c, term in zip(coefficients, terms, strict=True)))


def make_phantom(
    label: int | str,
    seed: int = 0,
    *,
    kind: str = "volume",
    shape: int | Sequence[int] | None = None,
    fov_mm: float | Sequence[float] = DEFAULT_FOV_MM,
    slice_mm: float | None = None,
    noise: str = "rician",
) -> Phantom:
    """Make one brain phantom of class ``label``.

    Args:
        label: class index (0..3) or name from :data:`CLASS_NAMES`.
        seed: non-negative integer fixing pose, intensity, noise and atrophy factors. Same arguments give
            identical bytes; the same seed with another label gives the same subject with other atrophy.
        kind: ``"volume"`` for ``(1, X, Y, Z)`` or ``"slice"`` for one axial slice ``(1, W, H)``.
        shape: spatial shape (default :data:`DEFAULT_SHAPES`), or one integer for every axis. For slices
            it is ``(width, height)``: the axis order of the array (see :attr:`Phantom.affine`).
        fov_mm: field of view in mm, one value or one per axis; the voxel size is ``fov_mm / shape``.
        slice_mm: MNI height (z, mm) of an axial slice (default :data:`DEFAULT_SLICE_MM`, through the
            lateral ventricles; about -15 cuts through the hippocampi). The slice is an axial plane of the
            scanner through that height, jittered by up to 3 mm, so it is slightly oblique to the anatomy
            like the pose. Ignored for volumes.
        noise: ``"rician"`` or ``"gaussian"``.

    Returns:
        The :class:`Phantom`.

    Raises:
        ValueError: unknown label, kind or noise model, or a bad seed, shape, ``fov_mm`` or ``slice_mm``.

    Example:
        >>> p = make_phantom("Moderate_Demented", seed=3, kind="slice", shape=(64, 64))
        >>> p.image.shape, p.image.dtype.name, p.label, bool(p.mask.any())
        ((1, 64, 64), 'float32', 1, True)
    """
    label = class_label(label)
    seed = _check_seed(seed)
    kind = _check_choice("kind", kind, KINDS)
    noise = _check_choice("noise model", noise, NOISE_MODELS)
    spatial = _check_shape(shape, kind)
    fov = _check_fov(fov_mm, len(spatial))
    height = _check_slice_mm(slice_mm)
    class_name = CLASS_NAMES[label]
    severity = SEVERITY[class_name]

    rng = np.random.default_rng(seed)
    angles = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG, 3))
    shift = rng.uniform(-_MAX_SHIFT_MM, _MAX_SHIFT_MM, 3)
    scale = rng.uniform(*_SCALE_RANGE, 3)
    slice_jitter = rng.uniform(-_SLICE_JITTER_MM, _SLICE_JITTER_MM)
    ventricle_factor = rng.uniform(*_ATROPHY_FACTOR_RANGE)
    temporal_factors = rng.uniform(*_ATROPHY_FACTOR_RANGE, 2)
    intensity_scale = rng.uniform(*_INTENSITY_SCALE_RANGE)
    gamma = rng.uniform(*_GAMMA_RANGE)
    bias = rng.normal(0.0, _BIAS_STD, 9)
    sigma = rng.uniform(*_NOISE_RANGE) * intensity_scale

    pose = np.eye(4)
    pose[:3, :3] = _rotation(angles) @ np.diag(scale)
    pose[:3, 3] = _BRAIN_CENTRE_MNI + shift
    if kind == "slice":
        target = np.array([_BRAIN_CENTRE_MNI[0], _BRAIN_CENTRE_MNI[1], height + slice_jitter, 1.0])
        grid_height = float((np.linalg.inv(pose) @ target)[2])
        grid_shape = (*spatial, 1)
    else:
        grid_height = 0.0
        grid_shape = spatial
    affine = _grid_affine(kind, spatial, fov, grid_height)

    template = load_template()
    grid = tuple(slice(0, n) for n in grid_shape)
    voxel_to_mni = pose @ affine
    t1 = _sample(template.t1, np.linalg.inv(template.affine) @ voxel_to_mni, grid, grid_shape, 0.0)
    brain_mask = (t1 >= BRAIN_THRESHOLD).astype(np.uint8)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    region_mask = _atrophy_region(t1, voxel_to_mni, brain_mask, spacing)
    if severity > 0:
        edge = max(1.0, float(spacing.min()))
        factors = np.array([ventricle_factor, *temporal_factors])
        t1, mask = _atrophy(t1, voxel_to_mni, severity, factors, edge)
    else:
        mask = np.zeros(grid_shape, dtype=np.uint8)

    scanner = _mapped(affine, grid)
    image = np.power(t1, np.float32(gamma)) * (np.float32(intensity_scale) * _bias_field(scanner, bias))
    noise_a = rng.normal(0.0, sigma, grid_shape).astype(np.float32)
    noise_b = rng.normal(0.0, sigma, grid_shape).astype(np.float32)
    if noise == "rician":
        image = np.sqrt((image + noise_a) ** 2 + noise_b**2)
    else:
        image = image + noise_a
    arrays = [image.astype(np.float32), mask, brain_mask, region_mask]
    if kind == "slice":
        arrays = [a[..., 0] for a in arrays]
    return Phantom(
        image=arrays[0][None],
        mask=arrays[1][None],
        brain_mask=arrays[2][None],
        region_mask=arrays[3][None],
        label=label,
        class_name=class_name,
        severity=severity,
        affine=affine,
        pose=pose,
        kind=kind,
        seed=seed,
    )
