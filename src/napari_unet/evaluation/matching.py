"""Input checks, the overlap (contingency) table of two label images, and optimal matching.

Everything here works on flattened arrays and sparse tables, so label ids up to ``2**63 - 1``
cost no memory beyond the number of objects, and no function loops over pairs of objects in
Python: the table is built in one vectorised pass (run-length compression, then
``np.unique``/``np.bincount`` on the pair keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..common.errors import ShapeError, UserInputError
from ..common.validate import check_labels

#: ids up to this value are counted with ``np.bincount`` (a table of ``max id`` entries);
#: larger ids go through ``np.unique`` on run-length compressed labels
_DIRECT_ID_LIMIT = 1 << 22


def safe_ratio(num: float, den: float, tp: float, fp: float, fn: float) -> float:
    """``num / den``; if ``den == 0``: 1.0 when ``tp + fp + fn == 0`` (both empty), else 0.0."""
    if den > 0:
        return float(num / den)
    return 1.0 if tp + fp + fn == 0 else 0.0


def check_pair(
    ground_truth: ArrayLike, prediction: ArrayLike, region: ArrayLike | None = None
) -> tuple[NDArray, NDArray, NDArray[np.bool_] | None]:
    """Validate two label images (and an optional region mask) and return them as arrays.

    Raises
    ------
    ShapeError
        If the shapes differ (the message names both) or an array is 0-dimensional.
    UserInputError
        If a label image is not boolean/integer or holds negative labels.
    """
    gt = np.asarray(ground_truth)
    pred = np.asarray(prediction)
    both = f"ground_truth: shape {gt.shape}, dtype {gt.dtype}; prediction: shape {pred.shape}, dtype {pred.dtype}"
    for name, arr in (("ground_truth", gt), ("prediction", pred)):
        try:
            check_labels(arr, name, empty_ok=True)
        except UserInputError as err:
            raise UserInputError(f"{err} ({both})") from None
        if arr.ndim == 0:
            raise ShapeError(f"{name} is a scalar ({both}); pass an image of at least 1 dimension")
    if gt.ndim != pred.ndim:
        raise ShapeError(
            f"ground_truth and prediction have different ranks ({gt.ndim} vs {pred.ndim}): {both}; "
            "squeeze or add axes so that they match"
        )
    if gt.shape != pred.shape:
        raise ShapeError(f"ground_truth and prediction must have the same shape: {both}")
    return gt, pred, check_region(region, gt.shape)


def check_region(region: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_] | None:
    """Return ``region`` as a boolean mask of ``shape`` (nonzero = evaluated), or ``None``."""
    if region is None:
        return None
    mask = np.asarray(region)
    if mask.dtype.kind not in "biu":
        raise UserInputError(
            f"region must be a boolean or integer mask, got dtype {mask.dtype} (shape {mask.shape})"
        )
    if mask.shape != tuple(shape):
        raise ShapeError(
            f"region has shape {mask.shape} but the label images have shape {tuple(shape)}; "
            "pass a mask of the same shape"
        )
    return mask.astype(bool, copy=False)


def _as_index_dtype(flat: NDArray) -> NDArray:
    if flat.dtype == np.bool_ or flat.dtype.itemsize < 8 or flat.dtype.kind == "i":
        return flat.astype(np.int64, copy=False)
    if flat.size and flat.max() > np.iinfo(np.int64).max:
        raise UserInputError(f"label ids above 2**63 - 1 are not supported (max {flat.max()})")
    return flat.astype(np.int64)


def run_unique(values: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """``np.unique(values, return_inverse=True, return_counts=True)`` for 1-D arrays with long runs.

    Sorting only the run heads makes this much faster than ``np.unique`` on raster-ordered
    label images, where neighbouring pixels mostly share a value.
    """
    if values.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return values[:0], empty, empty
    starts = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], starts))
    lengths = np.diff(np.append(starts, values.size))
    uniq, run_inverse = np.unique(values[starts], return_inverse=True)
    counts = np.bincount(run_inverse, weights=lengths, minlength=uniq.size).astype(np.int64)
    return uniq, np.repeat(run_inverse, lengths), counts


def compact_labels(flat: NDArray) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Relabel a flat label array to ``0..n`` (0 = background).

    Returns
    -------
    index : ndarray of shape (P,), int64
        Per pixel, 0 for background or ``k + 1`` for the object ``ids[k]``.
    ids : ndarray of shape (n,), int64
        The sorted nonzero ids.
    areas : ndarray of shape (n,), int64
        Pixel count of each object.
    """
    labels = _as_index_dtype(flat)
    top = int(labels.max()) if labels.size else 0
    if top <= min(_DIRECT_ID_LIMIT, max(1 << 16, labels.size)):  # tables of at most 32 MB
        counts = np.bincount(labels, minlength=1)
        ids = np.flatnonzero(counts[1:]) + 1
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return lut[labels], ids.astype(np.int64), counts[ids].astype(np.int64)
    uniq, inverse, counts = run_unique(labels)
    if uniq.size and uniq[0] == 0:
        return inverse, uniq[1:], counts[1:]
    return inverse + 1, uniq, counts


@dataclass(frozen=True)
class OverlapTable:
    """Sparse contingency table of two instance label images.

    Attributes
    ----------
    gt_ids, pred_ids : ndarray of shape (n_true,), (n_pred,)
        Object ids (background 0 excluded), sorted.
    gt_areas, pred_areas : ndarray of shape (n_true,), (n_pred,)
        Pixel counts (inside the region, if one was given).
    pair_gt, pair_pred : ndarray of shape (K,)
        Indexes into ``gt_ids`` / ``pred_ids`` of every overlapping pair.
    intersection, pair_iou : ndarray of shape (K,)
        Overlap in pixels and IoU ``|G & P| / |G | P|`` of each pair.
    """

    gt_ids: NDArray[np.int64]
    pred_ids: NDArray[np.int64]
    gt_areas: NDArray[np.int64]
    pred_areas: NDArray[np.int64]
    pair_gt: NDArray[np.int64]
    pair_pred: NDArray[np.int64]
    intersection: NDArray[np.int64]
    pair_iou: NDArray[np.float64]

    @property
    def n_true(self) -> int:
        return int(self.gt_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)


def _drop_outside(
    index: NDArray, ids: NDArray, region: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """Zero pixels outside the region; drop objects with under half their pixels inside."""
    full = np.bincount(index, minlength=ids.size + 1)
    index = np.where(region, index, 0)
    inside = np.bincount(index, minlength=ids.size + 1)
    keep = 2 * inside[1:] >= full[1:]
    lut = np.zeros(ids.size + 1, dtype=np.int64)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[index], ids[keep], inside[1:][keep]


def overlap_table(
    gt: NDArray, pred: NDArray, region: NDArray[np.bool_] | None = None
) -> tuple[OverlapTable, NDArray[np.int64], NDArray[np.int64]]:
    """Build the overlap table of two checked label images in one pass.

    Returns the table and the flattened per-pixel object indexes of both images (``0`` =
    background, outside the region or dropped; ``k + 1`` = ``gt_ids[k]``).
    """
    gi, gt_ids, gt_areas = compact_labels(gt.ravel())
    pj, pred_ids, pred_areas = compact_labels(pred.ravel())
    if region is not None:
        flat_region = region.ravel()
        gi, gt_ids, gt_areas = _drop_outside(gi, gt_ids, flat_region)
        pj, pred_ids, pred_areas = _drop_outside(pj, pred_ids, flat_region)
    both = (gi > 0) & (pj > 0)
    stride = pred_ids.size + 1
    keys = gi[both] * stride + pj[both]
    if (gt_ids.size + 1) * stride <= _DIRECT_ID_LIMIT:
        counts = np.bincount(keys, minlength=(gt_ids.size + 1) * stride)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, _, counts = run_unique(keys)
    pair_gt, pair_pred = keys // stride - 1, keys % stride - 1
    union = gt_areas[pair_gt] + pred_areas[pair_pred] - counts
    table = OverlapTable(
        gt_ids, pred_ids, gt_areas, pred_areas, pair_gt, pair_pred,
        counts.astype(np.int64), counts / np.maximum(union, 1),
    )  # fmt: skip
    return table, gi, pj


def match_pairs(table: OverlapTable, threshold: float) -> tuple[NDArray, NDArray, NDArray]:
    """Optimal one-to-one matching of the pairs with ``IoU > threshold``.

    The matching maximises the number of matches, then the total IoU among matchings of that
    size (cost of a candidate pair ``-(1 + IoU / (2 n))``, as in StarDist). Pairs are split into
    connected components; only components with conflicts go through
    :func:`scipy.optimize.linear_sum_assignment`. For ``threshold >= 0.5`` no conflicts exist.

    Returns
    -------
    gt_index, pred_index, iou : ndarray of shape (M,)
        Indexes into ``table.gt_ids`` / ``table.pred_ids`` and the IoU of each match.
    """
    cand = table.pair_iou > threshold
    g, p, s = table.pair_gt[cand], table.pair_pred[cand], table.pair_iou[cand]
    if g.size == 0 or (np.bincount(g).max() <= 1 and np.bincount(p).max() <= 1):
        return g, p, s
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = table.n_true + table.n_pred
    graph = coo_matrix((np.ones(g.size), (g, p + table.n_true)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    edge_comp = component[g]
    sizes = np.bincount(edge_comp)
    single = sizes[edge_comp] == 1
    out = [(g[single], p[single], s[single])]
    for comp in np.flatnonzero(sizes > 1):
        sel = edge_comp == comp
        rows, r = np.unique(g[sel], return_inverse=True)
        cols, c = np.unique(p[sel], return_inverse=True)
        cost = np.zeros((rows.size, cols.size))
        cost[r, c] = -(1.0 + s[sel] / (2.0 * min(rows.size, cols.size)))
        ri, ci = linear_sum_assignment(cost)
        ok = cost[ri, ci] < 0
        iou = np.zeros_like(cost)
        iou[r, c] = s[sel]
        out.append((rows[ri[ok]], cols[ci[ok]], iou[ri[ok], ci[ok]]))
    return tuple(np.concatenate(parts) for parts in zip(*out))  # type: ignore[return-value]
