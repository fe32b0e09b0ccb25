"""The object-size estimate of models with a fitted ``size_model``: coarse first, then finer.

A network sees objects far larger than it was trained on as fragments: measured at the
image's own scale, 80 px nuclei with textured interiors look like many 15 px ones, and no
correction afterwards can recover from that first answer. :func:`estimate_size_iter` looks
at the image the other way round: first shrunk by ``START_SCALE`` (a quarter: 1/16 of the
pixels, so the pass is cheap; images over 1024 px to ``FIRST_SIDE`` px across, so that the
look costs less than segmenting their large objects would), where large objects are whole
and in the model's range, and only when the objects look smaller than the model's reliable
range there, again at the scale that brings them to the model's working diameter. Each pass
segments what it sees (the model's own post-processing) and measures the median equivalent
diameter of the objects not cut by the border (:func:`~.size.diameter_from_labels`), times
the model's fitted ``calibration``; a measurement counts only inside the fitted ``reliable``
range (pixels as the model sees them). Both come from
:func:`napari_unet.training.finishing.size_fit.fit_size_model`, which measures them for each
model at the end of training; they live in the card::

    "size_model": {"method": "coarse-to-fine instances", "version": 2,
                   "working_diameter": 20.2, "calibration": 1.0,
                   "reliable": [7.1, 40.4], "fit": {...}}

As Cellpose's size model, the estimate is thus the size of the objects the model segments
once it sees them near its working size, not of whatever the first look found.

The image is then segmented at ``working_diameter / diameter`` (see :func:`_decide` for when
the measuring pass's own scale, or the image's, is kept instead). When that needs a new pass
over the whole image, the objects are measured there too and the estimate is the geometric
mean of both measurements (:func:`_confirm`); the segmentation reuses that pass's
probabilities and labels, so no pass is predicted or post-processed twice. Models without
``size_model`` keep :func:`~.size.foreground_estimate_iter`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import numpy as np

from ...common.progress import relay
from ..frames import SegmentJob, is_dask
from ..inputs import postprocessing_settings
from . import rescale
from .size import (
    CROP,
    MIN_RELIABLE,
    SIZE_MODEL_VERSION,
    SizeEstimate,
    _central_crop,
    diameter_from_labels,
    foreground_estimate_iter,
)

log = logging.getLogger(__name__)

__all__ = ["estimate_size_iter", "size_model_settings"]

#: the first measuring pass sees the image shrunk by this factor
START_SCALE = 0.25
#: ...or less shrunk, so that it is at least this many pixels wide (a quarter of a 128 px
#: image is too little to see anything in)
MIN_SIDE = 64
#: ...and more shrunk for images over 1024 px, so that it is at most this many pixels wide
FIRST_SIDE = 256
#: at most this many measuring passes
MAX_PASSES = 4
#: segment at the last measuring scale (reusing its pass) when it is within this factor of
#: the ideal one
SNAP = 1.3
#: objects smaller than the working diameter by less than this factor (or larger by less than
#: ``SNAP``) are segmented at the image's own scale: the network was trained on sizes around
#: it, and enlarging the image would cost time
NATIVE = 2.0
#: a measuring pass sees the whole image when it has at most this many times CROP**2 pixels
#: at the measuring scale (so that its probabilities can be reused), else a central crop
WHOLE_AREA = 1.5
#: smallest and largest resampling factor the search tries: objects down to a third of the
#: working diameter are enlarged to it (as Cellpose's size model, ~0.3x-3x); more would
#: multiply the cost of the segmenting pass by up to 64 (a 256 px image of a fresh user model
#: whose first passes see noise took minutes at 8x), for objects too small to segment anyway
SCALE_RANGE = (1 / 16, 3.0)


def size_model_settings(model) -> dict[str, Any] | None:
    """The card's ``size_model`` entry when this code can use it, else ``None``."""
    entry = (getattr(model, "card", {}) or {}).get("size_model")
    if not isinstance(entry, dict) or entry.get("version") != SIZE_MODEL_VERSION:
        return None
    try:
        low, high = (float(x) for x in entry["reliable"])
        d0, calibration = float(entry["working_diameter"]), float(entry["calibration"])
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring a malformed size_model entry in the model card: %s", repr(entry))
        return None
    low = max(low, MIN_RELIABLE)
    if not (0 < low < d0 < high and calibration > 0):
        log.warning("ignoring an inconsistent size_model entry in the model card: %s", repr(entry))
        return None
    return {"reliable": (low, high), "working_diameter": d0, "calibration": calibration}


def estimate_size_iter(
    canon: Any, caxes: str, model, tiling: dict[str, Any]
) -> Generator[Any, None, SizeEstimate]:
    """The scale to segment ``canon`` at, and the typical object diameter found.

    Parameters
    ----------
    canon : ndarray or dask array
        The image in canonical ``TCZYX`` order (a subset of those axes, as ``caxes`` says).
    caxes : str
        Its axes.
    model : UNet
        An instance model. With a ``size_model`` in its card (2D models), the coarse-to-fine
        search of this module; otherwise :func:`~.size.foreground_estimate_iter`.
    tiling : dict
        ``tile_shape``, ``overlap``, ``batch_size``, ``device`` for the measuring passes.

    Yields
    ------
    SegmentProgress
        Of the measuring passes (stage ``"measuring objects"``).

    Returns
    -------
    SizeEstimate
    """
    settings = size_model_settings(model)
    if settings is None or model.num_classes != 3 or model.ndim != 2:
        return (yield from foreground_estimate_iter(canon, caxes, model, tiling))
    low, high = settings["reliable"]
    d0 = settings["working_diameter"]
    side = min(n for a, n in zip(caxes, canon.shape) if a in "YX")
    scale, seen = min(1.0, max(MIN_SIDE / side, min(START_SCALE, FIRST_SIDE / side))), []
    for _ in range(MAX_PASSES):
        measured, look = yield from _measure_at(canon, caxes, model, tiling, scale)
        seen.append(scale)
        m = None if measured is None else measured * settings["calibration"]
        size = "nothing measurable" if m is None else f"~{m:.1f} px"
        log.info("size pass at scale %.3f: objects measure %s", scale, size)
        if m is not None and low <= m <= high:
            found = _decide(scale, m, d0, look)
            return (yield from _confirm(found, canon, caxes, model, tiling, settings))
        if m is None:  # nothing found: the objects may be too small to see at this scale
            wanted = scale * 4
        else:  # too small (or too large) to trust: bring them to the working diameter
            wanted = scale * d0 / m
        wanted = _prefer_native(float(np.clip(wanted, *SCALE_RANGE)))
        if any(abs(math.log(wanted / s)) < math.log(SNAP) for s in seen):
            break  # no new scale to look at
        scale = wanted
    if m is None:
        return SizeEstimate(1.0, None, None, "size model")
    # the last measurement, though outside the reliable range, is the best there is
    return _decide(scale, m, d0, look)


def _confirm(
    found: SizeEstimate, canon: Any, caxes: str, model, tiling: dict[str, Any], settings: dict
) -> Generator[Any, None, SizeEstimate]:
    """Predict the image at the scale chosen (as segmenting would) and measure there too.

    A second measurement of the same objects at another scale: when it lies in the reliable
    range, the estimate is the geometric mean of the two (their errors are largely
    independent: a coarse look blurs small gaps, a fine one may split textured objects).
    Only when that pass sees the whole image, whose probabilities the segmentation then
    reuses, so this costs one post-processing of the image, not another prediction.
    """
    if found.probabilities is not None or not _sees_whole(canon, caxes, found.scale):
        return found
    measured, look = yield from _measure_at(canon, caxes, model, tiling, found.scale)
    low, high = settings["reliable"]
    m = None if measured is None else measured * settings["calibration"]
    log.info("size at the chosen scale %.3f: objects measure %s px", found.scale, m)
    diameter = found.diameter
    if m is not None and low <= m <= high and diameter is not None:
        diameter = math.sqrt(diameter * m / found.scale)
    return replace(found, diameter=diameter, probabilities=look[0], labels=look[1])


def _decide(scale: float, m: float, d0: float, look: tuple | None) -> SizeEstimate:
    """The scale to segment at, given objects of ``m`` px measured at ``scale``.

    ``look``: the measuring pass's ``(probabilities, labels)`` when it saw the whole image.
    The measuring ``scale`` itself (reusing ``look``) when the objects were within ``SNAP``
    of ``d0`` there, or, for an image seen at least at its own size, at most ``NATIVE`` times
    smaller (enlarging it further costs time and gains little); else ``d0 / diameter``
    (within ``SCALE_RANGE``), or ``1.0`` when that is within ``NATIVE`` (``SNAP`` to shrink)
    of it. A shrunk image whose objects are much smaller than ``d0`` is not reused: shrinking
    loses the thin gaps between touching nuclei that the model needs (on the DSB test images,
    40-50 px nuclei segmented at a quarter of their size lost 0.1-0.5 of AP@0.5).
    """
    diameter = m / scale
    target = _prefer_native(float(np.clip(d0 / diameter, *SCALE_RANGE)))
    near = d0 / SNAP <= m <= d0 * SNAP or (scale >= 1.0 and d0 / NATIVE <= m <= d0 * SNAP)
    if near or abs(math.log(target / scale)) < math.log(SNAP):
        probs, labels = look if look is not None else (None, None)
        return SizeEstimate(scale, diameter, probs, "size model", labels)
    return SizeEstimate(target, diameter, None, "size model")


def _prefer_native(scale: float) -> float:
    """``1.0`` for a scale that would enlarge the image less than ``NATIVE`` or shrink it less
    than ``SNAP`` (upsampling costs time, shrinking saves it), else ``scale``."""
    return 1.0 if 1 / SNAP < scale < NATIVE else scale


def _measure_at(
    canon: Any, caxes: str, model, tiling: dict[str, Any], scale: float
) -> Generator[Any, None, tuple[float | None, tuple[np.ndarray, np.ndarray] | None]]:
    """One measuring pass at ``scale``: segment (the model's post-processing) and measure.

    Returns the median object diameter (pixels at ``scale``, uncalibrated; ``None`` if no
    object) and, when the pass saw the whole image, its probabilities ``(K, *shape at
    scale)`` and instance labels (for the segmentation to reuse), else ``None``.
    """
    whole = _sees_whole(canon, caxes, scale)
    crop = canon if whole else _central_crop(canon, caxes, model.ndim, max(16, round(CROP / scale)))
    seen = rescale.resample(np.asarray(crop), rescale.factors(caxes, model.ndim, scale), order=1)
    post = postprocessing_settings(model)
    job = SegmentJob(model, seen, caxes, "instance", post=post, keep_probs=True)
    labels, probs = yield from relay(
        job.run_in_memory(tiling), lambda event: replace(event, stage="measuring objects")
    )
    labels = np.asarray(labels)
    plane = labels
    while plane.ndim > 2:  # the first frame / plane: ([T,] Y, X) -> (Y, X)
        plane = plane[0]
    look = (np.asarray(probs), labels) if whole else None
    return diameter_from_labels(plane, post["min_size"]), look


def _sees_whole(canon: Any, caxes: str, scale: float) -> bool:
    """Whether a pass at ``scale`` sees the whole image: one plane in memory, at most
    ``WHOLE_AREA`` times ``CROP**2`` pixels at that scale; else it sees a central crop."""
    spatial = [n for a, n in zip(caxes, canon.shape) if a in "YX"]
    single = all(n == 1 for a, n in zip(caxes, canon.shape) if a in "TZ")
    return single and not is_dask(canon) and math.prod(spatial) * scale**2 <= WHOLE_AREA * CROP**2
