"""h_maxima_positive: skimage's h-maxima on the positive pixels, computed object by object."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import h_maxima

from napari_unet.common.sample import load_sample
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
