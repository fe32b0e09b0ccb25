"""Training at the model's working object size: every image resampled so its objects match it.

A U-Net learns the objects at the sizes it is shown. As Cellpose rescales every training image
to its standard diameter, an instance training run resamples each image (and its labels) by
``working / median`` of the image's own objects' equivalent diameters, so the network sees all
nuclei at one size, the size recorded in the card as ``object_diameter``; Segment resamples
new images to it (a given ``diameter``, or the automatic estimate).

The working size (``TrainConfig.object_diameter``):

- ``"auto"``: the ``object_diameter`` of the model being fine-tuned (the built-in model: about
  20 px), else the median diameter of all training objects;
- a number: that size, in pixels;
- ``None``: no resampling; the card records the objects' median diameter (the data decides).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.segmentation import relabel_sequential

from ...common.errors import UserInputError
from ...inference.sizing.rescale import resize
from ..config import TrainConfig
from .pairs import TrainingPair, object_diameters
from .targets import instance_to_classes, unet_weight_map

log = logging.getLogger(__name__)

__all__ = ["WorkingSize", "pair_factor", "resolve_working_size", "to_working_size"]

#: images whose objects are within this factor of the working size are left as they are
TOLERANCE = 1.1
#: resampling factors are clipped to [1 / MAX_FACTOR, MAX_FACTOR]
MAX_FACTOR = 8.0


@dataclass(frozen=True)
class WorkingSize:
    """The object size a run trains at and how it was chosen.

    Attributes
    ----------
    diameter : float
        The working equivalent diameter in pixels (the card's ``object_diameter``).
    source : str
        ``"model"`` (the fine-tuned model's card), ``"data"`` (the training objects' median)
        or ``"given"``.
    data_median : float
        The median equivalent diameter of the training objects before resampling.
    """

    diameter: float
    source: str
    data_median: float

    def card_entry(self, factors: Sequence[float]) -> dict[str, Any]:
        """Provenance: the working size, where it came from, the data's size, the factors."""
        f = np.asarray(factors, float) if len(factors) else np.ones(1)
        return {
            "object_diameter": round(self.diameter, 1),
            "source": self.source,
            "data_median_diameter": round(self.data_median, 1),
            "resampling": [round(float(v), 3) for v in (f.min(), np.median(f), f.max())],
        }


def resolve_working_size(
    pairs: Sequence[TrainingPair], config: TrainConfig, model: Any = None
) -> WorkingSize | None:
    """The working size of a run, or None when images are not resampled.

    Parameters
    ----------
    pairs : sequence of TrainingPair
        The training pairs (their ``diameters``).
    config : TrainConfig
        ``object_diameter``: ``"auto"``, a number of pixels or None.
    model : UNet, optional
        The model being fine-tuned; its card's ``object_diameter`` is the working size under
        ``"auto"``.
    """
    setting = config.object_diameter
    if config.task != "instance" or setting is None:
        return None
    diameters = np.concatenate([p.diameters for p in pairs]) if pairs else np.empty(0)
    if not diameters.size:
        return None
    median = float(np.median(diameters))
    if setting != "auto":
        return WorkingSize(float(setting), "given", median)
    expected = (getattr(model, "card", None) or {}).get("object_diameter")
    if expected:
        return WorkingSize(float(expected), "model", median)
    return WorkingSize(median, "data", median)


def to_working_size(
    pairs: Sequence[TrainingPair],
    working: float,
    config: TrainConfig,
    min_shape: Sequence[int] = (),
) -> tuple[list[TrainingPair], list[float]]:
    """Each pair resampled so the median of its objects is ``working`` pixels across.

    Parameters
    ----------
    pairs : sequence of TrainingPair
        Instance pairs with ``labels``.
    working : float
        The working equivalent diameter in pixels.
    config : TrainConfig
        ``w0``, ``sigma`` and ``contact_weight`` rebuild the weight maps.
    min_shape : sequence of int, optional
        Images that resampling made smaller than this are padded (as unannotated pixels).

    Returns
    -------
    pairs : list of TrainingPair
    factors : list of float
        The resampling factor of each pair (1.0: left as it was).
    """
    out, factors = [], []
    for p in pairs:
        factor = pair_factor(p.diameters, working) if p.labels is not None else 1.0
        if factor != 1.0:
            p = _pad(_resample(p, factor, config), min_shape)
        out.append(p)
        factors.append(factor)
    changed = sum(f != 1.0 for f in factors)
    if changed:
        log.info(
            "%d of %d image(s) resampled to the working object size of %.1f px (factors %.2f-%.2f)",
            changed,
            len(factors),
            working,
            min(factors),
            max(factors),
        )
    return out, factors


def pair_factor(diameters: np.ndarray, working: float) -> float:
    """The factor that brings objects of these ``diameters`` (px) to ``working`` px.

    Their median is scaled to ``working``; ``1.0`` when there are none or they are within
    :data:`TOLERANCE` of it; clipped to ``[1 / MAX_FACTOR, MAX_FACTOR]``.
    """
    if not np.size(diameters):
        return 1.0
    factor = float(np.clip(working / np.median(diameters), 1 / MAX_FACTOR, MAX_FACTOR))
    return 1.0 if abs(math.log(factor)) < math.log(TOLERANCE) else factor


def _resample(p: TrainingPair, factor: float, config: TrainConfig) -> TrainingPair:
    shape = tuple(max(1, round(n * factor)) for n in p.spatial_shape)
    image = resize(p.image, (p.image.shape[0], *shape), 1).astype(np.float32, copy=False)
    labels = resize(p.labels, shape, 0)
    valid = resize(p.valid.astype(np.uint8), shape, 0).astype(bool)
    if not valid.any():
        raise UserInputError(
            f"image {p.name!r} has no annotated pixel left after resampling it by {factor:.2f} "
            "to the working object size; pass object_diameter=None (--object-diameter none)"
        )
    labels = relabel_sequential(np.where(valid, labels, 0).astype(np.int32))[0]
    weight = unet_weight_map(
        labels, w0=config.w0, sigma=config.sigma, valid=valid, contact=config.contact_weight
    )
    return TrainingPair(
        image,
        instance_to_classes(labels),
        weight,
        valid,
        p.name,
        object_diameters(labels),
        labels,
    )


def _pad(p: TrainingPair, min_shape: Sequence[int]) -> TrainingPair:
    """``p`` padded at the end of each axis to ``min_shape`` with unannotated background."""
    if not min_shape or all(n >= m for n, m in zip(p.spatial_shape, min_shape)):
        return p
    widths = [(0, max(0, m - n)) for n, m in zip(p.spatial_shape, min_shape)]
    return TrainingPair(
        np.pad(p.image, [(0, 0), *widths]),
        np.pad(p.target, widths),
        np.pad(p.weight, widths),
        np.pad(p.valid, widths),
        p.name,
        p.diameters,
        None if p.labels is None else np.pad(p.labels, widths),
    )
