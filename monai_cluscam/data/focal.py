"""Controlled-truth phantoms: the class is decided by one focal lesion and nothing else.

A focal phantom is the ``Non_Demented`` brain phantom of :func:`~monai_cluscam.data.make_phantom` (same seed,
kind, grid and noise: pose, intensity, bias field and noise are the subject's), with, for class 1
(``"lesion"``), one focal lesion at a random position inside the brain: a ball of random radius
(:data:`LESION_RADIUS_MM`) where the intensity is lowered by a random contrast (:data:`LESION_CONTRAST`, dark
like a focal atrophy or infarct on T1; a negative contrast raises it instead, bright like a FLAIR or enhancing
lesion), fading to nothing over one voxel at its edge. Class 0 (``"no_lesion"``) is the unchanged subject. So
the two classes of one seed differ only inside the lesion, and a faithful explanation of class 1 has only one
place to point: ``Phantom.mask`` (nonzero exactly where the image was changed, empty for class 0).
``Phantom.region_mask`` is the lesion's ball for both classes (for class 0: where the lesion would have been),
so a map can be scored against it whatever the class.

The lesion lies wholly inside the brain (its centre is at least its radius from the brain's edge) and is
drawn from its own random stream (``[seed, 1]``), so the subject is that of ``make_phantom(..., seed)``.
Volumes and slices alike; a slice's lesion is a disc in its plane.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
from scipy import ndimage as ndi

from .phantom import Phantom, make_phantom

__all__ = ["FOCAL_CLASS_NAMES", "LESION_CONTRAST", "LESION_RADIUS_MM", "make_focal_phantom"]

FOCAL_CLASS_NAMES = ("no_lesion", "lesion")
"""Class names of focal phantoms, by label: 0 the unchanged subject, 1 one focal lesion."""

LESION_RADIUS_MM = (9.0, 15.0)
"""Default range (mm) of the lesion's radius, drawn uniformly."""

LESION_CONTRAST = (0.4, 0.7)
"""Default range of the lesion's contrast: the share of the intensity removed inside it, drawn uniformly (a
negative contrast adds intensity: ``(-0.8, -0.5)`` makes the lesion 1.5 to 1.8 times as bright)."""


def _check_range(name: str, value: object, lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)  # type: ignore[union-attr]
        valid = not isinstance(value, str) and lo <= a <= b <= hi
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"Bad {name} {value!r}: expected (low, high) with {lo} <= low <= high <= {hi}.")
    return a, b


def make_focal_phantom(
    label: int,
    seed: int = 0,
    *,
    radius_mm: tuple[float, float] = LESION_RADIUS_MM,
    contrast: tuple[float, float] = LESION_CONTRAST,
    **phantom_args: object,
) -> Phantom:
    """Make one controlled-truth phantom: the subject of ``seed``, with one focal lesion when ``label`` is 1.

    Args:
        label: 0 (``"no_lesion"``) or 1 (``"lesion"``), see :data:`FOCAL_CLASS_NAMES`.
        seed: non-negative integer fixing the subject and the lesion's position, radius and contrast; the
            same seed with the other label gives the same subject and the same ``region_mask``.
        radius_mm: range of the lesion's radius in mm.
        contrast: range of the share of the intensity the lesion removes, within [-1, 1] (negative: a bright
            lesion).
        phantom_args: ``kind``, ``shape``, ``fov_mm``, ``slice_mm``, ``noise`` of
            :func:`~monai_cluscam.data.make_phantom`.

    Returns:
        A :class:`~monai_cluscam.data.Phantom` with ``label`` and ``severity`` 0 or 1, ``class_name`` from
        :data:`FOCAL_CLASS_NAMES`, ``mask`` 1 where the lesion changed the image and ``region_mask`` 1 on the
        lesion's ball.

    Raises:
        ValueError: a label other than 0 or 1, a bad range, or a bad argument of ``make_phantom``.

    Example:
        >>> p = make_focal_phantom(1, seed=4, kind="slice", shape=(64, 64), slice_mm=20.0)
        >>> p.class_name, bool(p.mask.any()), bool((p.mask <= p.region_mask).all())
        ('lesion', True, True)
        >>> q = make_focal_phantom(0, seed=4, kind="slice", shape=(64, 64), slice_mm=20.0)
        >>> bool(q.mask.any()), bool((p.image == q.image)[p.mask == 0].all())
        (False, True)
    """
    if not isinstance(label, numbers.Integral) or isinstance(label, bool) or label not in (0, 1):
        raise ValueError(f"Unknown focal phantom label {label!r}; expected 0 ({FOCAL_CLASS_NAMES[0]}) or 1.")
    r_lo, r_hi = _check_range("radius_mm", radius_mm, 1.0, 100.0)
    c_lo, c_hi = _check_range("contrast", contrast, -1.0, 1.0)
    subject = make_phantom("Non_Demented", seed, **phantom_args)
    rng = np.random.default_rng([int(seed), 1])
    radius, strength = rng.uniform(r_lo, r_hi), rng.uniform(c_lo, c_hi)
    brain = subject.brain_mask[0] > 0
    ndim = brain.ndim
    spacing = np.linalg.norm(subject.affine[:3, :3], axis=0)[:ndim]
    depth = ndi.distance_transform_edt(np.pad(brain, 1), sampling=spacing)[(slice(1, -1),) * ndim]
    candidates = np.argwhere(depth >= radius)
    if len(candidates) == 0:  # a brain too thin for the ball: its deepest voxel
        candidates = np.argwhere(depth == depth.max())
    centre = candidates[rng.integers(len(candidates))]
    axes = np.ogrid[tuple(slice(0, n) for n in brain.shape)]
    distance = np.sqrt(sum(((a - c) * s) ** 2 for a, c, s in zip(axes, centre, spacing, strict=True)))
    fade = np.clip((radius - distance) / spacing.min() + 0.5, 0.0, 1.0).astype(np.float32)
    region = (fade > 0).astype(np.uint8)[None]
    image, mask = subject.image, np.zeros_like(region)
    if label == 1:
        image = (image * (1.0 - np.float32(strength) * fade)).astype(np.float32)
        mask = region.copy()
    return dataclasses.replace(
        subject,
        image=image,
        mask=mask,
        region_mask=region,
        label=int(label),
        class_name=FOCAL_CLASS_NAMES[label],
        severity=int(label),
    )
