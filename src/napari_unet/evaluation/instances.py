"""Instance metrics: one-to-one matching of objects on IoU, and the DSB 2018 average precision.

Public through :mod:`napari_unet.metrics`; see its docstring for the edge-case rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..common.errors import UserInputError
from .matching import check_pair, match_pairs, overlap_table, safe_ratio

#: IoU thresholds of the Data Science Bowl 2018 metric: 0.50, 0.55, ..., 0.95
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class InstanceMatch:
    """Result of :func:`match_instances` at one IoU threshold.

    Attributes
    ----------
    iou_threshold : float
        Pairs match when their IoU is strictly above it.
    n_true, n_pred : int
        Number of objects in the ground truth and in the prediction.
    tp, fp, fn : int
        Matched pairs, unmatched predictions, unmatched true objects.
    precision, recall, f1 : float
        ``TP/(TP+FP)``, ``TP/(TP+FN)``, ``2TP/(2TP+FP+FN)``.
    average_precision : float
        ``TP/(TP+FP+FN)`` (the Data Science Bowl 2018 score at this threshold).
    mean_matched_iou : float
        Mean IoU of the matched pairs (segmentation quality, SQ); 0.0 without matches.
    panoptic_quality : float
        ``sum(IoU of matches) / (TP + FP/2 + FN/2)`` = SQ x F1 (Kirillov et al. 2019).
    matched_true, matched_pred : ndarray of shape (TP,)
        Ids of the matched objects, pairwise.
    matched_iou : ndarray of shape (TP,)
        IoU of each matched pair.
    """

    iou_threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    average_precision: float
    mean_matched_iou: float
    panoptic_quality: float
    matched_true: NDArray[np.int64] = field(repr=False)
    matched_pred: NDArray[np.int64] = field(repr=False)
    matched_iou: NDArray[np.float64] = field(repr=False)

    def as_dict(self) -> dict[str, float]:
        """The scalar fields as a dict (no arrays)."""
        return {
            k: getattr(self, k) for k in self.__dataclass_fields__ if not k.startswith("matched_")
        }


def instance_scores(n_true: int, n_pred: int, tp: int, iou_sum: float) -> dict[str, float]:
    """Instance scores from object counts, matches and the summed IoU of the matches."""
    fp, fn = n_pred - tp, n_true - tp
    return {
        "precision": safe_ratio(tp, tp + fp, tp, fp, fn),
        "recall": safe_ratio(tp, tp + fn, tp, fp, fn),
        "f1": safe_ratio(2 * tp, 2 * tp + fp + fn, tp, fp, fn),
        "average_precision": safe_ratio(tp, tp + fp + fn, tp, fp, fn),
        "mean_matched_iou": safe_ratio(iou_sum, tp, tp, fp, fn),
        "panoptic_quality": safe_ratio(iou_sum, tp + 0.5 * (fp + fn), tp, fp, fn),
    }


def _check_threshold(t: float) -> float:
    t = float(t)
    if not 0.0 <= t < 1.0:
        raise UserInputError(f"IoU thresholds must be in [0, 1), got {t}")
    return t


def match_instances(
    ground_truth: ArrayLike,
    prediction: ArrayLike,
    iou_threshold: float = 0.5,
    *,
    region: ArrayLike | None = None,
) -> InstanceMatch:
    """Match true and predicted objects one-to-one on IoU and count TP, FP, FN.

    Parameters
    ----------
    ground_truth, prediction : ndarray of shape (...), int
        Instance label images: 0 = background, one id per object (ids need not be
        contiguous; up to ``2**63 - 1``).
    iou_threshold : float
        A pair can match when ``IoU > iou_threshold`` (strictly, as in the DSB 2018 metric).
    region : ndarray of shape (...), bool, optional
        Pixels outside the region are ignored; objects with less than half of their pixels
        inside are dropped from both images (neither TP, FP nor FN).

    Returns
    -------
    InstanceMatch

    Notes
    -----
    The matching is optimal: it maximises the number of matches, then their total IoU
    (:func:`scipy.optimize.linear_sum_assignment`); for thresholds >= 0.5 a match is unique
    anyway. Both images without objects: every score 1.0. Edge cases follow
    :func:`safe_ratio`.
    """
    t = _check_threshold(iou_threshold)
    gt, pred, mask = check_pair(ground_truth, prediction, region)
    table, _, _ = overlap_table(gt, pred, mask)
    return match_table(table, t)


def match_table(table: Any, iou_threshold: float) -> InstanceMatch:
    """:class:`InstanceMatch` from a prebuilt :class:`~napari_unet.evaluation.matching.OverlapTable`."""
    gi, pj, ious = match_pairs(table, iou_threshold)
    tp = int(gi.size)
    s = instance_scores(table.n_true, table.n_pred, tp, float(ious.sum()))
    return InstanceMatch(
        float(iou_threshold), table.n_true, table.n_pred, tp, table.n_pred - tp, table.n_true - tp,
        **s, matched_true=table.gt_ids[gi], matched_pred=table.pred_ids[pj], matched_iou=ious,
    )  # fmt: skip


@dataclass(frozen=True)
class AveragePrecision:
    """Average precision in the Data Science Bowl 2018 sense.

    Attributes
    ----------
    thresholds : tuple of float
        The IoU thresholds.
    scores : tuple of float
        ``TP / (TP + FP + FN)`` at each threshold.
    mean : float
        The mean of ``scores``; ``float(result)`` gives it too.
    """

    thresholds: tuple[float, ...]
    scores: tuple[float, ...]
    mean: float

    def __float__(self) -> float:
        return self.mean


def average_precision(
    ground_truth: ArrayLike,
    prediction: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    region: ArrayLike | None = None,
) -> AveragePrecision:
    """``TP / (TP + FP + FN)`` at each IoU threshold and its mean (DSB 2018 metric).

    Parameters
    ----------
    ground_truth, prediction : ndarray of shape (...), int
        Instance label images (see :func:`match_instances`).
    thresholds : sequence of float
        IoU thresholds in [0, 1); default 0.50, 0.55, ..., 0.95.
    region : ndarray of shape (...), bool, optional
        As in :func:`match_instances`.

    Notes
    -----
    ``AP(t) = TP(t) / (TP(t) + FP(t) + FN(t))`` with the one-to-one matching of
    :func:`match_instances` at ``IoU > t``; the overlap table is built once for all thresholds.
    Both images without objects: 1.0; objects in only one of them: 0.0.
    """
    ts = tuple(_check_threshold(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=float)))
    if not ts:
        raise UserInputError("thresholds is empty; pass at least one IoU threshold")
    gt, pred, mask = check_pair(ground_truth, prediction, region)
    table, _, _ = overlap_table(gt, pred, mask)
    scores = tuple(match_table(table, t).average_precision for t in ts)
    return AveragePrecision(ts, scores, float(np.mean(scores)))
