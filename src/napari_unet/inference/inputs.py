"""The inputs of a segmentation, checked before any work: image, output, axes, settings."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ..common.errors import ShapeError, UserInputError
from ..common.validate import (
    POSTPROCESSING_KEYS,
    check_integer,
    check_not_empty,
    check_number,
    check_postprocessing_value,
)
from .frames import is_dask, is_zarr
from .images import axes as ax

__all__ = [
    "OUTPUTS",
    "as_array",
    "check_numbers",
    "check_output",
    "postprocessing_settings",
    "resolve_axes",
]

log = logging.getLogger(__name__)

OUTPUTS = ("instance", "semantic", "probabilities")


def postprocessing_settings(
    model, min_size: int | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Instance post-processing settings: the model card's, with ``min_size`` and ``overrides``.

    The card's optional ``postprocessing`` entry holds ``seed_threshold``,
    ``foreground_threshold``, ``split`` and ``min_size`` (see
    :func:`~.labels.postprocess.instance_labels`).

    Raises
    ------
    UserInputError
        An unknown key in ``overrides``, a threshold outside (0, 1), a negative split or
        minimum size.
    """
    if overrides is not None and not isinstance(overrides, dict):
        raise UserInputError(
            "postprocessing must be a dict such as {'foreground_threshold': 0.4}, got "
            f"{type(overrides).__name__}"
        )
    card = model.card.get("postprocessing") or {}
    post = {"min_size": 10, **{k: card[k] for k in POSTPROCESSING_KEYS if k in card}}
    if min_size is not None:
        post["min_size"] = int(min_size)
    for key, value in (overrides or {}).items():
        if key not in POSTPROCESSING_KEYS:
            raise UserInputError(
                f"postprocessing has no setting {key!r}; use {', '.join(POSTPROCESSING_KEYS)}"
            )
        check_postprocessing_value(key, value, f"postprocessing {key}")
        post[key] = value
    return post


def as_array(image: Any):
    """A numpy or dask array from numpy, dask, zarr or any array-like input."""
    if image is None:
        raise UserInputError("image is None; pass an array (numpy, dask or zarr)")
    if isinstance(image, str | os.PathLike):
        raise UserInputError(
            f"image is a path ({os.fspath(image)!r}), not an array: read it first, e.g. "
            "napari_unet.common.readers.read_image(path)[0], or run napari-unet segment PATH"
        )
    if is_dask(image):
        array = image
    elif is_zarr(image):
        import dask.array as da

        array = da.from_zarr(image)
    else:
        try:
            array = np.asarray(image)
        except ValueError as err:  # a list of arrays of different shapes
            raise UserInputError(
                f"image must be one array; got {type(image).__name__} that numpy cannot stack "
                f"({err}); segment the images one at a time"
            ) from None
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8)
    if kind not in "uif":
        raise UserInputError(
            f"image must hold numbers (uint8, uint16, int or float), got dtype {array.dtype}"
        )
    if array.ndim < 2:
        raise ShapeError(f"image must have at least two axes (Y, X), got shape {array.shape}")
    check_not_empty(array.shape, "image")
    return array


def check_numbers(tile_shape, overlap, batch_size, min_size, scale, diameter) -> None:
    """The numeric settings, checked before any work (the same rules as the CLI's options)."""
    for value in tile_shape if isinstance(tile_shape, tuple | list) else [tile_shape]:
        check_integer(value, "tile_shape", minimum=1, none_ok=True)
    for value in overlap if isinstance(overlap, tuple | list) else [overlap]:
        check_number(value, "overlap", minimum=0, none_ok=True)
    check_integer(batch_size, "batch_size", minimum=1, none_ok=True)
    check_integer(min_size, "min_size", minimum=0, none_ok=True)
    check_number(scale, "scale", minimum=0, low_open=True)
    if diameter not in ("auto", None):
        check_number(diameter, "diameter", minimum=0, low_open=True, hint="or 'auto' or None")


def check_output(output: str | None, model) -> str:
    task = model.card.get("task") or ("instance" if model.num_classes == 3 else "semantic")
    output = task if output is None else output
    if output not in OUTPUTS:
        raise UserInputError(f"output must be one of {OUTPUTS}, got {output!r}")
    if output == "instance" and (task != "instance" or model.num_classes != 3):
        raise UserInputError(
            f"output 'instance' needs an instance model (3 classes: background, interior, "
            f"boundary); this model's task is {task!r} with {model.num_classes} classes: "
            "use output='semantic'"
        )
    return output


def resolve_axes(array, axes: str | None, model) -> tuple[str, str]:
    """The image's axes and where they came from: ``"given"`` or ``"guessed"``.

    Raises
    ------
    UserInputError
        Bad axes, or a shape whose axes cannot be told apart (channels or Z?).
    """
    if axes is not None:
        return ax.parse_axes(axes, array.ndim), "given"
    guess = ax.guess_axes(array.shape, in_channels=model.in_channels, model_ndim=model.ndim)
    if array.ndim > 2:
        log.info("axes not given; guessed %s for shape %s", guess, array.shape)
    return guess, "guessed"
