"""Fitting a model's object-size estimate at the end of training (the card's ``size_model``).

The run-time estimate (:mod:`napari_unet.inference.sizing.size_search`) looks at the image through
the model at a coarse scale first and at finer scales only while the objects look too small,
and measures the median equivalent diameter of the objects the model segments there (its own
post-processing). How far that measurement can be trusted depends on the model: a network
trained on 20 px nuclei sees 5 px nuclei as specks and 80 px ones as fragments.
:func:`fit_size_model` measures it: it shows the model training crops zoomed so that their
objects span a wide range of sizes (the training labels give the true size), and records

* ``calibration``: the factor from the measured to the annotated median equivalent diameter,
  and
* ``reliable``: the object sizes (pixels, as the model sees them) over which the calibrated
  measurement is within ``TOLERANCE`` of the truth for most crops.

Nothing about the network changes; a model without ``size_model`` keeps the older
measurement (:func:`napari_unet.inference.sizing.size.measure_scale_iter`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...inference.inputs import postprocessing_settings
from ...inference.labels.postprocess import instance_labels
from ...inference.sizing.rescale import resample
from ...inference.sizing.size import MIN_RELIABLE, SIZE_MODEL_VERSION, diameter_from_labels
from ...inference.tiling.predict import predict_tiled
from ...model.unet import UNet
from ..data.pairs import TrainingPair

log = logging.getLogger(__name__)

__all__ = ["fit_size_model"]

#: object sizes (pixels, as the model sees them) the crops are zoomed to, as multiples of the
#: model's working diameter
RELATIVE_SIZES = tuple(float(x) for x in np.geomspace(0.2, 4.0, 9))
#: with few annotated images, each is zoomed to more sizes (between the same ends), so that
#: the fit sees about this many crops: a size bin (a factor 2**0.5) needs 3 to be judged
MIN_CROPS = 27
#: a measurement counts as right within this factor of the annotated median diameter
TOLERANCE = 1.25
#: the share of crops that must be right in a size bin for the bin to count as reliable
RELIABLE_SHARE = 0.8
#: a fit is kept only if at least this share of the crops (objects within 4x of the working
#: diameter) measure right inside the reliable range...
MIN_USABLE = 0.5
#: ...and the measure needs no more correction than this
CALIBRATION_RANGE = (0.5, 2.0)


def fit_size_model(
    model: UNet,
    pairs: Sequence[TrainingPair],
    *,
    object_diameter: float | None = None,
    max_pairs: int = 8,
    crop: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, Any] | None:
    """The ``size_model`` card entry of an instance model, fitted on annotated pairs.

    Parameters
    ----------
    model : UNet
        A trained 3-class (background, interior, boundary) 2D model.
    pairs : sequence of TrainingPair
        Annotated images (their ``diameters`` give the truth); at most ``max_pairs`` are used.
    object_diameter : float, optional
        The model's working diameter (pixels); default: the median of the pairs' objects.
    max_pairs : int
        At most this many pairs (chosen at random with ``seed``); each costs
        ``len(RELATIVE_SIZES)`` forward passes of at most ``crop x crop`` pixels (more with
        fewer than 3 pairs: about ``MIN_CROPS`` passes in all).
    crop : int
        Side (pixels, after zooming) of the centre crop shown to the model.
    device : str
        Compute device.
    seed : int

    Returns
    -------
    dict or None
        ``{"method", "version", "calibration", "reliable": [lo, hi], "working_diameter",
        "fit": {...}}``; ``None`` for models the estimate does not apply to (not a 2D
        instance model, or no annotated objects).
    """
    usable = [p for p in pairs if p.diameters.size and p.target.ndim == 2]
    if model.num_classes != 3 or model.ndim != 2 or not usable:
        return None
    rng = np.random.default_rng(seed)
    if len(usable) > max_pairs:
        usable = [usable[i] for i in sorted(rng.choice(len(usable), max_pairs, replace=False))]
    d0 = float(object_diameter or np.median(np.concatenate([p.diameters for p in usable])))
    post = postprocessing_settings(model)
    sizes = _relative_sizes(len(usable))
    true: list[float] = []
    measured: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for pair in usable:
            diameter = float(np.median(pair.diameters))
            for relative in sizes:
                zoom = relative * d0 / diameter
                image = _zoomed_crop(pair.image, zoom, crop)
                if image is None:
                    continue
                labels = instance_labels(predict_tiled(model, image, device=device), **post)
                true.append(diameter * image.shape[-1] / _native_side(pair, zoom, crop))
                m = diameter_from_labels(labels, post["min_size"])
                measured.append(np.nan if m is None else m)
    finally:
        model.train(was_training)
    best = summarize(np.asarray(true), np.asarray(measured), d0)
    if (
        best is None
        or best["fit"]["usable"] < MIN_USABLE
        or not (CALIBRATION_RANGE[0] <= best["calibration"] <= CALIBRATION_RANGE[1])
    ):
        log.warning(
            "size model: not fitted, the model's objects do not measure their size well "
            "enough on these images (%s)",
            "nothing measured" if best is None else f"{best['calibration']=}, {best['fit']=}",
        )
        return None
    return best


def summarize(true: np.ndarray, measured: np.ndarray, d0: float) -> dict[str, Any] | None:
    """The ``size_model`` entry from true and measured diameters (pixels as the model sees).

    ``measured`` is NaN where nothing was found. The calibration is the median ratio of true to
    measured over the crops whose objects lie within a factor 2 of ``d0``; the reliable range
    is the longest run of object-size bins (true sizes, factors of 2**0.5) around ``d0`` in
    which at least ``RELIABLE_SHARE`` of the crops are measured within ``TOLERANCE``.
    Larger objects that fall apart into pieces of about ``d0`` are not held against ``d0``:
    the run-time search sees every image at a quarter of its scale first, where such objects
    are whole. ``fit.usable``: the share of crops with objects within a factor 4 of ``d0``
    measured right and inside the reliable range.
    """
    found = np.isfinite(measured) & (measured > 0)
    core = found & (true > d0 / 2) & (true < d0 * 2)
    if core.sum() < 3:
        log.warning("size model: too few measurable crops (%d) to fit it", int(core.sum()))
        return None
    calibration = float(np.median(true[core] / measured[core]))
    est = np.where(found, measured * calibration, np.nan)
    right = found & (np.abs(np.log(np.where(found, est, 1.0) / true)) < math.log(TOLERANCE))
    edges = d0 * np.geomspace(1 / 8, 8, 13)  # bins of 2**(1/2)
    which = np.digitize(true, edges)
    # per bin: True (reliable), False (not), None (too few crops to say: does not break a run)
    verdicts: list[bool | None] = []
    for b in range(1, len(edges)):
        in_bin = which == b
        verdicts.append(None if in_bin.sum() < 3 else bool(right[in_bin].mean() >= RELIABLE_SHARE))
    centre = int(np.digitize(d0, edges)) - 1
    run = [i for i in _run_around(verdicts, centre) if verdicts[i]]
    if not run:
        log.info("size model: too few crops measured right near the working diameter")
        return None
    lo, hi = min(run), max(run)
    low, high = max(float(edges[lo]), MIN_RELIABLE), float(edges[hi + 1])
    inside = found & (est >= low) & (est <= high)
    wide = (true > d0 / 4) & (true < d0 * 4)
    return {
        "method": "coarse-to-fine instances",
        "version": SIZE_MODEL_VERSION,
        "working_diameter": round(d0, 2),
        "calibration": round(calibration, 4),
        "reliable": [round(low, 2), round(high, 2)],
        "fit": {
            "crops": int(true.size),
            "measured": int(found.sum()),
            "usable": round(float((right & inside)[wide].mean()), 3) if wide.any() else 0.0,
            "within_tolerance_in_reliable_range": round(float(right[inside].mean()), 3)
            if inside.any()
            else None,
            "tolerance": TOLERANCE,
        },
    }


def _relative_sizes(n_pairs: int) -> tuple[float, ...]:
    """:data:`RELATIVE_SIZES`, or more sizes between its ends for fewer than 3 pairs."""
    n = max(len(RELATIVE_SIZES), math.ceil(MIN_CROPS / max(n_pairs, 1)))
    if n == len(RELATIVE_SIZES):
        return RELATIVE_SIZES
    return tuple(float(x) for x in np.geomspace(RELATIVE_SIZES[0], RELATIVE_SIZES[-1], n))


def _run_around(verdicts: list[bool | None], centre: int) -> list[int]:
    """The bins reachable from ``centre`` without crossing an unreliable (False) bin."""
    if verdicts[centre] is False:
        return []
    lo = hi = centre
    while lo > 0 and verdicts[lo - 1] is not False:
        lo -= 1
    while hi < len(verdicts) - 1 and verdicts[hi + 1] is not False:
        hi += 1
    return list(range(lo, hi + 1))


def _native_side(pair: TrainingPair, zoom: float, crop: int) -> int:
    return min(pair.target.shape[-1], max(1, round(crop / zoom)))


def _zoomed_crop(image: np.ndarray, zoom: float, crop: int) -> np.ndarray | None:
    """The centre of ``image`` (C, Y, X) that is ``crop`` px wide once zoomed, zoomed."""
    sides = [min(n, max(1, round(crop / zoom))) for n in image.shape[1:]]
    if min(sides) * zoom < 16:
        return None
    window = tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(image.shape[1:], sides))
    return resample(image[(slice(None), *window)], (1.0, zoom, zoom), order=1)
