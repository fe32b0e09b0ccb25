"""Automatic object size: how much to resample an image so its nuclei look as the model expects.

A model segments well the object sizes it was trained on: its card's ``object_diameter``
(the median equivalent diameter of the training objects) times the range of its zoom
augmentation (``0.5``-``2`` for the built-in nuclei model, so about 10-40 px). Nuclei far
outside that range are over-split (too large) or merged (too small).

:func:`auto_scale_iter` measures the objects in a first pass of the model over (at most) a
``1024 x 1024`` central crop of the image: the foreground's connected components, each
measured by its largest inscribed ball (twice the maximum of the distance transform). This
survives the failure it is meant to fix: a nucleus that the model over-splits still has one
connected foreground. If the median lies outside the model's range, the image is resampled so
it lands on the nearest end of the range and measured again at that scale (sizes seen at a
comfortable scale are more reliable), up to three passes in all.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ...common.progress import relay
from ..frames import SegmentJob, is_dask
from . import rescale

log = logging.getLogger(__name__)

__all__ = [
    "EDT_TO_DIAMETER",
    "SizeEstimate",
    "auto_scale_iter",
    "comfortable_range",
    "diameter_from_foreground",
    "diameter_from_labels",
    "equivalent_diameters",
    "foreground_estimate_iter",
    "measure_scale_iter",
]

#: median of ``2 * max(distance transform)`` / equivalent diameter over the DSB 2018
#: fluorescence training labels (541 images; quartiles 0.84 and 0.93): inscribed balls are
#: smaller than equal-area ones because nuclei are elongated.
EDT_TO_DIAMETER = 0.87
#: the zoom augmentation range assumed for models whose card does not record one
DEFAULT_ZOOM = (0.75, 1.33)
#: largest crop side (pixels) measured in the first pass
CROP = 1024
#: at most this many measuring passes (each at the scale the previous one asked for)
PASSES = 3
#: objects measured smaller than this (pixels at the measuring scale) are too few pixels
#: across to size
MIN_RELIABLE = 6.0
#: the size model measures the objects not cut by the image border, unless there are fewer
#: than this many of them
MIN_INTERIOR = 3
#: version of the card's ``size_model`` entry this code reads (1: the foreground measure of
#: an unreleased first version, ignored)
SIZE_MODEL_VERSION = 2


def comfortable_range(model) -> tuple[float, float] | None:
    """Object diameters (pixels) the model was trained on: ``object_diameter`` x zoom range.

    ``None`` when the card does not record an ``object_diameter`` (semantic models, or models
    from before it was recorded).
    """
    card = getattr(model, "card", {}) or {}
    d0 = card.get("object_diameter")
    if not d0:
        return None
    training = (card.get("provenance") or {}).get("training") or {}
    zoom = (training.get("augment") or {}).get("zoom") or DEFAULT_ZOOM
    low, high = sorted(float(z) for z in zoom)
    return float(d0) * min(low, 1.0), float(d0) * max(high, 1.0)


def diameter_from_foreground(foreground: np.ndarray, min_size: int = 20) -> float | None:
    """Typical object diameter (pixels) in a foreground mask, robust to merges and splits.

    Parameters
    ----------
    foreground : ndarray of bool, shape (Y, X) or (Z, Y, X)
    min_size : int
        Components with fewer pixels are ignored (noise).

    Returns
    -------
    float or None
        The median over connected components of ``2 * max(distance transform)``, divided by
        :data:`EDT_TO_DIAMETER` so it estimates the equivalent diameter; ``None`` without
        any component of ``min_size`` pixels.
    """
    foreground = np.asarray(foreground, bool)
    labels, n = ndi.label(foreground)
    if n == 0:
        return None
    index = np.arange(1, n + 1)
    sizes = np.asarray(ndi.sum(foreground, labels, index))
    radii = np.asarray(ndi.maximum(ndi.distance_transform_edt(foreground), labels, index))
    radii = radii[sizes >= min_size]
    if radii.size == 0:
        return None
    return float(2 * np.median(radii) / EDT_TO_DIAMETER)


def diameter_from_labels(labels: np.ndarray, min_size: int = 1, min_count: int = 1) -> float | None:
    """Median equivalent diameter (pixels) of the objects of an instance image.

    Objects cut by the image border (their size is unknown) are left out unless fewer than
    :data:`MIN_INTERIOR` objects are whole.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)
        Instance labels (0 = background).
    min_size : int
        Objects with fewer pixels are ignored.
    min_count : int
        With fewer objects (of ``min_size`` pixels) there is no answer.

    Returns
    -------
    float or None
        The median diameter of the disc (2D) or ball (3D) of each object's size; ``None``
        with fewer than ``min_count`` objects of ``min_size`` pixels (or none).
    """
    labels = np.asarray(labels)
    sizes = np.bincount(labels.ravel().astype(np.int64))
    sizes[0] = 0
    border = np.zeros(sizes.size, bool)
    for axis in range(labels.ndim):
        for end in (0, -1):
            border[np.take(labels, end, axis=axis).ravel().astype(np.int64)] = True
    present = sizes >= max(min_size, 1)
    whole = present & ~border
    if present.sum() < max(min_count, 1):
        return None
    chosen = whole if whole.sum() >= MIN_INTERIOR else present
    return float(np.median(equivalent_diameters(sizes[chosen], labels.ndim)))


def equivalent_diameters(sizes: np.ndarray, ndim: int) -> np.ndarray:
    """Diameters of the discs (``ndim`` 2) or balls (3) of the given pixel (voxel) counts.

    Parameters
    ----------
    sizes : ndarray, shape (N,)
        Object sizes in pixels (voxels).
    ndim : int
        2 or 3.

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    sizes = np.asarray(sizes, np.float64)
    if ndim == 3:
        return 2 * (3 * sizes / (4 * np.pi)) ** (1 / 3)
    return 2 * np.sqrt(sizes / np.pi)


def _central_crop(canon: Any, caxes: str, model_ndim: int, side: int | None = None) -> Any:
    """The first time point, middle plane (2D models) and central ``side``-wide window of YX
    (default ``CROP``)."""
    side = CROP if side is None else side
    index = []
    for a, n in zip(caxes, canon.shape):
        if a == "T":
            index.append(slice(0, 1))
        elif a == "Z" and model_ndim == 2:
            index.append(slice(n // 2, n // 2 + 1))
        elif a in "YX" and n > side:
            index.append(slice((n - side) // 2, (n - side) // 2 + side))
        else:
            index.append(slice(None))
    return canon[tuple(index)]


def auto_scale_iter(
    canon: Any, caxes: str, model, tiling: dict[str, Any]
) -> Generator[Any, None, float]:
    """The resampling factor that brings the image's objects into the model's range.

    Parameters
    ----------
    canon : ndarray or dask array
        The image in canonical ``TCZYX`` order (a subset of those axes, as ``caxes`` says).
    caxes : str
        Its axes.
    model : UNet
        An instance model whose card records ``object_diameter``; otherwise ``1.0``.
    tiling : dict
        ``tile_shape``, ``overlap``, ``batch_size``, ``device`` for the measuring passes.

    Yields
    ------
    SegmentProgress
        Of the measuring passes (stage ``"measuring objects"``).

    Returns
    -------
    float
        ``1.0`` when the objects already fit (or cannot be measured), else the factor.
    """
    factor, _ = yield from measure_scale_iter(canon, caxes, model, tiling)
    return factor


def measure_scale_iter(
    canon: Any, caxes: str, model, tiling: dict[str, Any]
) -> Generator[Any, None, tuple[float, np.ndarray | None]]:
    """:func:`auto_scale_iter`, also returning the first pass's probabilities when reusable.

    Returns
    -------
    factor : float
        As :func:`auto_scale_iter`.
    probabilities : ndarray of float32, shape (K, *labels_shape), or None
        The probabilities of the whole image when the measured crop was the whole image and
        it needs no resampling (``factor == 1``): the segmentation can post-process them
        instead of predicting the image a second time. ``None`` otherwise.
    """
    found = yield from foreground_estimate_iter(canon, caxes, model, tiling)
    return found.scale, found.probabilities


@dataclass(frozen=True)
class SizeEstimate:
    """What the automatic object size found.

    Attributes
    ----------
    scale : float
        The resampling factor to segment at (``1.0``: none).
    diameter : float or None
        The typical object diameter measured, in pixels of the image; ``None`` when nothing
        was measured (no objects, or a model that records no object size).
    probabilities : ndarray of float32, shape (K, *labels_shape), or None
        The probabilities of the whole image at ``scale`` when a measuring pass already
        computed them (the segmentation post-processes them instead of predicting again).
    method : str
        ``"size model"`` (the card's fitted ``size_model``), ``"foreground"`` (the older
        measurement at the image's own scale first) or ``"none"``.
    labels : ndarray of int, shape labels_shape, or None
        The instance labels of those probabilities, made with the model's own
        post-processing settings, when the measuring pass made them (the segmentation reuses
        them when it post-processes with the same settings).
    """

    scale: float
    diameter: float | None = None
    probabilities: np.ndarray | None = None
    method: str = "none"
    labels: np.ndarray | None = None


def foreground_estimate_iter(
    canon: Any, caxes: str, model, tiling: dict[str, Any]
) -> Generator[Any, None, SizeEstimate]:
    """The measurement of models without a ``size_model``: at scale 1 first, then corrected.

    See the module docstring; returns a :class:`SizeEstimate` (method ``"foreground"``).
    """
    span = comfortable_range(model)
    if span is None or model.num_classes != 3:
        return SizeEstimate(1.0)
    crop = np.asarray(_central_crop(canon, caxes, model.ndim))
    whole = crop.shape == tuple(canon.shape) and not is_dask(canon)
    scale, found = 1.0, None
    for _ in range(PASSES):  # measure at scale 1, then again at the corrected scale
        probs = yield from relay(
            predict_probabilities(crop, caxes, model, tiling, scale),
            lambda event: replace(event, stage="measuring objects"),
        )
        probs = np.asarray(probs)
        # probabilities come back at the crop's own pixel size, whatever the scale
        diameter = diameter_from_foreground(np.squeeze(probs[0] < 0.5))
        if diameter is None:
            reuse = probs if whole and scale == 1.0 else None
            return SizeEstimate(scale, found, reuse, "foreground")
        found = diameter
        wanted = float(np.clip(diameter, *span)) / diameter
        log.info(
            "objects measure ~%.1f px at scale %.2f; the model expects %.0f-%.0f px",
            diameter,
            scale,
            *span,
        )
        if wanted == 1.0 and scale == 1.0:
            return SizeEstimate(1.0, found, probs if whole else None, "foreground")
        if wanted == 1.0 or abs(np.log(wanted / scale)) < 0.1:
            return SizeEstimate(wanted, found, None, "foreground")
        scale = wanted
    return SizeEstimate(scale, found, None, "foreground")


def predict_probabilities(
    canon: np.ndarray, caxes: str, model, tiling: dict[str, Any], scale: float
) -> Generator[Any, None, np.ndarray]:
    """Probabilities ``(K, *labels_shape)`` of ``canon`` seen at ``scale``, at its own size."""
    factors = rescale.factors(caxes, model.ndim, scale)
    seen = rescale.resample(canon, factors, order=1)
    job = SegmentJob(model, seen, caxes, "probabilities", post={}, keep_probs=False)
    probs, _ = yield from job.run_in_memory(tiling)
    return rescale.restore(probs, None, canon.shape, caxes, "probabilities")[0]
