"""One validator for numbers, label images and image shapes, shared by the CLI, the Python API
and the widgets, so that the same bad value gets the same message everywhere.

Every check raises :class:`~napari_unet.common.errors.UserInputError` (or
:class:`~napari_unet.common.errors.ShapeError`) whose message names the argument, the value and
what is allowed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import ShapeError, UserInputError

__all__ = [
    "POSTPROCESSING_KEYS",
    "check_integer",
    "check_labels",
    "check_not_empty",
    "check_number",
    "check_postprocessing_value",
]

#: the largest label id kept exactly (labels are counted as int64)
MAX_LABEL = np.iinfo(np.int64).max


def _bounds(minimum, maximum, low_open: bool, high_open: bool) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if low_open else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if high_open else '<='} {maximum:g}")
    return " and ".join(parts)


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    none_ok: bool = False,
    hint: str = "",
) -> Any:
    """Check that ``value`` is a finite real number within the bounds; return it.

    Parameters
    ----------
    value : object
        The value to check (a bool is not a number here).
    name : str
        How the user knows the argument (``"--lr"``, ``"learning_rate"``): named in the message.
    minimum, maximum : float, optional
        Bounds; ``low_open`` / ``high_open`` exclude them (``minimum=0, low_open=True``: > 0).
    integer : bool
        Only whole numbers (an ``int``, or a float such as ``3.0`` is returned as ``int``).
    none_ok : bool
        ``None`` passes (an optional setting left at its default).
    hint : str
        Appended to the message (what to do instead).

    Returns
    -------
    int or float
        ``value``, as ``int`` when ``integer`` is set.

    Raises
    ------
    UserInputError
        NaN, inf, not a number, not whole when ``integer``, or out of bounds.

    Examples
    --------
    >>> check_number(0.01, "--lr", minimum=0, low_open=True)
    0.01
    """
    if value is None and none_ok:
        return None
    kind = "a whole number" if integer else "a finite number"
    where = _bounds(minimum, maximum, low_open, high_open)
    wanted = f"{kind}{' ' + where if where else ''}"
    tail = f"; {hint}" if hint else ""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise UserInputError(f"{name} must be {wanted}, got {value!r}{tail}")
    number = float(value)
    if not math.isfinite(number):
        raise UserInputError(f"{name} must be {wanted}, got {number}{tail}")
    if integer:
        if number != int(number):
            raise UserInputError(f"{name} must be {wanted}, got {value!r}{tail}")
        value = int(value)
    bad_low = minimum is not None and (number <= minimum if low_open else number < minimum)
    bad_high = maximum is not None and (number >= maximum if high_open else number > maximum)
    if bad_low or bad_high:
        raise UserInputError(f"{name} must be {wanted}, got {value!r}{tail}")
    return value


def check_integer(value: Any, name: str, *, minimum: int | None = None, **kwargs: Any) -> Any:
    """:func:`check_number` for whole numbers (``--threads``, ``--epochs``, label ids ...)."""
    return check_number(value, name, minimum=minimum, integer=True, **kwargs)


def check_not_empty(shape: tuple[int, ...], name: str = "image") -> None:
    """Refuse an array with no pixels (an axis of length 0) before any work is done."""
    if len(shape) == 0 or any(int(s) == 0 for s in shape):
        raise ShapeError(
            f"{name} is empty (shape {tuple(shape)}): it has no pixels to work on; "
            "check that the right file or layer was given"
        )


def check_labels(labels: Any, name: str = "labels", *, empty_ok: bool = False) -> np.ndarray:
    """Check a label image: integer (or boolean) ids >= 0, not empty; return it as an array.

    The same message is given by training, evaluation and the widgets for the same problem.

    Parameters
    ----------
    labels : array-like, shape (*spatial)
        Label ids: 0 is background, 1, 2, ... objects (or classes).
    name : str
        How the user knows this image (``"labels (a.tif)"``, ``"ground_truth"`` ...).
    empty_ok : bool
        Let an array without pixels pass (metrics of nothing are defined).

    Returns
    -------
    ndarray of bool or integers, shape (*spatial)

    Raises
    ------
    UserInputError
        Floats, negative ids, ids above ``2**63 - 1``, not numbers; ShapeError when empty.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind not in "biu":
        what = "floating-point values" if arr.dtype.kind == "f" else "values"
        raise UserInputError(
            f"{name} must hold whole-number label ids (0 = background, 1, 2, ... objects), got "
            f"{what} of dtype {arr.dtype} (shape {arr.shape}); threshold probabilities first "
            "(mask > 0.5) or convert to integers"
        )
    if not empty_ok:
        check_not_empty(arr.shape, name)
    if arr.size == 0:
        return arr
    if arr.dtype.kind == "i" and arr.min() < 0:
        raise UserInputError(
            f"{name} holds negative label ids (min {arr.min()}); label ids must be >= 0 "
            "(0 = background)"
        )
    if arr.dtype == np.uint64 and arr.max() > MAX_LABEL:
        raise UserInputError(
            f"{name} holds label ids above 2**63 - 1 (max {arr.max()}); relabel them "
            "(e.g. skimage.segmentation.relabel_sequential)"
        )
    return arr


#: the instance post-processing settings (a model card's ``postprocessing`` entry, the
#: ``postprocessing=`` overrides of ``segment``; see ``inference.labels.postprocess``)
POSTPROCESSING_KEYS = ("seed_threshold", "foreground_threshold", "split", "min_size")


def check_postprocessing_value(key: str, value: Any, name: str) -> Any:
    """One post-processing setting, by the rules the CLI's options follow; returns it.

    Thresholds lie in (0, 1), ``split`` is at least 0 and ``min_size`` a whole number at least
    0. ``name`` names the setting in the message.

    Raises
    ------
    UserInputError
        A value outside its range, or not a (finite) number.
    """
    if key.endswith("threshold"):
        return check_number(value, name, minimum=0, maximum=1, low_open=True, high_open=True)
    if key == "split":
        return check_number(value, name, minimum=0)
    return check_integer(value, name, minimum=0)


#: label images are piecewise constant: on the DSB data, at least 0.84 of their object pixels
#: equal their right-hand neighbour, against at most 0.78 for the intensity images
LABELS_FLATNESS = 0.8
#: ... and have a background: 41-100% zeros in the DSB annotations
LABELS_BACKGROUND = 0.2
_SNIFF_SIDE = 1024


def flatness(array: Any) -> tuple[float, float]:
    """How piecewise constant ``array`` is, and its share of zeros, on a central crop.

    Returns
    -------
    flat : float
        Share of the non-zero pixels equal to their right-hand neighbour (1.0 without any).
    zeros : float
        Share of zero pixels.
    """
    arr = array if hasattr(array, "shape") else np.asarray(array)  # dask / zarr stay lazy
    while arr.ndim > 2:  # the middle plane of every leading axis
        arr = arr[arr.shape[0] // 2]
    starts = [max(0, (n - _SNIFF_SIDE) // 2) for n in arr.shape]
    arr = np.asarray(arr[tuple(slice(s, s + _SNIFF_SIDE) for s in starts)])
    nonzero = arr != 0
    pairs = nonzero[..., 1:]
    n = int(pairs.sum())
    flat = float(((arr[..., 1:] == arr[..., :-1]) & pairs).sum() / n) if n else 1.0
    return flat, float(1.0 - nonzero.mean()) if arr.size else 0.0


def looks_like_labels(array: Any) -> bool:
    """Whole numbers, piecewise constant, with a background: a label image (or a mask)."""
    if array.dtype.kind not in "biu":
        return False
    flat, zeros = flatness(array)
    return flat >= LABELS_FLATNESS and zeros >= LABELS_BACKGROUND


def channels_look_like_labels(array: Any, channel_axis: int) -> bool:
    """:func:`looks_like_labels` of a multichannel image: every channel that varies does.

    A channel without variation (an opaque or transparent alpha channel, an empty one) does
    not count: a grey picture saved as RGBA with alpha 0 is not a label image.
    """
    if array.dtype.kind not in "biu":
        return False
    varied = []
    for i in range(array.shape[channel_axis]):
        plane = array[(slice(None),) * channel_axis + (i,)]
        flat, zeros = flatness(plane)
        if not (zeros == 1.0 or (flat == 1.0 and zeros == 0.0)):
            varied.append((flat, zeros))
    return bool(varied) and all(
        flat >= LABELS_FLATNESS and zeros >= LABELS_BACKGROUND for flat, zeros in varied
    )


def check_looks_like_labels(labels: Any, name: str, minimum: float = LABELS_FLATNESS) -> None:
    """Refuse an intensity image given where labels are expected (values vary pixel to pixel).

    ``minimum``: the share of non-zero pixels equal to their neighbour below which ``labels``
    is refused. Objects ``w`` pixels wide give about ``(w - 1) / w``, so annotations of tiny
    objects (training) want a lower bar than whole-image label files (evaluation).

    Raises
    ------
    UserInputError
        Fewer than ``minimum`` of the non-zero pixels equal their neighbour.
    """
    flat, _ = flatness(labels)
    if flat < minimum:
        raise UserInputError(
            f"{name} does not look like a label image: only {flat:.0%} of its object pixels "
            "equal their neighbour (label images are piecewise constant, intensity images vary "
            "pixel to pixel); pass label images (0 = background, 1, 2, ... one id per object)"
        )
