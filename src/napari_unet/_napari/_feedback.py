"""Telling the user what happened: a short line in the dock, a napari notification, the log.

Every failure reaches the user as a napari notification with a plain-language message (what
went wrong, how to fix it); the dock shows the same message in a status line that wraps, and
the technical detail (exception type, traceback) goes to the log, not into the dock's width.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("napari_unet")

_ERROR_STYLE = "color: #e8786e;"


def report_error(
    status: Any, text: str, title: str = "", error: BaseException | None = None
) -> None:
    """Show ``text`` in the ``status`` label and as a napari error notification.

    Parameters
    ----------
    status : magicgui.widgets.Label
        The widget's status line; it reads ``"error: <text>"``.
    text : str
        What went wrong and how to fix it, in plain words.
    title : str
        Prefix of the notification, e.g. ``"U-Net Segment"``.
    error : BaseException, optional
        The exception behind it: logged with its traceback.
    """
    from napari.utils.notifications import show_error

    if error is not None:
        log.error("%s: %s", title or "napari-unet", text, exc_info=error)
    status.value = f"error: {text}"
    show_error(f"{title}: {text}" if title else text)


def show_message(label: Any, text: str, *, error: bool = False) -> None:
    """Write ``text`` in ``label`` (red when ``error``) and, if not empty, notify it."""
    from napari.utils.notifications import show_error, show_info

    label.native.setStyleSheet(_ERROR_STYLE if error else "")
    label.value = text
    if text:
        (show_error if error else show_info)(text)


def plain_message(err: BaseException) -> str:
    """What a failed job's exception means for the user, in plain words.

    The package's own errors (:class:`~napari_unet.common.errors.UserInputError` and its
    subclasses) already say what went wrong and how to fix it; other exceptions get a sentence
    that names the likely cause, and the technical text is left to the log.
    """
    from ..common.errors import UserInputError

    text = str(err)
    if isinstance(err, UserInputError):
        return text
    if isinstance(err, MemoryError):
        return (
            "out of memory: use a smaller tile size (Advanced), a smaller image or crop, "
            "or close other programs"
        )
    name = type(err).__name__
    low = text.lower()
    if "safetensor" in name.lower() or "deserializing header" in low or "header too" in low:
        return "this is not a U-Net model file (.safetensors), or the file is damaged"
    if "cuda" in low and ("not compiled" in low or "no cuda" in low or "not available" in low):
        return "no NVIDIA GPU (CUDA) is available here: choose Device 'auto' or 'cpu' (Advanced)"
    if "out of memory" in low:
        return "the GPU ran out of memory: use a smaller tile size (Advanced) or Device 'cpu'"
    if "mps" in low and "not available" in low:
        return "no Apple GPU (MPS) is available here: choose Device 'auto' or 'cpu' (Advanced)"
    first = text.splitlines()[0][:200] if text else ""
    return f"unexpected error ({name}{': ' + first if first else ''}); the details are in the log"


def report_failure(
    status: Any, err: BaseException, title: str, words: Callable[[str], str] | None = None
) -> None:
    """A job failed: plain message in ``status`` and a notification, traceback in the log.

    ``words``, if given, rewrites the message for the dock (e.g. command-line options as the
    dock's settings).
    """
    text = plain_message(err)
    report_error(status, words(text) if words is not None else text, title, error=err)
