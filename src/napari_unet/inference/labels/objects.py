"""Per-object table of instance labels: size, position, intensity and the model's confidence.

:func:`object_table` gives one row per label with the columns ``label, area, centroid_y,
centroid_x, mean_intensity, confidence`` (``centroid_z`` before ``centroid_y`` for 3D labels;
a ``t`` column after ``label`` for time series, whose ids are per time point). It is a plain
dict of numpy columns, which napari's ``Labels.features`` and :func:`pandas.DataFrame` both
take. The Segment dock lists the least confident objects first (:func:`least_confident`), the
CLI writes the table beside the labels (:func:`write_csv`), and
:func:`~..pipeline.segment` returns it with ``table=True``.

The confidence says where to correct first. It is the mean of three per-object readings of
the 3-class probabilities (background, interior, boundary), each in [0, 1]
(:func:`confidence_parts`):

- **foreground**: the mean object probability (1 - background) over the object's pixels: is
  it an object at all?
- **peak interior**: the highest interior probability in the object: has it a core the
  network is sure of?
- **rim boundary**: the mean boundary probability over the object's own rim (its pixels next
  to the background or another object): does the network draw its outline where the labels
  put it?

Validated by ``benchmarks/bench_confidence.py`` on the 49 DSB 2018 stage-1 test fluorescence
images (2706 objects of the default run, 12.5% of them errors: false positives or best IoU
< 0.5): the least confident tenth holds 60.7% errors, the most confident tenth none (area under
the ROC curve 0.850). Each reading alone: foreground 59.6% vs 3.0%, peak interior 62.2% vs 1.1%
(but half the objects score >= 0.998, so it hardly orders the confident ones), rim boundary
54.1% vs 0%; the mean interior probability separates worse (33.7% vs 6.7%).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "COLUMNS",
    "confidence_parts",
    "least_confident",
    "object_confidence",
    "object_table",
    "write_csv",
]

#: the columns of a 2D table, in order (3D adds ``centroid_z`` before ``centroid_y``)
COLUMNS = ("label", "area", "centroid_y", "centroid_x", "mean_intensity", "confidence")


def object_table(
    labels: np.ndarray,
    probabilities: np.ndarray | None = None,
    image: np.ndarray | None = None,
    *,
    axes: str | None = None,
) -> dict[str, np.ndarray]:
    """One row per object of ``labels``: label, area, centroid, mean intensity, confidence.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X), (Z, Y, X) or with a T axis
        Instance labels (0 = background), in memory.
    probabilities : ndarray of shape (K, *labels.shape), optional
        The model's class probabilities (3 classes for an instance model: background,
        interior, boundary). Without them the confidence is NaN.
    image : ndarray of shape labels.shape, optional
        The intensities for ``mean_intensity`` (NaN without them).
    axes : str, optional
        The letters of ``labels``' axes from ``TZYX`` (default ``"YX"`` or ``"ZYX"`` by
        dimension). Each spatial letter gives a ``centroid_<letter>`` column; with ``T``
        the objects of each time point are measured on their own and a ``t`` column says
        which.

    Returns
    -------
    dict of str to ndarray of shape (N,)
        ``label`` (int64), [``t`` (int64),] ``area`` (pixels or voxels, int64), the
        ``centroid_*`` (float64, pixel coordinates of ``labels``), ``mean_intensity`` and
        ``confidence`` (float64, in [0, 1]); rows in order of label (then time point).
    """
    labels = np.asarray(labels)
    axes = _check_axes(axes, labels.ndim)
    if probabilities is not None and probabilities.shape[1:] != labels.shape:
        raise ValueError(
            f"probabilities of shape {probabilities.shape} do not fit labels {labels.shape}"
        )
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"image of shape {np.shape(image)} does not fit labels {labels.shape}")
    if "T" not in axes:
        return _frame_table(labels, probabilities, image, axes)
    t = axes.index("T")
    spatial = axes.replace("T", "")
    parts = []
    for i in range(labels.shape[t]):
        frame = _frame_table(
            np.take(labels, i, axis=t),
            None if probabilities is None else np.take(probabilities, i, axis=t + 1),
            None if image is None else np.take(image, i, axis=t),
            spatial,
        )
        frame = {"label": frame.pop("label"), "t": np.full(frame["area"].size, i), **frame}
        parts.append(frame)
    if not parts:
        return {**_empty(spatial), "t": np.zeros(0, np.int64)}
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _check_axes(axes: str | None, ndim: int) -> str:
    if axes is None:
        if ndim not in (2, 3):
            raise ValueError(f"give the axes of {ndim}D labels (letters from TZYX)")
        return "ZYX"[3 - ndim :]
    axes = axes.upper()
    if len(axes) != ndim or set(axes) - set("TZYX") or len(set(axes)) != ndim:
        raise ValueError(f"axes {axes!r} do not name the {ndim} axes of the labels (TZYX)")
    return axes


def _empty(spatial: str) -> dict[str, np.ndarray]:
    table = {"label": np.zeros(0, np.int64), "area": np.zeros(0, np.int64)}
    table.update({f"centroid_{a.lower()}": np.zeros(0) for a in spatial})
    table.update(mean_intensity=np.zeros(0), confidence=np.zeros(0))
    return table


def _frame_table(labels, probs, image, spatial: str) -> dict[str, np.ndarray]:
    from skimage.measure import regionprops_table

    if not labels.any():
        return _empty(spatial)
    props = regionprops_table(labels, properties=("label", "area", "centroid"))
    ids = props["label"].astype(np.int64)
    table = {"label": ids, "area": np.rint(props["area"]).astype(np.int64)}
    for i, letter in enumerate(spatial):
        table[f"centroid_{letter.lower()}"] = props[f"centroid-{i}"].astype(np.float64)
    table["mean_intensity"] = _mean(image, labels, ids)
    table["confidence"] = (
        object_confidence(labels, probs, ids) if probs is not None else np.full(ids.size, np.nan)
    )
    return table


def _mean(values, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The mean of ``values`` over each object (NaN without values)."""
    from scipy import ndimage as ndi

    if values is None:
        return np.full(ids.size, np.nan)
    return np.asarray(ndi.mean(np.asarray(values, np.float64), labels, ids), np.float64)


def confidence_parts(
    labels: np.ndarray, probabilities: np.ndarray, ids: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The three readings the confidence averages, per object (see the module's notes).

    Parameters
    ----------
    labels : ndarray of int, shape (*spatial)
    probabilities : ndarray of shape (3, *spatial)
        Background, interior and boundary probabilities.
    ids : ndarray of int, optional
        The objects, in the order of the result (default: every nonzero id, sorted).

    Returns
    -------
    dict with ``foreground``, ``peak_interior`` and ``rim_boundary``: float64 arrays of
    shape (N,); ``rim_boundary`` is NaN for an object without a rim (one filling the image).
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    if ids is None:
        ids = np.unique(labels)
        ids = ids[ids != 0]
    rim = np.where(find_boundaries(labels, mode="inner"), labels, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "foreground": _mean(1.0 - probabilities[0], labels, ids),
            "peak_interior": np.asarray(ndi.maximum(probabilities[1], labels, ids), np.float64),
            "rim_boundary": _mean(probabilities[2], rim, ids),
        }


def object_confidence(labels: np.ndarray, probabilities: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """How sure the model is of each object, in [0, 1] (float64 of shape ``ids.shape``).

    The mean of :func:`confidence_parts` for 3-class (instance) probabilities; the mean
    foreground probability (1 - background) for other models.
    """
    if probabilities.shape[0] != 3:
        return np.clip(_mean(1.0 - probabilities[0], labels, ids), 0.0, 1.0)
    parts = np.stack(list(confidence_parts(labels, probabilities, ids).values()))
    with np.errstate(invalid="ignore"):
        return np.clip(np.nanmean(parts, axis=0), 0.0, 1.0)


def least_confident(table: Mapping[str, np.ndarray]) -> np.ndarray:
    """Row indices of ``table``, least confident first (NaN confidences last)."""
    confidence = np.asarray(table["confidence"], np.float64)
    return np.argsort(np.where(np.isnan(confidence), np.inf, confidence), kind="stable")


def write_csv(table: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write ``table`` as CSV (header, one row per object, full precision), atomically.

    The file appears under its name only once complete (:func:`~napari_unet.common.atomic.
    atomic_write`); returns its path.
    """
    from ...common.atomic import atomic_write

    target = Path(path)
    columns = list(table)
    rows = zip(*(np.asarray(table[c]).tolist() for c in columns))
    with atomic_write(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)
    return target
