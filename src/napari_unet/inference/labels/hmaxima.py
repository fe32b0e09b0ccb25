"""h-maxima of a non-negative image, object by object: skimage's result, a fraction of its cost.

:func:`skimage.morphology.h_maxima` reconstructs the whole image by dilation, which sorts every
pixel (about 5 s for 2048x2048 on two loaded cores), although the seeds of the instance
post-processing need it only inside the objects. Here each connected component (8-/26-
connectivity, skimage's default footprint) of ``image > 0`` is reconstructed on its own
bounding box, with the other components zeroed and a one-pixel frame around it held at the
level 0.

Why this is exact on the components: in skimage's reconstruction, every path between two
components crosses a zero pixel, so what reaches a component from outside is at most 0; and
as soon as some pixel of the image rises ``h`` above 0, exactly 0 reaches every component
through the zero background (the frame stands for that background). Components whose maximum is
below ``h`` have no h-maximum. Images with no pixel ``h`` above 0 or no zero pixel go to skimage
whole; zero-valued pixels are never maxima here (the seeds never use them). The one case where the two could differ,
a component inside a hole of another (a ring), the background inside the hole being cut off
from the rest, does not arise for distance transforms of blobs in practice; the tests compare
both on real images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["h_maxima_positive"]


def h_maxima_positive(image: np.ndarray, h: float) -> np.ndarray:
    """The h-maxima of ``image`` on its positive pixels, as :func:`skimage.morphology.h_maxima`.

    Parameters
    ----------
    image : ndarray of float, shape (Y, X) or (Z, Y, X)
        Non-negative values (a smoothed distance transform).
    h : float
        Minimal height of a maximum above the saddle that joins it to a higher one (> 0).

    Returns
    -------
    ndarray of bool, shape of ``image``
        Equal to ``h_maxima(image, h).astype(bool)`` wherever ``image > 0``; False elsewhere.
    """
    from skimage.morphology import h_maxima, reconstruction

    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float64)
    if image.size == 0:
        return np.zeros(image.shape, bool)
    if float(_shifted(image, h).max()) < 0 or not (image <= 0).any():
        return h_maxima(image, h).astype(bool) & (image > 0)
    labels, _ = ndi.label(image > 0, structure=np.ones((3,) * image.ndim))
    out = np.zeros(image.shape, bool)
    inner = (slice(1, -1),) * image.ndim
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        own = labels[box] == i
        values = np.where(own, image[box], 0)
        if values.max() < h:  # residue = image - max(reconstruction, 0) < h everywhere
            continue
        mask = np.pad(values, 1)
        seed = _shifted(mask, h)
        frame = np.ones(mask.shape, bool)
        frame[inner] = False
        seed[frame] = 0  # the background's level: 0, reached from the rest of the image
        residue = mask - reconstruction(seed, mask, method="dilation")
        out[box] |= (residue >= h)[inner] & own
    return out


def _shifted(image: np.ndarray, h: float) -> np.ndarray:
    """skimage's marker for float images: ``image - h`` less a rounding margin."""
    resolution = 2 * np.finfo(image.dtype).resolution * np.abs(image)
    return image - h - resolution
