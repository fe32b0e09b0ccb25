"""Evaluation tables: one image pair (per slice, with an error map) or two folders of files.

The CLI (``napari-unet evaluate``) and the U-Net Evaluate widget both call these functions.
A result is a list of flat records (``dict`` of column -> value), one per image or slice, plus
summary rows. Counts are kept alongside so that slices and images can be pooled exactly.

Summary rows
------------
- ``slice == "all"``: the whole image; with ``axis`` the slices are independent images and
  their counts are pooled (summed), otherwise the N-D image is evaluated as one volume
  (3D objects).
- ``image == "pooled"``: counts summed over all images, then scored.
- ``image == "mean"`` (instance task): scores averaged over images (the Data Science Bowl
  2018 leaderboard convention); count columns hold the sums.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..common.errors import UserInputError
from ..common.progress import run_to_end
from .counts import ClassCounts, InstanceCounts
from .instances import DEFAULT_THRESHOLDS
from .matching import check_pair, match_pairs, overlap_table
from .metrics import class_scores

__all__ = [
    "ERROR_CODES",
    "ClassCounts",
    "EvaluationProgress",
    "InstanceCounts",
    "PairEvaluation",
    "evaluate_pair",
    "iter_evaluate_pair",
    "summary_rows",
]

#: values of the error map
ERROR_CODES: dict[int, str] = {
    1: "false positive object",
    2: "missed object",
    3: "false positive pixel",
    4: "false negative pixel",
}

Record = dict[str, Any]


@dataclass(frozen=True)
class EvaluationProgress:
    """Progress event: ``done`` of ``total`` slices (or images) evaluated."""

    done: int
    total: int
    name: str = ""


@dataclass
class PairEvaluation:
    """Evaluation of one image pair.

    Attributes
    ----------
    records : list of dict
        Per-slice records (when ``axis`` was given) then the ``slice == "all"`` record(s).
    counts : InstanceCounts or ClassCounts
        Whole-image counts, for pooling over images.
    errors : ndarray of shape (...), uint8, or None
        Error map (values in :data:`ERROR_CODES`, 0 = no error or outside the region).
    """

    records: list[Record]
    counts: InstanceCounts | ClassCounts
    errors: NDArray[np.uint8] | None = None


def _check_task(task: str) -> str:
    if task not in ("instance", "semantic"):
        raise UserInputError(f"task must be 'instance' or 'semantic', got {task!r}")
    return task


def _thresholds(
    thresholds: Sequence[float], iou_threshold: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    ap = tuple(round(float(t), 6) for t in np.atleast_1d(np.asarray(thresholds, dtype=float)))
    if not ap:
        raise UserInputError("thresholds is empty; pass at least one IoU threshold")
    for t in (*ap, iou_threshold):
        if not 0.0 <= t < 1.0:
            raise UserInputError(f"IoU thresholds must be in [0, 1), got {t}")
    twice = sorted({t for t in ap if ap.count(t) > 1})
    if twice:  # the mean over the thresholds would count it twice, unlike its table column
        raise UserInputError(
            f"IoU threshold(s) {', '.join(f'{t:g}' for t in twice)} given more than once; "
            "give each threshold once"
        )
    return ap, tuple(sorted({*ap, round(float(iou_threshold), 6)}))


def _instance_slice(
    gt: NDArray,
    pred: NDArray,
    mask: NDArray | None,
    ts: tuple[float, ...],
    primary: float,
    want_errors: bool,
) -> tuple[InstanceCounts, NDArray[np.uint8] | None]:
    table, gi, pj = overlap_table(gt, pred, mask)
    g_fg, p_fg = (gt != 0).ravel(), (pred != 0).ravel()
    if mask is not None:
        g_fg, p_fg = g_fg & mask.ravel(), p_fg & mask.ravel()
    ptp = int(np.count_nonzero(g_fg & p_fg))
    tps, sums, errors = [], [], None
    for t in ts:
        g, p, s = match_pairs(table, t)
        tps.append(int(g.size))
        sums.append(float(s.sum()))
        if want_errors and t == primary:
            errors = np.zeros(gt.size, dtype=np.uint8)
            errors[p_fg & ~g_fg] = 3
            errors[g_fg & ~p_fg] = 4
            fp_obj = np.ones(table.n_pred + 1, dtype=bool)
            fp_obj[0], fp_obj[p + 1] = False, False
            missed = np.ones(table.n_true + 1, dtype=bool)
            missed[0], missed[g + 1] = False, False
            errors[fp_obj[pj]] = 1
            errors[missed[gi]] = 2
            errors = errors.reshape(gt.shape)
    counts = InstanceCounts(
        ts, table.n_true, table.n_pred, ptp,
        int(np.count_nonzero(p_fg)) - ptp, int(np.count_nonzero(g_fg)) - ptp, tuple(tps), tuple(sums),
    )  # fmt: skip
    return counts, errors


def _semantic_slice(
    gt: NDArray, pred: NDArray, mask: NDArray | None, ignore_label: int | None, want_errors: bool
) -> tuple[ClassCounts, NDArray[np.uint8] | None]:
    s = class_scores(gt, pred, ignore_label=ignore_label, region=mask)
    counts = ClassCounts(
        {int(c): (int(a), int(b), int(d)) for c, a, b, d in zip(s.classes, s.tp, s.fp, s.fn)}
    )
    if not want_errors:
        return counts, None
    inside = np.ones(gt.shape, bool) if mask is None else mask
    if ignore_label is not None:
        inside = inside & (gt != ignore_label)
    wrong = inside & (gt != pred)
    errors = np.zeros(gt.shape, dtype=np.uint8)
    errors[wrong & (pred != 0)] = 3
    errors[wrong & (pred == 0)] = 4
    return counts, errors


def iter_evaluate_pair(
    ground_truth: ArrayLike,
    prediction: ArrayLike,
    *,
    task: str = "instance",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    iou_threshold: float = 0.5,
    axis: int | None = None,
    region: ArrayLike | None = None,
    ignore_label: int | None = None,
    image: str = "",
    errors: bool = False,
) -> Generator[EvaluationProgress, None, PairEvaluation]:
    """Evaluate one pair of label images, yielding progress after every slice.

    Parameters
    ----------
    ground_truth, prediction : ndarray of shape (...), int
        Instance labels (``task="instance"``) or class labels (``task="semantic"``).
    task : {"instance", "semantic"}
        Instance: foreground pixel metrics, object matching and AP. Semantic: per-class
        pixel metrics with macro/micro averages.
    thresholds : sequence of float
        IoU thresholds of the AP columns (``ap@0.50`` ...; ``ap`` is their mean).
    iou_threshold : float
        Threshold of the TP/FP/FN, precision, recall, F1, mean matched IoU and PQ columns
        and of the error map.
    axis : int, optional
        Break down along this axis (z-planes, time frames): each slice is evaluated as an
        independent image and the ``"all"`` record pools the slices. ``None``: one N-D volume.
    region : ndarray of shape (...), bool, optional
        Pixels outside are ignored; objects mostly outside are dropped.
    ignore_label : int, optional
        Ground-truth pixels with this label are ignored (joined to ``region``).
    image : str
        Value of the ``image`` column.
    errors : bool
        Also compute the error map (see :data:`ERROR_CODES`).

    Returns
    -------
    PairEvaluation
        Through ``StopIteration.value`` (``result = yield from iter_evaluate_pair(...)``).
    """
    _check_task(task)
    ap_ts, all_ts = _thresholds(thresholds, iou_threshold)
    primary = round(float(iou_threshold), 6)
    gt, pred, mask = check_pair(ground_truth, prediction, region)
    if task == "instance" and ignore_label is not None:
        keep = gt != ignore_label
        mask = keep if mask is None else mask & keep
        gt = np.where(keep, gt, 0)
    if axis is not None and not -gt.ndim <= axis < gt.ndim:
        raise UserInputError(f"axis {axis} is out of range for label images of shape {gt.shape}")

    def one(g: NDArray, p: NDArray, m: NDArray | None) -> tuple[Any, NDArray | None]:
        if task == "instance":
            return _instance_slice(g, p, m, all_ts, primary, errors)
        return _semantic_slice(g, p, m, ignore_label, errors)

    def rows(c: Any, slice_: Any) -> list[Record]:
        if task == "instance":
            return [{"image": image, "slice": slice_, **c.record(primary, ap_ts)}]
        return [{"image": image, "slice": slice_, **r} for r in c.records()]

    if axis is None:
        yield EvaluationProgress(0, 1, image)
        total, err = one(gt, pred, mask)
        yield EvaluationProgress(1, 1, image)
        return PairEvaluation(rows(total, "all"), total, err)
    axis = axis % gt.ndim
    n = gt.shape[axis]
    err_map = np.zeros(gt.shape, np.uint8) if errors else None
    total = InstanceCounts(all_ts) if task == "instance" else ClassCounts()
    records: list[Record] = []
    for i in range(n):
        sub = None if mask is None else np.take(mask, i, axis=axis)
        c, e = one(np.take(gt, i, axis=axis), np.take(pred, i, axis=axis), sub)
        records += rows(c, i)
        total = total + c
        if err_map is not None:
            err_map[(slice(None),) * axis + (i,)] = e
        yield EvaluationProgress(i + 1, n, image)
    return PairEvaluation(records + rows(total, "all"), total, err_map)


def evaluate_pair(ground_truth: ArrayLike, prediction: ArrayLike, **kwargs: Any) -> PairEvaluation:
    """Evaluate one pair of label images: :func:`iter_evaluate_pair` run to completion."""
    return run_to_end(iter_evaluate_pair(ground_truth, prediction, **kwargs))


def summary_rows(
    results: Sequence[PairEvaluation],
    *,
    iou_threshold: float = 0.5,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> list[Record]:
    """Summary records over images: ``pooled`` (summed counts), and ``mean`` for instances."""
    if not results:
        return []
    total = results[0].counts
    for r in results[1:]:
        total = total + r.counts
    if isinstance(total, ClassCounts):
        return [{"image": "pooled", "slice": "all", **r} for r in total.records()]
    ap_ts, _ = _thresholds(thresholds, iou_threshold)
    pooled = {
        "image": "pooled",
        "slice": "all",
        **total.record(round(float(iou_threshold), 6), ap_ts),
    }
    per_image = [r.records[-1] for r in results]
    mean: Record = {"image": "mean", "slice": "all"}
    for key, value in pooled.items():
        if key in ("image", "slice"):
            continue
        if key in ("n_true", "n_pred", "tp", "fp", "fn", "iou_threshold"):
            mean[key] = value
        else:
            mean[key] = float(np.mean([rec[key] for rec in per_image]))
    return [mean, pooled]
