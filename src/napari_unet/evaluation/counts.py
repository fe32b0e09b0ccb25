"""Additive counts of an evaluation: summing them pools slices or images exactly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .instances import instance_scores
from .matching import safe_ratio
from .metrics import scores_from_counts

__all__ = ["ClassCounts", "InstanceCounts"]

Record = dict[str, Any]


@dataclass(frozen=True)
class InstanceCounts:
    """Additive counts of an instance evaluation (summing them pools images or slices)."""

    thresholds: tuple[float, ...]
    n_true: int = 0
    n_pred: int = 0
    pixel_tp: int = 0
    pixel_fp: int = 0
    pixel_fn: int = 0
    tp: tuple[int, ...] = ()
    iou_sum: tuple[float, ...] = ()

    def __add__(self, other: InstanceCounts) -> InstanceCounts:
        if other.thresholds != self.thresholds:
            raise ValueError("cannot add counts computed at different thresholds")
        tp = tuple(a + b for a, b in zip(self.tp or (0,) * len(self.thresholds), other.tp))
        iou = tuple(
            a + b for a, b in zip(self.iou_sum or (0.0,) * len(self.thresholds), other.iou_sum)
        )
        return InstanceCounts(
            self.thresholds, self.n_true + other.n_true, self.n_pred + other.n_pred,
            self.pixel_tp + other.pixel_tp, self.pixel_fp + other.pixel_fp,
            self.pixel_fn + other.pixel_fn, tp, iou,
        )  # fmt: skip

    def record(self, iou_threshold: float, ap_thresholds: Sequence[float]) -> Record:
        """Scores: pixel metrics, instance metrics at ``iou_threshold``, AP per threshold."""
        ptp, pfp, pfn = self.pixel_tp, self.pixel_fp, self.pixel_fn
        at = self.thresholds.index(iou_threshold)
        tp = self.tp[at] if self.tp else 0
        inst = instance_scores(
            self.n_true, self.n_pred, tp, self.iou_sum[at] if self.iou_sum else 0.0
        )
        rec: Record = {
            "n_true": self.n_true,
            "n_pred": self.n_pred,
            "pixel_precision": safe_ratio(ptp, ptp + pfp, ptp, pfp, pfn),
            "pixel_recall": safe_ratio(ptp, ptp + pfn, ptp, pfp, pfn),
            "pixel_iou": safe_ratio(ptp, ptp + pfp + pfn, ptp, pfp, pfn),
            "pixel_dice": safe_ratio(2 * ptp, 2 * ptp + pfp + pfn, ptp, pfp, pfn),
            "iou_threshold": iou_threshold,
            "tp": tp,
            "fp": self.n_pred - tp,
            "fn": self.n_true - tp,
        }
        rec.update({k: v for k, v in inst.items() if k != "average_precision"})
        aps = []
        for t in ap_thresholds:
            i = self.thresholds.index(t)
            tp_t = self.tp[i] if self.tp else 0
            aps.append(instance_scores(self.n_true, self.n_pred, tp_t, 0.0)["average_precision"])
            rec[f"ap@{t:.2f}"] = aps[-1]
        rec["ap"] = float(np.mean(aps))
        return rec


@dataclass(frozen=True)
class ClassCounts:
    """Additive per-class pixel counts ``{class id: (TP, FP, FN)}`` of a semantic evaluation."""

    counts: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def __add__(self, other: ClassCounts) -> ClassCounts:
        merged = dict(self.counts)
        for c, (tp, fp, fn) in other.counts.items():
            a, b, d = merged.get(c, (0, 0, 0))
            merged[c] = (a + tp, b + fp, d + fn)
        return ClassCounts(merged)

    def records(self) -> list[Record]:
        """One record per class, then ``macro`` and ``micro`` averages."""
        classes = sorted(self.counts)
        tp, fp, fn = (
            np.array([self.counts[c][k] for c in classes], dtype=np.int64) for k in range(3)
        )
        s = scores_from_counts(classes, tp, fp, fn)
        rows = [
            {"class": c, "support": int(tp[i] + fn[i]), "predicted": int(tp[i] + fp[i]),
             "tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i]),
             "precision": float(s.precision[i]), "recall": float(s.recall[i]),
             "iou": float(s.iou[i]), "dice": float(s.dice[i])}
            for i, c in enumerate(classes)
        ]  # fmt: skip
        totals = {"support": int(tp.sum() + fn.sum()), "predicted": int(tp.sum() + fp.sum()),
                  "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum())}  # fmt: skip
        rows.append({"class": "macro", **totals, **s.macro})
        rows.append({"class": "micro", **totals, **s.micro})
        return rows
