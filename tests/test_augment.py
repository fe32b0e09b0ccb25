"""Augmentation: image and targets stay aligned, shapes are kept, a seed reproduces it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_unet.training.augment import AugmentConfig, augment

SPATIAL_ONLY = AugmentConfig(intensity=False, noise=0.0, elastic=1.0)


def _blocks(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Labels made of constant blocks of 8 pixels with random ids 1..9 (no symmetry)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, 10, size=tuple(-(-n // 8) for n in shape))
    labels = coarse
    for axis in range(len(shape)):
        labels = np.repeat(labels, 8, axis=axis)
    return labels[tuple(slice(0, n) for n in shape)].astype(np.uint8)


def _coordinate_patch(shape: tuple[int, ...]):
    """An image whose channels are the pixel coordinates, and targets that encode them.

    Linear interpolation is linear in the sample values, so whatever the warp, the warped
    weights must equal the same affine function of the warped image channels, and the
    nearest-neighbour labels must name the input pixel within half a pixel of the place the
    image was sampled at.
    """
    grid = np.indices(shape, dtype=np.float32)
    labels = np.ravel_multi_index(np.indices(shape), shape).astype(np.int32)
    weight = (np.arange(2, 2 + len(shape)).reshape((-1,) + (1,) * len(shape)) * grid).sum(0) + 5
    mask = grid.sum(0).astype(int) % 2 == 0
    return grid, [labels, weight.astype(np.float32), mask]


def _check_coordinate_alignment(image, targets, shape):
    labels, weight, mask = targets
    factors = np.arange(2, 2 + len(shape)).reshape((-1,) + (1,) * len(shape))
    np.testing.assert_allclose(weight, (factors * image).sum(0) + 5, atol=2e-3)
    source = np.stack(np.unravel_index(labels, shape))
    assert np.abs(source - image).max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(mask, source.sum(0) % 2 == 0)


def _augment_labels_as_image(labels, seed, config, orders=(0, 1, 0)):
    """Augment an image whose intensity equals the label id, with labels, weights and mask."""
    image = labels[None].astype(np.float32)
    weight = labels.astype(np.float32)
    mask = labels % 2 == 0
    return augment(image, [labels, weight, mask], np.random.default_rng(seed), config, list(orders))


@pytest.mark.parametrize("seed", range(6))
def test_flips_and_rotations_keep_image_and_labels_exactly_aligned(seed):
    labels = _blocks((32, 32), seed)
    config = replace(AugmentConfig.none(), flips=True, rot90=True)
    image, (lab, weight, mask) = _augment_labels_as_image(labels, seed, config)
    np.testing.assert_array_equal(image[0], lab)
    np.testing.assert_array_equal(weight, lab)
    np.testing.assert_array_equal(mask, lab % 2 == 0)
    assert lab.dtype == labels.dtype and mask.dtype == bool
    # a permutation of the pixels: the histogram is unchanged
    np.testing.assert_array_equal(np.bincount(lab.ravel()), np.bincount(labels.ravel()))


@pytest.mark.parametrize("seed", range(6))
def test_elastic_and_zoom_keep_image_and_targets_aligned(seed):
    image, targets = _coordinate_patch((40, 40))
    out, warped = augment(image, targets, np.random.default_rng(seed), SPATIAL_ONLY, [0, 1, 0])
    assert out.shape == (2, 40, 40) and all(t.shape == (40, 40) for t in warped)
    assert warped[0].dtype == np.int32 and warped[2].dtype == bool
    _check_coordinate_alignment(out, warped, (40, 40))
    assert not np.allclose(out, image)  # the deformation really moved the pixels


def test_elastic_labels_stay_label_values():
    labels = _blocks((48, 48), 3)
    _, (lab, _, mask) = _augment_labels_as_image(labels, 3, SPATIAL_ONLY)
    assert set(np.unique(lab)) <= set(np.unique(labels))  # never blends of two ids
    np.testing.assert_array_equal(mask, lab % 2 == 0)


@pytest.mark.parametrize("seed", range(2))
def test_3d_augmentation_keeps_alignment_and_shapes(seed):
    image, targets = _coordinate_patch((12, 16, 16))
    out, warped = augment(image, targets, np.random.default_rng(seed), SPATIAL_ONLY, [0, 1, 0])
    assert out.shape == (3, 12, 16, 16) and all(t.shape == (12, 16, 16) for t in warped)
    _check_coordinate_alignment(out, warped, (12, 16, 16))


def test_non_square_patches_keep_their_shape():
    labels = _blocks((24, 40), 1)
    for seed in range(8):
        image, (lab, _, _) = _augment_labels_as_image(labels, seed, AugmentConfig())
        assert image.shape == (1, 24, 40) and lab.shape == (24, 40)
        assert image.dtype == np.float32 and image.flags.c_contiguous


def test_intensity_changes_the_image_only():
    labels = _blocks((32, 32), 2)
    config = replace(AugmentConfig.none(), intensity=True, noise=0.05)
    changed = 0
    for seed in range(5):
        image, (lab, weight, mask) = _augment_labels_as_image(labels, seed, config)
        np.testing.assert_array_equal(lab, labels)
        np.testing.assert_array_equal(mask, labels % 2 == 0)
        np.testing.assert_array_equal(weight, labels.astype(np.float32))
        changed += not np.allclose(image[0], labels)
    assert changed == 5


def test_same_seed_same_result_other_seed_other_result():
    labels = _blocks((32, 32), 5)
    a = _augment_labels_as_image(labels, 7, AugmentConfig())
    b = _augment_labels_as_image(labels, 7, AugmentConfig())
    c = _augment_labels_as_image(labels, 8, AugmentConfig())
    np.testing.assert_array_equal(a[0], b[0])
    for x, y in zip(a[1], b[1]):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_no_augmentation_is_the_identity():
    labels = _blocks((32, 32), 6)
    image, (lab, weight, mask) = _augment_labels_as_image(labels, 0, AugmentConfig.none())
    np.testing.assert_array_equal(image[0], labels)
    np.testing.assert_array_equal(lab, labels)
    np.testing.assert_array_equal(weight, labels)
    np.testing.assert_array_equal(mask, labels % 2 == 0)


def test_stain_jitter_mixes_the_channels_of_multichannel_input_only():
    rng = np.random.default_rng(0)
    image = rng.random((3, 32, 32)).astype(np.float32)
    labels = _blocks((32, 32), 3)
    config = replace(AugmentConfig.none(), stain=0.1)
    mixed, (lab,) = augment(image, [labels], np.random.default_rng(1), config, [0])
    np.testing.assert_array_equal(lab, labels)
    # each output channel is a linear mix of the input channels, near the identity
    mix, *_ = np.linalg.lstsq(image.reshape(3, -1).T, mixed.reshape(3, -1).T, rcond=None)
    np.testing.assert_allclose(mixed.reshape(3, -1), mix.T @ image.reshape(3, -1), atol=1e-5)
    assert 0 < np.abs(mix.T - np.eye(3)).max() < 0.5
    grey = image[:1]
    out, _ = augment(grey, [labels], np.random.default_rng(1), config, [0])
    np.testing.assert_array_equal(out, grey)


def test_blur_smooths_the_image_not_the_targets():
    labels = _blocks((32, 32), 4)
    config = replace(AugmentConfig.none(), blur=1.0)
    image, (lab, weight, mask) = _augment_labels_as_image(labels, 0, config)
    np.testing.assert_array_equal(lab, labels)
    np.testing.assert_array_equal(mask, labels % 2 == 0)
    np.testing.assert_array_equal(weight, labels.astype(np.float32))
    edges = np.abs(np.diff(labels.astype(np.float32), axis=1)).sum()
    assert np.abs(np.diff(image[0], axis=1)).sum() < edges
    assert np.isclose(image.mean(), labels.mean(), rtol=0.02)


@pytest.mark.parametrize(("field", "value"), [("stain", -0.1), ("blur", 1.5)])
def test_bad_stain_and_blur_settings_are_refused(field, value):
    from napari_unet.common.errors import UserInputError

    with pytest.raises(UserInputError, match=field):
        AugmentConfig(**{field: value})
