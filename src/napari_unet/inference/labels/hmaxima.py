"""h-maxima of a non-negative image: skimage's result, a fraction of its cost.

:func:`skimage.morphology.h_maxima` reconstructs the image by dilation from the marker
``image - h`` (less a rounding margin) and keeps the pixels that rise ``h`` above the
reconstruction. Its reconstruction sorts every pixel of the marker and of the image, twice, with
numpy's default sort, which is slow on the many equal zeros of a distance transform (about 4 s
for 2048x2048 on two loaded cores), although the seeds of the instance post-processing need it
only on the objects. :func:`h_maxima_positive` computes the same reconstruction with
skimage's own inner loop, set up so that only the positive values are sorted:

1. The marker is raised to 0 where it is negative. This changes nothing: once some pixel's
   marker is ``>= 0`` (checked; else skimage runs), every pixel of a non-negative image
   already receives at least 0 from it (the reconstruction at ``p`` is the largest
   ``min(marker(q), lowest value on a path from q to p)``, and no value is below 0).
2. The objects (8-/26-connected components of ``image > 0``) are reconstructed in groups of
   consecutive ids, each on the bounding box of its objects with the other objects' pixels
   zeroed: everything an object receives from outside it crosses a zero pixel, hence is at most
   0, which it has anyway. Boxes of about :data:`GROUP_PIXELS` keep the work in the CPU caches
   and bound the memory (one box for the whole image was ~3x slower).
3. In a box, marker and mask are ``>= 0``. The zeros have the lowest rank, where skimage's loop
   stops, and only the pixels with a positive mask can be raised, so only the positive values
   are sorted (one stable sort gives both the ranks and the pixel order); the zeros of those
   pixels follow, unsorted. Pixels of equal value are ordered differently from skimage's sort;
   the reconstruction is the same whatever that order (it is a function of the images alone).

The result equals ``h_maxima(image, h).astype(bool) & (image > 0)`` bit for bit (the tests
compare both on real distance transforms and on images with many ties). Images for which
the marker is negative everywhere, float16 images, or a scikit-image without the loop go to
skimage's ``h_maxima`` on the whole image.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi

__all__ = ["GROUP_PIXELS", "h_maxima_positive"]

#: pixels (voxels) per reconstruction box: consecutive objects share a box up to this size
#: (an object larger than it gets its own)
GROUP_PIXELS = 1 << 18


def h_maxima_positive(image: np.ndarray, h: float) -> np.ndarray:
    """The h-maxima of ``image`` on its positive pixels, as :func:`skimage.morphology.h_maxima`.

    Parameters
    ----------
    image : ndarray of float, shape (Y, X) or (Z, Y, X)
        Non-negative values (a smoothed distance transform); values <= 0 count as 0.
    h : float
        Minimal height of a maximum above the saddle that joins it to a higher one (> 0).

    Returns
    -------
    ndarray of bool, shape of ``image``
        Equal to ``h_maxima(image, h).astype(bool)`` wherever ``image > 0``; False elsewhere.
    """
    from skimage.morphology import h_maxima

    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float64)
    if image.size == 0:
        return np.zeros(image.shape, bool)
    work = np.where(image > 0, image, 0).astype(image.dtype, copy=False)
    loop = _reconstruction_loop()
    if (
        loop is None
        or image.dtype not in (np.float32, np.float64)
        # the marker is largest where the image is (``_shifted`` rises with it): one value,
        # not three image-sized temporaries (the check only routes; both routes agree)
        or float(_shifted(work.max(keepdims=True), h).item()) < 0
        or h > float(np.ptp(work))
    ):
        return h_maxima(image, h).astype(bool) & (image > 0)
    labels, _ = ndi.label(work > 0, structure=np.ones((3,) * work.ndim))
    out = np.zeros(work.shape, bool)
    for first, last, box in _groups(ndi.find_objects(labels)):
        ids = labels[box]
        member = (ids >= first) & (ids <= last)
        mask = np.where(member, work[box], 0).astype(work.dtype, copy=False)
        marker = np.maximum(_shifted(mask, h), 0)
        residue = mask - _reconstruct(marker, mask, loop)
        out[box] |= (residue >= h) & member
    return out


def _shifted(image: np.ndarray, h: float) -> np.ndarray:
    """skimage's marker for float images: ``image - h`` less a rounding margin."""
    resolution = 2 * np.finfo(image.dtype).resolution * np.abs(image)
    return image - h - resolution


def _groups(boxes: list) -> list[tuple[int, int, tuple[slice, ...]]]:
    """Runs of consecutive object ids whose joint bounding box holds at most
    :data:`GROUP_PIXELS`: ``(first id, last id, box)``; ``boxes[i]`` is object ``i + 1``'s."""
    groups: list[tuple[int, int, tuple[slice, ...]]] = []
    first, lo, hi = 0, None, None
    for i, box in enumerate(boxes, start=1):
        if box is None:
            continue
        b_lo, b_hi = [s.start for s in box], [s.stop for s in box]
        if lo is None or hi is None:
            first, lo, hi = i, b_lo, b_hi
            continue
        j_lo, j_hi = [min(a, b) for a, b in zip(lo, b_lo)], [max(a, b) for a, b in zip(hi, b_hi)]
        if np.prod([b - a for a, b in zip(j_lo, j_hi)]) > GROUP_PIXELS:
            groups.append((first, i - 1, tuple(slice(a, b) for a, b in zip(lo, hi))))
            first, lo, hi = i, b_lo, b_hi
        else:
            lo, hi = j_lo, j_hi
    if lo is not None and hi is not None:
        groups.append((first, len(boxes), tuple(slice(a, b) for a, b in zip(lo, hi))))
    return groups


def _reconstruction_loop():
    """scikit-image's inner loop of :func:`~skimage.morphology.reconstruction`, or ``None``."""
    try:
        from skimage.morphology import grayreconstruct
    except ImportError:  # pragma: no cover - scikit-image is a dependency
        return None
    return getattr(grayreconstruct, "reconstruction_loop", None)


def _reconstruct(marker: np.ndarray, mask: np.ndarray, loop) -> np.ndarray:
    """``skimage.morphology.reconstruction(marker, mask)`` (by dilation, full 3^n footprint)
    for ``0 <= marker <= mask``, sorting only the positive values.

    The same arrays as skimage's (marker and mask side by side in one flat array, padded by one
    pixel, here with 0), the same loop; the ranks and the linked list of pixels in decreasing
    order come from one stable sort of the positive entries, followed by the zero markers of
    the pixels whose mask is positive (the loop stops at the first of them: rank 0).
    """
    shape = mask.shape
    inside = tuple(slice(1, n + 1) for n in shape)
    images = np.zeros((2, *(n + 2 for n in shape)), mask.dtype)
    images[(0, *inside)] = marker
    images[(1, *inside)] = mask
    flat = images.reshape(-1)
    size = flat.size
    stride = size // 2  # from a pixel's marker to its mask
    signed = np.result_type(np.min_scalar_type(-size), np.int32)
    unsigned = np.dtype(signed.char.upper())
    steps = np.array(images.strides[1:]) // images.itemsize
    neighbours = np.array(
        [int(np.dot(steps, o)) for o in itertools.product((-1, 0, 1), repeat=len(shape)) if any(o)],
        signed,
    )
    # index arrays as int32 where the box allows, each dropped once used: a box as large as
    # a 256x192x192 chunk peaked at ~90 bytes per voxel with numpy's int64 indices kept
    positive = np.flatnonzero(flat > 0).astype(signed, copy=False)
    if positive.size == 0:
        return np.zeros(shape, mask.dtype)
    order = positive[np.argsort(flat[positive], kind="stable")]
    del positive
    values = flat[order]
    new = values[1:] != values[:-1]
    ranks_sorted = np.empty(order.size, unsigned)  # ranks from 1; 0 is the value 0
    ranks_sorted[0] = 1
    np.cumsum(new, out=ranks_sorted[1:], dtype=unsigned)
    ranks_sorted[1:] += 1
    value_of_rank = np.concatenate([np.zeros(1, flat.dtype), values[:1], values[1:][new]])
    del values, new
    ranks = np.zeros(size, unsigned)
    ranks[order] = ranks_sorted
    del ranks_sorted
    raisable = np.flatnonzero((flat[:stride] == 0) & (flat[stride:] > 0)).astype(signed)
    chain = np.concatenate([order[::-1], raisable])
    del order, raisable
    prev = np.full(size, -1, signed)
    following = np.full(size, -1, signed)
    prev[chain[1:]] = chain[:-1]
    following[chain[:-1]] = chain[1:]
    try:
        loop(ranks, prev, following, neighbours, int(chain[0]), stride)
    except (TypeError, ValueError):  # a scikit-image whose loop takes other types
        from skimage.morphology import reconstruction

        return reconstruction(marker, mask, method="dilation")
    return value_of_rank[ranks[:stride]].reshape(images.shape[1:])[inside]
