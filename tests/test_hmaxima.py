"""h_maxima_positive: skimage's h-maxima on the positive pixels, sorting only positive values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import h_maxima, reconstruction

from napari_unet.common.sample import load_sample
from napari_unet.inference.labels import hmaxima
from napari_unet.inference.labels.hmaxima import h_maxima_positive


def _smoothed_edt(mask: np.ndarray) -> np.ndarray:
    """What the seeds of the instance post-processing measure: a smoothed distance transform."""
    return ndi.gaussian_filter(ndi.distance_transform_edt(mask).astype(np.float32), 1.0)


def _reference(image: np.ndarray, h: float) -> np.ndarray:
    return h_maxima(image, h).astype(bool) & (image > 0)


@pytest.mark.parametrize("h", [0.5, 1.0, 1.5, 3.0])
def test_equals_skimage_on_the_sample_nuclei(h):
    _, labels = load_sample()
    # touching nuclei merge into blobs, as the interior of a prediction does
    blobs = ndi.binary_dilation(labels > 0, iterations=1)
    dist = _smoothed_edt(blobs)
    got = h_maxima_positive(dist, h)
    np.testing.assert_array_equal(got, _reference(dist, h))
    assert got.any()


def test_equals_skimage_on_random_disks_2d_and_3d():
    rng = np.random.default_rng(0)
    image = np.zeros((120, 140), bool)
    yy, xx = np.mgrid[:120, :140]
    for y, x, r in zip(rng.integers(0, 120, 40), rng.integers(0, 140, 40), rng.integers(3, 12, 40)):
        image |= (yy - y) ** 2 + (xx - x) ** 2 <= r**2
    for h in (1.0, 2.0):
        dist = _smoothed_edt(image)
        np.testing.assert_array_equal(h_maxima_positive(dist, h), _reference(dist, h))
    volume = np.zeros((30, 40, 40), bool)
    zz, yy, xx = np.mgrid[:30, :40, :40]
    for z, y, x in [(10, 10, 10), (15, 16, 17), (20, 30, 30)]:
        volume |= (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 36
    dist = _smoothed_edt(volume)
    np.testing.assert_array_equal(h_maxima_positive(dist, 1.0), _reference(dist, 1.0))


def test_falls_back_to_skimage_without_background_or_high_peaks():
    rng = np.random.default_rng(1)
    image = ndi.gaussian_filter(rng.random((40, 50)), 2).astype(np.float32) + 1.0  # no zero
    np.testing.assert_array_equal(h_maxima_positive(image, 0.01), _reference(image, 0.01))
    low = np.zeros((20, 20), np.float32)
    low[5:10, 5:10] = 0.2  # nothing rises h above the background
    assert not h_maxima_positive(low, 1.0).any()
    assert not h_maxima_positive(np.zeros((0, 4), np.float32), 1.0).any()


@pytest.mark.parametrize("group", [1, 50, hmaxima.GROUP_PIXELS])
def test_equals_skimage_with_ties_and_any_grouping(monkeypatch, group):
    # integer-valued images: many equal values, which the sort orders unlike skimage's; objects
    # grouped one per box (1), a few per box (50) or all in one box (the default, small images)
    monkeypatch.setattr(hmaxima, "GROUP_PIXELS", group)
    rng = np.random.default_rng(2)
    for shape in [(37, 41), (9, 60), (12, 13, 14)]:
        for dtype in (np.float32, np.float64):
            image = np.maximum(rng.integers(-3, 7, size=shape), 0).astype(dtype)
            for h in (0.5, 1.0, 2.0, 3.0):
                np.testing.assert_array_equal(h_maxima_positive(image, h), _reference(image, h))
    blobs = ndi.gaussian_filter(rng.random((90, 110)), 2.0) > 0.5
    dist = _smoothed_edt(blobs)
    np.testing.assert_array_equal(h_maxima_positive(dist, 0.7), _reference(dist, 0.7))


def test_reconstruction_equals_skimage():
    rng = np.random.default_rng(3)
    loop = hmaxima._reconstruction_loop()
    assert loop is not None  # else h_maxima_positive runs skimage's h_maxima (slow)
    for shape in [(1, 1), (5,), (30, 40), (8, 9, 10)]:
        mask = np.maximum(rng.integers(-2, 6, size=shape), 0).astype(np.float32)
        marker = np.clip(mask - rng.integers(0, 3, size=shape), 0, None).astype(np.float32)
        got = hmaxima._reconstruct(marker, mask, loop)
        np.testing.assert_array_equal(got, reconstruction(marker, mask, method="dilation"))


def test_without_skimage_s_inner_loop_it_is_skimage_s_h_maxima(monkeypatch):
    # a scikit-image release without the private loop: the public function, same peaks
    monkeypatch.setattr(hmaxima, "_reconstruction_loop", lambda: None)
    rng = np.random.default_rng(4)
    dist = _smoothed_edt(ndi.gaussian_filter(rng.random((60, 70)), 2.0) > 0.5)
    np.testing.assert_array_equal(h_maxima_positive(dist, 0.7), _reference(dist, 0.7))
