"""Telling the user what happened: a short line in the dock, a napari notification, the log.

Every failure reaches the user as a napari notification with a plain-language message (what
went wrong, how to fix it); the dock shows the same message in a status line that wraps, and
the technical detail (exception type, traceback) goes to the log, not into the dock's width.
"""

from __future__ import annotations

import logging
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
