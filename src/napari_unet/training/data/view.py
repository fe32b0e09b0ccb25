"""Training images as Segment shows them to the network: inverted, or as optical density.

Segment decides for each image what its network sees
(:func:`napari_unet.inference.images.modality.prepare_input`): a grey image whose background
is brighter than its objects (brightfield) is inverted, and a stained colour slide goes to a
model that learnt stained slides as their optical density (the model card's ``colour_input``,
the built-in ``nuclei-he``) in that view. A model must learn from the view it is later shown:
fine-tuned on the raw colours of a slide (dark nuclei on a bright background), ``nuclei-he``
scored AP@0.5 0.00 on the other slides, since Segment then showed it their optical density
(bright nuclei on a dark background). :func:`as_segment_sees` turns images as they were read
(the CLI's files, ``train()``'s arrays, the Train dock's layers) into that view. The Segment
dock's Retrain passes images already in it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...inference.images import axes as ax
from ...inference.images.modality import InputChoice, prepare_input

__all__ = ["as_segment_sees", "describe_views"]

#: colour samples of an RGB(A) picture
_COLOUR = (3, 4)


def as_segment_sees(
    images: Sequence[np.ndarray],
    *,
    ndim: int,
    in_channels: int | None = None,
    colour_input: str | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """Each training image as Segment would show it to the network.

    Parameters
    ----------
    images : sequence of ndarray
        As read: grey ``(*spatial)``, colour ``(Y, X, 3 | 4)`` or with channels.
    ndim : {2, 3}
        The spatial axes of the model.
    in_channels : int, optional
        The model's input channels (``None``: a new network, sized from the data).
    colour_input : str, optional
        The model card's ``colour_input`` (``"optical_density"`` for ``nuclei-he``).

    Returns
    -------
    images : list of ndarray
        A grey image with a bright background negated (float32, the same shape); a colour
        slide for an ``"optical_density"`` model as its optical density ``(3, Y, X)`` float32;
        a colour image for a single-channel model as the grey image Segment makes of it
        (``(Y, X)`` float32: equal samples, luminance or haematoxylin, inverted or not);
        every other image as given (the same object).
    views : list of str
        What was done to each: ``""``, ``"inverted (bright background, median at 0.93)"``,
        ``"optical density"`` (with ``" (white N)"`` for samples that are not uint8), or the
        grey view of a colour image (``"luminance, inverted (...)"``).
    """
    seen, views = [], []
    for image in images:
        array = np.asarray(image)
        axes = _axes(array, ndim, in_channels, colour_input)
        if axes is None:
            seen.append(image)
            views.append("")
            continue
        canon, caxes = ax.to_canonical(array, axes)
        out, _, choice = prepare_input(
            canon,
            caxes,
            in_channels=in_channels or 1,
            colour=axes.endswith("C"),
            colour_input=colour_input,
            choice=InputChoice(axes=axes, axes_source="given"),
        )
        view = _view(choice)
        seen.append(np.asarray(out, dtype=np.float32) if view else image)
        views.append(view)
    return seen, views


def describe_views(views: Sequence[str]) -> str:
    """One clause for a status line, e.g. ``"as Segment shows them to the network: 2 of 5
    image(s) inverted (bright background)"``; ``""`` when no image was changed."""
    n = len(views)
    inverted = sum("inverted" in v for v in views)
    density = [v for v in views if v.startswith("optical density")]
    grey = [v.split(",")[0] for v in views if v and "optical density" not in v]
    grey = [v for v in grey if not v.startswith("inverted")]
    parts = []
    if density:
        parts.append(f"{len(density)} of {n} stained colour image(s) as {density[0]}")
    if grey:
        parts.append(f"{len(grey)} of {n} colour image(s) made grey ({grey[0]})")
    if inverted:
        parts.append(f"{inverted} of {n} image(s) inverted (bright background)")
    if not parts:
        return ""
    return "as Segment shows them to the network: " + ", ".join(parts)


def _axes(array: np.ndarray, ndim: int, in_channels: int | None, colour_input: str | None):
    """The axes of an image Segment would turn, or ``None`` to leave it."""
    if array.ndim == ndim and in_channels in (None, 1):
        return "ZYX"[-ndim:]  # grey: Segment inverts it if its background is bright
    colour = ndim == 2 and array.ndim == 3 and array.shape[-1] in _COLOUR
    colour = colour and min(array.shape[:2]) > max(_COLOUR)
    if colour and colour_input == "optical_density" and in_channels == 3:
        return "YXC"  # a stained slide for nuclei-he: its optical density
    if colour and in_channels == 1:
        return "YXC"  # a single-channel model: grey, luminance (or haematoxylin), inverted or not
    return None


def _view(choice: InputChoice) -> str:
    white = f" (white {choice.white:g})" if choice.white is not None else ""
    inverted = f"inverted ({choice.invert_reason})" if choice.inverted else ""
    if choice.colour == "optical density":
        return f"optical density{white}"
    if choice.colour is not None:  # a colour image made grey for a single-channel model
        return ", ".join(v for v in (f"{choice.colour}{white}", inverted) if v)
    return inverted
