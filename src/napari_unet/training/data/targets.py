"""Training targets: instance labels to (background, interior, boundary) classes, weight maps.

The instance task trains a 3-class network: 0 background, 1 interior, 2 boundary. The boundary
class is the inner rim of each object, so two touching nuclei are separated by their rims and a
seeded watershed can split them again. The weight map follows Ronneberger et al. (2015), eq. 2:

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

where ``w_c`` balances the class frequencies and ``d1``, ``d2`` are the distances to the
nearest and second-nearest object; the second term is applied to background pixels, so the
narrow gaps between touching objects weigh most. Nuclei in dense fields often touch with no
background between them, so the term is also applied to the object pixels that touch another
object (``contact=True``): the rims a seeded watershed must split along.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def instance_to_classes(labels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Instance labels to background (0) / interior (1) / boundary (2) classes.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)
        0 is background, each positive id one object.
    valid : ndarray of bool, same shape, optional
        Where the labels are annotated (sparse annotation). A voxel next to an unannotated
        one is not a boundary for that reason: an annotated slice between unannotated ones
        keeps its interior.

    Returns
    -------
    ndarray of uint8, same shape
        The boundary is each object's inner rim, one pixel wide (2D) or voxel (3D). Objects too
        small to have an interior keep their central pixel as interior, so none vanishes.
    """
    labels = np.asarray(labels)
    classes = (labels > 0).astype(np.uint8)
    if valid is None or np.all(valid):
        rim = find_boundaries(labels, mode="inner") & (labels > 0)
    else:
        rim = _rim_within(labels, np.asarray(valid, bool))
    classes[rim] = BOUNDARY
    _keep_small_objects(labels, classes)
    return classes


def _rim_within(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Object pixels with a face neighbour that is annotated (``valid``) and labelled otherwise."""
    rim = np.zeros(labels.shape, bool)
    for axis in range(labels.ndim):
        lo = tuple(slice(None, -1) if a == axis else slice(None) for a in range(labels.ndim))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in range(labels.ndim))
        differ = labels[lo] != labels[hi]
        rim[lo] |= differ & valid[hi]
        rim[hi] |= differ & valid[lo]
    return rim & (labels > 0)


def _keep_small_objects(labels: np.ndarray, classes: np.ndarray) -> None:
    """Give objects with no interior pixel their most central pixel as interior (in place)."""
    ids = np.unique(labels[classes == INTERIOR])
    all_ids = np.unique(labels[labels > 0])
    missing = np.setdiff1d(all_ids, ids)
    if missing.size == 0:
        return
    slices = ndi.find_objects(np.where(np.isin(labels, missing), labels, 0))
    for obj_id in missing:
        sl = slices[int(obj_id) - 1]
        if sl is None:
            continue
        inside = labels[sl] == obj_id
        dist = ndi.distance_transform_edt(np.pad(inside, 1))[(slice(1, -1),) * inside.ndim]
        # among the pixels farthest from the edge, the one nearest the centroid (thin objects)
        grid = np.indices(inside.shape, dtype=np.float64)
        centroid = [g[inside].mean() for g in grid]
        off_centre = sum((g - c) ** 2 for g, c in zip(grid, centroid))
        peak = np.unravel_index(
            np.argmin(np.where(dist == dist.max(), off_centre, np.inf)), dist.shape
        )
        classes[tuple(s.start + p for s, p in zip(sl, peak))] = INTERIOR


def unet_weight_map(
    labels: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_balance: bool = True,
    valid: np.ndarray | None = None,
    contact: bool = True,
) -> np.ndarray:
    """Per-pixel loss weights of the U-Net paper (eq. 2).

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background.
    w0, sigma : float
        Height and width (pixels) of the border term; the paper uses 10 and about 5.
    class_balance : bool
        Include ``w_c``, the inverse frequency of foreground / background (normalised so the
        background weighs 1).
    valid : ndarray of bool, same shape, optional
        Where the labels are annotated; the class frequencies are counted there only, so
        unannotated pixels cannot change the weights.
    contact : bool
        Also apply the border term to object pixels that touch another object (within
        ``sqrt(ndim)`` pixels, diagonal neighbours included; there ``d1 = 0``), so both rims
        of a contact weigh about ``1 + w0``. Without it only background pixels get the term.

    Returns
    -------
    ndarray of float32, same shape
    """
    labels = np.asarray(labels)
    fg = labels > 0
    weights = np.ones(labels.shape, np.float32)
    n_fg, n_bg = (
        (int(fg.sum()), int((~fg).sum()))
        if valid is None
        else (int((fg & valid).sum()), int((~fg & valid).sum()))
    )
    if class_balance and n_fg and n_bg:
        weights[fg] = min(n_bg / n_fg, 10.0)
    if w0 > 0:
        d1, d2 = _two_nearest_object_distances(labels, reach=3 * sigma)
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
        where = ~fg
        if contact:
            where |= fg & (d2 <= np.sqrt(labels.ndim) + 1e-6)
        weights += np.where(where, border, 0.0).astype(np.float32)
    return weights


def _two_nearest_object_distances(
    labels: np.ndarray, reach: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest object, computed in local windows.

    Beyond ``reach`` pixels from an object the distance is reported as ``inf`` (the weight term
    is negligible there), so the cost grows with the number of objects, not their pairs.
    """
    d1 = np.full(labels.shape, np.inf, np.float32)
    d2 = np.full(labels.shape, np.inf, np.float32)
    pad = int(np.ceil(reach))
    for obj_id, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        window = tuple(
            slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, labels.shape)
        )
        outside = labels[window] != obj_id
        dist = ndi.distance_transform_edt(outside).astype(np.float32)
        w1, w2 = d1[window], d2[window]
        d2[window] = np.minimum(w2, np.maximum(w1, dist))
        d1[window] = np.minimum(w1, dist)
    return d1, d2
