"""Controlled-truth focal phantoms, and the anatomical atrophy region of the atrophy phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from monai_cluscam.data import (
    FOCAL_CLASS_NAMES,
    MASK_MEDIAL_TEMPORAL,
    MASK_VENTRICLES,
    make_focal_phantom,
    make_phantom,
)


@pytest.mark.parametrize("kind, shape", [("volume", 32), ("slice", (64, 64))])
def test_classes_differ_only_inside_the_lesion(kind, shape):
    for seed in range(4):
        args = {"kind": kind, "shape": shape, "slice_mm": 20.0} if kind == "slice" else {"kind": kind, "shape": shape}
        lesion, control = make_focal_phantom(1, seed, **args), make_focal_phantom(0, seed, **args)
        assert (lesion.label, lesion.class_name, control.class_name) == (1, "lesion", "no_lesion")
        changed = lesion.image != control.image
        np.testing.assert_array_equal(changed, lesion.mask > 0)  # the mask is exactly what changed
        assert lesion.mask.any() and not control.mask.any()
        np.testing.assert_array_equal(lesion.region_mask, control.region_mask)  # where it would be, for class 0
        assert (lesion.mask <= lesion.brain_mask).all()  # inside the brain
        assert (lesion.image[changed] < control.image[changed]).all()  # a dark lesion
        # the subject is the Non_Demented atrophy phantom of the same seed
        np.testing.assert_array_equal(control.image, make_phantom("Non_Demented", seed, **args).image)


def test_seeded_and_sized_as_asked():
    a, b = make_focal_phantom(1, 7, shape=32), make_focal_phantom(1, 7, shape=32)
    assert a.image.tobytes() == b.image.tobytes() and a.image.dtype == np.float32
    assert not np.array_equal(a.mask, make_focal_phantom(1, 8, shape=32).mask)
    small = make_focal_phantom(1, 7, shape=48, radius_mm=(6.0, 6.0)).mask.sum()
    large = make_focal_phantom(1, 7, shape=48, radius_mm=(14.0, 14.0)).mask.sum()
    voxel = (192 / 48) ** 3
    assert small < large and large * voxel == pytest.approx(4 / 3 * np.pi * 16.0**3, rel=0.35)
    assert a.as_metatensor("region_mask").shape == (1, 32, 32, 32)
    bright, plain = make_focal_phantom(1, 7, shape=32, contrast=(-0.6, -0.6)), make_focal_phantom(0, 7, shape=32)
    inside = bright.mask > 0
    np.testing.assert_allclose(bright.image[inside], plain.image[inside] * (1 + 0.6 * 1.0), rtol=0.6 / 1.6 + 1e-6)
    assert (bright.image[inside] > plain.image[inside]).all()


@pytest.mark.parametrize(
    "args, match",
    [({"label": 2}, "focal phantom label"), ({"label": True}, "focal phantom label"),
     ({"label": 1, "radius_mm": (5, 2)}, "radius_mm"), ({"label": 1, "contrast": (0.5, 1.5)}, "contrast"),
     ({"label": 1, "contrast": "ab"}, "contrast"), ({"label": 1, "kind": "cube"}, "kind")],
)
def test_bad_arguments_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        make_focal_phantom(seed=0, shape=16, **args)
    assert FOCAL_CLASS_NAMES == ("no_lesion", "lesion")


def test_atrophy_region_is_anatomical_and_holds_the_atrophy():
    phantoms = [make_phantom(label, 11, shape=48) for label in range(4)]
    region = phantoms[0].region_mask
    for p in phantoms:
        np.testing.assert_array_equal(p.region_mask, region)  # the same anatomy whatever the class
        assert ((p.mask > 0) <= (region > 0)).all()  # every changed voxel lies in it
        assert ((region > 0) <= (p.brain_mask > 0)).all()
    moderate = phantoms[1]
    for value in (MASK_VENTRICLES, MASK_MEDIAL_TEMPORAL):
        assert (region == value).any()
        assert (moderate.mask[moderate.mask == value] == region[moderate.mask == value]).mean() > 0.9
    assert (moderate.mask > 0).mean() < (region > 0).mean() < 0.1
