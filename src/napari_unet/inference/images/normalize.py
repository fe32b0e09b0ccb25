"""Intensity normalisation, as recorded in a model file's card.

The card's ``normalization`` entry is a dict such as
``{"method": "percentile", "low": 1.0, "high": 99.8}``: each channel is mapped so that its
``low`` percentile goes to 0 and its ``high`` percentile to 1. Constant images map to zeros
rather than dividing by zero; NaN or inf raise a clear error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...common.errors import UserInputError

METHODS = ("percentile", "minmax", "none")
_EPS = 1e-6
#: normalised values are clipped to +-this: a no-data pixel of 1e30 would otherwise swamp the
#: convolutions around it (real intensities lie within a few units of [0, 1])
LIMIT = 20.0
#: pixels of the subsample that intensity decisions look at (:func:`strided_sample`)
SAMPLE = 1_000_000


def check_finite(image: np.ndarray, name: str = "image") -> None:
    """Raise :class:`UserInputError` if ``image`` holds NaN or inf."""
    arr = np.asarray(image)
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise UserInputError(
            f"{name} contains {n_bad} NaN or infinite value(s); replace them (e.g. with "
            "numpy.nan_to_num) before segmenting"
        )


def normalization_stats(
    image: np.ndarray, spec: dict[str, Any] | None, channel_axis: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(offset, scale)`` so that ``(image - offset) / scale`` is normalised.

    Parameters
    ----------
    image : ndarray of shape (C, ...) or (...)
        The raw image (any numeric dtype). For large images pass a subsample.
    spec : dict or None
        The card's normalisation; ``None`` means the default percentile 1 / 99.8.
    channel_axis : int or None
        Axis of the channels, or ``None`` for a single-channel image.

    Returns
    -------
    offset, scale : ndarray of shape (C,)
    """
    spec = dict(spec or {"method": "percentile", "low": 1.0, "high": 99.8})
    method = spec.get("method", "percentile")
    if method not in METHODS:
        raise UserInputError(f"unknown normalisation method {method!r}; use one of {METHODS}")
    arr = np.asarray(image)
    if channel_axis is None:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, channel_axis, 0)
    flat = arr.reshape(arr.shape[0], -1).astype(working_dtype(arr.dtype), copy=False)
    check_finite(flat)
    if method == "none":
        return np.zeros(len(flat), np.float32), np.ones(len(flat), np.float32)
    if method == "minmax":
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    else:
        lo, hi = np.percentile(flat, [spec.get("low", 1.0), spec.get("high", 99.8)], axis=1)
    scale = np.where(hi - lo > _EPS, hi - lo, 1.0).astype(np.float32)
    return np.asarray(lo, working_dtype(arr.dtype)), scale


def working_dtype(dtype) -> type:
    """float64 for 64-bit data (an int64 offset of 2**40 would lose the signal in float32)."""
    return np.float64 if np.dtype(dtype).itemsize >= 8 else np.float32


def normalize(
    image: np.ndarray, spec: dict[str, Any] | None = None, channel_axis: int | None = 0
) -> np.ndarray:
    """Normalise ``image`` per channel as ``spec`` says; returns float32 of the same shape."""
    offset, scale = normalization_stats(image, spec, channel_axis)
    arr = np.asarray(image, dtype=working_dtype(np.asarray(image).dtype))
    shape = [1] * arr.ndim
    if channel_axis is not None:
        shape[channel_axis] = -1
        offset, scale = offset.reshape(shape), scale.reshape(shape)
    else:
        offset, scale = offset[0], scale[0]
    return ((arr - offset) / scale).astype(np.float32, copy=False)


def strided_sample(image: Any, keep_axis: int | None = None) -> np.ndarray:
    """At most about :data:`SAMPLE` values of ``image`` (a strided view), as numpy.

    For intensity statistics of a large (or dask) image: every ``step``-th pixel along each
    axis but ``keep_axis`` (a channel axis kept whole), the same step on all of them.
    """
    shape = image.shape
    axes = [i for i in range(len(shape)) if i != keep_axis]
    n = int(np.prod([shape[i] for i in axes])) if axes else 1
    if n <= SAMPLE or not axes:
        return np.asarray(image)
    step = int(np.ceil((n / SAMPLE) ** (1 / len(axes))))
    key = tuple(
        slice(None) if i == keep_axis else slice(None, None, step) for i in range(len(shape))
    )
    return np.asarray(image[key])
