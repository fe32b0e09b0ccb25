"""Axes of an image: parse them, guess them, and walk the frames a model takes.

An axes string names every axis of an image with one letter, in the image's own order:
``T`` time, ``C`` channel (also the colour samples of an RGB image), ``Z``, ``Y``, ``X``.
``"YX"``, ``"ZYX"``, ``"CYX"``, ``"YXC"`` (RGB), ``"TYX"``, ``"TZYX"``, ``"TCYX"`` are typical.
Internally images are moved to the canonical order ``T C Z Y X`` (missing letters left out);
labels keep the image's own order without ``C``.

A 2D model takes ``(C, Y, X)`` frames: every time point and every Z slice is one frame. A 3D
model takes ``(C, Z, Y, X)`` frames: every time point is one frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ...common.errors import ShapeError, UserInputError

#: the canonical order of the axes
CANONICAL = "TCZYX"
#: napari's RGB(A) images carry 3 or 4 samples on their last axis
RGB_SIZES = (3, 4)
#: a trailing axis of 3 or 4 is colour when the two axes before it are at least this long
MIN_COLOUR_SIDE = 16
#: an unlabelled leading axis this short may be channels or Z slices: the guess refuses
MAX_AMBIGUOUS = 4


class AmbiguousAxesError(ShapeError):
    """The axes cannot be told from the shape (channels or Z?): the user must give them."""


def parse_axes(axes: str, ndim: int | None = None) -> str:
    """Check an axes string and return it upper-case.

    Parameters
    ----------
    axes : str
        One letter per image axis from ``T``, ``C``, ``Z``, ``Y``, ``X``, e.g. ``"tzyx"``.
    ndim : int, optional
        The image's number of dimensions; the string must have as many letters.

    Raises
    ------
    UserInputError
        Unknown or repeated letters, no ``Y``/``X``, or a length that does not match ``ndim``.
    """
    if not isinstance(axes, str):
        raise UserInputError(f"axes must be a string such as 'YX' or 'TZYX', got {axes!r}")
    result = axes.strip().upper()
    bad = sorted(set(result) - set(CANONICAL))
    if bad:
        raise UserInputError(
            f"axes {axes!r} contains unknown letter(s) {', '.join(bad)}; "
            "use T (time), C (channel), Z, Y and X"
        )
    repeated = sorted({a for a in result if result.count(a) > 1})
    if repeated:
        raise UserInputError(f"axes {axes!r} names axis {', '.join(repeated)} more than once")
    if "Y" not in result or "X" not in result:
        raise UserInputError(f"axes {axes!r} must contain both Y and X")
    if ndim is not None and len(result) != ndim:
        raise ShapeError(
            f"axes {axes!r} name {len(result)} axes but the image has {ndim} dimension(s); "
            "give one letter per image axis"
        )
    return result


def guess_axes(
    shape: Sequence[int],
    *,
    rgb: bool = False,
    axis_labels: Sequence[str] | None = None,
    in_channels: int | None = None,
    model_ndim: int | None = None,
) -> str:
    """Propose axes for an image of ``shape``; the caller should let the user correct them.

    Parameters
    ----------
    shape : sequence of int
        The image's shape (for an RGB napari layer, the data's shape, samples included).
    rgb : bool
        The last axis holds colour samples (napari's ``layer.rgb``).
    axis_labels : sequence of str, optional
        Labels of the image's axes (napari's ``layer.axis_labels``, or the viewer's); used when
        they are all letters from ``TCZYX``. Must not include the RGB axis.
    in_channels : int, optional
        The model's input channels: a small leading axis of that size is read as ``C``.
    model_ndim : int, optional
        2 or 3: a 3D model makes an unlabelled 3-axis image ``ZYX`` rather than ``CYX``.

    Returns
    -------
    str
        An axes string with one letter per axis of ``shape``.
    """
    ndim = len(shape)
    suffix = "C" if rgb else ""
    n_spatial = ndim - len(suffix)
    if n_spatial < 2:
        raise ShapeError(f"an image needs at least two axes (Y, X), got shape {tuple(shape)}")
    labels = _letters(axis_labels, n_spatial)
    if labels is not None:
        return parse_axes(labels + suffix, ndim)
    if not rgb and looks_colour(shape):
        return guess_axes(shape, rgb=True, in_channels=in_channels, model_ndim=model_ndim)
    if not rgb and _trailing_channels(shape) and shape[-1] == 1:  # one channel stored last
        return guess_axes(shape, rgb=True, in_channels=in_channels, model_ndim=model_ndim)
    if not rgb and _trailing_channels(shape):
        raise AmbiguousAxesError(
            f"the last axis of shape {tuple(shape)} holds only {shape[-1]} values after two "
            f"long ones: channels stored last, not an image {shape[-1]} pixels wide; give the "
            f"axes, e.g. --axes {'TZYXC'[-ndim:]} (axes= in Python, the Axes box in the dock)"
        )
    lead = shape[: n_spatial - 2]
    prefix = _guess_leading(lead, rgb=rgb, in_channels=in_channels, model_ndim=model_ndim)
    if "Z" in prefix and not rgb and min(lead) <= MAX_AMBIGUOUS and model_ndim != 3:
        raise AmbiguousAxesError(
            f"cannot tell whether the axes of shape {tuple(shape)} are channels or Z slices: "
            f"give them, e.g. --axes C{'YX' if len(lead) == 1 else 'ZYX'} for channels or "
            f"--axes {prefix}YX for a z-stack (axes= in Python, the Axes box in the dock)"
        )
    return parse_axes(prefix + "YX" + suffix, ndim)


def looks_colour(shape: Sequence[int]) -> bool:
    """A trailing axis of 3 or 4 samples after two long axes: the colour of an RGB(A) image."""
    return (
        len(shape) >= 3 and shape[-1] in RGB_SIZES and min(shape[-3], shape[-2]) >= MIN_COLOUR_SIDE
    )


def _trailing_channels(shape: Sequence[int]) -> bool:
    """A last axis of at most :data:`MAX_AMBIGUOUS` after two long axes (not 3 or 4 colour
    samples): interleaved channels, never an image that narrow."""
    return (
        len(shape) >= 3
        and shape[-1] <= MAX_AMBIGUOUS
        and min(shape[-3], shape[-2]) >= MIN_COLOUR_SIDE
    )


def is_colour(axes: str, shape: Sequence[int]) -> bool:
    """The image's ``C`` axis is its last and holds 3 or 4 samples: RGB(A) colour."""
    return axes.endswith("C") and shape[-1] in RGB_SIZES


def _letters(axis_labels: Sequence[str] | None, n: int) -> str | None:
    if axis_labels is None or len(axis_labels) < n:
        return None
    labels = [str(a).strip().upper() for a in list(axis_labels)[-n:]] if n else []
    if not all(len(a) == 1 and a in CANONICAL for a in labels) or len(set(labels)) != n:
        return None
    text = "".join(labels)
    return text if "Y" in text and "X" in text else None


def _guess_leading(
    lead: Sequence[int], *, rgb: bool, in_channels: int | None, model_ndim: int | None
) -> str:
    """Letters for the axes in front of Y, X."""
    if not lead:
        return ""
    multi = in_channels is not None and in_channels > 1 and not rgb
    if len(lead) == 1:
        if multi and lead[0] == in_channels and model_ndim != 3:
            return "C"
        return "Z"
    if len(lead) == 2:
        if multi and lead[1] == in_channels:
            return "TC"
        if multi and lead[0] == in_channels:
            return "CZ"
        return "TZ"
    if len(lead) == 3 and not rgb:
        return "TZC" if multi and lead[2] == in_channels != lead[1] else "TCZ"
    raise ShapeError(
        f"cannot guess the axes of an image with {len(lead) + 2 + int(rgb)} dimensions; "
        "pass them explicitly, e.g. axes='TCZYX'"
    )


def to_canonical(image, axes: str):
    """Transpose ``image`` (numpy or dask) from ``axes`` to the canonical ``TCZYX`` order.

    Returns
    -------
    array, str
        The transposed view and its axes, e.g. ``(C, Y, X)`` and ``"CYX"`` for ``"YXC"``.
    """
    axes = parse_axes(axes, image.ndim)
    canonical = "".join(a for a in CANONICAL if a in axes)
    order = [axes.index(a) for a in canonical]
    return image.transpose(order), canonical


def labels_axes(axes: str) -> str:
    """The axes of the labels of an image with ``axes``: the same order, without ``C``."""
    return axes.replace("C", "")


def from_canonical(array, canonical: str, axes: str, leading: int = 0):
    """Move ``array`` from canonical order back to ``axes`` order (``C`` dropped).

    ``leading`` axes in front (e.g. the class axis of probabilities) stay where they are.
    """
    target = labels_axes(axes)
    source = labels_axes(canonical)
    order = list(range(leading)) + [leading + source.index(a) for a in target]
    return array if order == sorted(order) else array.transpose(order)


def check_model_fit(
    shape: Sequence[int], canonical: str, in_channels: int, model_ndim: int
) -> None:
    """Raise a clear error if a canonical image cannot be fed to the model.

    Parameters
    ----------
    shape : sequence of int
        Shape of the image in canonical order.
    canonical : str
        Its canonical axes.
    in_channels, model_ndim : int
        The model's input channels and spatial dimensions.
    """
    channels = shape[canonical.index("C")] if "C" in canonical else 1
    if channels != in_channels:
        where = f"its C axis has {channels}" if "C" in canonical else "it has no C axis (1 channel)"
        hint = (
            "; pick one channel (or convert RGB to grey) before segmenting"
            if in_channels == 1
            else "; give the axes with C on the channel axis"
        )
        raise ShapeError(
            f"the model takes {in_channels} input channel(s) but the image has {channels}: "
            f"{where} (axes {canonical}, shape {tuple(shape)}){hint}"
        )
    if model_ndim == 3 and "Z" not in canonical:
        raise ShapeError(
            f"this is a 3D model and needs a Z axis, but the image has axes {canonical}; "
            "give axes with Z or use a 2D model"
        )


def frame_indices(shape: Sequence[int], canonical: str, model_ndim: int) -> list[tuple[int, ...]]:
    """Indices of the frames a model takes, into the canonical labels (``C`` dropped).

    A 2D model walks every ``(T, Z)`` position; a 3D model every ``T`` position. An image
    with neither gives a single frame ``()``.
    """
    loop = "T" if model_ndim == 3 else "TZ"
    sizes = [shape[canonical.index(a)] for a in loop if a in canonical]
    return list(_ndindex(sizes))


def _ndindex(sizes: Sequence[int]) -> Iterator[tuple[int, ...]]:
    if not sizes:
        yield ()
        return
    for i in range(sizes[0]):
        for rest in _ndindex(sizes[1:]):
            yield (i, *rest)


def frame(image, canonical: str, index: tuple[int, ...]):
    """The frame at ``index`` (from :func:`frame_indices`) as ``(C, [Z,] Y, X)``."""
    lead = [a for a in canonical if a in "TZ"][: len(index)]
    key = []
    for a in canonical:
        key.append(index[lead.index(a)] if a in lead else slice(None))
    block = image[tuple(key)]
    if "C" not in canonical:
        block = block[None]
    return block
