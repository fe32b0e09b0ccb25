"""Evaluate folders (or single files) of label images; format and write result tables.

Files are matched by name: ``a.tif`` in the ground-truth folder pairs with ``a.tif`` or
``a_labels.tif`` (what ``napari-unet segment`` writes) in the prediction folder. Files
without a partner are reported, not fatal.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..common.atomic import atomic_write
from ..common.errors import UserInputError
from ..common.progress import run_to_end
from ..common.readers import read_labels as _read_labels
from ..common.validate import check_looks_like_labels
from .metrics import DEFAULT_THRESHOLDS
from .pairs import EvaluationProgress, PairEvaluation, Record, evaluate_pair, summary_rows

__all__ = [
    "FolderEvaluation",
    "evaluate_folders",
    "format_table",
    "iter_evaluate_folders",
    "match_files",
    "read_labels",
    "write_csv",
]

#: file types read as label images, longest suffix first
LABEL_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".npy", ".png")
PREDICTION_SUFFIX = "_labels"


def _stem(path: Path) -> str | None:
    name = path.name
    for suffix in LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _list(path: Path, role: str) -> dict[str, Path]:
    if not path.exists():
        raise UserInputError(f"{role} path {str(path)!r} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    found = {s: p for p in files if (s := _stem(p)) is not None}
    if path.is_file() and not found:
        raise UserInputError(
            f"{role} file {str(path)!r} is not a label image ({', '.join(LABEL_SUFFIXES)})"
        )
    return found


def match_files(
    gt: str | os.PathLike, pred: str | os.PathLike
) -> tuple[list[tuple[str, Path, Path]], list[Path], list[Path]]:
    """Pair ground-truth and prediction files by name.

    Parameters
    ----------
    gt, pred : path
        Two folders, or two files (always paired, whatever their names).

    Returns
    -------
    pairs : list of (name, gt_path, pred_path)
        Sorted by name.
    unmatched_gt, unmatched_pred : list of Path
        Files without a partner.
    """
    gt_path, pred_path = Path(gt), Path(pred)
    gts, preds = _list(gt_path, "ground-truth"), _list(pred_path, "prediction")
    if gt_path.is_file() != pred_path.is_file():
        raise UserInputError("--gt and --pred must both be folders or both be files")
    if gt_path.is_file():
        (name, g), (_, p) = next(iter(gts.items())), next(iter(preds.items()))
        return [(name, g, p)], [], []
    pairs, used = [], set()
    for name, g in gts.items():
        for key in (name, name + PREDICTION_SUFFIX):
            if key in preds and key not in used:
                pairs.append((name, g, preds[key]))
                used.add(key)
                break
    matched = {name for name, _, _ in pairs}
    return (
        pairs,
        [p for n, p in gts.items() if n not in matched],
        [p for n, p in preds.items() if n not in used],
    )


def read_labels(path: Path, role: str = "labels") -> NDArray:
    """Read a label image (TIFF, ``.npy``, PNG or zarr) as a checked integer array.

    Goes through :func:`napari_unet.common.readers.read_labels`: a corrupt, empty, negative or
    non-integer file is a :class:`UserInputError` naming it, and so is one that does not look
    like labels (an intensity image), named by its ``role`` ("ground truth", "prediction").
    """
    labels = _read_labels(path)
    check_looks_like_labels(labels, f"{role} {path}")
    return labels


@dataclass
class FolderEvaluation:
    """Result of :func:`evaluate_folders`: records per image, then the summary records."""

    records: list[Record]
    unmatched_gt: list[Path] = field(default_factory=list)
    unmatched_pred: list[Path] = field(default_factory=list)


def iter_evaluate_folders(
    gt: str | os.PathLike,
    pred: str | os.PathLike,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    iou_threshold: float = 0.5,
    **kwargs: Any,
) -> Generator[EvaluationProgress, None, FolderEvaluation]:
    """Evaluate every matched pair, yielding progress before and after each image.

    ``kwargs`` go to :func:`~napari_unet.evaluation.pairs.evaluate_pair` (``task``,
    ``axis``, ``ignore_label``).
    """
    pairs, un_gt, un_pred = match_files(gt, pred)
    if not pairs:
        raise UserInputError(f"no file names match between {str(gt)!r} and {str(pred)!r}")
    results: list[PairEvaluation] = []
    records: list[Record] = []
    for i, (name, g, p) in enumerate(pairs):
        yield EvaluationProgress(i, len(pairs), name)
        try:
            result = evaluate_pair(
                read_labels(g, "ground truth"), read_labels(p, "prediction"),
                thresholds=thresholds,
                iou_threshold=iou_threshold, image=name, **kwargs,
            )  # fmt: skip
        except UserInputError as err:
            raise UserInputError(f"{name}: {err}") from err
        results.append(result)
        records += result.records
        yield EvaluationProgress(i + 1, len(pairs), name)
    records += summary_rows(results, iou_threshold=iou_threshold, thresholds=thresholds)
    return FolderEvaluation(records, un_gt, un_pred)


def evaluate_folders(
    gt: str | os.PathLike, pred: str | os.PathLike, **kwargs: Any
) -> FolderEvaluation:
    """Evaluate two folders (or two files) of label images; see :func:`iter_evaluate_folders`."""
    return run_to_end(iter_evaluate_folders(gt, pred, **kwargs))


def columns_of(records: Iterable[Record]) -> list[str]:
    """All keys of the records, in first-seen order."""
    cols: dict[str, None] = {}
    for rec in records:
        cols.update(dict.fromkeys(rec))
    return list(cols)


def _cell(value: Any, decimals: int) -> str:
    if isinstance(value, float | np.floating) and math.isfinite(value):
        return f"{float(value):.{decimals}f}"
    return str(value)


def format_table(
    records: Sequence[Record], columns: Sequence[str] | None = None, decimals: int = 3
) -> str:
    """Records as an aligned text table, floats rounded to ``decimals``."""
    cols = list(columns) if columns is not None else columns_of(records)
    cells = [[_cell(rec.get(c, ""), decimals) for c in cols] for rec in records]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_csv(records: Sequence[Record], path: str | os.PathLike) -> Path:
    """Write records to a CSV file at full precision, atomically (temp file, then rename)."""
    target = Path(path)
    with atomic_write(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns_of(records), restval="")
        writer.writeheader()
        writer.writerows(records)  # str(float) is the shortest exact repr: full precision
    return target
