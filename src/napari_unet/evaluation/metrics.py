"""Segmentation metrics: binary masks, multi-class label images and object instances.

Public as :mod:`napari_unet.metrics`. Every function takes ``(ground_truth, prediction)`` label
images of the same shape and any rank (2D, 3D, ...), boolean or integer (ids up to
``2**63 - 1``), and an optional ``region`` mask (pixels where it is False are ignored).
:func:`per_slice` breaks any metric down along an axis.

Edge cases follow one rule, never NaN and never ``ZeroDivisionError``: **a score whose
denominator is zero is 1.0 when there is nothing to disagree about (no TP, FP or FN: both
masks empty) and 0.0 otherwise.** So both masks empty gives 1.0 for every score (``dice_loss``
0.0); an empty prediction against a non-empty truth gives precision, recall, IoU and Dice 0.0;
a non-empty prediction against an empty truth gives 0.0 as well.

>>> import numpy as np
>>> from napari_unet import metrics
>>> gt = np.array([[1, 1, 0, 0]]); pred = np.array([[1, 0, 1, 0]])
>>> metrics.precision(gt, pred), metrics.recall(gt, pred), metrics.iou(gt, pred)
(0.5, 0.5, 0.3333333333333333)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..common.errors import UserInputError
from .instances import (
    DEFAULT_THRESHOLDS,
    AveragePrecision,
    InstanceMatch,
    average_precision,
    match_instances,
)
from .matching import check_pair, compact_labels, safe_ratio

__all__ = [
    "DEFAULT_THRESHOLDS",
    "AveragePrecision",
    "ClassScores",
    "InstanceMatch",
    "average_precision",
    "binary_counts",
    "class_scores",
    "confusion_matrix",
    "dice",
    "dice_loss",
    "f1",
    "iou",
    "jaccard",
    "match_instances",
    "per_slice",
    "precision",
    "recall",
    "safe_ratio",
]


# --------------------------------------------------------------------------- binary masks
def binary_counts(
    ground_truth: ArrayLike, prediction: ArrayLike, *, region: ArrayLike | None = None
) -> tuple[int, int, int]:
    """Pixel counts ``(TP, FP, FN)`` of two masks; nonzero pixels are foreground.

    Parameters
    ----------
    ground_truth, prediction : ndarray of shape (...), bool or int
        Masks or label images of the same shape (any nonzero label is foreground).
    region : ndarray of shape (...), bool, optional
        Only pixels where ``region`` is True are counted.
    """
    gt, pred, mask = check_pair(ground_truth, prediction, region)
    g, p = gt != 0, pred != 0
    if mask is not None:
        g, p = g & mask, p & mask
    tp = int(np.count_nonzero(g & p))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp


def precision(
    ground_truth: ArrayLike, prediction: ArrayLike, *, region: ArrayLike | None = None
) -> float:
    """Precision ``TP / (TP + FP)``: the fraction of predicted foreground that is right.

    Notes
    -----
    Both masks empty: 1.0. Empty prediction (``TP + FP = 0``) with a non-empty truth: 0.0.
    """
    tp, fp, fn = binary_counts(ground_truth, prediction, region=region)
    return safe_ratio(tp, tp + fp, tp, fp, fn)


def recall(
    ground_truth: ArrayLike, prediction: ArrayLike, *, region: ArrayLike | None = None
) -> float:
    """Recall (sensitivity) ``TP / (TP + FN)``: the fraction of true foreground found.

    Notes
    -----
    Both masks empty: 1.0. Empty truth (``TP + FN = 0``) with a non-empty prediction: 0.0.
    """
    tp, fp, fn = binary_counts(ground_truth, prediction, region=region)
    return safe_ratio(tp, tp + fn, tp, fp, fn)


def iou(
    ground_truth: ArrayLike, prediction: ArrayLike, *, region: ArrayLike | None = None
) -> float:
    """Intersection over union (Jaccard index) ``|G & P| / |G | P| = TP / (TP + FP + FN)``.

    Notes
    -----
    Both masks empty: 1.0. ``IoU = Dice / (2 - Dice)``.
    """
    tp, fp, fn = binary_counts(ground_truth, prediction, region=region)
    return safe_ratio(tp, tp + fp + fn, tp, fp, fn)


def dice(
    ground_truth: ArrayLike, prediction: ArrayLike, *, region: ArrayLike | None = None
) -> float:
    """Dice coefficient (F1 score) ``2 |G & P| / (|G| + |P|) = 2 TP / (2 TP + FP + FN)``.

    Notes
    -----
    Both masks empty: 1.0. ``Dice = 2 IoU / (1 + IoU)``.
    """
    tp, fp, fn = binary_counts(ground_truth, prediction, region=region)
    return safe_ratio(2 * tp, 2 * tp + fp + fn, tp, fp, fn)


def dice_loss(
    ground_truth: ArrayLike, prediction: ArrayLike, *, region: ArrayLike | None = None
) -> float:
    """Dice loss ``1 - Dice`` (of hard masks; 0.0 when both masks are empty)."""
    return 1.0 - dice(ground_truth, prediction, region=region)


#: aliases: the Jaccard index is the IoU, F1 is Dice
jaccard = iou
f1 = dice


# --------------------------------------------------------------------------- multi-class
def confusion_matrix(
    ground_truth: ArrayLike,
    prediction: ArrayLike,
    *,
    ignore_label: int | None = None,
    region: ArrayLike | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Pixel confusion matrix of two class label images.

    Parameters
    ----------
    ground_truth, prediction : ndarray of shape (...), int
        Class ids (any non-negative integers; ids need not be contiguous).
    ignore_label : int, optional
        Pixels where ``ground_truth == ignore_label`` are not counted.
    region : ndarray of shape (...), bool, optional
        Only pixels inside the region are counted.

    Returns
    -------
    classes : ndarray of shape (C,), int64
        Sorted class ids present in either image (after ignoring).
    matrix : ndarray of shape (C, C), int64
        ``matrix[i, j]`` = number of pixels of true class ``classes[i]`` predicted as
        ``classes[j]``.
    """
    gt, pred, mask = check_pair(ground_truth, prediction, region)
    if ignore_label is not None:
        keep = gt != ignore_label
        mask = keep if mask is None else mask & keep
    g, p = gt.ravel(), pred.ravel()
    if mask is not None:
        g, p = g[mask.ravel()], p[mask.ravel()]
    gi, g_ids, g_area = compact_labels(g)
    pj, p_ids, p_area = compact_labels(p)
    classes = np.union1d(g_ids, p_ids)
    classes = np.concatenate(([0], classes[classes != 0]))
    n = classes.size
    gi = np.searchsorted(classes, np.concatenate(([0], g_ids)))[gi]
    pj = np.searchsorted(classes, np.concatenate(([0], p_ids)))[pj]
    matrix = np.bincount(gi * n + pj, minlength=n * n).reshape(n, n)
    if g_area.sum() == g.size and p_area.sum() == p.size:  # no class 0 anywhere
        classes, matrix = classes[1:], matrix[1:, 1:]
    return classes.astype(np.int64), matrix.astype(np.int64)


@dataclass(frozen=True)
class ClassScores:
    """Per-class pixel scores with macro and micro averages.

    Attributes
    ----------
    classes : ndarray of shape (C,)
        Class ids, in the order of the per-class arrays.
    tp, fp, fn : ndarray of shape (C,), int64
        Per-class pixel counts (one-vs-rest).
    precision, recall, iou, dice : ndarray of shape (C,), float64
        Per-class scores (edge cases as in the module docstring).
    macro, micro : dict of str to float
        ``precision``, ``recall``, ``iou``, ``dice`` averaged: macro = unweighted mean of the
        per-class scores; micro = the score of the summed TP/FP/FN over the classes.
    """

    classes: NDArray[np.int64]
    tp: NDArray[np.int64]
    fp: NDArray[np.int64]
    fn: NDArray[np.int64]
    precision: NDArray[np.float64]
    recall: NDArray[np.float64]
    iou: NDArray[np.float64]
    dice: NDArray[np.float64]
    macro: dict[str, float] = field(default_factory=dict)
    micro: dict[str, float] = field(default_factory=dict)


def _scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    return {
        "precision": safe_ratio(tp, tp + fp, tp, fp, fn),
        "recall": safe_ratio(tp, tp + fn, tp, fp, fn),
        "iou": safe_ratio(tp, tp + fp + fn, tp, fp, fn),
        "dice": safe_ratio(2 * tp, 2 * tp + fp + fn, tp, fp, fn),
    }


def scores_from_counts(
    classes: ArrayLike, tp: ArrayLike, fp: ArrayLike, fn: ArrayLike
) -> ClassScores:
    """Build :class:`ClassScores` from per-class ``TP``, ``FP``, ``FN`` counts."""
    tp, fp, fn = (np.asarray(a, dtype=np.int64) for a in (tp, fp, fn))
    per = [_scores(*c) for c in zip(tp.tolist(), fp.tolist(), fn.tolist())]
    arrays = {
        k: np.array([s[k] for s in per], dtype=np.float64)
        for k in ("precision", "recall", "iou", "dice")
    }
    macro = {k: float(v.mean()) if v.size else 1.0 for k, v in arrays.items()}
    micro = _scores(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    return ClassScores(
        np.asarray(classes, dtype=np.int64), tp, fp, fn, **arrays, macro=macro, micro=micro
    )


def class_scores(
    ground_truth: ArrayLike,
    prediction: ArrayLike,
    *,
    classes: Sequence[int] | None = None,
    ignore_label: int | None = None,
    region: ArrayLike | None = None,
) -> ClassScores:
    """Precision, recall, IoU and Dice of every class (one-vs-rest), with macro/micro averages.

    Parameters
    ----------
    ground_truth, prediction : ndarray of shape (...), int
        Class label images.
    classes : sequence of int, optional
        The classes to score and average (e.g. ``[1, 2]`` to leave out background 0). Default:
        every class present in either image, except ``ignore_label``. All pixels are counted
        either way (a pixel of class 0 predicted as 1 is a false positive of class 1).
    ignore_label : int, optional
        Pixels where the ground truth has this label are not counted.
    region : ndarray of shape (...), bool, optional
        Only pixels inside the region are counted.

    Notes
    -----
    For class ``c``: ``TP = #(G = c & P = c)``, ``FP = #(G != c & P = c)``,
    ``FN = #(G = c & P != c)``, and the binary formulas apply. Macro average
    ``mean_c score_c``; micro average: the binary formula on ``sum_c TP``, ``sum_c FP``,
    ``sum_c FN`` (with all classes, micro precision = micro recall = pixel accuracy). A class
    absent from both images scores 1.0 (both empty). These match scikit-learn's
    ``precision_score``/``recall_score``/``jaccard_score``/``f1_score`` with ``labels=classes``
    and ``average=None | "macro" | "micro"`` wherever scikit-learn's result is defined.
    """
    present, matrix = confusion_matrix(
        ground_truth, prediction, ignore_label=ignore_label, region=region
    )
    if classes is None:
        wanted = present[present != ignore_label] if ignore_label is not None else present
    else:
        wanted = np.asarray(classes, dtype=np.int64).ravel()
    lookup = {int(c): i for i, c in enumerate(present)}
    rows = [lookup.get(int(c)) for c in wanted]
    diag, predicted, true = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    tp = [0 if i is None else diag[i] for i in rows]
    fp = [0 if i is None else predicted[i] - diag[i] for i in rows]
    fn = [0 if i is None else true[i] - diag[i] for i in rows]
    return scores_from_counts(wanted, tp, fp, fn)


# --------------------------------------------------------------------------- breakdown
def per_slice(
    metric: Callable[..., Any],
    ground_truth: ArrayLike,
    prediction: ArrayLike,
    *,
    axis: int = 0,
    region: ArrayLike | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Apply ``metric`` to every slice (z-plane, time frame, ...) along ``axis``.

    Parameters
    ----------
    metric : callable
        Any function of this module, e.g. :func:`dice` or :func:`match_instances`.
    ground_truth, prediction : ndarray of shape (..., N, ...)
        Label images of the same shape.
    axis : int
        The axis to break down along (negative values count from the end).
    region : ndarray, optional
        Region mask of the same shape, sliced alongside.
    **kwargs
        Passed on to ``metric`` (e.g. ``iou_threshold=0.7``).

    Returns
    -------
    list
        ``metric``'s result for each of the ``N`` slices, in order.
    """
    gt, pred, mask = check_pair(ground_truth, prediction, region)
    if not -gt.ndim <= axis < gt.ndim:
        raise UserInputError(f"axis {axis} is out of range for label images of shape {gt.shape}")
    out = []
    for i in range(gt.shape[axis]):
        sub = None if mask is None else np.take(mask, i, axis=axis)
        out.append(
            metric(np.take(gt, i, axis=axis), np.take(pred, i, axis=axis), region=sub, **kwargs)
        )
    return out
