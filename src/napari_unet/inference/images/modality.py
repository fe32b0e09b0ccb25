"""What the network sees of an image: the channel, colour handling and inversion, decided.

A model takes a fixed number of input channels (the built-in ones take one), but microscopy
images come as grey fluorescence, multichannel stacks, RGB colour (H&E, other stains, or grey
saved as RGB) and brightfield (dark nuclei on a bright background). :func:`prepare_input`
turns an image in canonical ``TCZYX`` order into what the model takes, and says what it
decided in an :class:`InputChoice` (reported in the CLI line, the dock status and the layer
metadata):

- **channel**: ``channel=`` picks one channel of a multichannel image (an index, or a name from
  the file's metadata). Without it, a channel whose name says nuclei (DAPI, Hoechst, ...) is
  taken, and a multichannel image with no such name is refused with the list of its channels.
- **colour**: a colour image whose channels are equal is grey. A colour image with a bright
  background and coloured objects is a stained (H&E) slide: it goes to a model that learnt
  such slides, as the model card's ``colour_input`` says: its optical density (the built-in
  ``nuclei-he``) or its haematoxylin channel (colour deconvolution), both from
  :mod:`.stains`, read against the image's white level (reported when it is not uint8).
  Other colour images (fluorescence composites) become grey.
- **inversion**: a grey image whose background is brighter than its objects (brightfield,
  inverted stains) is inverted for a model of bright objects (``invert="auto"``).

The decisions use intensity statistics of a subsample of the image: the position of the median
between the 1st and 99.8th percentiles (:func:`median_position`) is 0.00-0.32 on the 594 DSB
fluorescence images here and 0.82-0.95 on the 16 brightfield ones.
"""

from __future__ import annotations

import logging
import numbers
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ...common.errors import ShapeError, UserInputError
from .normalize import strided_sample, working_dtype
from .stains import haematoxylin, optical_density, white_level

log = logging.getLogger(__name__)

__all__ = [
    "INVERT_CHOICES",
    "InputChoice",
    "median_position",
    "prepare_input",
]

INVERT_CHOICES = ("auto", "yes", "no")
#: above this median position the background is bright: the objects are darker than it
BRIGHT_BACKGROUND = 0.5
#: a colour image whose channels differ by less than this (mean, over the grey range) is grey
GREY_TOLERANCE = 0.02
#: channel names that say nuclei (case-insensitive, whole words)
NUCLEAR_NAMES = re.compile(
    r"\b(dapi|hoechst|h33342|h33258|nuclei|nuclear|nucleus|dna|draq5|drag5|sirdna|sir-dna|"
    r"pi|propidium|syto\w*|histone|h2b)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class InputChoice:
    """What :func:`prepare_input` decided, in words a user can check.

    Attributes
    ----------
    axes : str
        The image's axes as used (one letter per axis, the image's own order).
    axes_source : str
        ``"given"``, ``"file"`` (its metadata), ``"layer"`` or ``"guessed"``.
    channel : int or None
        The channel taken (0-based, on the C axis), ``None`` for a single-channel image or
        when all channels go to the model.
    channel_name : str or None
        Its name from the metadata.
    channel_reason : str
        Why that channel: ``"given"``, ``"named ..."``, ``""``.
    colour : str or None
        How a colour image became the model's input: ``"grey"`` (equal channels),
        ``"haematoxylin"``, ``"luminance"``; ``None`` for a non-colour image or a colour model.
    modality : str
        ``"fluorescence"``, ``"brightfield"``, ``"H&E"`` (stained colour) or ``"multichannel"``.
    inverted : bool
        The model saw the image inverted.
    invert_reason : str
        ``"given"``, or the statistic that decided it.
    white : float or None
        The sample value of white a stained colour image was read against
        (:func:`white_level`), when it is not uint8.
    model : str
        The model's name.
    model_reason : str
        Why this model: ``"given"``, or ``"built-in for H&E"`` and the like.
    """

    axes: str
    axes_source: str = "guessed"
    channel: int | None = None
    channel_name: str | None = None
    channel_reason: str = ""
    colour: str | None = None
    modality: str = "fluorescence"
    inverted: bool = False
    invert_reason: str = ""
    white: float | None = None
    model: str = ""
    model_reason: str = "given"

    def describe(self) -> str:
        """The decisions in one short clause, e.g. ``"H&E: haematoxylin channel, model ..."``."""
        parts = [f"axes {self.axes}" + (" (guessed)" if self.axes_source == "guessed" else "")]
        if self.channel is not None:
            name = f" {self.channel_name!r}" if self.channel_name else ""
            why = f", {self.channel_reason}" if self.channel_reason not in ("", "given") else ""
            parts.append(f"channel {self.channel}{name}{why}")
        if self.colour is not None:
            white = f" (white {self.white:g})" if self.white is not None else ""
            parts.append(f"{self.modality}: {self.colour}{white}")
        elif self.modality != "fluorescence":
            parts.append(self.modality)
        if self.inverted:
            parts.append("inverted" + (f" ({self.invert_reason})" if self.invert_reason else ""))
        if self.model:
            why = "" if self.model_reason == "given" else f" ({self.model_reason})"
            parts.append(f"model {self.model}{why}")
        return ", ".join(parts)

    def as_metadata(self) -> dict[str, Any]:
        """A plain dict for a layer's metadata or a JSON file."""
        return asdict(self)


def median_position(image: Any) -> float:
    """Where the median lies between the 1st and 99.8th percentiles, from 0 to 1.

    Low for dark backgrounds with bright objects (fluorescence: 0.00-0.32 on the DSB images),
    high for bright backgrounds with dark objects (brightfield: 0.82-0.95). 0 for a flat image.

    Parameters
    ----------
    image : array of any shape
        Intensities (numpy or dask; a subsample of at most :data:`SAMPLE` pixels is read).
    """
    values = strided_sample(image)
    values = values.astype(working_dtype(values.dtype), copy=False).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    lo, med, hi = np.percentile(values, [1.0, 50.0, 99.8])
    return float((med - lo) / (hi - lo)) if hi - lo > 1e-12 else 0.0


def prepare_input(
    canon: Any,
    caxes: str,
    *,
    in_channels: int,
    colour: bool,
    channel: int | str | None = None,
    channel_names: Sequence[str] | None = None,
    invert: str | bool = "auto",
    colour_input: str | None = None,
    choice: InputChoice,
) -> tuple[Any, str, InputChoice]:
    """The image the model takes, and what was decided to make it.

    Parameters
    ----------
    canon : ndarray or dask array in canonical ``TCZYX`` order
        The image (``caxes`` names its axes).
    caxes : str
        Its canonical axes.
    in_channels : int
        The model's input channels.
    colour : bool
        The C axis holds the colour samples of an RGB(A) image (a trailing axis of 3 or 4, a
        PNG/JPEG, a TIFF with RGB photometric, an RGB napari layer).
    channel : int, str or None
        The channel to take (0-based index, or a name in ``channel_names``).
    channel_names : sequence of str, optional
        The names of the channels, from the file's metadata.
    invert : {"auto", "yes", "no"} or bool
        Invert a single-channel input (dark objects on a bright background); ``"auto"``
        decides from the intensities, and never inverts a multichannel input.
    colour_input : str, optional
        The model card's ``colour_input``: ``"optical_density"`` (3 channels) or
        ``"haematoxylin"`` (1 channel) for a model trained on that view of stained colour
        images.
    choice : InputChoice
        The decisions made before (axes, model); returned completed.

    Returns
    -------
    image : array in canonical order
        With a C axis of ``in_channels`` samples (or no C axis for one channel).
    caxes : str
        Its canonical axes.
    choice : InputChoice

    Raises
    ------
    UserInputError
        A channel that does not exist, a multichannel image without a channel for a
        single-channel model, or a bad ``invert``.
    """
    invert = _invert_setting(invert)
    n = canon.shape[caxes.index("C")] if "C" in caxes else 1
    if colour_input == "optical_density" and colour and n in (3, 4) and channel is None:
        white = white_level(canon, caxes.index("C"))
        choice = replace(
            choice, colour="optical density", modality="H&E", white=_reported(canon, white)
        )
        return optical_density(canon, caxes.index("C"), white), caxes, choice
    if channel is not None:
        index, name = _channel_index(channel, n, channel_names, caxes)
        canon, caxes = _take_channel(canon, caxes, index)
        choice = replace(choice, channel=index, channel_name=name, channel_reason="given")
        n, colour = 1, False
    if n == in_channels and not (colour and in_channels == 1):
        if n > 1:  # a multichannel model: the channels as they are
            return canon, caxes, replace(choice, modality="multichannel")
        return _maybe_invert(canon, caxes, invert, choice)
    if in_channels != 1:
        return canon, caxes, choice  # check_model_fit says what does not fit
    if colour and n in (3, 4):
        return _from_colour(canon, caxes, invert, colour_input, choice)
    index, name, reason = _nuclear_channel(n, channel_names, caxes, canon.shape)
    canon, caxes = _take_channel(canon, caxes, index)
    choice = replace(choice, channel=index, channel_name=name, channel_reason=reason)
    return _maybe_invert(canon, caxes, invert, choice)


def is_stained(canon: Any, caxes: str) -> bool:
    """A colour image that looks like a stained slide: coloured, on a bright background.

    Decided on a subsample: the whole image is made grey only if it goes that way.
    """
    c_axis = caxes.index("C")
    sample = strided_sample(canon, keep_axis=c_axis)
    grey = np.moveaxis(sample, c_axis, 0)[:3].astype(np.float32).mean(axis=0)
    return not _is_grey_colour(sample, caxes) and median_position(grey) > BRIGHT_BACKGROUND


def _from_colour(canon, caxes: str, invert: str, colour_input: str | None, choice: InputChoice):
    grey = _grey(canon, caxes)
    c_axis = caxes.index("C")
    rest = caxes.replace("C", "")
    if _is_grey_colour(canon, caxes):
        choice = replace(choice, colour="grey")
        return _maybe_invert(grey, rest, invert, choice)
    stained = median_position(grey) > BRIGHT_BACKGROUND
    if stained and colour_input == "haematoxylin" and invert != "yes":
        white = white_level(canon, c_axis)
        choice = replace(
            choice, colour="haematoxylin", modality="H&E", white=_reported(canon, white)
        )
        return haematoxylin(canon, c_axis, white), rest, choice
    modality = "stained colour" if stained else "colour fluorescence"
    choice = replace(choice, colour="luminance", modality=modality)
    return _maybe_invert(grey, rest, invert, choice)


def _reported(canon, white: float) -> float | None:
    """The white level to report: ``None`` for uint8, where it is always 255."""
    return None if canon.dtype == np.uint8 else white


def _grey(canon, caxes: str):
    """The mean of the colour samples (alpha left out), float32."""
    c_axis = caxes.index("C")
    rgb = canon[(slice(None),) * c_axis + (slice(0, 3),)]
    return rgb.astype(np.float32).mean(axis=c_axis)


def _is_grey_colour(canon, caxes: str) -> bool:
    """Equal colour samples (grey saved as colour), within :data:`GREY_TOLERANCE`."""
    c_axis = caxes.index("C")
    sample = np.moveaxis(strided_sample(canon, keep_axis=c_axis), c_axis, 0)[:3].astype(np.float32)
    lo, hi = np.percentile(sample.mean(axis=0), [1.0, 99.8])
    spread = max(float(hi - lo), 1e-6)
    diff = max(float(np.abs(sample[i] - sample[j]).mean()) for i, j in ((0, 1), (1, 2), (0, 2)))
    return diff / spread < GREY_TOLERANCE


def _maybe_invert(image, caxes: str, invert: str, choice: InputChoice):
    position = None
    if invert == "auto":
        position = median_position(image)
        do_it = position > BRIGHT_BACKGROUND
    else:
        do_it = invert == "yes"
    modality = choice.modality
    if modality == "fluorescence" and position is not None and do_it:
        modality = "brightfield"
    if not do_it:
        return image, caxes, replace(choice, modality=modality)
    reason = "given" if position is None else f"bright background, median at {position:.2f}"
    choice = replace(choice, inverted=True, invert_reason=reason, modality=modality)
    return -(image.astype(np.float32)), caxes, choice


def _invert_setting(invert: str | bool) -> str:
    if isinstance(invert, bool):
        return "yes" if invert else "no"
    word = str(invert).strip().lower()
    if word not in INVERT_CHOICES:
        raise UserInputError(f"invert must be one of {INVERT_CHOICES} (or a bool), got {invert!r}")
    return word


def _channel_index(
    channel: int | str, n: int, names: Sequence[str] | None, caxes: str
) -> tuple[int, str | None]:
    """The 0-based index (and name) of ``channel``."""
    if "C" not in caxes:
        raise UserInputError(
            f"channel={channel!r} was given but the image has no channel axis (axes {caxes}); "
            "leave the channel out, or give the axes with C on the channel axis"
        )
    names = list(names) if names is not None and len(names) == n else None
    if isinstance(channel, str) and not channel.strip().lstrip("-").isdigit():
        wanted = channel.strip().lower()
        found = [i for i, nm in enumerate(names or []) if str(nm).strip().lower() == wanted]
        if not found:
            raise UserInputError(
                f"no channel named {channel!r}; the image has {_list_channels(n, names)}: "
                "give a channel index (0-based) or one of those names"
            )
        return found[0], names[found[0]] if names else None
    whole = isinstance(channel, str) or (
        isinstance(channel, numbers.Integral) and not isinstance(channel, bool)
    )
    try:
        index = int(channel) if whole else None
    except (TypeError, ValueError):
        index = None
    if index is None:  # 0.5, True, None, ...: never rounded to some channel
        raise UserInputError(f"channel must be a whole index or a name, got {channel!r}")
    if not 0 <= index < n:
        raise UserInputError(
            f"channel {index} does not exist: the image has {_list_channels(n, names)} "
            f"(0-based, 0 to {n - 1})"
        )
    return index, names[index] if names else None


def _nuclear_channel(
    n: int, names: Sequence[str] | None, caxes: str, shape
) -> tuple[int, str | None, str]:
    """The channel a single-channel model takes when none was given, or a clear refusal."""
    names = list(names) if names is not None and len(names) == n else None
    nuclear = [i for i, nm in enumerate(names or []) if NUCLEAR_NAMES.search(str(nm))]
    if len(nuclear) == 1:
        i = nuclear[0]
        return i, names[i], f"named {names[i]!r}, a nuclear stain"
    raise ShapeError(
        f"the image has {_list_channels(n, names)} (axes {caxes}, shape {tuple(shape)}) and the "
        "model takes one: choose it with --channel N (channel=N in Python, the Channel box in "
        "the Segment dock)"
    )


def _list_channels(n: int, names: Sequence[str] | None) -> str:
    if not names:
        return f"{n} channels"
    listed = ", ".join(f"{i}: {nm!r}" for i, nm in enumerate(names))
    return f"{n} channels ({listed})"


def _take_channel(canon, caxes: str, index: int):
    c_axis = caxes.index("C")
    key = (slice(None),) * c_axis + (index,)
    return canon[key], caxes.replace("C", "")
