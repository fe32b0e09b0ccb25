"""Training targets: background / interior / boundary classes and the U-Net paper's weight map."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_unet.training.data.targets import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    instance_to_classes,
    unet_weight_map,
)


def _touching_rectangles() -> np.ndarray:
    """Two 10x10 objects sharing an edge (columns 10|11), on a 20x32 background."""
    labels = np.zeros((20, 32), np.int32)
    labels[5:15, 1:11] = 1
    labels[5:15, 11:21] = 2
    return labels


def test_touching_objects_are_separated_by_the_boundary_class():
    labels = _touching_rectangles()
    classes = instance_to_classes(labels)
    assert classes.dtype == np.uint8 and classes.shape == labels.shape
    assert set(np.unique(classes)) == {BACKGROUND, INTERIOR, BOUNDARY}
    np.testing.assert_array_equal(classes == BACKGROUND, labels == 0)
    # both pixels either side of the shared edge are boundary ...
    assert (classes[5:15, 10] == BOUNDARY).all() and (classes[5:15, 11] == BOUNDARY).all()
    # ... so the interiors are two separate components, one per object
    components, n = ndi.label(classes == INTERIOR)
    assert n == 2
    for obj in (1, 2):
        assert np.unique(components[labels == obj]).tolist() == [0, obj]
    # the rim is one pixel wide: the interior of a 10x10 square is 8x8
    assert ((classes == INTERIOR) & (labels == 1)).sum() == 64


def test_tiny_objects_keep_an_interior_pixel():
    labels = np.zeros((16, 16), np.int32)
    labels[2, 2] = 1  # one pixel
    labels[5:7, 5:7] = 2  # 2x2: every pixel is on the rim
    labels[10, 3:6] = 3  # a 1x3 line
    labels[10:12, 10:12] = 4  # 2x2 touching 5
    labels[10:12, 12:14] = 5
    classes = instance_to_classes(labels)
    for obj in range(1, 6):
        inside = classes[labels == obj]
        assert (inside == INTERIOR).sum() >= 1, f"object {obj} lost its interior"
        assert (inside == INTERIOR).sum() <= 2
    assert classes[2, 2] == INTERIOR
    assert classes[10, 4] == INTERIOR  # the centre of the line


def test_weight_map_is_largest_in_the_gap_between_touching_objects():
    labels = np.zeros((40, 64), np.int32)
    labels[10:30, 5:25] = 1
    labels[10:30, 27:47] = 2  # a 2-pixel gap (columns 25, 26)
    weights = unet_weight_map(labels, w0=10.0, sigma=5.0)
    assert weights.dtype == np.float32 and weights.shape == labels.shape
    gap = weights[20, 25]
    far = weights[20, 62]  # background 15 px from the nearest object
    beside = weights[2, 15]  # background next to one object only
    assert gap > 8 + far  # w0 * exp(-(1 + 2)^2 / 50) = 8.35 on top of the background weight
    assert gap > beside > 0
    # background far from every object weighs 1 (class balance normalises to background)
    assert far == np.float32(1.0)
    # foreground is weighted by the background / foreground ratio, capped at 10
    fg = labels > 0
    np.testing.assert_allclose(weights[fg], min((~fg).sum() / fg.sum(), 10.0), rtol=1e-6)


def test_weight_map_border_term_follows_the_papers_formula():
    labels = np.zeros((9, 30), np.int32)
    labels[:, :10] = 1
    labels[:, 20:] = 2  # a 10-pixel gap: columns 10..19
    weights = unet_weight_map(labels, w0=10.0, sigma=5.0, class_balance=False)
    for x in range(10, 20):
        d1, d2 = sorted((x - 9, 20 - x))
        expected = 1 + 10 * np.exp(-((d1 + d2) ** 2) / (2 * 5.0**2))
        np.testing.assert_allclose(weights[4, x], expected, rtol=1e-5)
    np.testing.assert_array_equal(weights[labels > 0], 1.0)


def test_weight_map_without_objects_is_uniform():
    weights = unet_weight_map(np.zeros((8, 8), np.int32))
    np.testing.assert_array_equal(weights, 1.0)


def test_targets_in_3d():
    zz, yy, xx = np.mgrid[:16, :20, :32]
    labels = np.zeros((16, 20, 32), np.int32)
    labels[(zz - 8) ** 2 + (yy - 10) ** 2 + (xx - 9) ** 2 <= 36] = 1
    labels[(zz - 8) ** 2 + (yy - 10) ** 2 + (xx - 21) ** 2 <= 36] = 2  # touches ball 1
    labels[1, 1, 1] = 3  # a single voxel
    classes = instance_to_classes(labels)
    assert classes.shape == labels.shape
    _, n = ndi.label(classes == INTERIOR)
    assert n == 3
    assert classes[1, 1, 1] == INTERIOR
    assert (classes[labels == 0] == BACKGROUND).all()
    weights = unet_weight_map(labels)
    assert weights.shape == labels.shape
    assert weights[8, 10, 15] > weights[8, 10, 0] > 0  # the neck between the balls


def test_weight_map_class_balance_counts_annotated_pixels_only():
    labels = np.zeros((20, 40), np.int32)
    labels[5:10, 5:10] = 1  # 25 foreground pixels in the annotated left half (200 pixels)
    valid = np.zeros(labels.shape, bool)
    valid[:, :10] = True
    weights = unet_weight_map(labels, w0=0.0, valid=valid)
    np.testing.assert_allclose(weights[labels > 0], 175 / 25)
    junk = labels.copy()
    junk[:, 30:] = 7  # an "object" where nothing is annotated
    np.testing.assert_array_equal(unet_weight_map(junk, w0=0.0, valid=valid)[valid], weights[valid])


def test_weight_map_weighs_the_rims_where_objects_touch():
    labels = np.zeros((30, 50), np.int32)
    labels[5:25, 5:25] = 1
    labels[5:25, 25:45] = 2  # touching along columns 24 | 25, no background between
    weights = unet_weight_map(labels, w0=10.0, sigma=5.0, class_balance=False)
    contact = weights[15, 24], weights[15, 25]  # the two rims of the contact
    expected = 1 + 10 * np.exp(-(1.0**2) / (2 * 5.0**2))  # d1 = 0 (inside), d2 = 1
    np.testing.assert_allclose(contact, expected, rtol=1e-5)
    assert weights[15, 23] == 1.0 and weights[15, 26] == 1.0  # one pixel further in: interior
    assert weights[5, 15] == 1.0  # the outer rim, away from the other object
    plain = unet_weight_map(labels, w0=10.0, sigma=5.0, class_balance=False, contact=False)
    np.testing.assert_array_equal(plain[labels > 0], 1.0)
    np.testing.assert_array_equal(plain[labels == 0], weights[labels == 0])
