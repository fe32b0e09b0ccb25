"""Layer data to training arrays: axes, channel axis, slices (no Qt, no layer objects).

The Train widget turns each chosen (image, labels[, region]) layer triple into a
:class:`PairSource` on the GUI thread; :func:`check_sources` checks the shapes there (cheap,
so bad input is reported before any work starts), and :func:`expand_sources` reads the arrays
and splits them into the 2D or 3D pairs the network trains on, in the worker thread.

Axes: the labels layer has the axes ``(*leading, *spatial)`` with ``ndim`` spatial axes (2 or
3); every leading index is one training pair (a 2D network trains on each slice of a Z stack).
The image has the labels' shape, plus at most one channel axis: last for an RGB(A) layer,
anywhere otherwise (the one axis whose removal gives the labels' shape).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...common.errors import ShapeError, UserInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairSource:
    """One chosen layer triple, as arrays (numpy or dask) and names.

    Attributes
    ----------
    image : array of shape labels.shape, or with one extra channel axis
    labels : integer array of shape (*leading, *spatial)
    region : array of shape labels.shape or None
        Non-zero where the labels are valid (sparse annotation).
    rgb : bool
        The image layer is RGB(A): its channel axis is the last one.
    choice : dict or None
        What Segment decided when it made ``labels`` (axes, channel, inversion: the layer
        metadata's ``choice``, :class:`~napari_unet.inference.images.modality.InputChoice`),
        for a result being corrected; None otherwise.
    """

    image_name: str
    labels_name: str
    image: Any
    labels: Any
    region: Any = None
    rgb: bool = False
    choice: dict | None = None

    @property
    def name(self) -> str:
        return self.image_name


def channel_axis(source: PairSource) -> int | None:
    """The image's channel axis, or None when the image has the labels' shape.

    Raises
    ------
    ShapeError
        The image's shape is not the labels' shape plus at most one channel axis.
    """
    image_shape, labels_shape = tuple(source.image.shape), tuple(source.labels.shape)
    if source.rgb and image_shape[:-1] == labels_shape:
        return len(image_shape) - 1
    if not source.rgb:
        if image_shape == labels_shape:
            return None
        if len(image_shape) == len(labels_shape) + 1:
            for k in range(len(image_shape)):
                if image_shape[:k] + image_shape[k + 1 :] == labels_shape:
                    return k
    raise ShapeError(
        f"image layer {source.image_name!r} has shape {image_shape} but labels layer "
        f"{source.labels_name!r} has shape {labels_shape}: the image must have the labels' "
        "shape, plus at most one channel axis. Pick the labels drawn on this image."
    )


def check_sources(sources: list[PairSource], ndim: int, patch_shape: tuple[int, ...]) -> None:
    """Check the shapes of the chosen pairs before training starts.

    Raises
    ------
    UserInputError
        No pair, or a labels layer that is not an integer layer.
    ShapeError
        An image/labels/region shape mismatch, labels with fewer than ``ndim`` axes, an image
        smaller than the patch, or pairs whose channel counts differ.
    """
    if not sources:
        raise UserInputError(
            "no training pairs: add an image layer and a labels layer (its annotation) first"
        )
    channels = set()
    for s in sources:
        axis = channel_axis(s)
        channels.add(1 if axis is None else int(s.image.shape[axis]))
        labels_shape = tuple(s.labels.shape)
        if np.dtype(s.labels.dtype).kind not in "iub":
            raise UserInputError(f"labels layer {s.labels_name!r} must hold integer labels")
        if len(labels_shape) < ndim:
            raise ShapeError(
                f"labels layer {s.labels_name!r} has {len(labels_shape)} axes but a {ndim}D "
                f"network needs at least {ndim}; choose 2D in the architecture"
            )
        if s.region is not None and tuple(s.region.shape) != labels_shape:
            raise ShapeError(
                f"the region of pair {s.name!r} has shape {tuple(s.region.shape)}, its labels "
                f"{labels_shape}: draw the region on the labels' grid"
            )
        spatial = labels_shape[len(labels_shape) - ndim :]
        if any(n < p for n, p in zip(spatial, patch_shape)):
            raise ShapeError(
                f"image {s.name!r} is {'x'.join(map(str, spatial))} pixels, smaller than the "
                f"{'x'.join(map(str, patch_shape))} training patch: choose a smaller patch size"
            )
    if len(channels) > 1:
        raise ShapeError(
            f"the images have different numbers of channels ({sorted(channels)}); "
            "train on images with the same channels"
        )


def lead_channel_first(image: Any, axis: int | None, n_lead: int) -> Any:
    """The image as ``(*leading, C, *spatial)`` (a view: nothing is read)."""
    if axis is None:
        return np.expand_dims(image, n_lead)
    return np.moveaxis(image, axis, n_lead)


def iter_slices(
    source: PairSource, ndim: int, ignore_label: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None, str]]:
    """Yield ``(image (C, *spatial), labels (*spatial), region or None, name)`` per slice.

    Slices with no annotated pixel (region empty, or only the ignore label) are skipped.
    """
    labels = source.labels
    n_lead = len(labels.shape) - ndim
    image = lead_channel_first(source.image, channel_axis(source), n_lead)
    for index in np.ndindex(*labels.shape[:n_lead]):
        lab = np.asarray(labels[index])
        reg = None if source.region is None else np.asarray(source.region[index]).astype(bool)
        if reg is not None and not reg.any():
            continue
        if ignore_label is not None and bool(np.all(lab == ignore_label)):
            continue
        name = source.name if not index else f"{source.name} [{', '.join(map(str, index))}]"
        yield np.asarray(image[index]), lab, reg, name


def expand_sources(
    sources: list[PairSource], ndim: int, ignore_label: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None], list[str]]:
    """The arrays for :func:`napari_unet.training.loop.prepare_data`: images, labels, regions,
    names, one entry per annotated slice (or volume) of every pair.

    Each image is as Segment reads such a layer: ``(*spatial)`` for one channel, ``(Y, X, 3|4)``
    for an RGB layer (its colour samples last), ``(C, *spatial)`` for several channels.

    Raises
    ------
    UserInputError
        Nothing is annotated in any pair.
    """
    images, labels, regions, names = [], [], [], []
    for source in sources:
        colour = source.rgb and ndim == 2
        for img, lab, reg, name in iter_slices(source, ndim, ignore_label):
            images.append(np.moveaxis(img, 0, -1) if colour else img[0] if len(img) == 1 else img)
            labels.append(lab)
            regions.append(reg)
            names.append(name)
    if not images:
        raise UserInputError(
            "no annotated pixel in any pair: the region layers (or the ignore label) mark "
            "nothing as annotated"
        )
    log.info(
        "training on %d %dD pair(s), %.1f Mpx",
        len(images),
        ndim,
        sum(math.prod(lab.shape) for lab in labels) / 1e6,
    )
    return images, labels, regions, names
