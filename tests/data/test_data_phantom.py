"""Brain phantoms: determinism, ground-truth masks, severity, geometry, offline template and errors."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from scipy import ndimage as ndi

from monai_cluscam.data import (
    CLASS_NAMES,
    DEFAULT_SLICE_MM,
    MASK_MEDIAL_TEMPORAL,
    MASK_VENTRICLES,
    SEVERITY,
    class_label,
    make_phantom,
)
from monai_cluscam.data._template import FAR_MM, load_template, template_path
from monai_cluscam.data.phantom import HIPPOCAMPUS_AXES_MM, VENTRICLE_GROWTH_MM

VOLUME = {"kind": "volume", "shape": 48}
SLICE = {"kind": "slice", "shape": 64}
BY_SEVERITY = sorted(CLASS_NAMES, key=SEVERITY.get)


def _arrays(p):
    return p.image, p.mask, p.brain_mask, p.affine, p.pose


def _mni_of_voxels(p, voxels: np.ndarray) -> np.ndarray:
    """MNI coordinates (through the phantom's pose) of voxel indices ``(N, 3)``."""
    homogeneous = np.c_[voxels, np.ones(len(voxels))]
    return (p.pose @ p.affine @ homogeneous.T)[:3].T


def test_class_order_and_severity_follow_the_alzheimer_dataset():
    from monai_cluscam.data.alzheimer import CLASS_NAMES as DATASET_CLASS_NAMES

    assert CLASS_NAMES == ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
    assert CLASS_NAMES == DATASET_CLASS_NAMES
    assert [SEVERITY[name] for name in CLASS_NAMES] == [2, 3, 0, 1]
    assert [class_label(name) for name in CLASS_NAMES] == [0, 1, 2, 3]
    p = make_phantom("Moderate_Demented", seed=0, **SLICE)
    assert (p.label, p.class_name, p.severity) == (1, "Moderate_Demented", 3)


@pytest.mark.parametrize("options", [VOLUME, SLICE], ids=["volume", "slice"])
def test_same_seed_gives_identical_bytes(options):
    a, b = make_phantom(3, seed=11, **options), make_phantom(3, seed=11, **options)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


@pytest.mark.parametrize("options", [VOLUME, SLICE], ids=["volume", "slice"])
def test_different_seeds_give_different_subjects(options):
    a, b = make_phantom(1, seed=1, **options), make_phantom(1, seed=2, **options)
    assert not np.allclose(a.pose, b.pose)
    assert np.mean(a.image != b.image) > 0.9
    assert not np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("noise", ["rician", "gaussian"])
@pytest.mark.parametrize("options", [VOLUME, SLICE, {"kind": "slice", "shape": 96, "slice_mm": -15.0}])
def test_mask_is_nonzero_exactly_where_the_image_changed(options, noise):
    for seed in (0, 7):
        reference = make_phantom("Non_Demented", seed=seed, noise=noise, **options)
        assert not reference.mask.any()
        for label in ("Very_Mild_Demented", "Mild_Demented", "Moderate_Demented"):
            p = make_phantom(label, seed=seed, noise=noise, **options)
            changed = p.image != reference.image
            assert changed.any()
            np.testing.assert_array_equal(changed, p.mask != 0)
            assert np.array_equal(p.brain_mask, reference.brain_mask)
            assert set(np.unique(p.mask)) <= {0, MASK_VENTRICLES, MASK_MEDIAL_TEMPORAL}
            assert not np.any(p.mask & (p.brain_mask == 0))
            if noise == "gaussian":  # additive noise keeps the order: atrophy only darkens
                assert np.all(p.image[changed] < reference.image[changed])


def test_severity_grows_the_changes_and_the_dark_csf():
    for seed in (0, 3, 5):
        phantoms = [make_phantom(name, seed=seed, noise="gaussian", **VOLUME) for name in BY_SEVERITY]
        ventricle = [int((p.mask == MASK_VENTRICLES).sum()) for p in phantoms]
        temporal = [int((p.mask == MASK_MEDIAL_TEMPORAL).sum()) for p in phantoms]
        assert ventricle[0] == temporal[0] == 0
        assert ventricle[1] < ventricle[2] < ventricle[3], ventricle
        assert temporal[1] < temporal[2] < temporal[3], temporal
        for milder, stronger in zip(phantoms, phantoms[1:], strict=False):
            assert np.all(stronger.mask[milder.mask != 0] != 0)
        # Measured on the image alone: dark (CSF-like) voxels inside the brain increase with severity.
        brain = phantoms[0].brain_mask == 1
        threshold = 0.55 * np.percentile(phantoms[0].image[brain], 90)
        dark = [int((p.image[brain] < threshold).sum()) for p in phantoms]
        assert dark[0] < dark[1] < dark[2] < dark[3], dark


def test_atrophy_is_visible_at_the_top_severity_and_subtle_at_the_lowest():
    reference = make_phantom("Non_Demented", seed=4, noise="gaussian", **SLICE)
    drop = {}
    for name in ("Very_Mild_Demented", "Moderate_Demented"):
        p = make_phantom(name, seed=4, noise="gaussian", **SLICE)
        drop[name] = float(np.sum(reference.image - p.image))
    assert drop["Moderate_Demented"] > 4 * drop["Very_Mild_Demented"] > 0


def test_global_intensity_does_not_give_the_class_away():
    means = {
        name: np.array([make_phantom(name, seed=s, **SLICE).image.mean() for s in range(12)])
        for name in ("Non_Demented", "Moderate_Demented")
    }
    gap = abs(means["Non_Demented"].mean() - means["Moderate_Demented"].mean())
    assert gap < 0.25 * means["Non_Demented"].std()


def test_volume_geometry_and_masks_in_world_coordinates():
    p = make_phantom("Moderate_Demented", seed=2, kind="volume", shape=(40, 48, 44), fov_mm=(200, 192, 176))
    assert p.image.shape == p.mask.shape == p.brain_mask.shape == (1, 40, 48, 44)
    assert p.image.dtype == np.float32 and p.mask.dtype == np.uint8 and p.brain_mask.dtype == np.uint8
    np.testing.assert_allclose(np.diag(p.affine)[:3], [5.0, 4.0, 4.0])
    assert np.count_nonzero(p.affine[:3, :3] - np.diag(np.diag(p.affine[:3, :3]))) == 0
    np.testing.assert_allclose(p.affine @ [19.5, 23.5, 21.5, 1], [0, 0, 0, 1], atol=1e-9)
    gram = p.pose[:3, :3].T @ p.pose[:3, :3]  # rotation times per-axis scaling
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-12)
    assert np.all((np.diag(gram) > 0.95**2 - 1e-9) & (np.diag(gram) < 1.05**2 + 1e-9))

    for value, inside in (
        (MASK_VENTRICLES, lambda c: (abs(c[0]) < 40) & (-60 < c[1]) & (c[1] < 40) & (-10 < c[2]) & (c[2] < 45)),
        (MASK_MEDIAL_TEMPORAL, lambda c: (abs(c[0]) > 8) & (abs(c[0]) < 50) & (c[1] < 15) & (c[2] < 20)),
    ):
        mni = _mni_of_voxels(p, np.argwhere(p.mask[0] == value))
        assert len(mni) > 0 and np.mean(inside(mni.T)) > 0.95
    hippocampi = np.asarray(HIPPOCAMPUS_AXES_MM).mean(axis=1)
    temporal = _mni_of_voxels(p, np.argwhere(p.mask[0] == MASK_MEDIAL_TEMPORAL))
    for centre in hippocampi:
        side = temporal[np.sign(temporal[:, 0]) == np.sign(centre[0])]
        assert np.linalg.norm(side.mean(0) - centre) < 15

    meta = p.as_metatensor("mask")
    assert tuple(meta.shape) == (1, 40, 48, 44)
    np.testing.assert_allclose(meta.affine.numpy(), p.affine)
    np.testing.assert_array_equal(meta.numpy(), p.mask)


@pytest.mark.parametrize("seed", [0, 1])
def test_recorded_pose_is_the_one_applied_to_image_and_mask(seed):
    template = load_template()
    p = make_phantom("Moderate_Demented", seed=seed, noise="gaussian", **VOLUME)
    voxels = np.indices(p.image.shape[1:]).reshape(3, -1)

    def template_at(voxel_to_mni: np.ndarray, volume: np.ndarray) -> np.ndarray:
        to_template = np.linalg.inv(template.affine) @ voxel_to_mni
        coords = to_template[:3, :3] @ voxels + to_template[:3, 3:]
        return ndi.map_coordinates(volume, coords, order=1, cval=FAR_MM if volume is not template.t1 else 0.0)

    unposed = np.eye(4)
    unposed[:3, 3] = p.pose[:3, 3]
    image = p.image[0].ravel()
    fit = np.corrcoef(template_at(p.pose @ p.affine, template.t1), image)[0, 1]
    misfit = np.corrcoef(template_at(unposed @ p.affine, template.t1), image)[0, 1]
    assert fit > 0.97 and fit - misfit > 0.05, (fit, misfit)
    # Voxels marked as ventricular enlargement lie within the largest growth of the template's ventricles.
    distance = template_at(p.pose @ p.affine, template.ventricle_distance)
    assert distance[p.mask[0].ravel() == MASK_VENTRICLES].max() <= max(VENTRICLE_GROWTH_MM) * 1.2


def test_slice_geometry_and_level():
    p = make_phantom("Mild_Demented", seed=6, kind="slice")
    assert p.image.shape == (1, 128, 128) and p.mask.shape == (1, 128, 128)
    spacing = 192.0 / 128
    # Radiological picture order: first axis towards the patient's left (-x), second towards posterior (-y).
    np.testing.assert_allclose(p.affine[:3, :2], [[-spacing, 0], [0, -spacing], [0, 0]])
    centre = p.pose @ p.affine @ [63.5, 63.5, 0, 1]
    assert abs(centre[2] - DEFAULT_SLICE_MM) < 3 + 8  # jitter plus the tilt of the pose over the offset
    assert (p.mask == MASK_VENTRICLES).any()

    low = make_phantom("Mild_Demented", seed=6, kind="slice", slice_mm=-15.0)
    assert (low.mask == MASK_MEDIAL_TEMPORAL).any() and not (low.mask == MASK_VENTRICLES).any()
    pixels = np.argwhere(low.brain_mask[0] == 1)
    heights = _mni_of_voxels(low, np.c_[pixels, np.zeros(len(pixels))])[:, 2]
    assert abs(np.median(heights) + 15.0) < 6


def test_brain_mask_covers_the_head_and_not_the_background():
    p = make_phantom("Non_Demented", seed=0, **VOLUME)
    brain = p.brain_mask[0] == 1
    volume_ml = brain.sum() * abs(np.linalg.det(p.affine[:3, :3])) / 1000
    assert 1400 < volume_ml < 2300  # the MNI152 brain is about 1.9 l; pose scaling is within 5 % per axis
    assert p.image[0][brain].mean() > 5 * p.image[0][~brain].mean()


def test_template_is_read_from_nilearn_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    load_template.cache_clear()
    try:
        p = make_phantom("Moderate_Demented", seed=0, kind="slice", shape=32)
    finally:
        load_template.cache_clear()
    assert p.mask.any()
    assert "nilearn" in template_path().parts and template_path().is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label": 4}, r"Unknown label 4.*0 \(Mild_Demented\).*3 \(Very_Mild_Demented\)"),
        ({"label": -1}, r"Unknown label -1"),
        ({"label": "Demented"}, r"Unknown label 'Demented'.*Non_Demented"),
        ({"label": True}, r"Unknown label True"),
        ({"kind": "movie"}, r"Unknown kind 'movie'.*'volume', 'slice'"),
        ({"noise": "poisson"}, r"Unknown noise model 'poisson'.*'rician', 'gaussian'"),
        ({"shape": (96, 96)}, r"Bad shape \(96, 96\) for kind 'volume'.*3 integers"),
        ({"kind": "slice", "shape": (128, 128, 1)}, r"Bad shape .* for kind 'slice'.*2 integers"),
        ({"shape": (0, 96, 96)}, r"Bad shape"),
        ({"shape": (96.5, 96, 96)}, r"Bad shape"),
        ({"shape": "96"}, r"Bad shape '96'"),
        ({"shape": "abc"}, r"Bad shape 'abc'"),
        ({"shape": 300}, r"Bad shape 300 for kind 'volume': expected 3 integers in \[8, 256\]"),
        ({"fov_mm": "999"}, r"Bad fov_mm '999'"),
        ({"seed": -3}, r"seed must be a non-negative integer, got -3"),
        ({"seed": 1.5}, r"seed must be a non-negative integer"),
        ({"fov_mm": 0}, r"Bad fov_mm 0"),
        ({"fov_mm": (200, 200)}, r"Bad fov_mm"),
        ({"kind": "slice", "slice_mm": 200.0}, r"Bad slice_mm 200.0"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, message):
    arguments = {"label": 0, "seed": 0, "kind": "volume", "shape": 32} | kwargs
    label, seed = arguments.pop("label"), arguments.pop("seed")
    with pytest.raises(ValueError, match=message):
        make_phantom(label, seed, **arguments)


def test_as_metatensor_rejects_unknown_fields():
    p = make_phantom(0, seed=0, kind="slice", shape=16)
    with pytest.raises(ValueError, match=r"Unknown phantom field 'heatmap'.*image, mask, brain_mask"):
        p.as_metatensor("heatmap")
